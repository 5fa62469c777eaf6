use super::*;
use serde_json::json;

/// Queued by a superuser.
const SU: (Option<&str>, bool) = (Some("postgres"), true);

/// A `$libdir` with no library in it.
fn nowhere() -> &'static Path {
    Path::new("/nonexistent/pg_ark/libdir")
}

#[test]
fn options_override_the_settings_that_default_them() {
    let o = json!({"retain_count": 3, "retention_diff": 0, "retry_base": 2.5});
    assert_eq!(count_option(&o, "retain_count", 7), Some(3));
    // 0 as an option turns the rule off, whatever the setting says.
    assert_eq!(count_option(&o, "retention_diff", 5), None);
    assert_eq!(count_option(&o, "retain_days", 7), Some(7));
    assert_eq!(count_option(&o, "retain_days", 0), None);
    assert_eq!(count_option(&o, "retain_days", -1), None);
    assert_eq!(seconds_option(&o, "retry_base", 60.0), 2.5);
    assert_eq!(seconds_option(&o, "retry_cap", 3600.0), 3600.0);
}

/// The catalog constrains `ark.jobs.kind` and `ark.schedules.kind` to
/// exactly these kinds, and the hint lists them.
#[test]
fn the_catalog_and_the_hint_know_every_kind() {
    let names: Vec<&str> = JobKind::all().map(|k| k.as_str()).collect();
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let check = format!("CHECK (kind IN ({list}))");
    let catalog = include_str!("../../../../src/catalog/catalog.sql");
    assert_eq!(
        catalog.matches(&check).count(),
        2,
        "catalog.sql lacks {check}; the next upgrade script needs it too"
    );
    assert_eq!(kind_names(), names.join(", "));
    assert_eq!(
        JobError::UnknownKind { kind: "x".into() }.hint().unwrap(),
        format!("The job kinds are: {}.", names.join(", "))
    );
}

/// Each kind's options are listed once, and none repeats an option
/// every kind takes.
#[test]
fn the_kinds_table_lists_each_option_once() {
    for kind in JobKind::all() {
        let keys: Vec<&str> = kind.allowed_options().collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{kind}: {keys:?}");
        assert_eq!(JobKind::parse(kind.as_str()), Ok(kind));
    }
}

#[test]
fn kinds_parse_and_conflict() {
    assert_eq!(JobKind::parse("logical").unwrap(), JobKind::Logical);
    assert_eq!(
        JobKind::parse("Logical").unwrap_err(),
        JobError::UnknownKind {
            kind: "Logical".into()
        }
    );
    assert_eq!(JobKind::Full.conflict_key(), Some("physical"));
    assert_eq!(JobKind::Differential.conflict_key(), Some("physical"));
    assert_eq!(JobKind::Logical.conflict_key(), None);
    assert_eq!(JobKind::Verify.conflict_key(), Some("physical"));
    assert_eq!(JobKind::Expire.conflict_key(), Some("physical"));
}

#[test]
fn unknown_keys_list_the_allowed_ones() {
    let e = validate(JobKind::Logical, &json!({"databse": "x"}), nowhere()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown option \"databse\" for job kind \"logical\""
    );
    assert_eq!(
        e.hint().unwrap(),
        "The allowed option keys are: database, format, schema, jobs, compression, \
         retain_count, retain_days, max_attempts, retry_base, retry_cap."
    );
}

#[test]
fn good_logical_options_pass() {
    for o in [
        json!({}),
        json!({"database": "app", "format": "custom"}),
        json!({"database": ["a", "b"], "schema": "public", "compression": "zstd:3"}),
        json!({"format": "directory", "jobs": 2, "compression": 6}),
        json!({"retain_count": 3, "retain_days": 7, "max_attempts": 5,
               "retry_base": 0.5, "retry_cap": 60}),
    ] {
        validate(JobKind::Logical, &o, nowhere()).unwrap_or_else(|e| panic!("{o}: {e}"));
    }
}

