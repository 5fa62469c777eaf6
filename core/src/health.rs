//! The health verdict behind `ark.status()`: healthy, degraded or failing,
//! with messages in plain words. The extension gathers the facts (catalog,
//! archiver statistics); the rules live here so they are unit-tested.
//!
//! Rules (thresholds are settings):
//! - **failing** when
//!   - a job failed permanently and no later job of the same kind succeeded;
//!   - the last restore drill of a backup that is still kept failed (the
//!     backup did not restore, or its restore did not pass its checks);
//!   - WAL archiving is failing: its last failure is newer than its last
//!     success and at least `archive_backlog` files wait;
//!   - a kind with an enabled schedule has not succeeded for twice
//!     `backup_max_age` (or ever, once its first schedule is that old);
//! - **degraded** when
//!   - the catalog is at another version than the library (until `ALTER
//!     EXTENSION pg_ark UPDATE`, no schedule or job runs);
//!   - a job is retrying;
//!   - at least `archive_backlog` WAL files wait, or archiving's last attempt
//!     failed;
//!   - a scheduled kind's last success is older than `backup_max_age`, or it
//!     has never succeeded since its schedule was created more than
//!     `backup_max_age` ago;
//! - **healthy** otherwise.
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Healthy,
    Degraded,
    Failing,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded => "degraded",
            Verdict::Failing => "failing",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Thresholds {
    /// Seconds after which the last successful backup of a scheduled kind is
    /// too old.
    pub backup_max_age: f64,
    /// WAL files waiting in `archive_status` that count as a backlog.
    pub archive_backlog: i64,
}

