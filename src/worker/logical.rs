//! Logical backups (`logical` jobs), retention (`expire` jobs and
//! `ark.expire()`).
//!
//! The worker's thread gathers everything PostgreSQL knows (databases, the
//! socket, the port, pg_dump's path beside the server's own binary, the
//! system identifier, the settings); the dumps then run on a work thread
//! through `pg_ark_core::logical`: pg_dump is started with an argument
//! vector (never a shell), over the local socket, with no password on its
//! command line, and its output streams into the repository (custom and
//! plain formats without any temporary copy). Each finished dump is
//! recorded in `ark.backups` as soon as it is durable; its `backup.info` in
//! the repository makes it restorable without the database.
//!
//! Retention keeps, per database, the newest `retain_count` dumps and those
//! younger than `retain_days` (options, else `ark.logical_retain_*`); the
//! newest dump of a database never expires. Expired dumps leave the
//! repository first (`backup.info` first), then the catalog.
use crate::catalog::jobs::{Job, Outcome};
use crate::error::ArkError;
use crate::repo::RepoTarget;
use crate::worker::job::{outcome, set_progress, supervise, Control};
use crate::{settings, xact};
use pg_ark_core::logical::{
    self, DumpControl, DumpFormat, DumpMeta, DumpRequest, LogicalBackupInfo,
};
use pg_ark_core::repo::ClusterRepo;
use pg_ark_core::schedule::jobs;
use pg_ark_core::schedule::lifecycle::JobFailure;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// Retention rules: options first, then the settings (0 = unset).
fn retention(options: &Value) -> (Option<u32>, Option<u32>) {
    (
        jobs::count_option(
            options,
            "retain_count",
            settings::LOGICAL_RETAIN_COUNT.get(),
        ),
        jobs::count_option(options, "retain_days", settings::LOGICAL_RETAIN_DAYS.get()),
    )
}

/// Everything a logical job needs, gathered on the backend's thread.
struct DumpPlan {
    target: RepoTarget,
    databases: Vec<String>,
    request: DumpRequest,
    /// For a directory dump: bytes each database may need in the work directory.
    stage_bytes: std::collections::HashMap<String, u64>,
    /// The retention series of a schedule's dumps (`schedule:<name>`).
    series: Option<String>,
    label: String,
    server_version: String,
    job_id: i64,
    retain: (Option<u32>, Option<u32>),
}

fn setting(name: &str) -> Result<String, ArkError> {
    Ok(
        Spi::get_one_with_args::<String>("SELECT current_setting($1)", &[name.into()])?
            .unwrap_or_default(),
    )
}

fn plan(job: &Job) -> Result<DumpPlan, ArkError> {
    let target = RepoTarget::current()?;
    let databases = match jobs::option_names(&job.options, "database") {
        Some(list) => list,
        None => {
            let mut out = Vec::new();
            Spi::connect(|c| {
                let t = c.select(
                    "SELECT datname::text FROM pg_catalog.pg_database
                      WHERE datallowconn AND NOT datistemplate ORDER BY datname",
                    None,
                    &[],
                )?;
                for r in t {
                    if let Some(name) = r.get::<String>(1)? {
                        out.push(name);
                    }
                }
                Ok::<_, pgrx::spi::SpiError>(())
            })?;
            out
        }
    };
    let format = DumpFormat::parse(
        job.options
            .get("format")
            .and_then(Value::as_str)
            .unwrap_or("custom"),
    )?;
    let socket_dir = setting("unix_socket_directories")?
        .split(',')
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| pg_ark_core::Error::InvalidLogicalRequest {
            reason: "unix_socket_directories is empty, and pg_ark runs pg_dump over the local socket only".into(),
        })?;
    let port: u16 = setting("port")?.parse().unwrap_or(5432);
    let user =
        Spi::get_one::<String>("SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10")?;
    // SAFETY: my_exec_path is the server binary's path, set at start.
    let exec = unsafe { std::ffi::CStr::from_ptr((&raw const pg_sys::my_exec_path).cast()) }
        .to_string_lossy()
        .into_owned();
    let pg_dump = PathBuf::from(exec)
        .parent()
        .map(|d| d.join("pg_dump"))
        .unwrap_or_else(|| PathBuf::from("pg_dump"));
    // A directory dump is staged whole before upload: the database's size
    // bounds what it needs there.
    let mut stage_bytes = std::collections::HashMap::new();
    if format == DumpFormat::Directory {
        for db in &databases {
            let size = Spi::get_one_with_args::<i64>(
                "SELECT pg_catalog.pg_database_size($1::text::name)",
                &[db.as_str().into()],
            )?
            .unwrap_or(0);
            stage_bytes.insert(db.clone(), u64::try_from(size).unwrap_or(0));
        }
    }
    let label = Spi::get_one_with_args::<String>(
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD\"T\"HH24MISS\"Z\"') || '-j' || $1",
        &[job.id.to_string().into()],
    )?
    .unwrap_or_else(|| format!("j{}", job.id));
    Ok(DumpPlan {
        target,
        databases,
        request: DumpRequest {
            pg_dump,
            socket_dir,
            port,
            user,
            database: String::new(),
            format,
            schemas: jobs::option_names(&job.options, "schema").unwrap_or_default(),
            jobs: job
                .options
                .get("jobs")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
            compression: job.options.get("compression").map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            work_dir: Some(settings::work_directory()?),
        },
        stage_bytes,
        series: job.schedule.as_ref().map(|name| format!("schedule:{name}")),
        label,
        server_version: setting("server_version")?,
        job_id: job.id,
        retain: retention(&job.options),
    })
}

