//! `ark.status()`: the health document, for psql and for monitoring.
//!
//! The facts come from the catalog (`ark.backups`, `ark.jobs`,
//! `ark.schedules`) and from the archiver (`pg_stat_archiver`, pg_ark's
//! failure record, the `.ready` backlog); the verdict and its messages are
//! `pg_ark_core::health::evaluate`'s.
//!
//! It also answers on a catalog of an older version (a new library
//! installed, `ALTER EXTENSION pg_ark UPDATE` not run yet), saying so: its
//! reads of what an older catalog lacks (`ark.schedules.paused`, since
//! 0.2.0) wait for the update. `tests/upgrade.rs` calls it on 0.1.0's.
use crate::archive::status;
use crate::error::ArkError;
use crate::mailbox;
use crate::settings;
use crate::xact::{raise, require_monitor};
use pg_ark_core::health::{self, ArchiveFacts, DrillFacts, Facts, JobFacts, KindFacts, Thresholds};
use pg_ark_core::job_sql;
use pg_ark_core::schedule::lifecycle::JobState;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Map, Value};

/// The kinds whose successes are backups in `ark.backups` (of that kind),
/// whose age the health rules judge: pg_ark's own, and the other tools'.
const BACKUP_KINDS: [&str; 7] = [
    "logical",
    "full",
    "incremental",
    "differential",
    "pgbackrest",
    "barman",
    "pg_basebackup",
];

