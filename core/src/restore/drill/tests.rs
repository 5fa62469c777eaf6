use super::*;

const MIB: u64 = 1024 * 1024;

fn mib(n: u64) -> SegmentSize {
    SegmentSize::new(n * MIB).unwrap()
}

#[test]
fn the_space_needed_covers_the_files_and_the_wal() {
    assert_eq!(space_needed(0, 0, mib(16)), 4 * 16 * MIB + 64 * MIB);
    assert_eq!(
        space_needed(1000, 2, mib(16)),
        1000 + 6 * 16 * MIB + 64 * MIB
    );
    // The segment size is the cluster's.
    assert_eq!(space_needed(0, 2, mib(64)), 6 * 64 * MIB + 64 * MIB);
    // The spool is bounded: a long replay does not ask for its WAL.
    assert_eq!(space_needed(0, 10_000, mib(16)), 36 * 16 * MIB + 64 * MIB);
    assert_eq!(space_needed(u64::MAX, 1, mib(16)), u64::MAX);
    assert_eq!(shared_reserve(100 * 1024 * MIB), 10 * 1024 * MIB);
    assert_eq!(shared_reserve(2 * 1024 * MIB), 1024 * MIB);
}

fn spec() -> Spec {
    Spec {
        job_id: 7,
        backup: None,
        target: Target::Immediate,
        timeline: TimelineChoice::Latest,
        scratch: PathBuf::from("/var/tmp/w/job-7-drill"),
        bindir: PathBuf::from("/usr/lib/postgresql/17/bin"),
        repo: RepoConfig::default(),
        env: vec![],
        jobs: 2,
        database: "postgres".into(),
        user: "postgres".into(),
        amcheck: vec![],
        count: vec![],
        visibility: VisibilityCheck::Every { required: false },
        preload: vec!["pg_stat_statements".into(), "pg_ark".into()],
        settings: vec![("max_connections".into(), "200".into())],
        timeout: Duration::from_secs(60),
        primary_dirs: vec![],
        wal_segment_size: SegmentSize::DEFAULT,
    }
}

