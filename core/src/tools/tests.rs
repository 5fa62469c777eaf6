use super::*;
use serde_json::json;
use std::path::Path;

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[test]
fn pgbackrest_commands_are_argument_vectors_of_checked_options() {
    let o = map(json!({"stanza": "main", "type": "full", "repo": 2,
                       "options": {"start-fast": true, "delta": false, "process-max": 2,
                                   "compress-type": "lz4"}}));
    assert_eq!(
        pgbackrest::backup_args(&o, Some(Path::new("/etc/pgbackrest/x.conf"))),
        [
            "--config=/etc/pgbackrest/x.conf",
            "--log-level-console=off",
            "--log-level-stderr=warn",
            "--stanza=main",
            "--repo=2",
            "--type=full",
            "--compress-type=lz4",
            "--no-delta",
            "--process-max=2",
            "--start-fast",
            "--no-archive-check",
            "backup"
        ]
    );
    // pgBackRest's own default type.
    let o = map(json!({"stanza": "main"}));
    assert!(pgbackrest::backup_args(&o, None).contains(&"--type=incr".to_string()));
    assert_eq!(
        pgbackrest::archive_push_args(
            "main",
            Path::new("/pg/pg_wal/000000010000000000000003"),
            None
        ),
        [
            "--log-level-console=off",
            "--log-level-stderr=warn",
            "--stanza=main",
            "archive-push",
            "/pg/pg_wal/000000010000000000000003"
        ]
    );
    assert_eq!(
        pgbackrest::info_args("main", None, None)[2..],
        ["--stanza=main", "--output=json", "info"]
    );
}

#[test]
fn a_pgbackrest_release_reads_the_majors_it_knows() {
    assert_eq!(
        pgbackrest::parse_version("pgBackRest 2.45\n"),
        Some((2, 45))
    );
    assert_eq!(
        pgbackrest::parse_version("pgBackRest 2.52.1"),
        Some((2, 52))
    );
    assert_eq!(
        pgbackrest::parse_version("pgBackRest 2.56dev"),
        Some((2, 56))
    );
    assert_eq!(pgbackrest::parse_version("something else"), None);
    assert!(pgbackrest::supports((2, 45), 15).is_ok());
    let e = pgbackrest::supports((2, 45), 17).unwrap_err();
    assert_eq!(
        e,
        "pgBackRest 2.45 reads PostgreSQL up to 15, and this server is PostgreSQL 17"
    );
    assert!(pgbackrest::supports((2, 45), 16).is_err());
    assert!(pgbackrest::supports((2, 53), 17).is_ok());
    assert!(pgbackrest::supports((2, 53), 18).is_err());
    assert!(pgbackrest::supports((2, 60), 18).is_ok());
    // A release newer than pg_ark knows of is trusted to say so itself.
    assert!(pgbackrest::supports((3, 0), 19).is_ok());
    assert!(pgbackrest::is_transient(
        "ERROR: [050]: unable to acquire lock on file '/tmp/pgbackrest/main-backup.lock'"
    ));
    assert!(!pgbackrest::is_transient(
        "ERROR: [055]: unable to load info file '/r/backup/nosuch/backup.info'"
    ));
}

#[test]
fn barman_commands_are_argument_vectors_of_checked_options() {
    let o = map(
        json!({"server": "pg", "options": {"wait": true, "immediate-checkpoint": false,
                                                    "jobs": 2}}),
    );
    assert_eq!(
        barman::job_args(&o, Some(Path::new("/etc/barman.conf"))),
        [
            "--config=/etc/barman.conf",
            "backup",
            "--no-immediate-checkpoint",
            "--jobs=2",
            "--wait",
            "pg"
        ]
    );
    assert_eq!(
        barman::job_args(&map(json!({"server": "pg", "type": "check"})), None),
        ["check", "pg"]
    );
    assert_eq!(
        barman::job_args(&map(json!({"type": "cron"})), None),
        ["cron"]
    );
    assert_eq!(
        barman::list_args("pg", None),
        ["--format=json", "list-backups", "pg"]
    );
}