/// What the work thread reports as it goes.
enum Event {
    Stored {
        info: Box<LogicalBackupInfo>,
        location: String,
        prefix: String,
    },
    Expired {
        location: String,
        prefix: String,
    },
}

fn summary(info: &LogicalBackupInfo, prefix: &str) -> Value {
    json!({
        "database": info.database,
        "label": info.label,
        "format": info.format.as_str(),
        "path": prefix,
        "keys": info.files.iter().map(|f| f.key.clone()).collect::<Vec<_>>(),
        "bytes": info.bytes,
        "sha256": info.sha256,
        "seconds": info.finished_epoch - info.started_epoch,
    })
}

/// Apply retention to `databases` (all when `None`) of the entry, each
/// series on its own (see `logical::series_key`); with `series`, only to
/// those series (a dump job's rule governs its own series). Sends an event
/// per expired dump and returns their summaries. With `dry_run`, nothing is
/// removed and no event sent: the same list, of what would go.
fn expire_dumps(
    cluster: &ClusterRepo,
    databases: Option<&[String]>,
    retain: (Option<u32>, Option<u32>),
    series: Option<&[String]>,
    tx: &Sender<Event>,
    dry_run: bool,
) -> Result<Vec<Value>, pg_ark_core::Error> {
    let mut all = Vec::new();
    match databases {
        Some(list) => {
            for db in list {
                all.extend(logical::list_logical_backups(cluster, Some(db))?);
            }
        }
        None => all = logical::list_logical_backups(cluster, None)?,
    }
    if let Some(keys) = series {
        all.retain(|b| keys.contains(&logical::series_key(b)));
    }
    let mut out = Vec::new();
    for b in pg_ark_core::retention::select_expired(&all, retain.0, retain.1, logical::now_epoch())
    {
        let prefix = logical::backup_prefix(cluster, &b.database, &b.label);
        let mut entry = json!({
            "database": b.database, "label": b.label, "path": prefix,
            "job_id": b.job_id, "finished_at": b.finished_at,
        });
        if !dry_run {
            if let Some(until) = logical::delete_logical_backup(cluster, b)? {
                // Kept until its lock ends; a later run removes it.
                entry["retained_until"] = match until {
                    i64::MAX => json!("a legal hold"),
                    t => json!(logical::rfc3339_utc(t)),
                };
                out.push(entry);
                continue;
            }
            let _ = tx.send(Event::Expired {
                location: cluster.location(),
                prefix: prefix.clone(),
            });
        }
        out.push(entry);
    }
    Ok(out)
}

fn dump_all(plan: DumpPlan, control: Arc<Control>, tx: Sender<Event>) -> Result<Value, JobFailure> {
    let cluster = plan.target.open().map_err(JobFailure::from)?;
    // Leftovers of a worker killed in the middle of a dump.
    let _ = cluster.remove_stale_temporaries();
    let mut done = Vec::new();
    let mut series = Vec::new();
    for (n, db) in plan.databases.iter().enumerate() {
        if control.stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(JobFailure::permanent("stopped"));
        }
        set_progress(
            &control,
            json!({"database": db, "done": n, "databases": plan.databases.len()}),
        );
        let mut req = plan.request.clone();
        req.database = db.clone();
        if let Some(dir) = &req.work_dir {
            let own = dir.join(format!("job-{}-{n}", plan.job_id));
            let _ = std::fs::remove_dir_all(&own);
            if let Some(needed) = plan.stage_bytes.get(db) {
                pg_ark_core::workdir::check_space(dir, *needed).map_err(JobFailure::from)?;
            }
            req.work_dir = Some(own);
        }
        let meta = DumpMeta {
            label: plan.label.clone(),
            job_id: Some(plan.job_id),
            server_version: plan.server_version.clone(),
            pg_dump_version: None,
            series: plan.series.clone(),
        };
        control.bytes.store(0, std::sync::atomic::Ordering::Relaxed);
        let dc = DumpControl {
            bytes: Arc::clone(&control.bytes),
            cancel: Arc::clone(&control.stop),
        };
        let info =
            logical::run_logical_backup(&cluster, &req, &meta, &dc).map_err(JobFailure::from)?;
        let prefix = logical::backup_prefix(&cluster, db, &info.label);
        done.push(summary(&info, &prefix));
        series.push(logical::series_key(&info));
        let _ = tx.send(Event::Stored {
            info: Box::new(info),
            location: cluster.location(),
            prefix,
        });
    }
    let mut result = json!({ "backups": done, "expired": [] });
    if plan.retain.0.is_some() || plan.retain.1.is_some() {
        match expire_dumps(
            &cluster,
            Some(&plan.databases),
            plan.retain,
            Some(&series),
            &tx,
            false,
        ) {
            Ok(expired) => result["expired"] = json!(expired),
            // The dumps are safe; a failed expiry is retried next time.
            Err(e) => result["retention_error"] = json!(e.to_string()),
        }
    }
    Ok(result)
}

