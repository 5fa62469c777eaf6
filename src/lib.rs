//! pg_ark: PostgreSQL manages its own backups.
//!
//! This crate is the part of pg_ark that runs *inside* PostgreSQL: the SQL
//! surface in schema `ark`, the `pg_ark scheduler` background worker, and the
//! archive module (`archive_library = 'pg_ark'`). Everything that must also
//! work with the server down (storage, the repository format, WAL push and
//! fetch, the logical-dump format) lives in the pgrx-free `pg_ark_core`
//! crate, shared with the CLI.
//!
//! Rules this crate keeps:
//! - no pgrx or PostgreSQL call from any thread but the backend's own;
//! - every error becomes a PostgreSQL error with SQLSTATE and hint in one
//!   place (`error.rs`), and a long-lived process (scheduler, archiver)
//!   degrades instead of dying.
use pgrx::prelude::*;

mod archive;
mod catalog;
mod error;
mod mailbox;
mod repo;
mod server;
mod settings;
mod sql;
mod worker;
mod xact;

pgrx::pg_module_magic!(name, version);

/// Library entry point, run once per process that loads `pg_ark.so`.
///
/// pg_ark needs `shared_preload_libraries` for its background worker and its
/// settings; loading it any other way is refused with a hint, like pg_cron
/// does. The one exception is the archiver loading us as `archive_library`:
/// archiving alone needs neither the worker nor the SQL surface, and then
/// only the reloadable settings are defined (see `settings::init`).
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: plain reads of backend globals, on the backend's own thread.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    if !preloading && !archive::loading_in_archiver() {
        let binary_upgrade = unsafe { pg_sys::IsBinaryUpgrade };
        error::ArkError::NotPreloaded.report(if binary_upgrade {
            PgLogLevel::WARNING
        } else {
            PgLogLevel::ERROR
        });
        return;
    }
    settings::init(preloading);
    if preloading {
        mailbox::init();
        worker::scheduler::register();
        worker::http::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn version_matches_the_crate() {
        let v = Spi::get_one::<String>("SELECT ark.version()");
        assert_eq!(v, Ok(Some(env!("CARGO_PKG_VERSION").to_string())));
    }

    /// MarkGUCPrefixReserved("ark"): an unknown ark.* setting is an error.
    #[pg_test(error = "invalid configuration parameter name \"ark.no_such_setting\"")]
    fn the_ark_prefix_is_reserved() {
        let _ = Spi::run("SET ark.no_such_setting = 1");
    }

    #[pg_test]
    fn settings_are_registered() {
        let db = Spi::get_one::<String>("SELECT current_setting('ark.database')");
        assert_eq!(db, Ok(Some("postgres".to_string())));
        let nap = Spi::get_one::<String>("SELECT current_setting('ark.scheduler_naptime')");
        assert_eq!(nap, Ok(Some("10s".to_string())));
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    /// pg_ark refuses to load outside `shared_preload_libraries`, so the
    /// test cluster preloads it.
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_ark'"]
    }
}
