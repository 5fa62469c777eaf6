//! The archive module against a local repository, on real clusters:
//! every switched segment lands in the repository, verified; re-pushes are
//! idempotent or refused; foreign repositories and bad settings give clear
//! messages; and `pg_ark wal-get` serves recovery.
use pg_ark_core::repo::compress::Compression;
use pg_ark_core::repo::{envelope, Repository};
use pg_ark_core::storage::local::LocalStorage;
use pg_ark_core::storage::PutMode;
use pg_ark_tests::{archiving, open_repo, temp_dir, wait_until, Cluster};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn status(cluster: &Cluster) -> postgres::Row {
    cluster
        .client()
        .query_one("SELECT * FROM ark.archive_status()", &[])
        .unwrap()
}

/// `ark.archive_status()` once `cond` holds for it. The archiver logs a
/// failure before the module records its reason, and marks a file done
/// before pg_stat_archiver counts it: a single read right after the log line
/// or the `.done` file can come too early.
fn status_when(
    cluster: &Cluster,
    what: &str,
    cond: impl Fn(&postgres::Row) -> bool,
) -> postgres::Row {
    let mut row = None;
    wait_until(&format!("ark.archive_status() with {what}"), WAIT, || {
        let s = status(cluster);
        let ok = cond(&s);
        row = Some(s);
        ok
    });
    row.expect("a status row")
}

fn reason_of(s: &postgres::Row) -> String {
    s.get::<_, Option<String>>("last_failure_reason")
        .unwrap_or_default()
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
    let s = status_when(&cluster, "5 files counted", |s| {
        s.get::<_, i64>("archived_count") >= 5
    });
    assert_eq!(s.get::<_, i64>("failed_count"), 0);
    assert_eq!(
        s.get::<_, Option<String>>("repository").unwrap(),
        format!("file://{}", repo_dir.path().display())
    );
}