#[test]
fn bad_values_name_the_key_and_the_rule() {
    let cases = [
        (json!({"format": "tar"}), "invalid value for option \"format\": expected one of custom, directory, plain, found \"tar\""),
        (json!({"jobs": 2}), "invalid value for option \"jobs\": parallel dump needs \"format\": \"directory\""),
        (json!({"format": "directory", "jobs": 0}), "invalid value for option \"jobs\": 0 is out of range 1..64"),
        (json!({"database": ""}), "invalid value for option \"database\": a name is empty"),
        (json!({"database": []}), "invalid value for option \"database\": the array is empty"),
        (json!({"database": 5}), "invalid value for option \"database\": expected a name or an array of names, found a number"),
        (json!({"compression": "brotli"}), "invalid value for option \"compression\": \"brotli\" is not a pg_dump compression: use a level 0-9, or none, gzip, lz4 or zstd, optionally with :level"),
        (json!({"compression": 12}), "invalid value for option \"compression\": \"12\" is not a pg_dump compression: use a level 0-9, or none, gzip, lz4 or zstd, optionally with :level"),
        (json!({"max_attempts": 0}), "invalid value for option \"max_attempts\": 0 is out of range 1..100"),
        (json!({"max_attempts": "3"}), "invalid value for option \"max_attempts\": expected an integer from 1 to 100, found a string"),
        (json!({"retry_base": -1}), "invalid value for option \"retry_base\": -1 seconds is out of range (more than 0, at most 30 days)"),
        (json!({"retry_base": 10, "retry_cap": 5}), "invalid value for option \"retry_cap\": 5 seconds is less than retry_base (10 seconds)"),
        (json!({"retain_days": 0}), "invalid value for option \"retain_days\": 0 is out of range 1..36500"),
    ];
    for (o, msg) in cases {
        assert_eq!(
            validate(JobKind::Logical, &o, nowhere())
                .unwrap_err()
                .to_string(),
            msg,
            "{o}"
        );
    }
}

#[test]
fn options_must_be_an_object_and_kinds_available() {
    assert_eq!(
        validate(JobKind::Logical, &json!([1]), nowhere())
            .unwrap_err()
            .to_string(),
        "options must be a JSON object, not an array"
    );
    for kind in [JobKind::Full, JobKind::Incremental, JobKind::Differential] {
        assert!(validate(kind, &json!({"wait_timeout": 60}), nowhere()).is_ok());
    }
    assert_eq!(
        validate(JobKind::Expire, &json!({"format": "custom"}), nowhere())
            .unwrap_err()
            .to_string(),
        "unknown option \"format\" for job kind \"expire\""
    );
}

#[test]
fn drill_options_are_checked_when_queued() {
    for o in [
        json!({}),
        json!({"backup_id": "20261201T030000Z-F-j4", "database": "shop",
               "amcheck": ["public.orders"], "count": "public.orders",
               "jobs": 4, "timeout": 600}),
        json!({"visibility": false}),
        json!({"visibility": true}),
        json!({"visibility": "shop"}),
        json!({"visibility": ["shop", "postgres"]}),
        json!({"target_time": "2026-12-01 14:03:00+00"}),
        json!({"target_lsn": "0/3000060", "target_timeline": "current"}),
        json!({"target_xid": "1234"}),
        json!({"target_name": "before-migration"}),
    ] {
        validate(JobKind::Drill, &o, nowhere()).unwrap_or_else(|e| panic!("{o}: {e}"));
    }
    let cases = [
        (json!({"target_time": "yesterday"}), "\"target time\""),
        (json!({"target_lsn": "nope"}), "\"target_lsn\": not an LSN"),
        (
            json!({"target_xid": "1", "target_name": "x"}),
            "at most one of",
        ),
        (json!({"target_timeline": "0"}), "\"target_timeline\""),
        (json!({"database": ["a", "b"]}), "expected a database name"),
        (
            json!({"database": "host=/tmp dbname=x"}),
            "expected a database name",
        ),
        (
            json!({"database": "postgresql://elsewhere/x"}),
            "expected a database name",
        ),
        (json!({"amcheck": []}), "the array is empty"),
        (json!({"visibility": []}), "the array is empty"),
        (
            json!({"visibility": 1}),
            "expected true, false, a database name",
        ),
        (
            json!({"visibility": ["shop", "host=/tmp dbname=x"]}),
            "expected a database name",
        ),
        (json!({"timeout": 0}), "\"timeout\""),
        (
            json!({"format": "custom"}),
            "unknown option \"format\" for job kind \"drill\"",
        ),
    ];
    for (o, want) in cases {
        let e = validate(JobKind::Drill, &o, nowhere())
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{o}: {e}");
    }
    assert_eq!(JobKind::parse("drill").unwrap(), JobKind::Drill);
    assert_eq!(JobKind::Drill.conflict_key(), Some("physical"));
}

