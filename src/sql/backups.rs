//! `ark.expire()`: retention now, as an `expire` job the caller waits for.
use crate::worker::logical::{expire_impl, ExpireArgs};
use crate::xact::raise;
use pgrx::prelude::*;

/// Apply retention now: logical dumps by the given rules or else the
/// ark.logical_retain_* settings (none: no dump expires), and physical
/// backups by the given rules or else ark.retention_full, _diff and _days
/// (whole chains, then the WAL no kept backup needs). Lists what it
/// removed; with `dry_run`, removes nothing and lists what it would remove.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn expire(
    retain_count: default!(Option<i32>, "NULL"),
    retain_days: default!(Option<i32>, "NULL"),
    retention_full: default!(Option<i32>, "NULL"),
    retention_diff: default!(Option<i32>, "NULL"),
    retention_days: default!(Option<i32>, "NULL"),
    dry_run: default!(bool, "false"),
) -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(database, Option<String>),
        name!(label, String),
        name!(path, String),
        name!(job_id, Option<i64>),
        name!(finished_at, Option<String>),
    ),
> {
    let rows = expire_impl(ExpireArgs {
        retain_count,
        retain_days,
        retention_full,
        retention_diff,
        retention_days,
        dry_run,
    })
    .unwrap_or_else(|e| raise(e));
    TableIterator::new(rows)
}