#[test]
fn a_damaged_stored_copy_is_repaired_beside_it_not_taken_as_archived() {
    let repo_dir = temp_dir("ark-repo-");
    let cluster = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    let name = Cluster::write_and_switch_wal(&mut c, 1);
    let original = std::fs::read(cluster.data.join(format!("pg_wal/{name}"))).unwrap();
    cluster.wait_archived(&name, WAIT);
    // The stored copy's body is damaged (its header is intact and still
    // records the segment's checksum).
    let repo = open_repo(repo_dir.path());
    let entry = repo
        .cluster(cluster.system_identifier(), cluster.install.major, false)
        .unwrap();
    let key = entry.wal_key(&name).unwrap();
    let mut damaged = repo.storage().get(&key).unwrap();
    let at = damaged.len() - 100;
    damaged[at] ^= 0xff;
    repo.storage()
        .put(&key, &damaged, PutMode::Overwrite)
        .unwrap();
    // Offered again, the segment is verified against the stored body, which
    // fails: the damaged copy stays as found, the good one is stored beside.
    reoffer(&cluster, &mut c, &name, 2);
    cluster.wait_for_log(
        &format!("stored copy of WAL file \"{name}\" was damaged and has been repaired"),
        WAIT,
    );
    wait_until("the re-offered file marked done", WAIT, || {
        cluster
            .data
            .join(format!("pg_wal/archive_status/{name}.done"))
            .exists()
    });
    assert!(
        !cluster.log().contains(&format!(
            "WAL file \"{name}\" was already archived with identical content"
        )),
        "a damaged copy was taken as identical"
    );
    let fixed = entry
        .get_wal(&name)
        .unwrap()
        .expect("the segment is stored");
    assert!(
        fixed == original,
        "{name}: the stored copy is not the segment"
    );
    // Nothing was overwritten: the damaged object is as it was found.
    assert_eq!(repo.storage().get(&key).unwrap(), damaged);
    let repairs: Vec<String> = repo
        .storage()
        .list(&format!("{key}.repair-"))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
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
    let refused = format!("WAL file \"{name}\" is already archived with different content");
    let s = status_when(&cluster, "the refusal recorded and counted", |s| {
        reason_of(s).starts_with(&refused) && s.get::<_, i64>("failed_count") >= 1
    });
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
    // The refusal is the file's problem, not the repository's: the
    // archiver keeps its handle through PostgreSQL's retries instead of
    // opening (and probing) the repository again for each.
    status_when(&cluster, "the refusal repeated", |s| {
        s.get::<_, i64>("failed_count") >= 3
    });
    let opens = cluster
        .log()
        .matches("pg_ark archiver opened repository")
        .count();
    assert_eq!(opens, 1, "the repository was opened {opens} times");
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
    let s = status_when(&cluster, "the refusal recorded", |s| {
        reason_of(s) == expected
    });
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
    let s = status_when(&cluster, "the failure recorded for that file", |s| {
        let reason = reason_of(s);
        reason.contains(&unwritable.display().to_string())
            && reason.contains("Permission denied")
            && s.get::<_, Option<String>>("last_failed_wal").as_deref() == Some(name.as_str())
    });
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
fn a_corrupt_segment_stops_recovery_instead_of_promoting_early() {
    let repo_dir = temp_dir("ark-repo-");
    let mut primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    Cluster::write_and_switch_wal(&mut c, 1);
    let (bb_dir, backup) = primary.base_backup();
    // Three segments after the backup; the middle one gets damaged.
    let after: Vec<String> = (2..5)
        .map(|i| Cluster::write_and_switch_wal(&mut c, i))
        .collect();
    primary.wait_archived(after.last().unwrap(), WAIT);
    drop(c);
    assert!(primary.stop("fast").status.success());
    let repo = open_repo(repo_dir.path());
    let sysid = primary.system_identifier_from_control();
    let entry = repo.cluster(sysid, primary.install.major, false).unwrap();
    let bad = &after[1];
    let key = entry.wal_key(bad).unwrap();
    let mut obj = repo.storage().get(&key).unwrap();
    let at = obj.len() / 2;
    obj[at] ^= 0xff;
    repo.storage().put(&key, &obj, PutMode::Overwrite).unwrap();

    let restore_command = format!(
        "{} wal-get --repo file://{} --prefetch 1 %f %p",
        primary.install.bin("pg_ark").display(),
        repo_dir.path().display()
    );
    let restored = Cluster::start_recovery_from_backup(bb_dir, backup, &restore_command);
    // The startup process stops on the damaged file, named in the log, and
    // the server shuts down: it never promotes on a short archive.
    restored.wait_for_log(
        &format!("could not restore file \"{bad}\" from archive"),
        WAIT,
    );
    wait_until("the recovering server to stop", WAIT, || {
        !restored.data.join("postmaster.pid").exists()
    });
    let log = restored.log();
    assert!(
        log.contains(&format!("pg_ark: error: stored object \"{key}\"")),
        "the damaged file is not named: {log}"
    );
    assert!(
        log.contains(&format!("restored log file \"{}\" from archive", after[0])),
        "{log}"
    );
    assert!(log.contains("exit code 255"), "{log}");
    assert!(!log.contains("selected new timeline ID"), "{log}");
    assert!(!log.contains("archive recovery complete"), "{log}");
    assert!(
        !restored.data.join("pg_wal/00000002.history").exists(),
        "a new timeline was started"
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
    // Corrupt is no "end of archive": the status stops recovery.
    let corrupt = run(&name);
    assert_eq!(corrupt.status.code(), Some(255));
    let err = String::from_utf8_lossy(&corrupt.stderr);
    assert!(
        err.starts_with(&format!(
            "pg_ark: error: stored object \"{key}\" in {url} is corrupt"
        )),
        "{err}"
    );
    assert!(err.contains("pg_ark: hint:"), "{err}");
}

/// `restore_command` fetching from the repository with the installed CLI.
fn wal_get_command(cluster: &Cluster, repo: &Path) -> String {
    format!(
        "{} wal-get --repo file://{} %f %p",
        cluster.install.bin("pg_ark").display(),
        repo.display()
    )
}

/// Put an empty signal file (`recovery.signal`, `standby.signal`) in a
/// backup before it is started.
fn signal_file(backup: &Path, name: &str) {
    let signal = backup.join(name);
    std::fs::write(&signal, "").unwrap();
    pg_ark_tests::give_to_test_user(&signal);
}

/// A fresh session, or `None` while the server is not accepting them
/// (restarting after a crash, shutting down).
fn try_client(cluster: &Cluster) -> Option<postgres::Client> {
    postgres::Client::connect(&cluster.connstr("postgres"), postgres::NoTls).ok()
}

fn in_recovery(cluster: &Cluster) -> Option<bool> {
    try_client(cluster)?
        .query_one("SELECT pg_is_in_recovery()", &[])
        .ok()
        .map(|r| r.get(0))
}

/// The WAL segment that holds the byte just before `lsn` (PostgreSQL's
/// `XLByteToPrevSeg`), on timeline `tli`, for 16 MiB segments.
fn segment_before(tli: u32, lsn: &str) -> String {
    let (hi, lo) = lsn.split_once('/').unwrap();
    let lsn = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    let segno = (lsn - 1) / SEGMENT;
    format!("{tli:08X}{:08X}{:08X}", segno / 256, segno % 256)
}

const SEGMENT: u64 = 16 * 1024 * 1024;

/// File names in `pg_wal/archive_status` with the given suffix.
fn archive_status_files(cluster: &Cluster, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cluster.data.join("pg_wal/archive_status"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(suffix)
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// Every file below `dir`, recursively, as paths relative to `dir`.
fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue; // removed meanwhile
        };
        for e in entries.filter_map(Result::ok) {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => out.push(e.path().strip_prefix(dir).unwrap().to_path_buf()),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// The repository's temporary files (`.ark-tmp.<pid>.<nanos>.<seq>`, see
/// `storage/local.rs`), and the WAL objects stored so far (by file name).
fn repo_files(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut tmp = Vec::new();
    let mut wal = Vec::new();
    for p in files_below(dir) {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with(".ark-tmp.") || name.ends_with(".tmp") {
            tmp.push(p.display().to_string());
        } else if p.components().any(|c| c.as_os_str() == "wal") {
            wal.push(name);
        }
    }
    (tmp, wal)
}

#[test]
fn the_timeline_history_file_of_a_promotion_is_archived() {
    let repo_dir = temp_dir("ark-repo-");
    let mut primary = Cluster::start_with(archiving(repo_dir.path()));
    let mut c = primary.client();
    c.batch_execute("CREATE TABLE t (id int, v text)").unwrap();
    Cluster::write_and_switch_wal(&mut c, 1);
    let (bb_dir, backup) = primary.base_backup();
    let last = Cluster::write_and_switch_wal(&mut c, 2);
    primary.wait_archived(&last, WAIT);
    drop(c);
    assert!(primary.stop("fast").status.success());
    let sysid = primary.system_identifier_from_control();

    // Recover from the archive and promote at its end, archiving on into
    // the same repository: the same system identifier, so the same entry.
    signal_file(&backup, "recovery.signal");
    let restore = wal_get_command(&primary, repo_dir.path());
    let restored = Cluster::start_from_backup(
        bb_dir,
        backup,
        archiving(repo_dir.path()).set("restore_command", &format!("'{restore}'")),
    );
    wait_until("recovery to end", 2 * WAIT, || {
        in_recovery(&restored) == Some(false)
    });
    assert_eq!(restored.system_identifier(), sysid);
    let mut rc = restored.client();
    let wal: String = rc
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .unwrap()
        .get(0);
    assert!(wal.starts_with("00000002"), "new timeline 2: {wal}");

    let history_path = restored.data.join("pg_wal/00000002.history");
    wait_until("00000002.history archived", WAIT, || {
        restored
            .data
            .join("pg_wal/archive_status/00000002.history.done")
            .exists()
    });
    let local = std::fs::read(&history_path).unwrap();
    assert!(
        String::from_utf8_lossy(&local).starts_with("1\t"),
        "the history names timeline 1 as the parent: {:?}",
        String::from_utf8_lossy(&local)
    );
    let repo = open_repo(repo_dir.path());
    let entry = repo.cluster(sysid, restored.install.major, false).unwrap();
    assert_eq!(
        entry.wal_key("00000002.history").unwrap(),
        format!("clusters/{sysid}/wal/00000002.history")
    );
    assert!(repo
        .storage()
        .head(&format!("clusters/{sysid}/wal/00000002.history"))
        .unwrap()
        .is_some());
    assert_eq!(
        entry.get_wal("00000002.history").unwrap().as_deref(),
        Some(local.as_slice()),
        "the archived history decodes to the file in pg_wal"
    );

    // The new timeline's segments go into the same entry, verified.
    let tl2 = Cluster::write_and_switch_wal(&mut rc, 3);
    assert!(tl2.starts_with("00000002"), "{tl2}");
    restored.wait_archived(&tl2, WAIT);
    assert_eq!(
        entry.get_wal(&tl2).unwrap().unwrap(),
        std::fs::read(restored.data.join(format!("pg_wal/{tl2}"))).unwrap()
    );
    let log = restored.log();
    assert!(!log.contains("could not archive"), "{log}");
    assert!(!log.contains("pg_ark: error"), "{log}");
}

#[test]
fn promoting_a_standby_archives_the_partial_last_segment_of_the_old_timeline() {
    let repo_dir = temp_dir("ark-repo-");
    // wal_keep_size: the standby streams from the backup's start (the
    // backup has no WAL), so the primary must not recycle it meanwhile.
    let mut primary = Cluster::start_with(archiving(repo_dir.path()).set("wal_keep_size", "'1GB'"));
    let mut c = primary.client();
    c.batch_execute("CREATE TABLE t (id int, v text)").unwrap();
    Cluster::write_and_switch_wal(&mut c, 1);
    let (sb_dir, backup) = primary.base_backup();
    signal_file(&backup, "standby.signal");
    let standby = Cluster::start_from_backup(
        sb_dir,
        backup,
        archiving(repo_dir.path()).set("hot_standby", "on").set(
            "primary_conninfo",
            &format!(
                "'host={} port={} user=postgres application_name=ark_standby'",
                primary.sockdir.display(),
                primary.port
            ),
        ),
    );
    wait_until("the standby streaming", WAIT, || {
        c.query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'ark_standby' AND state = 'streaming'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 1
    });

    // WAL in the current segment, not switched: the segment stays incomplete.
    c.execute(
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g",
        &[],
    )
    .unwrap();
    let lsn: String = c
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .unwrap()
        .get(0);
    wait_until("the standby replaying the insert", WAIT, || {
        try_client(&standby)
            .and_then(|mut s| {
                s.query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&lsn],
                )
                .ok()
            })
            .is_some_and(|r| r.get::<_, bool>(0))
    });
    // The old primary goes away (its last segment is never completed, so
    // never archived by it); the standby takes over.
    drop(c);
    assert!(primary.stop("fast").status.success());
    let mut sc = standby.client();
    let promoted: bool = sc
        .query_one("SELECT pg_promote(true, 60)", &[])
        .unwrap()
        .get(0);
    assert!(promoted, "pg_promote");
    let end: String = sc
        .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
        .unwrap()
        .get(0);
    let segment = segment_before(1, &end);
    let partial = format!("{segment}.partial");

    // PostgreSQL renamed the old timeline's last, incomplete segment and
    // marked it ready (xlog.c, CleanupAfterArchiveRecovery).
    let partials = || -> Vec<String> {
        std::fs::read_dir(standby.data.join("pg_wal"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".partial"))
            .collect()
    };
    wait_until("a .partial file in pg_wal", WAIT, || !partials().is_empty());
    let partials = partials();
    assert_eq!(partials, vec![partial.clone()], "end of recovery at {end}");
    let local = std::fs::read(standby.data.join(format!("pg_wal/{partial}"))).unwrap();
    wait_until(&format!("{partial} archived"), WAIT, || {
        standby
            .data
            .join(format!("pg_wal/archive_status/{partial}.done"))
            .exists()
    });

    let sysid = standby.system_identifier();
    assert_eq!(sysid, primary.system_identifier_from_control());
    let repo = open_repo(repo_dir.path());
    let entry = repo.cluster(sysid, standby.install.major, false).unwrap();
    assert_eq!(
        entry.wal_key(&partial).unwrap(),
        format!("clusters/{sysid}/wal/{}/{partial}", &segment[..16])
    );
    // get_wal verifies the checksum and the system identifier in the page header.
    let stored = entry.get_wal(&partial).unwrap().expect("partial archived");
    assert_eq!(stored.len() as u64, SEGMENT);
    assert!(
        stored == local,
        "the archived .partial is the file in pg_wal"
    );
    assert_eq!(
        pg_ark_core::wal::segment_system_identifier(&stored),
        Some(sysid)
    );
    // It holds the old timeline's WAL up to the switch point, as the old
    // primary wrote it.
    let (hi, lo) = end.split_once('/').unwrap();
    let end_off =
        (((u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()) - 1)
            % SEGMENT
            + 1;
    let old = std::fs::read(primary.data.join(format!("pg_wal/{segment}"))).unwrap();
    assert!(
        stored[..end_off as usize] == old[..end_off as usize],
        "the first {end_off} bytes match the old primary's segment"
    );
    // Only as .partial: the incomplete segment is never stored under the
    // whole segment's name, where the old primary's copy would belong.
    assert_eq!(entry.get_wal(&segment).unwrap(), None);

    // The new timeline's history is archived by the promoted standby too.
    wait_until("00000002.history archived", WAIT, || {
        standby
            .data
            .join("pg_wal/archive_status/00000002.history.done")
            .exists()
    });
    assert_eq!(
        entry.get_wal("00000002.history").unwrap().unwrap(),
        std::fs::read(standby.data.join("pg_wal/00000002.history")).unwrap()
    );
    let log = standby.log();
    assert!(!log.contains("could not archive"), "{log}");
}

/// The archiver's PID, once one is running and the server takes sessions.
fn archiver_pid(cluster: &Cluster) -> Option<i32> {
    try_client(cluster)?
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'",
            &[],
        )
        .ok()
        .flatten()
        .map(|r| r.get(0))
}

/// The PID in a temporary file's name, `.ark-tmp.<pid>.<nanos>.<seq>`.
fn tmp_pid(path: &str) -> Option<i32> {
    let name = path.rsplit('/').next()?;
    name.strip_prefix(".ark-tmp.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// What the repository and `archive_status` showed at one moment.
#[derive(Debug)]
struct PushState {
    /// Temporary WAL objects of the archiver being watched: pushes in flight.
    in_flight: Vec<String>,
    /// WAL objects stored.
    stored: Vec<String>,
    /// Stored objects whose file is still `.ready` although the archiver
    /// has not come to it (it takes the oldest first): pushed ahead, not yet
    /// reported to PostgreSQL.
    ahead: Vec<String>,
    /// `.ready` files left.
    ready: usize,
}

fn push_state(cluster: &Cluster, repo: &Path, pid: i32) -> PushState {
    let (tmp, stored) = repo_files(repo);
    let ready = archive_status_files(cluster, ".ready");
    PushState {
        in_flight: tmp
            .into_iter()
            .filter(|t| t.contains("/wal/") && tmp_pid(t) == Some(pid))
            .collect(),
        ahead: stored
            .iter()
            .filter(|n| ready.iter().skip(1).any(|r| r == *n))
            .cloned()
            .collect(),
        stored,
        ready: ready.len(),
    }
}

/// Freeze archiver `pid` (SIGSTOP stops all its threads at once) at a moment
/// when `caught` holds for its push state (work of its push threads under
/// way). The state is read while the process is stopped, so it is exactly
/// the state a SIGKILL sent next interrupts; if `caught` does not hold, the
/// archiver is let go (SIGCONT) and looked at again. Returns that state with
/// the process still stopped.
fn freeze_when(
    cluster: &Cluster,
    repo: &Path,
    pid: i32,
    caught: impl Fn(&PushState) -> bool,
) -> PushState {
    let start = std::time::Instant::now();
    loop {
        // SAFETY: kill(2) on the archiver's PID, read from the server.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        wait_stopped(pid);
        let st = push_state(cluster, repo, pid);
        if caught(&st) {
            return st;
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        assert!(
            st.ready > 0 && start.elapsed() < 2 * WAIT,
            "archiver {pid} was never caught with a push under way: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Wait until signal `sig` is pending for process `pid` (or it is gone).
fn wait_signal_pending(pid: i32, sig: i32) {
    wait_until(&format!("signal {sig} pending for {pid}"), WAIT, || {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return true;
        };
        status.lines().any(|l| {
            l.strip_prefix("ShdPnd:")
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                .is_some_and(|m| m & (1u64 << (sig - 1)) != 0)
        })
    });
}

/// Wait until every thread of process `pid` is stopped (state T).
fn wait_stopped(pid: i32) {
    wait_until(&format!("process {pid} to stop"), WAIT, || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return true;
        };
        tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat")).map_or(true, |stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with(['T', 't', 'Z', 'X']))
            })
        })
    });
}

/// Wait until process `pid` is gone (or a zombie): its threads no longer run.
fn wait_dead(pid: i32) {
    wait_until(
        &format!("process {pid} to die"),
        WAIT,
        || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        },
    );
}

