//! Restore drills (`ark.backup('drill')`) on real clusters: a drill of a
//! good chain passes its checks and records its RTO in `ark.jobs`,
//! `ark.backups`, `ark.status()` and the repository (`pg_ark info`); a
//! corrupted object fails it, naming the file, and makes `ark.status()`
//! `failing`; a drill killed with kill -9 leaves no scratch cluster and no
//! scratch directory once the scheduler has started again; a visibility
//! map that vouches for deleted rows fails pg_visibility's check; drills and
//! physical backups never run at the same time.
use pg_ark_core::physical;
use pg_ark_core::storage::PutMode;
use pg_ark_tests::{
    archiving, give_to_test_user, open_repo, pg_ark, process_running, temp_dir, wait_job,
    wait_until, Cluster, ClusterOptions,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn options(repo: &Path, work: &Path) -> ClusterOptions {
    archiving(repo)
        .set("ark.work_directory", &format!("'{}'", work.display()))
        .set("ark.max_parallel_jobs", "3")
        .set("ark.scheduler_naptime", "'1s'")
}

fn json(
    c: &mut postgres::Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Value {
    let text: String = c.query_one(sql, params).expect(sql).get(0);
    serde_json::from_str(&text).expect("a JSON document")
}

fn status(c: &mut postgres::Client) -> Value {
    json(c, "SELECT ark.status()::text", &[])
}

fn backup_id(done: &Value) -> String {
    assert_eq!(done["state"], "succeeded", "{done}");
    done["result"]["backup_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no backup_id in {done}"))
        .to_string()
}

/// What is left in the work directory.
fn leftovers(work: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(work)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn prepare(cluster: &Cluster) -> postgres::Client {
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL);
         CREATE INDEX orders_note ON orders (note);
         INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    c
}

#[test]
fn a_drill_restores_the_newest_backup_checks_it_and_records_its_rto() {
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    give_to_test_user(work.path());
    let cluster = Cluster::start_with(options(repo.path(), work.path()));
    let mut c = prepare(&cluster);
    let full = backup_id(&wait_job(&mut c, "full", r#"{"max_attempts": 1}"#));
    c.batch_execute("INSERT INTO orders SELECT g, 'late ' || g FROM generate_series(1001, 1500) g")
        .unwrap();
    let incr = backup_id(&wait_job(&mut c, "incremental", r#"{"max_attempts": 1}"#));
    assert_ne!(full, incr);

    let done = wait_job(
        &mut c,
        "drill",
        r#"{"amcheck": "public.orders", "count": ["public.orders", "pg_class"], "max_attempts": 1}"#,
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["backup_id"], incr.as_str(), "the newest backup: {r}");
    assert_eq!(r["chain"], serde_json::json!([full, incr]), "{r}");
    let checks = r["checks"].as_array().unwrap_or_else(|| panic!("{r}"));
    let find = |check: &str, table: Option<&str>| {
        checks
            .iter()
            .find(|k| k["check"] == check && table.is_none_or(|t| k["table"] == t))
            .unwrap_or_else(|| panic!("no {check} check in {r}"))
    };
    assert!(
        find("recovery", None)["detail"]
            .as_str()
            .is_some_and(|d| d.contains("recovery stopping after reaching consistency")),
        "{r}"
    );
    assert_eq!(find("started", None)["ok"], true, "{r}");
    let amcheck = find("amcheck", Some("public.orders"));
    assert_eq!(amcheck["ok"], true, "{r}");
    assert!(
        amcheck["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1 heap(s) verified; 2 B-tree index(es)")),
        "{r}"
    );
    assert_eq!(find("count", Some("public.orders"))["rows"], 1500, "{r}");
    assert!(
        find("count", Some("pg_class"))["rows"]
            .as_i64()
            .unwrap_or(0)
            > 100,
        "{r}"
    );
    // pg_visibility's checks, on by default: every database that accepts
    // connections, every relation with a visibility map.
    let vis: Vec<&Value> = checks
        .iter()
        .filter(|k| k["check"] == "visibility")
        .collect();
    let dbs: Vec<&str> = vis.iter().filter_map(|k| k["database"].as_str()).collect();
    assert_eq!(dbs, ["postgres", "template1"], "{r}");
    for k in &vis {
        assert_eq!(k["ok"], true, "{r}");
        assert!(k["relations"].as_u64().unwrap_or(0) > 50, "{r}");
    }
    let t = &r["timings"];
    for k in [
        "plan_seconds",
        "rebuild_seconds",
        "download_seconds",
        "recovery_seconds",
        "rto_seconds",
        "checks_seconds",
    ] {
        assert!(t[k].as_f64().is_some_and(|s| s >= 0.0), "{k} in {t}");
    }
    let rto = t["rto_seconds"].as_f64().unwrap();
    assert!(
        rto >= t["rebuild_seconds"].as_f64().unwrap() + t["recovery_seconds"].as_f64().unwrap()
            - 0.01,
        "the RTO covers the rebuild and the recovery: {t}"
    );
    assert!(r["restored_bytes"].as_u64().unwrap_or(0) > 1_000_000, "{r}");
    assert!(
        r["space"]["needed_bytes"].as_u64() > r["restored_bytes"].as_u64(),
        "{r}"
    );
    assert!(
        leftovers(work.path()).is_empty(),
        "scratch left: {:?}",
        leftovers(work.path())
    );

    // ark.backups, ark.status() and the repository know it.
    let ok: bool = c
        .query_one(
            "SELECT (info->'drill'->>'ok')::boolean FROM ark.backups WHERE label = $1",
            &[&incr],
        )
        .unwrap()
        .get(0);
    assert!(ok);
    let s = status(&mut c);
    assert_ne!(s["status"], "failing", "{s}");
    assert_eq!(s["drill"]["ok"], true, "{s}");
    assert_eq!(s["drill"]["backup_id"], incr.as_str(), "{s}");
    assert_eq!(s["drill"]["rto_seconds"].as_f64(), Some(rto), "{s}");
    let url = format!("file://{}", repo.path().display());
    let (okc, out, err) = pg_ark(&["info", "--repo", &url, "--json"]);
    assert!(okc, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let backups = doc["clusters"][0]["chains"][0]["backups"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(backups.len(), 2, "{doc}");
    assert!(
        backups[0]["drill"].is_null(),
        "the full was not drilled: {doc}"
    );
    assert_eq!(backups[1]["drill"]["ok"], true, "{doc}");
    assert_eq!(
        backups[1]["drill"]["rto_seconds"].as_f64(),
        Some(rto),
        "{doc}"
    );
    let (okc, out, err) = pg_ark(&["info", "--repo", &url]);
    assert!(okc && out.contains("restore drill passed"), "{out}{err}");

    // A drill to a target, of the full named: recovery stops there.
    let mark: String = c
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
            &[],
        )
        .unwrap()
        .get(0);
    c.batch_execute("INSERT INTO orders VALUES (9999, 'after the mark')")
        .unwrap();
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    cluster.wait_archived(&seg, WAIT);
    let opts = serde_json::json!({
        "backup_id": incr, "target_time": mark, "count": "orders", "max_attempts": 1
    })
    .to_string();
    let done = wait_job(&mut c, "drill", &opts);
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    assert!(
        r["target"].as_str().is_some_and(|t| t.starts_with("time ")),
        "{r}"
    );
    let rows = r["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|k| k["check"] == "count"))
        .map(|k| k["rows"].clone());
    assert_eq!(
        rows,
        Some(Value::from(1500)),
        "the row after the mark is not there: {r}"
    );

    // A view is not counted (its code would run in the drill), and that
    // is no verdict on the backup: its last drill stays the passed one. A
    // permanent failure: not retried, though attempts remain.
    let done = wait_job(
        &mut c,
        "drill",
        r#"{"count": "pg_stats", "max_attempts": 3}"#,
    );
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["attempts"], 1, "{done}");
    assert!(
        done["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"pg_stats\" is a view, not a table")),
        "{done}"
    );
    let ok: bool = c
        .query_one(
            "SELECT (info->'drill'->>'ok')::boolean FROM ark.backups WHERE label = $1",
            &[&incr],
        )
        .unwrap()
        .get(0);
    assert!(ok);

    // Bad options are refused when queued, with the key named.
    let err = c
        .query_one(
            "SELECT ark.backup('drill', '{\"target_time\": \"soon\"}')",
            &[],
        )
        .unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert!(db.message().contains("target time"), "{}", db.message());
}

#[test]
fn a_drill_of_a_corrupted_backup_fails_naming_the_file_and_status_is_failing() {
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    give_to_test_user(work.path());
    let cluster = Cluster::start_with(options(repo.path(), work.path()));
    let mut c = prepare(&cluster);
    let full = backup_id(&wait_job(&mut c, "full", r#"{"max_attempts": 1}"#));
    let entry = open_repo(repo.path())
        .cluster(
            cluster.system_identifier_from_control(),
            cluster.install.major,
            false,
        )
        .unwrap();
    let (_, manifest) = physical::load_backup(&entry, &full).unwrap();
    let big = manifest.files.iter().max_by_key(|f| f.stored).unwrap();
    let original = entry.storage().get(&big.key).unwrap();
    let mut obj = original.clone();
    let n = obj.len();
    obj[n / 2] ^= 0x40;
    entry
        .storage()
        .put(&big.key, &obj, PutMode::Overwrite)
        .unwrap();

    let done = wait_job(&mut c, "drill", r#"{"max_attempts": 1}"#);
    assert_eq!(done["state"], "failed", "{done}");
    let error = done["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(&big.path), "the file is named: {error}");
    assert!(
        leftovers(work.path()).is_empty(),
        "scratch left: {:?}",
        leftovers(work.path())
    );
    let s = status(&mut c);
    assert_eq!(s["status"], "failing", "{s}");
    assert_eq!(s["drill"]["ok"], false, "{s}");
    let messages = s["messages"].to_string();
    assert!(
        messages.contains(&format!(
            "the restore drill (job {}) of backup {full} failed",
            done["job_id"]
        )),
        "{s}"
    );
    assert!(messages.contains(&big.path), "{s}");
    let url = format!("file://{}", repo.path().display());
    let (ok, out, err) = pg_ark(&["info", "--repo", &url]);
    assert!(
        ok && out.contains("restore drill FAILED") && out.contains(&big.path),
        "{out}{err}"
    );

    // Repaired, drilled again: it passes and the status is no longer failing.
    entry
        .storage()
        .put(&big.key, &original, PutMode::Overwrite)
        .unwrap();
    let done = wait_job(&mut c, "drill", r#"{"max_attempts": 1}"#);
    assert_eq!(done["state"], "succeeded", "{done}");
    let s = status(&mut c);
    assert_ne!(s["status"], "failing", "{s}");
    assert_eq!(s["drill"]["ok"], true, "{s}");
}

/// A cluster whose visibility map vouches for deleted rows (the map file
/// of a table put back, with the server stopped, as it was before a DELETE
/// cleared its bits: what a restore that kept a stale map produces) is
/// backed up as it is; the drill's visibility check, PostgreSQL's own
/// `pg_check_visible` and `pg_check_frozen`, fails it, naming the table
/// and the counts. `"visibility": false` turns the check off.
#[test]
fn a_drill_fails_when_the_visibility_map_vouches_for_deleted_rows() {
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    give_to_test_user(work.path());
    let mut cluster = Cluster::start_with(options(repo.path(), work.path()));
    let mut c = prepare(&cluster);
    c.batch_execute(
        "CREATE EXTENSION pg_visibility;
         CREATE TABLE vm (id int, v text) WITH (autovacuum_enabled = off);
         INSERT INTO vm SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
    )
    .unwrap();
    c.batch_execute("VACUUM (FREEZE) vm").unwrap();
    c.batch_execute("CHECKPOINT").unwrap();
    let rel: String = c
        .query_one("SELECT pg_relation_filepath('vm')", &[])
        .unwrap()
        .get(0);
    let map_file = cluster.data.join(format!("{rel}_vm"));
    let frozen_map = std::fs::read(&map_file).unwrap();
    c.batch_execute("DELETE FROM vm WHERE id % 10 = 0").unwrap();
    c.batch_execute("CHECKPOINT").unwrap();
    drop(c);
    assert!(cluster.stop("fast").status.success());
    std::fs::write(&map_file, &frozen_map).unwrap();
    cluster.restart_stopped();
    let mut c = cluster.client();
    let source = pg_ark_tests::visibility(&mut c, "vm");
    assert_eq!((source.not_visible, source.not_frozen), (500, 500));
    let full = backup_id(&wait_job(&mut c, "full", r#"{"max_attempts": 1}"#));

    let done = wait_job(&mut c, "drill", r#"{"max_attempts": 1}"#);
    assert_eq!(done["state"], "failed", "{done}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("database \"postgres\"")
            && error.contains("public.vm (500 tuple(s) not all-visible, 500 not all-frozen)"),
        "{done}"
    );
    // The record of the verdict, beside the backup.
    let record: String = c
        .query_one(
            "SELECT (info->'drill')::text FROM ark.backups WHERE label = $1",
            &[&full],
        )
        .unwrap()
        .get(0);
    let record: Value = serde_json::from_str(&record).unwrap();
    let check = record["checks"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|k| k["check"] == "visibility" && k["ok"] == false)
        })
        .cloned()
        .unwrap_or_else(|| panic!("no failed visibility check in {record}"));
    assert_eq!(check["problems"][0]["relation"], "public.vm", "{check}");
    // A verdict on the backup.
    let s = status(&mut c);
    assert_eq!(s["status"], "failing", "{s}");
    assert_eq!(s["drill"]["backup_id"], full.as_str(), "{s}");

    // Turned off, the same backup passes its other checks.
    let done = wait_job(
        &mut c,
        "drill",
        r#"{"visibility": false, "amcheck": "orders", "max_attempts": 1}"#,
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        !done["result"]["checks"]
            .to_string()
            .contains("\"visibility\""),
        "{done}"
    );
}

/// Kill `pid` (a process of `cluster`) with SIGKILL, wait for the crash
/// restart, and for the scheduler's sweep to log that it removed `swept`;
/// a new session.
fn kill_and_wait_for_sweep(
    cluster: &Cluster,
    c: postgres::Client,
    pid: i32,
    swept: &Path,
) -> postgres::Client {
    let mark = cluster.log_mark();
    // SAFETY: kills a process of the test's own cluster.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    drop(c);
    let c = cluster.wait_crash_restart(mark, WAIT);
    cluster.wait_for_log_after(
        mark,
        &format!(
            "pg_ark removed \"{}\", left by a job that did not finish",
            swept.display()
        ),
        WAIT,
    );
    c
}

/// The pid in the first line of a `postmaster.pid` (0 if there is none).
fn pid_in(pidfile: &Path) -> i32 {
    std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0)
}

/// Queue a drill that will hang in its checks (amcheck of `drill_hold`), and
/// wait until its scratch server runs and it is checking: (job, scratch
/// directory, scratch postmaster's pid).
fn held_drill(c: &mut postgres::Client, work: &Path) -> (i64, PathBuf, i32) {
    let job: i64 = c
        .query_one(
            "SELECT ark.backup('drill', '{\"amcheck\": \"drill_hold\", \"max_attempts\": 1}')",
            &[],
        )
        .unwrap()
        .get(0);
    let scratch = work.join(format!("job-{job}-drill"));
    let pidfile = scratch.join("data/postmaster.pid");
    let mut scratch_pid = 0;
    wait_until("the drill's scratch server", WAIT, || {
        scratch_pid = pid_in(&pidfile);
        let phase: Option<String> = c
            .query_one(
                "SELECT progress->>'phase' FROM ark.jobs WHERE id = $1",
                &[&job],
            )
            .unwrap()
            .get(0);
        scratch_pid > 0 && process_running(scratch_pid) && phase.as_deref() == Some("checks")
    });
    (job, scratch, scratch_pid)
}

#[test]
fn a_cancelled_or_killed_drill_leaves_no_scratch_cluster_and_drills_never_run_with_backups() {
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    give_to_test_user(work.path());
    let cluster = Cluster::start_with(options(repo.path(), work.path()));
    let mut c = prepare(&cluster);
    let id = backup_id(&wait_job(&mut c, "full", r#"{"max_attempts": 1}"#));

    // Hold the drill in its checks: amcheck's heapallindexed evaluates an
    // index expression that sleeps for an hour (far beyond the test's
    // waits) where archive_mode is off, as in a drill's scratch cluster.
    c.batch_execute(
        "CREATE FUNCTION drill_hold_key(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
         BEGIN
             IF current_setting('archive_mode') = 'off' THEN PERFORM pg_sleep(3600); END IF;
             RETURN i;
         END $$;
         CREATE TABLE drill_hold (id int);
         INSERT INTO drill_hold VALUES (1);
         CREATE INDEX ON drill_hold (drill_hold_key(id));",
    )
    .unwrap();
    let full2 = wait_job(&mut c, "full", r#"{"max_attempts": 1}"#);
    assert_ne!(backup_id(&full2), id);
    // ark.cancel() of a held drill: its server stopped, its directory gone.
    let (job, scratch, scratch_pid) = held_drill(&mut c, work.path());
    let cancelled: bool = c
        .query_one("SELECT ark.cancel($1)", &[&job])
        .unwrap()
        .get(0);
    assert!(cancelled);
    let done = json(&mut c, "SELECT ark.wait($1, '120s')::text", &[&job]);
    assert_eq!(done["state"], "cancelled", "{done}");
    assert!(!scratch.exists(), "{} is still there", scratch.display());
    assert!(
        !process_running(scratch_pid),
        "the scratch server {scratch_pid} still runs"
    );

    // kill -9 of a held drill's worker.
    let (job, scratch, scratch_pid) = held_drill(&mut c, work.path());
    let worker: i32 = c
        .query_one("SELECT worker_pid FROM ark.jobs WHERE id = $1", &[&job])
        .unwrap()
        .get(0);
    let mut c = kill_and_wait_for_sweep(&cluster, c, worker, &scratch);
    assert!(!scratch.exists(), "{} is still there", scratch.display());
    assert!(
        !process_running(scratch_pid),
        "the scratch server {scratch_pid} still runs"
    );
    let done = json(&mut c, "SELECT ark.wait($1, '120s')::text", &[&job]);
    assert_eq!(done["state"], "failed", "{done}");

    // Two drills and a backup queued together: they run one at a time.
    let ids: Vec<i64> = c
        .query(
            "SELECT ark.backup(k, '{\"max_attempts\": 1}') FROM unnest(ARRAY['drill', 'full', 'drill']) k",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 3);
    for j in &ids {
        let done = json(&mut c, "SELECT ark.wait($1, '300s')::text", &[j]);
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    let overlaps: i64 = c
        .query_one(
            "SELECT count(*) FROM ark.jobs a JOIN ark.jobs b ON a.id < b.id
              WHERE a.id = ANY($1) AND b.id = ANY($1)
                AND a.started_at < b.finished_at AND b.started_at < a.finished_at",
            &[&ids],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        overlaps, 0,
        "a drill ran together with a backup or another drill"
    );
    assert!(
        leftovers(work.path()).is_empty(),
        "scratch left: {:?}",
        leftovers(work.path())
    );
}

/// A small tmpfs, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let dir = temp_dir("ark-smallfs-");
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs (the tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        give_to_test_user(dir.path());
        SmallFs { dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_drill_without_the_space_it_needs_is_refused_and_says_how_much() {
    let repo = temp_dir("ark-repo-");
    let small = SmallFs::mount("24m");
    let cluster = Cluster::start_with(options(repo.path(), small.dir.path()));
    let mut c = prepare(&cluster);
    backup_id(&wait_job(&mut c, "full", r#"{"max_attempts": 1}"#));
    let done = wait_job(&mut c, "drill", r#"{"max_attempts": 1}"#);
    assert_eq!(done["state"], "failed", "{done}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "not enough free space for the drill in {}: it needs ",
            small.dir.path().display()
        )) && error.contains(" is free"),
        "{error}"
    );
    assert!(
        leftovers(small.dir.path()).is_empty(),
        "nothing is written: {:?}",
        leftovers(small.dir.path())
    );
    // A drill that could not be carried out is no verdict on the backup.
    let recorded: Option<String> = c
        .query_one(
            "SELECT info->>'drill' FROM ark.backups WHERE kind = 'full'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(recorded, None);
}

fn run_as_test_user(program: &Path, args: &[&std::ffi::OsStr]) {
    let out = pg_ark_tests::server_command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_sweep_stops_a_leftover_scratch_server_and_never_the_primary() {
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    give_to_test_user(work.path());
    let cluster = Cluster::start_with(options(repo.path(), work.path()));
    let mut c = prepare(&cluster);
    // A scratch server a dead drill left running, detached (not a child of
    // anything pg_ark runs).
    let left = work.path().join("job-999-drill");
    std::fs::create_dir(&left).unwrap();
    give_to_test_user(&left);
    let data = left.join("data");
    let install = cluster.install;
    run_as_test_user(
        &install.bin("initdb"),
        &[
            "-U".as_ref(),
            "postgres".as_ref(),
            "-A".as_ref(),
            "trust".as_ref(),
            "--no-sync".as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
        ],
    );
    let opts = format!(
        "-c listen_addresses= -c unix_socket_directories={} -c port={}",
        left.display(),
        pg_ark_tests::free_port()
    );
    let log = left.join("server.log");
    run_as_test_user(
        &install.bin("pg_ctl"),
        &[
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-o".as_ref(),
            opts.as_ref(),
            "-w".as_ref(),
            "start".as_ref(),
        ],
    );
    let left_pid = pid_in(&data.join("postmaster.pid"));
    assert!(process_running(left_pid));
    // Entries that lead to the primary: a data directory that is a link to
    // its PGDATA, and a scratch directory that is a link to its folder.
    let linked = work.path().join("job-998-drill");
    std::fs::create_dir(&linked).unwrap();
    std::os::unix::fs::symlink(&cluster.data, linked.join("data")).unwrap();
    std::os::unix::fs::symlink(
        cluster.data.parent().unwrap(),
        work.path().join("job-997-drill"),
    )
    .unwrap();
    let primary = cluster.postmaster_pid();

    // The scheduler starts again (kill -9: the crash restart) and sweeps.
    let scheduler: i32 = c
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ark scheduler'",
            &[],
        )
        .unwrap()
        .get(0);
    let mut c = kill_and_wait_for_sweep(&cluster, c, scheduler, &left);
    assert!(
        !process_running(left_pid),
        "the leftover server {left_pid} still runs"
    );
    assert!(!left.exists());
    // The primary was never signalled, and nothing of it was removed.
    assert_eq!(cluster.postmaster_pid(), primary);
    assert!(cluster.data.join("PG_VERSION").exists());
    assert!(cluster.data.join("postmaster.pid").exists());
    let one: i32 = c.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
}
