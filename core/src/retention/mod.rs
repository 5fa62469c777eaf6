//! Retention: which backups expire. One rule for every kind of backup,
//! applied per series (the schedule, or for ad-hoc runs what the backup
//! contains), so that one series' count never expires another's backups.
use crate::logical::{series_key, LogicalBackupInfo};

pub mod physical;
use std::collections::HashMap;

/// The backups that retention removes, in the order given. Per database, a
/// backup is kept if it is among the newest `keep_last` of its series (see
/// [`series_key`]), or younger than `keep_days` days (by its start, relative
/// to `now_epoch`); the newest backup of each series is always kept, and
/// with neither rule set nothing expires. "Newest" orders by start time,
/// then finish time, then job id, then label.
pub fn select_expired(
    backups: &[LogicalBackupInfo],
    keep_last: Option<u32>,
    keep_days: Option<u32>,
    now_epoch: i64,
) -> Vec<&LogicalBackupInfo> {
    if keep_last.is_none() && keep_days.is_none() {
        return Vec::new();
    }
    let mut by_series: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, b) in backups.iter().enumerate() {
        by_series.entry(series_key(b)).or_default().push(i);
    }
    let mut rank = vec![0usize; backups.len()];
    for indexes in by_series.values_mut() {
        indexes.sort_by(|&a, &b| {
            let (x, y) = (&backups[a], &backups[b]);
            (y.started_epoch, y.finished_epoch, y.job_id, &y.label).cmp(&(
                x.started_epoch,
                x.finished_epoch,
                x.job_id,
                &x.label,
            ))
        });
        for (r, &i) in indexes.iter().enumerate() {
            rank[i] = r;
        }
    }
    backups
        .iter()
        .enumerate()
        .filter(|&(i, b)| {
            let newest = rank[i] == 0;
            let in_last = keep_last.is_some_and(|n| (rank[i] as u64) < u64::from(n));
            let young = keep_days
                .is_some_and(|d| now_epoch.saturating_sub(b.started_epoch) < i64::from(d) * 86_400);
            !(newest || in_last || young)
        })
        .map(|(_, b)| b)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical::*;

    const SYSID: u64 = 7_312_345_678_901_234_567;

    // ----- retention -----

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn backup(db: &str, label: &str, age_secs: i64) -> LogicalBackupInfo {
        LogicalBackupInfo {
            format_version: 1,
            kind: "logical".into(),
            label: label.into(),
            database: db.into(),
            format: DumpFormat::Custom,
            started_at: rfc3339_utc(NOW - age_secs),
            finished_at: rfc3339_utc(NOW - age_secs + 60),
            started_epoch: NOW - age_secs,
            finished_epoch: NOW - age_secs + 60,
            bytes: 1,
            sha256: None,
            files: vec![],
            data_key: String::new(),
            schemas: vec![],
            compression: None,
            server_version: "17".into(),
            pg_dump_version: "17".into(),
            system_identifier: SYSID,
            job_id: None,
            created_by: String::new(),
            series: None,
        }
    }

    #[test]
    fn retention_counts_per_series() {
        // Two schedules' full dumps, and ad-hoc schema-only dumps, of one
        // database: a rule applied to the schema-only ones never touches
        // the others, and each series keeps its own newest.
        let mut all = Vec::new();
        for (i, series) in ["schedule:nightly", "schedule:nightly", "schedule:hourly"]
            .iter()
            .enumerate()
        {
            let mut b = backup("app", &format!("full{i}"), 1000 - i as i64);
            b.series = Some(series.to_string());
            all.push(b);
        }
        for i in 0..3 {
            let mut b = backup("app", &format!("schema{i}"), 500 - i);
            b.schemas = vec!["sales".into()];
            all.push(b);
        }
        assert_eq!(
            labels(&select_expired(&all, Some(1), None, NOW)),
            ["full0", "schema0", "schema1"]
        );
        // Ties on time are broken by job id, not by label text ("j10" < "j9").
        let mut a = backup("db", "x-j9", 100);
        a.job_id = Some(9);
        let mut b = backup("db", "x-j10", 100);
        b.job_id = Some(10);
        assert_eq!(
            labels(&select_expired(&[a, b], Some(1), None, NOW)),
            ["x-j9"]
        );
    }

    fn labels<'a>(v: &[&'a LogicalBackupInfo]) -> Vec<&'a str> {
        v.iter().map(|b| b.label.as_str()).collect()
    }

    #[test]
    fn retention_keeps_the_newest_n_or_the_young() {
        // Given out of order on purpose.
        let all = vec![
            backup("a", "a3", 3 * DAY),
            backup("a", "a1", DAY),
            backup("a", "a30", 30 * DAY),
            backup("a", "a7", 7 * DAY),
            backup("a", "a0", 0),
            backup("a", "a8", 8 * DAY),
        ];
        let exp = |last, days| labels(&select_expired(&all, last, days, NOW));
        assert!(exp(None, None).is_empty(), "no rule: nothing expires");
        assert_eq!(exp(Some(2), None), ["a3", "a30", "a7", "a8"]);
        assert_eq!(exp(Some(0), None), ["a3", "a1", "a30", "a7", "a8"]);
        assert_eq!(exp(Some(1), None), ["a3", "a1", "a30", "a7", "a8"]);
        assert!(exp(Some(6), None).is_empty());
        assert!(exp(Some(100), None).is_empty());
        // Younger than 7 days: ages 0, 1, 3; exactly 7 days is not younger.
        assert_eq!(exp(None, Some(7)), ["a30", "a7", "a8"]);
        assert_eq!(exp(None, Some(0)), ["a3", "a1", "a30", "a7", "a8"]);
        assert!(exp(None, Some(31)).is_empty());
        // Either rule keeps a backup.
        assert_eq!(exp(Some(5), Some(2)), ["a30"]);
        assert_eq!(exp(Some(1), Some(4)), ["a30", "a7", "a8"]);
        assert_eq!(exp(Some(4), Some(1)), ["a30", "a8"]);
    }

    #[test]
    fn retention_never_expires_the_newest_of_a_database() {
        let all = vec![
            backup("a", "a100", 100 * DAY),
            backup("a", "a200", 200 * DAY),
            backup("b", "b365", 365 * DAY),
        ];
        let e = select_expired(&all, None, Some(7), NOW);
        assert_eq!(labels(&e), ["a200"]);
        let e = select_expired(&all, Some(0), Some(0), NOW);
        assert_eq!(labels(&e), ["a200"]);
        assert!(select_expired(&[], Some(0), Some(0), NOW).is_empty());
    }

    #[test]
    fn retention_counts_per_database() {
        let all = vec![
            backup("a", "a1", DAY),
            backup("b", "b1", DAY),
            backup("a", "a2", 2 * DAY),
            backup("b", "b2", 2 * DAY),
            backup("a", "a3", 3 * DAY),
        ];
        assert_eq!(labels(&select_expired(&all, Some(2), None, NOW)), ["a3"]);
        assert_eq!(
            labels(&select_expired(&all, Some(1), None, NOW)),
            ["a2", "b2", "a3"]
        );
    }

    #[test]
    fn retention_breaks_ties_and_keeps_future_dumps() {
        // Same start: the later finish is newer, then the greater label.
        let mut x = backup("a", "x", DAY);
        x.finished_epoch += 10;
        let all = vec![backup("a", "z", DAY), x, backup("a", "y", DAY)];
        assert_eq!(
            labels(&select_expired(&all, Some(1), None, NOW)),
            ["z", "y"]
        );
        assert_eq!(labels(&select_expired(&all, Some(2), None, NOW)), ["y"]);
        // A start in the future (clock skew) is young, never expired by age.
        let all = vec![backup("a", "future", -DAY), backup("a", "old", 9 * DAY)];
        assert_eq!(labels(&select_expired(&all, None, Some(1), NOW)), ["old"]);
        let all = vec![backup("a", "old", 9 * DAY), backup("a", "future", -DAY)];
        assert_eq!(labels(&select_expired(&all, None, Some(1), NOW)), ["old"]);
    }

    /// Every combination of up to 6 backups over 2 databases, ages and
    /// rules, against the rule stated plainly.
    #[test]
    fn retention_matches_its_definition_exhaustively() {
        let ages = [0, DAY / 2, DAY, 2 * DAY, 5 * DAY, 40 * DAY];
        let lasts = [None, Some(0), Some(1), Some(2), Some(3), Some(7)];
        let days = [None, Some(0), Some(1), Some(2), Some(6), Some(100)];
        let mut cases = 0;
        for n in 0..=6usize {
            // Each backup goes to database a or b: every assignment.
            for mask in 0..(1u32 << n) {
                let all: Vec<LogicalBackupInfo> = (0..n)
                    .map(|i| {
                        let db = if mask & (1 << i) != 0 { "b" } else { "a" };
                        backup(
                            db,
                            &format!("{db}{i}"),
                            ages[(i * 7 + mask as usize) % ages.len()],
                        )
                    })
                    .collect();
                for &last in &lasts {
                    for &d in &days {
                        cases += 1;
                        let expired = select_expired(&all, last, d, NOW);
                        let expected: Vec<&LogicalBackupInfo> = all
                            .iter()
                            .filter(|b| {
                                let newer = all
                                    .iter()
                                    .filter(|o| {
                                        o.database == b.database
                                            && (o.started_epoch, o.finished_epoch, &o.label)
                                                > (b.started_epoch, b.finished_epoch, &b.label)
                                    })
                                    .count() as u64;
                                let keep = (last.is_none() && d.is_none())
                                    || newer == 0
                                    || last.is_some_and(|l| newer < u64::from(l))
                                    || d.is_some_and(|d| {
                                        NOW - b.started_epoch < i64::from(d) * DAY
                                    });
                                !keep
                            })
                            .collect();
                        assert_eq!(
                            labels(&expired),
                            labels(&expected),
                            "n={n} mask={mask} last={last:?} days={d:?}"
                        );
                        // Invariants: each database keeps at least one.
                        for db in ["a", "b"] {
                            let total = all.iter().filter(|b| b.database == db).count();
                            let gone = expired.iter().filter(|b| b.database == db).count();
                            assert!(total == 0 || gone < total);
                        }
                    }
                }
            }
        }
        assert!(cases > 4000, "{cases}");
    }
}
