-- pg_ark 0.1.0 to 0.2.0 (ALTER EXTENSION pg_ark UPDATE): every change of the
-- catalog and of the functions since 0.1.0. The catalog's rows stay as they
-- are: no table is dropped or truncated (see README.md here).

-- Schedules paused after pg_ark restore made this cluster: it shares the
-- source's repository entry until an administrator runs
-- ark.resume_schedules().
ALTER TABLE ark.schedules ADD COLUMN paused text;
COMMENT ON COLUMN ark.schedules.paused IS 'Why the schedule does not run (NULL: it runs when enabled): set for physical, expire and logical schedules, and those of the other tools, when pg_ark restore made this cluster; cleared by ark.resume_schedules()';

CREATE FUNCTION ark.resume_schedules() RETURNS bigint
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'resume_schedules_wrapper';
COMMENT ON FUNCTION ark.resume_schedules() IS 'Resume the physical, expire, logical and other tools'' schedules paused after pg_ark restore made this cluster (see ark.status()); returns how many';

-- Privileges: nobody but the owner writes the catalog; the functions are the
-- interface (they check their caller and the options, and run their
-- statements as the extension's owner). 0.1.0 let ark_admin write the
-- tables and use the sequences directly; it reads them now as a member of
-- ark_monitor, like a fresh install.
REVOKE ALL ON ark.schedules, ark.jobs, ark.backups, ark.notifications FROM ark_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA ark FROM ark_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA ark FROM PUBLIC;

-- Running totals of finished and retried jobs (the counters of
-- ark.metrics()), started from the history 0.1.0 kept.
CREATE TABLE ark.job_totals (
    kind  text NOT NULL,
    event text NOT NULL CHECK (event IN ('succeeded', 'failed', 'cancelled', 'retried')),
    total bigint NOT NULL DEFAULT 0 CHECK (total >= 0),
    PRIMARY KEY (kind, event)
);

-- Counted where every path through the queue meets (a job worker's finish,
-- the scheduler's recovery of orphans, ark.cancel()): the change of a job's
-- state.
CREATE FUNCTION ark._count_job_event() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
    -- An interrupted attempt (a shutdown) goes back to retrying with its
    -- attempt taken back: not a retry.
    IF NEW.state IS DISTINCT FROM OLD.state
       AND (NEW.state IN ('succeeded', 'failed', 'cancelled')
            OR (NEW.state = 'retrying' AND NEW.attempts >= OLD.attempts)) THEN
        INSERT INTO ark.job_totals AS t (kind, event, total)
        VALUES (NEW.kind, CASE NEW.state WHEN 'retrying' THEN 'retried' ELSE NEW.state END, 1)
        ON CONFLICT (kind, event) DO UPDATE SET total = t.total OPERATOR(pg_catalog.+) 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER count_job_events AFTER UPDATE OF state ON ark.jobs
    FOR EACH ROW EXECUTE FUNCTION ark._count_job_event();
COMMENT ON FUNCTION ark._count_job_event() IS 'Trigger on ark.jobs: adds each job that ends (succeeded, failed, cancelled) and each attempt retried to ark.job_totals';
COMMENT ON TABLE ark.job_totals IS 'Running totals of jobs finished (succeeded, failed, cancelled) and of attempts retried, by kind: pruning the job history does not lower them (the counters of ark.metrics())';
INSERT INTO ark.job_totals (kind, event, total)
SELECT kind, state, count(*) FROM ark.jobs
 WHERE state IN ('succeeded', 'failed', 'cancelled')
 GROUP BY kind, state;
REVOKE ALL ON ark.job_totals FROM PUBLIC;
GRANT SELECT ON ark.job_totals TO ark_monitor;
REVOKE ALL ON FUNCTION ark._count_job_event() FROM PUBLIC;

CREATE FUNCTION ark.metrics() RETURNS text
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'metrics_wrapper';
COMMENT ON FUNCTION ark.metrics() IS 'pg_ark metrics in Prometheus text format (0.0.4), the text GET /metrics serves: backups, archiving, the recovery window, jobs, drills, webhooks and the health verdict';

-- Job kinds that run the tools people already have (pgBackRest, Barman,
-- pg_basebackup), and who queued each job: those kinds run only for a
-- superuser. The constraints are replaced, never the tables.
ALTER TABLE ark.schedules DROP CONSTRAINT schedules_kind_check;
ALTER TABLE ark.schedules ADD CONSTRAINT schedules_kind_check
    CHECK (kind IN ('logical', 'expire', 'full', 'incremental', 'differential', 'verify', 'drill', 'pgbackrest', 'barman', 'pg_basebackup'));
ALTER TABLE ark.jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE ark.jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('logical', 'expire', 'full', 'incremental', 'differential', 'verify', 'drill', 'pgbackrest', 'barman', 'pg_basebackup'));
ALTER TABLE ark.schedules ADD COLUMN created_by regrole;
ALTER TABLE ark.jobs ADD COLUMN queued_by regrole;
COMMENT ON COLUMN ark.jobs.queued_by IS 'The role that queued the job (ark.backup(), ark.retry()) or created its schedule; jobs of kinds pgbackrest, barman and pg_basebackup run only when it is a superuser';
COMMENT ON COLUMN ark.schedules.created_by IS 'The role that created or last replaced the schedule; its jobs are queued as this role''s';
COMMENT ON TABLE ark.backups IS 'Backups pg_ark made and still keeps, with their place in the repository, and those of the other tools its jobs ran (kinds pgbackrest, barman, pg_basebackup: their repository is the tool''s, never pg_ark''s)';
COMMENT ON COLUMN ark.backups.path IS 'Key prefix of the backup in the repository (for the other tools: their label, or pg_basebackup''s directory)';
