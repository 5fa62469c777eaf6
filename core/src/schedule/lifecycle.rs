//! The job lifecycle: the states of a job, which of them are runnable,
//! active or final, how a failure is classed, and what follows a failed
//! attempt. The extension's catalog (`src/catalog/jobs.rs`) applies these
//! decisions to rows of `ark.jobs`; every state name it writes or tests
//! comes from [`JobState`], and its CHECK constraint lists
//! [`JobState::ALL`] (a test in the extension compares them).
//!
//! ```text
//! queued ──claim──> running ──finish──> succeeded
//!    │                 │  └──transient failure──> retrying ──claim──> running
//!    │                 │  └──permanent failure, or out of attempts──> failed
//!    │                 │  └──interrupted (SIGTERM)──> retrying (attempt not counted)
//!    └──cancel──> cancelled <──cancel (flag, the worker stops it)──┘
//! failed, cancelled ──retry──> queued;  retrying ──retry──> runs now
//! running, worker gone ──orphan recovery──> retrying or failed
//! ```
//!
//! **Failures** are permanent or transient ([`FailureClass`]). Only a
//! transient one is retried: the network or an S3 server's 5xx, a timeout,
//! a conflict with another writer or another transaction, the server
//! shutting down. Anything else (a database that does not exist, a bad
//! option, a backup that fails its drill) ends the job at once with its
//! reason: trying again would fail the same way, later.
//!
//! **Backoff** ([`Backoff`]) is one policy for jobs and webhook
//! notifications: attempt `n` (1-based) that fails is retried after
//! `base × 2^(n-1)` seconds, capped at `cap`.
use std::fmt;

/// The state of a job (`ark.jobs.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    /// Every state, in the order of the catalog's CHECK constraint.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Failed,
        JobState::Succeeded,
        JobState::Cancelled,
    ];
    /// A job in one of these runs once its `next_attempt_at` has come.
    pub const RUNNABLE: [JobState; 2] = [JobState::Queued, JobState::Retrying];
    /// Not ended yet: runnable or running. Only these can be cancelled.
    pub const ACTIVE: [JobState; 3] = [JobState::Queued, JobState::Retrying, JobState::Running];
    /// Ended: a job in one of these never changes again by itself.
    pub const FINAL: [JobState; 3] = [JobState::Failed, JobState::Succeeded, JobState::Cancelled];
    /// What `ark.retry()` acts on: ended without success, or waiting for
    /// its next attempt.
    pub const RETRYABLE: [JobState; 3] =
        [JobState::Failed, JobState::Cancelled, JobState::Retrying];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn is_runnable(self) -> bool {
        JobState::RUNNABLE.contains(&self)
    }

    pub fn is_final(self) -> bool {
        JobState::FINAL.contains(&self)
    }

    /// The names of `states`, for a `text[]` query parameter
    /// (`state = ANY($n)`).
    pub fn names(states: &[JobState]) -> Vec<String> {
        states.iter().map(|s| s.as_str().to_string()).collect()
    }
}

/// SQL text of the job states and of the sets [`JobState`] defines, for
/// the extension's statements: `concat!("… WHERE state IN ",
/// job_sql!(runnable))` keeps a statement constant text (no `format!`), and
/// the catalog's partial indexes, whose predicates a query must repeat to
/// use them, keep matching. Unit tests hold every arm to [`JobState`], and
/// the catalog's CHECK constraint and indexes to the same lists.
///
/// `job_sql!(due)` (or `job_sql!(due j)`, with the table's alias) is the
/// runnable test: a runnable state and `next_attempt_at` come.
#[macro_export]
macro_rules! job_sql {
    (queued) => {
        "'queued'"
    };
    (running) => {
        "'running'"
    };
    (retrying) => {
        "'retrying'"
    };
    (succeeded) => {
        "'succeeded'"
    };
    (failed) => {
        "'failed'"
    };
    (cancelled) => {
        "'cancelled'"
    };
    (all) => {
        "('queued', 'running', 'retrying', 'failed', 'succeeded', 'cancelled')"
    };
    (runnable) => {
        "('queued', 'retrying')"
    };
    (active) => {
        "('queued', 'retrying', 'running')"
    };
    (finished) => {
        "('failed', 'succeeded', 'cancelled')"
    };
    (retryable) => {
        "('failed', 'cancelled', 'retrying')"
    };
    (due) => {
        "state IN ('queued', 'retrying') AND next_attempt_at <= now()"
    };
    (due $a:ident) => {
        concat!(
            stringify!($a),
            ".state IN ('queued', 'retrying') AND ",
            stringify!($a),
            ".next_attempt_at <= now()"
        )
    };
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether trying again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Trying again fails the same way: the job ends at once.
    Permanent,
    /// The network, a server's 5xx, a timeout, a conflict, a shutdown:
    /// retried with backoff while attempts remain.
    Transient,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Permanent => "permanent",
            FailureClass::Transient => "transient",
        }
    }
}

