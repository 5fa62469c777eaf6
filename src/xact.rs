//! Transactions in pg_ark's background workers, and the privilege checks of
//! the SQL surface.
//!
//! A background worker must survive any error of the work it does: an ERROR
//! raised by PostgreSQL inside [`run`] (a failed query, a constraint) rolls
//! the transaction back and comes back as `Err(message)` instead of ending
//! the process, the way pg_cron's launcher turns a failed job into a failed
//! run.
use crate::error::ArkError;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Run `body` in its own transaction in a background worker. Commits on
/// `Ok`, rolls back on `Err` or on a PostgreSQL ERROR (returned as text).
pub fn run<R>(body: impl FnOnce() -> Result<R, ArkError>) -> Result<R, String> {
    // SAFETY: background worker's own thread, outside any transaction.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| Ok(body())))
        .catch_others(|e| {
            Err(match e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_string(),
                pg_sys::panic::CaughtError::RustPanic { ereport, .. } => {
                    ereport.message().to_string()
                }
            })
        })
        .execute();
    match outcome {
        Ok(Ok(value)) => {
            // SAFETY: the transaction started above is still open.
            unsafe {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Ok(value)
        }
        Ok(Err(e)) => {
            // SAFETY: roll back the transaction started above.
            unsafe { pg_sys::AbortCurrentTransaction() };
            Err(e.to_string())
        }
        Err(message) => {
            // SAFETY: the error was caught (and its state flushed) by pgrx;
            // abort the failed transaction.
            unsafe { pg_sys::AbortCurrentTransaction() };
            Err(message)
        }
    }
}

/// The name of the current user.
pub fn current_role() -> String {
    // SAFETY: plain catalog lookup on the backend's thread.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), true);
        if name.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    }
}

/// Whether the current user is a superuser or has the privileges of `role`.
fn has_role(role: &std::ffi::CStr) -> bool {
    // SAFETY: catalog lookups on the backend's thread, inside a transaction.
    unsafe {
        if pg_sys::superuser() {
            return true;
        }
        let oid = pg_sys::get_role_oid(role.as_ptr(), true);
        oid != pg_sys::InvalidOid && pg_sys::has_privs_of_role(pg_sys::GetUserId(), oid)
    }
}

/// Superusers and members of `ark_admin` only.
pub fn require_admin(action: &'static str) -> Result<(), ArkError> {
    if has_role(c"ark_admin") {
        Ok(())
    } else {
        Err(ArkError::NotAdmin {
            action,
            role: current_role(),
        })
    }
}

/// Superusers and members of `ark_monitor` (ark_admin is one) only.
pub fn require_monitor() -> Result<(), ArkError> {
    if has_role(c"ark_monitor") || has_role(c"ark_admin") {
        Ok(())
    } else {
        Err(ArkError::NotMonitor {
            role: current_role(),
        })
    }
}

/// The queue lives in `ark.database`: refuse to touch it elsewhere.
pub fn require_queue_database() -> Result<(), ArkError> {
    let queue_db = crate::settings::database();
    // SAFETY: catalog lookup on the backend's thread.
    let current_db = unsafe {
        let name = pg_sys::get_database_name(pg_sys::MyDatabaseId);
        if name.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        }
    };
    if current_db == queue_db {
        Ok(())
    } else {
        Err(ArkError::WrongDatabase {
            queue_db,
            current_db,
        })
    }
}

/// Raise `e` as a PostgreSQL ERROR (does not return).
pub fn raise(e: ArkError) -> ! {
    e.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) does not return")
}

/// The first column of the first row of a (read-write) statement, or `None`
/// when it returns no row (`Spi::get_one` errors on an empty result).
pub fn first_value<T: pgrx::FromDatum + pgrx::IntoDatum>(
    query: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Option<T>, ArkError> {
    Ok(Spi::connect_mut(|c| {
        let t = c.update(query, Some(1), args)?;
        if t.is_empty() {
            Ok(None)
        } else {
            t.first().get_one::<T>()
        }
    })?)
}
