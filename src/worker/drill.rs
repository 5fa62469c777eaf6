//! Restore drills (`drill` jobs): `pg_ark_core::restore::drill` on a work
//! thread, with what it needs read here, on the worker's thread, first.
//!
//! - The scratch cluster goes into `ark.work_directory`, as `job-<id>-drill`:
//!   the scheduler's sweep at its start stops a server a killed drill left
//!   there and removes the directory (the scratch server also dies with
//!   the worker: `PR_SET_PDEATHSIG`).
//! - The result (timings, checks, or the failure) is recorded in the
//!   repository, beside the backup (`backup/<id>/drill/<seq>`, which
//!   `pg_ark info` shows), in `ark.backups.info->'drill'` (which
//!   `ark.status()` reads: a failed drill makes it `failing`) and in the
//!   job's result.
use crate::catalog::jobs::{Job, Outcome};
use crate::error::ArkError;
use crate::repo::RepoTarget;
use crate::worker::job::{outcome, set_progress, stopped, supervise};
use crate::{settings, xact};
use pg_ark_core::physical;
use pg_ark_core::restore::drill::{self, Spec};
use pg_ark_core::restore::plan::{self, TimelineChoice};
use pg_ark_core::restore::Counters;
use pg_ark_core::schedule::lifecycle::JobFailure;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::time::Duration;

fn setting(name: &str) -> Result<String, ArkError> {
    Ok(
        Spi::get_one_with_args::<String>("SELECT current_setting($1)", &[name.into()])?
            .unwrap_or_default(),
    )
}

fn spec(job: &Job) -> Result<Spec, ArkError> {
    let o = &job.options;
    let text = |k: &str| o.get(k).and_then(Value::as_str);
    let target = plan::parse_target(
        text("target_time"),
        text("target_lsn"),
        text("target_xid"),
        text("target_name"),
        plan::Target::Immediate,
    )?;
    let timeline = TimelineChoice::parse(text("target_timeline").unwrap_or("latest"))?;
    let url = settings::repository().ok_or(ArkError::NoRepository)?;
    let s3 = settings::s3_options()?;
    let repo = crate::repo::config(url);
    let mut env = Vec::new();
    if repo.s3.credentials_file.is_none() {
        if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
            env.push(("AWS_ACCESS_KEY_ID".to_string(), id.clone()));
            env.push(("AWS_SECRET_ACCESS_KEY".to_string(), secret.clone()));
        }
    }
    let names = |k: &str| pg_ark_core::schedule::jobs::option_names(o, k).unwrap_or_default();
    let user =
        Spi::get_one::<String>("SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10")?
            .unwrap_or_else(|| "postgres".into());
    let mut required = Vec::new();
    for name in [
        "max_connections",
        "max_worker_processes",
        "max_wal_senders",
        "max_prepared_transactions",
        "max_locks_per_transaction",
    ] {
        required.push((name.to_string(), setting(name)?));
    }
    let data = std::path::PathBuf::from(setting("data_directory")?);
    Ok(Spec {
        job_id: job.id,
        backup: text("backup_id").map(str::to_string),
        target,
        timeline,
        scratch: settings::work_directory()?.join(format!("job-{}-drill", job.id)),
        bindir: crate::server::bindir(),
        repo,
        env,
        jobs: o.get("jobs").and_then(Value::as_u64).unwrap_or(2) as usize,
        database: text("database")
            .map(str::to_string)
            .unwrap_or_else(settings::database),
        user,
        amcheck: names("amcheck"),
        count: names("count"),
        visibility: drill::VisibilityCheck::from_option(o.get("visibility")).map_err(|reason| {
            pg_ark_core::schedule::jobs::JobError::InvalidOption {
                key: "visibility".into(),
                reason,
            }
        })?,
        preload: names("shared_preload_libraries"),
        settings: required,
        timeout: Duration::from_secs(o.get("timeout").and_then(Value::as_u64).unwrap_or(3600)),
        primary_dirs: vec![data.clone(), data.join("pg_wal")],
        wal_segment_size: settings::wal_segment_size()?,
    })
}

