-- The SQL surface of the skeleton, with exact messages.
CREATE EXTENSION pg_ark;
SELECT ark.version() = extversion AS version_matches FROM pg_extension WHERE extname = 'pg_ark';
-- The schema and the function are documented.
SELECT obj_description('ark'::regnamespace, 'pg_namespace') IS NOT NULL AS schema_documented;
SELECT obj_description('ark.version()'::regprocedure, 'pg_proc') AS version_comment;
-- Settings: the defaults, and their reload levels.
SHOW ark.database;
SHOW ark.scheduler_naptime;
SELECT name, context, unit FROM pg_settings WHERE name LIKE 'ark.%' ORDER BY name;
-- The ark. prefix is reserved: a misspelt setting is an error, not a placeholder.
SET ark.no_such_setting = 'x';
-- Each setting keeps its reload level: no per-session changes.
SET ark.scheduler_naptime = 5;
SET ark.database = 'other';
-- Out-of-range values are refused before they reach postgresql.auto.conf.
ALTER SYSTEM SET ark.scheduler_naptime = 0;
ALTER SYSTEM SET ark.scheduler_naptime = '2h';
-- ark.repository is checked where it is set, with the reason and a hint.
ALTER SYSTEM SET ark.repository = 'ftp://host/x';
ALTER SYSTEM SET ark.repository = 'file://relative/path';
ALTER SYSTEM SET ark.compression = 'brotli';
ALTER SYSTEM SET ark.archive_also = 'cp %p /x';
-- ark.archive_status() answers before anything was archived.
SELECT repository, archived_count, failed_count, last_failure_reason FROM ark.archive_status();
-- The extension lives in schema ark and cannot be relocated.
ALTER EXTENSION pg_ark SET SCHEMA public;
DROP EXTENSION pg_ark;
