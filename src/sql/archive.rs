//! `ark.archive_status()`.
use crate::archive::status::{archiver_state, backlog};
use pgrx::prelude::*;

/// The archive module's state: the last archived file, the last failure
/// with its reason, counts, and the backlog still in pg_wal.
#[pg_extern(name = "archive_status", volatile)]
#[allow(clippy::type_complexity)]
fn archive_status() -> TableIterator<
    'static,
    (
        name!(repository, Option<String>),
        name!(archived_count, i64),
        name!(last_archived_wal, Option<String>),
        name!(last_archived_time, Option<TimestampWithTimeZone>),
        name!(failed_count, i64),
        name!(last_failed_wal, Option<String>),
        name!(last_failed_time, Option<TimestampWithTimeZone>),
        name!(last_failure_reason, Option<String>),
        name!(last_failure_hint, Option<String>),
        name!(backlog, i64),
    ),
> {
    let st = match archiver_state() {
        Ok(st) => st,
        Err(e) => pgrx::error!("pg_ark could not read pg_stat_archiver: {}", e),
    };
    TableIterator::once((
        crate::settings::repository(),
        st.archived_count,
        st.last_archived_wal,
        st.last_archived_time,
        st.failed_count,
        st.last_failed_wal,
        st.last_failed_time,
        st.last_failure_reason,
        st.last_failure_hint,
        backlog(),
    ))
}
