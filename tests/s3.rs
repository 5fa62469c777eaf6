//! S3, against a real S3-compatible server process (s3s-fs) on loopback:
//! the storage contract, clear errors, archiving, an outage in the middle of
//! archiving, and recovery through `pg_ark wal-get`.
use pg_ark_core::repo::Repository;
use pg_ark_core::storage::s3::{S3Options, S3Storage};
use pg_ark_core::storage::{conformance, PutMode, Storage};
use pg_ark_tests::{wait_until, Cluster, ClusterOptions, S3Server};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

fn options(s3: &S3Server) -> S3Options {
    S3Options {
        endpoint: Some(s3.endpoint()),
        region: Some("us-east-1".into()),
        force_path_style: true,
        access_key_id: Some(s3.access_key.clone()),
        secret_access_key: Some(s3.secret_key.clone()),
        operation_timeout: None,
        object_lock: None,
    }
}

fn archiving_to(s3: &S3Server, prefix: &str) -> ClusterOptions {
    ClusterOptions::default()
        .set("archive_mode", "on")
        .set("archive_library", "'pg_ark'")
        .set("ark.repository", &format!("'s3://{}/{prefix}'", s3.bucket))
        .set("ark.s3_endpoint", &format!("'{}'", s3.endpoint()))
        .set("ark.s3_force_path_style", "on")
        .set("ark.s3_access_key_id", &format!("'{}'", s3.access_key))
        .set("ark.s3_secret_access_key", &format!("'{}'", s3.secret_key))
}

/// A `pg_ark wal-get` wrapper script in `dir` for the repository
/// `s3://<bucket>/<prefix>`: it passes the keys in the environment, as an
/// operator would, so they never appear in `restore_command`.
fn wal_get_wrapper(s3: &S3Server, prefix: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let wrapper = dir.join("wal-get.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport AWS_ACCESS_KEY_ID='{}' AWS_SECRET_ACCESS_KEY='{}'\nexec {} wal-get --repo s3://{}/{prefix} --s3-endpoint {} --s3-path-style \"$@\"\n",
            s3.access_key,
            s3.secret_key,
            pg_ark_tests::PgInstall::from_env().bin("pg_ark").display(),
            s3.bucket,
            s3.endpoint()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    wrapper
}

fn last_archived(cluster: &Cluster) -> Option<String> {
    cluster
        .client()
        .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0)
}

/// The no-overwrite contract on S3: a whole repository life through a
/// storage that refuses every overwrite and every second write of a key.
#[test]
fn a_whole_repository_life_on_s3_writes_every_key_once() {
    use pg_ark_core::storage::write_once::{run_life, WriteOnce};
    let s3 = S3Server::start();
    let storage = S3Storage::open(&s3.bucket, "life", &options(&s3)).unwrap();
    let s = std::sync::Arc::new(WriteOnce::new(storage));
    let attacker = std::sync::Arc::clone(&s);
    run_life(
        s.clone(),
        &|k, b| attacker.inner().put(k, b, PutMode::Overwrite).unwrap(),
        None,
    );
    assert_eq!(s.refused(), Vec::<String>::new());
}

#[test]
fn s3_storage_keeps_the_contract() {
    let s3 = S3Server::start();
    let storage = S3Storage::open(&s3.bucket, "conformance/run", &options(&s3)).unwrap();
    assert_eq!(
        storage.location(),
        format!("s3://{}/conformance/run", s3.bucket)
    );
    conformance::run_all(&storage);
    // The prefix isolates: nothing of the run is visible from another prefix.
    let other = S3Storage::open(&s3.bucket, "elsewhere", &options(&s3)).unwrap();
    assert!(other.list("").unwrap().is_empty());
}

