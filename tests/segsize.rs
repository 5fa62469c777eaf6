//! Clusters whose WAL segments are not 16 MiB (`initdb --wal-segsize`):
//! backups, `pg_ark restore` to a restore point, `pg_ark wal-get` (the
//! restored cluster's restore_command), retention, `pg_ark info` and a
//! restore drill, on 64 MiB segments and on 1 MiB segments across the end
//! of a log id (where segment names run to `...00000FFF` and go on at
//! `...0000000100000000`). And an entry of another segment size is refused.
use pg_ark_core::repo::Repository;
use pg_ark_core::storage::local::LocalStorage;
use pg_ark_tests::{
    archiving, commit_row, give_to_test_user, give_tree_to_test_user, open_repo, pg_ark, temp_dir,
    wait_job, wait_until, Cluster, ClusterOptions,
};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
/// One attempt, and a bounded wait for WAL: a backup that waits for
/// segments of the wrong names fails in a minute, not ten.
const ONCE: &str = r#"{"max_attempts": 1, "wait_timeout": 60}"#;

fn repo_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn backup_id(done: &Value) -> String {
    assert_eq!(done["state"], "succeeded", "{done}");
    done["result"]["backup_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no backup_id in {done}"))
        .to_string()
}

fn ids(c: &mut postgres::Client) -> Vec<i32> {
    c.query("SELECT id FROM pitr ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn prepare(cluster: &Cluster, mb: u32) -> postgres::Client {
    let mut c = cluster.client();
    let shown: String = c.query_one("SHOW wal_segment_size", &[]).unwrap().get(0);
    assert_eq!(shown, format!("{mb}MB"));
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE pitr (id int PRIMARY KEY, xid xid8 DEFAULT pg_current_xact_id());",
    )
    .unwrap();
    c
}

/// Switch to the next segment; wait until the one switched from is archived.
fn switch_and_archive(cluster: &Cluster, c: &mut postgres::Client) -> String {
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    cluster.wait_archived(&seg, WAIT);
    seg
}

/// `pg_ark restore --archive-off` into a new directory with `args`, then
/// start it (its restore_command is `pg_ark wal-get`).
fn restore_and_start(repo: &Path, args: &[&str]) -> Cluster {
    let all = [&["--archive-off"], args].concat();
    let (cluster, _) = pg_ark_tests::restore_and_start(repo, &all, &[]);
    let auto = std::fs::read_to_string(cluster.data.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("wal-get"), "{auto}");
    cluster
}

/// `pg_ark wal-get` of segment `name` for the cluster in `pgdata`, into a
/// scratch file: its length.
fn wal_get(repo: &Path, pgdata: &Path, name: &str) -> u64 {
    let scratch = temp_dir("ark-walget-");
    let dest = scratch.path().join(name);
    let url = repo_url(repo);
    let (ok, out, err) = pg_ark(&[
        "wal-get",
        "--repo",
        &url,
        "--pgdata",
        &pgdata.display().to_string(),
        "--prefetch",
        "1",
        name,
        &dest.display().to_string(),
    ]);
    assert!(ok, "pg_ark wal-get {name}:\n{out}{err}");
    std::fs::metadata(&dest).unwrap().len()
}

