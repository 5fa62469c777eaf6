//! The SQL surface of the job queue: `ark.schedule()`, `ark.unschedule()`,
//! `ark.backup()`, `ark.wait()`, `ark.cancel()` and `ark.retry()`.
//!
//! Every function checks its caller (superuser or `ark_admin`; `ark.wait()`
//! also `ark_monitor`), and that it runs in `ark.database`, where the
//! scheduler reads the queue. Options are validated here, when a job or a
//! schedule is created, never when it runs.
use crate::error::ArkError;
use crate::xact::{raise, require_admin, require_monitor, require_queue_database};
use crate::{mailbox, settings};
use pg_ark_core::cron::CronSchedule;
use pg_ark_core::jobs::{self, JobKind};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Final states: a job in one of them never changes again by itself.
pub const FINAL_STATES: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// Seconds since the Unix epoch, now.
pub fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

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

/// Validate kind and options for a new job or schedule.
fn checked(kind: &str, options: Value) -> Result<(JobKind, Value), ArkError> {
    let kind = JobKind::parse(kind)?;
    let options = normalize_options(options)?;
    jobs::validate(kind, &options)?;
    Ok((kind, options))
}

/// The next run of `cron` after now, in epoch seconds.
pub fn next_run(schedule: &CronSchedule, after: f64) -> Result<Option<i64>, ArkError> {
    let tz = pg_ark_core::cron::parse_timezone(&settings::cron_timezone())?;
    Ok(schedule.next_after_epoch(after.floor() as i64, tz))
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
    let id = Spi::get_one_with_args::<i64>(
        "INSERT INTO ark.schedules AS s (name, cron, kind, options, next_run)
         VALUES ($1, $2, $3, $4, to_timestamp($5::float8))
         ON CONFLICT (name) DO UPDATE
            SET cron = EXCLUDED.cron, kind = EXCLUDED.kind, options = EXCLUDED.options,
                next_run = EXCLUDED.next_run, enabled = true
         RETURNING id",
        &[
            name.into(),
            cron.trim().into(),
            kind.as_str().into(),
            JsonB(options).into(),
            next.map(|n| n as f64).into(),
        ],
    )?;
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
        let gone = crate::xact::first_value::<i64>(
            "DELETE FROM ark.schedules WHERE name = $1 RETURNING id",
            &[name.into()],
        )?;
        if gone.is_none() {
            pgrx::notice!("pg_ark schedule \"{}\" does not exist", name);
        }
        Ok(gone.is_some())
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

/// The row the scheduler inserts for a request from `ark.backup()` (or a
/// schedule). Returns the new job's id.
pub fn insert_job(
    kind: &str,
    options: &Value,
    schedule: Option<(&str, f64)>,
) -> Result<Option<i64>, ArkError> {
    let kind = JobKind::parse(kind)?;
    let max_attempts = options
        .get("max_attempts")
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or_else(|| settings::JOB_MAX_ATTEMPTS.get());
    crate::xact::first_value::<i64>(
        "INSERT INTO ark.jobs (kind, options, schedule_name, scheduled_for, conflict_key, max_attempts)
         VALUES ($1, $2, $3, to_timestamp($4::float8), $5, $6)
         ON CONFLICT (schedule_name, scheduled_for) DO NOTHING
         RETURNING id",
        &[
            kind.as_str().into(),
            JsonB(options.clone()).into(),
            schedule.map(|s| s.0).into(),
            schedule.map(|s| s.1).into(),
            kind.conflict_key().into(),
            max_attempts.into(),
        ],
    )
}

/// A job's state, attempts, result and last error.
fn job_row(id: i64) -> Result<(String, Value), ArkError> {
    // Read-write SPI: each call takes a fresh snapshot (read-only SPI would
    // reuse the statement's, and ark.wait() would never see the job end).
    let row = Spi::connect_mut(|client| {
        let t = client.update(
            "SELECT state, attempts, max_attempts, result, last_error, kind
               FROM ark.jobs WHERE id = $1",
            None,
            &[id.into()],
        )?;
        if t.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        let r = t.first();
        let state: String = r.get(1)?.unwrap_or_default();
        let doc = json!({
            "job_id": id,
            "kind": r.get::<String>(6)?,
            "state": state,
            "attempts": r.get::<i32>(2)?,
            "max_attempts": r.get::<i32>(3)?,
            "result": r.get::<JsonB>(4)?.map(|j| j.0),
            "error": r.get::<String>(5)?,
        });
        Ok(Some((state, doc)))
    })?;
    row.ok_or(ArkError::NoSuchJob { id })
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
        if FINAL_STATES.contains(&state.as_str()) {
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
    // One statement, so a claim cannot slip between reading the state and
    // changing it: a queued or retrying job is cancelled at once; a running
    // one is flagged, and its worker stops it within about a second.
    let changed = crate::xact::first_value::<String>(
        "UPDATE ark.jobs
            SET cancel_requested = true,
                state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
                finished_at = CASE WHEN state = 'running' THEN finished_at ELSE now() END,
                last_error = CASE WHEN state = 'running' THEN last_error
                                  ELSE coalesce(last_error, 'cancelled before it ran') END
          WHERE id = $1 AND state IN ('queued', 'retrying', 'running')
          RETURNING state",
        &[id.into()],
    )?;
    match changed {
        Some(_) => Ok(true),
        None => {
            let (state, _) = job_row(id)?;
            Err(ArkError::JobState {
                id,
                action: "cancelled",
                state,
            })
        }
    }
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
    // One statement, like cancel: the state it acts on is the state it
    // changes, so a worker finishing or claiming the job in between cannot
    // be overwritten. A failed or cancelled job is queued afresh; a retrying
    // one runs now.
    let changed = crate::xact::first_value::<String>(
        "UPDATE ark.jobs
            SET state = CASE WHEN state = 'retrying' THEN state ELSE 'queued' END,
                attempts = CASE WHEN state = 'retrying' THEN attempts ELSE 0 END,
                next_attempt_at = now(),
                finished_at = CASE WHEN state = 'retrying' THEN finished_at END,
                cancel_requested = CASE WHEN state = 'retrying' THEN cancel_requested ELSE false END
          WHERE id = $1 AND state IN ('failed', 'cancelled', 'retrying')
          RETURNING state",
        &[id.into()],
    )?;
    match changed {
        Some(_) => {
            wake_scheduler_at_commit();
            Ok(id)
        }
        None => {
            let (state, _) = job_row(id)?;
            Err(ArkError::JobState {
                id,
                action: "retried",
                state,
            })
        }
    }
}

/// Run job `job_id` again: a failed or cancelled job is queued afresh (its
/// attempts start over); a retrying one runs now instead of at its next
/// attempt time. Takes effect when the calling transaction commits. Returns
/// the job id.
#[pg_extern(volatile)]
fn retry(job_id: i64) -> i64 {
    retry_impl(job_id).unwrap_or_else(|e| raise(e))
}

/// Wake the scheduler once the current transaction commits (it would not
/// see the change before).
pub fn wake_scheduler_at_commit() {
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, || {
        mailbox::wake_scheduler()
    });
}
