-- pg_ark 0.1.0 to 0.2.0 (ALTER EXTENSION pg_ark UPDATE): every change of the
-- catalog and of the functions since 0.1.0. The catalog's rows stay as they
-- are: no table is dropped or truncated (see README.md here).

-- Schedules paused after pg_ark restore made this cluster: it shares the
-- source's repository entry until an administrator runs
-- ark.resume_schedules().
ALTER TABLE ark.schedules ADD COLUMN paused text;
COMMENT ON COLUMN ark.schedules.paused IS 'Why the schedule does not run (NULL: it runs when enabled): set for physical, expire and logical schedules when pg_ark restore made this cluster; cleared by ark.resume_schedules()';

CREATE FUNCTION ark.resume_schedules() RETURNS bigint
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'resume_schedules_wrapper';
COMMENT ON FUNCTION ark.resume_schedules() IS 'Resume the physical, expire and logical schedules paused after pg_ark restore made this cluster (see ark.status()); returns how many';

-- Privileges: nobody but the owner writes the catalog; the functions are the
-- interface (they check their caller and the options, and run their
-- statements as the extension's owner). 0.1.0 let ark_admin write the
-- tables and use the sequences directly; it reads them now as a member of
-- ark_monitor, like a fresh install.
REVOKE ALL ON ark.schedules, ark.jobs, ark.backups, ark.notifications FROM ark_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA ark FROM ark_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA ark FROM PUBLIC;
