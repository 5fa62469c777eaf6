//! `ark.expire()`: retention now, as an `expire` job the caller waits for.
use crate::error::ArkError;
use crate::xact::{raise, require_admin, require_queue_database};
use pg_ark_core::schedule::jobs;
use pgrx::prelude::*;
use serde_json::{json, Value};

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

/// One row of `ark.expire()`: kind, database, label, path, job id, finish.
type ExpiredRow = (
    String,
    Option<String>,
    String,
    String,
    Option<i64>,
    Option<String>,
);

/// What `ark.expire()` was asked.
struct ExpireArgs {
    retain_count: Option<i32>,
    retain_days: Option<i32>,
    retention_full: Option<i32>,
    retention_diff: Option<i32>,
    retention_days: Option<i32>,
    dry_run: bool,
}

fn expire_impl(args: ExpireArgs) -> Result<Vec<ExpiredRow>, ArkError> {
    require_admin("expire pg_ark backups")?;
    require_queue_database()?;
    let mut options = serde_json::Map::new();
    for (key, v) in [
        ("retain_count", args.retain_count),
        ("retain_days", args.retain_days),
        ("retention_full", args.retention_full),
        ("retention_diff", args.retention_diff),
        ("retention_days", args.retention_days),
    ] {
        if let Some(n) = v {
            options.insert(key.into(), json!(n));
        }
    }
    if args.dry_run {
        options.insert("dry_run".into(), json!(true));
    }
    let options = Value::Object(options);
    jobs::validate(jobs::JobKind::Expire, &options, &crate::server::libdir())?;
    // A standby's repository entry is its primary's: expiring from here
    // would remove the primary's backups.
    // SAFETY: a plain check of shared state, on the backend's own thread.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(ArkError::InRecovery);
    }
    // The removal runs as an `expire` job, in a worker's own transactions,
    // like ark.backup(): catalog and repository change together, and the
    // caller's ROLLBACK cannot bring back catalog rows of removed dumps.
    // Called and waited for now: one attempt, no retries later.
    let mut options = options;
    options["max_attempts"] = json!(1);
    let id = crate::mailbox::enqueue("expire", &options.to_string())?;
    let done =
        crate::sql::jobs::wait_impl(id, std::time::Duration::from_secs(3600), "1 hour".into())?;
    if done["state"] != "succeeded" {
        return Err(ArkError::JobFailed {
            id,
            state: done["state"].as_str().unwrap_or_default().to_string(),
            error: done["error"].as_str().unwrap_or_default().to_string(),
        });
    }
    let list = |key: &str| done["result"][key].as_array().cloned().unwrap_or_default();
    let s = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_string();
    let mut rows: Vec<ExpiredRow> = Vec::new();
    // Kept by S3 Object Lock: expired, removed by a run after the lock ends.
    let pending = |what: &str, e: &Value| match (e["retained_until"].as_str(), e["reason"].as_str())
    {
        (Some(t), _) => format!("{what}, pending: Object Lock until {t}"),
        (None, Some(why)) => format!("{what}, pending: {why}"),
        (None, None) => format!("{what}, pending: Object Lock"),
    };
    for e in list("expired") {
        rows.push((
            match e.get("retained_until") {
                Some(_) => pending("logical", &e),
                None => "logical".into(),
            },
            Some(s(&e, "database")),
            s(&e, "label"),
            s(&e, "path"),
            e["job_id"].as_i64(),
            Some(s(&e, "finished_at")),
        ));
    }
    for e in list("physical") {
        rows.push((
            s(&e, "kind"),
            None,
            s(&e, "label"),
            s(&e, "path"),
            e["job_id"].as_i64(),
            Some(s(&e, "finished_at")),
        ));
    }
    for e in list("pending") {
        rows.push((
            pending("physical", &e),
            None,
            s(&e, "label"),
            s(&e, "path"),
            None,
            None,
        ));
    }
    for e in list("wal") {
        rows.push((
            "wal".into(),
            None,
            format!("{} .. {}", s(&e, "first"), s(&e, "last")),
            format!(
                "{} file(s) on timeline {}",
                e["files"].as_u64().unwrap_or(0),
                s(&e, "timeline")
            ),
            None,
            None,
        ));
    }
    // Last: where recovery can start from after this expiry.
    let from = &done["result"]["recoverable_from"];
    if from.is_object() {
        rows.push((
            "recoverable from".into(),
            None,
            s(from, "backup"),
            s(from, "path"),
            None,
            Some(s(from, "time")),
        ));
    }
    Ok(rows)
}
