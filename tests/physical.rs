//! Physical backups on a real cluster: a `full` job stores the data
//! directory in the repository, the catalog records it, the repository
//! alone verifies it, and the core's restore routine rebuilds it into a
//! directory that recovers, with the archived WAL, to the backup's
//! consistent point with the same data.
use pg_ark_core::physical;
use pg_ark_core::storage::PutMode;
use pg_ark_tests::{
    archiving, open_repo, pgbench_digest, temp_dir, wait_job, wait_until, wal_get_command, Cluster,
    ClusterOptions,
};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A digest of a table's rows, in key order.
fn table_digest(c: &mut postgres::Client, table: &str) -> (i64, String) {
    let row = c
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY id)), '')
                   FROM {table} t"
            ),
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn a_full_backup_restores_from_the_repository_alone() {
    let repo_dir = temp_dir("ark-repo-");
    let mut primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g;
         CREATE UNLOGGED TABLE u AS SELECT g AS id FROM generate_series(1, 1000) g;
         CHECKPOINT;",
    )
    .unwrap();
    let before = table_digest(&mut c, "t");
    let done = wait_job(&mut c, "full", "{}");
    assert_eq!(done["state"], "succeeded", "{done}");
    let result = &done["result"];
    let id = result["backup_id"].as_str().unwrap().to_string();
    assert_eq!(result["kind"], "full");
    assert!(result["files"].as_u64().unwrap() > 100, "{result}");
    assert!(
        result["stored_bytes"].as_u64().unwrap() < result["original_bytes"].as_u64().unwrap(),
        "{result}"
    );
    // Changes after the backup are not part of a restore to its consistent point.
    c.batch_execute("INSERT INTO t SELECT g, 'after' FROM generate_series(100001, 100100) g")
        .unwrap();
    let row = c
        .query_one(
            "SELECT kind, path, info->>'stop_lsn' FROM ark.backups WHERE label = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "full");
    assert_eq!(
        row.get::<_, String>(2),
        result["stop_lsn"].as_str().unwrap()
    );
    // No backup is left in progress.
    let running: bool = c
        .query_one("SELECT count(*) > 0 FROM pg_stat_progress_basebackup", &[])
        .unwrap()
        .get(0);
    assert!(!running);
    drop(c);
    let sysid = primary.system_identifier();
    let major = primary.install.major;
    assert!(primary.stop("fast").status.success());

    // From here on, the repository alone.
    let repo = open_repo(repo_dir.path());
    let entry = repo.cluster(sysid, major, false).unwrap();
    let listed = physical::list_backups(&entry).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].backup_id, id);
    assert_eq!(physical::verify_backup(&entry, &id).unwrap(), vec![]);

    let dir = temp_dir("ark-restore-");
    let data = dir.path().join("data");
    physical::restore_backup(&entry, &id, &data).unwrap();
    assert!(data.join("backup_label").exists());
    assert!(!data.join("postmaster.pid").exists());
    let restored = Cluster::recover_restored(dir, data, &wal_get_command(repo_dir.path()), &[]);
    let mut r = restored.client();
    assert_eq!(table_digest(&mut r, "t"), before);
    // An unlogged table comes back empty, as after a crash.
    let n: i64 = r.query_one("SELECT count(*) FROM u", &[]).unwrap().get(0);
    assert_eq!(n, 0);
    let log = restored.log();
    assert!(log.contains("restored log file"), "{log}");
}

/// Rebuild backup `id` from the repository in `repo_dir` with the core's
/// restore routine, and start it with the archived WAL up to its
/// consistent point (promoted: a new timeline).
fn restore_and_start(
    repo_dir: &std::path::Path,
    entry: &pg_ark_core::repo::ClusterRepo,
    id: &str,
) -> Cluster {
    let dir = temp_dir("ark-restore-");
    let data = dir.path().join("data");
    physical::restore_backup(entry, id, &data).unwrap();
    Cluster::recover_restored(dir, data, &wal_get_command(repo_dir), &[])
}