/// One job kind: when it last succeeded, and since when it is scheduled.
#[derive(Debug, Clone)]
pub struct KindFacts {
    pub kind: String,
    pub last_success: Option<f64>,
    /// Creation time of the oldest enabled schedule of this kind.
    pub scheduled_since: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct JobFacts {
    pub id: i64,
    pub kind: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    /// For a failed job: whether a later job of its kind succeeded.
    pub superseded: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ArchiveFacts {
    /// Whether archiving is configured (`archive_mode` on, pg_ark the module).
    pub enabled: bool,
    pub backlog: i64,
    pub last_archived: Option<f64>,
    pub last_failed: Option<f64>,
    pub last_failure_reason: Option<String>,
}

/// A kept backup whose last restore drill failed.
#[derive(Debug, Clone)]
pub struct DrillFacts {
    pub backup_id: String,
    pub job_id: Option<i64>,
    pub error: String,
}

#[derive(Debug, Clone)]
pub struct Facts {
    pub now: f64,
    /// The catalog at another version than the library.
    pub catalog: Option<crate::version::CatalogMismatch>,
    /// Schedules paused, and why (name, reason): after `pg_ark restore`,
    /// until an administrator resumes them.
    pub paused: Vec<(String, String)>,
    /// Kept backups whose last drill failed.
    pub failed_drills: Vec<DrillFacts>,
    pub kinds: Vec<KindFacts>,
    pub retrying: Vec<JobFacts>,
    pub failed: Vec<JobFacts>,
    pub archive: ArchiveFacts,
    /// What the last scan of the repository's versions found done behind
    /// pg_ark's back (a bucket under Object Lock): the job that scanned,
    /// the first findings it kept (newer versions, delete markers), and how
    /// many it found in all.
    pub tampering: Option<(i64, Vec<String>, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub verdict: Verdict,
    pub messages: Vec<String>,
}

/// "3 hours", "2 days", "45 seconds": ages in plain words.
pub fn plain_duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    let (n, unit) = if s < 120.0 {
        (s, "second")
    } else if s < 7200.0 {
        (s / 60.0, "minute")
    } else if s < 2.0 * 86400.0 {
        (s / 3600.0, "hour")
    } else {
        (s / 86400.0, "day")
    };
    let n = n.floor() as i64;
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

pub fn evaluate(facts: &Facts, t: &Thresholds) -> Report {
    let mut verdict = Verdict::Healthy;
    let mut messages = Vec::new();
    let mut raise = |v: Verdict, msg: String, messages: &mut Vec<String>| {
        verdict = verdict.max(v);
        messages.push(msg);
    };

    for j in facts.failed.iter().filter(|j| !j.superseded) {
        raise(
            Verdict::Failing,
            format!(
                "{} job {} failed after {} attempt{}: {}",
                j.kind,
                j.id,
                j.attempts,
                if j.attempts == 1 { "" } else { "s" },
                j.last_error.as_deref().unwrap_or("no error recorded")
            ),
            &mut messages,
        );
    }
    if let Some((job, found, total)) = &facts.tampering {
        const SHOWN: usize = 5;
        for t in found.iter().take(SHOWN) {
            raise(
                Verdict::Failing,
                format!("the repository was tampered with (found by job {job}): {t}"),
                &mut messages,
            );
        }
        let shown = found.len().min(SHOWN);
        let total = (*total).max(found.len());
        if total > shown {
            raise(
                Verdict::Failing,
                format!(
                    "the repository was tampered with: {} more finding(s), see job {job}",
                    total - shown
                ),
                &mut messages,
            );
        }
    }
    for d in &facts.failed_drills {
        raise(
            Verdict::Failing,
            format!(
                "the restore drill{} of backup {} failed: {}",
                d.job_id.map(|j| format!(" (job {j})")).unwrap_or_default(),
                d.backup_id,
                d.error
            ),
            &mut messages,
        );
    }
    if let Some(m) = &facts.catalog {
        raise(
            Verdict::Degraded,
            format!("{}: {}", m.message(), m.remedy()),
            &mut messages,
        );
    }
    for (name, reason) in &facts.paused {
        raise(
            Verdict::Degraded,
            format!(
                "schedule \"{name}\" is paused: {reason}; resume it with ark.resume_schedules() once this cluster has a repository entry of its own, or is the only writer of this one"
            ),
            &mut messages,
        );
    }
    for j in &facts.retrying {
        raise(
            Verdict::Degraded,
            format!(
                "{} job {} is retrying (attempt {} of {} failed: {})",
                j.kind,
                j.id,
                j.attempts,
                j.max_attempts,
                j.last_error.as_deref().unwrap_or("no error recorded")
            ),
            &mut messages,
        );
    }
    for k in &facts.kinds {
        let Some(since) = k.scheduled_since else {
            continue;
        };
        match k.last_success {
            Some(last) => {
                let age = facts.now - last;
                if age > 2.0 * t.backup_max_age {
                    raise(
                        Verdict::Failing,
                        format!(
                            "the last successful {} backup is {} old (limit {})",
                            k.kind,
                            plain_duration(age),
                            plain_duration(t.backup_max_age)
                        ),
                        &mut messages,
                    );
                } else if age > t.backup_max_age {
                    raise(
                        Verdict::Degraded,
                        format!(
                            "the last successful {} backup is {} old (limit {})",
                            k.kind,
                            plain_duration(age),
                            plain_duration(t.backup_max_age)
                        ),
                        &mut messages,
                    );
                }
            }
            None => {
                let waited = facts.now - since;
                if waited > t.backup_max_age {
                    raise(
                        if waited > 2.0 * t.backup_max_age {
                            Verdict::Failing
                        } else {
                            Verdict::Degraded
                        },
                        format!(
                            "no {} backup has succeeded since it was scheduled {} ago",
                            k.kind,
                            plain_duration(waited)
                        ),
                        &mut messages,
                    );
                }
            }
        }
    }
    let a = &facts.archive;
    if a.enabled {
        let failing_now = match (a.last_failed, a.last_archived) {
            (Some(f), Some(ok)) => f > ok,
            (Some(_), None) => true,
            _ => false,
        };
        let reason = a
            .last_failure_reason
            .as_deref()
            .unwrap_or("no reason recorded");
        if failing_now && a.backlog >= t.archive_backlog {
            raise(
                Verdict::Failing,
                format!(
                    "WAL archiving is failing and {} files are waiting: {reason}",
                    a.backlog
                ),
                &mut messages,
            );
        } else if failing_now {
            raise(
                Verdict::Degraded,
                format!("the last WAL archiving attempt failed: {reason}"),
                &mut messages,
            );
        } else if a.backlog >= t.archive_backlog {
            raise(
                Verdict::Degraded,
                format!(
                    "{} WAL files are waiting to be archived (limit {})",
                    a.backlog, t.archive_backlog
                ),
                &mut messages,
            );
        }
    }
    if messages.is_empty() {
        messages.push("all checks passed".into());
    }
    Report { verdict, messages }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: f64 = 86400.0;

    fn t() -> Thresholds {
        Thresholds {
            backup_max_age: DAY,
            archive_backlog: 10,
        }
    }

    fn facts() -> Facts {
        Facts {
            paused: Vec::new(),
            catalog: None,
            now: 100.0 * DAY,
            failed_drills: vec![],
            kinds: vec![],
            retrying: vec![],
            failed: vec![],
            archive: ArchiveFacts::default(),
            tampering: None,
        }
    }

    #[test]
    fn tampering_is_failing_and_named() {
        let mut f = facts();
        f.tampering = Some((9, vec![], 0));
        assert_eq!(evaluate(&f, &t()).verdict, Verdict::Healthy);
        let found: Vec<String> = (1..=7)
            .map(|n| format!("key{n}: hidden behind a delete marker"))
            .collect();
        f.tampering = Some((9, found, 7));
        let r = evaluate(&f, &t());
        assert_eq!(r.verdict, Verdict::Failing);
        assert_eq!(r.messages.len(), 6, "{:?}", r.messages);
        assert_eq!(
            r.messages[0],
            "the repository was tampered with (found by job 9): key1: hidden behind a delete marker"
        );
        assert!(r.messages[5].contains("2 more finding(s), see job 9"));
        // More found than the job's result kept: the count says so.
        f.tampering = Some((9, vec!["k: hidden behind a delete marker".into()], 250));
        let r = evaluate(&f, &t());
        assert!(
            r.messages[1].contains("249 more finding(s)"),
            "{:?}",
            r.messages
        );
    }

    fn job(id: i64, superseded: bool) -> JobFacts {
        JobFacts {
            id,
            kind: "logical".into(),
            attempts: 3,
            max_attempts: 3,
            last_error: Some("pg_dump failed".into()),
            superseded,
        }
    }

    #[test]
    fn a_paused_schedule_is_degraded_and_says_how_to_resume() {
        let mut f = facts();
        f.paused.push((
            "nightly".into(),
            "this cluster was restored from backup X".into(),
        ));
        let r = evaluate(&f, &t());
        assert_eq!(r.verdict, Verdict::Degraded);
        assert!(r.messages[0].starts_with("schedule \"nightly\" is paused: this cluster was restored from backup X; resume it with ark.resume_schedules()"), "{:?}", r.messages);
    }

    #[test]
    fn a_catalog_of_another_version_is_degraded_and_says_what_to_run() {
        let mut f = facts();
        f.catalog = crate::version::CatalogMismatch::check("0.1.0", "0.2.0");
        let r = evaluate(&f, &t());
        assert_eq!(r.verdict, Verdict::Degraded);
        assert_eq!(
            r.messages,
            ["extension \"pg_ark\" is at version 0.1.0, its library at 0.2.0: run ALTER EXTENSION pg_ark UPDATE; until then no schedule or job runs (WAL archiving goes on)"]
        );
    }

    #[test]
    fn a_failed_drill_is_failing() {
        let mut f = facts();
        f.failed_drills.push(DrillFacts {
            backup_id: "20261201T000000Z-F-j1".into(),
            job_id: Some(4),
            error: "base/5/16384: content differs from the manifest".into(),
        });
        let r = evaluate(&f, &t());
        assert_eq!(r.verdict, Verdict::Failing);
        assert_eq!(
            r.messages,
            vec!["the restore drill (job 4) of backup 20261201T000000Z-F-j1 failed: base/5/16384: content differs from the manifest"]
        );
    }

    #[test]
    fn nothing_wrong_is_healthy() {
        let r = evaluate(&facts(), &t());
        assert_eq!(r.verdict, Verdict::Healthy);
        assert_eq!(r.messages, vec!["all checks passed"]);
    }

    #[test]
    fn a_permanent_failure_fails_until_superseded() {
        let mut f = facts();
        f.failed.push(job(7, false));
        let r = evaluate(&f, &t());
        assert_eq!(r.verdict, Verdict::Failing);
        assert_eq!(
            r.messages,
            vec!["logical job 7 failed after 3 attempts: pg_dump failed"]
        );
        f.failed[0].superseded = true;
        assert_eq!(evaluate(&f, &t()).verdict, Verdict::Healthy);
    }

    #[test]
    fn retrying_degrades() {
        let mut f = facts();
        let mut j = job(8, false);
        j.attempts = 1;
        f.retrying.push(j);
        let r = evaluate(&f, &t());
        assert_eq!(r.verdict, Verdict::Degraded);
        assert_eq!(
            r.messages,
            vec!["logical job 8 is retrying (attempt 1 of 3 failed: pg_dump failed)"]
        );
    }

    #[test]
    fn backup_age_thresholds() {
        let mut f = facts();
        let now = f.now;
        f.kinds.push(KindFacts {
            kind: "logical".into(),
            last_success: Some(now - 0.5 * DAY),
            scheduled_since: Some(now - 50.0 * DAY),
        });
        assert_eq!(evaluate(&f, &t()).verdict, Verdict::Healthy);
        f.kinds[0].last_success = Some(now - 1.5 * DAY);
        let r = evaluate(&f, &t());
        assert_eq!(r.verdict, Verdict::Degraded);
        assert_eq!(
            r.messages,
            vec!["the last successful logical backup is 36 hours old (limit 24 hours)"]
        );
        f.kinds[0].last_success = Some(now - 3.0 * DAY);
        assert_eq!(evaluate(&f, &t()).verdict, Verdict::Failing);
        // Unscheduled kinds are not judged by age.
        f.kinds[0].scheduled_since = None;
        assert_eq!(evaluate(&f, &t()).verdict, Verdict::Healthy);
    }

    #[test]
    fn a_scheduled_kind_that_never_succeeded() {
        let mut f = facts();
        let now = f.now;
        f.kinds.push(KindFacts {
            kind: "logical".into(),
            last_success: None,
            scheduled_since: Some(now - 3600.0),
        });
        assert_eq!(evaluate(&f, &t()).verdict, Verdict::Healthy);
        f.kinds[0].scheduled_since = Some(now - 1.5 * DAY);
        let r = evaluate(&f, &t());
        assert_eq!(r.verdict, Verdict::Degraded);
        assert_eq!(
            r.messages,
            vec!["no logical backup has succeeded since it was scheduled 36 hours ago"]
        );
    }

    #[test]
    fn archiving() {
        let mut f = facts();
        f.archive = ArchiveFacts {
            enabled: true,
            backlog: 12,
            last_archived: Some(10.0),
            last_failed: Some(20.0),
            last_failure_reason: Some("bucket \"x\" does not exist".into()),
        };
        let r = evaluate(&f, &t());
        assert_eq!(r.verdict, Verdict::Failing);
        assert_eq!(
            r.messages,
            vec!["WAL archiving is failing and 12 files are waiting: bucket \"x\" does not exist"]
        );
        f.archive.backlog = 1;
        assert_eq!(evaluate(&f, &t()).verdict, Verdict::Degraded);
        f.archive.last_archived = Some(30.0);
        assert_eq!(evaluate(&f, &t()).verdict, Verdict::Healthy);
        f.archive.backlog = 10;
        let r = evaluate(&f, &t());
        assert_eq!(r.verdict, Verdict::Degraded);
        assert_eq!(
            r.messages,
            vec!["10 WAL files are waiting to be archived (limit 10)"]
        );
        f.archive.enabled = false;
        assert_eq!(evaluate(&f, &t()).verdict, Verdict::Healthy);
    }

    #[test]
    fn durations_in_plain_words() {
        assert_eq!(plain_duration(1.0), "1 second");
        assert_eq!(plain_duration(90.0), "90 seconds");
        assert_eq!(plain_duration(600.0), "10 minutes");
        assert_eq!(plain_duration(3.0 * 3600.0), "3 hours");
        assert_eq!(plain_duration(3.0 * 86400.0), "3 days");
    }
}
