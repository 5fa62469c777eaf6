use super::*;
use crate::restore::wal_scan::tests::{commit, restore_point, switch, Writer, EPOCH};
use std::collections::HashMap;

/// PostgreSQL's default segment size, which these tests use.
const SEG: u64 = 16 * 1024 * 1024;

fn segment_name(tli: u32, segno: u64) -> String {
    SegmentSize::DEFAULT.name(tli, segno)
}

/// Segment `n` of timeline 1: commits of transactions n*10+k at
/// (n*100+k) s after PostgreSQL's epoch, k = 0..5, a restore point
/// "rp<n>" after the third, then a switch to the next segment.
fn segment(n: u64) -> Vec<u8> {
    let mut w = Writer::new(n);
    for k in 0..5u64 {
        commit(
            &mut w,
            (n * 10 + k) as u32,
            ((n * 100 + k) * 1_000_000) as i64,
            40,
        );
        if k == 2 {
            restore_point(
                &mut w,
                &format!("rp{n}"),
                ((n * 100 + k) * 1_000_000) as i64 + 1,
            );
        }
    }
    switch(&mut w);
    w.seg
}

/// Unix microseconds of commit k of segment n.
fn at(n: u64, k: u64) -> i64 {
    ((n * 100 + k) * 1_000_000) as i64 + EPOCH
}

fn backup(
    id: &str,
    kind: &str,
    parent: Option<&str>,
    chain: &str,
    seg: u64,
    tli: u32,
) -> PhysicalBackupInfo {
    let mut b = PhysicalBackupInfo::for_tests(id, kind, parent, chain, seg as i64);
    b.start_lsn = format_lsn(seg * SEG);
    b.stop_lsn = format_lsn(seg * SEG + SEG / 2);
    b.start_wal = segment_name(tli, seg);
    b.stop_wal = segment_name(tli, seg);
    b.timeline = tli;
    b
}

struct Repo {
    backups: Vec<PhysicalBackupInfo>,
    archive: Archive,
    wal: HashMap<String, Vec<u8>>,
}

impl Repo {
    /// A full at segment 2 and an incremental at segment 4, WAL 2 to 6.
    fn new() -> Repo {
        let mut r = Repo {
            backups: vec![
                backup("F", "full", None, "F", 2, 1),
                backup("I", "incremental", Some("F"), "F", 4, 1),
            ],
            archive: Archive::default(),
            wal: HashMap::new(),
        };
        for n in 2..=6 {
            r.add(1, n, segment(n));
        }
        r
    }

    fn add(&mut self, tli: u32, n: u64, data: Vec<u8>) {
        let name = segment_name(tli, n);
        self.archive.segments.insert(name.clone());
        self.wal.insert(name, data);
    }

    fn remove(&mut self, tli: u32, n: u64) {
        let name = segment_name(tli, n);
        self.archive.segments.remove(&name);
        self.wal.remove(&name);
    }

    fn plan(&self, target: Target) -> Result<Plan, Error> {
        self.plan_req(Request {
            target,
            timeline: TimelineChoice::Latest,
            backup: None,
        })
    }

    fn plan_req(&self, req: Request) -> Result<Plan, Error> {
        let wal = self.wal.clone();
        let mut get =
            move |name: &str| -> Result<Option<Vec<u8>>, Error> { Ok(wal.get(name).cloned()) };
        plan_from(
            &self.backups,
            &self.archive,
            &req,
            "promote",
            &mut get,
            || Ok(false),
        )
    }
}

fn chain(p: &Plan) -> Vec<&str> {
    p.chain.iter().map(|b| b.backup_id.as_str()).collect()
}

