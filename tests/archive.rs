//! The archive module against a local repository, on real clusters:
//! every switched segment lands in the repository, verified; re-pushes are
//! idempotent or refused; foreign repositories and bad settings give clear
//! messages; and `pg_ark wal-get` serves recovery.
use pg_ark_core::repo::compress::Compression;
use pg_ark_core::repo::{envelope, Repository};
use pg_ark_core::storage::local::LocalStorage;
use pg_ark_core::storage::PutMode;
use pg_ark_tests::{temp_dir, wait_until, Cluster, ClusterOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn archiving(repo: &Path) -> ClusterOptions {
    ClusterOptions::default()
        .set("archive_mode", "on")
        .set("archive_library", "'pg_ark'")
        .set("ark.repository", &format!("'file://{}'", repo.display()))
}

fn status(cluster: &Cluster) -> postgres::Row {
    cluster
        .client()
        .query_one("SELECT * FROM ark.archive_status()", &[])
        .unwrap()
}

fn open_repo(dir: &Path) -> Arc<Repository> {
    Arc::new(Repository::open(Box::new(LocalStorage::open(dir).unwrap()), false).unwrap())
}

/// Offer an already archived file again, as PostgreSQL does after a crash
/// between storing it and recording it done, and wake the archiver (it
/// otherwise looks for new .ready files only once a minute).
fn reoffer(cluster: &Cluster, c: &mut postgres::Client, name: &str, i: i32) {
    let st = cluster.data.join("pg_wal/archive_status");
    std::fs::rename(
        st.join(format!("{name}.done")),
        st.join(format!("{name}.ready")),
    )
    .unwrap();
    Cluster::write_and_switch_wal(c, i);
}

#[test]
fn every_switched_segment_lands_in_the_repository_verified() {
    let repo_dir = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    let names: Vec<String> = (0..5)
        .map(|i| Cluster::write_and_switch_wal(&mut c, i))
        .collect();
    cluster.wait_archived(names.last().unwrap(), WAIT);

    let sysid = cluster.system_identifier();
    let repo = open_repo(repo_dir.path());
    let entry = repo.cluster(sysid, cluster.install.major, false).unwrap();
    for name in &names {
        let data = entry
            .get_wal(name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(data.len(), 16 * 1024 * 1024, "{name} is a whole segment");
        // The stored object is compressed (zstd by default) and records the
        // SHA-256 of the original, which get_wal verified.
        let obj = repo.storage().get(&entry.wal_key(name).unwrap()).unwrap();
        let h = envelope::header(&obj).unwrap();
        assert_eq!(h.compression, Compression::Zstd);
        assert!(
            obj.len() < data.len() / 2,
            "{name}: {} bytes stored",
            obj.len()
        );
    }
    let s = status(&cluster);
    assert!(s.get::<_, i64>("archived_count") >= 5);
    assert_eq!(s.get::<_, i64>("failed_count"), 0);
    assert_eq!(
        s.get::<_, Option<String>>("repository").unwrap(),
        format!("file://{}", repo_dir.path().display())
    );
}

#[test]
fn identical_repush_succeeds_and_conflicting_repush_is_refused() {
    let repo_dir = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    let name = Cluster::write_and_switch_wal(&mut c, 1);
    cluster.wait_archived(&name, WAIT);

    // The same file again: success, nothing rewritten.
    reoffer(&cluster, &mut c, &name, 2);
    cluster.wait_for_log(
        &format!("WAL file \"{name}\" was already archived with identical content"),
        WAIT,
    );
    wait_until("the re-offered file marked done", WAIT, || {
        cluster
            .data
            .join(format!("pg_wal/archive_status/{name}.done"))
            .exists()
    });

    // Different content under the same name: refused, stored copy kept.
    let repo = open_repo(repo_dir.path());
    let key = repo
        .cluster(cluster.system_identifier(), cluster.install.major, false)
        .unwrap()
        .wal_key(&name)
        .unwrap();
    let foreign = envelope::seal(&vec![7u8; 16 * 1024 * 1024], Compression::Zstd, 0).unwrap();
    repo.storage()
        .put(&key, &foreign, PutMode::Overwrite)
        .unwrap();
    reoffer(&cluster, &mut c, &name, 3);
    cluster.wait_for_log(
        &format!("WAL file \"{name}\" is already archived with different content"),
        WAIT,
    );
    let s = status(&cluster);
    let reason: String = s.get::<_, Option<String>>("last_failure_reason").unwrap();
    assert!(
        reason.starts_with(&format!(
            "WAL file \"{name}\" is already archived with different content"
        )),
        "{reason}"
    );
    assert!(s
        .get::<_, Option<String>>("last_failure_hint")
        .unwrap()
        .contains("stored copy was kept"));
    assert!(s.get::<_, i64>("failed_count") >= 1);
    assert!(
        s.get::<_, i64>("backlog") >= 1,
        "the refused file waits in pg_wal"
    );
    assert_eq!(
        repo.storage().get(&key).unwrap(),
        foreign,
        "the stored copy is never overwritten"
    );
    assert!(
        cluster.data.join(format!("pg_wal/{name}")).exists(),
        "the segment stays in pg_wal"
    );
}

#[test]
fn a_repository_entry_of_another_major_is_refused() {
    let repo_dir = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(archiving(repo_dir.path()).set("ark.repository", "''"));
    let sysid = cluster.system_identifier();
    let other_major = cluster.install.major - 1;
    {
        let repo = Arc::new(
            Repository::open(Box::new(LocalStorage::open(repo_dir.path()).unwrap()), true).unwrap(),
        );
        repo.cluster(sysid, other_major, true).unwrap();
    }
    let mut c = cluster.client();
    c.batch_execute(&format!(
        "ALTER SYSTEM SET ark.repository = 'file://{}'",
        repo_dir.path().display()
    ))
    .unwrap();
    c.execute("SELECT pg_reload_conf()", &[]).unwrap();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    Cluster::write_and_switch_wal(&mut c, 1);
    let expected = format!(
        "repository file://{} belongs to another cluster: it records PostgreSQL major version {other_major}, this cluster has {}",
        repo_dir.path().display(),
        cluster.install.major
    );
    cluster.wait_for_log(&expected, WAIT);
    let s = status(&cluster);
    assert_eq!(
        s.get::<_, Option<String>>("last_failure_reason").unwrap(),
        expected
    );
    assert!(s
        .get::<_, Option<String>>("last_failure_hint")
        .unwrap()
        .starts_with("Is ark.repository pointing"));
    assert_eq!(s.get::<_, i64>("archived_count"), 0);
}

#[test]
fn bad_settings_give_clear_messages() {
    // An unwritable directory: below a root-only directory.
    let root_only = tempfile::Builder::new()
        .prefix("ark-root-")
        .tempdir_in("/tmp")
        .unwrap();
    let unwritable = root_only.path().join("repo");
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        == b"0\n";
    assert!(
        is_root,
        "the harness runs servers as the test user; the tests run as root"
    );
    std::fs::set_permissions(
        root_only.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();

    let cluster = Cluster::start_with(archiving(&unwritable));
    let mut c = cluster.client();

    // An unknown scheme is refused where it is set, with the reason and a hint.
    let err = c
        .batch_execute("ALTER SYSTEM SET ark.repository = 'ftp://host/x'")
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "22023");
    assert_eq!(
        db.message(),
        "invalid value for parameter \"ark.repository\": \"ftp://host/x\""
    );
    assert_eq!(
        db.detail(),
        Some("invalid repository URL \"ftp://host/x\": unknown scheme \"ftp\" (expected \"file\" or \"s3\")")
    );
    assert_eq!(
        db.hint(),
        Some("Use file:///absolute/path for a local repository or s3://bucket/prefix for S3.")
    );

    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    let name = Cluster::write_and_switch_wal(&mut c, 1);
    cluster.wait_for_log("Permission denied", WAIT);
    let s = status(&cluster);
    let reason: String = s.get::<_, Option<String>>("last_failure_reason").unwrap();
    assert!(
        reason.contains(&unwritable.display().to_string()) && reason.contains("Permission denied"),
        "{reason}"
    );
    assert!(s
        .get::<_, Option<String>>("last_failure_hint")
        .unwrap()
        .contains("writable by the PostgreSQL OS user"));
    assert_eq!(s.get::<_, Option<String>>("last_failed_wal").unwrap(), name);

    // A level the algorithm does not have is named with its valid range.
    let good = temp_dir("ark-repo-");
    c.batch_execute(&format!(
        "ALTER SYSTEM SET ark.repository = 'file://{}'; ",
        good.path().display()
    ))
    .unwrap();
    c.batch_execute("ALTER SYSTEM SET ark.compression = 'gzip'")
        .unwrap();
    c.batch_execute("ALTER SYSTEM SET ark.compression_level = 15")
        .unwrap();
    c.execute("SELECT pg_reload_conf()", &[]).unwrap();
    cluster.wait_for_log("invalid setting ark.compression_level = \"15\": gzip accepts levels 1 to 9 (or 0 for its default)", WAIT);

    // Fixing the settings lets archiving catch up, with nothing lost.
    c.batch_execute("ALTER SYSTEM SET ark.compression_level = 6")
        .unwrap();
    c.execute("SELECT pg_reload_conf()", &[]).unwrap();
    cluster.wait_archived(&name, WAIT);
    let repo = open_repo(good.path());
    let entry = repo
        .cluster(cluster.system_identifier(), cluster.install.major, false)
        .unwrap();
    assert!(entry.get_wal(&name).unwrap().is_some());
    let obj = repo.storage().get(&entry.wal_key(&name).unwrap()).unwrap();
    assert_eq!(
        envelope::header(&obj).unwrap().compression,
        Compression::Gzip
    );
}

#[test]
fn wal_get_serves_recovery_from_the_repository() {
    let repo_dir = temp_dir("ark-repo-");
    let mut primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    Cluster::write_and_switch_wal(&mut c, 1);
    let (bb_dir, backup) = primary.base_backup();
    // Changes after the backup exist only in archived WAL.
    let last = Cluster::write_and_switch_wal(&mut c, 2);
    let expected: i64 = c.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
    primary.wait_archived(&last, WAIT);
    drop(c);
    assert!(primary.stop("fast").status.success());

    // The backup history file pg_basebackup left is archived beside the
    // segments, and reads back verified.
    let repo = open_repo(repo_dir.path());
    let sysid = primary.system_identifier_from_control();
    let entry = repo.cluster(sysid, primary.install.major, false).unwrap();
    let backup_files: Vec<String> = repo
        .storage()
        .list(&format!("clusters/{sysid}/wal/"))
        .unwrap()
        .into_iter()
        .filter_map(|o| {
            o.key
                .rsplit('/')
                .next()
                .filter(|n| n.ends_with(".backup"))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(backup_files.len(), 1, "{backup_files:?}");
    let history = entry.get_wal(&backup_files[0]).unwrap().unwrap();
    assert!(String::from_utf8_lossy(&history).contains("START WAL LOCATION"));

    let pg_ark = primary.install.bin("pg_ark");
    let restore_command = format!(
        "{} wal-get --repo file://{} %f %p",
        pg_ark.display(),
        repo_dir.path().display()
    );
    let restored = Cluster::recover_from_backup(bb_dir, backup, &restore_command);
    let n: i64 = restored
        .client()
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        n, expected,
        "every change up to the end of the archive is replayed"
    );
    let log = restored.log();
    assert!(
        log.contains(&format!("restored log file \"{last}\" from archive")),
        "{log}"
    );
    assert!(!log.contains("pg_ark: error"), "{log}");
}

#[test]
fn wal_get_refuses_corrupt_files_loudly_and_missing_ones_quietly() {
    let repo_dir = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    let name = Cluster::write_and_switch_wal(&mut c, 1);
    cluster.wait_archived(&name, WAIT);
    let pg_ark = cluster.install.bin("pg_ark");
    let url = format!("file://{}", repo_dir.path().display());
    let out_dir = tempfile::tempdir().unwrap();
    let run = |file: &str| {
        std::process::Command::new(&pg_ark)
            .args(["wal-get", "--repo", &url, "--pgdata"])
            .arg(&cluster.data)
            .arg(file)
            .arg(out_dir.path().join("RECOVERYXLOG"))
            .output()
            .unwrap()
    };
    let ok = run(&name);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        std::fs::read(out_dir.path().join("RECOVERYXLOG")).unwrap(),
        std::fs::read(cluster.data.join(format!("pg_wal/{name}"))).unwrap()
    );

    let missing = run("0000000100000000000000FF");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        missing.stderr.is_empty(),
        "a missing file is the quiet end of recovery"
    );

    let repo = open_repo(repo_dir.path());
    let key = repo
        .cluster(cluster.system_identifier(), cluster.install.major, false)
        .unwrap()
        .wal_key(&name)
        .unwrap();
    let mut obj = repo.storage().get(&key).unwrap();
    let mid = obj.len() / 2;
    obj[mid] ^= 0x55;
    repo.storage().put(&key, &obj, PutMode::Overwrite).unwrap();
    let corrupt = run(&name);
    assert_eq!(corrupt.status.code(), Some(1));
    let err = String::from_utf8_lossy(&corrupt.stderr);
    assert!(
        err.starts_with(&format!(
            "pg_ark: error: stored object \"{key}\" in {url} is corrupt"
        )),
        "{err}"
    );
    assert!(err.contains("pg_ark: hint:"), "{err}");
}