/// Why an attempt of a job failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub class: FailureClass,
    pub message: String,
}

impl JobFailure {
    pub fn permanent(message: impl Into<String>) -> JobFailure {
        JobFailure {
            class: FailureClass::Permanent,
            message: message.into(),
        }
    }

    pub fn transient(message: impl Into<String>) -> JobFailure {
        JobFailure {
            class: FailureClass::Transient,
            message: message.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class == FailureClass::Transient
    }

    /// The same class, with `context` before the message.
    pub fn context(self, context: &str) -> JobFailure {
        JobFailure {
            class: self.class,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for JobFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::Error> for JobFailure {
    fn from(e: crate::Error) -> JobFailure {
        JobFailure::from(&e)
    }
}

impl From<&crate::Error> for JobFailure {
    fn from(e: &crate::Error) -> JobFailure {
        JobFailure {
            class: if e.is_transient() {
                FailureClass::Transient
            } else {
                FailureClass::Permanent
            },
            message: e.to_string(),
        }
    }
}

impl From<crate::storage::StorageError> for JobFailure {
    fn from(e: crate::storage::StorageError) -> JobFailure {
        JobFailure::from(crate::Error::Storage(e))
    }
}

/// Whether a PostgreSQL error of SQLSTATE `code` may go away by itself:
/// serialization failures and deadlocks (class 40), connection failures
/// (class 08), insufficient resources (class 53: memory, disk, too many
/// connections, a configured limit), a lock not available (55P03), a
/// statement cancelled by a timeout (57014), the server shutting down,
/// crashing or starting (57P01 to 57P03).
pub fn sqlstate_is_transient(code: &str) -> bool {
    code.starts_with("40")
        || code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "55P03" | "57014" | "57P01" | "57P02" | "57P03")
}

/// Whether a message of a PostgreSQL client program (pg_dump, psql:
/// libpq's words, the server's words) names a cause that may go away by
/// itself, as [`sqlstate_is_transient`] does for SQLSTATEs: the connection
/// lost or refused, the server shutting down or starting, too many
/// connections, a lock or statement timeout, a deadlock or serialization
/// failure, and an object dropped while pg_dump read the catalog (an ERROR
/// such as `relation "t" does not exist`, or `cache lookup failed`). A
/// connection refused for good (`FATAL:  database "x" does not exist`, a
/// role that does not exist, authentication, pg_hba.conf, permission
/// denied) and anything unknown are permanent.
pub fn client_message_is_transient(text: &str) -> bool {
    const TRANSIENT: &[&str] = &[
        "could not connect to server",
        "Connection refused",
        "server closed the connection unexpectedly",
        "could not receive data from server",
        "could not send data to server",
        "no connection to the server",
        "SSL SYSCALL error",
        "the database system is shutting down",
        "the database system is starting up",
        "the database system is in recovery mode",
        "the database system is not yet accepting connections",
        "terminating connection due to administrator command",
        "terminating connection because of crash of another server process",
        "sorry, too many clients already",
        "too many connections for",
        "remaining connection slots are reserved",
        "canceling statement due to lock timeout",
        "canceling statement due to statement timeout",
        "could not obtain lock",
        "deadlock detected",
        "could not serialize access",
        "cache lookup failed",
        "could not open relation with OID",
        "out of memory",
    ];
    const PERMANENT: &[&str] = &[
        "permission denied",
        "password authentication failed",
        "no pg_hba.conf entry",
        "authentication failed",
    ];
    // libpq says "connection to server ... failed: FATAL:  database "x"
    // does not exist": a connection refused for good.
    let refused_for_good = text.contains("FATAL:") && text.contains("does not exist");
    if refused_for_good || PERMANENT.iter().any(|p| text.contains(p)) {
        return false;
    }
    // An ERROR naming a missing object while pg_dump reads: dropped
    // meanwhile (the catalog snapshot is older than the lock).
    let dropped_meanwhile = text.contains("ERROR:") && text.contains("does not exist");
    dropped_meanwhile || TRANSIENT.iter().any(|t| text.contains(t))
}

/// The retry delays of one kind of work: jobs (`ark.job_retry_base`,
/// `ark.job_retry_cap`, or the job's options) and webhook notifications.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Seconds after the first failed attempt.
    pub base: f64,
    /// The longest delay, in seconds.
    pub cap: f64,
}

impl Backoff {
    /// Webhook notifications: 5 s, doubling, at most 10 minutes.
    pub const NOTIFICATIONS: Backoff = Backoff {
        base: 5.0,
        cap: 600.0,
    };

    /// A policy with `cap` raised to `base` when it is below it.
    pub fn new(base: f64, cap: f64) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
        }
    }

