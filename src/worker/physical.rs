//! Physical backups (`full` jobs).
//!
//! 1. Checks: not a standby; WAL archiving into pg_ark on (the backup is
//!    restorable only with the WAL from its start to its stop).
//! 2. `pg_backup_start(label, fast => true)` in this worker's own session
//!    (non-exclusive: the backup ends with the session if the worker dies).
//! 3. The data directory is read and stored on threads that never call
//!    PostgreSQL (`pg_ark_core::physical`), while this thread publishes
//!    progress and watches for `ark.cancel()` and SIGTERM.
//! 4. `pg_backup_stop(wait_for_archive => false)`; its `backup_label` is
//!    stored with the data.
//! 5. The WAL from the start to the stop segment is waited for in the
//!    repository (option `wait_timeout`, default 600 s).
//! 6. The manifest, then the descriptor: only now is the backup complete,
//!    and only now is it recorded in `ark.backups`.
//!
//! Any failure ends the backup (`pg_backup_stop`) and removes what was
//! stored; a retry starts clean.
use crate::catalog::jobs::{Job, Outcome};
use crate::error::ArkError;
use crate::worker::job::{outcome, set_progress, supervise, Control};
use crate::worker::logical::Target;
use crate::{settings, xact};
use pg_ark_core::physical::{self, Manifest, PhysicalBackupInfo, Progress, StoreOptions};
use pg_ark_core::repo::compress::Compression;
use pg_ark_core::repo::ClusterRepo;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Plan {
    target: Target,
    datadir: PathBuf,
    server_version: String,
    wait: Duration,
}

struct Started {
    start_lsn: String,
    start_wal: String,
    timeline: u32,
}

fn setting(name: &str) -> Result<String, ArkError> {
    Ok(
        Spi::get_one_with_args::<String>("SELECT current_setting($1)", &[name.into()])?
            .unwrap_or_default(),
    )
}

fn unsupported(what: String) -> ArkError {
    ArkError::Core(pg_ark_core::Error::Unsupported { what })
}

fn plan(job: &Job) -> Result<Plan, ArkError> {
    // SAFETY: plain read on the backend's thread.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(unsupported(
            "physical backups of a standby are not supported: run them on the primary".into(),
        ));
    }
    let (mode, library) = (setting("archive_mode")?, setting("archive_library")?);
    if mode == "off" || library != "pg_ark" {
        return Err(unsupported(format!(
            "a physical backup needs the WAL it spans in the repository, but archive_mode is {mode} and archive_library is \"{library}\"; set archive_mode = on and archive_library = 'pg_ark' (archive_mode needs a restart)"
        )));
    }
    let wait = job
        .options
        .get("wait_timeout")
        .and_then(Value::as_u64)
        .unwrap_or(600);
    Ok(Plan {
        target: Target::current()?,
        datadir: PathBuf::from(setting("data_directory")?),
        server_version: setting("server_version")?,
        wait: Duration::from_secs(wait),
    })
}

fn start(label: &str) -> Result<Started, ArkError> {
    let row = Spi::connect_mut(|c| {
        let t = c.update(
            "SELECT lsn::text, pg_walfile_name(lsn),
                    (SELECT timeline_id FROM pg_control_checkpoint())
               FROM pg_backup_start($1, true) AS lsn",
            None,
            &[label.into()],
        )?;
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<i32>(3)?.unwrap_or(0),
        ))
    })?;
    Ok(Started {
        start_lsn: row.0,
        start_wal: row.1,
        timeline: u32::try_from(row.2).unwrap_or(0),
    })
}

/// End the backup: (stop LSN, its segment, backup_label).
fn stop() -> Result<(String, String, String), ArkError> {
    Ok(Spi::connect_mut(|c| {
        let t = c.update(
            "SELECT lsn::text, pg_walfile_name(lsn), labelfile
               FROM pg_backup_stop(false)",
            None,
            &[],
        )?;
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<String>(3)?.unwrap_or_default(),
        ))
    })?)
}

/// After a failure: end the backup if it is still running, and remove
/// what was stored.
fn abandon(cluster: Option<&ClusterRepo>, id: &str) {
    let _ = xact::run(|| {
        Spi::run("SELECT pg_backup_stop(false)")?;
        Ok(())
    });
    if let Some(c) = cluster {
        if let Err(e) = physical::delete_backup(c, id) {
            warning!(
                "pg_ark could not remove the objects of failed backup \"{}\": {}",
                id,
                e
            );
        }
    }
}

