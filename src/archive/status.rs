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
    let doc = json!({ "wal": wal, "epoch": crate::server::now_epoch(), "message": err.to_string(), "hint": err.hint() });
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

/// What `pg_stat_archiver` and pg_ark's failure record say, for
/// `ark.archive_status()` and `ark.status()`.
pub struct ArchiverState {
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<TimestampWithTimeZone>,
    pub last_archived_epoch: Option<f64>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<TimestampWithTimeZone>,
    pub last_failed_epoch: Option<f64>,
    pub last_failure_reason: Option<String>,
    pub last_failure_hint: Option<String>,
}

pub fn archiver_state() -> Result<ArchiverState, pgrx::spi::SpiError> {
    let failure = last_failure();
    let field = |name: &str| {
        failure
            .as_ref()
            .and_then(|f| f.get(name)?.as_str().map(str::to_string))
    };
    let (last_failure_reason, last_failure_hint) = (field("message"), field("hint"));
    Spi::connect(|client| {
        let t = client.select(
            "SELECT archived_count, last_archived_wal, last_archived_time,
                    extract(epoch FROM last_archived_time)::float8,
                    failed_count, last_failed_wal, last_failed_time,
                    extract(epoch FROM last_failed_time)::float8
               FROM pg_catalog.pg_stat_archiver",
            None,
            &[],
        )?;
        let r = t.first();
        Ok(ArchiverState {
            archived_count: r.get::<i64>(1)?.unwrap_or(0),
            last_archived_wal: r.get(2)?,
            last_archived_time: r.get(3)?,
            last_archived_epoch: r.get(4)?,
            failed_count: r.get::<i64>(5)?.unwrap_or(0),
            last_failed_wal: r.get(6)?,
            last_failed_time: r.get(7)?,
            last_failed_epoch: r.get(8)?,
            last_failure_reason,
            last_failure_hint,
        })
    })
}