#[test]
fn times_as_tools_write_them() {
    assert_eq!(parse_time("1970-01-01 00:00:00"), Some(0.0));
    assert_eq!(parse_time("2026-12-06 05:01:02"), Some(1_796_533_262.0));
    assert_eq!(parse_time("2026-12-06T05:01:02Z"), Some(1_796_533_262.0));
    assert_eq!(
        parse_time("2026-12-06 06:01:02+01:00"),
        Some(1_796_533_262.0)
    );
    assert_eq!(
        parse_time("2026-12-06 00:01:02-0500"),
        Some(1_796_533_262.0)
    );
    assert_eq!(parse_time("2026-12-06 05:01:02.5"), Some(1_796_533_262.5));
    assert_eq!(parse_time("2000-02-29 00:00:00"), Some(951_782_400.0));
    assert_eq!(parse_time("yesterday"), None);
    assert_eq!(parse_time("2026-13-01 00:00:00"), None);
}

#[test]
fn the_catalog_follows_what_the_tool_lists() {
    let b = |label: &str, end: f64| ToolBackup {
        label: label.into(),
        format: "full".into(),
        size_bytes: 1,
        started_at: end - 1.0,
        finished_at: end,
        info: json!({}),
    };
    let listed = vec![b("B", 20.0), b("C", 30.0), b("A", 10.0)];
    let (new, gone) = sync(&["A".into(), "Z".into()], &listed);
    assert_eq!(
        new.iter().map(|b| b.label.as_str()).collect::<Vec<_>>(),
        ["B", "C"]
    );
    assert_eq!(gone, ["Z"]);
    assert_eq!(newest(&listed).map(|b| b.label.as_str()), Some("C"));
    assert_eq!(newest(&[]), None);
}

#[test]
fn pg_basebackup_writes_only_under_its_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = basebackup::target_dir(root.path(), Some("nightly/a")).unwrap();
    assert!(dir.ends_with("nightly/a") && dir.is_dir());
    assert_eq!(
        basebackup::target_dir(root.path(), None).unwrap(),
        std::fs::canonicalize(root.path()).unwrap()
    );
    // A link inside that leads out.
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
    let e = basebackup::target_dir(root.path(), Some("out/x")).unwrap_err();
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing made outside"
    );
    assert!(e.contains("outside ark.pg_basebackup_directory"), "{e}");
    let e = basebackup::target_dir(root.path(), Some("../x")).unwrap_err();
    assert!(e.contains("not a directory under"), "{e}");
    let e = basebackup::target_dir(Path::new("relative"), None).unwrap_err();
    assert!(e.contains("not an absolute path"), "{e}");
    let o = map(json!({"format": "tar", "compression": "gzip:5"}));
    let conn = basebackup::Connection {
        socket_dir: "/run/pg".into(),
        port: 5433,
        user: "postgres".into(),
    };
    assert_eq!(
        basebackup::args(
            &o,
            Path::new("/b/x"),
            &conn,
            Some(Path::new("/b/w/backup_manifest")),
            7
        ),
        [
            "--pgdata=/b/x",
            "--host=/run/pg",
            "--port=5433",
            "--username=postgres",
            "--no-password",
            "--format=tar",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--label=pg_ark job 7",
            "--compress=gzip:5",
            "--incremental=/b/w/backup_manifest"
        ]
    );
    assert!(
        basebackup::check_incremental_major(&map(json!({"incremental": true})), 15)
            .unwrap_err()
            .to_string()
            .contains("from PostgreSQL 17 on, and this server is PostgreSQL 15")
    );
    assert!(basebackup::check_incremental_major(&map(json!({"incremental": false})), 15).is_ok());
    assert!(basebackup::check_incremental_major(&map(json!({"incremental": true})), 18).is_ok());
}