fn info(repo: &Path) -> Value {
    let (ok, out, err) = pg_ark(&["info", "--repo", &repo_url(repo), "--json"]);
    assert!(ok, "{out}{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["clusters"][0].clone()
}

#[test]
fn sixty_four_mib_segments_back_up_restore_to_a_restore_point_and_drill() {
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    give_to_test_user(work.path());
    let primary = Cluster::start_with(
        archiving(repo.path())
            .wal_segsize_mb(64)
            .set(
                "ark.work_directory",
                &format!("'{}'", work.path().display()),
            )
            .set("ark.scheduler_naptime", "'1s'"),
    );
    let mut c = prepare(&primary, 64);
    let full = backup_id(&wait_job(&mut c, "full", ONCE));
    for id in 1..=3 {
        commit_row(&mut c, id);
    }
    let incr = backup_id(&wait_job(&mut c, "incremental", ONCE));
    for id in 4..=6 {
        commit_row(&mut c, id);
    }
    c.execute("SELECT pg_create_restore_point('sixty_four')", &[])
        .unwrap();
    for id in 7..=8 {
        commit_row(&mut c, id);
    }
    switch_and_archive(&primary, &mut c);

    // A restore to the restore point, through the incremental, replayed
    // with pg_ark wal-get: exactly the rows committed before it.
    let restored = restore_and_start(repo.path(), &["--target-name", "sixty_four"]);
    let mut r = restored.client();
    assert_eq!(ids(&mut r), (1..=6).collect::<Vec<_>>());
    let shown: String = r.query_one("SHOW wal_segment_size", &[]).unwrap().get(0);
    assert_eq!(shown, "64MB");

    // The repository records the size; the backups' WAL names are 64 MiB
    // names (segment part below 0x40).
    let doc = info(repo.path());
    assert_eq!(doc["wal_segment_size"], 64 << 20, "{doc}");
    let backups = doc["chains"][0]["backups"].as_array().unwrap().clone();
    assert_eq!(backups.len(), 2, "{doc}");
    for b in &backups {
        assert_eq!(b["wal_segment_size"], 64 << 20, "{b}");
        let seg = u32::from_str_radix(&b["start_wal"].as_str().unwrap()[16..], 16).unwrap();
        assert!(seg < 0x40, "{b}");
    }
    assert_eq!(
        doc["wal"]["timelines"][0]["gaps"],
        serde_json::json!([]),
        "{doc}"
    );

    let start_wal = backups[1]["start_wal"].as_str().unwrap().to_string();
    assert_eq!(backups[1]["backup_id"], incr.as_str());
    assert_eq!(wal_get(repo.path(), &restored.data, &start_wal), 64 << 20);
    drop(r);
    drop(restored);

    // A restore drill of the newest backup, on a scratch server of the
    // same segment size.
    let done = wait_job(&mut c, "drill", r#"{"max_attempts": 1}"#);
    assert_eq!(done["state"], "succeeded", "{done}");
    let d = &done["result"];
    assert_eq!(d["ok"], true, "{d}");
    assert_eq!(d["chain"], serde_json::json!([full, incr]), "{d}");
}

#[test]
fn one_mib_segments_across_a_log_id_restore_and_retention_keeps_the_wal_kept_backups_need() {
    let repo = temp_dir("ark-repo-");
    // Near the end of log id 0: 1 MiB segments run to 0000000100000000
    // 00000FFF and go on at 000000010000000100000000.
    let primary = Cluster::start_with(
        archiving(repo.path())
            .wal_segsize_mb(1)
            .first_wal_segment("000000010000000000000FF0")
            .set("ark.retention_full", "2"),
    );
    let mut c = prepare(&primary, 1);
    let f1 = backup_id(&wait_job(&mut c, "full", ONCE));
    commit_row(&mut c, 1);
    let f2 = backup_id(&wait_job(&mut c, "full", ONCE));
    let mut switched = Vec::new();
    let mut id = 2;
    loop {
        commit_row(&mut c, id);
        id += 1;
        let current: String = c
            .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
            .unwrap()
            .get(0);
        if current.as_str() >= "000000010000000100000001" {
            break;
        }
        switched.push(switch_and_archive(&primary, &mut c));
        assert!(id < 40, "the WAL never reached log id 1: {switched:?}");
    }
    assert!(
        switched.iter().any(|s| s == "000000010000000000000FFF"),
        "{switched:?}"
    );
    assert!(
        switched.iter().any(|s| s == "000000010000000100000000"),
        "{switched:?}"
    );
    let before: Vec<i32> = (1..id).collect();
    c.execute("SELECT pg_create_restore_point('across')", &[])
        .unwrap();
    commit_row(&mut c, 100);
    switch_and_archive(&primary, &mut c);

    // A third full: retention keeps two chains, expires the first and the
    // WAL before the second's start, and nothing after it.
    let done = wait_job(&mut c, "full", ONCE);
    let f3 = backup_id(&done);
    let expired = &done["result"]["expired"];
    let labels: Vec<&str> = expired["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["label"].as_str())
        .collect();
    assert_eq!(labels, [f1.as_str()], "{expired}");
    let entry = open_repo(repo.path())
        .cluster(primary.system_identifier(), primary.install.major, false)
        .unwrap();
    for name in &switched {
        assert!(
            entry.get_wal(name).unwrap().is_some(),
            "retention removed {name}, which backup {f2} needs: {expired}"
        );
    }
    let doc = info(repo.path());
    assert_eq!(doc["wal_segment_size"], 1 << 20, "{doc}");
    assert_eq!(
        doc["wal"]["timelines"][0]["gaps"],
        serde_json::json!([]),
        "{doc}"
    );
    let chains: Vec<&str> = doc["chains"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|ch| ch["full"].as_str())
        .collect();
    assert_eq!(chains, [f2.as_str(), f3.as_str()], "{doc}");

    // The restore point lies before the third full: the second serves,
    // replaying across the end of log id 0 with pg_ark wal-get.
    let restored = restore_and_start(repo.path(), &["--target-name", "across"]);
    let mut r = restored.client();
    assert_eq!(ids(&mut r), before);
    for name in ["000000010000000000000FFF", "000000010000000100000000"] {
        assert_eq!(
            wal_get(repo.path(), &restored.data, name),
            1 << 20,
            "{name}"
        );
    }
}

#[test]
fn an_entry_of_another_segment_size_is_refused() {
    let repo = temp_dir("ark-repo-");
    // The archiver stays idle until ark.repository is set.
    let primary = Cluster::start_with(
        ClusterOptions::default()
            .wal_segsize_mb(64)
            .set("archive_mode", "on")
            .set("archive_library", "'pg_ark'"),
    );
    // An entry for this system identifier made with 16 MiB segments.
    let storage = LocalStorage::open(repo.path()).unwrap();
    std::sync::Arc::new(Repository::open(Box::new(storage), true).unwrap())
        .cluster(primary.system_identifier(), primary.install.major, true)
        .unwrap();
    give_tree_to_test_user(repo.path());
    let mut c = primary.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    c.batch_execute(&format!(
        "ALTER SYSTEM SET ark.repository = '{}'",
        repo_url(repo.path())
    ))
    .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("ark.repository set", WAIT, || {
        let v: String = primary
            .client()
            .query_one("SHOW ark.repository", &[])
            .unwrap()
            .get(0);
        !v.is_empty()
    });
    let mut c = primary.client();
    let done = wait_job(&mut c, "full", ONCE);
    assert_eq!(done["state"], "failed", "{done}");
    let error = done["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("records WAL segments of 16MB") && error.contains("this cluster has 64MB"),
        "{done}"
    );
    // The archiver refuses it too, and says so in the log.
    c.execute("SELECT pg_switch_wal()", &[]).unwrap();
    wait_until("the archiver's refusal", WAIT, || {
        primary.log().contains("records WAL segments of 16MB")
    });
}