fn jobs_in(state: JobState, within: f64) -> Result<(Vec<JobFacts>, Vec<Value>), ArkError> {
    Ok(Spi::connect(|c| {
        let t = c.select(
            concat!(
                "SELECT j.id, j.kind, j.attempts, j.max_attempts, j.last_error,
                    EXISTS (SELECT FROM ark.jobs s
                             WHERE s.kind = j.kind AND s.state = ",
                job_sql!(succeeded),
                "
                               AND s.finished_at > coalesce(j.finished_at, j.created_at)),
                    to_char(j.next_attempt_at, 'YYYY-MM-DD\"T\"HH24:MI:SSOF'),
                    to_char(j.finished_at, 'YYYY-MM-DD\"T\"HH24:MI:SSOF'),
                    j.schedule_name
               FROM ark.jobs j
              WHERE j.state = $1
                AND ($1 <> ",
                job_sql!(failed),
                " OR j.finished_at > now() - make_interval(secs => $2))
              ORDER BY j.id"
            ),
            None,
            &[state.as_str().into(), within.into()],
        )?;
        let mut facts = Vec::new();
        let mut docs = Vec::new();
        for r in t {
            let f = JobFacts {
                id: r.get::<i64>(1)?.unwrap_or(0),
                kind: r.get::<String>(2)?.unwrap_or_default(),
                attempts: r.get::<i32>(3)?.unwrap_or(0),
                max_attempts: r.get::<i32>(4)?.unwrap_or(0),
                last_error: r.get::<String>(5)?,
                superseded: r.get::<bool>(6)?.unwrap_or(false),
            };
            let mut doc = json!({
                "id": f.id, "kind": f.kind, "attempts": f.attempts,
                "max_attempts": f.max_attempts, "last_error": f.last_error,
                "schedule": r.get::<String>(9)?,
            });
            if state == JobState::Retrying {
                doc["next_attempt_at"] = json!(r.get::<String>(7)?);
            } else {
                doc["finished_at"] = json!(r.get::<String>(8)?);
                doc["superseded"] = json!(f.superseded);
            }
            facts.push(f);
            docs.push(doc);
        }
        Ok::<_, pgrx::spi::SpiError>((facts, docs))
    })?)
}

/// Kept backups whose last restore drill failed, and the last drill of
/// all (its result, backup, time and RTO), or null.
pub(crate) fn drills() -> Result<(Vec<DrillFacts>, Value), ArkError> {
    // The backups of the repository in use (ark.backups keeps those of
    // another one the setting named before).
    let repository = settings::repository_location();
    let failed = Spi::connect(|c| {
        let t = c.select(
            "SELECT label, (info->'drill'->>'job_id')::int8, info->'drill'->>'error'
               FROM ark.backups
              WHERE kind IN ('full', 'incremental', 'differential')
                AND repository = $1
                AND (info->'drill'->>'ok')::boolean IS FALSE
              ORDER BY finished_at, id",
            None,
            &[repository.clone().into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push(DrillFacts {
                backup_id: r.get::<String>(1)?.unwrap_or_default(),
                job_id: r.get::<i64>(2)?,
                error: r
                    .get::<String>(3)?
                    .unwrap_or_else(|| "no error recorded".into()),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?;
    let last = Spi::get_one_with_args::<JsonB>(
        "SELECT (SELECT jsonb_build_object(
                    'ok', (d->>'ok')::boolean,
                    'backup_id', d->>'backup_id',
                    'job_id', (d->>'job_id')::int8,
                    'at', d->>'at',
                    'target', d->>'target',
                    'rto_seconds', d->'timings'->'rto_seconds',
                    'timings', d->'timings',
                    'error', d->>'error')
           FROM (SELECT info->'drill' AS d FROM ark.backups
                  WHERE info ? 'drill' AND repository = $1
                    AND kind IN ('full', 'incremental', 'differential')) s
          ORDER BY d->>'at' DESC, (d->>'job_id')::int8 DESC
          LIMIT 1)",
        &[repository.into()],
    )?
    .map(|j| j.0)
    .unwrap_or(Value::Null);
    Ok((failed, last))
}

/// The paused schedules and why (a column since 0.2.0).
fn paused_schedules() -> Result<Vec<(String, String)>, ArkError> {
    Ok(Spi::connect(|c| {
        let t = c.select(
            "SELECT name, paused FROM ark.schedules WHERE paused IS NOT NULL ORDER BY name",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?)
}

/// `ark.status()`'s document and its verdict (the caller checks the
/// privilege).
/// The findings of the newest job that scanned the repository's versions
/// for tampering (backups and verifications, on a bucket under Object
/// Lock): its id, the findings its result kept, and how many it found.
fn tampering() -> Result<Option<(i64, Vec<String>, usize)>, ArkError> {
    let row = Spi::get_three::<i64, JsonB, i64>(
        "SELECT id, result->'tampering', (result->>'tampering_count')::int8 FROM ark.jobs
          WHERE result ? 'tampering' ORDER BY finished_at DESC NULLS LAST, id DESC LIMIT 1",
    );
    let (id, found, count) = match row {
        Ok(r) => r,
        Err(pgrx::spi::SpiError::InvalidPosition) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let found: Vec<String> = found
        .and_then(|j| serde_json::from_value(j.0).ok())
        .unwrap_or_default();
    // Only the first findings are kept in the result: the rest, counted.
    let count = count.map_or(found.len(), |c| c.max(0) as usize);
    Ok(id.map(|id| (id, found, count)))
}

pub(crate) fn status_document() -> Result<(Value, health::Verdict), ArkError> {
    let thresholds = Thresholds {
        backup_max_age: f64::from(settings::HEALTH_BACKUP_MAX_AGE.get()),
        archive_backlog: i64::from(settings::HEALTH_ARCHIVE_BACKLOG.get()),
    };
    let now = crate::server::now_epoch();
    let mut kinds = Vec::new();
    let mut ages = Map::new();
    for kind in BACKUP_KINDS {
        let (last, since) = Spi::get_two_with_args::<f64, f64>(
            // A barman schedule of barman check or barman cron takes no
            // backup.
            "SELECT (SELECT extract(epoch FROM max(finished_at))::float8
                       FROM ark.backups WHERE kind = $1),
                    (SELECT extract(epoch FROM min(created_at))::float8
                       FROM ark.schedules WHERE kind = $1 AND enabled
                        AND coalesce(options->>'type', 'backup') IN ('backup', 'full', 'diff', 'incr'))",
            &[kind.into()],
        )?;
        ages.insert(
            kind.into(),
            json!(last.map(|l| ((now - l) * 10.0).round() / 10.0)),
        );
        kinds.push(KindFacts {
            kind: kind.into(),
            last_success: last,
            scheduled_since: since,
        });
    }
    let (retrying, retrying_docs) = jobs_in(JobState::Retrying, 0.0)?;
    let (failed, failed_docs) = jobs_in(JobState::Failed, thresholds.backup_max_age)?;
    let (queued, running) = Spi::get_two::<i64, i64>(concat!(
        "SELECT count(*) FILTER (WHERE state = ",
        job_sql!(queued),
        "), count(*) FILTER (WHERE state = ",
        job_sql!(running),
        ")
           FROM ark.jobs"
    ))?;

    let enabled = Spi::get_one::<bool>(
        "SELECT current_setting('archive_mode') <> 'off'
                AND current_setting('archive_library') = 'pg_ark'",
    )?
    .unwrap_or(false);
    let st = status::archiver_state()?;
    let archive = ArchiveFacts {
        enabled,
        backlog: status::backlog(),
        last_archived: st.last_archived_epoch,
        last_failed: st.last_failed_epoch,
        last_failure_reason: st.last_failure_reason.clone(),
    };
    let (failed_drills, last_drill) = drills()?;
    let catalog = crate::catalog::version_mismatch()?;
    let paused = if catalog.is_some() {
        Vec::new()
    } else {
        paused_schedules()?
    };
    let paused_docs: Vec<Value> = paused
        .iter()
        .map(|(name, reason)| json!({"name": name, "reason": reason}))
        .collect();
    let facts = Facts {
        paused,
        catalog,
        now,
        failed_drills,
        kinds,
        retrying,
        failed,
        archive: archive.clone(),
        tampering: tampering()?,
    };
    let report = health::evaluate(&facts, &thresholds);
    let doc = json!({
        "status": report.verdict.as_str(),
        "messages": report.messages,
        "last_backup_age_seconds": ages,
        "jobs": {
            "queued": queued.unwrap_or(0),
            "running": running.unwrap_or(0),
            "retrying": retrying_docs,
            "failed": failed_docs,
        },
        "archive": {
            "enabled": archive.enabled,
            "backlog": archive.backlog,
            "last_archived_wal": st.last_archived_wal,
            "last_failed_wal": st.last_failed_wal,
            "last_failure_reason": st.last_failure_reason,
        },
        "drill": last_drill,
        "paused_schedules": paused_docs,
        "scheduler": { "running": mailbox::scheduler_pid().is_some() },
        "thresholds": {
            "backup_max_age_seconds": thresholds.backup_max_age,
            "archive_backlog": thresholds.archive_backlog,
        },
    });
    Ok((doc, report.verdict))
}

fn status_impl() -> Result<Value, ArkError> {
    require_monitor()?;
    Ok(status_document()?.0)
}

/// pg_ark's health: `status` (healthy, degraded or failing), `messages` in
/// plain words, the age of the last successful backup of each kind, failing
/// and retrying jobs, and WAL archiving's backlog and last error.
#[pg_extern(volatile)]
fn status() -> JsonB {
    JsonB(status_impl().unwrap_or_else(|e| raise(e)))
}