#[test]
fn a_crash_while_pushing_ahead_loses_nothing() {
    let repo_dir = temp_dir("ark-repo-");
    // No repository yet: archiving is "not configured", so .ready files pile
    // up without a single failed attempt.
    let mut cluster = Cluster::start_with(
        archiving(repo_dir.path())
            .set("ark.repository", "''")
            .set("ark.archive_push_workers", "4"),
    );
    let mut c = cluster.client();
    c.batch_execute("CREATE TABLE t (id int, v text)").unwrap();
    // Segments full of barely compressible rows, so each push takes a while.
    for _ in 0..40 {
        if archive_status_files(&cluster, ".ready").len() >= 12 {
            break;
        }
        c.batch_execute(
            "INSERT INTO t SELECT g, md5(random()::text) || md5(random()::text) FROM generate_series(1, 150000) g;
             SELECT pg_switch_wal();",
        )
        .unwrap();
    }
    let backlog = archive_status_files(&cluster, ".ready");
    assert!(backlog.len() >= 12, "{backlog:?}");
    // Completed segments are immutable: remember them before archiving
    // lets checkpoints recycle them.
    let expected: Vec<(String, [u8; 32])> = backlog
        .iter()
        .map(|n| {
            let data = std::fs::read(cluster.data.join(format!("pg_wal/{n}"))).unwrap();
            assert_eq!(data.len() as u64, SEGMENT, "{n}");
            (n.clone(), envelope::sha256(&data))
        })
        .collect();
    let sysid = cluster.system_identifier();

    // Archiving with push-ahead starts on the backlog; SIGKILL the archiver
    // (and its push threads) while pushes are in flight.
    let first = archiver_pid(&cluster).expect("archiver running");
    c.batch_execute(&format!(
        "ALTER SYSTEM SET ark.repository = 'file://{}'",
        repo_dir.path().display()
    ))
    .unwrap();
    c.execute("SELECT pg_reload_conf()", &[]).unwrap();
    drop(c);
    // The state seen while the archiver is stopped is the one the kill cuts
    // short (read now: once a new archiver runs, it changes).
    let at_kill = freeze_when(&cluster, repo_dir.path(), first, |st| {
        !st.in_flight.is_empty() || !st.ahead.is_empty()
    });
    // SAFETY: kill(2) on a PID we just read from the server.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    wait_dead(first);
    eprintln!("SIGKILL archiver {first}: {at_kill:?}");
    assert!(
        at_kill.stored.len() < backlog.len(),
        "killed before the backlog was archived: {at_kill:?}"
    );
    // The postmaster treats the archiver's death as a crash: every process
    // restarts after crash recovery, then a new archiver resumes.
    let second = {
        let mut pid = None;
        wait_until("a new archiver after the crash", 2 * WAIT, || {
            pid = archiver_pid(&cluster).filter(|p| *p != first);
            pid.is_some()
        });
        pid.unwrap()
    };

    // And again, as an immediate shutdown, once the new archiver has stored
    // a file ahead of its turn that the first one had not stored. Frozen
    // there, the archiver gets the postmaster's SIGQUIT while stopped and
    // handles it first thing when let go, so nothing it pushed ahead can be
    // reported archived any more.
    let frozen = freeze_when(&cluster, repo_dir.path(), second, |st| {
        st.ahead.iter().any(|n| !at_kill.stored.contains(n))
    });
    let mark = cluster.log_mark();
    let out = cluster.stop_while("immediate", |cl| {
        cl.wait_for_log_after(mark, "received immediate shutdown request", WAIT);
        wait_signal_pending(second, libc::SIGQUIT);
        // SAFETY: kill(2) on the archiver's PID, read from the server.
        assert_eq!(unsafe { libc::kill(second, libc::SIGCONT) }, 0);
    });
    assert!(out.status.success(), "{out:?}");
    let at_stop = push_state(&cluster, repo_dir.path(), second);
    eprintln!("immediate stop with archiver {second}: {at_stop:?}");
    for name in frozen.ahead.iter().filter(|n| !at_kill.stored.contains(n)) {
        assert!(
            at_stop.ahead.contains(name),
            "{name}, pushed ahead, was reported archived during an immediate stop: {at_stop:?}"
        );
    }
    cluster.restart_stopped();
    let last = {
        let mut pid = None;
        wait_until("the archiver after the restart", 2 * WAIT, || {
            pid = archiver_pid(&cluster);
            pid.is_some()
        });
        pid.unwrap()
    };

    // Catch-up: nothing waits in pg_wal, every file of the backlog is stored.
    wait_until("the backlog archived", 2 * WAIT, || {
        archive_status_files(&cluster, ".ready").is_empty()
    });
    let repo = open_repo(repo_dir.path());
    let entry = repo.cluster(sysid, cluster.install.major, false).unwrap();
    for (name, sha) in &expected {
        assert!(
            cluster
                .data
                .join(format!("pg_wal/archive_status/{name}.done"))
                .exists()
                || !cluster.data.join(format!("pg_wal/{name}")).exists(),
            "{name} is done or recycled"
        );
        let data = entry
            .get_wal(name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} lost"));
        assert_eq!(data.len() as u64, SEGMENT, "{name}");
        assert!(envelope::sha256(&data) == *sha, "{name}: other bytes");
    }
    // No attempt ever failed: the archive module records every failure's
    // reason for ark.archive_status() (status.rs), and none was recorded.
    let failure = cluster.data.join("pg_ark/archive_failure.json");
    assert!(
        !failure.exists(),
        "{}",
        std::fs::read_to_string(&failure).unwrap_or_default()
    );
    let mut c = cluster.client();
    let row = c
        .query_one(
            "SELECT failed_count, last_failed_time IS NULL OR last_failed_time < last_archived_time
               FROM pg_stat_archiver",
            &[],
        )
        .unwrap();
    assert!(
        row.get::<_, bool>(1),
        "{} failures not followed by success",
        row.get::<_, i64>(0)
    );
    let log = cluster.log();
    assert!(
        log.contains(&format!(
            "archiver process (PID {first}) was terminated by signal 9"
        )),
        "{log}"
    );
    assert!(!log.contains("could not archive"), "{log}");
    // A file pushed ahead but not reported when its archiver died was
    // offered again, and the identical copy was accepted as archived.
    for name in at_kill.ahead.iter().chain(&at_stop.ahead) {
        assert!(
            log.contains(&format!(
                "WAL file \"{name}\" was already archived with identical content"
            )),
            "{name}: {log}"
        );
    }

    // Stored objects are only WAL files; a temporary file can only be the
    // remains of a push cut short by one of the two kills.
    let listed = repo
        .storage()
        .list(&format!("clusters/{sysid}/wal/"))
        .unwrap();
    for o in &listed {
        let name = o.key.rsplit('/').next().unwrap();
        assert!(pg_ark_core::wal::classify(name).is_ok(), "{}", o.key);
    }
    let (leftover, _) = repo_files(repo_dir.path());
    let sizes: Vec<u64> = leftover
        .iter()
        .map(|t| {
            std::fs::metadata(repo_dir.path().join(t))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .collect();
    // The archiver that opened the repository after the restarts removed
    // what the killed ones ({first}, {second}) left; it runs as {last}.
    assert!(
        leftover.is_empty(),
        "temporary files left: {leftover:?}, bytes {sizes:?} (killed archivers {first}, {second}; running {last})"
    );
}