#[test]
fn pg_ark_is_taken_out_of_the_scratch_clusters_preload() {
    let p =
        |l: &[&str]| preload_without_pg_ark(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(p(&["pg_ark"]), "");
    assert_eq!(p(&["pg_stat_statements", " pg_ark"]), "pg_stat_statements");
    assert_eq!(
        p(&["\"pg_ark\"", "auto_explain", "$libdir/pg_ark"]),
        "auto_explain"
    );
    assert_eq!(p(&[]), "");
}

#[test]
fn the_scratch_server_is_confined() {
    let args = server_args(&spec(), 5433);
    let joined = args.join(" ");
    for want in [
        "-D /var/tmp/w/job-7-drill/data",
        "-c data_directory=/var/tmp/w/job-7-drill/data",
        "-c port=5433",
        "-c unix_socket_directories=/var/tmp/w/job-7-drill",
        "-c hba_file=/var/tmp/w/job-7-drill/pg_hba.conf",
        "-c archive_mode=off",
        "-c shared_preload_libraries=pg_stat_statements",
        "-c max_logical_replication_workers=0",
        "-c lc_messages=C",
        "-c max_connections=200",
    ] {
        assert!(joined.contains(want), "{want} missing from {joined}");
    }
    // No TCP listener, no pid file of the primary's.
    assert!(args.iter().any(|a| a == "listen_addresses="), "{joined}");
    assert!(args.iter().any(|a| a == "external_pid_file="), "{joined}");
}

#[test]
fn max_wal_size_holds_two_segments_of_any_size() {
    for (size, want) in [(16, "1024MB"), (64, "1024MB"), (1024, "2048MB")] {
        let mut s = spec();
        s.wal_segment_size = mib(size);
        let args = server_args(&s, 5433);
        assert!(
            args.iter().any(|a| *a == format!("max_wal_size={want}")),
            "{size}: {args:?}"
        );
    }
}

#[test]
fn the_backups_settings_win_when_they_are_larger() {
    let ours = vec![
        ("max_connections".to_string(), "100".to_string()),
        ("max_wal_senders".to_string(), "10".to_string()),
    ];
    let control = vec![
        ("max_connections".to_string(), 300),
        ("max_wal_senders".to_string(), 5),
        ("max_locks_per_transaction".to_string(), 128),
    ];
    assert_eq!(
        at_least(&ours, &control),
        vec![
            ("max_connections".to_string(), "300".to_string()),
            ("max_wal_senders".to_string(), "10".to_string()),
            ("max_locks_per_transaction".to_string(), "128".to_string()),
        ]
    );
}

#[test]
fn only_a_drills_own_server_is_ever_signalled() {
    let dir = tempfile::tempdir().unwrap();
    // A pid file naming this test process: alive, but not a server
    // running in that directory.
    std::fs::create_dir_all(dir.path().join("a/data")).unwrap();
    std::fs::write(
        dir.path().join("a/data/postmaster.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    assert_eq!(stop_leftover_server(&dir.path().join("a"), &[]), Ok(false));
    assert_eq!(
        stop_leftover_server(&dir.path().join("absent"), &[]),
        Ok(false)
    );
    // A data directory that is a link (to wherever a server runs) is
    // never followed.
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("a/data"), dir.path().join("b/data")).unwrap();
    assert_eq!(stop_leftover_server(&dir.path().join("b"), &[]), Ok(false));
}

#[test]
fn the_work_directory_must_be_private() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("work");
    check_work_directory(&dir).unwrap();
    let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = check_work_directory(&dir).unwrap_err();
    assert!(e.contains("may be written by other users"), "{e}");
    let link = base.path().join("link");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let e = check_work_directory(&link).unwrap_err();
    assert!(e.contains("symbolic link"), "{e}");
}

#[test]
fn the_visibility_option_reads_off_every_or_databases() {
    let f = |v: Value| VisibilityCheck::from_option(Some(&v));
    assert_eq!(
        VisibilityCheck::from_option(None),
        Ok(VisibilityCheck::Every { required: false })
    );
    assert_eq!(
        f(json!(true)),
        Ok(VisibilityCheck::Every { required: true })
    );
    assert_eq!(f(json!(false)), Ok(VisibilityCheck::Off));
    assert_eq!(
        f(json!("shop")),
        Ok(VisibilityCheck::Databases(vec!["shop".into()]))
    );
    assert_eq!(
        f(json!(["a", "b"])),
        Ok(VisibilityCheck::Databases(vec!["a".into(), "b".into()]))
    );
    for bad in [
        json!([]),
        json!(1),
        json!(""),
        json!(["a", 2]),
        json!("dbname=x"),
    ] {
        assert!(f(bad.clone()).is_err(), "{bad}");
    }
}

#[test]
fn the_visibility_check_covers_every_relation_with_a_map_qualified() {
    let s = visibility_script();
    assert!(
        s.starts_with("SET search_path = pg_catalog, pg_temp;"),
        "{s}"
    );
    // Tables, materialized views and TOAST tables; never another
    // session's temporary table.
    assert!(s.contains("ANY ('{r,m,t}'::\"char\"[])"), "{s}");
    assert!(
        s.contains("relpersistence OPERATOR(pg_catalog.<>) 't'"),
        "{s}"
    );
    // The extension's functions by its schema, everything else from
    // pg_catalog: nothing of the restored database can stand in.
    assert!(s.contains(":\"vmschema\".pg_check_visible(c.oid::pg_catalog.regclass)"));
    assert!(s.contains(":\"vmschema\".pg_check_frozen(c.oid::pg_catalog.regclass)"));
    for call in ["count(", "json_agg(", "json_build_object("] {
        let bare = s.matches(call).count();
        let qualified = s.matches(&format!("pg_catalog.{call}")).count();
        assert_eq!(bare, qualified, "{call} unqualified in {s}");
    }
    assert_eq!(
        s.matches(" = ").count(),
        1,
        "operators are qualified but SET: {s}"
    );
    for setup in [VISIBILITY_SETUP, VISIBILITY_AVAILABLE] {
        assert!(setup.starts_with("SET search_path = pg_catalog, pg_temp;"));
    }
    assert!(VISIBILITY_SETUP.contains("CREATE EXTENSION pg_visibility WITH SCHEMA ark_drill"));
}

#[test]
fn tuples_the_map_vouches_for_wrongly_fail_the_drill_naming_them() {
    let ok = visibility_outcome("shop", r#"{"relations": 42, "problems": []}"#).unwrap();
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["relations"], 42);
    assert_eq!(ok["database"], "shop");
    let (check, f) = visibility_outcome(
        "shop",
        r#"{"relations": 42, "problems": [{"relation": "public.t", "not_visible": 2000, "not_frozen": 1990}]}"#,
    )
    .unwrap_err();
    assert!(f.verdict && !f.transient, "a verdict on the backup");
    assert_eq!(check["ok"], false);
    assert!(
        f.message.contains("database \"shop\"")
            && f.message
                .contains("public.t (2000 tuple(s) not all-visible, 1990 not all-frozen)"),
        "{}",
        f.message
    );
    let (_, f) = visibility_outcome("shop", "garbage").unwrap_err();
    assert!(
        !f.verdict && f.message.contains("unexpected output"),
        "{}",
        f.message
    );
}

#[test]
fn kinds_are_named() {
    assert_eq!(relkind("kind v"), "a view");
    assert_eq!(relkind("kind f"), "a foreign table");
    assert_eq!(relkind("kind x"), "not a table");
}