#[test]
fn s3_errors_name_the_problem() {
    let s3 = S3Server::start();
    // Opening probes the bucket, so each problem shows up at once, named.
    let open_err = |bucket: &str, opts: &S3Options| {
        S3Storage::open(bucket, "", opts)
            .err()
            .expect("must fail")
            .to_string()
    };
    let e = open_err("no-such-bucket", &options(&s3));
    assert_eq!(e, "s3://no-such-bucket: could not open bucket \"no-such-bucket\": NoSuchBucket: the bucket does not exist");

    let mut bad = options(&s3);
    bad.secret_access_key = Some("wrong-secret".into());
    let e = open_err(&s3.bucket, &bad);
    assert!(
        e.contains("SignatureDoesNotMatch")
            || e.contains("InvalidAccessKeyId")
            || e.contains("AccessDenied"),
        "{e}"
    );

    let mut down = options(&s3);
    let port = pg_ark_tests::free_port();
    down.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let e = open_err(&s3.bucket, &down);
    assert!(
        e.contains(&format!("cannot reach http://127.0.0.1:{port}")),
        "{e}"
    );
}

#[test]
fn every_switched_segment_lands_in_s3_verified() {
    let s3 = S3Server::start();
    let cluster = Cluster::start_with(archiving_to(&s3, "prod/db1"));
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    // Each completed segment is read right after its switch, before a
    // checkpoint can recycle it once archived.
    let (names, originals): (Vec<String>, Vec<Vec<u8>>) = (0..4)
        .map(|i| {
            let name = Cluster::write_and_switch_wal(&mut c, i);
            let data = std::fs::read(cluster.data.join(format!("pg_wal/{name}")))
                .unwrap_or_else(|e| panic!("{name} right after its switch: {e}"));
            (name, data)
        })
        .unzip();
    cluster.wait_archived(names.last().unwrap(), WAIT);

    let storage = S3Storage::open(&s3.bucket, "prod/db1", &options(&s3)).unwrap();
    let repo = Arc::new(Repository::open(Box::new(storage), false).unwrap());
    let entry = repo
        .cluster(cluster.system_identifier(), cluster.install.major, false)
        .unwrap();
    for (name, original) in names.iter().zip(&originals) {
        let data = entry
            .get_wal(name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} missing in S3"));
        assert_eq!(data.len(), 16 * 1024 * 1024);
        assert!(data == *original, "{name}: S3 holds other bytes");
    }
    let failed: i64 = c
        .query_one("SELECT failed_count FROM ark.archive_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(failed, 0);
}

#[test]
fn an_s3_outage_delays_archiving_and_loses_nothing() {
    let mut s3 = S3Server::start();
    let cluster = Cluster::start_with(archiving_to(&s3, "outage"));
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    let first = Cluster::write_and_switch_wal(&mut c, 1);
    cluster.wait_archived(&first, WAIT);

    s3.stop();
    let during: Vec<String> = (2..5)
        .map(|i| Cluster::write_and_switch_wal(&mut c, i))
        .collect();
    wait_until("failed attempts while S3 is down", WAIT, || {
        let r = c
            .query_one(
                "SELECT failed_count, last_failure_reason FROM ark.archive_status()",
                &[],
            )
            .unwrap();
        r.get::<_, i64>(0) >= 2
            && r.get::<_, Option<String>>(1)
                .is_some_and(|m| m.contains("cannot reach"))
    });
    assert_eq!(
        last_archived(&cluster).as_deref(),
        Some(first.as_str()),
        "nothing is reported archived while S3 is down"
    );
    for name in &during {
        assert!(
            cluster.data.join(format!("pg_wal/{name}")).exists(),
            "{name} must stay in pg_wal"
        );
    }
    let backlog: i64 = c
        .query_one("SELECT backlog FROM ark.archive_status()", &[])
        .unwrap()
        .get(0);
    assert!(backlog >= 3, "backlog {backlog}");

    s3.restart();
    // The archiver retries by itself; a switch only makes it look sooner.
    Cluster::write_and_switch_wal(&mut c, 9);
    cluster.wait_archived(during.last().unwrap(), WAIT);
    let storage = S3Storage::open(&s3.bucket, "outage", &options(&s3)).unwrap();
    let repo = Arc::new(Repository::open(Box::new(storage), false).unwrap());
    let entry = repo
        .cluster(cluster.system_identifier(), cluster.install.major, false)
        .unwrap();
    for name in std::iter::once(&first).chain(&during) {
        assert!(
            entry.get_wal(name).unwrap().is_some(),
            "{name} in S3 after the outage"
        );
    }
}

#[test]
fn bad_s3_settings_show_in_status_and_log() {
    let s3 = S3Server::start();
    let cluster = Cluster::start_with(
        archiving_to(&s3, "x").set("ark.repository", "'s3://missing-bucket/x'"),
    );
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    Cluster::write_and_switch_wal(&mut c, 1);
    cluster.wait_for_log("NoSuchBucket", WAIT);
    // The module records the reason just after the archiver logs it.
    let mut reason: Option<String> = None;
    wait_until("the failure reason in ark.archive_status()", WAIT, || {
        reason = c
            .query_one("SELECT last_failure_reason FROM ark.archive_status()", &[])
            .unwrap()
            .get(0);
        reason
            .as_deref()
            .is_some_and(|r| r.contains("s3://missing-bucket/x") && r.contains("NoSuchBucket"))
    });

    c.batch_execute(&format!(
        "ALTER SYSTEM SET ark.repository = 's3://{}/x'",
        s3.bucket
    ))
    .unwrap();
    c.batch_execute("ALTER SYSTEM SET ark.s3_secret_access_key = 'not-the-secret'")
        .unwrap();
    c.execute("SELECT pg_reload_conf()", &[]).unwrap();
    wait_until("a credentials failure in status", WAIT, || {
        let r: Option<String> = c
            .query_one("SELECT last_failure_reason FROM ark.archive_status()", &[])
            .unwrap()
            .get(0);
        r.is_some_and(|r| {
            r.contains("SignatureDoesNotMatch")
                || r.contains("InvalidAccessKeyId")
                || r.contains("AccessDenied")
        })
    });
    // The secret is not shown to an ordinary role.
    // Superusers and members of pg_read_all_settings (so pg_monitor) may read
    // superuser-only settings; an ordinary role may not.
    c.batch_execute("CREATE ROLE watcher LOGIN").unwrap();
    let mut w = postgres::Client::connect(
        &cluster
            .connstr("postgres")
            .replace("user=postgres", "user=watcher"),
        postgres::NoTls,
    )
    .unwrap();
    let e = w
        .query_one("SHOW ark.s3_secret_access_key", &[])
        .unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("permission denied")
            || e.as_db_error()
                .unwrap()
                .message()
                .contains("must be superuser"),
        "{e}"
    );
}

