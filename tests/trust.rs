//! Restores checked against oracles pg_ark did not write: PostgreSQL's own
//! `pg_visibility` (the visibility map and the tuples it vouches for), an
//! index-only scan that trusts that map, and the source cluster's row
//! digests, recorded when each backup ended. Each case is one a review
//! found restoring wrong rows with no error.
use pg_ark_core::physical;
use pg_ark_tests::{
    archiving, give_to_test_user, index_only_count, open_repo, pg_ark, rows_digest, temp_dir,
    visibility, wait_job, Cluster, ClusterOptions, PgInstall,
};
use std::path::Path;

/// A cluster archiving into `repo`, with WAL summaries on 17+ (so that
/// increments take their blocks from them there, and from page LSNs on 15).
fn primary(repo: &Path) -> Cluster {
    let mut opts: ClusterOptions = archiving(repo);
    if PgInstall::from_env().major >= 17 {
        opts = opts.set("summarize_wal", "on");
    }
    Cluster::start_with(opts)
}

/// Run each statement on its own (VACUUM, CREATE and ALTER DATABASE refuse
/// the transaction block a multi-statement string makes).
fn each(c: &mut postgres::Client, statements: &[&str]) {
    for s in statements {
        c.batch_execute(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// Take a backup of `kind` (one attempt) and return its id, checking that
/// it is of that kind (an incremental did not fall back to a full).
fn backup(c: &mut postgres::Client, kind: &str) -> String {
    let done = wait_job(c, kind, r#"{"max_attempts": 1}"#);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["kind"], kind, "{done}");
    done["result"]["backup_id"].as_str().unwrap().to_string()
}

/// `pg_ark restore` of backup `id` to its consistent point into a new
/// directory (tablespaces `oids` mapped into it too), started.
fn restore(repo: &Path, id: &str, oids: &[String]) -> Cluster {
    restore_with(
        repo,
        &["--backup", id, "--immediate", "--archive-off"],
        oids,
    )
}

/// `pg_ark restore` with `args` into a new directory (tablespaces `oids`
/// mapped into it too), started.
fn restore_with(repo: &Path, args: &[&str], oids: &[String]) -> Cluster {
    pg_ark_tests::restore_and_start(repo, args, oids).0
}

/// Finding: PostgreSQL (15, and 17/18 minors before the fix) clears a
/// visibility-map bit without changing the map page's LSN, so a map page
/// that changed since the parent looked unchanged, and the restore kept
/// the parent's bits: deleted rows came back in index-only scans.
#[test]
fn an_incremental_restores_the_visibility_map_that_postgresql_checks() {
    let repo_dir = temp_dir("ark-repo-");
    let cluster = primary(repo_dir.path());
    let mut c = cluster.client();
    each(
        &mut c,
        &[
            "CREATE EXTENSION pg_ark",
            "CREATE EXTENSION pg_visibility",
            "CREATE TABLE t (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off)",
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 200000) g",
            "VACUUM (FREEZE) t",
        ],
    );
    let frozen = visibility(&mut c, "t");
    assert!(frozen.pages > 1000, "{frozen:?}");
    backup(&mut c, "full");
    c.batch_execute("DELETE FROM t WHERE id % 100 = 0").unwrap();
    let incr = backup(&mut c, "incremental");
    // The source as the incremental ended (nothing writes t after it).
    let rows = rows_digest(&mut c, "t");
    let source = visibility(&mut c, "t");
    assert_eq!(rows.0, 198_000);
    assert_ne!(source.map, frozen.map, "the delete cleared bits");
    assert_eq!((source.not_visible, source.not_frozen), (0, 0));
    assert_eq!(index_only_count(&mut c, "t"), 198_000);
    drop(c);

    let restored = restore(repo_dir.path(), &incr, &[]);
    let mut r = restored.client();
    let got = visibility(&mut r, "t");
    assert_eq!(
        (got.not_visible, got.not_frozen),
        (0, 0),
        "pg_check_visible/pg_check_frozen on the restored incremental"
    );
    assert_eq!(got, source, "the visibility map, page by page");
    assert_eq!(index_only_count(&mut r, "t"), 198_000);
    assert_eq!(rows_digest(&mut r, "t"), rows);
}

/// Finding: a database directory copied whole since the parent backup
/// (ALTER DATABASE SET TABLESPACE there and back; DROP DATABASE and
/// CREATE DATABASE under the same OID with STRATEGY FILE_COPY, whose files
/// carry the template's old page LSNs) must be stored whole: its blocks
/// are not the parent's, whatever their LSNs or the WAL summaries' block
/// lists say.
#[test]
fn a_database_copied_whole_since_the_parent_restores_as_the_copy() {
    let repo_dir = temp_dir("ark-repo-");
    let cluster = primary(repo_dir.path());
    let ts_dir = temp_dir("ark-ts-");
    give_to_test_user(ts_dir.path());
    let mut c = cluster.client();
    let location = format!(
        "CREATE TABLESPACE ts1 LOCATION '{}'",
        ts_dir.path().display()
    );
    each(
        &mut c,
        &[
            "CREATE EXTENSION pg_ark",
            &location,
            "CREATE DATABASE moved",
            "CREATE DATABASE tpl",
        ],
    );
    let ts_oid: String = c
        .query_one(
            "SELECT oid::text FROM pg_tablespace WHERE spcname = 'ts1'",
            &[],
        )
        .unwrap()
        .get(0);
    let fill = |db: &str, prefix: &str| {
        let mut d = cluster.client_on(db);
        d.batch_execute(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, md5('{prefix}' || g) FROM generate_series(1, 20000) g;"
        ))
        .unwrap();
    };
    fill("moved", "m");
    fill("tpl", "a");
    c.batch_execute("CREATE DATABASE copied TEMPLATE tpl STRATEGY FILE_COPY OID 50000")
        .unwrap();
    cluster
        .client_on("copied")
        .batch_execute("UPDATE t SET v = md5('b' || id)")
        .unwrap();
    c.batch_execute("CHECKPOINT").unwrap();
    backup(&mut c, "full");

    // moved: to ts1, every row updated there, and back.
    c.batch_execute("ALTER DATABASE moved SET TABLESPACE ts1")
        .unwrap();
    cluster
        .client_on("moved")
        .batch_execute("UPDATE t SET v = md5('moved' || id)")
        .unwrap();
    c.batch_execute("ALTER DATABASE moved SET TABLESPACE pg_default")
        .unwrap();
    // copied: dropped and copied again from tpl under the same OID; its
    // pages are tpl's, with LSNs older than the full's start.
    each(
        &mut c,
        &[
            "DROP DATABASE copied",
            "CREATE DATABASE copied TEMPLATE tpl STRATEGY FILE_COPY OID 50000",
        ],
    );
    let incr = backup(&mut c, "incremental");
    let mut source = Vec::new();
    for db in ["moved", "copied"] {
        source.push(rows_digest(&mut cluster.client_on(db), "t"));
    }
    assert_eq!(source[0].0, 20_000);
    assert_eq!(
        source[1],
        rows_digest(&mut cluster.client_on("tpl"), "t"),
        "copied is tpl's copy"
    );
    // The copied databases' files are stored whole in the incremental.
    let repo = open_repo(repo_dir.path());
    let entry = repo
        .cluster(cluster.system_identifier(), cluster.install.major, false)
        .unwrap();
    let (_, manifest) = physical::load_backup(&entry, &incr).unwrap();
    let t_path: String = cluster
        .client_on("copied")
        .query_one("SELECT pg_relation_filepath('t')", &[])
        .unwrap()
        .get(0);
    let stored = manifest.files.iter().find(|f| f.path == t_path).unwrap();
    assert!(stored.blocks.is_none(), "{stored:?}");
    drop(c);

    let restored = restore(repo_dir.path(), &incr, &[ts_oid]);
    for (db, want) in ["moved", "copied"].iter().zip(&source) {
        assert_eq!(
            &rows_digest(&mut restored.client_on(db), "t"),
            want,
            "database {db}"
        );
    }
}

/// Finding: a cluster restored by `pg_ark restore` has its source's system
/// identifier, settings and schedules, so it writes into the same
/// repository entry. Its schedules are paused until an administrator
/// resumes them; and a backup it takes leaves alone the backup its source
/// is writing at that moment (a lease), which used to be removed as
/// "incomplete" under the source, whose descriptor then named missing
/// objects.
#[test]
fn a_restored_copy_pauses_its_schedules_and_leaves_the_sources_backup_alone() {
    let repo_dir = temp_dir("ark-repo-");
    let source = primary(repo_dir.path());
    let url = format!("file://{}", repo_dir.path().display());
    let mut c = source.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 5000) g;
         SELECT ark.schedule('nightly', '0 3 1 1 *', 'full');
         SELECT ark.schedule('tidy', '0 4 1 1 *', 'expire');
         SELECT ark.schedule('dumps', '0 5 1 1 *', 'logical');
         SELECT ark.schedule('stanza', '0 6 1 1 *', 'pgbackrest', '{\"stanza\": \"main\"}');",
    )
    .unwrap();
    backup(&mut c, "full");
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    source.wait_archived(&seg, std::time::Duration::from_secs(60));

    // The copy: restored to the latest state, archiving into the same entry.
    let copy = restore_with(repo_dir.path(), &[], &[]);
    copy.wait_for_log("are paused", std::time::Duration::from_secs(60));
    let mut r = copy.client();
    let paused: Vec<String> = r
        .query(
            "SELECT name FROM ark.schedules WHERE paused IS NOT NULL ORDER BY name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    // The other tools' too: they would back up into the source's stanza.
    assert_eq!(paused, ["dumps", "nightly", "stanza", "tidy"]);
    let status: serde_json::Value = serde_json::from_str(
        &r.query_one("SELECT ark.status()::text", &[])
            .unwrap()
            .get::<_, String>(0),
    )
    .unwrap();
    assert_eq!(status["status"], "degraded", "{status}");
    assert_eq!(status["paused_schedules"].as_array().unwrap().len(), 4);
    assert!(
        status["messages"][0]
            .as_str()
            .unwrap()
            .contains("ark.resume_schedules()"),
        "{status}"
    );
    // Due, yet not queued: a job queued after the change is served by a
    // scheduler pass that found the schedule due.
    r.batch_execute("UPDATE ark.schedules SET next_run = now() - interval '1 minute'")
        .unwrap();
    let dry = wait_job(&mut r, "expire", r#"{"dry_run": true, "max_attempts": 1}"#);
    assert_eq!(dry["state"], "succeeded", "{dry}");
    let scheduled: i64 = r
        .query_one(
            "SELECT count(*) FROM ark.jobs WHERE schedule_name IN ('nightly', 'tidy', 'dumps', 'stanza')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(scheduled, 0);

    // Two writers: the source's full waits for its WAL (archiver stopped)
    // with its objects stored; meanwhile the copy takes a full.
    let archiver = source.pause_archiver(&mut c);
    let job: i64 = c
        .query_one("SELECT ark.backup('full', '{\"max_attempts\": 1}')", &[])
        .unwrap()
        .get(0);
    pg_ark_tests::wait_until(
        "the source's full to wait for its WAL",
        std::time::Duration::from_secs(120),
        || {
            source
                .client()
                .query_one(
                    "SELECT coalesce(progress->>'phase', '') = 'wait for WAL' FROM ark.jobs WHERE id = $1",
                    &[&job],
                )
                .unwrap()
                .get::<_, bool>(0)
        },
    );
    let mark = copy.log_mark();
    backup(&mut r, "full");
    copy.wait_for_log_after(
        mark,
        "is in progress elsewhere",
        std::time::Duration::from_secs(10),
    );
    Cluster::resume(archiver);
    let done: String = c
        .query_one("SELECT ark.wait($1, '5 min')::text", &[&job])
        .unwrap()
        .get(0);
    let done: serde_json::Value = serde_json::from_str(&done).unwrap();
    assert_eq!(done["state"], "succeeded", "{done}");
    let id = done["result"]["backup_id"].as_str().unwrap();
    let (ok, out, err) = pg_ark(&["verify", "--repo", &url, "--backup", id]);
    assert!(ok, "the source's backup, verified: {out}{err}");

    // Resumed by hand.
    let n: i64 = r
        .query_one("SELECT ark.resume_schedules()", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
    let status: String = r
        .query_one("SELECT ark.status()->>'paused_schedules'", &[])
        .unwrap()
        .get(0);
    assert_eq!(status, "[]");
}
