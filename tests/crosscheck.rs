//! An independent cross-check of pg_ark's block-level increments against
//! PostgreSQL's own (17+): at the same data, pg_ark's full and incremental,
//! rebuilt by pg_ark's restore, and pg_basebackup's full and
//! `--incremental`, rebuilt by pg_combinebackup, recover to the same
//! relation contents. Run in the integration suite (PostgreSQL 17), not in
//! the smoke suites: PostgreSQL 15 has neither tool.
use pg_ark_core::physical;
use pg_ark_tests::{archiving, give_tree_to_test_user, open_repo, temp_dir, visibility, Cluster};
use std::path::Path;
use std::process::Command;

fn run(cluster: &Cluster, program: &str, args: &[&str], extra: &[&Path]) {
    let out = Command::new(cluster.install.bin(program))
        .args(args)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rows, sum and negative rows of table `big` (a page the increment
/// missed keeps its row positive).
fn big_digest(c: &mut postgres::Client) -> (i64, i64, i64) {
    let r = c
        .query_one(
            "SELECT count(*), sum(g::int8)::int8, count(*) FILTER (WHERE g < 0) FROM big",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

fn client_args(cluster: &Cluster) -> Vec<String> {
    vec![
        "-h".into(),
        cluster.sockdir.display().to_string(),
        "-p".into(),
        cluster.port.to_string(),
        "-U".into(),
        "postgres".into(),
    ]
}

/// Row count and digest of every pgbench table and of table `extra`.
fn digest(c: &mut postgres::Client) -> Vec<(i64, String)> {
    [
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_history",
        "extra",
    ]
    .iter()
    .map(|t| {
        let r = c
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {t} x"
                ),
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    })
    .collect()
}

#[test]
fn pg_arks_chain_and_pg_combinebackups_agree() {
    let install = pg_ark_tests::PgInstall::from_env();
    assert!(
        install.major >= 17,
        "this cross-check needs PostgreSQL 17 or later (pg_combinebackup); it runs in the integration suite"
    );
    let repo_dir = temp_dir("ark-repo-");
    let primary = Cluster::start_with(archiving(repo_dir.path()).set("summarize_wal", "on"));
    let mut c = primary.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    let conn = client_args(&primary);
    let conn: Vec<&str> = conn.iter().map(String::as_str).collect();
    let mut init = conn.clone();
    init.extend(["-i", "-s", "2", "-q", "postgres"]);
    run(&primary, "pgbench", &init, &[]);
    c.batch_execute(
        "CREATE EXTENSION pg_visibility;
         CREATE TABLE extra WITH (autovacuum_enabled = off) AS
           SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;",
    )
    .unwrap();
    c.batch_execute("VACUUM (FREEZE) extra").unwrap();
    // More than 10,000 pages (about 86 MB), each changed once after the
    // full: the summaries name more blocks than pg_ark fetches at a time.
    c.batch_execute(
        "CREATE TABLE big WITH (autovacuum_enabled = off) AS
           SELECT g FROM generate_series(1, 2500000) g;",
    )
    .unwrap();
    let big_pages: i64 = c
        .query_one("SELECT pg_relation_size('big') / 8192", &[])
        .unwrap()
        .get(0);
    assert!(big_pages > 10_000, "{big_pages}");

    let wait = |c: &mut postgres::Client, kind: &str| -> serde_json::Value {
        let doc: String = c
            .query_one("SELECT ark.wait(ark.backup($1), '5 min')::text", &[&kind])
            .unwrap()
            .get(0);
        serde_json::from_str(&doc).unwrap()
    };
    let work = temp_dir("ark-cross-");
    let bb_full = work.path().join("full");
    let bb_incr = work.path().join("incr");
    // Fulls of the same data.
    let full = wait(&mut c, "full");
    assert_eq!(full["state"], "succeeded", "{full}");
    let mut bb = conn.clone();
    bb.extend(["--checkpoint=fast", "-D"]);
    run(&primary, "pg_basebackup", &bb, &[&bb_full]);
    // Changes: pgbench, a truncation, a new table, a removed one.
    let mut bench = conn.clone();
    bench.extend(["-n", "-c", "2", "-t", "300", "postgres"]);
    run(&primary, "pgbench", &bench, &[]);
    c.batch_execute(
        "DELETE FROM extra WHERE id > 15000;
         UPDATE extra SET v = 'changed' WHERE id % 97 = 0;",
    )
    .unwrap();
    c.batch_execute("VACUUM extra").unwrap();
    // One row of every page of big (226 rows a page, in order): each page
    // holds a multiple of 200.
    let changed = c
        .execute("UPDATE big SET g = -g WHERE g % 200 = 0", &[])
        .unwrap();
    assert_eq!(changed, 12_500);
    // Incrementals of the same data.
    let inc = wait(&mut c, "incremental");
    assert_eq!(inc["state"], "succeeded", "{inc}");
    assert_eq!(inc["result"]["kind"], "incremental", "{inc}");
    let manifest = format!(
        "--incremental={}",
        bb_full.join("backup_manifest").display()
    );
    let mut bbi = conn.clone();
    bbi.extend(["--checkpoint=fast", &manifest, "-D"]);
    run(&primary, "pg_basebackup", &bbi, &[&bb_incr]);
    let source = digest(&mut c);
    let source_big = big_digest(&mut c);
    // extra is not written after the backups: its visibility map, as
    // PostgreSQL's pg_visibility reads it, must come back as it is.
    let source_vm = visibility(&mut c, "extra");
    assert_eq!((source_vm.not_visible, source_vm.not_frozen), (0, 0));
    drop(c);

    // PostgreSQL's way: pg_combinebackup, then start (the WAL is included).
    let combined_dir = temp_dir("ark-combined-");
    let combined = combined_dir.path().join("data");
    run(
        &primary,
        "pg_combinebackup",
        &["-o"],
        &[&combined, &bb_full, &bb_incr],
    );
    give_tree_to_test_user(&combined);
    let theirs = Cluster::start_from_backup(
        combined_dir,
        combined,
        pg_ark_tests::ClusterOptions::default().set("archive_mode", "off"),
    );
    let mut t = theirs.client_when_ready(std::time::Duration::from_secs(120));
    let theirs_digest = digest(&mut t);
    let theirs_vm = visibility(&mut t, "extra");
    let theirs_big = big_digest(&mut t);

    // pg_ark's way: the chain rebuilt from the repository alone.
    let repo = open_repo(repo_dir.path());
    let entry = repo
        .cluster(primary.system_identifier(), primary.install.major, false)
        .unwrap();
    let id = inc["result"]["backup_id"].as_str().unwrap();
    let dir = temp_dir("ark-restore-");
    let data = dir.path().join("data");
    physical::restore_backup(&entry, id, &data).unwrap();
    let ours = Cluster::recover_restored(
        dir,
        data,
        &pg_ark_tests::wal_get_command(repo_dir.path()),
        &[],
    );
    let ours_digest = digest(&mut ours.client());
    let ours_vm = visibility(&mut ours.client(), "extra");
    let ours_big = big_digest(&mut ours.client());
    assert_eq!(ours_big, source_big, "pg_ark's restore of big");
    assert_eq!(theirs_big, source_big, "pg_combinebackup's of big");

    assert_eq!(
        ours_digest, source,
        "pg_ark's restore differs from the source"
    );
    assert_eq!(
        theirs_digest, source,
        "pg_combinebackup's differs from the source"
    );
    assert_eq!(ours_vm, source_vm, "pg_ark's visibility map of extra");
    assert_eq!(
        theirs_vm, source_vm,
        "pg_combinebackup's visibility map of extra"
    );
}
