//! Restores with `pg_ark restore`, from the repository alone, on real
//! clusters: point-in-time targets (time, LSN, xid, restore point), the
//! latest state of a chain, timeline switches, refusals, `--delta`,
//! damaged and crafted repositories, and `ark.restore_plan()` agreeing
//! with `pg_ark restore --dry-run`.
use pg_ark_core::physical;
use pg_ark_core::storage::PutMode;
use pg_ark_tests::commit_row;
use pg_ark_tests::{
    archiving, give_to_test_user, open_repo, pg_ark, pgbench_digest, server_command, temp_dir,
    visibility, wait_job, wait_until, Cluster, PgInstall,
};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const ONCE: &str = r#"{"max_attempts": 1}"#;

fn repo_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn switch_and_archive(cluster: &Cluster, c: &mut postgres::Client) {
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    cluster.wait_archived(&seg, WAIT);
}

fn ids(c: &mut postgres::Client) -> Vec<i32> {
    c.query("SELECT id FROM pitr ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `pg_ark` on a terminal: a pseudo-terminal that script(1) (util-linux)
/// gives it as stdin, stdout and stderr. Whether it succeeded, and what
/// the terminal received.
fn pg_ark_on_a_terminal<S: AsRef<str>>(args: &[S]) -> (bool, String) {
    let quote = |w: &str| format!("'{}'", w.replace('\'', "'\\''"));
    let command = std::iter::once(PgInstall::from_env().bin("pg_ark").display().to_string())
        .chain(args.iter().map(|a| a.as_ref().to_string()))
        .map(|w| quote(&w))
        .collect::<Vec<_>>()
        .join(" ");
    // A known width (script's terminal has none when its stdin is not one).
    let command = format!("stty cols 120 rows 40 && exec {command}");
    let out = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("TERM", "xterm")
        .env_remove("PGDATA")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script(1), from util-linux");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `pg_ark restore --archive-off` into a new directory with `args`;
/// start it; return it.
fn restore_and_start(repo: &Path, args: &[&str]) -> Cluster {
    let all = [&["--archive-off"], args].concat();
    let (cluster, out) = pg_ark_tests::restore_and_start(repo, &all, &[]);
    assert!(out.contains("start it with: pg_ctl"), "{out}");
    cluster
}

fn job_backup_id(done: &serde_json::Value) -> String {
    assert_eq!(done["state"], "succeeded", "{done}");
    done["result"]["backup_id"].as_str().unwrap().to_string()
}

/// The `detail` column of `ark.restore_plan()`'s rows of `action`.
fn plan_details(c: &mut postgres::Client, call: &str, action: &str) -> Vec<String> {
    c.query(
        &format!("SELECT detail FROM {call} WHERE action = $1 ORDER BY step"),
        &[&action],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn point_in_time_restores_hold_exactly_the_rows_committed_before_each_target() {
    let repo_dir = temp_dir("ark-repo-");
    // Recovery settings in postgresql.conf, which a primary ignores and
    // every backup carries: the restores override them.
    let primary = Cluster::start_with(
        archiving(repo_dir.path())
            .set("recovery_target_inclusive", "off")
            .set("recovery_target_name", "'elsewhere'"),
    );
    let mut c = primary.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE pitr (id int PRIMARY KEY, xid xid8 DEFAULT pg_current_xact_id());",
    )
    .unwrap();
    let full = job_backup_id(&wait_job(&mut c, "full", ONCE));
    let mut marks = vec![(String::new(), String::new(), String::new())];
    for id in 1..=3 {
        marks.push(commit_row(&mut c, id));
    }
    let incr = job_backup_id(&wait_job(&mut c, "incremental", ONCE));
    for id in 4..=6 {
        marks.push(commit_row(&mut c, id));
    }
    c.execute("SELECT pg_create_restore_point('before_7')", &[])
        .unwrap();
    for id in 7..=9 {
        marks.push(commit_row(&mut c, id));
    }
    switch_and_archive(&primary, &mut c);

    // The plan, from psql and from the CLI: the same backups and WAL.
    let call = format!("ark.restore_plan(target_time => '{}')", marks[2].0);
    let fetched = plan_details(&mut c, &call, "fetch backup");
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert!(fetched[0].contains(&full), "{fetched:?}");
    let call5 = format!("ark.restore_plan(target_time => '{}')", marks[5].0);
    let fetched5 = plan_details(&mut c, &call5, "fetch backup");
    assert_eq!(fetched5.len(), 2, "{fetched5:?}");
    assert!(fetched5[1].contains(&incr), "{fetched5:?}");
    let replay5 = plan_details(&mut c, &call5, "replay WAL");
    assert!(
        replay5[0].contains("before the commit of transaction"),
        "{replay5:?}"
    );
    let command: String = c
        .query_one(
            &format!("SELECT command FROM {call5} WHERE action = 'restore'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        command.contains("restore --repo") && command.contains("--target-time"),
        "{command}"
    );
    let url = repo_url(repo_dir.path());
    let (ok, out, err) = pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        "/nonexistent/dry",
        "--target-time",
        &marks[5].0,
        "--dry-run",
    ]);
    assert!(ok, "{out}{err}");
    for d in fetched5.iter().chain(&replay5) {
        assert!(
            out.contains(d.as_str()),
            "the CLI's plan lacks {d:?}:\n{out}"
        );
    }
    assert!(!Path::new("/nonexistent/dry").exists());

    // Each target, restored: exactly the rows committed before it.
    let cases: Vec<(Vec<&str>, Vec<i32>)> = vec![
        (vec!["--target-time", &marks[2].0], vec![1, 2]),
        (vec!["--target-time", &marks[5].0], vec![1, 2, 3, 4, 5]),
        (vec!["--target-lsn", &marks[5].1], vec![1, 2, 3, 4, 5]),
        (vec!["--target-xid", &marks[8].2], (1..=8).collect()),
        (vec!["--target-name", "before_7"], (1..=6).collect()),
        (vec![], (1..=9).collect()),
        (vec!["--immediate", "--backup", &incr], vec![1, 2, 3]),
    ];
    for (args, want) in cases {
        let restored = restore_and_start(repo_dir.path(), &args);
        let mut r = restored.client();
        assert_eq!(ids(&mut r), want, "restore {args:?}");
        if args.contains(&"--immediate") {
            // The catalog in the backup shows the job that took it still
            // running: the restored cluster records it as done, from the
            // marker pg_ark restore left, instead of taking it again.
            wait_until("the backup's own job recorded as succeeded", WAIT, || {
                r.query_one(
                    "SELECT count(*) FROM ark.jobs
                      WHERE state = 'succeeded' AND result->>'restored_from' = $1",
                    &[&incr],
                )
                .unwrap()
                .get::<_, i64>(0)
                    == 1
            });
            let left: i64 = r
                .query_one(
                    "SELECT count(*) FROM ark.jobs WHERE state <> 'succeeded'",
                    &[],
                )
                .unwrap()
                .get(0);
            assert_eq!(left, 0);
        }
    }
}

#[test]
fn impossible_targets_are_refused_with_the_reason_in_sql_and_the_cli() {
    let repo_dir = temp_dir("ark-repo-");
    let primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE pitr (id int PRIMARY KEY, xid xid8 DEFAULT pg_current_xact_id());",
    )
    .unwrap();
    let (before_full, _, _) = commit_row(&mut c, 1);
    job_backup_id(&wait_job(&mut c, "full", ONCE));
    commit_row(&mut c, 2);
    let first: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    commit_row(&mut c, 3);
    switch_and_archive(&primary, &mut c);
    let (_, end_lsn, _) = commit_row(&mut c, 4);
    let far: String = c
        .query_one("SELECT (pg_current_wal_lsn() + 1000000000)::text", &[])
        .unwrap()
        .get(0);
    let sysid = primary.system_identifier();
    let entry = open_repo(repo_dir.path())
        .cluster(sysid, primary.install.major, false)
        .unwrap();
    // An interrupted backup: objects, no descriptor.
    let half = "20990101T000000Z-F-j99";
    entry
        .storage()
        .put(
            &format!("{}/data/PG_VERSION", physical::backup_prefix(&entry, half)),
            b"x",
            PutMode::Create,
        )
        .unwrap();
    let url = repo_url(repo_dir.path());
    let check = |c: &mut postgres::Client, sql_args: &str, cli_args: &[&str], reason: &str| {
        let e = c
            .query(&format!("SELECT * FROM ark.restore_plan({sql_args})"), &[])
            .expect_err(sql_args);
        let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
        assert_eq!(
            db.code(),
            &postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            "{db:?}"
        );
        let text = format!("{} {}", db.message(), db.detail().unwrap_or_default());
        // DETAIL is a sentence: its first letter is a capital.
        assert!(
            text.to_lowercase().contains(&reason.to_lowercase()),
            "SQL {sql_args}: {text}"
        );
        assert!(db.hint().is_some(), "{db:?}");
        let mut args = vec![
            "restore",
            "--repo",
            &url,
            "--pgdata",
            "/tmp/ark-never",
            "--dry-run",
        ];
        args.extend_from_slice(cli_args);
        let (ok, out, err) = pg_ark(&args);
        assert!(!ok, "{args:?}: {out}");
        assert!(err.contains(reason), "CLI {args:?}: {err}");
        assert!(err.contains("hint:"), "{err}");
    };
    check(
        &mut c,
        &format!("target_time => '{before_full}'"),
        &["--target-time", &before_full],
        "before the oldest backup",
    );
    check(
        &mut c,
        &format!("target_lsn => '{far}'"),
        &["--target-lsn", &far],
        "beyond the last archived WAL",
    );
    check(
        &mut c,
        "backup_id => 'nope'",
        &["--backup", "nope"],
        "\"nope\" is not in the repository",
    );
    check(
        &mut c,
        &format!("backup_id => '{half}'"),
        &["--backup", half],
        "is not complete",
    );
    check(
        &mut c,
        "target_timeline => '9'",
        &["--target-timeline", "9"],
        "timeline 9 does not exist",
    );
    check(
        &mut c,
        "target_xid => '99999999'",
        &["--target-xid", "99999999"],
        "the end of transaction 99999999 is beyond",
    );
    // A lost segment between the backup and the target: a gap in pg_ark
    // info, and an impossible target.
    entry
        .storage()
        .delete(&entry.wal_key(&first).unwrap())
        .unwrap();
    let (ok, out, err) = pg_ark(&["info", "--repo", &url, "--json"]);
    assert!(ok, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let gaps = &doc["clusters"][0]["wal"]["timelines"][0]["gaps"];
    assert_eq!(gaps[0]["first"], first.as_str(), "{doc}");
    assert_eq!(gaps[0]["segments"], 1, "{doc}");
    check(
        &mut c,
        &format!("target_lsn => '{end_lsn}'"),
        &["--target-lsn", &end_lsn],
        &format!("WAL gap: segment {first}"),
    );
}

#[test]
fn a_chain_restores_to_the_latest_state_and_delta_reuses_an_old_copy() {
    let repo_dir = temp_dir("ark-repo-");
    let mut primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    // vm: frozen before the full, rows deleted before the first
    // incremental (clearing map bits), never written after it; its map is
    // compared with the source's (pg_visibility, an oracle pg_ark did not
    // write).
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE EXTENSION pg_visibility;
         CREATE TABLE vm (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off);
         INSERT INTO vm SELECT g, md5(g::text) FROM generate_series(1, 50000) g;",
    )
    .unwrap();
    c.batch_execute("VACUUM (FREEZE) vm").unwrap();
    primary.pgbench(&["-i", "-s", "2", "-q"]);
    let full = job_backup_id(&wait_job(&mut c, "full", ONCE));
    let mut ids = vec![full.clone()];
    c.batch_execute("DELETE FROM vm WHERE id % 100 = 0")
        .unwrap();
    for kind in ["incremental", "differential", "incremental"] {
        primary.pgbench(&["-t", "300", "-c", "2"]);
        ids.push(job_backup_id(&wait_job(&mut c, kind, ONCE)));
    }
    let vm = visibility(&mut c, "vm");
    assert_eq!((vm.not_visible, vm.not_frozen), (0, 0));
    primary.pgbench(&["-t", "300", "-c", "2"]);
    switch_and_archive(&primary, &mut c);
    let source = pgbench_digest(&mut c);
    drop(c);
    assert!(primary.stop("fast").status.success());
    let url = repo_url(repo_dir.path());
    // pg_ark info: the chain, from the repository alone.
    let (ok, out, err) = pg_ark(&["info", "--repo", &url, "--json"]);
    assert!(ok, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["format"], 1);
    let cluster = &doc["clusters"][0];
    assert_eq!(
        cluster["system_identifier"],
        primary.system_identifier_from_control().to_string()
    );
    let chain = &cluster["chains"][0];
    assert_eq!(chain["full"], full.as_str());
    let kinds: Vec<&str> = chain["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["full", "incremental", "differential", "incremental"]
    );
    assert_eq!(chain["backups"][2]["parent"], full.as_str());
    assert!(chain["backups"][0]["stored_bytes"].as_u64().unwrap() > 0);
    let tl = &cluster["wal"]["timelines"][0];
    assert_eq!(
        (
            tl["timeline"].as_u64(),
            tl["gaps"].as_array().unwrap().len()
        ),
        (Some(1), 0)
    );
    let (ok, text, _) = pg_ark(&["info", "--repo", &url]);
    assert!(
        ok && text.contains(&format!("chain {full}: 4 backup(s)")),
        "{text}"
    );
    let downloaded = |err: &str| -> u64 {
        let at = err
            .find(" bytes downloaded")
            .unwrap_or_else(|| panic!("{err}"));
        err[..at]
            .rsplit('(')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };

    // The latest state, from the chain F, I, D, I and the WAL after it.
    let fresh = temp_dir("ark-fresh-");
    let fresh_data = fresh.path().join("data");
    let (ok, out, err) = pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        fresh_data.to_str().unwrap(),
        "--jobs",
        "2",
        "--archive-off",
    ]);
    assert!(ok, "{out}{err}");
    let fresh_bytes = downloaded(&err);
    assert!(err.contains(&format!("\"{}\"", ids[3])), "{err}");

    // On a terminal, progress is an indicatif bar (above, off one, it was
    // plain lines): the full again, and its verification.
    let tty = temp_dir("ark-tty-");
    let tty_data = tty.path().join("data");
    let (ok, shown) = pg_ark_on_a_terminal(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        tty_data.to_str().unwrap(),
        "--backup",
        &full,
        "--immediate",
    ]);
    assert!(ok, "{shown}");
    assert!(shown.contains("#] 100% "), "{shown}");
    assert!(shown.contains("pg_ark: rebuilt "), "{shown}");
    let (ok, shown) = pg_ark_on_a_terminal(&["verify", "--repo", &url, "--backup", &full]);
    assert!(ok, "{shown}");
    assert!(shown.contains("/1 backup(s), "), "{shown}");
    assert!(!shown.contains("pg_ark: verifying"), "{shown}");
    assert!(shown.contains("1 backup(s) verified"), "{shown}");
    drop(tty);

    // An old copy: the full, restored to its consistent point.
    let old = temp_dir("ark-old-");
    let old_data = old.path().join("data");
    let (ok, out, err) = pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        old_data.to_str().unwrap(),
        "--backup",
        &full,
        "--immediate",
    ]);
    assert!(ok, "{out}{err}");
    // A directory that is not empty is refused, and left as it was.
    std::fs::write(old_data.join("keep.me"), "x").unwrap();
    let (ok, _, err) = pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        old_data.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("is not empty") && err.contains("--delta"),
        "{err}"
    );
    assert!(old_data.join("keep.me").exists());
    // --delta keeps what matches and downloads less.
    let (ok, out, err) = pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        old_data.to_str().unwrap(),
        "--delta",
        "--archive-off",
    ]);
    assert!(ok, "{out}{err}");
    let delta_bytes = downloaded(&err);
    assert!(
        delta_bytes < fresh_bytes / 2,
        "delta downloaded {delta_bytes} bytes, a fresh restore {fresh_bytes}: {err}"
    );
    assert!(
        !old_data.join("keep.me").exists(),
        "delta removes files the backup lacks"
    );

    for (dir, data) in [(fresh, fresh_data), (old, old_data)] {
        let restored = Cluster::start_restored(dir, data, &[]);
        let mut r = restored.client();
        assert_eq!(pgbench_digest(&mut r), source);
        assert_eq!(visibility(&mut r, "vm"), vm, "vm's visibility map");
    }

    // A damaged object: the restore stops, naming the file.
    let entry = open_repo(repo_dir.path())
        .cluster(
            primary.system_identifier_from_control(),
            primary.install.major,
            false,
        )
        .unwrap();
    let (_, manifest) = physical::load_backup(&entry, &full).unwrap();
    let big = manifest.files.iter().max_by_key(|f| f.stored).unwrap();
    let mut obj = entry.storage().get(&big.key).unwrap();
    let n = obj.len();
    obj[n / 2] ^= 0x40;
    entry
        .storage()
        .put(&big.key, &obj, PutMode::Overwrite)
        .unwrap();
    let bad = temp_dir("ark-bad-");
    let bad_data = bad.path().join("data");
    let (ok, _, err) = pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        bad_data.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains(&big.path), "{err}");

    // A crafted manifest (format 1, one document) with a path that climbs
    // out: refused, nothing written there.
    let mut m = manifest.clone();
    m.format_version = 1;
    m.files[0].path = "../escape".into();
    let key = format!(
        "{}/{}",
        physical::backup_prefix(&entry, &full),
        physical::MANIFEST_NAME
    );
    let v = serde_json::to_value(&m).unwrap();
    for k in [key.clone(), format!("{key}.copy")] {
        entry.storage().delete(&k).unwrap();
    }
    pg_ark_core::repo::info::save(entry.storage(), &key, &v).unwrap();
    let crafted = temp_dir("ark-crafted-");
    let crafted_data = crafted.path().join("data");
    let (ok, _, err) = pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        crafted_data.to_str().unwrap(),
        "--backup",
        &full,
        "--immediate",
    ]);
    assert!(!ok);
    assert!(err.contains("outside the target directory"), "{err}");
    assert!(!crafted.path().join("escape").exists());
}

