//! The SQL surface of the job queue: `ark.schedule()`, `ark.unschedule()`,
//! `ark.backup()`, `ark.wait()`, `ark.cancel()` and `ark.retry()`.
//!
//! Every function checks its caller (superuser or `ark_admin`; `ark.wait()`
//! also `ark_monitor`), and that it runs in `ark.database`, where the
//! scheduler reads the queue. Options are validated here, when a job or a
//! schedule is created, and again by the worker that claims the job
//! (`crate::catalog::jobs::claim`), with the same validator.
//!
//! The callers hold no privilege to write the catalog tables: the functions
//! are the interface. They run as the caller (its privileges are what they
//! check), and only their catalog statements run as the extension's owner
//! ([`crate::xact::as_owner`]).
use crate::catalog::jobs::job_row;
use crate::error::ArkError;
use crate::mailbox;
use crate::mailbox::wake_scheduler_at_commit;
use crate::server::{libdir, next_run, now_epoch};
use crate::xact::{raise, require_admin, require_monitor, require_queue_database};
use pg_ark_core::schedule::cron::CronSchedule;
use pg_ark_core::schedule::jobs::{self, JobKind};
use pg_ark_core::schedule::lifecycle::JobState;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Turn interval strings of `retry_base` / `retry_cap` ('30s', '5 min',
/// '1 hour', '00:05:00') into seconds.
fn normalize_options(mut options: Value) -> Result<Value, ArkError> {
    if let Value::Object(map) = &mut options {
        for key in ["retry_base", "retry_cap"] {
            if let Some(Value::String(text)) = map.get(key).cloned() {
                let seconds =
                    jobs::parse_interval(&text).ok_or_else(|| jobs::JobError::InvalidOption {
                        key: key.into(),
                        reason: format!(
                            "\"{text}\" is not an interval such as '30s', '5 min' or '1 hour'"
                        ),
                    })?;
                map.insert(key.into(), json!(seconds));
            }
        }
    }
    Ok(options)
}

/// Validate kind and options for a new job or schedule, queued by the
/// current user (who must be a superuser for a kind that runs another
/// program).
fn checked(kind: &str, options: Value) -> Result<(JobKind, Value), ArkError> {
    let kind = JobKind::parse(kind)?;
    // SAFETY: a catalog lookup on the backend's thread.
    let superuser = unsafe { pg_sys::superuser() };
    jobs::check_queuer(kind, Some(&crate::xact::current_role()), superuser)?;
    let options = normalize_options(options)?;
    jobs::validate(kind, &options, &libdir())?;
    if let (Some(map), JobKind::PgBasebackup) = (options.as_object(), kind) {
        pg_ark_core::tools::basebackup::check_incremental_major(
            map,
            pg_sys::PG_VERSION_NUM / 10000,
        )?;
    }
    Ok((kind, options))
}

fn schedule_impl(name: &str, cron: &str, kind: &str, options: Value) -> Result<i64, ArkError> {
    require_admin("schedule pg_ark backups")?;
    require_queue_database()?;
    if name.trim().is_empty() {
        return Err(ArkError::EmptyScheduleName);
    }
    let parsed = CronSchedule::parse(cron)?;
    let (kind, options) = checked(kind, options)?;
    let next = next_run(&parsed, now_epoch())?;
    // SAFETY: reads the backend's current user id (before as_owner).
    let role = unsafe { pg_sys::GetUserId() };
    let id = crate::xact::as_owner(|| {
        Ok(Spi::get_one_with_args::<i64>(
            "INSERT INTO ark.schedules AS s (name, cron, kind, options, next_run, created_by)
             VALUES ($1, $2, $3, $4, to_timestamp($5::float8), $6::oid::regrole)
             ON CONFLICT (name) DO UPDATE
                SET cron = EXCLUDED.cron, kind = EXCLUDED.kind, options = EXCLUDED.options,
                    next_run = EXCLUDED.next_run, enabled = true,
                    created_by = EXCLUDED.created_by
             RETURNING id",
            &[
                name.into(),
                cron.trim().into(),
                kind.as_str().into(),
                JsonB(options).into(),
                next.map(|n| n as f64).into(),
                role.into(),
            ],
        )?)
    })?;
    wake_scheduler_at_commit();
    id.ok_or(ArkError::EnqueueFailed {
        message: "the schedule was not stored".into(),
    })
}

/// Create or replace the schedule `name`: run a job of `kind` with `options`
/// whenever the cron expression `cron` comes due (5-field crontab or
/// @hourly, @daily, @weekly, @monthly; evaluated in ark.cron_timezone).
/// Returns the schedule's id.
#[pg_extern(volatile)]
fn schedule(name: &str, cron: &str, kind: &str, options: default!(JsonB, "'{}'")) -> i64 {
    schedule_impl(name, cron, kind, options.0).unwrap_or_else(|e| raise(e))
}

/// Remove the schedule `name`; false (with a notice) if there is none. Jobs it
/// already queued stay.
#[pg_extern(volatile)]
fn unschedule(name: &str) -> bool {
    let run = || -> Result<bool, ArkError> {
        require_admin("unschedule pg_ark backups")?;
        require_queue_database()?;
        let gone = crate::xact::as_owner(|| {
            crate::xact::first_value::<i64>(
                "DELETE FROM ark.schedules WHERE name = $1 RETURNING id",
                &[name.into()],
            )
        })?;
        if gone.is_none() {
            pgrx::notice!("pg_ark schedule \"{}\" does not exist", name);
        }
        Ok(gone.is_some())
    };
    run().unwrap_or_else(|e| raise(e))
}

/// Resume the schedules paused after `pg_ark restore` (see
/// `ark.status()`); returns how many. Run it once this cluster backs up
/// into a repository entry of its own (another `ark.repository`), or is the
/// only cluster writing to the one it shares.
#[pg_extern(volatile)]
fn resume_schedules() -> i64 {
    let run = || -> Result<i64, ArkError> {
        require_admin("resume pg_ark schedules")?;
        require_queue_database()?;
        let n = crate::xact::as_owner(|| {
            crate::xact::first_value::<i64>(
                "WITH r AS (UPDATE ark.schedules SET paused = NULL
                             WHERE paused IS NOT NULL RETURNING 1)
                 SELECT count(*) FROM r",
                &[],
            )
        })?
        .unwrap_or(0);
        wake_scheduler_at_commit();
        Ok(n)
    };
    run().unwrap_or_else(|e| raise(e))
}

