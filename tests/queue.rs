//! The job queue on real clusters: schedules, `ark.backup()` + `ark.wait()`,
//! logical dumps that pg_restore reads (local and S3), retries with growing
//! delays, recovery of a job whose worker was killed, exactly-once claims,
//! cancel, the webhook, retention, and roles.
use pg_ark_core::storage::s3::{S3Options, S3Storage};
use pg_ark_core::storage::Storage;
use pg_ark_tests::{free_port, temp_dir, wait_until, Cluster, ClusterOptions, S3Server};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// A cluster whose scheduler wakes every second and retries after 1 s.
fn queue_options(repo: &str) -> ClusterOptions {
    ClusterOptions::default()
        .set("ark.repository", &format!("'{repo}'"))
        .set("ark.scheduler_naptime", "1")
        .set("ark.job_retry_base", "1")
        .set("ark.job_retry_cap", "4")
}

fn local(repo: &Path) -> String {
    format!("file://{}", repo.display())
}

/// Install pg_ark and make database `app` with some rows.
fn prepare(cluster: &Cluster) -> postgres::Client {
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    c.batch_execute("CREATE DATABASE app").unwrap();
    let mut app = cluster.client_on("app");
    app.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, note text);
         INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    c
}

fn json(
    c: &mut postgres::Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Value {
    let row = c.query_one(sql, params).unwrap();
    let text: String = row.get(0);
    serde_json::from_str(&text).unwrap()
}

/// `ark.wait(id)` as JSON.
fn wait_job(c: &mut postgres::Client, id: i64) -> Value {
    json(c, "SELECT ark.wait($1, '120s')::text", &[&id])
}

/// `ark.wait(ark.backup('logical', options))`, as the issue's psql user writes it.
fn run_backup(c: &mut postgres::Client, options: &str) -> Value {
    json(
        c,
        "SELECT ark.wait(ark.backup('logical', $1::text::jsonb), '120s')::text",
        &[&options],
    )
}

fn backup(c: &mut postgres::Client, options: &str) -> i64 {
    c.query_one("SELECT ark.backup('logical', $1::text::jsonb)", &[&options])
        .unwrap()
        .get(0)
}

/// The data key of each dump a job's result lists.
fn dump_keys(result: &Value) -> Vec<String> {
    result["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("no backups in {result}"))
        .iter()
        .flat_map(|b| {
            b["keys"]
                .as_array()
                .unwrap_or_else(|| panic!("no keys in {b}"))
                .iter()
                .map(|k| k.as_str().unwrap().to_string())
        })
        .collect()
}

/// `pg_restore --list` of a dump file; returns its output.
fn pg_restore_list(cluster: &Cluster, file: &Path) -> String {
    let out = Command::new(cluster.install.bin("pg_restore"))
        .arg("--list")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore --list {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The running totals of logical jobs (`ark.job_totals`), by event.
fn logical_totals(c: &mut postgres::Client) -> Vec<(String, i64)> {
    c.query(
        "SELECT event, total FROM ark.job_totals WHERE kind = 'logical' ORDER BY event",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[test]
fn wait_on_backup_gives_a_dump_that_pg_restore_reads() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    let id = backup(&mut c, r#"{"database": "app"}"#);
    let done = wait_job(&mut c, id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    let keys = dump_keys(&done["result"]);
    assert_eq!(keys.len(), 1, "{done}");
    let list = pg_restore_list(&cluster, &repo.path().join(&keys[0]));
    assert!(list.contains("TABLE public orders"), "{list}");
    assert!(list.contains("TABLE DATA public orders"), "{list}");

    // The catalog knows the dump, with its place in the repository.
    let row = c
        .query_one(
            "SELECT kind, database, format, size_bytes, job_id, server_version = current_setting('server_version'),
                    repository
               FROM ark.backups",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "logical");
    assert_eq!(row.get::<_, String>(1), "app");
    assert_eq!(row.get::<_, String>(2), "custom");
    assert_eq!(
        row.get::<_, i64>(3) as u64,
        std::fs::metadata(repo.path().join(&keys[0])).unwrap().len()
    );
    assert_eq!(row.get::<_, i64>(4), id);
    assert!(row.get::<_, bool>(5));
    // The repository describes the dump too: restore works without the database.
    let info_dir = repo.path().join(&keys[0]);
    let info = info_dir.parent().unwrap().join("backup.info");
    assert!(info.exists(), "{} is missing", info.display());
}

#[test]
fn default_backup_dumps_every_connectable_database_in_plain_and_directory_formats() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    // Every connectable database but templates: postgres and app.
    let done = run_backup(&mut c, "{}");
    assert_eq!(done["state"], "succeeded", "{done}");
    let mut dbs: Vec<String> = done["result"]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["database"].as_str().unwrap().to_string())
        .collect();
    dbs.sort();
    assert_eq!(dbs, vec!["app", "postgres"]);

    let plain = run_backup(&mut c, r#"{"database": "app", "format": "plain"}"#);
    assert_eq!(plain["state"], "succeeded", "{plain}");
    let sql = std::fs::read_to_string(repo.path().join(&dump_keys(&plain["result"])[0])).unwrap();
    assert!(sql.contains("CREATE TABLE public.orders"), "{sql}");

    let dir = run_backup(
        &mut c,
        r#"{"database": "app", "format": "directory", "jobs": 2}"#,
    );
    assert_eq!(dir["state"], "succeeded", "{dir}");
    let keys = dump_keys(&dir["result"]);
    let toc = keys
        .iter()
        .find(|k| k.ends_with("/toc.dat"))
        .unwrap_or_else(|| panic!("no toc.dat in {keys:?}"));
    let list = pg_restore_list(&cluster, repo.path().join(toc).parent().unwrap());
    assert!(list.contains("TABLE DATA public orders"), "{list}");
}

#[test]
fn a_directory_dump_stages_outside_pgdata_and_a_dead_jobs_leftovers_are_swept() {
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    pg_ark_tests::give_to_test_user(work.path());
    let cluster = Cluster::start_with(queue_options(&local(repo.path())).set(
        "ark.work_directory",
        &format!("'{}'", work.path().display()),
    ));
    let mut c = prepare(&cluster);
    let blocker = block_dumps(&cluster);
    let id = backup(
        &mut c,
        r#"{"database": "app", "format": "directory", "max_attempts": 1}"#,
    );
    let pid = wait_running(&mut c, id);
    let staged = work.path().join(format!("job-{id}-0"));
    wait_until("pg_dump's output directory", WAIT, || staged.is_dir());
    assert!(
        !cluster.data.join("pg_ark/tmp").exists(),
        "a dump was staged inside the data directory"
    );
    // The worker dies in the middle: its staged files stay behind until the
    // next scheduler start sweeps them.
    let mark = cluster.log_mark();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    drop(c);
    drop(blocker);
    let mut c = cluster.wait_crash_restart(mark, WAIT);
    cluster.wait_for_log_after(
        mark,
        &format!(
            "pg_ark removed \"{}\", left by a job that did not finish",
            staged.display()
        ),
        WAIT,
    );
    assert!(!staged.exists(), "{} is still there", staged.display());
    let done = wait_job(&mut c, id);
    assert_eq!(done["state"], "failed", "{done}");
}

#[test]
fn a_work_directory_inside_pgdata_is_refused() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let inside = cluster.data.join("pg_ark/tmp");
    let mut c = prepare(&cluster);
    c.batch_execute(&format!(
        "ALTER SYSTEM SET ark.work_directory = '{}'",
        inside.display()
    ))
    .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    // Reloaded once the scheduler and new workers see it.
    cluster.wait_for_log("received SIGHUP, reloading configuration files", WAIT);
    let done = run_backup(
        &mut c,
        r#"{"database": "app", "format": "directory", "max_attempts": 1}"#,
    );
    assert_eq!(done["state"], "failed", "{done}");
    let err = done["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("ark.work_directory") && err.contains("inside the data directory"),
        "{err}"
    );
    assert!(!inside.exists(), "{}", inside.display());
}

#[test]
fn wait_on_backup_into_s3() {
    let s3 = S3Server::start();
    let url = format!("s3://{}/ark", s3.bucket);
    let cluster = Cluster::start_with(
        queue_options(&url)
            .set("ark.s3_endpoint", &format!("'{}'", s3.endpoint()))
            .set("ark.s3_force_path_style", "on")
            .set("ark.s3_access_key_id", &format!("'{}'", s3.access_key))
            .set("ark.s3_secret_access_key", &format!("'{}'", s3.secret_key)),
    );
    let mut c = prepare(&cluster);
    let done = run_backup(&mut c, r#"{"database": "app"}"#);
    assert_eq!(done["state"], "succeeded", "{done}");
    let keys = dump_keys(&done["result"]);
    let storage = S3Storage::open(
        &s3.bucket,
        "ark",
        &S3Options {
            endpoint: Some(s3.endpoint()),
            region: Some("us-east-1".into()),
            force_path_style: true,
            access_key_id: Some(s3.access_key.clone()),
            secret_access_key: Some(s3.secret_key.clone()),
            operation_timeout: None,
            object_lock: None,
        },
    )
    .unwrap();
    let dump = storage.get(&keys[0]).unwrap();
    let file = temp_dir("ark-dl-");
    let path = file.path().join("app.dump");
    std::fs::write(&path, dump).unwrap();
    let list = pg_restore_list(&cluster, &path);
    assert!(list.contains("TABLE DATA public orders"), "{list}");
}

#[test]
fn a_schedule_runs_when_due_and_once_per_due_time() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    let clock = |c: &mut postgres::Client| -> f64 {
        c.query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
            .unwrap()
            .get(0)
    };
    let before = clock(&mut c);
    let id: i64 = c
        .query_one(
            "SELECT ark.schedule('app-every-minute', '* * * * *', 'logical', '{\"database\": \"app\"}')",
            &[],
        )
        .unwrap()
        .get(0);
    let after = clock(&mut c);
    assert!(id > 0);
    // The next run is the start of the minute after the call (which may
    // itself straddle a minute boundary).
    let (next_ok, first_due): (bool, f64) = {
        let r = c
            .query_one(
                "SELECT next_run IN (date_trunc('minute', to_timestamp($1)) + interval '1 minute',
                                     date_trunc('minute', to_timestamp($2)) + interval '1 minute'),
                        extract(epoch FROM next_run)::float8
                   FROM ark.schedules",
                &[&before, &after],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(
        next_ok,
        "next_run {first_due} for a call between {before} and {after}"
    );
    let job = {
        let mut found = None;
        // Due at the next minute: up to 60 s away, and a loaded machine
        // may take a while more to queue it.
        wait_until("the scheduled job", Duration::from_secs(180), || {
            found = c
                .query_opt(
                    "SELECT id FROM ark.jobs WHERE schedule_name = 'app-every-minute'
                      ORDER BY scheduled_for LIMIT 1",
                    &[],
                )
                .unwrap()
                .map(|r| r.get::<_, i64>(0));
            found.is_some()
        });
        found.unwrap()
    };
    let done = wait_job(&mut c, job);
    assert_eq!(done["state"], "succeeded", "{done}");
    // The first job is the run due at that next_run, and the schedule moved
    // on past it in the same commit.
    let (due, next, last_job): (f64, f64, Option<i64>) = {
        let r = c
            .query_one(
                "SELECT extract(epoch FROM j.scheduled_for)::float8,
                        extract(epoch FROM s.next_run)::float8, s.last_job_id
                   FROM ark.jobs j JOIN ark.schedules s ON s.name = j.schedule_name
                  WHERE j.id = $1",
                &[&job],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(due, first_due, "job {job} ran for another due time");
    assert!(
        next >= due + 60.0,
        "next_run {next} did not move past {due}"
    );
    assert!(
        last_job.is_some_and(|j| j >= job),
        "last_job_id {last_job:?}"
    );
    // Each job the schedule queued was started exactly once: worker claims
    // never run one twice. States are read before the log, so a job seen
    // finished has its start line in the log read after.
    let jobs: Vec<(i64, String)> = c
        .query(
            "SELECT id, state FROM ark.jobs WHERE schedule_name = 'app-every-minute'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let log = cluster.log();
    for (id, state) in &jobs {
        let starts = log
            .matches(&format!("pg_ark job {id} (logical) started"))
            .count();
        if state == "succeeded" {
            assert_eq!(starts, 1, "job {id} started {starts} times");
        } else {
            assert!(starts <= 1, "job {id} ({state}) started {starts} times");
        }
    }
    // Replacing keeps the id; unscheduling removes it; jobs stay.
    let again: i64 = c
        .query_one(
            "SELECT ark.schedule('app-every-minute', '@daily', 'logical', '{\"database\": \"app\"}')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(again, id);
    assert!(c
        .query_one("SELECT ark.unschedule('app-every-minute')", &[])
        .unwrap()
        .get::<_, bool>(0));
    assert!(!c
        .query_one("SELECT ark.unschedule('app-every-minute')", &[])
        .unwrap()
        .get::<_, bool>(0));
    assert!(
        c.query_one("SELECT count(*) FROM ark.jobs", &[])
            .unwrap()
            .get::<_, i64>(0)
            >= 1
    );
}

/// A permanent failure (the database does not exist) ends the job at once:
/// trying again would fail the same way (it was retried, with backoff,
/// until every attempt was used).
#[test]
fn a_dump_of_a_missing_database_fails_at_once_without_retrying() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    let id = backup(&mut c, r#"{"database": "no_such_db", "max_attempts": 4}"#);
    let done = wait_job(&mut c, id);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    let err = done["error"].as_str().unwrap();
    assert!(err.contains("no_such_db"), "{err}");
    let log = cluster.log();
    assert!(
        log.contains(&format!(
            "pg_ark job {id} failed (a permanent failure, not retried)"
        )),
        "{log}"
    );
    assert!(!log.contains(&format!("pg_ark job {id} attempt 1 of 4 failed, retrying")));
    // Nothing half-written is left in the repository or the catalog.
    let n: i64 = c
        .query_one("SELECT count(*) FROM ark.backups", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // The health document says so, in words.
    let status = json(&mut c, "SELECT ark.status()::text", &[]);
    assert_eq!(status["status"], "failing", "{status}");
    let messages = status["messages"].to_string();
    assert!(
        messages.contains(&format!("logical job {id} failed after 1 attempt:")),
        "{messages}"
    );
    // ark.retry() queues it afresh (seen inside its own transaction, before
    // a worker can claim it), and it runs, and fails, once more.
    let mut tx = c.transaction().unwrap();
    let again: i64 = tx.query_one("SELECT ark.retry($1)", &[&id]).unwrap().get(0);
    assert_eq!(again, id);
    let (state, attempts): (String, i32) = {
        let r = tx
            .query_one("SELECT state, attempts FROM ark.jobs WHERE id = $1", &[&id])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((state.as_str(), attempts), ("queued", 0));
    tx.commit().unwrap();
    let done = wait_job(&mut c, id);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
}

/// A transient failure (an S3 endpoint that refuses connections) is
/// retried with growing delays until the attempts are used.
#[test]
fn a_repository_out_of_reach_is_retried_with_growing_delays_then_fails() {
    // Nothing listens there: connections are refused.
    let port = free_port();
    let cluster = Cluster::start_with(
        queue_options("s3://bucket/x")
            .set("ark.s3_endpoint", &format!("'http://127.0.0.1:{port}'"))
            .set("ark.s3_force_path_style", "on")
            .set("ark.s3_access_key_id", "'k'")
            .set("ark.s3_secret_access_key", "'s'"),
    );
    let mut c = prepare(&cluster);
    let id = backup(&mut c, r#"{"database": "app", "max_attempts": 4}"#);
    let done = wait_job(&mut c, id);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["attempts"], 4, "{done}");
    let err = done["error"].as_str().unwrap();
    assert!(err.contains("cannot reach"), "{err}");
    // base 1 s, doubling, capped at 4 s: 1, 2, 4 after attempts 1, 2, 3.
    let log = cluster.log();
    for (attempt, delay) in [(1, "1.0"), (2, "2.0"), (3, "4.0")] {
        let needle = format!("pg_ark job {id} attempt {attempt} of 4 failed, retrying in {delay}s");
        assert!(log.contains(&needle), "{needle:?} missing from the log");
    }
    assert!(log.contains(&format!("pg_ark job {id} failed after 4 attempts")));
    // The running totals behind /metrics: three attempts retried, one job
    // failed.
    let totals = logical_totals(&mut c);
    assert_eq!(
        totals,
        [("failed".to_string(), 1), ("retried".to_string(), 3)]
    );
    let status = json(&mut c, "SELECT ark.status()::text", &[]);
    assert_eq!(status["status"], "failing", "{status}");
    assert!(
        status["messages"]
            .to_string()
            .contains(&format!("logical job {id} failed after 4 attempts")),
        "{status}"
    );
}

#[test]
fn retry_acts_only_on_the_state_it_sees() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    let id = backup(&mut c, r#"{"database": "no_such_db", "max_attempts": 1}"#);
    assert_eq!(wait_job(&mut c, id)["state"], "failed");
    // Another session changes the job (as a claim after someone else's
    // retry would) and holds its row while ark.retry() runs.
    let mut other = cluster.client();
    other
        .batch_execute(&format!(
            "BEGIN; UPDATE ark.jobs SET state = 'running', attempts = 1 WHERE id = {id}"
        ))
        .unwrap();
    let me: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let result = std::thread::scope(|scope| {
        let call = scope.spawn(|| {
            c.query_one("SELECT ark.retry($1)", &[&id])
                .map(|r| r.get::<_, i64>(0))
        });
        let mut watcher = cluster.client();
        wait_until("ark.retry() waiting for the row", WAIT, || {
            watcher
                .query_one(
                    "SELECT coalesce(wait_event_type = 'Lock', false)
                       FROM pg_stat_activity WHERE pid = $1",
                    &[&me],
                )
                .unwrap()
                .get(0)
        });
        other.batch_execute("COMMIT").unwrap();
        call.join().unwrap()
    });
    // It saw "failed" when it started, but the row it got is running: it is
    // refused, never turned back to queued under a running worker.
    let e = result.unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "55000");
    assert_eq!(
        db.message(),
        format!("job {id} cannot be retried: it is running")
    );
}

/// Hold a lock that pg_dump waits for, so a job stays running.
fn block_dumps(cluster: &Cluster) -> postgres::Client {
    let mut blocker = cluster.client_on("app");
    blocker
        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    blocker
}

fn wait_running(c: &mut postgres::Client, id: i64) -> i32 {
    let mut pid = 0;
    wait_until("the job to run", WAIT, || {
        let r = c
            .query_one(
                "SELECT state, coalesce(worker_pid, 0) FROM ark.jobs WHERE id = $1",
                &[&id],
            )
            .unwrap();
        pid = r.get(1);
        r.get::<_, String>(0) == "running" && pid > 0
    });
    pid
}

#[test]
fn a_killed_job_worker_leaves_no_stuck_job() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    let blocker = block_dumps(&cluster);
    let id = backup(&mut c, r#"{"database": "app", "max_attempts": 3}"#);
    let pid = wait_running(&mut c, id);
    // kill -9: the postmaster restarts every process (crash recovery). A
    // session is trusted only once that restart has happened.
    let mark = cluster.log_mark();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    drop(c);
    drop(blocker);
    let mut c = cluster.wait_crash_restart(mark, WAIT);
    let done = wait_job(&mut c, id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let err = done["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&format!(
            "the job worker (pid {pid}) ended without finishing the job"
        )),
        "{done}"
    );
}

#[test]
fn twenty_jobs_with_two_workers_each_run_exactly_once() {
    let repo = temp_dir("ark-repo-");
    let cluster =
        Cluster::start_with(queue_options(&local(repo.path())).set("ark.max_parallel_jobs", "2"));
    let mut c = prepare(&cluster);
    let ids: Vec<i64> = (0..20)
        .map(|_| backup(&mut c, r#"{"database": "app"}"#))
        .collect();
    wait_until("the 20 jobs to finish", Duration::from_secs(300), || {
        c.query_one(
            "SELECT count(*) FROM ark.jobs WHERE state IN ('succeeded', 'failed', 'cancelled')",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 20
    });
    // Each worker records when it claimed its job and when it finished it;
    // the most jobs running at once is the largest number of those
    // [started, finished) spans that hold at the start of one of them. A
    // sampled count could miss a peak; this cannot.
    let (peak, spans): (i64, String) = {
        let r = c
            .query_one(
                "SELECT max(n), string_agg(span, ', ' ORDER BY span) FROM (
                    SELECT (SELECT count(*) FROM ark.jobs k
                             WHERE k.started_at <= j.started_at AND j.started_at < k.finished_at) AS n,
                           j.id || ': ' || j.started_at || ' .. ' || j.finished_at AS span
                      FROM ark.jobs j) s",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(
        (1..=2).contains(&peak),
        "{peak} jobs ran at once with ark.max_parallel_jobs = 2: {spans}"
    );
    let log = cluster.log();
    for id in &ids {
        let r = c
            .query_one("SELECT state, attempts FROM ark.jobs WHERE id = $1", &[id])
            .unwrap();
        assert_eq!(r.get::<_, String>(0), "succeeded", "job {id}");
        assert_eq!(r.get::<_, i32>(1), 1, "job {id}");
        let starts = log
            .matches(&format!("pg_ark job {id} (logical) started"))
            .count();
        assert_eq!(starts, 1, "job {id} started {starts} times");
    }
    let (rows, jobs): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*), count(DISTINCT job_id) FROM ark.backups",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((rows, jobs), (20, 20));
}

#[test]
fn cancel_stops_queued_and_running_jobs() {
    let repo = temp_dir("ark-repo-");
    let cluster =
        Cluster::start_with(queue_options(&local(repo.path())).set("ark.max_parallel_jobs", "1"));
    let mut c = prepare(&cluster);
    let mut blocker = block_dumps(&cluster);
    let running = backup(&mut c, r#"{"database": "app"}"#);
    wait_running(&mut c, running);
    // With one worker busy, the second job waits in the queue.
    let queued = backup(&mut c, r#"{"database": "app"}"#);
    assert!(c
        .query_one("SELECT ark.cancel($1)", &[&queued])
        .unwrap()
        .get::<_, bool>(0));
    assert!(c
        .query_one("SELECT ark.cancel($1)", &[&running])
        .unwrap()
        .get::<_, bool>(0));
    let done = wait_job(&mut c, running);
    assert_eq!(done["state"], "cancelled", "{done}");
    let q = wait_job(&mut c, queued);
    assert_eq!(q["state"], "cancelled", "{q}");
    let _ = blocker.batch_execute("ROLLBACK");
    // Nothing was stored, and cancelling again is refused with a reason.
    let n: i64 = c
        .query_one("SELECT count(*) FROM ark.backups", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let e = c
        .query_one("SELECT ark.cancel($1)", &[&running])
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "55000");
    assert_eq!(
        db.message(),
        format!("job {running} cannot be cancelled: it is cancelled")
    );
}

/// A webhook endpoint: answers 200 to every POST and passes each body on.
/// The thread ends with the test process.
fn listen() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let Ok(clone) = s.try_clone() else { continue };
            let mut r = BufReader::new(clone);
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx
                .send(String::from_utf8_lossy(&body).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    (port, rx)
}

#[test]
fn the_webhook_hears_about_failures_and_successes() {
    let repo = temp_dir("ark-repo-");
    let (port, listener) = listen();
    // A loaded machine may answer slowly: a delivery timed out would be
    // sent again, which the test tolerates, but it must not be given up.
    let cluster = Cluster::start_with(
        queue_options(&local(repo.path()))
            .set("ark.notify_url", &format!("'http://127.0.0.1:{port}/hook'"))
            .set("ark.notify_on_success", "on")
            .set("ark.notify_timeout", "30"),
    );
    let mut c = prepare(&cluster);
    let failed = backup(&mut c, r#"{"database": "no_such_db", "max_attempts": 1}"#);
    assert_eq!(wait_job(&mut c, failed)["state"], "failed");
    let ok = backup(&mut c, r#"{"database": "app"}"#);
    assert_eq!(wait_job(&mut c, ok)["state"], "succeeded");
    // Bodies until both jobs were heard of (a retried delivery may repeat one).
    let mut bodies: Vec<Value> = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while ![failed, ok]
        .iter()
        .all(|id| bodies.iter().any(|b| b["job_id"] == *id))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let body = listener
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("webhook deliveries: {e}; heard {bodies:?}"));
        bodies.push(serde_json::from_str(&body).unwrap());
    }
    let by_job = |id: i64| {
        bodies
            .iter()
            .find(|b| b["job_id"] == id)
            .unwrap_or_else(|| panic!("no notification for job {id}: {bodies:?}"))
    };
    assert_eq!(by_job(failed)["event"], "job.failed");
    assert!(by_job(failed)["error"]
        .as_str()
        .unwrap()
        .contains("no_such_db"));
    assert_eq!(by_job(ok)["event"], "job.succeeded");
    assert_eq!(by_job(ok)["kind"], "logical");
    wait_until("deliveries recorded", WAIT, || {
        c.query_one(
            "SELECT count(*) FROM ark.notifications WHERE state = 'delivered'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 2
    });
}

#[test]
fn a_dead_webhook_does_not_block_the_queue() {
    let repo = temp_dir("ark-repo-");
    // A listener that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let cluster = Cluster::start_with(
        queue_options(&local(repo.path()))
            .set(
                "ark.notify_url",
                &format!("'http://hook:pw-s3cr3t@127.0.0.1:{port}/x?token=tok-s3cr3t'"),
            )
            .set("ark.notify_on_success", "on")
            .set("ark.notify_timeout", "2")
            .set("ark.notify_max_attempts", "2"),
    );
    let mut c = prepare(&cluster);
    for _ in 0..3 {
        let id = backup(&mut c, r#"{"database": "app"}"#);
        assert_eq!(wait_job(&mut c, id)["state"], "succeeded");
    }
    wait_until("deliveries given up", WAIT, || {
        c.query_one(
            "SELECT count(*) FROM ark.notifications WHERE state = 'failed' AND attempts = 2",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 3
    });
    // The URL's credentials and token reach neither the catalog, which
    // ark_monitor reads, nor the server log: errors name the host only.
    let errors: Vec<String> = c
        .query("SELECT last_error FROM ark.notifications", &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect();
    for e in &errors {
        assert!(
            e.starts_with(&format!(
                "could not reach the webhook host 127.0.0.1:{port}: "
            )),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
    }
    let log = cluster.log();
    assert!(
        log.contains("pg_ark gave up delivering notification"),
        "{log}"
    );
    assert!(
        !log.contains("s3cr3t"),
        "the webhook URL's secrets are in the log"
    );
    drop(silent);
}

fn dumps_in_repo(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() == "dump.custom" {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn retention_removes_exactly_the_expired_dumps() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = backup(&mut c, r#"{"database": "app", "retain_count": 2}"#);
        let done = wait_job(&mut c, id);
        assert_eq!(done["state"], "succeeded", "{done}");
        ids.push((id, dump_keys(&done["result"])[0].clone(), done));
    }
    // The last two dumps stay; the first two are gone from repository and catalog.
    let kept: Vec<i64> = c
        .query("SELECT job_id FROM ark.backups ORDER BY job_id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, vec![ids[2].0, ids[3].0]);
    for (i, (_, key, _)) in ids.iter().enumerate() {
        assert_eq!(repo.path().join(key).exists(), i >= 2, "{key}");
    }
    assert_eq!(dumps_in_repo(repo.path()).len(), 2);
    let expired = ids[3].2["result"]["expired"].to_string();
    assert!(
        expired.contains(&ids[1].1.split('/').rev().nth(1).unwrap().to_string()),
        "{expired}"
    );

    // ark.expire() applies a rule given now: keep the newest only. It runs
    // as a job, like ark.backup(): a ROLLBACK of the calling transaction
    // does not undo it, and catalog and repository still agree.
    let mut tx = c.transaction().unwrap();
    let removed: Vec<i64> = tx
        .query("SELECT job_id FROM ark.expire(retain_count => 1)", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.rollback().unwrap();
    assert_eq!(removed, vec![ids[2].0]);
    assert_eq!(dumps_in_repo(repo.path()).len(), 1);
    assert!(repo.path().join(&ids[3].1).exists());
    let in_catalog: Vec<i64> = c
        .query("SELECT job_id FROM ark.backups ORDER BY job_id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        in_catalog,
        vec![ids[3].0],
        "the catalog lists a dump the repository no longer has"
    );
    let expire_job: i64 = c
        .query_one(
            "SELECT count(*) FROM ark.jobs WHERE kind = 'expire' AND state = 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(expire_job, 1, "ark.expire() ran as one expire job");
    // Without a logical rule no dump expires (physical backups always have
    // one, ark.retention_full, and there are none here): nothing is listed.
    let rows = c.query("SELECT * FROM ark.expire()", &[]).unwrap();
    assert!(rows.is_empty());
    assert_eq!(dumps_in_repo(repo.path()).len(), 1);
}

#[test]
fn retention_counts_each_series_on_its_own() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    let mut full = Vec::new();
    for _ in 0..2 {
        let done = run_backup(&mut c, r#"{"database": "app"}"#);
        assert_eq!(done["state"], "succeeded", "{done}");
        full.push(dump_keys(&done["result"])[0].clone());
    }
    // Schema-only dumps with a rule of their own: it counts their series
    // (database, format and schema set) only, never the full dumps.
    let mut partial = Vec::new();
    for _ in 0..2 {
        let done = run_backup(
            &mut c,
            r#"{"database": "app", "schema": "public", "retain_count": 1}"#,
        );
        assert_eq!(done["state"], "succeeded", "{done}");
        partial.push(dump_keys(&done["result"])[0].clone());
    }
    for key in &full {
        assert!(
            repo.path().join(key).exists(),
            "full dump {key} was expired"
        );
    }
    assert!(
        !repo.path().join(&partial[0]).exists(),
        "the older schema-only dump stays"
    );
    assert!(repo.path().join(&partial[1]).exists());
    let n: i64 = c
        .query_one("SELECT count(*) FROM ark.backups", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}

#[test]
fn expire_is_refused_on_a_standby() {
    let repo = temp_dir("ark-repo-");
    let primary =
        Cluster::start_with(queue_options(&local(repo.path())).set("wal_keep_size", "'1GB'"));
    let mut c = prepare(&primary);
    for _ in 0..2 {
        let done = run_backup(&mut c, r#"{"database": "app"}"#);
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    let (sb_dir, backup) = primary.base_backup();
    let signal = backup.join("standby.signal");
    std::fs::write(&signal, "").unwrap();
    pg_ark_tests::give_to_test_user(&signal);
    let standby = Cluster::start_from_backup(
        sb_dir,
        backup,
        queue_options(&local(repo.path())).set(
            "primary_conninfo",
            &format!(
                "'host={} port={} user=postgres application_name=ark_standby'",
                primary.sockdir.display(),
                primary.port
            ),
        ),
    );
    // The standby sees the primary's catalog, and the same repository: an
    // expiry from there would remove the primary's dumps.
    let mut s = standby.client_when_ready(WAIT);
    let e = s
        .query("SELECT * FROM ark.expire(retain_count => 1)", &[])
        .unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "25006", "{e}");
    assert_eq!(db.message(), "pg_ark jobs cannot be queued during recovery");
    assert_eq!(dumps_in_repo(repo.path()).len(), 2, "a dump was removed");
}

#[test]
fn only_admins_run_jobs_and_monitors_read() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    c.batch_execute(
        "CREATE ROLE alice LOGIN; CREATE ROLE mona LOGIN; CREATE ROLE adam LOGIN;
         GRANT ark_monitor TO mona; GRANT ark_admin TO adam;",
    )
    .unwrap();
    let connect = |role: &str| {
        postgres::Client::connect(
            &format!("{} user={role}", cluster.connstr("postgres")),
            postgres::NoTls,
        )
        .unwrap()
    };
    let mut alice = connect("alice");
    let e = alice
        .query_one("SELECT ark.backup('logical')", &[])
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42501");
    assert_eq!(db.message(), "permission denied to run pg_ark backups");
    assert_eq!(
        db.hint(),
        Some("Only superusers and members of role ark_admin may schedule, run, cancel, retry or expire backups: GRANT ark_admin TO \"alice\";")
    );
    for sql in [
        "SELECT ark.schedule('x', '@daily', 'logical')",
        "SELECT ark.status()",
        "SELECT count(*) FROM ark.jobs",
        "INSERT INTO ark.schedules (name, cron, kind) VALUES ('x', '@daily', 'logical')",
    ] {
        let e = alice.query(sql, &[]).unwrap_err();
        assert_eq!(e.as_db_error().unwrap().code().code(), "42501", "{sql}");
    }
    let mut mona = connect("mona");
    let status = json(&mut mona, "SELECT ark.status()::text", &[]);
    assert_eq!(status["status"], "healthy", "{status}");
    let e = mona
        .query_one("SELECT ark.backup('logical')", &[])
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "42501");
    let mut adam = connect("adam");
    let id: i64 = adam
        .query_one(
            "SELECT ark.backup('logical', '{\"database\": \"app\"}')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(wait_job(&mut adam, id)["state"], "succeeded");
}

#[test]
fn a_fast_shutdown_interrupts_a_running_job_which_runs_again_after_restart() {
    let repo = temp_dir("ark-repo-");
    let mut cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    let mut blocker = block_dumps(&cluster);
    let id = backup(&mut c, r#"{"database": "app", "max_attempts": 1}"#);
    wait_running(&mut c, id);
    drop(c);
    // pg_ctl stop -m fast waits for the worker, which records the
    // interruption before it exits; the blocked pg_dump is stopped.
    // The blocker holds its lock throughout: were pg_dump not stopped, the
    // shutdown would never finish and pg_ctl's own limit (60 s) would fail.
    let out = cluster.stop("fast");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(blocker.batch_execute("ROLLBACK"));
    assert!(cluster
        .log()
        .contains(&format!("pg_ark job {id} interrupted; it will run again")));
    cluster.restart_stopped();
    let mut c = cluster.client();
    let done = wait_job(&mut c, id);
    // The interruption did not use up the only attempt.
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    // Nor is it counted as a retry in the running totals.
    let totals = logical_totals(&mut c);
    assert_eq!(totals, [("succeeded".to_string(), 1)]);
}

#[test]
fn finished_jobs_are_pruned_after_the_history_period() {
    let repo = temp_dir("ark-repo-");
    let cluster =
        Cluster::start_with(queue_options(&local(repo.path())).set("ark.job_history_days", "3"));
    let mut c = prepare(&cluster);
    let old = backup(&mut c, r#"{"database": "app"}"#);
    let recent = backup(&mut c, r#"{"database": "app"}"#);
    assert_eq!(wait_job(&mut c, old)["state"], "succeeded");
    assert_eq!(wait_job(&mut c, recent)["state"], "succeeded");
    c.execute(
        "UPDATE ark.jobs SET finished_at = now() - interval '4 days' WHERE id = $1",
        &[&old],
    )
    .unwrap();
    // The scheduler prunes on its first pass after a start: restart it.
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_ark scheduler'",
        &[],
    )
    .unwrap();
    wait_until("the old job pruned", WAIT, || {
        c.query_one("SELECT count(*) FROM ark.jobs WHERE id = $1", &[&old])
            .unwrap()
            .get::<_, i64>(0)
            == 0
    });
    let left: Vec<i64> = c
        .query("SELECT id FROM ark.jobs", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![recent]);
}

#[test]
fn the_queue_is_used_from_its_database_and_wait_times_out_clearly() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    // The extension in another database cannot queue: the scheduler reads ark.database.
    let mut app = cluster.client_on("app");
    app.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    let e = app
        .query_one("SELECT ark.backup('logical')", &[])
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "55000");
    assert_eq!(
        db.message(),
        "pg_ark's job queue is in database \"postgres\", not in \"app\""
    );
    assert!(db.hint().unwrap().contains("ark.database"));
    // ark.wait() gives up after its timeout with an error; the job goes on.
    let mut blocker = block_dumps(&cluster);
    let id = backup(&mut c, r#"{"database": "app"}"#);
    let e = c
        .query_one("SELECT ark.wait($1, '1 second')", &[&id])
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "57014");
    assert!(
        db.message()
            .starts_with(&format!("job {id} did not end within 1 second: it is ")),
        "{}",
        db.message()
    );
    blocker.batch_execute("ROLLBACK").unwrap();
    assert_eq!(wait_job(&mut c, id)["state"], "succeeded");
}

#[test]
fn cancelled_calls_to_backup_never_use_up_the_mailbox() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    // The scheduler serves the mailbox once it has logged its start.
    cluster.wait_for_log("pg_ark scheduler started", WAIT);
    let scheduler: i32 = c
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ark scheduler'",
            &[],
        )
        .unwrap()
        .get(0);
    let mut watcher = cluster.client();
    // Pause the scheduler while it sleeps on its latch (so it holds no
    // lock a caller could wait for): SIGSTOP, and if it was caught busy,
    // let it go and try again.
    wait_until("the scheduler paused while idle", WAIT, || {
        assert_eq!(unsafe { libc::kill(scheduler, libc::SIGSTOP) }, 0);
        let idle: bool = watcher
            .query_one(
                "SELECT coalesce(wait_event_type = 'Extension', false)
                   FROM pg_stat_activity WHERE pid = $1",
                &[&scheduler],
            )
            .unwrap()
            .get(0);
        if !idle {
            assert_eq!(unsafe { libc::kill(scheduler, libc::SIGCONT) }, 0);
        }
        idle
    });
    // Each ark.backup() now waits for its answer with a mailbox slot taken;
    // a second session cancels each call once it is seen waiting. More
    // cancelled calls than the mailbox has slots.
    let me: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    const CALLS: usize = 20;
    std::thread::scope(|scope| {
        let canceller = scope.spawn(|| {
            let mut last_start = None::<String>;
            for _ in 0..CALLS {
                let mut start = None::<String>;
                wait_until("a waiting ark.backup() call", WAIT, || {
                    start = watcher
                        .query_opt(
                            "SELECT query_start::text FROM pg_stat_activity
                              WHERE pid = $1 AND state = 'active'
                                AND wait_event_type = 'Extension'
                                AND query LIKE '%ark.backup%'",
                            &[&me],
                        )
                        .unwrap()
                        .map(|r| r.get(0));
                    start.is_some() && start != last_start
                });
                assert!(watcher
                    .query_one("SELECT pg_cancel_backend($1)", &[&me])
                    .unwrap()
                    .get::<_, bool>(0));
                last_start = start;
            }
        });
        for i in 0..CALLS {
            let e = c
                .query_one("SELECT ark.backup('logical')", &[])
                .unwrap_err();
            assert_eq!(
                e.as_db_error().map(|d| d.code().code()),
                Some("57014"),
                "call {i}: {e}"
            );
        }
        canceller.join().unwrap();
    });
    assert_eq!(unsafe { libc::kill(scheduler, libc::SIGCONT) }, 0);
    let done = run_backup(&mut c, r#"{"database": "app"}"#);
    assert_eq!(done["state"], "succeeded", "{done}");
    // The cancelled requests queued nothing.
    let jobs: i64 = c
        .query_one("SELECT count(*) FROM ark.jobs", &[])
        .unwrap()
        .get(0);
    assert_eq!(jobs, 1);
}

#[test]
fn pg_cancel_backend_cancels_a_job_and_never_kills_a_worker() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    let scheduler = |c: &mut postgres::Client| -> i32 {
        c.query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ark scheduler'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = scheduler(&mut c);
    assert!(c
        .query_one("SELECT pg_cancel_backend($1)", &[&before])
        .unwrap()
        .get::<_, bool>(0));
    let mut blocker = block_dumps(&cluster);
    let id = backup(&mut c, r#"{"database": "app"}"#);
    let worker = wait_running(&mut c, id);
    assert!(c
        .query_one("SELECT pg_cancel_backend($1)", &[&worker])
        .unwrap()
        .get::<_, bool>(0));
    let done = wait_job(&mut c, id);
    assert_eq!(done["state"], "cancelled", "{done}");
    blocker.batch_execute("ROLLBACK").unwrap();
    assert_eq!(scheduler(&mut c), before, "the scheduler was restarted");
    let log = cluster.log();
    assert!(!log.contains("terminated by signal"), "{log}");
    assert!(!log.contains("exited with exit code 1"), "{log}");
    // The queue still works.
    assert_eq!(
        run_backup(&mut c, r#"{"database": "app"}"#)["state"],
        "succeeded"
    );
}

#[test]
fn the_schema_option_dumps_only_that_schema() {
    let repo = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(queue_options(&local(repo.path())));
    let mut c = prepare(&cluster);
    cluster
        .client_on("app")
        .batch_execute("CREATE SCHEMA \"Sales\"; CREATE TABLE \"Sales\".leads (id int);")
        .unwrap();
    let done = run_backup(
        &mut c,
        r#"{"database": "app", "schema": "Sales", "compression": "0"}"#,
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    let list = pg_restore_list(&cluster, &repo.path().join(&dump_keys(&done["result"])[0]));
    assert!(list.contains("TABLE Sales leads"), "{list}");
    assert!(!list.contains("orders"), "{list}");
    let info: String = c
        .query_one("SELECT info->>'compression' FROM ark.backups", &[])
        .unwrap()
        .get(0);
    assert_eq!(info, "0");
}