#[test]
fn a_drill_preloads_only_plain_names_of_libdir_libraries() {
    let libdir = tempfile::tempdir().unwrap();
    std::fs::write(libdir.path().join(format!("amcheck{DLSUFFIX}")), b"").unwrap();
    std::fs::write(libdir.path().join("timescaledb-2.1.0.so"), b"").unwrap();
    std::fs::create_dir(libdir.path().join("adir")).unwrap();
    let check = |v: Value| {
        validate(
            JobKind::Drill,
            &json!({ "shared_preload_libraries": v }),
            libdir.path(),
        )
    };
    for ok in [
        json!("amcheck"),
        json!(format!("amcheck{DLSUFFIX}")),
        json!(["amcheck", "timescaledb-2.1.0"]),
    ] {
        check(ok.clone()).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let lib = libdir.path().join("amcheck").display().to_string();
    for (bad, why) in [
        (json!("/tmp/x.so"), "is a path"),
        (json!(lib), "is a path"),
        (json!("$libdir/amcheck"), "is a path"),
        (json!("$libdir/../../tmp/x"), "is a path"),
        (json!("../x"), "is a path"),
        (json!("amcheck/../amcheck"), "is a path"),
        (json!("..\\x"), "is a path"),
        (json!(".."), "not a library name"),
        (json!(".amcheck"), "not a library name"),
        (json!("amcheck,/tmp/x"), "is a path"),
        (json!("amcheck, x"), "not a library name"),
        (json!("amcheck\"x"), "not a library name"),
        (json!("a..b"), "not a library name"),
        (json!(["amcheck", "/tmp/x.so"]), "is a path"),
        (json!("adir"), "there is no library \"adir\" in $libdir"),
        (json!("nope"), "there is no library \"nope\" in $libdir"),
    ] {
        let e = check(bad.clone()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid value for option \"shared_preload_libraries\": ")
                && e.to_string().contains(why),
            "{bad}: {e}"
        );
        assert!(
            e.hint().is_some_and(|h| h.contains("$libdir (")),
            "{bad}: {:?}",
            e.hint()
        );
    }
}

#[test]
fn a_claimed_job_is_checked_again_conflict_key_included() {
    let libdir = nowhere();
    assert_eq!(
        check_claimed("full", &json!({}), Some("physical"), SU, libdir).unwrap(),
        JobKind::Full
    );
    assert_eq!(
        check_claimed("logical", &json!({}), None, SU, libdir).unwrap(),
        JobKind::Logical
    );
    let e = check_claimed("full", &json!({}), None, SU, libdir).unwrap_err();
    assert_eq!(
        e.to_string(),
        "job of kind \"full\" has conflict_key NULL, not \"physical\""
    );
    assert!(e.hint().unwrap().contains("ark.backup()"));
    let e = check_claimed("incremental", &json!({}), Some("other"), SU, libdir).unwrap_err();
    assert_eq!(
        e.to_string(),
        "job of kind \"incremental\" has conflict_key \"other\", not \"physical\""
    );
    let e = check_claimed("logical", &json!({}), Some("physical"), SU, libdir).unwrap_err();
    assert_eq!(
        e.to_string(),
        "job of kind \"logical\" has conflict_key \"physical\", not NULL"
    );
    let e = check_claimed(
        "drill",
        &json!({"shared_preload_libraries": "/tmp/x.so"}),
        Some("physical"),
        SU,
        libdir,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("\"shared_preload_libraries\": \"/tmp/x.so\" is a path"),
        "{e}"
    );
    assert!(check_claimed("backup", &json!({}), None, SU, libdir).is_err());
}

#[test]
fn intervals_in_words_and_clock_form() {
    for (text, secs) in [
        ("30s", 30.0),
        ("30 sec", 30.0),
        ("5 min", 300.0),
        ("1.5 hours", 5400.0),
        ("2d", 172_800.0),
        ("500ms", 0.5),
        ("00:05:00", 300.0),
        ("1:30", 5400.0),
        ("45", 45.0),
    ] {
        assert_eq!(parse_interval(text), Some(secs), "{text}");
    }
    for bad in ["soon", "", "-5 s", "0s", "5 fortnights", "1:xx"] {
        assert_eq!(parse_interval(bad), None, "{bad}");
    }
}

#[test]
fn option_names_reads_one_or_many() {
    assert_eq!(
        option_names(&json!({"database": "a"}), "database"),
        Some(vec!["a".to_string()])
    );
    assert_eq!(
        option_names(&json!({"database": ["a", "b"]}), "database"),
        Some(vec!["a".to_string(), "b".to_string()])
    );
    assert_eq!(option_names(&json!({}), "database"), None);
}

/// The tool kinds are a superuser's: queueing them and running them.
#[test]
fn the_tool_kinds_run_only_for_superusers() {
    let libdir = nowhere();
    let opts = json!({"stanza": "main", "type": "full"});
    assert_eq!(
        check_claimed("pgbackrest", &opts, Some("pgbackrest"), SU, libdir).unwrap(),
        JobKind::Pgbackrest
    );
    for queued_by in [(Some("alice"), false), (None, true), (None, false)] {
        let e =
            check_claimed("pgbackrest", &opts, Some("pgbackrest"), queued_by, libdir).unwrap_err();
        assert!(matches!(e, JobError::SuperuserOnly { .. }), "{e}");
        assert!(e.to_string().contains("run only for superusers"), "{e}");
        assert!(
            e.hint()
                .unwrap()
                .contains("pgbackrest, barman, pg_basebackup"),
            "{:?}",
            e.hint()
        );
    }
    // Every other kind runs for whoever ark.backup() let queue it.
    assert!(check_claimed("logical", &json!({}), None, (Some("alice"), false), libdir).is_ok());
    assert!(check_queuer(JobKind::Barman, Some("alice"), false).is_err());
    assert!(check_queuer(JobKind::PgBasebackup, Some("root"), true).is_ok());
    assert!(check_queuer(JobKind::Full, Some("alice"), false).is_ok());
}

