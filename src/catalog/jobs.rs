//! The job state machine applied to `ark.jobs`: every change of a row is
//! here, each one conditional update, so that two actors (the scheduler, a
//! job worker, a caller of `ark.cancel()` or `ark.retry()`) can never
//! overwrite each other's transition. The states, their sets, failure
//! classes and backoff are decided in `pg_ark_core::schedule::lifecycle`;
//! every state this module writes or tests is its `job_sql!`.
//!
//! ```text
//! queued ──claim──> running ──finish──> succeeded
//!    │                 │  └──failure──> retrying ──claim──> running
//!    │                 │  └──failure, out of attempts──> failed
//!    │                 │  └──interrupted (SIGTERM)──> retrying (attempt not counted)
//!    └──cancel──> cancelled <──cancel (flag, the worker stops it)──┘
//! failed, cancelled ──retry──> queued;  retrying ──retry──> runs now
//! running, worker gone ──recover_orphans──> retrying or failed
//! ```
use crate::catalog::notifications;
use crate::error::ArkError;
use crate::mailbox::wake_scheduler_at_commit;
use crate::server::JOB_WORKER_TYPE as WORKER_TYPE;
use crate::settings;
use pg_ark_core::job_sql;
use pg_ark_core::schedule::jobs::{self, JobKind};
use pg_ark_core::schedule::lifecycle::{self, AfterFailure, Backoff, GaveUp, JobFailure};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

/// Advisory lock key that serializes claims ("pg_ark" in ASCII).
const CLAIM_LOCK: i64 = 0x70_67_5f_61_72_6b;

/// A claimed job.
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub options: Value,
    pub attempts: i32,
    pub max_attempts: i32,
    /// The schedule that queued it, if any.
    pub schedule: Option<String>,
}

/// How a job's run ended.
pub enum Outcome {
    Succeeded(Value),
    /// Retried with backoff only when transient.
    Failed(JobFailure),
    Cancelled,
    Interrupted,
}

/// The row the scheduler inserts for a request from `ark.backup()` (or a
/// schedule), queued by role `queued_by`. Returns the new job's id.
pub fn insert_job(
    kind: &str,
    options: &Value,
    schedule: Option<(&str, f64)>,
    queued_by: Option<pg_sys::Oid>,
) -> Result<Option<i64>, ArkError> {
    let kind = JobKind::parse(kind)?;
    let max_attempts =
        jobs::count_option(options, "max_attempts", settings::JOB_MAX_ATTEMPTS.get())
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(1);
    crate::xact::first_value::<i64>(
        "INSERT INTO ark.jobs (kind, options, schedule_name, scheduled_for, conflict_key, max_attempts,
                               queued_by)
         VALUES ($1, $2, $3, to_timestamp($4::float8), $5, $6, NULLIF($7::oid, 0)::regrole)
         ON CONFLICT (schedule_name, scheduled_for) DO NOTHING
         RETURNING id",
        &[
            kind.as_str().into(),
            JsonB(options.clone()).into(),
            schedule.map(|s| s.0).into(),
            schedule.map(|s| s.1).into(),
            kind.conflict_key().into(),
            max_attempts.into(),
            queued_by.into(),
        ],
    )
}