fn reason(r: Result<Plan, Error>) -> String {
    match r {
        Ok(p) => panic!("planned {:?}, stopping {}", chain(&p), p.stop),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_latest_state_uses_the_newest_backup_and_all_the_wal() {
    let r = Repo::new();
    let p = r.plan(Target::Latest).unwrap();
    assert_eq!(chain(&p), ["F", "I"]);
    assert_eq!(
        (
            p.first_segment.as_str(),
            p.last_segment.as_str(),
            p.segments
        ),
        ("000000010000000000000004", "000000010000000000000006", 3)
    );
    assert!(p
        .settings
        .contains(&("recovery_target_timeline".to_string(), "'1'".to_string())));
    assert!(p
        .settings
        .contains(&("recovery_target_inclusive".to_string(), "'on'".to_string())));
    // No target: every target setting blank, whatever postgresql.conf says.
    assert_eq!(p.settings.iter().filter(|(_, v)| v == "''").count(), 5);
    assert!(!p
        .settings
        .iter()
        .any(|(k, _)| k == "recovery_target_action"));
    let p = r.plan(Target::Immediate).unwrap();
    assert_eq!(chain(&p), ["F", "I"]);
    assert_eq!(p.last_segment, "000000010000000000000004");
    assert!(p
        .settings
        .contains(&("recovery_target".into(), "'immediate'".into())));
    assert!(p
        .settings
        .contains(&("recovery_target_action".into(), "'promote'".into())));
}

#[test]
fn a_target_time_picks_the_newest_backup_consistent_before_it() {
    let r = Repo::new();
    // Between commits 1 and 2 of segment 5: the incremental, stopping
    // before transaction 52.
    let p = r.plan(Target::Time(at(5, 1) + 500_000)).unwrap();
    assert_eq!(chain(&p), ["F", "I"]);
    assert!(
        p.stop.contains("before the commit of transaction 52"),
        "{}",
        p.stop
    );
    assert_eq!(p.last_segment, "000000010000000000000005");
    assert!(p.settings.contains(&(
        "recovery_target_time".into(),
        format!("'{}'", format_time(at(5, 1) + 500_000))
    )));
    // In segment 3: before the incremental is consistent, so the full.
    let p = r.plan(Target::Time(at(3, 1) + 500_000)).unwrap();
    assert_eq!(chain(&p), ["F"]);
    assert!(p.stop.contains("transaction 32"), "{}", p.stop);
    // Before the full is consistent: too early.
    let e = reason(r.plan(Target::Time(at(2, 0) + 500_000)));
    assert!(e.contains("before the oldest backup"), "{e}");
    assert!(e.contains("\"F\""), "{e}");
    // After the last commit in the archive: beyond it.
    let e = reason(r.plan(Target::Time(at(6, 4) + 1)));
    assert!(e.contains("beyond the last archived WAL"), "{e}");
    assert!(e.contains("000000010000000000000006"), "{e}");
}

#[test]
fn a_transaction_or_a_restore_point_is_found_in_the_wal() {
    let r = Repo::new();
    let p = r.plan(Target::Xid(33)).unwrap();
    assert_eq!(chain(&p), ["F"]);
    assert!(
        p.stop.contains("after the commit of transaction 33"),
        "{}",
        p.stop
    );
    // An xid8 with an epoch: recovery compares the low 32 bits.
    let p = r.plan(Target::Xid((1u64 << 32) + 61)).unwrap();
    assert_eq!(chain(&p), ["F", "I"]);
    assert!(p
        .settings
        .contains(&("recovery_target_xid".into(), "'61'".into())));
    let p = r.plan(Target::Name("rp5".into())).unwrap();
    assert_eq!(chain(&p), ["F", "I"]);
    assert!(p.stop.contains("restore point \"rp5\""), "{}", p.stop);
    let p = r.plan(Target::Name("rp3".into())).unwrap();
    assert_eq!(chain(&p), ["F"]);
    let e = reason(r.plan(Target::Name("nowhere".into())));
    assert!(
        e.contains("restore point \"nowhere\"") && e.contains("beyond"),
        "{e}"
    );
    let e = reason(r.plan(Target::Xid(21)));
    assert!(e.contains("before the oldest backup"), "{e}");
    let e = reason(r.plan(Target::Xid(999)));
    assert!(e.contains("transaction 999") && e.contains("beyond"), "{e}");
}

#[test]
fn an_lsn_target_and_wal_gaps() {
    let mut r = Repo::new();
    let p = r.plan(Target::Lsn(5 * SEG + 10)).unwrap();
    assert_eq!(chain(&p), ["F", "I"]);
    let p = r.plan(Target::Lsn(3 * SEG)).unwrap();
    assert_eq!(chain(&p), ["F"]);
    let e = reason(r.plan(Target::Lsn(2 * SEG + 5)));
    assert!(e.contains("before the oldest backup"), "{e}");
    let e = reason(r.plan(Target::Lsn(9 * SEG)));
    assert!(e.contains("beyond the last archived WAL"), "{e}");
    // A segment lost between the incremental and the target.
    r.remove(1, 5);
    let e = reason(r.plan(Target::Lsn(6 * SEG + 8)));
    assert!(
        e.contains("WAL gap") && e.contains("000000010000000000000005"),
        "{e}"
    );
    let e = reason(r.plan(Target::Latest));
    assert!(
        e.contains("WAL gap") && e.contains("000000010000000000000005"),
        "{e}"
    );
    let e = reason(r.plan(Target::Time(at(6, 2))));
    assert!(e.contains("000000010000000000000005"), "{e}");
    // A target in the switch's padding of segment 4 needs the next
    // record, which is in the missing segment.
    let e = reason(r.plan(Target::Lsn(4 * SEG + SEG / 2 + 8)));
    assert!(e.contains("000000010000000000000005"), "{e}");
    // A gap the incremental needs to become consistent: the full serves
    // targets before it.
    r.remove(1, 4);
    let p = r.plan(Target::Lsn(3 * SEG + 8)).unwrap();
    assert_eq!(chain(&p), ["F"]);
}

#[test]
fn timelines_follow_history_files() {
    let mut r = Repo::new();
    // Timeline 2 branched off 1 in segment 5; segments 5 and 6 of it.
    r.archive.histories.insert(
        2,
        parse_history("1\t0/5000100\tno recovery target specified\n"),
    );
    r.remove(1, 6);
    r.add(2, 5, segment(5));
    r.add(2, 6, segment(6));
    let mut b = backup("F2", "full", None, "F2", 6, 2);
    b.started_epoch = 100;
    r.backups.push(b);
    let p = r.plan(Target::Latest).unwrap();
    assert_eq!((chain(&p), p.timeline), (vec!["F2"], 2));
    // A target on timeline 2 before its own backup: the timeline-1 chain,
    // reading segment 5 from timeline 2.
    let p = r.plan(Target::Lsn(5 * SEG + 200)).unwrap();
    assert_eq!(chain(&p), ["F", "I"]);
    assert_eq!(p.last_segment, "000000020000000000000005");
    assert_eq!(
        p.path.iter().map(|s| s.timeline).collect::<Vec<_>>(),
        [1, 2]
    );
    // Timeline 1 on its own: the 2's backup is not on it.
    let p = r
        .plan_req(Request {
            target: Target::Immediate,
            timeline: TimelineChoice::Id(1),
            backup: None,
        })
        .unwrap();
    assert_eq!(chain(&p), ["F", "I"]);
    let e = reason(r.plan_req(Request {
        target: Target::Latest,
        timeline: TimelineChoice::Id(7),
        backup: None,
    }));
    assert!(e.contains("timeline 7 does not exist"), "{e}");
    // The named backup, complete or not.
    let e = reason(r.plan_req(Request {
        target: Target::Latest,
        timeline: TimelineChoice::Latest,
        backup: Some("nope".into()),
    }));
    assert!(e.contains("\"nope\" is not in the repository"), "{e}");
    let wal = r.wal.clone();
    let mut get =
        move |name: &str| -> Result<Option<Vec<u8>>, Error> { Ok(wal.get(name).cloned()) };
    let req = Request {
        target: Target::Latest,
        timeline: TimelineChoice::Latest,
        backup: Some("half".into()),
    };
    let e = plan_from(&r.backups, &r.archive, &req, "promote", &mut get, || {
        Ok(true)
    })
    .unwrap_err();
    assert!(e.to_string().contains("\"half\" is not complete"), "{e}");
    let p = r
        .plan_req(Request {
            target: Target::Immediate,
            timeline: TimelineChoice::Current,
            backup: Some("F".into()),
        })
        .unwrap();
    assert_eq!((chain(&p), p.timeline), (vec!["F"], 1));
}

#[test]
fn times_parse_with_their_zone_and_print_for_recovery() {
    let t = parse_time("2026-12-01 18:00:00.25+02").unwrap();
    assert_eq!(format_time(t), "2026-12-01 16:00:00.250000+00");
    assert_eq!(parse_time("2026-12-01T16:00:00.25Z").unwrap(), t);
    assert_eq!(parse_time("2026-12-01 16:00:00.25 UTC").unwrap(), t);
    assert_eq!(parse_time("2026-12-01 16:00:00.250000+00:00").unwrap(), t);
    assert!(parse_time("2026-12-01 16:00:00").is_err());
    assert!(parse_time("yesterday").is_err());
}

#[test]
fn the_steps_name_the_backups_the_settings_and_the_command() {
    let r = Repo::new();
    let p = r.plan(Target::Xid(52)).unwrap();
    let rows = steps(
        &p,
        "pg_ark wal-get --repo file:///r %f %p",
        "pg_ark restore --repo file:///r --pgdata DIR --target-xid 52",
    );
    let actions: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        actions,
        [
            "fetch backup",
            "fetch backup",
            "rebuild data directory",
            "set",
            "set",
            "set",
            "set",
            "set",
            "set",
            "set",
            "set",
            "set",
            "replay WAL",
            "restore",
            "start"
        ]
    );
    assert!(rows.iter().any(|r| r.2 == "recovery_target_xid = '52'"));
    assert!(rows.iter().enumerate().all(|(i, r)| r.0 == i as i32 + 1));
}

/// 1 MiB segments across the end of log id 0 (...00000FFF, then
/// ...0000000100000000): planned, named and scanned with their size.
#[test]
fn small_segments_are_planned_across_a_log_id() {
    let mib = SegmentSize::new(1 << 20).unwrap();
    let first = 0xFFE;
    let mut archive = Archive {
        segment_size: mib,
        ..Archive::default()
    };
    let mut wal = HashMap::new();
    for n in first..=first + 3 {
        let mut w = Writer::sized(mib, n);
        commit(&mut w, n as u32, (n * 1_000_000) as i64, 40);
        if n == 0x1000 {
            restore_point(&mut w, "across", (n * 1_000_000) as i64 + 1);
        }
        switch(&mut w);
        let name = mib.name(1, n);
        archive.segments.insert(name.clone());
        wal.insert(name, w.seg);
    }
    let mut b = PhysicalBackupInfo::for_tests("F", "full", None, "F", 1);
    b.start_lsn = format_lsn(mib.start_lsn(first));
    b.stop_lsn = format_lsn(mib.start_lsn(first) + 100);
    b.start_wal = mib.name(1, first);
    b.stop_wal = mib.name(1, first);
    b.wal_segment_size = mib;
    let req = Request {
        target: Target::Name("across".into()),
        timeline: TimelineChoice::Latest,
        backup: None,
    };
    let run = |backups: &[PhysicalBackupInfo],
               archive: &Archive,
               wal: &HashMap<String, Vec<u8>>| {
        let mut get = |name: &str| -> Result<Option<Vec<u8>>, Error> { Ok(wal.get(name).cloned()) };
        plan_from(backups, archive, &req, "promote", &mut get, || Ok(false))
    };
    let p = run(&[b.clone()], &archive, &wal).unwrap();
    assert_eq!(p.first_segment, "000000010000000000000FFE");
    assert_eq!(p.last_segment, "000000010000000100000000");
    assert_eq!(p.segments, 3);
    assert!(
        p.stop.contains("after the restore point \"across\""),
        "{}",
        p.stop
    );
    // A descriptor of another segment size than its entry's is refused.
    let mut b16 = b.clone();
    b16.wal_segment_size = SegmentSize::DEFAULT;
    let e = reason(run(&[b16], &archive, &wal));
    assert!(e.contains("records wal_segment_size 16MB"), "{e}");
    // A gap is named with its 1 MiB name.
    let gone = mib.name(1, 0x1000);
    archive.segments.remove(&gone);
    wal.remove(&gone);
    let e = reason(run(&[b], &archive, &wal));
    assert!(
        e.contains("WAL gap: segment 000000010000000100000000 is not in the repository"),
        "{e}"
    );
}
