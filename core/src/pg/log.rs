//! The server log's words pg_ark waits for and reports: where recovery
//! ended, that the server is up, and what made it fail. One list, used by
//! the drill's scratch server and by `pg_ark restore --start`.
//!
//! The messages are PostgreSQL's LOG lines (`xlogrecovery.c`, `xlog.c`,
//! `postmaster.c`), in English (the drill sets `lc_messages = C`).
//! PostgreSQL 15 to 18 print the same words (checked against the message
//! strings of 15.20, 17.11 and 18.6); only the words matched here are
//! relied on, never an LSN's format (which PostgreSQL 19 pads: `%X/%08X`).
//!
//! A recovery to a target prints, in this order:
//!
//! ```text
//! LOG:  consistent recovery state reached at 0/2000120
//! LOG:  recovery stopping before commit of transaction 757, time 2026-...
//! LOG:  redo done at 0/30303B0 system usage: CPU: user: 0.00 s, ...
//! LOG:  last completed transaction was at log time 2026-...
//! LOG:  selected new timeline ID: 2
//! LOG:  archive recovery complete
//! LOG:  database system is ready to accept connections
//! ```
//!
//! `recovery_target_action = pause` prints "pausing at the end of recovery"
//! instead of the last three, `shutdown` "shutdown at recovery target" and
//! then "database system is shut down". Without a target (to the end of the
//! archive) there is no "recovery stopping" line: "redo done" says where
//! replay ended.

/// Consistency was reached: from here the cluster could be opened.
pub const CONSISTENT: &str = "consistent recovery state reached";
/// Recovery stopped at its target: "recovery stopping before commit of
/// transaction ...", "... after reaching consistency", "... at restore
/// point ...", "... before WAL location (LSN) ...".
pub const TARGET_REACHED: &str = "recovery stopping ";
/// Replay ended (at the target, or at the end of the archive).
pub const REDO_DONE: &str = "redo done at ";
/// The last transaction replayed.
pub const LAST_TRANSACTION: &str = "last completed transaction was at log time ";
/// Promotion: the new timeline.
pub const NEW_TIMELINE: &str = "selected new timeline ID: ";
/// Promotion: archive recovery is over.
pub const ARCHIVE_RECOVERY_COMPLETE: &str = "archive recovery complete";
/// Out of recovery and open (not "... read-only connections", which a hot
/// standby prints while it still replays).
pub const READY: &str = "database system is ready to accept connections";
/// `recovery_target_action = pause`: paused at the target.
pub const PAUSED_AT_END: &str = "pausing at the end of recovery";
/// `recovery_target_action = shutdown`: stopped at the target.
pub const SHUT_DOWN: &str = "database system is shut down";

/// The lines that say where recovery ended, in the order PostgreSQL prints
/// them.
pub const RECOVERY_END: [&str; 6] = [
    CONSISTENT,
    TARGET_REACHED,
    REDO_DONE,
    LAST_TRANSACTION,
    NEW_TIMELINE,
    ARCHIVE_RECOVERY_COMPLETE,
];

/// FATAL lines a starting server's log holds without anything being wrong:
/// connection attempts (pg_ctl's, a client's) while it still recovers.
const STARTING_UP: [&str; 2] = [
    "the database system is starting up",
    "not yet accepting connections",
];

/// What the server does once recovery reaches its target
/// (`recovery_target_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndAction {
    Promote,
    Pause,
    Shutdown,
}

impl EndAction {
    /// `pause` or `shutdown`; anything else promotes (pg_ark writes
    /// `promote` when asked for no action).
    pub fn parse(action: &str) -> EndAction {
        match action {
            "pause" => EndAction::Pause,
            "shutdown" => EndAction::Shutdown,
            _ => EndAction::Promote,
        }
    }

    /// The line that says the server got there.
    pub fn line(self) -> &'static str {
        match self {
            EndAction::Promote => READY,
            EndAction::Pause => PAUSED_AT_END,
            EndAction::Shutdown => SHUT_DOWN,
        }
    }
}

/// Whether the server is out of recovery and accepts connections.
pub fn ready(log: &str) -> bool {
    log.contains(READY)
}

/// Whether recovery has ended as `action` says it does.
pub fn recovery_ended(log: &str, action: EndAction) -> bool {
    log.contains(action.line())
}

/// The lines of `log` that say where recovery ended ([`RECOVERY_END`]),
/// trimmed, in the log's order.
pub fn recovery_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| RECOVERY_END.iter().any(|m| l.contains(m)))
        .map(str::trim)
        .collect()
}

