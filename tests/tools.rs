//! The tools people already run (pgBackRest, Barman, pg_basebackup) as job
//! kinds of pg_ark's queue, on real clusters with the real tools: WAL that
//! reaches pgBackRest's repository through pg_ark's archive module,
//! pgBackRest's own `info` and `restore`, pg_verifybackup and
//! pg_combinebackup on what pg_basebackup wrote, Barman's own listing, and
//! roles that are not superusers.
use pg_ark_tests::{give_tree_to_test_user, process_running, server_command, temp_dir, wait_until};
use pg_ark_tests::{Cluster, ClusterOptions, PgInstall};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(300);
const PGBACKREST: &str = "/usr/bin/pgbackrest";

fn archiving(repo: &Path) -> ClusterOptions {
    ClusterOptions::default()
        .set("archive_mode", "on")
        .set("archive_library", "'pg_ark'")
        .set("ark.repository", &format!("'file://{}'", repo.display()))
        .set("ark.scheduler_naptime", "1")
}

fn job_doc(c: &mut postgres::Client, id: i64) -> Value {
    let text: String = c
        .query_one("SELECT ark.wait($1, '5 min')::text", &[&id])
        .unwrap()
        .get(0);
    serde_json::from_str(&text).unwrap()
}

fn queue(c: &mut postgres::Client, kind: &str, options: &str) -> i64 {
    c.query_one("SELECT ark.backup($1, $2::text::jsonb)", &[&kind, &options])
        .unwrap_or_else(|e| panic!("ark.backup('{kind}', '{options}'): {e}"))
        .get(0)
}

fn run_job(c: &mut postgres::Client, kind: &str, options: &str) -> Value {
    let id = queue(c, kind, options);
    job_doc(c, id)
}

fn succeeded(doc: &Value) -> &Value {
    assert_eq!(doc["state"], "succeeded", "{doc:#}");
    &doc["result"]
}

/// Schedule `name`, make it due now (the scheduler queues it within its
/// naptime), and return its job's document once the job ended.
fn scheduled_run(c: &mut postgres::Client, name: &str, kind: &str, options: &str) -> Value {
    c.query_one(
        "SELECT ark.schedule($1, '@daily', $2, $3::text::jsonb)",
        &[&name, &kind, &options],
    )
    .unwrap();
    // Due now, as if the day had come.
    c.execute(
        "UPDATE ark.schedules SET next_run = now() WHERE name = $1",
        &[&name],
    )
    .unwrap();
    let mut id = None;
    wait_until(&format!("schedule {name}'s job"), WAIT, || {
        id = c
            .query_opt(
                "SELECT id FROM ark.jobs WHERE schedule_name = $1 ORDER BY id LIMIT 1",
                &[&name],
            )
            .unwrap()
            .map(|r| r.get::<_, i64>(0));
        id.is_some()
    });
    let doc = job_doc(c, id.unwrap());
    c.query_one("SELECT ark.unschedule($1)", &[&name]).unwrap();
    doc
}