/// Remove an expired dump's row from ark.backups.
fn forget(location: &str, prefix: &str) -> Result<(), ArkError> {
    Spi::run_with_args(
        "DELETE FROM ark.backups WHERE repository = $1 AND path = $2",
        &[location.into(), prefix.into()],
    )?;
    Ok(())
}

/// Record an event in the catalog (backend's thread).
fn record(event: Event) {
    let r = xact::run(|| {
        match &event {
            Event::Stored {
                info,
                location,
                prefix,
            } => {
                Spi::run_with_args(
                    "INSERT INTO ark.backups (kind, label, database, format, size_bytes,
                            started_at, finished_at, server_version, repository, path, job_id, info)
                     VALUES ('logical', $1, $2, $3, $4, to_timestamp($5::float8),
                             to_timestamp($6::float8), $7, $8, $9, $10, $11)
                     ON CONFLICT (repository, path) DO NOTHING",
                    &[
                        info.label.clone().into(),
                        info.database.clone().into(),
                        info.format.as_str().into(),
                        i64::try_from(info.bytes).unwrap_or(i64::MAX).into(),
                        (info.started_epoch as f64).into(),
                        (info.finished_epoch as f64).into(),
                        info.server_version.clone().into(),
                        location.clone().into(),
                        prefix.clone().into(),
                        info.job_id.into(),
                        JsonB(serde_json::to_value(info.as_ref()).unwrap_or(Value::Null)).into(),
                    ],
                )?;
            }
            Event::Expired { location, prefix } => forget(location, prefix)?,
        }
        Ok(())
    });
    if let Err(e) = r {
        warning!("pg_ark could not update ark.backups: {}", e);
    }
}

/// Run a `logical` job.
pub fn run_logical(job: &Job) -> Outcome {
    let plan = match xact::run(|| plan(job)) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(e),
    };
    if plan.databases.is_empty() {
        return Outcome::Failed(JobFailure::permanent(
            "there is no connectable database to dump",
        ));
    }
    outcome(supervise(job, move |c, tx| dump_all(plan, c, tx), record))
}

/// Run an `expire` job: logical retention when a rule is set (options or
/// ark.logical_retain_*), and physical retention always (ark.retention_*,
/// with WAL expiry). Option `dry_run` lists what would go and removes
/// nothing.
pub fn run_expire(job: &Job) -> Outcome {
    let retain = retention(&job.options);
    let target = match xact::run(RepoTarget::current) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(e),
    };
    let databases = jobs::option_names(&job.options, "database");
    let dry_run = job
        .options
        .get("dry_run")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let rules = crate::worker::physical::retention_rules(&job.options);
    let mut prefixes = Vec::new();
    let mut location = String::new();
    let r = supervise(
        job,
        move |_c, tx| {
            let cluster = target.open().map_err(JobFailure::from)?;
            let expired = if retain.0.is_some() || retain.1.is_some() {
                expire_dumps(&cluster, databases.as_deref(), retain, None, &tx, dry_run)
                    .map_err(JobFailure::from)?
            } else {
                Vec::new()
            };
            let physical = pg_ark_core::retention::physical::expire(
                &cluster,
                rules,
                pg_ark_core::logical::now_epoch(),
                dry_run,
            )
            .map_err(JobFailure::from)?;
            Ok::<_, JobFailure>((
                cluster.location(),
                physical.prefixes,
                json!({
                    "expired": expired,
                    "physical": physical.backups,
                    "wal": physical.wal,
                    "pending": physical.pending,
                    "relocked": physical.relocked,
                    "recoverable_from": physical.recoverable_from,
                    "dry_run": dry_run,
                }),
            ))
        },
        record,
    );
    let r = r.map(|inner| {
        inner.map(|(loc, p, v)| {
            location = loc;
            prefixes = p;
            v
        })
    });
    let out = outcome(r);
    if !dry_run && !prefixes.is_empty() {
        crate::worker::physical::forget_expired(&location, &prefixes);
    }
    out
}