/// The line of `lines` ([`recovery_lines`]) that proves recovery reached
/// its end: "recovery stopping" for a target, "redo done" for a recovery
/// to the end of the archive (`to_the_end`).
pub fn stop_line<S: AsRef<str>>(lines: &[S], to_the_end: bool) -> Option<&S> {
    let marker = if to_the_end {
        REDO_DONE
    } else {
        TARGET_REACHED
    };
    lines.iter().find(|l| l.as_ref().contains(marker))
}

/// The first FATAL or PANIC line of a starting server's log, but those
/// of connection attempts while it recovers.
pub fn startup_failure(log: &str) -> Option<&str> {
    log.lines().find(|l| {
        (l.contains("FATAL:") || l.contains("PANIC:")) && !STARTING_UP.iter().any(|s| l.contains(s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recovery to a transaction's commit time, promoted, as PostgreSQL
    /// 15.20, 17.11 and 18.6 print it (their message strings are the same;
    /// the prefix is the default `%m [%p] `).
    const TO_A_TIME: &str = "\
2026-12-05 11:12:21.000 UTC [100] LOG:  starting PostgreSQL 17.11 on x86_64-pc-linux-gnu
2026-12-05 11:12:21.001 UTC [100] LOG:  listening on Unix socket \"/tmp/s/.s.PGSQL.5433\"
2026-12-05 11:12:21.010 UTC [103] LOG:  database system was interrupted; last known up at 2026-12-05 11:10:00 UTC
2026-12-05 11:12:21.020 UTC [103] LOG:  starting point-in-time recovery to 2026-12-05 11:11:00+00
2026-12-05 11:12:21.030 UTC [103] LOG:  starting backup recovery with redo LSN 0/2000028, checkpoint LSN 0/2000080, on timeline ID 1
2026-12-05 11:12:21.040 UTC [103] LOG:  restored log file \"000000010000000000000002\" from archive
2026-12-05 11:12:21.050 UTC [103] LOG:  redo starts at 0/2000028
2026-12-05 11:12:21.060 UTC [103] LOG:  completed backup recovery with redo LSN 0/2000028 and end LSN 0/2000120
2026-12-05 11:12:21.061 UTC [103] LOG:  consistent recovery state reached at 0/2000120
2026-12-05 11:12:21.062 UTC [100] LOG:  database system is ready to accept read-only connections
2026-12-05 11:12:21.070 UTC [103] LOG:  recovery stopping before commit of transaction 757, time 2026-12-05 11:11:02.774492+00
2026-12-05 11:12:21.071 UTC [103] LOG:  redo done at 0/30303B0 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.03 s
2026-12-05 11:12:21.072 UTC [103] LOG:  last completed transaction was at log time 2026-12-05 11:10:59.109084+00
2026-12-05 11:12:21.080 UTC [103] LOG:  selected new timeline ID: 2
2026-12-05 11:12:21.090 UTC [103] LOG:  archive recovery complete
2026-12-05 11:12:21.100 UTC [101] LOG:  checkpoint starting: end-of-recovery immediate wait
2026-12-05 11:12:21.200 UTC [100] LOG:  database system is ready to accept connections
";

    /// `recovery_target = immediate`.
    const IMMEDIATE: &str = "\
LOG:  consistent recovery state reached at 0/2000120
LOG:  recovery stopping after reaching consistency
LOG:  redo done at 0/2000120 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.01 s
LOG:  selected new timeline ID: 2
LOG:  archive recovery complete
LOG:  database system is ready to accept connections
";

    /// To the end of the archive: no target line.
    const TO_THE_END: &str = "\
LOG:  consistent recovery state reached at 0/2000120
LOG:  restored log file \"000000010000000000000003\" from archive
cp: cannot stat '/archive/000000010000000000000004': No such file or directory
LOG:  redo done at 0/3000148 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.05 s
LOG:  last completed transaction was at log time 2026-12-05 11:10:59.109084+00
LOG:  selected new timeline ID: 2
LOG:  archive recovery complete
LOG:  database system is ready to accept connections
";

    /// `recovery_target_action = pause`, a restore point, a hot standby.
    const PAUSED: &str = "\
LOG:  consistent recovery state reached at 0/2000120
LOG:  database system is ready to accept read-only connections
LOG:  recovery stopping at restore point \"before-upgrade\", time 2026-12-05 11:11:00.000000+00
LOG:  pausing at the end of recovery
HINT:  Execute pg_wal_replay_resume() to promote.
";

    /// `recovery_target_action = shutdown`, an LSN target.
    const SHUTDOWN: &str = "\
LOG:  consistent recovery state reached at 0/2000120
LOG:  recovery stopping after WAL location (LSN) \"0/3000060\"
LOG:  shutdown at recovery target
LOG:  database system is shut down
";

    #[test]
    fn the_lines_that_say_where_recovery_ended_are_picked_in_order() {
        assert_eq!(
            recovery_lines(TO_A_TIME),
            [
                "2026-12-05 11:12:21.061 UTC [103] LOG:  consistent recovery state reached at 0/2000120",
                "2026-12-05 11:12:21.070 UTC [103] LOG:  recovery stopping before commit of transaction 757, time 2026-12-05 11:11:02.774492+00",
                "2026-12-05 11:12:21.071 UTC [103] LOG:  redo done at 0/30303B0 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.03 s",
                "2026-12-05 11:12:21.072 UTC [103] LOG:  last completed transaction was at log time 2026-12-05 11:10:59.109084+00",
                "2026-12-05 11:12:21.080 UTC [103] LOG:  selected new timeline ID: 2",
                "2026-12-05 11:12:21.090 UTC [103] LOG:  archive recovery complete",
            ]
        );
        assert_eq!(recovery_lines(IMMEDIATE).len(), 5);
        assert_eq!(recovery_lines(TO_THE_END).len(), 5);
        assert!(recovery_lines("LOG:  redo starts at 0/2000028\n").is_empty());
    }

    #[test]
    fn a_target_is_proven_by_recovery_stopping_the_end_by_redo_done() {
        let lines = recovery_lines(TO_A_TIME);
        assert!(stop_line(&lines, false)
            .is_some_and(|l| l.contains("recovery stopping before commit of transaction 757")));
        let lines = recovery_lines(IMMEDIATE);
        assert!(stop_line(&lines, false)
            .is_some_and(|l| l.ends_with("recovery stopping after reaching consistency")));
        let lines = recovery_lines(TO_THE_END);
        assert_eq!(stop_line(&lines, false), None);
        assert!(stop_line(&lines, true).is_some_and(|l| l.contains("redo done at 0/3000148")));
        // Owned lines (the drill keeps them) work the same.
        let owned: Vec<String> = recovery_lines(PAUSED)
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert!(stop_line(&owned, false).is_some_and(|l| l.contains("restore point")));
    }

    #[test]
    fn the_end_is_the_line_of_the_target_action() {
        for (log, action) in [
            (TO_A_TIME, EndAction::Promote),
            (IMMEDIATE, EndAction::Promote),
            (TO_THE_END, EndAction::Promote),
            (PAUSED, EndAction::Pause),
            (SHUTDOWN, EndAction::Shutdown),
        ] {
            assert!(recovery_ended(log, action), "{action:?}: {log}");
        }
        // A hot standby accepting read-only connections is not out of
        // recovery; nor is a paused one promoted.
        assert!(!ready(PAUSED));
        assert!(!recovery_ended(PAUSED, EndAction::Promote));
        assert!(!recovery_ended(SHUTDOWN, EndAction::Promote));
        assert!(ready(TO_A_TIME));
        assert_eq!(EndAction::parse("pause"), EndAction::Pause);
        assert_eq!(EndAction::parse("shutdown"), EndAction::Shutdown);
        assert_eq!(EndAction::parse("promote"), EndAction::Promote);
    }

    #[test]
    fn only_real_failures_fail_a_start() {
        assert_eq!(startup_failure(TO_A_TIME), None);
        let waiting = "LOG:  redo starts at 0/2000028\n\
            FATAL:  the database system is starting up\n\
            FATAL:  the database system is not yet accepting connections\n\
            DETAIL:  Consistent recovery state has not been yet reached.\n";
        assert_eq!(startup_failure(waiting), None);
        let short = format!(
            "{waiting}FATAL:  recovery ended before configured recovery target was reached\n\
             LOG:  startup process (PID 103) exited with exit code 1\n"
        );
        assert_eq!(
            startup_failure(&short),
            Some("FATAL:  recovery ended before configured recovery target was reached")
        );
        assert_eq!(
            startup_failure("PANIC:  could not locate a valid checkpoint record\n"),
            Some("PANIC:  could not locate a valid checkpoint record")
        );
    }
}