#[test]
fn a_chain_of_full_incremental_and_differential_backups_restores_every_backup() {
    let repo_dir = temp_dir("ark-repo-");
    // On 17+, the increments take their changed blocks from WAL summaries.
    let major = pg_ark_tests::PgInstall::from_env().major;
    let mut opts = archiving(repo_dir.path());
    if major >= 17 {
        opts = opts.set("summarize_wal", "on");
    }
    let mut primary = Cluster::start_with(opts);
    let mut c = primary.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    primary.pgbench(&["-i", "-s", "2", "-q"]);
    // A table nothing changes after the full (frozen: not even hint bits).
    c.batch_execute("CREATE TABLE untouched AS SELECT g FROM generate_series(1, 10000) g")
        .unwrap();
    c.batch_execute("VACUUM (FREEZE) untouched").unwrap();
    // max_attempts 1: a restored copy must not retry the job it caught running.
    let opts = r#"{"max_attempts": 1}"#;
    // No full yet: an incremental becomes a full, and says why.
    let first = wait_job(&mut c, "incremental", opts);
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["result"]["kind"], "full", "{first}");
    assert_eq!(first["result"]["requested"], "incremental", "{first}");
    assert_eq!(
        first["result"]["fallback"], "no full backup in this repository",
        "{first}"
    );
    // The worker's memory, as Linux counted it: the peak resident set
    // holds every private page sampled, and a small cluster stays far from
    // the 256 MiB a million-file cluster is allowed.
    let memory = &first["result"]["memory"];
    let anon = memory["rss_anon_peak_kib"]
        .as_u64()
        .unwrap_or_else(|| panic!("{first}"));
    assert!(anon > 0 && anon < 256 * 1024, "{first}");
    // hwm_kib is left out only where the kernel refuses to reset the peak.
    let reset_works = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    match memory["hwm_kib"].as_u64() {
        Some(hwm) => assert!(hwm >= anon, "{first}"),
        None => assert!(
            !reset_works,
            "no hwm_kib though the kernel resets peaks: {first}"
        ),
    }
    let mut taken = vec![(first["result"].clone(), pgbench_digest(&mut c))];
    for kind in ["incremental", "differential", "incremental"] {
        primary.pgbench(&["-t", "200", "-c", "2", "-n"]);
        let done = wait_job(&mut c, kind, opts);
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["result"]["kind"], kind, "{done}");
        assert!(done["result"].get("fallback").is_none(), "{done}");
        let from = done["result"]["changes_from"].as_str().unwrap();
        if major >= 17 {
            assert_eq!(from, "WAL summaries", "{done}");
        } else {
            assert!(from.starts_with("page LSNs"), "{done}");
        }
        taken.push((done["result"].clone(), pgbench_digest(&mut c)));
    }
    let ids: Vec<String> = taken
        .iter()
        .map(|(r, _)| r["backup_id"].as_str().unwrap().to_string())
        .collect();
    // Parents: the incremental on the full, the differential on the full,
    // the last incremental on the differential.
    let parents: Vec<Value> = taken.iter().map(|(r, _)| r["parent"].clone()).collect();
    assert_eq!(
        parents,
        [
            Value::Null,
            Value::from(ids[0].clone()),
            Value::from(ids[0].clone()),
            Value::from(ids[2].clone()),
        ]
    );
    for (r, _) in &taken {
        assert_eq!(r["chain"], ids[0].as_str(), "{r}");
    }
    // Block-level: an increment stores a small part of what the full stores.
    let stored = |i: usize| taken[i].0["stored_bytes"].as_u64().unwrap();
    for i in 1..4 {
        assert!(stored(i) * 2 < stored(0), "{} vs {}", stored(i), stored(0));
    }
    let accounts: String = c
        .query_one("SELECT pg_relation_filepath('pgbench_accounts')", &[])
        .unwrap()
        .get(0);
    let untouched: String = c
        .query_one("SELECT pg_relation_filepath('untouched')", &[])
        .unwrap()
        .get(0);
    // The catalog records the same chain.
    let rows = c
        .query(
            "SELECT label, kind, info->>'parent', info->>'chain' FROM ark.backups
              WHERE kind <> 'logical' ORDER BY id",
            &[],
        )
        .unwrap();
    let catalog: Vec<(String, String, Option<String>, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(catalog.len(), 4);
    for (row, (r, _)) in catalog.iter().zip(&taken) {
        assert_eq!(row.0, r["backup_id"].as_str().unwrap());
        assert_eq!(row.1, r["kind"].as_str().unwrap());
        assert_eq!(row.2.as_deref(), r["parent"].as_str());
        assert_eq!(row.3, ids[0]);
    }
    // The chain view: one chain, the full first.
    let row = c
        .query_one(
            "SELECT chain, backups, incrementals, differentials, backup_ids, kinds
               FROM ark.backup_chains",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), ids[0]);
    assert_eq!(row.get::<_, i64>(1), 4);
    assert_eq!(row.get::<_, i64>(2), 2);
    assert_eq!(row.get::<_, i64>(3), 1);
    assert_eq!(row.get::<_, Vec<String>>(4), ids);
    assert_eq!(
        row.get::<_, Vec<String>>(5),
        ["full", "incremental", "differential", "incremental"]
    );
    // ark.verify() checks the newest backup and its whole chain.
    let v: String = c
        .query_one("SELECT ark.wait(ark.verify(), '5 min')::text", &[])
        .unwrap()
        .get(0);
    let v: Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["backup_id"], ids[3].as_str(), "{v}");
    drop(c);
    let sysid = primary.system_identifier();
    assert!(primary.stop("fast").status.success());

    let repo = open_repo(repo_dir.path());
    let entry = repo.cluster(sysid, major, false).unwrap();
    let listed = physical::list_backups(&entry).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|b| b.backup_id.clone())
            .collect::<Vec<_>>(),
        ids
    );
    // The repository's catalog index lists the same backups.
    assert_eq!(physical::read_index(&entry).unwrap(), Some(listed.clone()));
    // pgbench_accounts is stored whole in the full, by block in the others:
    // only the blocks that changed, fewer than half of them.
    for (i, id) in ids.iter().enumerate() {
        let (_, m) = physical::load_backup(&entry, id).unwrap();
        let e = m.files.iter().find(|f| f.path == accounts).unwrap();
        match &e.blocks {
            None => assert_eq!(i, 0, "{id}: {accounts} stored whole"),
            Some(b) => {
                assert!(i > 0);
                let total = e.size / physical::BLOCK;
                assert!(
                    !b.is_empty() && (b.len() as u64) * 2 < total,
                    "{id}: {} of {total}",
                    b.len()
                );
            }
        }
    }
    for (i, (result, digest)) in taken.iter().enumerate() {
        let id = &ids[i];
        assert_eq!(listed[i].kind.as_str(), result["kind"].as_str().unwrap());
        assert_eq!(physical::verify_backup(&entry, id).unwrap(), vec![], "{id}");
        let restored = restore_and_start(repo_dir.path(), &entry, id);
        let mut r = restored.client();
        assert_eq!(
            &pgbench_digest(&mut r),
            digest,
            "backup {id} ({})",
            result["kind"]
        );
    }
    // `pg_ark verify`, from the repository alone.
    let verify = |extra: &[&str]| {
        let out = std::process::Command::new(pg_ark_tests::PgInstall::from_env().bin("pg_ark"))
            .args(["verify", "--repo"])
            .arg(format!("file://{}", repo_dir.path().display()))
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = verify(&[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("4 backup(s) verified"), "{stdout}");
    // Faults: a flipped byte in the first incremental's pgbench_accounts
    // blocks, a removed object of the full, a removed WAL segment of the
    // last backup.
    let (_, m1) = physical::load_backup(&entry, &ids[1]).unwrap();
    let flipped = m1.files.iter().find(|f| f.path == accounts).unwrap();
    let mut obj = repo.storage().get(&flipped.key).unwrap();
    let at = obj.len() / 2;
    obj[at] ^= 1;
    repo.storage()
        .put(&flipped.key, &obj, PutMode::Overwrite)
        .unwrap();
    // A relation no backup after the full changed: each relies on the
    // full's copy.
    let (_, m0) = physical::load_backup(&entry, &ids[0]).unwrap();
    let removed = m0.files.iter().find(|f| f.path == untouched).unwrap();
    repo.storage().delete(&removed.key).unwrap();
    let wal = listed[3].stop_wal.clone();
    repo.storage()
        .delete(&entry.wal_key(&wal).unwrap())
        .unwrap();
    let files = |id: &str| -> Vec<String> {
        physical::verify_backup(&entry, id)
            .unwrap()
            .into_iter()
            .map(|p| p.file)
            .collect()
    };
    let mut both = vec![accounts.clone(), untouched.clone()];
    both.sort();
    assert_eq!(files(&ids[0]), [untouched.as_str()]);
    assert_eq!(files(&ids[1]), both);
    assert_eq!(files(&ids[2]), [untouched.as_str()]);
    assert_eq!(files(&ids[3]), [untouched.clone(), format!("WAL {wal}")]);
    let (code, stdout, stderr) = verify(&["--backup", &ids[1]]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("  {accounts}: ")), "{stdout}");
    let parent = format!("  {untouched}: in parent backup \"{}\"", ids[0]);
    assert!(stdout.contains(&parent), "{stdout}");
    assert!(
        stderr.contains("1 of 1 backup(s) failed verification"),
        "{stderr}"
    );
    let (code, stdout, _) = verify(&[]);
    assert_eq!(code, Some(1));
    assert!(stdout.contains(&format!("  WAL {wal}: ")), "{stdout}");
}

