//! `ark.expire()`: retention now, as an `expire` job the caller waits for.
use crate::worker::logical::expire_impl;
use crate::xact::raise;
use pgrx::prelude::*;

/// Apply logical-backup retention now, with the given rules or else the
/// ark.logical_retain_* settings: removes expired dumps from the repository
/// and from ark.backups, and lists what it removed.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn expire(
    retain_count: default!(Option<i32>, "NULL"),
    retain_days: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(database, String),
        name!(label, String),
        name!(path, String),
        name!(job_id, Option<i64>),
        name!(finished_at, String),
    ),
> {
    let rows = expire_impl(retain_count, retain_days).unwrap_or_else(|e| raise(e));
    TableIterator::new(rows)
}