fn backup_impl(kind: &str, options: Value) -> Result<i64, ArkError> {
    require_admin("run pg_ark backups")?;
    require_queue_database()?;
    // SAFETY: reads a backend global.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(ArkError::InRecovery);
    }
    let (kind, options) = checked(kind, options)?;
    mailbox::enqueue(kind.as_str(), &options.to_string())
}

/// Queue a job of `kind` now and return its id. The job is queued at once,
/// independently of the calling transaction, so
/// `SELECT ark.wait(ark.backup('logical'))` works.
#[pg_extern(volatile)]
fn backup(kind: &str, options: default!(JsonB, "'{}'")) -> i64 {
    backup_impl(kind, options.0).unwrap_or_else(|e| raise(e))
}

/// Queue a verification of physical backup `backup_id` (the newest one when
/// NULL) and return the job's id: every stored object the backup's restore
/// needs is re-read and checked against its manifest, and the WAL from its
/// start to its stop must be in the repository and intact. A problem fails
/// the job, naming the file.
#[pg_extern(volatile)]
fn verify(backup_id: default!(Option<&str>, "NULL")) -> i64 {
    let options = match backup_id {
        Some(id) => serde_json::json!({ "backup_id": id }),
        None => serde_json::json!({}),
    };
    backup_impl("verify", options).unwrap_or_else(|e| raise(e))
}

pub(crate) fn wait_impl(
    id: i64,
    timeout: Duration,
    timeout_text: String,
) -> Result<Value, ArkError> {
    require_monitor()?;
    require_queue_database()?;
    // SAFETY: reads a backend global.
    let iso = unsafe { pg_sys::XactIsoLevel };
    if iso >= pg_sys::XACT_REPEATABLE_READ as i32 {
        return Err(ArkError::WaitNeedsReadCommitted {
            isolation: if iso == pg_sys::XACT_SERIALIZABLE as i32 {
                "SERIALIZABLE"
            } else {
                "REPEATABLE READ"
            },
        });
    }
    let started = Instant::now();
    loop {
        // Each statement of a READ COMMITTED function sees a new snapshot.
        let (state, doc) = job_row(id)?;
        if JobState::parse(&state).is_some_and(JobState::is_final) {
            return Ok(doc);
        }
        if started.elapsed() >= timeout {
            return Err(ArkError::WaitTimeout {
                id,
                timeout: timeout_text,
                state,
            });
        }
        mailbox::sleep(Duration::from_millis(100).min(timeout.saturating_sub(started.elapsed())));
    }
}

/// Block until job `job_id` ends (succeeded, failed or cancelled), then return
/// its final state, attempts, result and error as jsonb. After `timeout` it
/// raises an error; the job goes on.
#[pg_extern(volatile)]
fn wait(job_id: i64, timeout: default!(Interval, "'1 hour'")) -> JsonB {
    let micros = u64::try_from(timeout.as_micros().max(0)).unwrap_or(u64::MAX);
    let d = Duration::from_micros(micros);
    let text = pg_ark_core::health::plain_duration(d.as_secs_f64());
    JsonB(wait_impl(job_id, d, text).unwrap_or_else(|e| raise(e)))
}

fn cancel_impl(id: i64) -> Result<bool, ArkError> {
    require_admin("cancel pg_ark jobs")?;
    require_queue_database()?;
    crate::xact::as_owner(|| crate::catalog::jobs::cancel(id))
}

/// Cancel job `job_id`: a queued or retrying job is cancelled at once; a
/// running one is stopped by its worker within about a second.
#[pg_extern(volatile)]
fn cancel(job_id: i64) -> bool {
    cancel_impl(job_id).unwrap_or_else(|e| raise(e))
}

fn retry_impl(id: i64) -> Result<i64, ArkError> {
    require_admin("retry pg_ark jobs")?;
    require_queue_database()?;
    // A retried job runs for whoever retried it: a kind that runs another
    // program, only for a superuser.
    // SAFETY: catalog lookups on the backend's thread.
    let (role, superuser) = unsafe { (pg_sys::GetUserId(), pg_sys::superuser()) };
    let kind = crate::xact::as_owner(|| {
        crate::xact::first_value::<String>("SELECT kind FROM ark.jobs WHERE id = $1", &[id.into()])
    })?;
    if let Some(kind) = kind.as_deref().and_then(|k| JobKind::parse(k).ok()) {
        jobs::check_queuer(kind, Some(&crate::xact::current_role()), superuser)?;
    }
    crate::xact::as_owner(|| crate::catalog::jobs::retry(id, role))
}

/// Run job `job_id` again: a failed or cancelled job is queued afresh (its
/// attempts start over); a retrying one runs now instead of at its next
/// attempt time. Takes effect when the calling transaction commits. Returns
/// the job id.
#[pg_extern(volatile)]
fn retry(job_id: i64) -> i64 {
    retry_impl(job_id).unwrap_or_else(|e| raise(e))
}