#[test]
fn recovery_fetches_wal_from_s3() {
    let s3 = S3Server::start();
    let mut primary = Cluster::start_with(archiving_to(&s3, "pitr"));
    let mut c = primary.client();
    c.batch_execute("CREATE TABLE t (id int, v text)").unwrap();
    Cluster::write_and_switch_wal(&mut c, 1);
    let (bb_dir, backup) = primary.base_backup();
    let last = Cluster::write_and_switch_wal(&mut c, 2);
    let expected: i64 = c.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
    primary.wait_archived(&last, WAIT);
    drop(c);
    assert!(primary.stop("fast").status.success());

    // A wrapper script supplies the credentials through the environment, as
    // an operator would; they never appear in restore_command.
    let wrapper = wal_get_wrapper(&s3, "pitr", bb_dir.path());
    let restored =
        Cluster::recover_from_backup(bb_dir, backup, &format!("{} %f %p", wrapper.display()));
    let n: i64 = restored
        .client()
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, expected);
}

#[test]
fn a_hung_s3_server_holds_an_archive_attempt_only_until_its_deadline() {
    // A server that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut cluster = Cluster::start_with(
        ClusterOptions::default()
            .set("archive_mode", "on")
            .set("archive_library", "'pg_ark'")
            .set("ark.repository", "'s3://bucket/x'")
            .set("ark.s3_endpoint", &format!("'http://127.0.0.1:{port}'"))
            .set("ark.s3_force_path_style", "on")
            .set("ark.s3_access_key_id", "'k'")
            .set("ark.s3_secret_access_key", "'s'")
            .set("ark.archive_timeout", "3"),
    );
    let mut c = cluster.client();
    c.batch_execute("CREATE TABLE t (id int, v text)").unwrap();
    let name = Cluster::write_and_switch_wal(&mut c, 1);
    // The attempt fails once its deadline passes (not after the SDK's
    // minutes of retries), and says why; the segment waits in pg_wal.
    let mut failed = 0i64;
    wait_until("failed archive attempts", WAIT, || {
        failed = c
            .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
            .unwrap()
            .get(0);
        failed >= 2
    });
    let log = cluster.log();
    assert!(
        log.contains(&format!("could not archive file \"{name}\"")),
        "{log}"
    );
    assert!(cluster.data.join(format!("pg_wal/{name}")).exists());
    // A fast shutdown is not held up by the hung server: pg_ctl's own
    // limit (60 s) would fail the stop otherwise.
    drop(c);
    let out = cluster.stop("fast");
    assert!(out.status.success(), "{out:?}");
    drop(silent);
}