/// Claim the next runnable job: the oldest due one whose conflict key no
/// running job holds. Each candidate is checked again as its row is
/// ([`jobs::check_claimed`]: kind, options, conflict key), with the
/// validator `ark.backup()` and `ark.schedule()` use; one that fails the
/// check (a row written behind the functions' back, or options a change of
/// the server made invalid) fails for good, naming the option, without
/// ever running, and the next candidate is tried.
pub fn claim() -> Result<Option<Job>, ArkError> {
    Spi::run_with_args("SELECT pg_advisory_xact_lock($1)", &[CLAIM_LOCK.into()])?;
    let libdir = crate::server::libdir();
    loop {
        let next = Spi::connect_mut(|c| {
            let t = c.update(
                concat!(
                    "SELECT j.id, j.kind, j.options, j.conflict_key, j.queued_by::text,
                        coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                                   WHERE r.oid = j.queued_by), false)
                   FROM ark.jobs j
                  WHERE ",
                    job_sql!(due j),
                    "
                    AND (j.conflict_key IS NULL OR NOT EXISTS (
                           SELECT FROM ark.jobs r
                            WHERE r.state = ",
                    job_sql!(running),
                    " AND r.conflict_key = j.conflict_key))
                  ORDER BY j.next_attempt_at, j.id
                  LIMIT 1
                  FOR UPDATE SKIP LOCKED"
                ),
                None,
                &[],
            )?;
            if t.is_empty() {
                return Ok::<_, pgrx::spi::SpiError>(None);
            }
            let r = t.first();
            Ok(Some((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<JsonB>(3)?.map(|j| j.0).unwrap_or(Value::Null),
                r.get::<String>(4)?,
                r.get::<String>(5)?,
                r.get::<bool>(6)?.unwrap_or(false),
            )))
        })?;
        let Some((id, kind, options, conflict_key, queued_by, superuser)) = next else {
            return Ok(None);
        };
        let kind = match jobs::check_claimed(
            &kind,
            &options,
            conflict_key.as_deref(),
            (queued_by.as_deref(), superuser),
            &libdir,
        ) {
            Ok(kind) => kind,
            Err(e) => {
                refuse(id, &e)?;
                continue;
            }
        };
        let row = Spi::connect_mut(|c| {
            let t = c.update(
                concat!(
                    "UPDATE ark.jobs
                    SET state = ",
                    job_sql!(running),
                    ", attempts = attempts + 1,
                        -- When it really starts: the transaction may have
                        -- begun before the claim lock was ours, and before
                        -- the job that shares its conflict key finished.
                        started_at = clock_timestamp(),
                        worker_pid = pg_backend_pid(), progress = NULL
                  WHERE id = $1
                  RETURNING attempts, max_attempts, schedule_name"
                ),
                None,
                &[id.into()],
            )?;
            let r = t.first();
            Ok::<_, pgrx::spi::SpiError>((
                r.get::<i32>(1)?.unwrap_or(1),
                r.get::<i32>(2)?.unwrap_or(1),
                r.get::<String>(3)?,
            ))
        })?;
        let (attempts, max_attempts, schedule) = row;
        return Ok(Some(Job {
            id,
            kind,
            options,
            attempts,
            max_attempts,
            schedule,
        }));
    }
}

/// Fail job `id` for good, unrun: its row does not pass the checks of
/// [`jobs::check_claimed`].
fn refuse(id: i64, e: &jobs::JobError) -> Result<(), ArkError> {
    let message = match e.hint() {
        Some(hint) => format!("refused when claimed, never run: {e}. {hint}"),
        None => format!("refused when claimed, never run: {e}"),
    };
    Spi::run_with_args(
        concat!(
            "UPDATE ark.jobs SET state = ",
            job_sql!(failed),
            ", finished_at = now(), last_error = $2,
                worker_pid = NULL
          WHERE id = $1"
        ),
        &[id.into(), message.as_str().into()],
    )?;
    warning!("pg_ark job {}: {}", id, message);
    notifications::queue(id, "job.failed")?;
    Ok(())
}

/// The retry delays of a job: its options `retry_base` and `retry_cap`, or
/// `ark.job_retry_base` and `ark.job_retry_cap`.
fn backoff(options: &Value) -> Backoff {
    Backoff::new(
        jobs::seconds_option(
            options,
            "retry_base",
            f64::from(settings::JOB_RETRY_BASE.get()),
        ),
        jobs::seconds_option(
            options,
            "retry_cap",
            f64::from(settings::JOB_RETRY_CAP.get()),
        ),
    )
}

/// Record a failed attempt: cancelled (a cancel was asked for meanwhile),
/// failed for good (permanent, or out of attempts), or retrying after the
/// backoff ([`lifecycle::after_failure`] decides).
pub fn record_failure(
    id: i64,
    attempts: i32,
    max_attempts: i32,
    options: &Value,
    failure: &JobFailure,
) -> Result<(), ArkError> {
    let message = failure.message.as_str();
    let cancel_requested = crate::xact::first_value::<bool>(
        "SELECT cancel_requested FROM ark.jobs WHERE id = $1 FOR UPDATE",
        &[id.into()],
    )?
    .unwrap_or(false);
    match lifecycle::after_failure(
        failure.class,
        attempts,
        max_attempts,
        cancel_requested,
        backoff(options),
    ) {
        AfterFailure::Cancel => {
            Spi::run_with_args(
                concat!(
                    "UPDATE ark.jobs SET state = ",
                    job_sql!(cancelled),
                    ", finished_at = now(),
                            last_error = $2, worker_pid = NULL
                      WHERE id = $1"
                ),
                &[id.into(), message.into()],
            )?;
            log!("pg_ark job {} cancelled", id);
        }
        AfterFailure::Fail { why } => {
            Spi::run_with_args(
                concat!(
                    "UPDATE ark.jobs SET state = ",
                    job_sql!(failed),
                    ", finished_at = now(),
                            last_error = $2, worker_pid = NULL
                      WHERE id = $1"
                ),
                &[id.into(), message.into()],
            )?;
            match why {
                GaveUp::Permanent => warning!(
                    "pg_ark job {} failed (a permanent failure, not retried): {}",
                    id,
                    message
                ),
                GaveUp::OutOfAttempts => warning!(
                    "pg_ark job {} failed after {} attempts: {}",
                    id,
                    attempts,
                    message
                ),
            }
            notifications::queue(id, "job.failed")?;
        }
        AfterFailure::Retry { delay } => {
            Spi::run_with_args(
                concat!(
                    "UPDATE ark.jobs SET state = ",
                    job_sql!(retrying),
                    ", last_error = $2,
                            worker_pid = NULL,
                            next_attempt_at = now() + make_interval(secs => $3)
                      WHERE id = $1"
                ),
                &[id.into(), message.into(), delay.into()],
            )?;
            log!(
                "pg_ark job {} attempt {} of {} failed, retrying in {:.1}s: {}",
                id,
                attempts,
                max_attempts,
                delay,
                message
            );
        }
    }
    Ok(())
}