#[test]
fn a_restore_after_a_promotion_follows_the_new_timeline_and_start_waits_for_it() {
    let repo_dir = temp_dir("ark-repo-");
    let mut primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE pitr (id int PRIMARY KEY, xid xid8 DEFAULT pg_current_xact_id());",
    )
    .unwrap();
    job_backup_id(&wait_job(&mut c, "full", ONCE));
    for id in 1..=3 {
        commit_row(&mut c, id);
    }
    switch_and_archive(&primary, &mut c);
    drop(c);
    assert!(primary.stop("fast").status.success());

    // The first restore promotes to timeline 2 and archives there.
    let dir = temp_dir("ark-tl2-");
    let data = dir.path().join("data");
    let url = repo_url(repo_dir.path());
    let (ok, out, err) = pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("on a new timeline"),
        "the archiving warning: {err}"
    );
    let mut second = Cluster::start_restored(dir, data, &[]);
    let mut c2 = second.client();
    assert_eq!(ids(&mut c2), [1, 2, 3]);
    let tli: i32 = c2
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .unwrap()
        .get(0);
    c2.execute("CHECKPOINT", &[]).unwrap();
    for id in 4..=5 {
        commit_row(&mut c2, id);
    }
    switch_and_archive(&second, &mut c2);
    drop(c2);
    assert!(second.stop("fast").status.success());

    // The second restore crosses from timeline 1 to 2, run as the server's
    // OS user with --start, which waits until recovery is done.
    let (ok, out, err) = pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        "/tmp/ark-dry",
        "--dry-run",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("on timeline(s) 1, 2"), "{out}");
    let dir = temp_dir("ark-tl3-");
    let data = dir.path().join("data");
    let install = PgInstall::from_env();
    give_to_test_user(dir.path());
    let out = server_command(install.bin("pg_ark"))
        .args([
            "restore",
            "--repo",
            &url,
            "--archive-off",
            "--start",
            "--quiet",
            "--pgdata",
        ])
        .arg(&data)
        .arg("--pg-bin")
        .arg(install.bin("pg_ctl").parent().unwrap())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("is running"), "{text}");
    let log = data.join("pg_ark_restore.log");
    let third = Cluster::adopt(dir, data, log);
    let mut c3 = third.client();
    assert_eq!(ids(&mut c3), [1, 2, 3, 4, 5]);
    let tli3: i32 = c3
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .unwrap()
        .get(0);
    assert_eq!((tli, tli3), (2, 3));
}