#[test]
fn an_incremental_after_an_archive_gap_or_a_timeline_switch_is_a_full_with_the_reason() {
    let repo_dir = temp_dir("ark-repo-");
    let mut primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    let opts = r#"{"max_attempts": 1}"#;
    let full = wait_job(&mut c, "full", opts);
    assert_eq!(full["state"], "succeeded", "{full}");
    let full_id = full["result"]["backup_id"].as_str().unwrap().to_string();
    // A segment after the full is lost from the repository: page LSNs can
    // no longer tell what changed.
    let lost = Cluster::write_and_switch_wal(&mut c, 1);
    let last = Cluster::write_and_switch_wal(&mut c, 2);
    primary.wait_archived(&last, WAIT);
    let repo = open_repo(repo_dir.path());
    let entry = repo
        .cluster(primary.system_identifier(), primary.install.major, false)
        .unwrap();
    repo.storage()
        .delete(&entry.wal_key(&lost).unwrap())
        .unwrap();
    let gap = wait_job(&mut c, "incremental", opts);
    assert_eq!(gap["state"], "succeeded", "{gap}");
    assert_eq!(gap["result"]["kind"], "full", "{gap}");
    let reason = gap["result"]["fallback"].as_str().unwrap();
    assert!(
        reason.contains(&lost) && reason.contains("not in the repository"),
        "{reason}"
    );
    // With the archive whole again, the next incremental is one.
    let inc = wait_job(&mut c, "incremental", opts);
    assert_eq!(inc["result"]["kind"], "incremental", "{inc}");
    assert_eq!(inc["result"]["parent"], gap["result"]["backup_id"], "{inc}");
    drop(c);
    assert!(primary.stop("fast").status.success());

    // A restore of the first full, promoted, is on timeline 2: it archives
    // into the same repository, and its incremental must be a full.
    let mut restored = restore_and_start(repo_dir.path(), &entry, &full_id);
    {
        let mut r = restored.client();
        let tli: i32 = r
            .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
            .unwrap()
            .get(0);
        assert!(tli >= 2, "timeline {tli}");
        r.execute("CHECKPOINT", &[]).unwrap();
    }
    assert!(restored.stop("fast").status.success());
    let conf = restored.data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text += "archive_mode = on\n";
    std::fs::write(&conf, text).unwrap();
    restored.restart_stopped();
    let mut r = restored.client();
    let after = wait_job(&mut r, "incremental", opts);
    assert_eq!(after["state"], "succeeded", "{after}");
    assert_eq!(after["result"]["kind"], "full", "{after}");
    let reason = after["result"]["fallback"].as_str().unwrap();
    assert!(reason.contains("timeline changed"), "{reason}");
    assert!(
        after["result"]["timeline"].as_u64().unwrap() >= 2,
        "{after}"
    );
}