pub fn finish(job: &Job, outcome: &Outcome) -> Result<(), ArkError> {
    // Only the worker that holds the job records its end.
    let ours = crate::xact::first_value::<bool>(
        concat!(
            "SELECT state = ",
            job_sql!(running),
            " AND worker_pid = pg_backend_pid()
           FROM ark.jobs WHERE id = $1 FOR UPDATE"
        ),
        &[job.id.into()],
    )?;
    if ours != Some(true) {
        warning!(
            "pg_ark job {} was taken from this worker (its row changed); its outcome is not recorded",
            job.id
        );
        return Ok(());
    }
    match outcome {
        Outcome::Succeeded(result) => {
            Spi::run_with_args(
                concat!(
                    "UPDATE ark.jobs SET state = ",
                    job_sql!(succeeded),
                    ", finished_at = now(), result = $2,
                        worker_pid = NULL
                  WHERE id = $1"
                ),
                &[job.id.into(), JsonB(result.clone()).into()],
            )?;
            log!("pg_ark job {} ({}) succeeded", job.id, job.kind);
            notifications::queue(job.id, "job.succeeded")?;
        }
        Outcome::Failed(failure) => record_failure(
            job.id,
            job.attempts,
            job.max_attempts,
            &job.options,
            failure,
        )?,
        Outcome::Cancelled => {
            Spi::run_with_args(
                concat!(
                    "UPDATE ark.jobs SET state = ",
                    job_sql!(cancelled),
                    ", finished_at = now(), worker_pid = NULL,
                        last_error = 'cancelled by ark.cancel() while running'
                  WHERE id = $1"
                ),
                &[job.id.into()],
            )?;
            log!("pg_ark job {} cancelled", job.id);
        }
        Outcome::Interrupted => {
            // Not the job's fault: the attempt does not count (unless a
            // cancel was asked for meanwhile).
            Spi::run_with_args(
                concat!("UPDATE ark.jobs
                    SET state = CASE WHEN cancel_requested THEN ", job_sql!(cancelled), " ELSE ", job_sql!(retrying), " END,
                        finished_at = CASE WHEN cancel_requested THEN now() END,
                        attempts = greatest(attempts - 1, 0),
                        next_attempt_at = now(), worker_pid = NULL,
                        last_error = 'interrupted by a shutdown or pg_terminate_backend(); it runs again'
                  WHERE id = $1"),
                &[job.id.into()],
            )?;
            log!("pg_ark job {} interrupted; it will run again", job.id);
        }
    }
    Ok(())
}

/// A job's state, attempts, result and last error.
pub fn job_row(id: i64) -> Result<(String, Value), ArkError> {
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

/// Jobs left `running` by a worker that no longer exists.
pub fn recover_orphans() -> Result<(), crate::error::ArkError> {
    let orphans = Spi::connect_mut(|c| {
        let t = c.update(
            concat!(
                "SELECT id, attempts, max_attempts, worker_pid, options FROM ark.jobs j
              WHERE state = ",
                job_sql!(running),
                "
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_stat_activity a
                                 WHERE a.pid = j.worker_pid AND a.backend_type = $1)
              FOR UPDATE SKIP LOCKED"
            ),
            None,
            &[WORKER_TYPE.into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<i32>(2)?.unwrap_or(0),
                r.get::<i32>(3)?.unwrap_or(1),
                r.get::<i32>(4)?.unwrap_or(0),
                r.get::<JsonB>(5)?.map(|j| j.0).unwrap_or(Value::Null),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?;
    let restored = restored_from();
    for (id, attempts, max_attempts, pid, options) in orphans {
        if let Some((backup, _)) = restored.as_ref().filter(|(_, job)| *job == id) {
            // The backup this cluster was restored from was taken by this
            // job, which the source finished: never take it again here.
            Spi::run_with_args(
                concat!(
                    "UPDATE ark.jobs
                    SET state = ",
                    job_sql!(succeeded),
                    ", finished_at = now(), last_error = NULL,
                        result = coalesce(result, '{}'::jsonb)
                                 || jsonb_build_object('restored_from', $2::text)
                  WHERE id = $1"
                ),
                &[id.into(), backup.as_str().into()],
            )?;
            log!(
                "pg_ark job {}: this cluster was restored from backup \"{}\", which this job took; recorded as succeeded, not retried",
                id,
                backup
            );
            continue;
        }
        // Transient: the next attempt may well finish (a crash, an OOM
        // kill, a restart).
        let failure = JobFailure::transient(format!(
            "the job worker (pid {pid}) ended without finishing the job: it was killed or the server crashed"
        ));
        warning!("pg_ark job {}: {}", id, failure);
        record_failure(id, attempts, max_attempts, &options, &failure)?;
    }
    Ok(())
}

/// The data directory (set at startup, never changed).
fn data_dir() -> Option<std::path::PathBuf> {
    // SAFETY: a plain read of DataDir on the backend's own thread.
    unsafe {
        let p = pg_sys::DataDir;
        if p.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(p)
                .to_string_lossy()
                .into_owned()
                .into(),
        )
    }
}

/// After `pg_ark restore`: this cluster has its source's system identifier,
/// so its backups would go into the source's repository entry, and its
/// copied schedules would start at once. Pause its physical, expire and
/// logical schedules, and those of the other tools (they would back up into
/// the source's pgBackRest stanza, Barman server or pg_basebackup
/// directory), once (the marker records it after the commit) until an
/// administrator runs `ark.resume_schedules()`. Returns the data directory
/// whose marker to update once this transaction has committed.
pub fn pause_after_restore() -> Result<Option<std::path::PathBuf>, crate::error::ArkError> {
    // SAFETY: a plain check of shared state, on the backend's own thread.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Ok(None);
    }
    let Some(dir) = data_dir() else {
        return Ok(None);
    };
    let Some(doc) = pg_ark_core::restore::restored_marker(&dir) else {
        return Ok(None);
    };
    if doc["schedules_paused"] == serde_json::json!(true) {
        return Ok(None);
    }
    let backup = doc["backup_id"].as_str().unwrap_or("?").to_string();
    let reason = format!(
        "this cluster was restored from backup \"{backup}\" and shares the repository entry of the cluster that took it"
    );
    let names = Spi::connect_mut(|c| {
        let t = c.update(
            "UPDATE ark.schedules SET paused = $1
              WHERE paused IS NULL
                AND kind IN ('full', 'incremental', 'differential', 'expire', 'logical',
                             'pgbackrest', 'barman', 'pg_basebackup')
              RETURNING name",
            None,
            &[reason.clone().into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push(r.get::<String>(1)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?;
    // The source's jobs that the copy's catalog shows waiting or running
    // (no worker of this server has run any yet) would write into the
    // source's entry too: cancelled, all but the one that took the backup
    // (recorded as succeeded by recover_orphans).
    let cancelled = Spi::connect_mut(|c| {
        let t = c.update(
            concat!(
                "UPDATE ark.jobs
                SET state = ",
                job_sql!(cancelled),
                ", finished_at = now(),
                    last_error = 'cancelled: ' || $1
              WHERE state IN ",
                job_sql!(active),
                "
                AND kind IN ('full', 'incremental', 'differential', 'expire', 'logical',
                             'pgbackrest', 'barman', 'pg_basebackup')
                AND id IS DISTINCT FROM $2
              RETURNING id"
            ),
            None,
            &[reason.clone().into(), doc["job_id"].as_i64().into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push(r.get::<i64>(1)?.unwrap_or_default().to_string());
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?;
    if !cancelled.is_empty() {
        warning!(
            "pg_ark: {}; its jobs {} are cancelled",
            reason,
            cancelled.join(", ")
        );
    }
    if !names.is_empty() {
        warning!(
            "pg_ark: {}; its schedules {} are paused so that its backups and expiry do not mix with the source's (run SELECT ark.resume_schedules() once this cluster has a repository of its own, or is the only one writing to it)",
            reason,
            names.join(", ")
        );
    }
    Ok(Some(dir))
}

/// The backup and job named by `pg_ark restore`'s marker in the data
/// directory (`pg_ark/restored_from.json`), once recovery has ended and
/// while that job still shows as running.
fn restored_from() -> Option<(String, i64)> {
    // SAFETY: plain reads of shared state and of DataDir (set at startup,
    // never changed), on the backend's own thread.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return None;
    }
    let dir = unsafe {
        let p = pg_sys::DataDir;
        if p.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    let path = std::path::Path::new(&dir).join(pg_ark_core::restore::RESTORED_FROM);
    let text = std::fs::read_to_string(&path).ok()?;
    let doc: Value = serde_json::from_str(&text).ok()?;
    let (backup, job) = (
        doc["backup_id"].as_str()?.to_string(),
        doc["job_id"].as_i64()?,
    );
    // Removed only once an earlier, committed pass has recorded the job
    // (it is no longer running): a pass that fails and rolls back keeps it.
    let state =
        Spi::get_one_with_args::<String>("SELECT state FROM ark.jobs WHERE id = $1", &[job.into()])
            .ok()
            .flatten();
    if state.as_deref() != Some(lifecycle::JobState::Running.as_str()) {
        let _ = std::fs::remove_file(&path);
        return None;
    }
    Some((backup, job))
}

pub fn prune_history() -> Result<(), crate::error::ArkError> {
    let days = settings::JOB_HISTORY_DAYS.get();
    Spi::run_with_args(
        concat!(
            "DELETE FROM ark.jobs
          WHERE state IN ",
            job_sql!(finished),
            "
            AND finished_at < now() - make_interval(days => $1)"
        ),
        &[days.into()],
    )?;
    Spi::run_with_args(
        "DELETE FROM ark.notifications
          WHERE state IN ('delivered', 'failed')
            AND created_at < now() - make_interval(days => $1)",
        &[days.into()],
    )?;
    Ok(())
}

/// Cancel job `id` in one statement: a queued or retrying job at once, a
/// running one flagged for its worker. An error names the state it is in.
pub fn cancel(id: i64) -> Result<bool, ArkError> {
    // One statement, so a claim cannot slip between reading the state and
    // changing it: a queued or retrying job is cancelled at once; a running
    // one is flagged, and its worker stops it within about a second.
    let changed = crate::xact::first_value::<String>(
        concat!(
            "UPDATE ark.jobs
            SET cancel_requested = true,
                state = CASE WHEN state = ",
            job_sql!(running),
            " THEN state ELSE ",
            job_sql!(cancelled),
            " END,
                finished_at = CASE WHEN state = ",
            job_sql!(running),
            " THEN finished_at ELSE now() END,
                last_error = CASE WHEN state = ",
            job_sql!(running),
            " THEN last_error
                                  ELSE coalesce(last_error, 'cancelled before it ran') END
          WHERE id = $1 AND state IN ",
            job_sql!(active),
            "
          RETURNING state"
        ),
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

/// Queue job `id` again in one statement (a failed or cancelled one afresh,
/// a retrying one now) for role `role`, waking the scheduler at commit.
pub fn retry(id: i64, role: pg_sys::Oid) -> Result<i64, ArkError> {
    // One statement, like cancel: the state it acts on is the state it
    // changes, so a worker finishing or claiming the job in between cannot
    // be overwritten. A failed or cancelled job is queued afresh; a retrying
    // one runs now.
    let changed = crate::xact::first_value::<String>(
        concat!(
            "UPDATE ark.jobs
            SET state = CASE WHEN state = ",
            job_sql!(retrying),
            " THEN state ELSE ",
            job_sql!(queued),
            " END,
                attempts = CASE WHEN state = ",
            job_sql!(retrying),
            " THEN attempts ELSE 0 END,
                next_attempt_at = now(),
                finished_at = CASE WHEN state = ",
            job_sql!(retrying),
            " THEN finished_at END,
                cancel_requested = CASE WHEN state = ",
            job_sql!(retrying),
            " THEN cancel_requested ELSE false END,
                queued_by = $2::oid::regrole
          WHERE id = $1 AND state IN ",
            job_sql!(retryable),
            "
          RETURNING state"
        ),
        &[id.into(), role.into()],
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
