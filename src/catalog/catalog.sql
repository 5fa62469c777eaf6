-- pg_ark's catalog: schedules, the job queue, the backups it made, and the
-- webhook outbox. These tables are catalog data: no install or upgrade
-- script ever drops or truncates them (see sql/README.md).

-- The roles of the SQL surface. Roles are cluster-wide, so they may exist
-- already (pg_ark installed in another database, or created by the DBA).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ark_monitor') THEN
        CREATE ROLE ark_monitor NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ark_admin') THEN
        CREATE ROLE ark_admin NOLOGIN;
    END IF;
    IF NOT pg_catalog.pg_has_role('ark_admin', 'ark_monitor', 'MEMBER') THEN
        GRANT ark_monitor TO ark_admin;
    END IF;
END
$roles$;

CREATE TABLE ark.schedules (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name <> ''),
    cron        text NOT NULL,
    kind        text NOT NULL
                CHECK (kind IN ('logical', 'expire', 'full', 'incremental', 'differential', 'verify', 'drill', 'pgbackrest', 'barman', 'pg_basebackup')),
    options     jsonb NOT NULL DEFAULT '{}',
    enabled     boolean NOT NULL DEFAULT true,
    next_run    timestamptz,
    last_run    timestamptz,
    last_job_id bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Why the schedule does not run (NULL: it runs when enabled): set for
    -- physical and expire schedules when pg_ark restore made this cluster,
    -- cleared by ark.resume_schedules().
    paused      text,
    -- The role that created or last replaced it: its jobs are queued as
    -- this role's (ark.jobs.queued_by).
    created_by  regrole
);

CREATE TABLE ark.jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL
                     CHECK (kind IN ('logical', 'expire', 'full', 'incremental', 'differential', 'verify', 'drill', 'pgbackrest', 'barman', 'pg_basebackup')),
    options          jsonb NOT NULL DEFAULT '{}',
    schedule_name    text,
    scheduled_for    timestamptz,
    conflict_key     text,
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'retrying', 'failed', 'succeeded', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    worker_pid       integer,
    progress         jsonb,
    last_error       text,
    result           jsonb,
    cancel_requested boolean NOT NULL DEFAULT false,
    -- The role that queued it (ark.backup()), or that created the schedule
    -- that did. A kind that runs another program runs only for a superuser.
    queued_by        regrole,
    -- A schedule's run for one due time is enqueued once, even across restarts.
    UNIQUE (schedule_name, scheduled_for)
);
CREATE INDEX jobs_runnable ON ark.jobs (next_attempt_at, id)
    WHERE state IN ('queued', 'retrying');
CREATE INDEX jobs_running ON ark.jobs (conflict_key) WHERE state = 'running';
CREATE INDEX jobs_finished ON ark.jobs (finished_at)
    WHERE state IN ('failed', 'succeeded', 'cancelled');

CREATE TABLE ark.backups (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           text NOT NULL,
    label          text NOT NULL,
    database       text,
    format         text,
    size_bytes     bigint NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    server_version text NOT NULL,
    repository     text NOT NULL,
    path           text NOT NULL,
    job_id         bigint,
    info           jsonb NOT NULL DEFAULT '{}',
    UNIQUE (repository, path)
);
CREATE INDEX backups_by_kind ON ark.backups (kind, database, finished_at);

CREATE TABLE ark.notifications (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id          bigint,
    event           text NOT NULL,
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text
);
CREATE INDEX notifications_pending ON ark.notifications (next_attempt_at)
    WHERE state = 'pending';

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

-- Physical backup chains: a full and every backup that relies on it.
CREATE VIEW ark.backup_chains AS
SELECT b.info->>'chain' AS chain,
       count(*) AS backups,
       count(*) FILTER (WHERE b.kind = 'incremental') AS incrementals,
       count(*) FILTER (WHERE b.kind = 'differential') AS differentials,
       min(b.started_at) AS started_at,
       max(b.finished_at) AS last_finished_at,
       sum(b.size_bytes)::bigint AS original_bytes,
       sum((b.info->>'stored_bytes')::bigint)::bigint AS stored_bytes,
       array_agg(b.label ORDER BY b.started_at, b.id) AS backup_ids,
       array_agg(b.kind ORDER BY b.started_at, b.id) AS kinds,
       bool_and(coalesce((b.info->'verification'->>'ok')::boolean, true)) AS verified_ok,
       b.repository
  FROM ark.backups b
 WHERE b.kind IN ('full', 'incremental', 'differential')
 GROUP BY b.info->>'chain', b.repository;

COMMENT ON VIEW ark.backup_chains IS 'Physical backup chains (a full and the incrementals and differentials that rely on it), oldest backup first; retention removes whole chains';
COMMENT ON TABLE ark.schedules IS 'pg_ark schedules: a cron expression (evaluated in ark.cron_timezone), a job kind and its options';
COMMENT ON TABLE ark.jobs IS 'pg_ark job queue and run history: one row per job, with its state, attempts, progress, last error and result';
COMMENT ON TABLE ark.backups IS 'Backups pg_ark made and still keeps, with their place in the repository, and those of the other tools its jobs ran (kinds pgbackrest, barman, pg_basebackup: their repository is the tool''s, never pg_ark''s)';
COMMENT ON TABLE ark.notifications IS 'Webhook notifications (ark.notify_url) waiting, delivered or given up';
COMMENT ON COLUMN ark.jobs.state IS 'queued, running, retrying (waiting for next_attempt_at), failed (for good), succeeded or cancelled';
COMMENT ON COLUMN ark.jobs.conflict_key IS 'Jobs with the same key never run at the same time (physical backups of the cluster)';
COMMENT ON COLUMN ark.backups.path IS 'Key prefix of the backup in the repository (for the other tools: their label, or pg_basebackup''s directory)';
COMMENT ON COLUMN ark.jobs.queued_by IS 'The role that queued the job (ark.backup(), ark.retry()) or created its schedule; jobs of kinds pgbackrest, barman and pg_basebackup run only when it is a superuser';
COMMENT ON COLUMN ark.schedules.created_by IS 'The role that created or last replaced the schedule; its jobs are queued as this role''s';
COMMENT ON COLUMN ark.schedules.paused IS 'Why the schedule does not run (NULL: it runs when enabled): set for physical, expire and logical schedules, and those of the other tools, when pg_ark restore made this cluster; cleared by ark.resume_schedules()';

-- Schedules are the user's configuration: pg_dump keeps them.
SELECT pg_catalog.pg_extension_config_dump('ark.schedules', '');
SELECT pg_catalog.pg_extension_config_dump('ark.schedules_id_seq', '');

-- Privileges: PUBLIC may look at nothing and write nothing. ark_monitor
-- (and ark_admin, a member of it) reads. Nobody but the owner writes: the
-- functions are the interface. They check their caller (superuser or
-- ark_admin) and the options, and run their catalog statements as the
-- extension's owner; the background workers write as the bootstrap
-- superuser. A direct write would skip the checks: queue a job whose
-- options were never validated, or without the conflict key that keeps two
-- physical backups apart, or rewrite the backup catalog.
GRANT USAGE ON SCHEMA ark TO PUBLIC;
REVOKE ALL ON ark.schedules, ark.jobs, ark.backups, ark.notifications, ark.backup_chains, ark.job_totals FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA ark FROM PUBLIC;
GRANT SELECT ON ark.schedules, ark.jobs, ark.backups, ark.notifications, ark.backup_chains, ark.job_totals TO ark_monitor;
REVOKE ALL ON FUNCTION ark._count_job_event() FROM PUBLIC;