    /// Seconds to wait after failed attempt `attempt` (1-based):
    /// `base × 2^(attempt-1)`, capped at `cap`.
    pub fn delay(&self, attempt: i32) -> f64 {
        let exp = (attempt.max(1) - 1).min(62);
        (self.base * 2f64.powi(exp)).min(self.cap).max(0.0)
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterFailure {
    /// A cancel was asked for while the attempt ran: it wins.
    Cancel,
    /// Retry after `delay` seconds.
    Retry { delay: f64 },
    /// Fail for good.
    Fail { why: GaveUp },
}

/// Why a job failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The failure is permanent: no further attempt was made.
    Permanent,
    /// Every attempt failed.
    OutOfAttempts,
}

/// The decision after attempt `attempts` (1-based) of `max_attempts` failed
/// with `class`.
pub fn after_failure(
    class: FailureClass,
    attempts: i32,
    max_attempts: i32,
    cancel_requested: bool,
    backoff: Backoff,
) -> AfterFailure {
    if cancel_requested {
        AfterFailure::Cancel
    } else if class == FailureClass::Permanent {
        AfterFailure::Fail {
            why: GaveUp::Permanent,
        }
    } else if attempts >= max_attempts {
        AfterFailure::Fail {
            why: GaveUp::OutOfAttempts,
        }
    } else {
        AfterFailure::Retry {
            delay: backoff.delay(attempts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_and_group() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("Queued"), None);
        // Every state is either active or final, never both.
        for s in JobState::ALL {
            assert_ne!(JobState::ACTIVE.contains(&s), s.is_final(), "{s}");
        }
        assert!(JobState::RUNNABLE
            .iter()
            .all(|s| JobState::ACTIVE.contains(s)));
        assert!(!JobState::Running.is_runnable());
        assert_eq!(
            JobState::names(&JobState::RUNNABLE),
            vec!["queued".to_string(), "retrying".to_string()]
        );
    }

    /// `('a', 'b')` as names.
    fn sql_list(text: &str) -> Vec<String> {
        let inner = text.trim().trim_start_matches('(').trim_end_matches(')');
        inner
            .split(',')
            .map(|x| x.trim().trim_matches('\'').to_string())
            .collect()
    }

    #[test]
    fn the_sql_of_states_is_the_states() {
        for (sql, state) in [
            (job_sql!(queued), JobState::Queued),
            (job_sql!(running), JobState::Running),
            (job_sql!(retrying), JobState::Retrying),
            (job_sql!(succeeded), JobState::Succeeded),
            (job_sql!(failed), JobState::Failed),
            (job_sql!(cancelled), JobState::Cancelled),
        ] {
            assert_eq!(sql, format!("'{state}'"));
        }
        for (sql, set) in [
            (job_sql!(all), &JobState::ALL[..]),
            (job_sql!(runnable), &JobState::RUNNABLE[..]),
            (job_sql!(active), &JobState::ACTIVE[..]),
            (job_sql!(finished), &JobState::FINAL[..]),
            (job_sql!(retryable), &JobState::RETRYABLE[..]),
        ] {
            assert_eq!(sql_list(sql), JobState::names(set), "{sql}");
        }
        assert_eq!(
            job_sql!(due j),
            format!("j.{}", job_sql!(due).replace(" AND ", " AND j."))
        );
        assert!(job_sql!(due).starts_with(concat!("state IN ", job_sql!(runnable))));
    }

    /// The extension's catalog: the CHECK constraint of `ark.jobs.state`
    /// lists every state, and the partial indexes use the same sets as the
    /// statements (a query uses a partial index only when it repeats its
    /// predicate).
    #[test]
    fn the_catalog_constrains_and_indexes_the_same_states() {
        let catalog = include_str!("../../../src/catalog/catalog.sql");
        let check = format!("CHECK (state IN {})", job_sql!(all));
        assert!(catalog.contains(&check), "catalog.sql lacks {check}");
        for (index, predicate) in [
            (
                "jobs_runnable",
                concat!("WHERE state IN ", job_sql!(runnable), ";"),
            ),
            (
                "jobs_running",
                concat!("WHERE state = ", job_sql!(running), ";"),
            ),
            (
                "jobs_finished",
                concat!("WHERE state IN ", job_sql!(finished), ";"),
            ),
        ] {
            let at = catalog
                .find(&format!("CREATE INDEX {index} "))
                .unwrap_or_else(|| panic!("catalog.sql has no index {index}"));
            let def = &catalog[at..];
            let def = &def[..def.find(';').map_or(def.len(), |e| e + 1)];
            assert!(def.contains(predicate), "{index}: {def}");
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::new(1.0, 20.0);
        let d: Vec<f64> = (1..=7).map(|a| b.delay(a)).collect();
        assert_eq!(d, [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]);
        assert_eq!(Backoff::new(60.0, 3600.0).delay(1000), 3600.0);
        assert_eq!(Backoff::new(5.0, 100.0).delay(0), 5.0);
        // A cap below the base is the base.
        assert_eq!(Backoff::new(30.0, 10.0).delay(3), 30.0);
        // Notifications: what the catalog computed before, 5 × 2^(n-1) ≤ 600.
        let n: Vec<f64> = (1..=9).map(|a| Backoff::NOTIFICATIONS.delay(a)).collect();
        assert_eq!(n, [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 600.0, 600.0]);
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let b = Backoff::new(1.0, 4.0);
        use FailureClass::*;
        assert_eq!(
            after_failure(Permanent, 1, 5, false, b),
            AfterFailure::Fail {
                why: GaveUp::Permanent
            }
        );
        assert_eq!(
            after_failure(Transient, 1, 5, false, b),
            AfterFailure::Retry { delay: 1.0 }
        );
        assert_eq!(
            after_failure(Transient, 3, 5, false, b),
            AfterFailure::Retry { delay: 4.0 }
        );
        assert_eq!(
            after_failure(Transient, 5, 5, false, b),
            AfterFailure::Fail {
                why: GaveUp::OutOfAttempts
            }
        );
        // A cancel asked for during the attempt wins over everything.
        assert_eq!(
            after_failure(Transient, 1, 5, true, b),
            AfterFailure::Cancel
        );
        assert_eq!(
            after_failure(Permanent, 5, 5, true, b),
            AfterFailure::Cancel
        );
    }

    #[test]
    fn sqlstates_and_client_messages_are_classed() {
        for code in [
            "40001", "40P01", "55P03", "57014", "57P01", "57P03", "53300", "08006",
        ] {
            assert!(sqlstate_is_transient(code), "{code}");
        }
        for code in ["3D000", "42501", "42P01", "XX001", "22023", "55000"] {
            assert!(!sqlstate_is_transient(code), "{code}");
        }
        // pg_dump's words (libpq 15 to 18).
        assert!(!client_message_is_transient(
            "pg_dump: error: connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: FATAL:  database \"no_such_db\" does not exist"
        ));
        assert!(!client_message_is_transient(
            "pg_dump: error: query failed: ERROR:  permission denied for table t"
        ));
        assert!(client_message_is_transient(
            "pg_dump: error: connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: FATAL:  the database system is shutting down"
        ));
        assert!(client_message_is_transient(
            "pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout"
        ));
        assert!(client_message_is_transient(
            "pg_dump: error: connection to server at \"127.0.0.1\", port 5 failed: Connection refused"
        ));
        assert!(!client_message_is_transient(
            "pg_dump: error: aborting because of server version mismatch"
        ));
        assert!(!client_message_is_transient(
            "pg_dump: error: connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: FATAL:  role \"nobody\" does not exist"
        ));
        // A table dropped between pg_dump's catalog read and its lock.
        assert!(client_message_is_transient(
            "pg_dump: error: query failed: ERROR:  relation \"public.t\" does not exist\npg_dump: detail: Query was: LOCK TABLE public.t IN ACCESS SHARE MODE"
        ));
        // postinit.c: ERRCODE_TOO_MANY_CONNECTIONS.
        assert!(client_message_is_transient(
            "pg_dump: error: connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: FATAL:  too many connections for role \"backup\""
        ));
        assert!(client_message_is_transient(
            "pg_dump: error: Dumping the contents of table \"t\" failed: PQgetResult() failed.\npg_dump: detail: Error message from server: server closed the connection unexpectedly"
        ));
    }

    #[test]
    fn core_errors_carry_their_class() {
        let unavailable = crate::Error::Storage(crate::storage::StorageError::Unavailable {
            location: "s3://b/p".into(),
            message: "cannot reach http://127.0.0.1:1".into(),
        });
        assert_eq!(
            JobFailure::from(&unavailable).class,
            FailureClass::Transient
        );
        let missing = crate::Error::DumpFailed {
            database: "x".into(),
            detail: "FATAL:  database \"x\" does not exist".into(),
        };
        assert_eq!(JobFailure::from(&missing).class, FailureClass::Permanent);
        let shutdown = crate::Error::DumpFailed {
            database: "x".into(),
            detail: "FATAL:  the database system is shutting down".into(),
        };
        assert_eq!(JobFailure::from(&shutdown).class, FailureClass::Transient);
        let f = JobFailure::transient("timed out").context("could not store");
        assert_eq!(
            (f.class, f.message.as_str()),
            (FailureClass::Transient, "could not store: timed out")
        );
    }
}