/// A program run as the test clusters' OS user; its output, or a panic.
fn as_server_user(program: &str, args: &[&str]) -> String {
    let out = server_command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Rows and a digest of table `t`.
fn digest(c: &mut postgres::Client) -> (i64, String) {
    let r = c
        .query_one(
            "SELECT count(*), md5(string_agg(id::text || ':' || v, ',' ORDER BY id)) FROM t",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// Every process whose command line has all of `words`.
fn processes_with(words: &[&str]) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if words.iter().all(|w| cmd.contains(w)) && process_running(pid) {
            out.push(pid);
        }
    }
    out
}

fn pgbackrest_conf(dir: &Path, cluster: &Cluster) -> String {
    format!(
        "[global]\nrepo1-path={d}/repo\nlock-path={d}/lock\nlog-path={d}/log\nspool-path={d}/spool\n\
         log-level-file=off\nrepo1-retention-full=4\n\n\
         [main]\npg1-path={data}\npg1-socket-path={sock}\npg1-port={port}\npg1-user=postgres\n",
        d = dir.display(),
        data = cluster.data.display(),
        sock = cluster.sockdir.display(),
        port = cluster.port
    )
}

/// pgBackRest beside pg_ark: WAL into both repositories through pg_ark's
/// archive module, a scheduled full and incremental backup recorded with
/// pgBackRest's labels, a wrong stanza failing for good with pgBackRest's
/// words, a cancelled backup whose processes are all gone, pg_ark's
/// retention leaving pgBackRest's backups alone, and `pgbackrest restore`
/// of the newest one recovering the source's rows. pgBackRest 2.45 reads
/// PostgreSQL up to 15: on a newer server the kind refuses, saying so.
#[test]
fn pgbackrest_runs_beside_pg_ark_through_its_queue_and_its_archiver() {
    let install = PgInstall::from_env();
    let repo = temp_dir("ark-repo-");
    let br = temp_dir("ark-pgbackrest-");
    give_tree_to_test_user(br.path());
    let conf = br.path().join("pgbackrest.conf");
    let mut cluster = Cluster::start_with(
        archiving(repo.path())
            .set("ark.archive_also", "'pgbackrest:main'")
            .set("ark.pgbackrest_path", &format!("'{PGBACKREST}'"))
            .set("ark.pgbackrest_config", &format!("'{}'", conf.display())),
    );
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();

    if install.major > 15 {
        let doc = run_job(
            &mut c,
            "pgbackrest",
            r#"{"stanza": "main", "max_attempts": 3}"#,
        );
        assert_eq!(doc["state"], "failed", "{doc:#}");
        assert_eq!(doc["attempts"], 1, "a refusal is permanent: {doc:#}");
        let error = doc["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!(
                "reads PostgreSQL up to 15, and this server is PostgreSQL {}",
                install.major
            )),
            "{error}"
        );
        return;
    }

    // No stanza yet: the second destination fails, and the archiver says
    // which destination it was.
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    c.query_one("SELECT pg_switch_wal()::text", &[]).unwrap();
    cluster.wait_for_log(
        "pg_ark's repository has it, but the second destination, pgbackrest archive-push \
         (stanza \"main\"), does not:",
        WAIT,
    );
    fs::write(&conf, pgbackrest_conf(br.path(), &cluster)).unwrap();
    give_tree_to_test_user(br.path());
    let cfg = format!("--config={}", conf.display());
    as_server_user(PGBACKREST, &[&cfg, "--stanza=main", "stanza-create"]);
    // (pgbackrest check would insist that archive_command names pgbackrest;
    // the backups below wait for their WAL in pgBackRest's repository.)

    let full = scheduled_run(
        &mut c,
        "pgbackrest-full",
        "pgbackrest",
        r#"{"stanza": "main", "type": "full", "options": {"start-fast": true}}"#,
    );
    let full = succeeded(&full).clone();
    c.batch_execute("INSERT INTO t SELECT g, 'w' || g FROM generate_series(1001, 3000) g")
        .unwrap();
    let incr = scheduled_run(
        &mut c,
        "pgbackrest-incr",
        "pgbackrest",
        r#"{"stanza": "main", "type": "incr", "options": {"start-fast": true}}"#,
    );
    let incr = succeeded(&incr).clone();
    assert_eq!(incr["prior"], full["label"], "{incr:#}");
    assert_eq!(incr["type"], "incr");
    // pgBackRest's own account of them.
    let info: Value = serde_json::from_str(&as_server_user(
        PGBACKREST,
        &[&cfg, "--output=json", "info"],
    ))
    .unwrap();
    let labels: Vec<String> = info[0]["backup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        labels,
        [
            full["label"].as_str().unwrap(),
            incr["label"].as_str().unwrap()
        ]
    );
    let rows: Vec<(String, String, String)> = c
        .query(
            "SELECT label, format, repository FROM ark.backups WHERE kind = 'pgbackrest' ORDER BY finished_at",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        [
            (labels[0].clone(), "full".into(), "pgbackrest:main".into()),
            (labels[1].clone(), "incr".into(), "pgbackrest:main".into())
        ]
    );

    // A stanza pgBackRest does not know: failed for good, in its words.
    let doc = run_job(
        &mut c,
        "pgbackrest",
        r#"{"stanza": "nosuch", "max_attempts": 3}"#,
    );
    assert_eq!(doc["state"], "failed", "{doc:#}");
    assert_eq!(doc["attempts"], 1, "{doc:#}");
    let error = doc["error"].as_str().unwrap_or_default();
    assert_eq!(
        error,
        "pgBackRest: stanza \"nosuch\": missing stanza path (status code 1)"
    );

    // A backup caught inside pg_backup_start() (the checkpointer is held
    // with SIGSTOP, so the checkpoint it waits for never comes), then
    // cancelled: every pgBackRest process is gone.
    let checkpointer: i32 = c
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'",
            &[],
        )
        .unwrap()
        .get(0);
    Cluster::pause(checkpointer);
    // Resumed however this part ends: a cluster whose checkpointer is
    // stopped never shuts down.
    struct Resume(i32);
    impl Drop for Resume {
        fn drop(&mut self) {
            Cluster::resume(self.0);
        }
    }
    let resume = Resume(checkpointer);
    let id = queue(
        &mut c,
        "pgbackrest",
        r#"{"stanza": "main", "type": "full", "options": {"start-fast": true, "process-max": 2}}"#,
    );
    let mut pids = Vec::new();
    wait_until("pgbackrest to wait in pg_backup_start()", WAIT, || {
        pids = processes_with(&["pgbackrest", "--stanza=main", "backup"]);
        let waiting: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE pid <> pg_backend_pid() AND state = 'active'
                    AND query LIKE '%pg_backup_start%'",
                &[],
            )
            .unwrap()
            .get(0);
        !pids.is_empty() && waiting > 0
    });
    assert!(c
        .query_one("SELECT ark.cancel($1)", &[&id])
        .unwrap()
        .get::<_, bool>(0));
    let doc = job_doc(&mut c, id);
    assert_eq!(doc["state"], "cancelled", "{doc:#}");
    wait_until("every pgbackrest process to be gone", WAIT, || {
        pids.iter().all(|p| !process_running(*p))
            && processes_with(&["pgbackrest", "--stanza=main", "backup"]).is_empty()
    });
    drop(resume);

    // pg_ark's retention keeps none of pgBackRest's backups and removes
    // none.
    c.query("SELECT * FROM ark.expire(retention_full => 1)", &[])
        .unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM ark.backups WHERE kind = 'pgbackrest'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // pgBackRest restores its newest backup, recovering through the WAL
    // pg_ark's archiver handed it.
    let source = digest(&mut c);
    let last: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    cluster.wait_archived(&last, WAIT);
    drop(c);
    cluster.stop("fast");
    let target = temp_dir("ark-pgbackrest-restore-");
    let data = target.path().join("data");
    fs::create_dir(&data).unwrap();
    give_tree_to_test_user(target.path());
    as_server_user(
        PGBACKREST,
        &[
            &cfg,
            "--stanza=main",
            &format!("--pg1-path={}", data.display()),
            "restore",
        ],
    );
    // The restored server archives nowhere.
    let auto = data.join("postgresql.auto.conf");
    let mut text = fs::read_to_string(&auto).unwrap();
    text.push_str("\narchive_mode = off\n");
    fs::write(&auto, text).unwrap();
    let restored = Cluster::start_restored(target, data, &[]);
    let mut r = restored.client();
    assert_eq!(digest(&mut r), source);
}