#[test]
fn retention_keeps_whole_chains_and_the_wal_they_need_and_a_dry_run_lists_the_same() {
    let repo_dir = temp_dir("ark-repo-");
    let primary = Cluster::start_with(archiving(repo_dir.path()).set("ark.retention_full", "2"));
    let mut c = primary.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    let mut ids = Vec::new();
    let mut results = Vec::new();
    for (i, kind) in [
        "full",
        "incremental",
        "full",
        "differential",
        "incremental",
        "differential",
        "full",
    ]
    .iter()
    .enumerate()
    {
        Cluster::write_and_switch_wal(&mut c, i as i32);
        let done = wait_job(&mut c, kind, "{}");
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["result"]["kind"], *kind, "{done}");
        ids.push(done["result"]["backup_id"].as_str().unwrap().to_string());
        results.push(done["result"].clone());
    }
    let (f1, i1, f2, d2a, i2, d2b, f3) = (
        &ids[0], &ids[1], &ids[2], &ids[3], &ids[4], &ids[5], &ids[6],
    );
    // After each backup, retention ran: two chains are kept, so the third
    // full expired the first chain, child first, and the WAL before the
    // second full's start.
    let labels = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b["label"].as_str().unwrap().to_string())
            .collect()
    };
    for r in &results[..6] {
        assert_eq!(
            labels(&r["expired"]["backups"]),
            Vec::<String>::new(),
            "{r}"
        );
    }
    assert_eq!(
        labels(&results[6]["expired"]["backups"]),
        [i1.clone(), f1.clone()]
    );
    assert!(!results[6]["expired"]["wal"].as_array().unwrap().is_empty());
    let repo = open_repo(repo_dir.path());
    let entry = repo
        .cluster(primary.system_identifier(), primary.install.major, false)
        .unwrap();
    let listed = |entry: &pg_ark_core::repo::ClusterRepo| -> Vec<String> {
        physical::list_backups(entry)
            .unwrap()
            .into_iter()
            .map(|b| b.backup_id)
            .collect()
    };
    assert_eq!(listed(&entry), [f2.as_str(), d2a, i2, d2b, f3]);
    let (f2_info, _) = physical::load_backup(&entry, f2).unwrap();
    let (f3_info, _) = physical::load_backup(&entry, f3).unwrap();
    let wal_names = || -> Vec<String> {
        let base = format!("clusters/{}/wal/", entry.system_identifier);
        repo.storage()
            .list(&base)
            .unwrap()
            .into_iter()
            .filter_map(|o| o.key.rsplit('/').next().map(str::to_string))
            .filter(|n| n.len() >= 24 && !n.ends_with(".history"))
            .collect()
    };
    assert!(wal_names()
        .iter()
        .all(|n| n[8..24] >= f2_info.start_wal[8..24]));
    assert_eq!(
        physical::missing_wal(&entry, &f2_info.start_wal, &f3_info.stop_wal).unwrap(),
        Vec::<String>::new()
    );

    // A dry run with one chain and one differential kept, then the real
    // run: the same list, and only the real run removes.
    let expire = |c: &mut postgres::Client, dry: bool| -> Vec<(String, String)> {
        c.query(
            "SELECT kind, label FROM ark.expire(retention_full => 1, retention_diff => 1,
                                                dry_run => $1)",
            &[&dry],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let dry = expire(&mut c, true);
    assert_eq!(listed(&entry).len(), 5, "a dry run removed something");
    let physical_rows: Vec<(String, String)> = dry
        .iter()
        .filter(|r| r.0 != "wal" && r.0 != "recoverable from")
        .cloned()
        .collect();
    // Last, where recovery can start after it: the one chain kept.
    assert_eq!(
        dry.last(),
        Some(&("recoverable from".to_string(), f3.clone())),
        "{dry:?}"
    );
    assert_eq!(
        physical_rows,
        [
            ("differential".to_string(), d2b.clone()),
            ("incremental".to_string(), i2.clone()),
            ("differential".to_string(), d2a.clone()),
            ("full".to_string(), f2.clone()),
        ]
    );
    assert!(dry.iter().any(|r| r.0 == "wal"), "{dry:?}");
    let real = expire(&mut c, false);
    assert_eq!(real, dry);
    assert_eq!(listed(&entry), [f3.as_str()]);
    assert!(wal_names()
        .iter()
        .all(|n| n[8..24] >= f3_info.start_wal[8..24]));
    assert_eq!(physical::verify_backup(&entry, f3).unwrap(), vec![]);
    let in_catalog: Vec<String> = c
        .query(
            "SELECT label FROM ark.backups WHERE kind <> 'logical' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(in_catalog, [f3.as_str()]);
}

#[test]
fn page_checksums_are_verified_while_reading_and_a_bad_page_is_named() {
    let repo_dir = temp_dir("ark-repo-");
    let mut primary = Cluster::start_with(archiving(repo_dir.path()).with_checksums());
    let mut c = primary.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE c WITH (autovacuum_enabled = off) AS
           SELECT g AS id, repeat('x', 100) AS v FROM generate_series(1, 10000) g;
         CHECKPOINT",
    )
    .unwrap();
    let path: String = c
        .query_one("SELECT pg_relation_filepath('c')", &[])
        .unwrap()
        .get(0);
    // Every page PostgreSQL wrote passes pg_ark's check.
    let clean = wait_job(&mut c, "full", "{}");
    assert_eq!(clean["state"], "succeeded", "{clean}");
    assert!(
        clean["result"]["pages_checked"].as_u64().unwrap() > 100,
        "{clean}"
    );
    assert_eq!(
        clean["result"]["checksum_failures"],
        serde_json::json!([]),
        "{clean}"
    );
    // One flipped byte in block 2 of table c, on disk, while the server is down.
    drop(c);
    assert!(primary.stop("fast").status.success());
    let file = primary.data.join(&path);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[2 * 8192 + 4000] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    primary.restart_stopped();
    let mut c = primary.client();
    for kind in ["full", "incremental"] {
        let done = wait_job(&mut c, kind, "{}");
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["result"]["kind"], kind, "{done}");
        let failures = done["result"]["checksum_failures"].as_array().unwrap();
        assert_eq!(failures.len(), 1, "{done}");
        assert_eq!(failures[0]["file"], path.as_str(), "{done}");
        assert_eq!(failures[0]["block"], 2, "{done}");
    }
    primary.wait_for_log("checksum verification failed in file", WAIT);
}

