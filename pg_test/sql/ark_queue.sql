-- The job queue's SQL surface: catalog, validation, exact errors, roles.
CREATE EXTENSION pg_ark;
-- Every function and table is documented.
SELECT p.oid::regprocedure AS undocumented_function
  FROM pg_proc p WHERE p.pronamespace = 'ark'::regnamespace
   AND obj_description(p.oid, 'pg_proc') IS NULL;
SELECT c.relname AS undocumented_table
  FROM pg_class c WHERE c.relnamespace = 'ark'::regnamespace AND c.relkind = 'r'
   AND obj_description(c.oid, 'pg_class') IS NULL;
-- The roles exist; ark_admin is a member of ark_monitor.
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN ('ark_admin', 'ark_monitor') ORDER BY 1;
SELECT pg_has_role('ark_admin', 'ark_monitor', 'MEMBER') AS admin_is_monitor;
-- PUBLIC may neither read nor write the catalog; ark_admin reads it and
-- writes it only through the functions.
SELECT relname,
       has_table_privilege('public', oid, 'SELECT') AS public_reads,
       has_table_privilege('public', oid, 'INSERT, UPDATE, DELETE, TRUNCATE') AS public_writes,
       has_table_privilege('ark_monitor', oid, 'SELECT') AS monitor_reads,
       has_table_privilege('ark_monitor', oid, 'INSERT, UPDATE, DELETE, TRUNCATE') AS monitor_writes,
       has_table_privilege('ark_admin', oid, 'INSERT, UPDATE, DELETE, TRUNCATE') AS admin_writes
  FROM pg_class
 WHERE relnamespace = 'ark'::regnamespace AND relkind = 'r' ORDER BY 1;
-- Schedules: cron expressions are checked when the schedule is created.
SELECT ark.schedule('nightly', '0 3 * * *', 'logical', '{"database": "postgres"}') > 0 AS created;
SELECT name, cron, kind, options, enabled, next_run > now() AS next_run_ahead FROM ark.schedules;
SELECT ark.schedule('nightly', '@weekly', 'logical') = id AS replaced_same_id FROM ark.schedules;
SELECT cron, options FROM ark.schedules WHERE name = 'nightly';
SELECT ark.schedule('bad', '0 3 * *', 'logical');
SELECT ark.schedule('bad', '61 * * * *', 'logical');
SELECT ark.schedule('bad', '@reboot', 'logical');
SELECT ark.schedule('bad', '0 0 30 2 *', 'logical');
SELECT ark.schedule('', '@daily', 'logical');
-- Kinds and options.
SELECT ark.schedule('bad', '@daily', 'snapshot');
SELECT ark.schedule('bad', '@daily', 'incremental', '{"retain_count": 2}');
SELECT ark.schedule('bad', '@daily', 'verify', '{"backup_id": "../x"}');
SELECT ark.schedule('bad', '@daily', 'logical', '{"databse": "x"}');
SELECT ark.schedule('bad', '@daily', 'logical', '{"format": "tar"}');
SELECT ark.schedule('bad', '@daily', 'logical', '{"jobs": 4}');
SELECT ark.schedule('bad', '@daily', 'logical', '[1, 2]');
SELECT ark.schedule('bad', '@daily', 'logical', '{"retry_base": "soon"}');
SELECT ark.schedule('retry-as-interval', '@daily', 'logical', '{"retry_base": "30s", "retry_cap": "5 min"}') > 0 AS created;
SELECT options FROM ark.schedules WHERE name = 'retry-as-interval';
SELECT ark.backup('logical', '{"max_attempts": 0}');
-- Nothing was stored by the refused calls.
SELECT count(*) AS schedules FROM ark.schedules;
SELECT ark.unschedule('retry-as-interval');
SELECT ark.unschedule('no-such-schedule');
-- Jobs that do not exist.
SELECT ark.cancel(424242);
SELECT ark.retry(424242);
SELECT ark.wait(424242);
-- ark.wait() needs to see other transactions' commits.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT ark.wait(1);
ROLLBACK;
-- Roles: a plain role is refused with a hint; ark_monitor may read.
CREATE ROLE ark_regress_user;
CREATE ROLE ark_regress_monitor IN ROLE ark_monitor;
SET ROLE ark_regress_user;
SELECT ark.backup('logical');
SELECT ark.schedule('x', '@daily', 'logical');
SELECT ark.status();
SELECT count(*) FROM ark.jobs;
DELETE FROM ark.schedules;
RESET ROLE;
SET ROLE ark_regress_monitor;
SELECT count(*) AS visible_schedules FROM ark.schedules;
SELECT ark.status()->>'status' AS status;
SELECT ark.unschedule('nightly');
RESET ROLE;
DROP ROLE ark_regress_user;
DROP ROLE ark_regress_monitor;
-- The settings of the queue, with their defaults.
SELECT name, setting, unit, context FROM pg_settings
 WHERE name IN ('ark.max_parallel_jobs', 'ark.job_max_attempts', 'ark.job_retry_base',
                'ark.job_retry_cap', 'ark.job_history_days', 'ark.cron_timezone',
                'ark.notify_on_success', 'ark.health_backup_max_age')
 ORDER BY name;
ALTER SYSTEM SET ark.cron_timezone = 'Mars/Olympus';
ALTER SYSTEM SET ark.notify_url = 'ftp://example.com/hook';
-- The catalog survives: dropping the extension is the only way to lose it.
SELECT count(*) AS schedules_left FROM ark.schedules;
DROP EXTENSION pg_ark;