#[test]
fn pg_basebackup_retention_expires_whole_chains() {
    let k = |label: &str, end: f64, parent: Option<&str>| basebackup::Kept {
        label: label.into(),
        finished_at: end,
        parent: parent.map(str::to_string),
    };
    let day = 86_400.0;
    let now = 100.0 * day;
    let backups = vec![
        k("f1", 10.0 * day, None),
        k("i1", 11.0 * day, Some("f1")),
        k("f2", 20.0 * day, None),
        k("i2", 21.0 * day, Some("f2")),
        k("i3", 99.0 * day, Some("i2")),
        k("f3", 50.0 * day, None),
    ];
    // Newest chain first: f2 (its incremental i3 is the newest), then f3, f1.
    assert_eq!(
        basebackup::expired(&backups, Some(1), None, now),
        ["f3", "f1", "i1"]
    );
    assert_eq!(
        basebackup::expired(&backups, Some(2), None, now),
        ["f1", "i1"]
    );
    assert!(basebackup::expired(&backups, None, None, now).is_empty());
    assert_eq!(
        basebackup::expired(&backups, None, Some(60), now),
        ["f1", "i1"]
    );
    // The newest chain stays whatever the rules.
    assert!(basebackup::expired(&backups[..2], Some(1), Some(1), now).is_empty());
}

#[test]
fn a_backup_manifest_says_what_it_holds() {
    let m = br#"{ "PostgreSQL-Backup-Manifest-Version": 2,
"System-Identifier": 7445311470545416537,
"Files": [
{ "Path": "backup_label", "Size": 227, "Last-Modified": "2026-12-06 05:00:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "1" },
{ "Path": "base/1/1259", "Size": 8192, "Last-Modified": "2026-12-06 05:00:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "2" }
],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000138" }
],
"Manifest-Checksum": "x"}"#;
    let f = basebackup::parse_manifest(m).unwrap();
    assert_eq!(f.files, 2);
    assert_eq!(f.bytes, 8419);
    assert_eq!(f.timeline, 1);
    assert_eq!(f.start_lsn, "0/2000028");
    assert_eq!(f.end_lsn, "0/2000138");
    assert_eq!(f.system_identifier, Some(7_445_311_470_545_416_537));
    assert!(basebackup::parse_manifest(b"{}").is_err());
    assert!(basebackup::parse_manifest(b"not json").is_err());
}

#[test]
fn the_second_destination_is_a_stanza_or_a_directory() {
    use archive_also::SecondDestination as D;
    assert_eq!(
        D::parse("pgbackrest:main"),
        Ok(D::Pgbackrest {
            stanza: "main".into()
        })
    );
    assert_eq!(
        D::parse(" directory:/var/lib/barman/pg/incoming "),
        Ok(D::Directory("/var/lib/barman/pg/incoming".into()))
    );
    assert!(D::parse("pgbackrest:--config=/x")
        .unwrap_err()
        .contains("not a pgBackRest stanza"));
    assert!(D::parse("directory:incoming")
        .unwrap_err()
        .contains("not an absolute path"));
    assert!(D::parse("cp %p /x").unwrap_err().contains("neither"));
}

#[test]
fn a_copy_into_a_directory_is_durable_and_never_overwrites() {
    let src_dir = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let wal = src_dir.path().join("000000010000000000000001");
    std::fs::write(&wal, b"segment bytes").unwrap();
    let name = "000000010000000000000001";
    archive_also::copy_durably(&wal, name, dest.path()).unwrap();
    assert_eq!(
        std::fs::read(dest.path().join(name)).unwrap(),
        b"segment bytes"
    );
    // Again, with the same bytes: stored already.
    archive_also::copy_durably(&wal, name, dest.path()).unwrap();
    // Other bytes under that name stay as they are, and the copy fails.
    std::fs::write(&wal, b"other bytes").unwrap();
    let e = archive_also::copy_durably(&wal, name, dest.path()).unwrap_err();
    assert!(e.contains("already there with other contents"), "{e}");
    assert_eq!(
        std::fs::read(dest.path().join(name)).unwrap(),
        b"segment bytes"
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from(name)]);
    let e = archive_also::copy_durably(&wal, name, Path::new("/nonexistent/dir")).unwrap_err();
    assert!(e.contains("could not create a file in"), "{e}");
}