fn copy(
    cluster: ClusterRepo,
    prefix: String,
    datadir: PathBuf,
    (compression, level): (Compression, i32),
    control: Arc<Control>,
) -> Result<(ClusterRepo, Vec<physical::ManifestFile>, Vec<String>), String> {
    let dd = physical::walk(&datadir).map_err(|e| e.to_string())?;
    let progress = Progress::default();
    let files = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            physical::store_files(
                &cluster,
                &prefix,
                &datadir,
                &dd.files,
                StoreOptions {
                    compression,
                    level,
                    threads: 2,
                },
                &progress,
            )
        });
        while !worker.is_finished() {
            if control.stop.load(Ordering::SeqCst) {
                progress.cancel.store(true, Ordering::SeqCst);
            }
            let done = progress.bytes_done.load(Ordering::Relaxed);
            control.bytes.store(done, Ordering::Relaxed);
            set_progress(
                &control,
                json!({"phase": "copy", "bytes_done": done,
                       "bytes_total": progress.bytes_total.load(Ordering::Relaxed)}),
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        worker.join().unwrap_or_else(|_| {
            Err(pg_ark_core::Error::PushPanicked {
                name: prefix.clone(),
            })
        })
    })
    .map_err(|e| e.to_string())?;
    Ok((cluster, files, dd.dirs))
}