#[test]
fn a_cluster_with_a_tablespace_is_backed_up_and_restored_completely() {
    let repo_dir = temp_dir("ark-repo-");
    let primary = Cluster::start_with(archiving(repo_dir.path()));
    let ts_dir = temp_dir("ark-ts-");
    pg_ark_tests::give_to_test_user(ts_dir.path());
    let mut c = primary.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    c.batch_execute(&format!(
        "CREATE TABLESPACE extra LOCATION '{}'",
        ts_dir.path().display()
    ))
    .unwrap();
    c.batch_execute(
        "CREATE TABLE t (id int, v text) TABLESPACE extra;
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         CHECKPOINT",
    )
    .unwrap();
    let oid: String = c
        .query_one(
            "SELECT oid::text FROM pg_tablespace WHERE spcname = 'extra'",
            &[],
        )
        .unwrap()
        .get(0);
    let full = wait_job(&mut c, "full", "{}");
    assert_eq!(full["state"], "succeeded", "{full}");
    c.batch_execute("UPDATE t SET v = 'changed' WHERE id % 100 = 0")
        .unwrap();
    let inc = wait_job(&mut c, "incremental", "{}");
    assert_eq!(inc["result"]["kind"], "incremental", "{inc}");
    let id = inc["result"]["backup_id"].as_str().unwrap().to_string();
    let before = table_digest(&mut c, "t");
    let path: String = c
        .query_one("SELECT pg_relation_filepath('t')", &[])
        .unwrap()
        .get(0);
    assert!(path.starts_with(&format!("pg_tblspc/{oid}/")), "{path}");
    drop(c);
    let repo = open_repo(repo_dir.path());
    let entry = repo
        .cluster(primary.system_identifier(), primary.install.major, false)
        .unwrap();
    let (info, manifest) = physical::load_backup(&entry, &id).unwrap();
    assert_eq!(info.tablespaces.len(), 1);
    assert_eq!(info.tablespaces[0].oid, oid);
    assert_eq!(
        info.tablespaces[0].location,
        ts_dir.path().display().to_string()
    );
    // The table's file is stored by block in the incremental.
    let e = manifest.files.iter().find(|f| f.path == path).unwrap();
    assert!(e.blocks.as_ref().is_some_and(|b| !b.is_empty()), "{e:?}");

    // Restored elsewhere: the tablespace into a new location.
    let dir = temp_dir("ark-restore-");
    let data = dir.path().join("data");
    let moved = dir.path().join("extra");
    // With the CLI, as an operator would: --tablespace-map OID=DIR. The
    // original location is not empty, so without the map it is refused.
    let url = format!("file://{}", repo_dir.path().display());
    let (ok, _, err) = pg_ark_tests::pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        data.to_str().unwrap(),
        "--backup",
        &id,
        "--immediate",
    ]);
    assert!(
        !ok && err.contains("is not empty") && err.contains("--tablespace-map"),
        "{err}"
    );
    assert!(!data.exists(), "nothing written before the refusal");
    let map = format!("{oid}={}", moved.display());
    let (ok, out, err) = pg_ark_tests::pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        data.to_str().unwrap(),
        "--backup",
        &id,
        "--immediate",
        "--archive-off",
        "--tablespace-map",
        &map,
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        std::fs::read_link(data.join("pg_tblspc").join(&oid)).unwrap(),
        moved
    );
    let restored = Cluster::start_restored(dir, data, &[&moved]);
    let mut r = restored.client();
    assert_eq!(table_digest(&mut r, "t"), before);
    let location: String = r
        .query_one(
            "SELECT pg_tablespace_location($1::oid)",
            &[&oid.parse::<u32>().unwrap()],
        )
        .unwrap()
        .get(0);
    assert_eq!(location, moved.display().to_string());
}

