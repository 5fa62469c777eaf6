//! The catalog: the tables, views and roles of schema `ark`
//! (`catalog.sql`), and the job state machine (`jobs.rs`).
//!
//! The library reads and writes only a catalog of its own version
//! ([`pg_ark_core::version`]): an older one waits for `ALTER EXTENSION
//! pg_ark UPDATE` (`sql/pg_ark--<from>--<to>.sql`).
use crate::error::ArkError;
use pg_ark_core::version::CatalogMismatch;
use pgrx::prelude::*;

pub mod jobs;
pub mod notifications;

/// The version of the extension installed in this database
/// (`pg_extension.extversion`); `None` when it is not installed. A
/// read-only statement: it also runs on a standby (`Spi::get_one` would
/// take a transaction id).
pub fn installed_version() -> Result<Option<String>, ArkError> {
    Ok(Spi::connect(|c| {
        c.select(
            "SELECT (SELECT e.extversion FROM pg_catalog.pg_extension e
                      WHERE e.extname OPERATOR(pg_catalog.=) 'pg_ark')",
            Some(1),
            &[],
        )?
        .first()
        .get_one::<String>()
    })?)
}

/// The version of this library, which is the catalog version it reads and
/// writes (and the control file's `default_version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The catalog installed in this database, when it is at another version
/// than this library.
pub fn version_mismatch() -> Result<Option<CatalogMismatch>, ArkError> {
    Ok(installed_version()?.and_then(|v| CatalogMismatch::check(&v, VERSION)))
}

/// Refuse to use a catalog of another version than this library's.
pub fn require_current_version() -> Result<(), ArkError> {
    match version_mismatch()? {
        Some(m) => Err(ArkError::CatalogVersion(m)),
        None => Ok(()),
    }
}

// The catalog tables and roles come first: functions' grants refer to them.
extension_sql_file!("catalog.sql", name = "catalog", bootstrap);