/// `(count, md5 of every row in key order)` of table `t`.
fn digest(c: &mut postgres::Client) -> (i64, String) {
    let row = c
        .query_one(
            "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY id, v)), '') FROM t",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn a_chain_of_physical_backups_in_s3_verifies_and_restores_from_s3_alone() {
    let s3 = S3Server::start();
    let mut primary = Cluster::start_with(archiving_to(&s3, "phys"));
    let mut c = primary.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE t (id int, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
    )
    .unwrap();
    let mut ids = Vec::new();
    for (i, kind) in ["full", "incremental", "differential"].iter().enumerate() {
        if i > 0 {
            c.execute("UPDATE t SET v = md5(v) WHERE id % 50 = $1", &[&(i as i32)])
                .unwrap();
        }
        let doc: String = c
            .query_one("SELECT ark.wait(ark.backup($1), '5 min')::text", &[kind])
            .unwrap()
            .get(0);
        let done: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["result"]["kind"], *kind, "{done}");
        ids.push(done["result"]["backup_id"].as_str().unwrap().to_string());
    }
    // A restore drill of the chain from S3: its wal-get gets the keys of
    // ark.s3_* through the scratch server's environment (restore_command
    // is built from the repository's options, which hold no keys), and
    // the keys are nowhere in its result.
    let doc: String = c
        .query_one(
            "SELECT ark.wait(ark.backup('drill', '{\"count\": \"t\", \"max_attempts\": 1}'), '5 min')::text",
            &[],
        )
        .unwrap()
        .get(0);
    let drill: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(drill["state"], "succeeded", "{drill}");
    assert_eq!(drill["result"]["backup_id"], ids[2].as_str(), "{drill}");
    assert_eq!(drill["result"]["checks"][2]["rows"], 50000, "{drill}");
    assert!(
        !doc.contains(&s3.secret_key),
        "a key in the drill's result: {doc}"
    );
    let expected = digest(&mut c);
    drop(c);
    let sysid = primary.system_identifier();
    let major = primary.install.major;
    assert!(primary.stop("fast").status.success());

    let storage = S3Storage::open(&s3.bucket, "phys", &options(&s3)).unwrap();
    let repo = Arc::new(Repository::open(Box::new(storage), false).unwrap());
    let entry = repo.cluster(sysid, major, false).unwrap();
    let listed: Vec<String> = pg_ark_core::physical::list_backups(&entry)
        .unwrap()
        .into_iter()
        .map(|b| b.backup_id)
        .collect();
    assert_eq!(listed, ids);
    for id in &ids {
        assert_eq!(
            pg_ark_core::physical::verify_backup(&entry, id).unwrap(),
            vec![],
            "{id}"
        );
    }
    // `pg_ark verify` against S3, credentials from the environment.
    let out = std::process::Command::new(primary.install.bin("pg_ark"))
        .args(["verify", "--repo"])
        .arg(format!("s3://{}/phys", s3.bucket))
        .args(["--s3-endpoint", &s3.endpoint(), "--s3-path-style"])
        .env("AWS_ACCESS_KEY_ID", &s3.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 backup(s) verified"), "{stdout}");

    // The differential, rebuilt from S3, recovers with WAL from S3.
    let dir = pg_ark_tests::temp_dir("ark-restore-");
    let data = dir.path().join("data");
    pg_ark_core::physical::restore_backup(&entry, &ids[2], &data).unwrap();
    let wrapper = wal_get_wrapper(&s3, "phys", dir.path());
    let restored =
        Cluster::recover_restored(dir, data, &format!("{} %f %p", wrapper.display()), &[]);
    assert_eq!(digest(&mut restored.client()), expected);
}

#[test]
fn point_in_time_restores_from_s3_with_pg_ark_restore() {
    let s3 = S3Server::start();
    let primary = Cluster::start_with(archiving_to(&s3, "pitr"));
    let mut c = primary.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE pitr (id int PRIMARY KEY, xid xid8 DEFAULT pg_current_xact_id());",
    )
    .unwrap();
    let backup = |c: &mut postgres::Client, kind: &str| {
        let doc: String = c
            .query_one(
                "SELECT ark.wait(ark.backup($1, '{\"max_attempts\": 1}'), '5 min')::text",
                &[&kind],
            )
            .unwrap()
            .get(0);
        let done: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(done["state"], "succeeded", "{done}");
    };
    backup(&mut c, "full");
    let mut marks = vec![(String::new(), String::new())];
    for id in 1..=3 {
        let (at, _, xid) = pg_ark_tests::commit_row(&mut c, id);
        marks.push((at, xid));
    }
    backup(&mut c, "incremental");
    for id in 4..=6 {
        let (at, _, xid) = pg_ark_tests::commit_row(&mut c, id);
        marks.push((at, xid));
    }
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    wait_until("the last segment in S3", WAIT, || {
        last_archived(&primary).is_some_and(|l| l >= seg)
    });
    // The keys in a credentials file the restored server can read too.
    let keys = pg_ark_tests::temp_dir("ark-keys-");
    let file = s3.credentials_file(keys.path());
    let url = format!("s3://{}/pitr", s3.bucket);
    let endpoint = s3.endpoint();
    for (args, want) in [
        (
            vec!["--target-time", marks[5].0.as_str()],
            vec![1, 2, 3, 4, 5],
        ),
        (vec!["--target-xid", marks[2].1.as_str()], vec![1, 2]),
    ] {
        let dir = pg_ark_tests::temp_dir("ark-s3pitr-");
        let data = dir.path().join("data");
        let mut all = vec![
            "restore",
            "--repo",
            &url,
            "--s3-endpoint",
            &endpoint,
            "--s3-path-style",
            "--s3-credentials-file",
            file.to_str().unwrap(),
            "--pgdata",
            data.to_str().unwrap(),
            "--archive-off",
        ];
        all.extend_from_slice(&args);
        let (ok, out, err) = pg_ark_tests::pg_ark(&all);
        assert!(ok, "{out}{err}");
        let conf = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
        assert!(conf.contains("--s3-credentials-file"), "{conf}");
        assert!(
            !conf.contains(&s3.secret_key),
            "no key in restore_command: {conf}"
        );
        let restored = Cluster::start_restored(dir, data, &[]);
        let got: Vec<i32> = restored
            .client()
            .query("SELECT id FROM pitr ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(got, want, "{args:?}");
        assert!(restored.log().contains("restored log file"));
    }
}