#[test]
fn a_logical_dump_restores_and_if_empty_leaves_a_populated_database_alone() {
    let repo_dir = temp_dir("ark-repo-");
    let url = repo_url(repo_dir.path());
    let cluster = Cluster::start_with(
        pg_ark_tests::ClusterOptions::default().set("ark.repository", &format!("'{url}'")),
    );
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    c.batch_execute("CREATE DATABASE shop").unwrap();
    let mut shop = cluster.client_on("shop");
    shop.batch_execute(
        "CREATE TABLE orders (id int PRIMARY KEY, note text);
         INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 500) g;",
    )
    .unwrap();
    let done = wait_job(&mut c, "logical", r#"{"database": "shop"}"#);
    assert_eq!(done["state"], "succeeded", "{done}");
    let port = cluster.port.to_string();
    let host = cluster.sockdir.display().to_string();
    let bin = cluster
        .install
        .bin("pg_restore")
        .parent()
        .unwrap()
        .display()
        .to_string();
    let args_with = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "restore-logical",
            "--repo",
            &url,
            "--database",
            "shop",
            "--into",
            "shop_copy",
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            "postgres",
            "--pg-bin",
            &bin,
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    };
    let run = |extra: &[&str]| {
        let args = args_with(extra);
        pg_ark(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let count = |db: &str| -> i64 {
        cluster
            .client_on(db)
            .query_one("SELECT count(*) FROM orders", &[])
            .unwrap()
            .get(0)
    };
    // Without --if-empty, a database that does not exist is not created.
    let (ok, _, err) = run(&[]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    // --if-empty creates it and restores.
    let (ok, out, err) = run(&["--if-empty"]);
    assert!(ok, "{out}{err}");
    assert!(err.contains("created database \"shop_copy\""), "{err}");
    assert_eq!(count("shop_copy"), 500);
    // A populated database is left alone by --if-empty (exit 0), refused
    // without --clean, and replaced with it.
    cluster
        .client_on("shop_copy")
        .execute("INSERT INTO orders VALUES (9999, 'local')", &[])
        .unwrap();
    let (ok, out, err) = run(&["--if-empty"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("nothing restored"), "{out}");
    assert_eq!(count("shop_copy"), 501);
    let (ok, _, err) = run(&[]);
    assert!(
        !ok && err.contains("is not empty") && err.contains("--clean"),
        "{err}"
    );
    assert_eq!(count("shop_copy"), 501);
    let (ok, out, err) = run(&["--clean", "--jobs", "2"]);
    assert!(ok, "{out}{err}");
    assert_eq!(count("shop_copy"), 500);
    // On a terminal, the download is a bar.
    let (ok, shown) = pg_ark_on_a_terminal(&args_with(&["--clean"]));
    assert!(ok, "{shown}");
    assert!(
        shown.contains("#] ") && shown.contains(" object(s), in "),
        "{shown}"
    );
    assert!(!shown.contains("pg_ark: downloaded"), "{shown}");
    assert_eq!(count("shop_copy"), 500);
    // A damaged dump object is refused before anything is restored.
    let key = done["result"]["backups"][0]["keys"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no dump key in {done}"));
    let path = repo_dir.path().join(key);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    cluster
        .client_on("shop_copy")
        .execute("DELETE FROM orders WHERE id = 1", &[])
        .unwrap();
    let (ok, _, err) = run(&["--clean"]);
    assert!(!ok && err.contains("is corrupt"), "{err}");
    assert_eq!(count("shop_copy"), 499);
}
