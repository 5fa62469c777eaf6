//! pg_ark's metrics: the facts the extension gathers from its catalog and
//! from the archiver, rendered in Prometheus's text format (0.0.4) or in
//! OpenMetrics, by the `prometheus-client` crate.
//!
//! Every name starts with `pg_ark_`, every series has HELP and TYPE, and
//! labels stay few: a backup or job kind, a job state or outcome, never an
//! id. A fact that is not known (no backup of a kind yet, no drill, nothing
//! archived) leaves its series out rather than reporting 0, which would
//! read as "in 1970". Counters are running totals kept by the catalog, so
//! they never go down when old job rows are pruned (a reset of the
//! archiver's statistics resets its two, which Prometheus's `rate()`
//! handles).
//!
//! `GET /metrics` and `ark.metrics()` render the same facts.
use crate::health::Verdict;
use prometheus_client::encoding::{prometheus_text, text as openmetrics_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The format of the exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Prometheus,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format a scraper asks for in its `Accept` header: OpenMetrics
    /// when it names `application/openmetrics-text` (with a q above 0),
    /// Prometheus's text format otherwise.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let wants = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut fields = part.split(';').map(str::trim);
                let media = fields.next().unwrap_or("");
                let q = fields
                    .filter_map(|p| p.strip_prefix("q="))
                    .filter_map(|q| q.parse::<f64>().ok())
                    .next()
                    .unwrap_or(1.0);
                media.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
            })
        });
        if wants {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The last successful backup of one kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastBackup {
    /// `full`, `incremental`, `differential` or `logical`.
    pub kind: String,
    /// When it finished (Unix seconds).
    pub finished: f64,
    /// How long it took.
    pub duration: f64,
    /// Bytes it read (the cluster's files, or the dump's size).
    pub original_bytes: u64,
    /// Bytes it stored in the repository.
    pub stored_bytes: u64,
}

/// A count with labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Count {
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

/// The last restore drill.
#[derive(Debug, Clone, PartialEq)]
pub struct Drill {
    pub at: f64,
    pub ok: bool,
    pub rto_seconds: Option<f64>,
}

/// Everything `/metrics` reports, gathered in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The time of gathering (Unix seconds).
    pub now: f64,
    pub last_backups: Vec<LastBackup>,
    /// Backups kept, by kind.
    pub backups_kept: Vec<Count>,
    pub chains_kept: u64,
    /// Bytes the kept backups store in the repository (from the catalog).
    pub repository_bytes: u64,
    /// `pg_stat_archiver`'s counts.
    pub archived_segments: u64,
    pub archive_failures: u64,
    pub last_archived: Option<f64>,
    /// `.ready` files in `pg_wal/archive_status`.
    pub archive_backlog: u64,
    /// The oldest kept physical backup's consistency point (its stop).
    pub earliest_recoverable: Option<f64>,
    /// The end of the archived WAL: when the last segment was archived. (A
    /// segment is archived after it is switched, so its last change is a
    /// little older.)
    pub latest_recoverable: Option<f64>,
    /// Jobs now, by kind and state.
    pub jobs: Vec<Count>,
    /// Jobs finished since the catalog was made, by kind and outcome.
    pub jobs_finished: Vec<Count>,
    /// Attempts that failed and were retried, by kind.
    pub job_retries: Vec<Count>,
    pub last_drill: Option<Drill>,
    pub webhooks_waiting: u64,
    pub webhooks_given_up: u64,
    pub verdict: Verdict,
}

/// The number a health verdict is reported as.
pub fn verdict_number(v: Verdict) -> i64 {
    match v {
        Verdict::Healthy => 0,
        Verdict::Degraded => 1,
        Verdict::Failing => 2,
    }
}

type Labels = Vec<(&'static str, String)>;
type FGauge = Gauge<f64, AtomicU64>;

fn gauge(reg: &mut Registry, name: &str, help: &str, unit: Option<Unit>, v: f64) {
    let g = FGauge::default();
    g.set(v);
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, g),
        None => reg.register(name, help, g),
    }
}

fn labelled<T>(
    reg: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    rows: impl IntoIterator<Item = (Labels, T)>,
    set: impl Fn(&FGauge, T),
) {
    let family = Family::<Labels, FGauge>::default();
    for (labels, v) in rows {
        set(&family.get_or_create(&labels), v);
    }
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, family),
        None => reg.register(name, help, family),
    }
}