/// Another user who can write the directory (Barman's incoming) plants
/// symbolic links: pg_ark neither writes through them nor reads through
/// them.
#[test]
fn a_copy_into_a_directory_follows_no_planted_link() {
    let src_dir = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let victim = src_dir.path().join("pg_control");
    std::fs::write(&victim, b"precious").unwrap();
    let wal = src_dir.path().join("000000010000000000000002");
    std::fs::write(&wal, b"segment bytes").unwrap();
    // The final name, planted as a link to the WAL file itself ("same
    // bytes") or to another file.
    std::os::unix::fs::symlink(&wal, dest.path().join("000000010000000000000002")).unwrap();
    let e = archive_also::copy_durably(&wal, "000000010000000000000002", dest.path()).unwrap_err();
    assert!(e.contains("is a symbolic link"), "{e}");
    std::os::unix::fs::symlink(&victim, dest.path().join("000000010000000000000003")).unwrap();
    assert!(archive_also::copy_durably(&wal, "000000010000000000000003", dest.path()).is_err());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // Links at the names a temporary file might take are not followed
    // either: its name is random and it is created only where nothing is.
    for pid in [std::process::id(), 1, 2] {
        std::os::unix::fs::symlink(
            &victim,
            dest.path()
                .join(format!(".000000010000000000000004.pg_ark-{pid}")),
        )
        .unwrap();
    }
    archive_also::copy_durably(&wal, "000000010000000000000004", dest.path()).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(
        std::fs::read(dest.path().join("000000010000000000000004")).unwrap(),
        b"segment bytes"
    );
}

#[test]
fn a_stanza_is_ready_when_pgbackrest_info_says_so() {
    let info = |code: i64, message: &str| {
        format!(
            r#"[{{"name":"main","backup":[],"status":{{"code":{code},"message":"{message}"}}}}]"#
        )
    };
    assert!(pgbackrest::check_stanza(&info(0, "ok"), "main").is_ok());
    assert!(pgbackrest::check_stanza(&info(2, "no valid backups"), "main").is_ok());
    assert_eq!(
        pgbackrest::check_stanza(&info(1, "missing stanza path"), "main").unwrap_err(),
        "pgBackRest: stanza \"main\": missing stanza path (status code 1)"
    );
    assert!(pgbackrest::check_stanza(&info(0, "ok"), "other").is_err());
    assert!(pgbackrest::check_stanza("nonsense", "main").is_err());
}

