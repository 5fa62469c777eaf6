//! Every `ark.*` setting, in one place.
//!
//! Each setting's reload level is chosen on purpose:
//! - `ark.database` is `postmaster`: the scheduler connects to it once, at
//!   start, and a bgworker cannot switch databases;
//! - `ark.scheduler_naptime` is `sighup`: the scheduler re-reads it on reload.
//!
//! The prefix `ark` is reserved (`MarkGUCPrefixReserved`), so a misspelt
//! `ark.*` setting is an error instead of a silently ignored placeholder.
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;
use std::time::Duration;

pub static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
pub static SCHEDULER_NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(10);

/// Register the settings. Called from `_PG_init`, once per process.
pub fn init() {
    GucRegistry::define_string_guc(
        c"ark.database",
        c"Database in which the pg_ark extension is installed and the scheduler connects.",
        c"The scheduler reads its schedules and job queue from this database. Changing it needs a restart.",
        &DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.scheduler_naptime",
        c"How long the pg_ark scheduler sleeps between passes.",
        c"The scheduler also wakes at once on a reload or a shutdown request.",
        &SCHEDULER_NAPTIME,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    // SAFETY: called from _PG_init on the backend's thread; the string is static.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"ark".as_ptr()) };
}

/// `ark.database`, as text.
pub fn database() -> String {
    DATABASE
        .get()
        .and_then(|s| s.into_string().ok())
        .unwrap_or_else(|| "postgres".to_string())
}

/// `ark.scheduler_naptime`, as a duration.
pub fn scheduler_naptime() -> Duration {
    Duration::from_secs(u64::try_from(SCHEDULER_NAPTIME.get()).unwrap_or(10).max(1))
}
