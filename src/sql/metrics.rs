//! `ark.metrics()`: the facts of `pg_ark_core::metrics`, gathered from the
//! catalog and the archiver in the caller's transaction, in Prometheus's
//! text format. The HTTP worker's `/metrics` gathers them the same way.
use crate::archive::status;
use crate::error::ArkError;
use crate::settings;
use crate::sql::status::status_document;
use crate::xact::{raise, require_monitor};
use pg_ark_core::metrics::{self, Count, Drill, Facts, Format, LastBackup};
use pgrx::prelude::*;

/// Rows of `(labels..., count)`, for a query whose first `n` columns are
/// the values of `names` and whose last is a count (`$1`, if the query has
/// it, is `repository`).
fn counts(query: &str, names: &[&'static str], repository: &str) -> Result<Vec<Count>, ArkError> {
    Ok(Spi::connect(|c| {
        let t = if query.contains("$1") {
            c.select(query, None, &[repository.into()])?
        } else {
            c.select(query, None, &[])?
        };
        let mut out = Vec::new();
        for r in t {
            let mut labels = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                labels.push((*name, r.get::<String>(i + 1)?.unwrap_or_default()));
            }
            let value = r.get::<i64>(names.len() + 1)?.unwrap_or(0);
            out.push(Count {
                labels,
                value: u64::try_from(value).unwrap_or(0),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?)
}

fn non_negative(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

/// Everything `/metrics` reports, from the catalog and the archiver (the
/// caller checks the privilege).
pub(crate) fn gather() -> Result<Facts, ArkError> {
    let (_, verdict) = status_document()?;
    let now = crate::server::now_epoch();
    // The backups of the repository in use (ark.backups keeps those of
    // another one the setting named before).
    let repository = settings::repository_location();
    let last_backups = Spi::connect(|c| {
        let t = c.select(
            "SELECT DISTINCT ON (kind) kind,
                    extract(epoch FROM finished_at)::float8,
                    extract(epoch FROM finished_at - started_at)::float8,
                    size_bytes,
                    coalesce((info->>'stored_bytes')::int8, size_bytes)
               FROM ark.backups
              WHERE repository = $1
              ORDER BY kind, finished_at DESC, id DESC",
            None,
            &[repository.clone().into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push(LastBackup {
                kind: r.get::<String>(1)?.unwrap_or_default(),
                finished: r.get::<f64>(2)?.unwrap_or(0.0),
                duration: r.get::<f64>(3)?.unwrap_or(0.0).max(0.0),
                original_bytes: non_negative(r.get::<i64>(4)?),
                stored_bytes: non_negative(r.get::<i64>(5)?),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?;
    let backups_kept = counts(
        "SELECT kind, count(*) FROM ark.backups WHERE repository = $1 GROUP BY kind ORDER BY kind",
        &["kind"],
        &repository,
    )?;
    let (chains, repository_bytes) = Spi::get_two_with_args::<i64, i64>(
        "SELECT (SELECT count(*) FROM ark.backup_chains WHERE repository = $1),
                (SELECT coalesce(sum(coalesce((info->>'stored_bytes')::int8, size_bytes)), 0)::int8
                   FROM ark.backups WHERE repository = $1)",
        &[repository.clone().into()],
    )?;
    // The oldest kept physical backup: a restore reaches no earlier than
    // its end.
    let earliest_recoverable = Spi::get_one_with_args::<f64>(
        "SELECT extract(epoch FROM min(finished_at))::float8 FROM ark.backups
          WHERE kind IN ('full', 'incremental', 'differential') AND repository = $1",
        &[repository.clone().into()],
    )?;
    let jobs = counts(
        "SELECT kind, state, count(*) FROM ark.jobs GROUP BY kind, state ORDER BY kind, state",
        &["kind", "state"],
        "",
    )?;
    // The running totals are kept since 0.2.0: a catalog of an older
    // version (ALTER EXTENSION pg_ark UPDATE not run yet) has none.
    let (jobs_finished, job_retries) = if crate::catalog::version_mismatch()?.is_some() {
        (Vec::new(), Vec::new())
    } else {
        (
            counts(
                "SELECT kind, event, total FROM ark.job_totals
                  WHERE event IN ('succeeded', 'failed', 'cancelled') ORDER BY kind, event",
                &["kind", "outcome"],
                "",
            )?,
            counts(
                "SELECT kind, total FROM ark.job_totals WHERE event = 'retried' ORDER BY kind",
                &["kind"],
                "",
            )?,
        )
    };
    let last_drill = Spi::connect(|c| {
        let t = c.select(
            "SELECT extract(epoch FROM (d->>'at')::timestamptz)::float8,
                    (d->>'ok')::boolean,
                    (d->'timings'->>'rto_seconds')::float8
               FROM (SELECT info->'drill' AS d FROM ark.backups
                      WHERE info ? 'drill' AND repository = $1
                        AND kind IN ('full', 'incremental', 'differential')) s
              ORDER BY d->>'at' DESC, (d->>'job_id')::int8 DESC
              LIMIT 1",
            None,
            &[repository.into()],
        )?;
        let mut out = None;
        for r in t {
            if let Some(at) = r.get::<f64>(1)? {
                out = Some(Drill {
                    at,
                    ok: r.get::<bool>(2)?.unwrap_or(false),
                    rto_seconds: r.get::<f64>(3)?,
                });
            }
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?;
    let (waiting, given_up) = Spi::get_two::<i64, i64>(
        "SELECT count(*) FILTER (WHERE state = 'pending'),
                count(*) FILTER (WHERE state = 'failed')
           FROM ark.notifications",
    )?;
    let st = status::archiver_state()?;
    Ok(Facts {
        now,
        last_backups,
        backups_kept,
        chains_kept: non_negative(chains),
        repository_bytes: non_negative(repository_bytes),
        archived_segments: non_negative(Some(st.archived_count)),
        archive_failures: non_negative(Some(st.failed_count)),
        last_archived: st.last_archived_epoch,
        archive_backlog: non_negative(Some(status::backlog())),
        earliest_recoverable,
        latest_recoverable: st.last_archived_epoch,
        jobs,
        jobs_finished,
        job_retries,
        last_drill,
        webhooks_waiting: non_negative(waiting),
        webhooks_given_up: non_negative(given_up),
        verdict,
    })
}

/// pg_ark's metrics in Prometheus's text format (0.0.4), as `GET /metrics`
/// serves them: for scrapers that read through SQL.
#[pg_extern(volatile)]
fn metrics() -> String {
    require_monitor()
        .and_then(|()| gather())
        .map(|f| metrics::render(&f, Format::Prometheus))
        .unwrap_or_else(|e| raise(e))
}