pub fn run_drill(job: &Job) -> Outcome {
    let prepared = xact::run(|| Ok((spec(job)?, RepoTarget::current()?)));
    let (spec, target) = match prepared {
        Ok(v) => v,
        Err(e) => return Outcome::Failed(e),
    };
    let pg_ark = spec.bindir.join("pg_ark");
    if !pg_ark.exists() {
        return Outcome::Failed(JobFailure::permanent(format!(
            "the pg_ark CLI is not installed at {}: a drill recovers with `pg_ark wal-get` as restore_command (make install puts it beside postgres)",
            pg_ark.display()
        )));
    }
    // What an earlier attempt of this job left (its worker killed).
    if std::fs::symlink_metadata(&spec.scratch).is_ok() {
        match drill::stop_leftover_server(&spec.scratch, &spec.primary_dirs) {
            Ok(true) => log!(
                "pg_ark job {}: stopped the scratch cluster an earlier attempt left in {}",
                job.id,
                spec.scratch.display()
            ),
            Ok(false) => {}
            Err(e) => return Outcome::Failed(JobFailure::permanent(e)),
        }
        if let Err(e) = std::fs::remove_dir_all(&spec.scratch) {
            return Outcome::Failed(JobFailure::permanent(format!(
                "could not remove {}, left by an earlier attempt: {e}",
                spec.scratch.display()
            )));
        }
    }
    let done = supervise(
        job,
        move |control, _tx: std::sync::mpsc::Sender<()>| {
            // Backups are read back as pg_ark wrote them (on a bucket
            // under Object Lock, the first versions); the record is
            // written through the repository opened to write.
            let reading = target
                .open_reading()
                .map_err(|e| (JobFailure::from(e), Value::Null, false))?;
            let counters = Counters::default();
            let stop = control.stop.clone();
            let c2 = control.clone();
            let progress = move |phase: &str, detail: Value| {
                let mut doc = json!({"phase": phase});
                if let (Value::Object(m), Value::Object(d)) = (&mut doc, detail) {
                    m.extend(d);
                }
                set_progress(&c2, doc);
            };
            let r = drill::run(&reading, &spec, &counters, &stop, &progress);
            let (report, judged) = match &r {
                Ok(rep) => (rep.clone(), true),
                Err(f) => (f.report.clone(), f.verdict),
            };
            // The record beside the backup, for pg_ark info: only a verdict
            // on it. A drill that was stopped (cancelled, shutdown) or could
            // not be carried out proved nothing either way.
            let record = judged && !stop.load(std::sync::atomic::Ordering::SeqCst);
            let mut saved = None;
            let mut unrecorded = None;
            if let Some(id) = report["backup_id"].as_str().filter(|_| record) {
                match target
                    .open()
                    .and_then(|cluster| physical::save_drill(&cluster, id, &report))
                {
                    Ok(()) => {}
                    // The drill read the genuine versions; its record is
                    // not written into a repository changed behind pg_ark's
                    // back (ark.status() raises the tampering).
                    Err(e @ pg_ark_core::Error::Tampered { .. }) => {
                        unrecorded = Some(e.to_string())
                    }
                    Err(e) => {
                        saved =
                            Some(JobFailure::from(e).context(
                                "the drill's record could not be stored in the repository",
                            ))
                    }
                }
            }
            match (r, saved) {
                (Ok(mut rep), None) => {
                    if let Some(why) = unrecorded {
                        rep["record_error"] = json!(why);
                    }
                    Ok((rep, record))
                }
                // The drill passed; its record could not be stored: the
                // storage decides whether a retry may store it.
                (Ok(rep), Some(e)) => Err((e, rep, record)),
                (Err(f), saved) => {
                    let message = match saved {
                        Some(e) => format!("{}; {e}", f.message),
                        None => f.message,
                    };
                    let failure = if f.transient {
                        JobFailure::transient(message)
                    } else {
                        JobFailure::permanent(message)
                    };
                    Err((failure, f.report, record))
                }
            }
        },
        |_| {},
    );
    let (result, report, record) = match done {
        Ok(Ok((rep, record))) => (Ok(rep.clone()), rep, record),
        Ok(Err((msg, rep, record))) => (Err(msg), rep, record),
        Err(s) => return stopped(s),
    };
    // A shutdown can end the work before the supervisor saw it: no verdict.
    let record = record && !crate::worker::job::shutdown_requested();
    if let (Some(id), Some(repository)) = (
        report["backup_id"].as_str().filter(|_| record),
        report["repository"].as_str(),
    ) {
        let recorded = xact::run(|| {
            Spi::run_with_args(
                "UPDATE ark.backups SET info = info || jsonb_build_object('drill', $2::jsonb)
                  WHERE label = $1 AND repository = $3
                    AND kind IN ('full', 'incremental', 'differential')",
                &[id.into(), JsonB(report.clone()).into(), repository.into()],
            )?;
            Ok(())
        });
        if let Err(e) = recorded {
            warning!("pg_ark could not record the drill of \"{}\": {}", id, e);
        }
    }
    if let Some(why) = result
        .as_ref()
        .ok()
        .and_then(|r| r["record_error"].as_str())
    {
        warning!(
            "pg_ark job {}: the drill's record was not stored: {}",
            job.id,
            why
        );
    }
    match &result {
        Ok(r) => log!(
            "pg_ark job {}: restore drill of backup \"{}\" passed: RTO {} s",
            job.id,
            r["backup_id"].as_str().unwrap_or(""),
            r["timings"]["rto_seconds"]
        ),
        Err(e) => log!("pg_ark job {}: restore drill failed: {}", job.id, e),
    }
    outcome(Ok(result))
}
