//! The SQL surface: every `ark.*` function, with the privilege checks in
//! `crate::xact`. The control file puts the extension in schema `ark`.
use pgrx::prelude::*;

mod archive;
mod backups;
pub mod jobs;
pub(crate) mod metrics;
pub(crate) mod restore;
pub mod status;

/// The version of pg_ark's library, which is also the extension version
/// that `CREATE EXTENSION pg_ark` installs by default.
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

extension_sql!(
    r#"
COMMENT ON SCHEMA ark IS 'pg_ark: backups managed by PostgreSQL itself';
COMMENT ON FUNCTION ark.version() IS 'Version of the pg_ark library and extension';
COMMENT ON FUNCTION ark.archive_status() IS 'WAL archiving: last archived file, last failure with its reason, counts, and the backlog in pg_wal';
REVOKE ALL ON FUNCTION ark.archive_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ark.archive_status() TO pg_monitor, ark_monitor;

COMMENT ON FUNCTION ark.schedule(text, text, text, jsonb) IS 'Create or replace a schedule: run a job of a kind with options whenever a cron expression (5 fields or @hourly/@daily/@weekly/@monthly, in ark.cron_timezone) comes due; returns the schedule id';
COMMENT ON FUNCTION ark.unschedule(text) IS 'Remove a schedule by name; false if there is none';
COMMENT ON FUNCTION ark.resume_schedules() IS 'Resume the physical, expire, logical and other tools'' schedules paused after pg_ark restore made this cluster (see ark.status()); returns how many';
COMMENT ON FUNCTION ark.backup(text, jsonb) IS 'Queue a job now (independently of the calling transaction) and return its id';
COMMENT ON FUNCTION ark.wait(bigint, interval) IS 'Wait until a job ends and return its final state, attempts, result and error';
COMMENT ON FUNCTION ark.cancel(bigint) IS 'Cancel a queued, retrying or running job';
COMMENT ON FUNCTION ark.retry(bigint) IS 'Queue a failed or cancelled job again, or run a retrying one now; returns the job id';
COMMENT ON FUNCTION ark.expire(integer, integer, integer, integer, integer, boolean) IS 'Apply retention now, as an expire job it waits for: logical dumps per series (retain_count, retain_days or ark.logical_retain_*), physical backups as whole chains (retention_full, retention_diff, retention_days or ark.retention_*) and the WAL no kept backup needs; lists what it removed, or with dry_run what it would remove';
COMMENT ON FUNCTION ark.verify(text) IS 'Queue a verification of a physical backup (the newest when NULL): re-read every object its restore needs, check each against the manifest, and check its WAL; returns the job id';
COMMENT ON FUNCTION ark.metrics() IS 'pg_ark metrics in Prometheus text format (0.0.4), the text GET /metrics serves: backups, archiving, the recovery window, jobs, drills, webhooks and the health verdict';
COMMENT ON FUNCTION ark.status() IS 'pg_ark health: healthy, degraded or failing, with messages, backup ages, failing and retrying jobs, and WAL archiving';
"#,
    name = "comments",
    finalize
);