/// Wait until every segment from `start_wal` to `stop_wal` is in the
/// repository, or `wait` has passed.
fn wait_for_wal(
    cluster: &ClusterRepo,
    start_wal: &str,
    stop_wal: &str,
    wait: Duration,
    control: &Control,
) -> Result<(), String> {
    let segments = physical::wal_range(start_wal, stop_wal).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + wait;
    let mut next = 0;
    while next < segments.len() {
        match cluster.get_wal(&segments[next]) {
            Ok(Some(_)) => {
                next += 1;
                continue;
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if control.stop.load(Ordering::SeqCst) {
            return Err("the backup was stopped while it waited for its WAL".into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "WAL segment \"{}\", which the backup needs, was not archived within {} s; the backup is not complete (check ark.archive_status())",
                segments[next],
                wait.as_secs()
            ));
        }
        set_progress(
            control,
            json!({"phase": "wait for WAL", "segment": segments[next]}),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Run a `full` job.
pub fn run_full(job: &Job) -> Outcome {
    let plan = match xact::run(|| plan(job)) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(e),
    };
    let compression = match settings::compression() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let started_epoch = pg_ark_core::logical::now_epoch();
    let id = format!(
        "{}-F-j{}",
        pg_ark_core::logical::rfc3339_utc(started_epoch).replace(['-', ':'], ""),
        job.id
    );
    // The repository is opened on a work thread (it may be S3).
    let target = plan.target.clone();
    // What failed or killed backups left is removed first: no other
    // physical backup runs (conflict key `physical`), so a backup prefix
    // without a descriptor is garbage.
    let opened = supervise(
        job,
        move |_c, _tx: std::sync::mpsc::Sender<()>| {
            let c = target.open()?;
            let removed = physical::remove_incomplete(&c)?;
            Ok::<_, pg_ark_core::Error>((c, removed))
        },
        |_| {},
    );
    let cluster = match opened {
        Ok(Ok((c, removed))) => {
            for r in removed {
                log!("pg_ark job {}: removed incomplete backup \"{}\"", job.id, r);
            }
            c
        }
        Ok(Err(e)) => return Outcome::Failed(e.to_string()),
        Err(s) => return outcome(Err(s)),
    };
    let prefix = physical::backup_prefix(&cluster, &id);
    let started = match xact::run(|| start(&id)) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("could not start the backup: {e}")),
    };
    log!(
        "pg_ark job {}: backup \"{}\" started at {}",
        job.id,
        id,
        started.start_lsn
    );
    let copied = {
        let (c, p, d) = (cluster.clone(), prefix.clone(), plan.datadir.clone());
        supervise(
            job,
            move |control, _tx: std::sync::mpsc::Sender<()>| copy(c, p, d, compression, control),
            |_| {},
        )
    };
    let (cluster, mut files, dirs) = match copied {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            abandon(Some(&cluster), &id);
            return Outcome::Failed(e);
        }
        Err(s) => {
            abandon(Some(&cluster), &id);
            return outcome(Err(s));
        }
    };
    let (stop_lsn, stop_wal, label) = match xact::run(stop) {
        Ok(v) => v,
        Err(e) => {
            abandon(Some(&cluster), &id);
            return Outcome::Failed(format!("could not stop the backup: {e}"));
        }
    };
    match physical::store_bytes(&cluster, &prefix, "backup_label", label.as_bytes()) {
        Ok(f) => files.push(f),
        Err(e) => {
            let _ = physical::delete_backup(&cluster, &id);
            return Outcome::Failed(e.to_string());
        }
    }
    let waited = {
        let (c, a, b, w) = (
            cluster.clone(),
            started.start_wal.clone(),
            stop_wal.clone(),
            plan.wait,
        );
        supervise(
            job,
            move |control, _tx: std::sync::mpsc::Sender<()>| wait_for_wal(&c, &a, &b, w, &control),
            |_| {},
        )
    };
    match waited {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = physical::delete_backup(&cluster, &id);
            return Outcome::Failed(e);
        }
        Err(s) => {
            let _ = physical::delete_backup(&cluster, &id);
            return outcome(Err(s));
        }
    }
    let finished_epoch = pg_ark_core::logical::now_epoch();
    let info = PhysicalBackupInfo {
        format_version: physical::PHYSICAL_INFO_VERSION,
        kind: "full".into(),
        backup_id: id.clone(),
        start_lsn: started.start_lsn.clone(),
        stop_lsn: stop_lsn.clone(),
        timeline: started.timeline,
        start_wal: started.start_wal.clone(),
        stop_wal,
        started_at: pg_ark_core::logical::rfc3339_utc(started_epoch),
        finished_at: pg_ark_core::logical::rfc3339_utc(finished_epoch),
        started_epoch,
        finished_epoch,
        original_bytes: files.iter().map(|f| f.size).sum(),
        stored_bytes: files.iter().map(|f| f.stored).sum(),
        files: files.len(),
        server_version: plan.server_version.clone(),
        system_identifier: cluster.system_identifier,
        job_id: Some(job.id),
        created_by: format!("pg_ark {}", env!("CARGO_PKG_VERSION")),
    };
    let manifest = Manifest {
        format_version: physical::PHYSICAL_INFO_VERSION,
        backup_id: id.clone(),
        files,
        dirs,
    };
    if let Err(e) = physical::finish_backup(&cluster, &manifest, &info) {
        let _ = physical::delete_backup(&cluster, &id);
        return Outcome::Failed(e.to_string());
    }
    let doc = serde_json::to_value(&info).unwrap_or(Value::Null);
    let recorded = xact::run(|| {
        Spi::run_with_args(
            "INSERT INTO ark.backups (kind, label, size_bytes, started_at, finished_at,
                    server_version, repository, path, job_id, info)
             VALUES ('full', $1, $2, to_timestamp($3::float8), to_timestamp($4::float8),
                     $5, $6, $7, $8, $9)
             ON CONFLICT (repository, path) DO NOTHING",
            &[
                id.clone().into(),
                i64::try_from(info.original_bytes)
                    .unwrap_or(i64::MAX)
                    .into(),
                (info.started_epoch as f64).into(),
                (info.finished_epoch as f64).into(),
                info.server_version.clone().into(),
                cluster.location().into(),
                prefix.clone().into(),
                job.id.into(),
                JsonB(doc.clone()).into(),
            ],
        )?;
        Ok(())
    });
    if let Err(e) = recorded {
        // The backup is complete in the repository; only the catalog row
        // is missing, which a later listing can restore.
        warning!(
            "pg_ark could not record backup \"{}\" in ark.backups: {}",
            id,
            e
        );
    }
    Outcome::Succeeded(json!({
        "backup_id": id,
        "kind": "full",
        "path": prefix,
        "start_lsn": info.start_lsn,
        "stop_lsn": info.stop_lsn,
        "timeline": info.timeline,
        "files": info.files,
        "original_bytes": info.original_bytes,
        "stored_bytes": info.stored_bytes,
    }))
}