fn counter_family(reg: &mut Registry, name: &str, help: &str, rows: &[Count]) {
    let family = Family::<Labels, Counter>::default();
    for c in rows {
        family.get_or_create(&c.labels).inc_by(c.value);
    }
    reg.register(name, help, family);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

/// The registry of one scrape.
fn registry(f: &Facts) -> Registry {
    let mut r = Registry::with_prefix("pg_ark");
    let kind = |k: &str| vec![("kind", k.to_string())];
    labelled(
        &mut r,
        "backup_last_success_timestamp",
        "When the last successful backup of each kind finished (Unix time)",
        Some(Unit::Seconds),
        f.last_backups.iter().map(|b| (kind(&b.kind), b.finished)),
        |g, v| {
            g.set(v);
        },
    );
    labelled(
        &mut r,
        "backup_last_duration",
        "How long the last successful backup of each kind took",
        Some(Unit::Seconds),
        f.last_backups.iter().map(|b| (kind(&b.kind), b.duration)),
        |g, v| {
            g.set(v);
        },
    );
    labelled(
        &mut r,
        "backup_last_original",
        "Bytes the last successful backup of each kind read",
        Some(Unit::Bytes),
        f.last_backups
            .iter()
            .map(|b| (kind(&b.kind), b.original_bytes as f64)),
        |g, v| {
            g.set(v);
        },
    );
    labelled(
        &mut r,
        "backup_last_stored",
        "Bytes the last successful backup of each kind stored in the repository",
        Some(Unit::Bytes),
        f.last_backups
            .iter()
            .map(|b| (kind(&b.kind), b.stored_bytes as f64)),
        |g, v| {
            g.set(v);
        },
    );
    labelled(
        &mut r,
        "backups_kept",
        "Backups kept, by kind (from the catalog)",
        None,
        f.backups_kept
            .iter()
            .map(|c| (c.labels.clone(), c.value as f64)),
        |g, v| {
            g.set(v);
        },
    );
    gauge(
        &mut r,
        "chains_kept",
        "Physical backup chains kept (a full and the backups that rely on it)",
        None,
        f.chains_kept as f64,
    );
    gauge(
        &mut r,
        "repository",
        "Bytes the kept backups store in the repository (from the catalog, not from listing it)",
        Some(Unit::Bytes),
        f.repository_bytes as f64,
    );
    counter(
        &mut r,
        "archive_segments_archived",
        "WAL segments archived (pg_stat_archiver.archived_count)",
        f.archived_segments,
    );
    counter(
        &mut r,
        "archive_failures",
        "Failed attempts to archive a WAL segment (pg_stat_archiver.failed_count)",
        f.archive_failures,
    );
    if let Some(t) = f.last_archived {
        gauge(
            &mut r,
            "archive_last_archived_timestamp",
            "When the last WAL segment was archived (Unix time)",
            Some(Unit::Seconds),
            t,
        );
        gauge(
            &mut r,
            "archive_last_archived_age",
            "Seconds since the last WAL segment was archived",
            Some(Unit::Seconds),
            (f.now - t).max(0.0),
        );
    }
    gauge(
        &mut r,
        "archive_ready_segments",
        "WAL segments waiting to be archived (.ready files)",
        None,
        f.archive_backlog as f64,
    );
    if let Some(t) = f.earliest_recoverable {
        gauge(
            &mut r,
            "recovery_window_earliest_timestamp",
            "The earliest time a restore can reach: the oldest kept backup's consistency point (Unix time)",
            Some(Unit::Seconds),
            t,
        );
    }
    if let Some(t) = f.latest_recoverable {
        gauge(
            &mut r,
            "recovery_window_latest_timestamp",
            "The latest time a restore can reach: the end of the archived WAL (Unix time)",
            Some(Unit::Seconds),
            t,
        );
        gauge(
            &mut r,
            "rpo",
            "Seconds since the end of the archived WAL (when the last segment was archived): changes since then are not in the repository yet",
            Some(Unit::Seconds),
            (f.now - t).max(0.0),
        );
    }
    labelled(
        &mut r,
        "jobs",
        "Jobs in the queue and its history, by kind and state",
        None,
        f.jobs.iter().map(|c| (c.labels.clone(), c.value as f64)),
        |g, v| {
            g.set(v);
        },
    );
    counter_family(
        &mut r,
        "jobs_finished",
        "Jobs finished, by kind and outcome (a running total: pruning the history does not lower it)",
        &f.jobs_finished,
    );
    counter_family(
        &mut r,
        "job_retries",
        "Job attempts that failed and were retried, by kind",
        &f.job_retries,
    );
    if let Some(d) = &f.last_drill {
        gauge(
            &mut r,
            "drill_last_timestamp",
            "When the last restore drill ran (Unix time)",
            Some(Unit::Seconds),
            d.at,
        );
        gauge(
            &mut r,
            "drill_last_success",
            "Whether the last restore drill succeeded (1) or failed (0)",
            None,
            if d.ok { 1.0 } else { 0.0 },
        );
        if let Some(rto) = d.rto_seconds {
            gauge(
                &mut r,
                "drill_last_rto",
                "The recovery time the last restore drill measured",
                Some(Unit::Seconds),
                rto,
            );
        }
    }
    gauge(
        &mut r,
        "webhooks_waiting",
        "Webhook notifications waiting to be delivered",
        None,
        f.webhooks_waiting as f64,
    );
    gauge(
        &mut r,
        "webhooks_given_up",
        "Webhook notifications given up after their last attempt",
        None,
        f.webhooks_given_up as f64,
    );
    gauge(
        &mut r,
        "health_status",
        "pg_ark's health verdict: 0 healthy, 1 degraded, 2 failing (ark.status())",
        None,
        verdict_number(f.verdict) as f64,
    );
    r
}

/// The exposition of `facts` in `format`.
pub fn render(facts: &Facts, format: Format) -> String {
    let reg = registry(facts);
    let mut out = String::new();
    // Writing into a String does not fail.
    let _ = match format {
        Format::Prometheus => prometheus_text::encode(&mut out, &reg),
        Format::OpenMetrics => openmetrics_text::encode(&mut out, &reg),
    };
    out
}

#[cfg(test)]
mod tests;
