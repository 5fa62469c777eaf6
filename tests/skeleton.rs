//! The skeleton's behaviour, on real clusters: the extension, the
//! `pg_ark scheduler` worker's life cycle, the preload requirement, the
//! archive module's loading under both C APIs, and the pg_regress suite.
//! Run for every supported major (ARK_PG_CONFIG) as the smoke suite.
use pg_ark_tests::{wait_until, Cluster, ClusterOptions};
use std::path::Path;
use std::time::Duration;

const WORKER: &str = "pg_ark scheduler";

/// The scheduler's pid; `None` also when the session ends under us (a crash
/// restart can cut it between connect and query).
fn scheduler_pid(c: &mut postgres::Client) -> Option<i32> {
    c.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = $1",
        &[&WORKER],
    )
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

fn wait_for_scheduler(cluster: &Cluster, other_than: Option<i32>) -> i32 {
    let mut pid = None;
    wait_until(
        "the pg_ark scheduler in pg_stat_activity",
        Duration::from_secs(120),
        || {
            // A fresh session each time: a crash restart ends old ones.
            let Ok(mut c) =
                postgres::Client::connect(&cluster.connstr("postgres"), postgres::NoTls)
            else {
                return false;
            };
            pid = scheduler_pid(&mut c).filter(|p| Some(*p) != other_than);
            pid.is_some()
        },
    );
    pid.expect("scheduler pid")
}

#[test]
fn create_extension_and_version() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark")
        .expect("CREATE EXTENSION pg_ark");
    let version: String = c.query_one("SELECT ark.version()", &[]).unwrap().get(0);
    let extversion: String = c
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_ark'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        version, extversion,
        "ark.version() must match the installed extension version"
    );
    let schema: String = c
        .query_one(
            "SELECT n.nspname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE p.proname = 'version' AND n.nspname = 'ark'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(schema, "ark");
}

#[test]
fn scheduler_is_visible_in_pg_stat_activity() {
    let cluster = Cluster::start();
    let pid = wait_for_scheduler(&cluster, None);
    let mut c = cluster.client();
    let row = c
        .query_one(
            "SELECT datname::text, backend_type FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "postgres",
        "the scheduler connects to ark.database"
    );
    assert_eq!(row.get::<_, String>(1), WORKER);
    // It shows in pg_stat_activity a moment before it logs its start.
    cluster.wait_for_log(
        "pg_ark scheduler started (database \"postgres\"",
        Duration::from_secs(120),
    );
}

#[test]
fn scheduler_exits_cleanly_on_fast_shutdown() {
    let mut cluster = Cluster::start();
    wait_for_scheduler(&cluster, None);
    let out = cluster.stop("fast");
    assert!(
        out.status.success(),
        "pg_ctl stop -m fast: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = cluster.log();
    assert!(log.contains("pg_ark scheduler shutting down"), "{log}");
    assert!(log.contains("database system is shut down"), "{log}");
    assert!(
        !log.contains("terminated by signal"),
        "no process may die on a signal:\n{log}"
    );
    assert!(!log.contains("PANIC"), "{log}");
}

#[test]
fn scheduler_is_restarted_after_sigterm() {
    let cluster = Cluster::start();
    let first = wait_for_scheduler(&cluster, None);
    let mut c = cluster.client();
    let ok: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&first])
        .unwrap()
        .get(0);
    assert!(ok);
    let second = wait_for_scheduler(&cluster, Some(first));
    assert_ne!(first, second);
}

#[test]
fn scheduler_is_restarted_after_sigkill() {
    let cluster = Cluster::start();
    let first = wait_for_scheduler(&cluster, None);
    // SIGKILL makes the postmaster reinitialize shared memory (a crash
    // restart); the scheduler must come back with the rest of the server.
    let mark = cluster.log_mark();
    // SAFETY: kill(2) on a pid we own through the test user; as root here.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    // The crash restart (its log lines, after the kill) before any new session.
    drop(cluster.wait_crash_restart(mark, Duration::from_secs(60)));
    let second = wait_for_scheduler(&cluster, Some(first));
    assert_ne!(first, second);
}

