//! Facts of this server that every layer reads: the clock, PostgreSQL's
//! directories, the schedule's time zone, the names of pg_ark's processes.
//! It imports no other module of the extension but `settings` and `error`.
use crate::error::ArkError;
use crate::settings;
use pg_ark_core::schedule::cron::CronSchedule;
use pgrx::prelude::*;

/// `backend_type` of job workers in `pg_stat_activity`.
pub const JOB_WORKER_TYPE: &str = "pg_ark job";

/// Seconds since the Unix epoch, now.
pub fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// PostgreSQL's `$libdir` (`pg_config --pkglibdir`), where the libraries a
/// drill may preload are.
pub fn libdir() -> std::path::PathBuf {
    // SAFETY: a NUL-terminated path PostgreSQL sets at startup and never
    // changes.
    let dir = unsafe { std::ffi::CStr::from_ptr((&raw const pg_sys::pkglib_path).cast()) };
    std::path::PathBuf::from(dir.to_string_lossy().into_owned())
}

/// The next run of `cron` after now, in epoch seconds.
pub fn next_run(schedule: &CronSchedule, after: f64) -> Result<Option<i64>, ArkError> {
    let tz = pg_ark_core::schedule::cron::parse_timezone(&settings::cron_timezone())?;
    Ok(schedule.next_after_epoch(after.floor() as i64, tz))
}

/// The directory of PostgreSQL's programs (`postgres`, `psql`), where
/// pg_ark's CLI is installed too.
pub fn bindir() -> std::path::PathBuf {
    // SAFETY: my_exec_path is a NUL-terminated path PostgreSQL set at start.
    let exe = unsafe {
        std::ffi::CStr::from_ptr(
            std::ptr::addr_of!(pg_sys::my_exec_path).cast::<std::ffi::c_char>(),
        )
    }
    .to_string_lossy()
    .into_owned();
    std::path::Path::new(&exe)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}