#[test]
fn the_tool_kinds_check_their_options() {
    let libdir = nowhere();
    let ok = |kind: JobKind, v: serde_json::Value| {
        validate(kind, &v, libdir).unwrap_or_else(|e| panic!("{v}: {e}"));
    };
    let bad = |kind: JobKind, v: serde_json::Value, needle: &str| {
        let e = validate(kind, &v, libdir).expect_err(&v.to_string());
        assert!(e.to_string().contains(needle), "{v}: {e}");
    };
    ok(JobKind::Pgbackrest, json!({"stanza": "main"}));
    ok(
        JobKind::Pgbackrest,
        json!({"stanza": "db-1.x", "type": "diff", "repo": 2,
               "options": {"start-fast": true, "compress-type": "zst", "process-max": 4}}),
    );
    bad(JobKind::Pgbackrest, json!({}), "needs the stanza");
    bad(
        JobKind::Pgbackrest,
        json!({"stanza": "--config=/tmp/x"}),
        "starts with a letter",
    );
    bad(
        JobKind::Pgbackrest,
        json!({"stanza": "a b"}),
        "letters, digits",
    );
    bad(
        JobKind::Pgbackrest,
        json!({"stanza": "main", "type": "block"}),
        "full, diff, incr",
    );
    bad(
        JobKind::Pgbackrest,
        json!({"stanza": "main", "options": {"repo1-path": "/tmp"}}),
        "\"repo1-path\" is not a pgBackRest option pg_ark passes on",
    );
    bad(
        JobKind::Pgbackrest,
        json!({"stanza": "main", "options": {"cmd-ssh": "/bin/sh"}}),
        "not a pgBackRest option",
    );
    bad(
        JobKind::Pgbackrest,
        json!({"stanza": "main", "options": {"process-max": "4; rm"}}),
        "an integer from 1 to 64",
    );
    bad(
        JobKind::Pgbackrest,
        json!({"stanza": "main", "options": "--delta"}),
        "an object",
    );
    // pg_ark checks the archive itself.
    bad(
        JobKind::Pgbackrest,
        json!({"stanza": "main", "options": {"archive-check": false}}),
        "not a pgBackRest option",
    );
    ok(JobKind::Barman, json!({"server": "pg"}));
    ok(JobKind::Barman, json!({"server": "pg", "type": "check"}));
    ok(JobKind::Barman, json!({"type": "cron"}));
    ok(
        JobKind::Barman,
        json!({"server": "pg", "options": {"wait": true, "reuse-backup": "link"}}),
    );
    bad(JobKind::Barman, json!({}), "needs the Barman server");
    bad(
        JobKind::Barman,
        json!({"server": "all"}),
        "every server to Barman",
    );
    bad(
        JobKind::Barman,
        json!({"type": "cron", "server": "pg"}),
        "leave \"server\" out",
    );
    bad(
        JobKind::Barman,
        json!({"server": "-pg"}),
        "starts with a letter",
    );
    bad(
        JobKind::Barman,
        json!({"server": "pg", "type": "delete"}),
        "backup, check, cron",
    );
    bad(
        JobKind::Barman,
        json!({"server": "pg", "type": "check", "options": {"wait": true}}),
        "takes no options",
    );
    ok(JobKind::PgBasebackup, json!({}));
    ok(
        JobKind::PgBasebackup,
        json!({"target": "nightly/db1", "format": "tar", "compression": "zstd:3",
               "checkpoint": "spread", "wal_method": "fetch", "incremental": true,
               "retain_count": 2}),
    );
    ok(
        JobKind::PgBasebackup,
        json!({"incremental": "20261206T050000Z-j12"}),
    );
    for target in [
        "/tmp/elsewhere",
        "../escape",
        "a/../../b",
        ".hidden",
        "-x",
        "",
        "./x",
    ] {
        bad(
            JobKind::PgBasebackup,
            json!({ "target": target }),
            "not a directory under ark.pg_basebackup_directory",
        );
    }
    bad(
        JobKind::PgBasebackup,
        json!({"compression": "gzip"}),
        "only the tar format",
    );
    bad(
        JobKind::PgBasebackup,
        json!({"format": "tar", "compression": "gzip:12"}),
        "gzip 1-9",
    );
    bad(
        JobKind::PgBasebackup,
        json!({"incremental": "../x"}),
        "label",
    );
}
