//! Archive status: what `ark.archive_status()` reports.
//!
//! PostgreSQL's `pg_stat_archiver` already counts archived and failed files
//! and names the last of each; what it cannot know is *why* a file failed.
//! The archiver records that here, in `$PGDATA/pg_ark/archive_failure.json`
//! (written atomically on each failure; the archive module may run without
//! `shared_preload_libraries`, so no shared memory is assumed). The backlog
//! is the number of `.ready` files in `pg_wal/archive_status`.
use crate::error::ArkError;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::path::Path;

const FAILURE_FILE: &str = "pg_ark/archive_failure.json";

/// Record why archiving `wal` failed. Best effort: a failure to record is
/// only logged, it never turns into an error of its own.
pub fn record_failure(wal: &str, err: &ArkError) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let doc = json!({ "wal": wal, "epoch": now, "message": err.to_string(), "hint": err.hint() });
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all("pg_ark")?;
        let tmp = format!("{FAILURE_FILE}.tmp");
        std::fs::write(&tmp, doc.to_string())?;
        std::fs::rename(&tmp, FAILURE_FILE)
    };
    if let Err(e) = write() {
        pgrx::log!(
            "pg_ark could not record the archive failure in {}: {}",
            FAILURE_FILE,
            e
        );
    }
}

pub fn last_failure() -> Option<Value> {
    let text = std::fs::read_to_string(FAILURE_FILE).ok()?;
    serde_json::from_str(&text).ok()
}

/// Files waiting for the archiver.
pub fn backlog() -> i64 {
    let Ok(dir) = std::fs::read_dir(Path::new("pg_wal/archive_status")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .count() as i64
}

mod sql {
    use super::*;

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
        let failure = last_failure();
        let reason = failure
            .as_ref()
            .and_then(|f| f.get("message")?.as_str().map(str::to_string));
        let hint = failure
            .as_ref()
            .and_then(|f| f.get("hint")?.as_str().map(str::to_string));
        let row = Spi::connect(|client| {
            let t = client.select(
                "SELECT archived_count, last_archived_wal, last_archived_time,
                        failed_count, last_failed_wal, last_failed_time
                   FROM pg_catalog.pg_stat_archiver",
                None,
                &[],
            )?;
            let r = t.first();
            Ok::<_, pgrx::spi::SpiError>((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<String>(2)?,
                r.get::<TimestampWithTimeZone>(3)?,
                r.get::<i64>(4)?.unwrap_or(0),
                r.get::<String>(5)?,
                r.get::<TimestampWithTimeZone>(6)?,
            ))
        });
        let (archived, last_wal, last_time, failed, failed_wal, failed_time) = match row {
            Ok(r) => r,
            Err(e) => pgrx::error!("pg_ark could not read pg_stat_archiver: {}", e),
        };
        TableIterator::once((
            crate::settings::repository(),
            archived,
            last_wal,
            last_time,
            failed,
            failed_wal,
            failed_time,
            reason,
            hint,
            backlog(),
        ))
    }
}