#[test]
fn scheduler_reloads_settings_on_sighup() {
    let cluster = Cluster::start();
    wait_for_scheduler(&cluster, None);
    let mut c = cluster.client();
    c.execute("ALTER SYSTEM SET ark.scheduler_naptime = '7s'", &[])
        .unwrap();
    c.execute("SELECT pg_reload_conf()", &[]).unwrap();
    cluster.wait_for_log(
        "pg_ark scheduler reloaded its configuration (ark.scheduler_naptime = 7s)",
        Duration::from_secs(120),
    );
}

#[test]
fn using_pg_ark_without_preload_is_a_clear_error() {
    let cluster = Cluster::start_with(ClusterOptions::default().without_preload());
    let mut c = cluster.client();
    let err = c
        .batch_execute("CREATE EXTENSION pg_ark")
        .expect_err("must be refused");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "55000");
    assert_eq!(
        db.message(),
        "pg_ark must be loaded via shared_preload_libraries"
    );
    assert_eq!(
        db.hint(),
        Some("Add pg_ark to shared_preload_libraries in postgresql.conf and restart the server.")
    );
    // Nothing was left behind: the extension is not half-created.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pg_ark'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn archive_module_loads_through_the_majors_api() {
    // archive_library = 'pg_ark' exercises _PG_archive_module_init under
    // this major's C API (15's, or 16+'s). Without a repository the module
    // must say so and keep every segment in pg_wal.
    let cluster = Cluster::start_with(
        ClusterOptions::default()
            .set("archive_mode", "on")
            .set("archive_library", "'pg_ark'"),
    );
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g; SELECT pg_switch_wal();",
    )
    .unwrap();
    cluster.wait_for_log(
        "pg_ark has no repository to archive to",
        Duration::from_secs(90),
    );
    let failed: i64 = c
        .query_one("SELECT archived_count FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        failed, 0,
        "nothing may be reported archived without a repository"
    );
    let ready = std::fs::read_dir(cluster.data.join("pg_wal/archive_status"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .count();
    assert!(ready >= 1, "the switched segment must still wait in pg_wal");
    assert!(
        !cluster.log().contains("terminated by signal"),
        "{}",
        cluster.log()
    );
}

#[test]
fn the_archive_module_works_without_shared_preload_libraries() {
    // Only the archiver loads pg_ark here; it must not define a
    // postmaster-level setting after startup (which is FATAL, and would
    // make the archiver die in a loop).
    let repo = pg_ark_tests::temp_dir("ark-repo-");
    let cluster = Cluster::start_with(
        ClusterOptions::default()
            .without_preload()
            .set("archive_mode", "on")
            .set("archive_library", "'pg_ark'")
            .set(
                "ark.repository",
                &format!("'file://{}'", repo.path().display()),
            ),
    );
    let mut c = cluster.client();
    c.batch_execute("CREATE TABLE t (id int, v text)").unwrap();
    let name = Cluster::write_and_switch_wal(&mut c, 1);
    cluster.wait_archived(&name, Duration::from_secs(120));
    let log = cluster.log();
    assert!(
        !log.contains("cannot create PGC_POSTMASTER variables"),
        "{log}"
    );
    assert!(
        !log.contains("archiver process"),
        "the archiver was restarted: {log}"
    );
    // The stored copy reads back as the segment.
    let r = std::sync::Arc::new(
        pg_ark_core::repo::Repository::open(
            Box::new(pg_ark_core::storage::local::LocalStorage::open(repo.path()).unwrap()),
            false,
        )
        .unwrap(),
    );
    let entry = r
        .cluster(cluster.system_identifier(), cluster.install.major, false)
        .unwrap();
    assert!(entry.get_wal(&name).unwrap().is_some(), "{name} not stored");
}

#[test]
fn pg_regress_suite() {
    // pg_regress runs in its own database; the job queue lives there.
    let cluster =
        Cluster::start_with(ClusterOptions::default().set("ark.database", "'ark_regress'"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pg_test");
    let tests: Vec<String> = std::fs::read_dir(dir.join("sql"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".sql")
                .map(str::to_string)
        })
        .collect();
    assert!(!tests.is_empty(), "pg_test/sql holds the regression tests");
    let mut names: Vec<&str> = tests.iter().map(String::as_str).collect();
    names.sort();
    if let Err(diffs) = cluster.pg_regress(&dir, &names) {
        panic!("{diffs}");
    }
}