/// pgbench's invariant: every transaction adds the same delta to one
/// account, teller and branch and logs it in history, so in any consistent
/// state the four sums agree.
fn pgbench_sums(c: &mut postgres::Client) -> [i64; 4] {
    let r = c
        .query_one(
            "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts)::int8,
                    (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers)::int8,
                    (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches)::int8,
                    (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::int8",
            &[],
        )
        .unwrap();
    [r.get(0), r.get(1), r.get(2), r.get(3)]
}

#[test]
fn backups_taken_while_pgbench_writes_and_ddl_runs_restore_consistently() {
    let repo_dir = temp_dir("ark-repo-");
    let primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    primary.pgbench(&["-i", "-s", "2", "-q"]);
    c.batch_execute(
        "CREATE TABLE dropped_during AS SELECT g AS id FROM generate_series(1, 5000) g;
         CREATE TABLE truncated_during AS SELECT g AS id FROM generate_series(1, 5000) g;",
    )
    .unwrap();
    // pgbench writes through both backups.
    let mut bench = std::process::Command::new(primary.install.bin("pgbench"))
        .arg("-h")
        .arg(&primary.sockdir)
        .arg("-p")
        .arg(primary.port.to_string())
        .args([
            "-U", "postgres", "-n", "-c", "2", "-t", "1000000", "postgres",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let full = wait_job(&mut c, "full", "{}");
    assert_eq!(full["state"], "succeeded", "{full}");
    // Hold the archiver with a segment waiting, so that the incremental,
    // once started (pg_backup_start), waits for it before it copies: the
    // DDL below happens inside the backup, before its files are read.
    let archiver = primary.pause_archiver(&mut c);
    c.batch_execute("SELECT pg_switch_wal()").unwrap();
    let job: i64 = c
        .query_one("SELECT ark.backup('incremental')", &[])
        .unwrap()
        .get(0);
    wait_until("the incremental to wait for earlier WAL", WAIT, || {
        let phase: Option<String> = c
            .query_one(
                "SELECT progress->>'phase' FROM ark.jobs WHERE id = $1",
                &[&job],
            )
            .unwrap()
            .get(0);
        phase.as_deref() == Some("wait for earlier WAL")
    });
    c.batch_execute(
        "CREATE TABLE created_during AS SELECT g AS id FROM generate_series(1, 3000) g;
         DROP TABLE dropped_during;
         TRUNCATE truncated_during;",
    )
    .unwrap();
    Cluster::resume(archiver);
    let doc: String = c
        .query_one("SELECT ark.wait($1, '5 min')::text", &[&job])
        .unwrap()
        .get(0);
    let inc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(inc["state"], "succeeded", "{inc}");
    assert_eq!(inc["result"]["kind"], "incremental", "{inc}");
    let _ = bench.kill();
    let _ = bench.wait();
    drop(c);
    let repo = open_repo(repo_dir.path());
    let entry = repo
        .cluster(primary.system_identifier(), primary.install.major, false)
        .unwrap();
    for result in [&full["result"], &inc["result"]] {
        let id = result["backup_id"].as_str().unwrap();
        assert_eq!(physical::verify_backup(&entry, id).unwrap(), vec![], "{id}");
        let restored = restore_and_start(repo_dir.path(), &entry, id);
        let mut r = restored.client();
        let sums = pgbench_sums(&mut r);
        assert!(sums.iter().all(|&s| s == sums[0]), "{id}: {sums:?}");
        let n: i64 = r
            .query_one("SELECT count(*) FROM pgbench_history", &[])
            .unwrap()
            .get(0);
        assert!(n > 0, "{id}: pgbench wrote nothing before the backup");
        let tables = |r: &mut postgres::Client, name: &str| -> Option<i64> {
            let exists: bool = r
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                .unwrap()
                .get(0);
            exists.then(|| {
                r.query_one(&format!("SELECT count(*) FROM {name}"), &[])
                    .unwrap()
                    .get(0)
            })
        };
        if result["kind"] == "incremental" {
            assert_eq!(tables(&mut r, "created_during"), Some(3000));
            assert_eq!(tables(&mut r, "dropped_during"), None);
            assert_eq!(tables(&mut r, "truncated_during"), Some(0));
        } else {
            assert_eq!(tables(&mut r, "created_during"), None);
            assert_eq!(tables(&mut r, "dropped_during"), Some(5000));
            assert_eq!(tables(&mut r, "truncated_during"), Some(5000));
        }
    }
}

#[test]
fn wal_level_minimal_between_backups_never_yields_a_wrong_incremental() {
    let repo_dir = temp_dir("ark-repo-");
    let mut primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE kept AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    )
    .unwrap();
    let full = wait_job(&mut c, "full", "{}");
    assert_eq!(full["state"], "succeeded", "{full}");
    drop(c);
    // A while with wal_level = minimal (which needs archiving off): a table
    // created and filled in one transaction is not WAL-logged at all, and
    // an existing one changes.
    let append = |p: &Cluster, lines: &str| {
        let conf = p.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text += lines;
        std::fs::write(&conf, text).unwrap();
    };
    assert!(primary.stop("fast").status.success());
    // (summarize_wal exists from 17 on, and needs wal_level above minimal.)
    let summaries = if primary.install.major >= 17 {
        "summarize_wal = off\n"
    } else {
        ""
    };
    append(
        &primary,
        &format!("wal_level = minimal\narchive_mode = off\nmax_wal_senders = 0\n{summaries}"),
    );
    primary.restart_stopped();
    let mut c = primary.client();
    c.batch_execute(
        "BEGIN;
         CREATE TABLE skipped (id int, v text);
         INSERT INTO skipped SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 60000) g;
         COMMIT;
         UPDATE kept SET v = 'minimal' WHERE id % 10 = 0;",
    )
    .unwrap();
    drop(c);
    assert!(primary.stop("fast").status.success());
    append(
        &primary,
        "wal_level = replica\narchive_mode = on\nmax_wal_senders = 10\n",
    );
    primary.restart_stopped();
    let mut c = primary.client();
    let inc = wait_job(&mut c, "incremental", "{}");
    assert_eq!(inc["state"], "succeeded", "{inc}");
    let expected = (
        table_digest(&mut c, "kept"),
        table_digest(&mut c, "skipped"),
    );
    let id = inc["result"]["backup_id"].as_str().unwrap().to_string();
    drop(c);
    let repo = open_repo(repo_dir.path());
    let entry = repo
        .cluster(primary.system_identifier(), primary.install.major, false)
        .unwrap();
    // Whether it became a full (a gap in the archive) or stayed an
    // incremental, its restore has both tables as they are.
    let restored = restore_and_start(repo_dir.path(), &entry, &id);
    let mut r = restored.client();
    assert_eq!(
        (
            table_digest(&mut r, "kept"),
            table_digest(&mut r, "skipped")
        ),
        expected,
        "{inc}"
    );
}

#[test]
fn a_full_backup_without_archiving_into_pg_ark_is_refused_clearly() {
    let repo_dir = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(ClusterOptions::default().set(
        "ark.repository",
        &format!("'file://{}'", repo_dir.path().display()),
    ));
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    let done = wait_job(&mut c, "full", r#"{"max_attempts": 1}"#);
    assert_eq!(done["state"], "failed", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("archive_library = 'pg_ark'"), "{error}");
    let n: i64 = c
        .query_one("SELECT count(*) FROM ark.backups", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn a_corrupted_object_fails_verification_with_the_file_named() {
    let repo_dir = temp_dir("ark-repo-");
    let mut primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t AS SELECT 1 AS id")
        .unwrap();
    let done = wait_job(&mut c, "full", "{}");
    assert_eq!(done["state"], "succeeded", "{done}");
    let id = done["result"]["backup_id"].as_str().unwrap().to_string();
    drop(c);
    let sysid = primary.system_identifier();
    let major = primary.install.major;
    assert!(primary.stop("fast").status.success());
    let repo = open_repo(repo_dir.path());
    let entry = repo.cluster(sysid, major, false).unwrap();
    let key = physical::data_key(&physical::backup_prefix(&entry, &id), "global/pg_control");
    let mut obj = repo.storage().get(&key).unwrap();
    let at = obj.len() / 2;
    obj[at] ^= 0x20;
    repo.storage().put(&key, &obj, PutMode::Overwrite).unwrap();
    let problems = physical::verify_backup(&entry, &id).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].file, "global/pg_control");
}

#[test]
fn a_killed_backup_leaves_nothing_complete_and_the_next_attempt_succeeds() {
    let repo_dir = temp_dir("ark-repo-");
    let primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    )
    .unwrap();
    // Hold the archiver, so that the backup, its files stored, waits for
    // its WAL (it says so in ark.jobs.progress) when its worker is killed.
    let archiver = primary.pause_archiver(&mut c);
    let id: i64 = c
        .query_one(
            r#"SELECT ark.backup('full', '{"retry_base": 1, "max_attempts": 3}')"#,
            &[],
        )
        .unwrap()
        .get(0);
    let mut worker = 0;
    wait_until("the backup to wait for its WAL", WAIT, || {
        let row = c
            .query_one(
                "SELECT coalesce(progress->>'phase', ''), coalesce(worker_pid, 0)
                   FROM ark.jobs WHERE id = $1",
                &[&id],
            )
            .unwrap();
        worker = row.get(1);
        row.get::<_, String>(0) == "wait for WAL"
    });
    let repo = open_repo(repo_dir.path());
    let entry = repo
        .cluster(primary.system_identifier(), primary.install.major, false)
        .unwrap();
    let stored_before_kill = repo
        .storage()
        .list(&format!("clusters/{}/backup/", entry.system_identifier))
        .unwrap()
        .len();
    assert!(stored_before_kill > 10, "{stored_before_kill} objects");
    // Its files are stored, but without the WAL it is not complete.
    assert_eq!(physical::list_backups(&entry).unwrap(), vec![]);
    let mark = primary.log_mark();
    // SAFETY: a signal to a process of the test's own cluster.
    assert_eq!(unsafe { libc::kill(worker, libc::SIGKILL) }, 0);
    Cluster::resume(archiver);
    drop(c);
    let mut c = primary.wait_crash_restart(mark, WAIT);
    let doc: String = c
        .query_one("SELECT ark.wait($1, '5 min')::text", &[&id])
        .unwrap()
        .get(0);
    let done: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["attempts"].as_i64().unwrap() >= 2, "{done}");
    let backups = physical::list_backups(&entry).unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        backups[0].backup_id,
        done["result"]["backup_id"].as_str().unwrap()
    );
    // The killed attempt's objects were removed by the retry.
    let base = format!("clusters/{}/backup/", entry.system_identifier);
    let prefixes: std::collections::BTreeSet<String> = repo
        .storage()
        .list(&base)
        .unwrap()
        .into_iter()
        .filter_map(|o| {
            o.key
                .strip_prefix(&base)
                .and_then(|r| r.split('/').next())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(prefixes.len(), 1, "{prefixes:?}");
    assert_eq!(
        physical::verify_backup(&entry, &backups[0].backup_id).unwrap(),
        vec![]
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM ark.backups WHERE kind = 'full'", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