/// Barman's JSON as Barman 3.19.1 prints it (times as strings of seconds,
/// no trailing newline).
#[test]
fn barman_lists_and_shows_its_backups() {
    let list = r#"{"pg": [{"backup_id": "20261206T050805", "backup_type": "full", "end_time": "Sun Dec  6 05:08:07 2026", "end_time_timestamp": "1796533687", "retention_status": "-", "size": "41.8 MiB", "size_bytes": 43790394, "status": "DONE", "wal_size": "0 B", "wal_size_bytes": 0}, {"backup_id": "20261206T050704", "backup_type": "full", "end_time": "Sun Dec  6 05:07:52 2026", "end_time_timestamp": "1796533672", "size_bytes": 1, "status": "FAILED"}]}"#;
    let listed = barman::parse_list(list, "pg").unwrap();
    assert_eq!(listed.len(), 2);
    let done: Vec<&ToolBackup> = listed.iter().filter(|b| barman::is_done(b)).collect();
    assert_eq!(done.len(), 1, "a failed backup is no backup");
    let mut b = done[0].clone();
    assert_eq!(b.label, "20261206T050805");
    assert_eq!(b.size_bytes, 43_790_394);
    assert_eq!(b.finished_at, 1_796_533_687.0);
    let show = r#"{"pg": {"backup_id": "20261206T050805", "backup_type": "full", "base_backup_information": {"backup_size_bytes": 27013178, "begin_time": "2026-12-06 05:08:05.168025+00:00", "begin_time_timestamp": "1796533685", "end_time_timestamp": "1796533687", "begin_wal": "000000010000000000000005"}, "status": "DONE"}}"#;
    barman::show_backup(show, "pg", &mut b).unwrap();
    assert_eq!(b.started_at, 1_796_533_685.0);
    assert_eq!(
        b.info["base_backup_information"]["begin_wal"],
        "000000010000000000000005"
    );
    assert!(barman::show_backup(show, "other", &mut b).is_err());
    assert_eq!(
        barman::parse_list(r#"{"_ERROR": ["Unknown server 'pg'"]}"#, "pg").unwrap_err(),
        "Barman: Unknown server 'pg'"
    );
    assert!(barman::is_transient(
        "ERROR: Another backup process is running"
    ));
    assert!(!barman::is_transient("ERROR: Unknown server 'nosuch'"));
}

#[test]
fn barman_check_fails_on_any_failed_check_in_barmans_words() {
    let ok = r#"{"pg": {"postgresql": {"hint": "", "status": "OK"}, "wal_level": {"hint": "", "status": "OK"}}}"#;
    assert_eq!(barman::judge_check(ok, "pg").unwrap()["checks"], 2);
    let json = r#"{"pg": {"archive_command": {"hint": "please set it accordingly to documentation", "status": "FAILED"}, "postgresql": {"hint": "", "status": "OK"}}}"#;
    let e = barman::judge_check(json, "pg").unwrap_err();
    assert!(
        e.starts_with("barman check of server \"pg\": archive_command: FAILED (please set"),
        "{e}"
    );
    assert!(e.contains("use Barman's streaming archiver"), "{e}");
    let wal = r#"{"pg": {"wal_archive": {"hint": "please make sure WAL shipping is setup", "status": "FAILED"}, "replication_slot": {"hint": "", "status": "FAILED"}}}"#;
    assert_eq!(
        barman::judge_check(wal, "pg").unwrap_err(),
        "barman check of server \"pg\": replication_slot: FAILED; wal_archive: FAILED (please make sure WAL shipping is setup)"
    );
    let e = barman::judge_check(r#"{"_ERROR": ["Unknown server 'pg'"]}"#, "pg").unwrap_err();
    assert_eq!(e, "Barman: Unknown server 'pg'");
    assert!(barman::judge_check(ok, "other").is_err());
}

#[test]
fn pgbackrest_info_says_what_its_archive_holds_and_whether_it_answered_whole() {
    let info = r#"[{"name":"main","archive":[{"id":"15-1","max":"00000001000000000000000B","min":"000000010000000000000001"},{"id":"15-2","max":"000000010000000000000004","min":"000000010000000000000001"}],"backup":[],"repo":[{"key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"message":"ok"}}]"#;
    assert_eq!(
        pgbackrest::archived_through(info, "main").as_deref(),
        Some("00000001000000000000000B")
    );
    assert_eq!(pgbackrest::archived_through(info, "other"), None);
    assert!(pgbackrest::info_is_complete(info, "main"));
    let partial = info.replace(
        r#""repo":[{"key":1,"status":{"code":0,"message":"ok"}}]"#,
        r#""repo":[{"key":1,"status":{"code":0,"message":"ok"}},{"key":2,"status":{"code":99,"message":"other"}}]"#,
    );
    assert!(!pgbackrest::info_is_complete(&partial, "main"));
    let no_backups = info.replace(
        r#""status":{"code":0,"message":"ok"}}]"#,
        r#""status":{"code":2,"message":"no valid backups"}}]"#,
    );
    assert!(!pgbackrest::info_is_complete(&no_backups, "main"));
}
