//! Transactions in pg_ark's background workers, and the privilege checks of
//! the SQL surface.
//!
//! A background worker must survive any error of the work it does: an ERROR
//! raised by PostgreSQL inside [`run`] (a failed query, a constraint) rolls
//! the transaction back and comes back as `Err(failure)` (its message, and
//! whether it may go away by itself) instead of ending
//! the process, the way pg_cron's launcher turns a failed job into a failed
//! run.
use crate::error::ArkError;
use pg_ark_core::schedule::lifecycle::{self, JobFailure};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Run `body` in its own transaction in a background worker. Commits on
/// `Ok`, rolls back on `Err` or on a PostgreSQL ERROR (returned as a
/// [`JobFailure`], classed by its SQLSTATE).
pub fn run<R>(body: impl FnOnce() -> Result<R, ArkError>) -> Result<R, JobFailure> {
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
                | pg_sys::panic::CaughtError::ErrorReport(r) => reported(&r),
                pg_sys::panic::CaughtError::RustPanic { ereport, .. } => {
                    JobFailure::permanent(ereport.message())
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
            Err(e.failure())
        }
        Err(message) => {
            // SAFETY: the error was caught (and its state flushed) by pgrx;
            // abort the failed transaction.
            unsafe { pg_sys::AbortCurrentTransaction() };
            Err(message)
        }
    }
}

/// A PostgreSQL error raised in [`run`], classed by its SQLSTATE (see
/// [`lifecycle::sqlstate_is_transient`]).
fn reported(r: &pgrx::pg_sys::panic::ErrorReportWithLevel) -> JobFailure {
    let code = sqlstate_text(r.sql_error_code() as i32);
    if lifecycle::sqlstate_is_transient(&code) {
        JobFailure::transient(r.message())
    } else {
        JobFailure::permanent(r.message())
    }
}

/// The five characters of a SQLSTATE packed by PostgreSQL's MAKE_SQLSTATE
/// (six bits a character, the first in the lowest bits).
pub fn sqlstate_text(code: i32) -> String {
    (0..5)
        .map(|i| char::from(((code >> (6 * i)) & 0x3F) as u8 + b'0'))
        .collect()
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

/// The queue lives in `ark.database`, at this library's version: refuse to
/// touch it elsewhere, or before `ALTER EXTENSION pg_ark UPDATE`.
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
        crate::catalog::require_current_version()
    } else {
        Err(ArkError::WrongDatabase {
            queue_db,
            current_db,
        })
    }
}

/// Run `body`, the catalog statements of a function that has checked its
/// caller, as the owner of the pg_ark extension, with `search_path =
/// pg_catalog, pg_temp`; then back to the caller and its `search_path`.
///
/// The catalog tables grant no writes to `ark_admin` (or anyone): the
/// functions are the interface. Unlike `SECURITY DEFINER`, only these
/// statements change user, so the function checks the real caller (a
/// `SECURITY DEFINER` function sees its owner as `current_user`), the way
/// PostgreSQL's own foreign-key checks run as a table's owner. The
/// restricted `search_path` keeps objects the caller created from standing
/// in for a function or an operator while the owner runs; and it is a
/// restricted operation (no `SET ROLE`, no temporary objects). An ERROR
/// inside restores both with the (sub)transaction's abort.
pub fn as_owner<R>(body: impl FnOnce() -> Result<R, ArkError>) -> Result<R, ArkError> {
    // SAFETY: GUC and user-id calls on the backend's own thread, inside a
    // transaction, undone in reverse order below (or by the abort).
    unsafe {
        let nest = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        let owner = Spi::get_one::<pg_sys::Oid>(
            "SELECT e.extowner FROM pg_catalog.pg_extension e
              WHERE e.extname OPERATOR(pg_catalog.=) 'pg_ark'",
        );
        let owner = match owner {
            Ok(Some(oid)) => oid,
            Ok(None) => {
                pg_sys::AtEOXact_GUC(true, nest);
                return Err(ArkError::NotInstalled);
            }
            Err(e) => {
                pg_sys::AtEOXact_GUC(true, nest);
                return Err(e.into());
            }
        };
        let mut caller = pg_sys::InvalidOid;
        let mut context = 0;
        pg_sys::GetUserIdAndSecContext(&mut caller, &mut context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        let r = body();
        pg_sys::SetUserIdAndSecContext(caller, context);
        pg_sys::AtEOXact_GUC(true, nest);
        r
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