/// pg_basebackup jobs write under ark.pg_basebackup_directory only, get
/// their catalog rows and their own retention, and what they write is what
/// PostgreSQL's own pg_verifybackup accepts; from 17 on, an incremental
/// one that pg_combinebackup rebuilds and that starts with the source's
/// rows. Roles that are not superusers queue none of these kinds.
#[test]
fn pg_basebackup_jobs_write_under_their_directory_and_only_for_superusers() {
    let install = PgInstall::from_env();
    let repo = temp_dir("ark-repo-");
    let bb = temp_dir("ark-basebackups-");
    give_tree_to_test_user(bb.path());
    let mut opts = archiving(repo.path()).set(
        "ark.pg_basebackup_directory",
        &format!("'{}'", bb.path().display()),
    );
    if install.major >= 17 {
        opts = opts.set("summarize_wal", "on");
    }
    let cluster = Cluster::start_with(opts);
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 2000) g;",
    )
    .unwrap();

    let first = run_job(
        &mut c,
        "pg_basebackup",
        r#"{"target": "nightly", "retain_count": 1}"#,
    );
    let first = succeeded(&first).clone();
    let first_dir = PathBuf::from(first["directory"].as_str().unwrap());
    assert!(first_dir.starts_with(fs::canonicalize(bb.path()).unwrap().join("nightly")));
    as_server_user(
        install.bin("pg_verifybackup").to_str().unwrap(),
        &[first_dir.to_str().unwrap()],
    );
    let row: (String, String) = {
        let r = c
            .query_one(
                "SELECT label, path FROM ark.backups WHERE kind = 'pg_basebackup'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(row.0, first["label"].as_str().unwrap());
    assert_eq!(row.1, first_dir.to_str().unwrap());

    // Targets outside the directory are refused, when queued or when run.
    for target in ["/tmp/elsewhere", "../escape"] {
        let e = c
            .query_one(
                "SELECT ark.backup('pg_basebackup', $1::text::jsonb)",
                &[&format!(r#"{{"target": "{target}"}}"#)],
            )
            .unwrap_err();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "22023", "{db:?}");
        assert!(
            db.message()
                .contains("is not a directory under ark.pg_basebackup_directory"),
            "{db:?}"
        );
    }
    let outside = temp_dir("ark-outside-");
    std::os::unix::fs::symlink(outside.path(), bb.path().join("out")).unwrap();
    let doc = run_job(&mut c, "pg_basebackup", r#"{"target": "out/x"}"#);
    assert_eq!(doc["state"], "failed", "{doc:#}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap_or_default()
            .contains("outside ark.pg_basebackup_directory"),
        "{doc:#}"
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);

    if install.major >= 17 {
        c.batch_execute("INSERT INTO t SELECT g, 'w' || g FROM generate_series(2001, 5000) g")
            .unwrap();
        let incr = run_job(
            &mut c,
            "pg_basebackup",
            r#"{"target": "nightly", "incremental": true, "retain_count": 1}"#,
        );
        let incr = succeeded(&incr).clone();
        assert_eq!(incr["incremental_of"], first["label"], "{incr:#}");
        let source = digest(&mut c);
        // PostgreSQL's own pg_combinebackup rebuilds it, and it starts with
        // the source's rows.
        let out = temp_dir("ark-combined-");
        let combined = out.path().join("data");
        give_tree_to_test_user(out.path());
        as_server_user(
            install.bin("pg_combinebackup").to_str().unwrap(),
            &[
                first_dir.to_str().unwrap(),
                incr["directory"].as_str().unwrap(),
                "-o",
                combined.to_str().unwrap(),
            ],
        );
        let auto = combined.join("postgresql.auto.conf");
        let mut text = fs::read_to_string(&auto).unwrap_or_default();
        text.push_str("\narchive_mode = off\n");
        fs::write(&auto, text).unwrap();
        let copy = Cluster::start_restored(out, combined, &[]);
        assert_eq!(digest(&mut copy.client()), source);
        // A new full backup: with retain_count 1, the older chain (the full
        // backup and its incremental) goes, directories and rows.
        let second = run_job(
            &mut c,
            "pg_basebackup",
            r#"{"target": "nightly", "retain_count": 1}"#,
        );
        let second = succeeded(&second).clone();
        let mut expired: Vec<String> = second["expired"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        expired.sort();
        let mut want = vec![
            first["label"].as_str().unwrap().to_string(),
            incr["label"].as_str().unwrap().to_string(),
        ];
        want.sort();
        assert_eq!(expired, want);
        assert!(!first_dir.exists());
        let labels: Vec<String> = c
            .query(
                "SELECT label FROM ark.backups WHERE kind = 'pg_basebackup'",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(labels, [second["label"].as_str().unwrap()]);
    } else {
        let e = c
            .query_one(
                "SELECT ark.backup('pg_basebackup', '{\"incremental\": true}')",
                &[],
            )
            .unwrap_err();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "22023");
        assert!(
            db.message().contains(&format!(
                "from PostgreSQL 17 on, and this server is PostgreSQL {}",
                install.major
            )),
            "{db:?}"
        );
    }

    // Not a superuser: refused with a hint, whichever way it asks.
    c.batch_execute("CREATE ROLE alice LOGIN; GRANT ark_admin TO alice;")
        .unwrap();
    let mut alice = cluster.client_as("alice");
    for sql in [
        "SELECT ark.backup('pg_basebackup', '{}')",
        "SELECT ark.backup('pgbackrest', '{\"stanza\": \"main\"}')",
        "SELECT ark.schedule('x', '@daily', 'barman', '{\"type\": \"cron\"}')",
    ] {
        let e = alice.query_one(sql, &[]).unwrap_err();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "42501", "{sql}: {db:?}");
        assert!(
            db.message()
                .contains("run only for superusers, and role \"alice\" is not one"),
            "{db:?}"
        );
        assert!(db
            .hint()
            .unwrap_or_default()
            .contains("pgbackrest, barman, pg_basebackup"));
    }
    // A superuser's failed job: alice may not run it again.
    let failed: i64 = c
        .query_one(
            "SELECT id FROM ark.jobs WHERE kind = 'pg_basebackup' AND state = 'failed'",
            &[],
        )
        .unwrap()
        .get(0);
    let e = alice
        .query_one("SELECT ark.retry($1)", &[&failed])
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "42501");
    // A row that names alice as who queued it, however it got there, never
    // runs.
    c.batch_execute(
        "INSERT INTO ark.jobs (kind, options, conflict_key, max_attempts, queued_by)
         VALUES ('pg_basebackup', '{}', 'pg_basebackup', 1, 'alice');",
    )
    .unwrap();
    let id: i64 = c
        .query_one("SELECT max(id) FROM ark.jobs", &[])
        .unwrap()
        .get(0);
    // ark.backup() of another kind wakes the scheduler.
    run_job(&mut c, "logical", r#"{"database": "postgres"}"#);
    let doc = job_doc(&mut c, id);
    assert_eq!(doc["state"], "failed", "{doc:#}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap_or_default()
            .contains("run only for superusers, and role \"alice\" is not one"),
        "{doc:#}"
    );
    let count = fs::read_dir(fs::canonicalize(bb.path()).unwrap().join("nightly"))
        .unwrap()
        .count();
    assert_eq!(count, 1, "one backup of target nightly is kept");
}

/// Barman (PyPI's, in the virtual environment setup makes) beside pg_ark,
/// with its streaming archiver (Barman's own archiver insists on an
/// archive_command, which a server archiving through pg_ark's module has
/// none of): `barman check` failing with Barman's own report, `barman cron`
/// starting its WAL streaming, then `check` passing and `barman backup`
/// recorded with Barman's backup id.
#[test]
fn barman_runs_beside_pg_ark_through_its_queue() {
    let install = PgInstall::from_env();
    let cache = std::env::var("ARK_CACHE").unwrap_or_else(|_| "/var/cache/pg_ark".into());
    let barman = PathBuf::from(cache).join("barman/bin/barman");
    assert!(
        barman.is_file(),
        "{} is missing: run `make setup`",
        barman.display()
    );
    let repo = temp_dir("ark-repo-");
    let dir = temp_dir("ark-barman-");
    let home = dir.path().join("home");
    let conf = dir.path().join("barman.conf");
    let mut cluster = Cluster::start_with(
        archiving(repo.path())
            .set("ark.barman_path", &format!("'{}'", barman.display()))
            .set("ark.barman_config", &format!("'{}'", conf.display())),
    );
    fs::create_dir(&home).unwrap();
    let conninfo = format!(
        "host={} port={} user=postgres dbname=postgres",
        cluster.sockdir.display(),
        cluster.port
    );
    fs::write(
        &conf,
        format!(
            "[barman]\nbarman_home = {home}\nbarman_user = {user}\nlog_file = {dir}/barman.log\n\
             log_level = INFO\nminimum_redundancy = 0\n\n\
             [pg]\ndescription = \"pg_ark's test cluster\"\n\
             conninfo = {conninfo}\nstreaming_conninfo = {conninfo}\n\
             backup_method = postgres\narchiver = off\nstreaming_archiver = on\n\
             slot_name = barman_pg\ncreate_slot = auto\nimmediate_checkpoint = true\n\
             path_prefix = {bin}\n",
            home = home.display(),
            user = std::env::var("ARK_TEST_USER").unwrap_or_else(|_| "pgark".into()),
            dir = dir.path().display(),
            bin = install.bindir.display(),
        ),
    )
    .unwrap();
    give_tree_to_test_user(dir.path());
    let cfg = format!("--config={}", conf.display());
    let barman = barman.to_str().unwrap();
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;",
    )
    .unwrap();

    // Nothing streams yet: the check fails, in Barman's words.
    let doc = run_job(&mut c, "barman", r#"{"server": "pg", "type": "check"}"#);
    assert_eq!(doc["state"], "failed", "{doc:#}");
    let error = doc["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("barman check of server \"pg\": "),
        "{error}"
    );
    assert!(
        error.contains("receive_wal_running: FAILED"),
        "Barman's report: {error}"
    );
    // barman cron (every minute, in production) starts the streaming.
    let doc = run_job(&mut c, "barman", r#"{"type": "cron"}"#);
    succeeded(&doc);
    wait_until("Barman's replication slot to be active", WAIT, || {
        c.query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'barman_pg'",
            &[],
        )
        .unwrap()
        .is_some_and(|r| r.get::<_, bool>(0))
    });
    as_server_user(
        barman,
        &[
            &cfg,
            "switch-wal",
            "--force",
            "--archive",
            "--archive-timeout",
            "300",
            "pg",
        ],
    );
    let doc = run_job(&mut c, "barman", r#"{"server": "pg", "type": "check"}"#);
    let check = succeeded(&doc);
    assert!(check["checks"].as_u64().unwrap() > 10, "{check:#}");

    let doc = run_job(
        &mut c,
        "barman",
        r#"{"server": "pg", "options": {"wait": true, "wait-timeout": 300}}"#,
    );
    let made = succeeded(&doc).clone();
    assert_eq!(made["status"], "DONE", "{made:#}");
    // Barman's own account of it.
    let listed: Value = serde_json::from_str(&as_server_user(
        barman,
        &[&cfg, "--format=json", "list-backups", "pg"],
    ))
    .unwrap();
    let ids: Vec<&str> = listed["pg"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [made["label"].as_str().unwrap()]);
    let row: (String, String, i64) = {
        let r = c
            .query_one(
                "SELECT label, repository, size_bytes FROM ark.backups WHERE kind = 'barman'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(row.0, ids[0]);
    assert_eq!(row.1, "barman:pg");
    assert!(row.2 > 0);

    // An unknown server: failed for good, in Barman's words.
    let doc = run_job(
        &mut c,
        "barman",
        r#"{"server": "nosuch", "max_attempts": 3}"#,
    );
    assert_eq!(doc["state"], "failed", "{doc:#}");
    assert_eq!(doc["attempts"], 1, "{doc:#}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Unknown server 'nosuch'"),
        "{doc:#}"
    );
    // Barman's streaming ends before its directory goes.
    as_server_user(barman, &[&cfg, "receive-wal", "--stop", "pg"]);
    wait_until("Barman's streaming to end", WAIT, || {
        !c.query_one(
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'barman_pg'",
            &[],
        )
        .unwrap()
        .get::<_, bool>(0)
    });
    drop(c);
    cluster.stop("fast");
}
