//! What a member of `ark_admin` may do, tried both ways in: through the
//! documented functions (which work, and refuse a drill that would preload
//! a library from anywhere but `$libdir`), and around them (every direct
//! write to a catalog table is refused with 42501, and a job row written by
//! a superuser behind the functions' back is checked again when a worker
//! claims it: it fails, naming the option, and never runs).
use pg_ark_tests::{archiving, give_to_test_user, temp_dir, wait_job, wait_until, Cluster};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn options(repo: &Path, work: &Path) -> pg_ark_tests::ClusterOptions {
    archiving(repo)
        .set("ark.work_directory", &format!("'{}'", work.display()))
        .set("ark.max_parallel_jobs", "3")
        .set("ark.scheduler_naptime", "'1s'")
}

/// The extension, a small table, and `alice`: a LOGIN role that is a member
/// of `ark_admin` and nothing more.
fn prepare(cluster: &Cluster) -> postgres::Client {
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL);
         INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 1000) g;
         CREATE ROLE alice LOGIN;
         GRANT ark_admin TO alice;",
    )
    .unwrap();
    c
}

fn count(c: &mut postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

fn wait_for(c: &mut postgres::Client, id: i64) -> Value {
    let text: String = c
        .query_one("SELECT ark.wait($1, '5 min')::text", &[&id])
        .unwrap()
        .get(0);
    serde_json::from_str(&text).unwrap()
}

fn wait_phase(c: &mut postgres::Client, id: i64, phase: &str) {
    wait_until(&format!("job {id} in phase {phase:?}"), WAIT, || {
        let p: Option<String> = c
            .query_one(
                "SELECT progress->>'phase' FROM ark.jobs WHERE id = $1 AND state = 'running'",
                &[&id],
            )
            .map(|r| r.get(0))
            .unwrap_or(None);
        p.as_deref() == Some(phase)
    });
}

#[test]
fn an_admin_preloads_only_libdir_libraries_and_writes_the_catalog_only_through_functions() {
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    give_to_test_user(work.path());
    let cluster = Cluster::start_with(options(repo.path(), work.path()));
    let mut su = prepare(&cluster);
    let mut alice = cluster.client_as("alice");
    let is_super: bool = alice
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!is_super);

    // Paths, path tricks, lists smuggled into one name, and a plain name
    // that is not a library of $libdir: refused when queued or scheduled.
    let jobs_before = count(&mut su, "ark.jobs");
    for preload in [
        json!("/tmp/x.so"),
        json!("/tmp/x"),
        json!("$libdir/../../tmp/x"),
        json!("$libdir/amcheck"),
        json!("../x"),
        json!("amcheck/../amcheck"),
        json!(".."),
        json!("amcheck,/tmp/x.so"),
        json!("amcheck, x"),
        json!(["amcheck", "/tmp/x.so"]),
        json!("no_such_library_of_pg_ark"),
    ] {
        let opts = json!({ "shared_preload_libraries": preload }).to_string();
        for sql in [
            "SELECT ark.backup('drill', $1::text::jsonb)",
            "SELECT ark.schedule('drills', '@daily', 'drill', $1::text::jsonb)",
        ] {
            let e = alice
                .query_one(sql, &[&opts])
                .expect_err(&format!("{sql} with {opts} was accepted"));
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{sql} with {opts}: {e}"));
            assert!(
                ["42501", "22023"].contains(&db.code().code()),
                "{sql} with {opts}: {} {}",
                db.code().code(),
                db.message()
            );
            assert!(
                db.message().contains("shared_preload_libraries"),
                "{sql} with {opts}: {}",
                db.message()
            );
            assert!(
                db.hint().is_some_and(|h| h.contains("$libdir")),
                "{sql} with {opts}: hint {:?}",
                db.hint()
            );
        }
    }
    assert_eq!(count(&mut su, "ark.jobs"), jobs_before, "a job was queued");
    assert_eq!(count(&mut su, "ark.schedules"), 0, "a schedule was stored");

    // No direct writes to the catalog: the functions are the interface.
    for sql in [
        r#"INSERT INTO ark.jobs (kind, options, conflict_key, max_attempts)
           VALUES ('drill', '{"shared_preload_libraries": "/tmp/x.so"}', 'physical', 1)"#,
        "INSERT INTO ark.jobs (kind, max_attempts) VALUES ('full', 1)",
        r#"UPDATE ark.jobs SET options = '{"shared_preload_libraries": "/tmp/x.so"}'"#,
        "UPDATE ark.jobs SET conflict_key = NULL",
        "DELETE FROM ark.jobs",
        "TRUNCATE ark.jobs",
        "UPDATE ark.backups SET path = 'elsewhere'",
        "INSERT INTO ark.backups (kind, label, size_bytes, started_at, finished_at, server_version, repository, path)
         VALUES ('full', 'x', 0, now(), now(), '17', 'file:///tmp', 'x')",
        "DELETE FROM ark.backups",
        "INSERT INTO ark.schedules (name, cron, kind) VALUES ('x', '@daily', 'full')",
        "UPDATE ark.schedules SET options = '{}'",
        "DELETE FROM ark.schedules",
        "INSERT INTO ark.notifications (event, payload) VALUES ('job.failed', '{}')",
        "UPDATE ark.notifications SET state = 'pending'",
        "DELETE FROM ark.notifications",
        "SELECT nextval('ark.jobs_id_seq')",
    ] {
        let e = alice
            .batch_execute(sql)
            .expect_err(&format!("{sql} was allowed"));
        let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        assert_eq!(db.code().code(), "42501", "{sql}: {}", db.message());
    }

    // The documented functions work for alice.
    let id: i64 = alice
        .query_one("SELECT ark.schedule('nightly', '@daily', 'full')", &[])
        .unwrap()
        .get(0);
    let again: i64 = alice
        .query_one(
            "SELECT ark.schedule('nightly', '0 3 * * *', 'full', '{\"max_attempts\": 2}')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(id, again);
    let cron: String = alice
        .query_one("SELECT cron FROM ark.schedules WHERE name = 'nightly'", &[])
        .unwrap()
        .get(0);
    assert_eq!(cron, "0 3 * * *");
    let gone: bool = alice
        .query_one("SELECT ark.unschedule('nightly')", &[])
        .unwrap()
        .get(0);
    assert!(gone);
    assert_eq!(count(&mut su, "ark.schedules"), 0);

    let full = wait_job(&mut alice, "full", r#"{"max_attempts": 1}"#);
    assert_eq!(full["state"], "succeeded", "{full}");
    let verify: i64 = alice.query_one("SELECT ark.verify()", &[]).unwrap().get(0);
    let verify = wait_for(&mut alice, verify);
    assert_eq!(verify["state"], "succeeded", "{verify}");

    // A plain name of a library in $libdir is accepted, and the drill,
    // checked again when claimed, runs with it.
    let drill = wait_job(
        &mut alice,
        "drill",
        r#"{"shared_preload_libraries": ["amcheck"], "count": "public.orders", "max_attempts": 1}"#,
    );
    assert_eq!(drill["state"], "succeeded", "{drill}");
    assert_eq!(drill["result"]["ok"], true, "{drill}");

    // Cancel and retry: a full backup held waiting for its WAL.
    let archiver = cluster.pause_archiver(&mut su);
    let held: i64 = alice
        .query_one("SELECT ark.backup('full', '{\"max_attempts\": 1}')", &[])
        .unwrap()
        .get(0);
    let cancelled: bool = alice
        .query_one("SELECT ark.cancel($1)", &[&held])
        .unwrap()
        .get(0);
    assert!(cancelled);
    let done = wait_for(&mut alice, held);
    Cluster::resume(archiver);
    assert_eq!(done["state"], "cancelled", "{done}");
    let retried: i64 = alice
        .query_one("SELECT ark.retry($1)", &[&held])
        .unwrap()
        .get(0);
    assert_eq!(retried, held);
    let done = wait_for(&mut alice, held);
    assert_eq!(done["state"], "succeeded", "{done}");

    let status: String = alice
        .query_one("SELECT ark.status()::text", &[])
        .unwrap()
        .get(0);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert!(status["status"].is_string(), "{status}");
    // Nothing to expire; the last row says where recovery can start.
    let expired: Vec<(String, String)> = alice
        .query("SELECT kind, label FROM ark.expire(dry_run => true)", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].0, "recoverable from", "{expired:?}");
}

/// A cluster (repository and work directory in temp dirs) prepared for
/// the tests, with one full backup taken.
fn with_a_full_backup() -> (
    tempfile::TempDir,
    tempfile::TempDir,
    Cluster,
    postgres::Client,
) {
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    give_to_test_user(work.path());
    let cluster = Cluster::start_with(options(repo.path(), work.path()));
    let mut c = prepare(&cluster);
    let full = wait_job(&mut c, "full", r#"{"max_attempts": 1}"#);
    assert_eq!(full["state"], "succeeded", "{full}");
    (repo, work, cluster, c)
}

#[test]
fn a_drill_row_with_a_library_path_is_refused_when_claimed() {
    let (_repo, work, cluster, mut c) = with_a_full_backup();

    // A drill whose options were never validated: a library by path.
    let bad: i64 = c
        .query_one(
            r#"INSERT INTO ark.jobs (kind, options, conflict_key, max_attempts)
               VALUES ('drill', '{"shared_preload_libraries": "/tmp/x.so"}', 'physical', 1)
               RETURNING id"#,
            &[],
        )
        .unwrap()
        .get(0);
    let done = wait_for(&mut c, bad);
    let error = done["error"].as_str().unwrap_or_default();
    // PostgreSQL says "could not access file" or "could not load library".
    for said in ["could not load library", "could not access file"] {
        assert!(
            !error.contains(said),
            "a scratch server tried to load the library: {done}"
        );
        assert!(
            !cluster.log().contains(&format!("{said} \"/tmp/x.so\"")),
            "a server tried to load /tmp/x.so"
        );
    }
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        error.contains("shared_preload_libraries") && error.contains("/tmp/x.so"),
        "{done}"
    );
    assert!(
        !work.path().join(format!("job-{bad}-drill")).exists(),
        "the drill got as far as a scratch directory"
    );
}

#[test]
fn physical_jobs_without_their_conflict_key_never_run_beside_a_backup() {
    let (_repo, _work, cluster, mut c) = with_a_full_backup();

    // Physical jobs whose conflict key was taken away or changed, queued
    // while a full backup runs (held waiting for its WAL).
    let archiver = cluster.pause_archiver(&mut c);
    let running: i64 = c
        .query_one("SELECT ark.backup('full', '{\"max_attempts\": 1}')", &[])
        .unwrap()
        .get(0);
    wait_phase(&mut c, running, "wait for WAL");
    let mut bad_keys = Vec::new();
    for (kind, key) in [("full", None), ("incremental", Some("other"))] {
        let id: i64 = c
            .query_one(
                "INSERT INTO ark.jobs (kind, conflict_key, max_attempts) VALUES ($1, $2, 1)
                 RETURNING id",
                &[&kind, &key],
            )
            .unwrap()
            .get(0);
        bad_keys.push(id);
    }
    // Give the workers every chance to claim them while the backup runs.
    wait_until(
        "the jobs with bad conflict keys to be claimed",
        WAIT,
        || {
            let waiting: i64 = c
            .query_one(
                "SELECT count(*) FROM ark.jobs WHERE id = ANY($1) AND state IN ('queued', 'retrying')",
                &[&bad_keys],
            )
            .unwrap()
            .get(0);
            waiting == 0
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    Cluster::resume(archiver);
    let first = wait_for(&mut c, running);
    let others: Vec<Value> = bad_keys.iter().map(|&id| wait_for(&mut c, id)).collect();
    let overlaps: Vec<(i64, i64)> = c
        .query(
            "SELECT x.id, y.id FROM ark.jobs x JOIN ark.jobs y ON x.id < y.id
              WHERE x.kind <> 'logical' AND y.kind <> 'logical'
                AND x.started_at IS NOT NULL AND y.started_at IS NOT NULL
                AND tstzrange(x.started_at, coalesce(x.finished_at, 'infinity'))
                    && tstzrange(y.started_at, coalesce(y.finished_at, 'infinity'))",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(overlaps, vec![], "physical jobs ran at the same time");
    assert_eq!(first["state"], "succeeded", "{first}");
    for done in others {
        assert_eq!(done["state"], "failed", "{done}");
        let error = done["error"].as_str().unwrap_or_default();
        assert!(error.contains("conflict_key"), "{done}");
    }
}
