use super::*;
use crate::repo::Repository;
use crate::storage::local::LocalStorage;

const SYSID: u64 = 42;

pub(super) fn cluster() -> (tempfile::TempDir, ClusterRepo) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(
        Repository::open(Box::new(LocalStorage::open(dir.path()).unwrap()), true).unwrap(),
    );
    let c = repo.cluster(SYSID, 17, true).unwrap();
    (dir, c)
}

use std::sync::Arc;

thread_local! {
    /// The bundling threshold `take` uses (0: every file its own object, so
    /// that a fault in one object names one file).
    static BUNDLE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

thread_local! {
    /// The WAL summaries `take_kind` gives an incremental (`None`: page
    /// LSNs).
    pub(super) static SUMMARY: std::cell::RefCell<Option<std::collections::HashMap<increment::RelFork, increment::ForkChanges>>> =
        const { std::cell::RefCell::new(None) };
}

pub(super) fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// A data directory with something of everything the rules name.
pub(super) fn pgdata() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    write(r, "PG_VERSION", b"17\n");
    write(r, "global/pg_control", &[7u8; 8192]);
    write(r, "global/1262", &[1u8; 8192]);
    write(r, "base/5/PG_VERSION", b"17\n");
    write(r, "base/5/16384", &vec![3u8; 3 * 8192]);
    write(r, "base/5/16384_fsm", &[4u8; 8192]);
    // unlogged relation 16390: only its init fork is copied
    write(r, "base/5/16390", &[5u8; 8192]);
    write(r, "base/5/16390_init", &[0u8; 8192]);
    write(r, "base/5/16390_fsm", &[6u8; 8192]);
    write(r, "base/5/16390.1", &[6u8; 8192]);
    // temporary relation, temp files
    write(r, "base/5/t3_16400", &[8u8; 100]);
    write(r, "base/pgsql_tmp/pgsql_tmp123.0", &[9u8; 100]);
    write(r, "base/5/pg_internal.init", b"cache");
    write(r, "pg_wal/000000010000000000000001", &[1u8; 1000]);
    write(
        r,
        "pg_wal/archive_status/000000010000000000000001.ready",
        b"",
    );
    write(r, "pg_replslot/s/state", b"x");
    write(r, "pg_stat_tmp/global.stat", b"x");
    write(r, "postmaster.pid", b"123");
    write(r, "postmaster.opts", b"x");
    write(r, "backup_label", b"old");
    write(r, "pg_ark/archive_failure.json", b"{}");
    write(r, "pg_xact/0000", &[0u8; 8192]);
    write(r, "postgresql.auto.conf", b"# auto\n");
    fs::create_dir_all(r.join("pg_tblspc")).unwrap();
    d
}

#[test]
fn the_walk_follows_postgresqls_base_backup_rules() {
    let d = pgdata();
    let dd = walk(d.path()).unwrap();
    let paths: Vec<&str> = dd.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "PG_VERSION",
            "base/5/16384",
            "base/5/16384_fsm",
            "base/5/16390_init",
            "base/5/PG_VERSION",
            "global/1262",
            "pg_xact/0000",
            "postgresql.auto.conf",
            "global/pg_control",
        ]
    );
    for kept in [
        "pg_wal",
        "pg_wal/archive_status",
        "pg_replslot",
        "pg_stat_tmp",
        "pg_tblspc",
        "base/5",
    ] {
        assert!(dd.dirs.iter().any(|d| d == kept), "{kept}: {:?}", dd.dirs);
    }
    assert!(!dd.dirs.iter().any(|d| d.starts_with("pg_ark")));
    assert!(!dd.dirs.iter().any(|d| d.contains("pgsql_tmp")));
}

#[test]
fn a_tablespace_is_backed_up_behind_its_link_and_restored_where_asked() {
    let (_r, c) = cluster();
    let d = pgdata();
    let ts = tempfile::tempdir().unwrap();
    write(ts.path(), "PG_17_202406281/5/16500", &[5u8; 8192]);
    write(ts.path(), "PG_17_202406281/5/16500_fsm", &[6u8; 8192]);
    write(ts.path(), "PG_16_202307071/5/99", b"another major's");
    std::os::unix::fs::symlink(ts.path(), d.path().join("pg_tblspc/16500")).unwrap();
    let dd = walk(d.path()).unwrap();
    assert_eq!(
        dd.tablespaces,
        [Tablespace {
            oid: "16500".into(),
            location: ts.path().display().to_string()
        }]
    );
    let paths: Vec<&str> = dd.files.iter().map(|f| f.path.as_str()).collect();
    assert!(
        paths.contains(&"pg_tblspc/16500/PG_17_202406281/5/16500"),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p.contains("PG_16")), "{paths:?}");
    assert!(
        !dd.dirs.iter().any(|p| p == "pg_tblspc/16500"),
        "{:?}",
        dd.dirs
    );
    assert!(increment::is_block_file(
        "pg_tblspc/16500/PG_17_202406281/5/16500"
    ));
    take(&c, d.path(), "t1");
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("data");
    // The original location is not empty: refused, nothing written.
    let e = restore_backup(&c, "t1", &target).unwrap_err();
    assert!(e.to_string().contains("is not empty"), "{e}");
    assert!(!target.exists());
    let moved = out.path().join("ts");
    let map = [("16500".to_string(), moved.clone())].into();
    restore_backup_with(&c, "t1", &target, &map).unwrap();
    assert_eq!(
        fs::read_link(target.join("pg_tblspc/16500")).unwrap(),
        moved
    );
    assert_eq!(
        fs::read(moved.join("PG_17_202406281/5/16500")).unwrap(),
        vec![5u8; 8192]
    );
    assert!(!moved.join("PG_16_202307071").exists());
    // A delta restore over the original location (another major's folder
    // beside ours, after pg_upgrade) leaves that folder alone, and a map for
    // a tablespace the backup does not have is refused.
    let opts = crate::restore::Options {
        delta: true,
        jobs: 2,
        ..Default::default()
    };
    let over = out.path().join("over");
    crate::restore::rebuild(&c, "t1", &over, &opts, &Default::default()).unwrap();
    assert_eq!(
        fs::read(ts.path().join("PG_16_202307071/5/99")).unwrap(),
        b"another major's"
    );
    assert_eq!(
        fs::read(ts.path().join("PG_17_202406281/5/16500")).unwrap(),
        vec![5u8; 8192]
    );
    let bad = crate::restore::Options {
        tablespaces: [("99999".to_string(), moved.clone())].into(),
        ..Default::default()
    };
    let e = crate::restore::rebuild(&c, "t1", &out.path().join("x"), &bad, &Default::default())
        .unwrap_err();
    assert!(e.to_string().contains("no tablespace 99999"), "{e}");
}

#[test]
fn page_checksums_follow_base_backups_rules() {
    let sealed = |lsn: u64, fill: u8, blkno: u32| {
        let mut p = page(lsn, fill);
        p[12..14].copy_from_slice(&24u16.to_ne_bytes()); // pd_lower
        p[14..16].copy_from_slice(&8000u16.to_ne_bytes()); // pd_upper
        let sum = checksum::page_checksum(&p, blkno);
        p[8..10].copy_from_slice(&sum.to_ne_bytes());
        p
    };
    // The checksum covers the block number and ignores its own field.
    let p3 = sealed(0x100, 7, 3);
    assert_ne!(
        checksum::page_checksum(&p3, 3),
        checksum::page_checksum(&p3, 4)
    );
    let p = sealed(0x100, 7, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("16384");
    let mut bad = sealed(0x100, 9, 1);
    bad[5000] ^= 1;
    let written_late = {
        let mut p = sealed(0x3000, 9, 2);
        p[5000] ^= 1;
        p
    };
    let mut nonzero_new = vec![0u8; 8192];
    nonzero_new[100] = 1;
    let content: Vec<u8> = [
        p.clone(),
        bad.clone(),
        written_late,
        vec![0u8; 8192],
        nonzero_new,
    ]
    .concat();
    fs::write(&path, &content).unwrap();
    let file = fs::File::open(&path).unwrap();
    let check = PageCheck::new(0x2000);
    for (block, page) in content.chunks(8192).enumerate() {
        check.check(&file, "base/5/16384", block as u64, page);
    }
    let found: Vec<u64> = check.bad_pages().iter().map(|b| b.block).collect();
    // Block 1 fails; block 2 was written after the start (not judged);
    // block 3 is a new, zeroed page; block 4 claims to be new but is not zeros.
    assert_eq!(found, [1, 4]);
    // A page read while being written, good on the second read, passes.
    let check = PageCheck::new(0x2000);
    check.check(&file, "base/5/16384", 0, &bad);
    assert_eq!(check.bad_pages(), vec![]);
    assert!(checksum::is_checksummed("base/5/16384_fsm"));
    assert!(checksum::is_checksummed("base/5/16384_vm"));
    assert!(checksum::is_checksummed("base/5/16384_fsm.2"));
    assert!(!checksum::is_checksummed("base/5/pg_filenode.map"));
}

fn take(c: &ClusterRepo, src: &Path, id: &str) -> Manifest {
    take_kind(c, src, id, "full", None, "0/2000028", 1).1
}

/// Take a backup of `kind` against `parent` (its descriptor): a full when
/// `None`.
pub(super) fn take_kind(
    c: &ClusterRepo,
    src: &Path,
    id: &str,
    kind: &str,
    parent: Option<&PhysicalBackupInfo>,
    start_lsn: &str,
    epoch: i64,
) -> (PhysicalBackupInfo, Manifest) {
    // As the job worker does: the parent's root (`decide`), then its
    // segments that changed shape (`read_parent`).
    let basis = parent.map(|p| {
        let (pinfo, _) = load_backup(c, &p.backup_id).unwrap();
        let reference = if kind == "differential" {
            load_backup(c, &pinfo.chain).unwrap().0.start_lsn
        } else {
            pinfo.start_lsn.clone()
        };
        let stored = load_stored(c, &p.backup_id).unwrap().unwrap();
        let mut b = Basis::against(stored, increment::parse_lsn(&reference).unwrap());
        b.summary = SUMMARY.with(|s| s.borrow().clone());
        b
    });
    let dd = walk(src).unwrap();
    let mut basis = basis;
    if let Some(b) = basis.as_mut() {
        b.databases = dd.databases.clone();
        b.read_parent(c, &dd.files).unwrap();
    }
    let prefix = backup_prefix(c, id);
    let progress = Progress::default();
    let mut files = store_files(
        c,
        &prefix,
        src,
        &dd.files,
        StoreOptions {
            compression: Compression::Zstd,
            level: 1,
            threads: 2,
            bundle_below: BUNDLE.with(|b| b.get()),
        },
        basis.as_ref(),
        None,
        &progress,
    )
    .unwrap();
    assert_eq!(
        progress.bytes_done.load(Ordering::Relaxed),
        progress.bytes_total.load(Ordering::Relaxed)
    );
    files.push(
        store_bytes(
            c,
            &prefix,
            "backup_label",
            b"START WAL LOCATION: 0/2000028\n",
        )
        .unwrap(),
    );
    let manifest = Manifest {
        format_version: PHYSICAL_INFO_VERSION,
        backup_id: id.into(),
        files,
        dirs: dd.dirs,
        tablespaces: dd.tablespaces,
        databases: dd.databases,
    };
    let info = PhysicalBackupInfo {
        format_version: PHYSICAL_INFO_VERSION,
        kind: BackupKind::parse(kind).unwrap(),
        backup_id: id.into(),
        parent: parent.map(|p| p.backup_id.clone()),
        chain: parent.map_or(id.to_string(), |p| p.chain.clone()),
        reference_lsn: None,
        start_lsn: start_lsn.into(),
        start_time_us: None,
        stop_lsn: "0/3000100".into(),
        timeline: 1,
        start_wal: "000000010000000000000002".into(),
        stop_wal: "000000010000000000000003".into(),
        wal_segment_size: crate::wal::SegmentSize::DEFAULT,
        started_at: String::new(),
        finished_at: String::new(),
        started_epoch: epoch,
        finished_epoch: epoch + 1,
        original_bytes: 0,
        stored_bytes: 0,
        files: manifest.files.len(),
        server_version: "17".into(),
        system_identifier: SYSID,
        tablespaces: Vec::new(),
        checksums: false,
        job_id: Some(1),
        created_by: "test".into(),
    };
    finish_backup(c, &manifest, &info).unwrap();
    (info, manifest)
}

pub(super) fn segment(n: u8) -> Vec<u8> {
    let mut seg = vec![n; 1 << 20];
    seg[2..4].copy_from_slice(&2u16.to_le_bytes());
    seg[24..32].copy_from_slice(&SYSID.to_le_bytes());
    seg
}

#[test]
fn a_backup_restores_exactly_and_verifies() {
    let (_r, c) = cluster();
    let src = pgdata();
    let m = take(&c, src.path(), "20261201T120000Z-F-j1");
    for (name, n) in [
        ("000000010000000000000002", 2),
        ("000000010000000000000003", 3),
    ] {
        c.push_wal(name, &segment(n), Compression::Zstd, 1).unwrap();
    }
    assert_eq!(list_backups(&c).unwrap().len(), 1);
    assert_eq!(verify_backup(&c, &m.backup_id).unwrap(), vec![]);
    assert_eq!(read_index(&c).unwrap(), None);
    let listed = write_index(&c).unwrap();
    assert_eq!(read_index(&c).unwrap(), Some(listed.clone()));
    assert_eq!(listed, list_backups(&c).unwrap());

    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("restored");
    let info = restore_backup(&c, &m.backup_id, &target).unwrap();
    assert_eq!(info.kind, BackupKind::Full);
    for f in walk(src.path()).unwrap().files {
        assert_eq!(
            fs::read(target.join(&f.path)).unwrap(),
            fs::read(src.path().join(&f.path)).unwrap(),
            "{}",
            f.path
        );
    }
    assert_eq!(
        fs::read(target.join("backup_label")).unwrap(),
        b"START WAL LOCATION: 0/2000028\n"
    );
    assert!(target.join("pg_wal/archive_status").is_dir());
    assert!(!target.join("postmaster.pid").exists());
    // Never over an existing directory's contents.
    let e = restore_backup(&c, &m.backup_id, &target).unwrap_err();
    assert!(e.to_string().contains("is not empty"), "{e}");
}

#[test]
fn verification_names_each_fault() {
    let (_r, c) = cluster();
    let src = pgdata();
    let m = take(&c, src.path(), "b1");
    c.push_wal(
        "000000010000000000000002",
        &segment(2),
        Compression::Zstd,
        1,
    )
    .unwrap();
    // One flipped byte in one stored object, one removed object, and the
    // stop segment missing.
    let victim = m.files.iter().find(|f| f.path == "base/5/16384").unwrap();
    let mut obj = c.storage().get(&victim.key).unwrap();
    let at = obj.len() / 2;
    obj[at] ^= 1;
    c.storage()
        .put(&victim.key, &obj, PutMode::Overwrite)
        .unwrap();
    let gone = m.files.iter().find(|f| f.path == "global/1262").unwrap();
    c.storage().delete(&gone.key).unwrap();
    let problems = verify_backup(&c, "b1").unwrap();
    let files: Vec<&str> = problems.iter().map(|p| p.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "base/5/16384",
            "global/1262",
            "WAL 000000010000000000000003"
        ],
        "{problems:?}"
    );
    // A restore stops at the damaged file, naming it.
    let out = tempfile::tempdir().unwrap();
    let e = restore_backup(&c, "b1", &out.path().join("x")).unwrap_err();
    assert!(e.to_string().contains("base/5/16384"), "{e}");
}

#[test]
fn an_incomplete_backup_is_neither_listed_nor_restored() {
    let (_r, c) = cluster();
    let src = pgdata();
    let m = take(&c, src.path(), "b2");
    let prefix = backup_prefix(&c, &m.backup_id);
    c.storage()
        .delete(&format!("{prefix}/{INFO_NAME}"))
        .unwrap();
    c.storage()
        .delete(&format!("{prefix}/{INFO_NAME}.copy"))
        .unwrap();
    assert!(list_backups(&c).unwrap().is_empty());
    let out = tempfile::tempdir().unwrap();
    let e = restore_backup(&c, "b2", &out.path().join("x")).unwrap_err();
    assert!(e.to_string().contains("not a complete backup"), "{e}");
    // What a killed backup left is removed before the next one; complete
    // backups stay.
    take(&c, src.path(), "b1");
    assert_eq!(remove_incomplete(&c, "writer B").unwrap().0, ["b2"]);
    assert!(c.storage().list(&format!("{prefix}/")).unwrap().is_empty());
    assert_eq!(list_backups(&c).unwrap().len(), 1);
    assert_eq!(
        remove_incomplete(&c, "writer B").unwrap(),
        (vec![], vec![], vec![])
    );
}

/// Two writers of one entry (a cluster and its restored copy): a backup in
/// progress holds a lease, renewed by new objects, and the other writer's
/// start-up cleanup leaves it alone; once its lease has lapsed it is
/// abandoned and removed. A backup whose objects were removed under it is
/// never recorded complete.
#[test]
fn a_backup_in_progress_elsewhere_is_left_alone_and_one_robbed_of_objects_fails() {
    let (_r, c) = cluster();
    let src = pgdata();
    let m = take(&c, src.path(), "f1");
    // Writer A is storing "a1": its lease, then an object.
    let every = std::time::Duration::from_millis(50);
    let lease = lease::Lease::take(&c, "a1", "writer A", every).unwrap();
    let prefix = backup_prefix(&c, "a1");
    c.storage()
        .put(&format!("{prefix}/data/x"), b"x", PutMode::Create)
        .unwrap();
    // Writer B's cleanup: a1 is in progress, not abandoned.
    assert_eq!(
        remove_incomplete(&c, "writer B").unwrap(),
        (vec![], vec!["a1".into()], vec![])
    );
    // Renewals are new objects (never an overwrite); the old one goes.
    let leases = |c: &ClusterRepo| -> Vec<String> {
        c.storage()
            .list(&format!("{prefix}/{}/", lease::LEASE_DIR))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    };
    let first = leases(&c);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while leases(&c) == first {
        assert!(std::time::Instant::now() < deadline, "no renewal");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(leases(&c).len() <= 2, "{:?}", leases(&c));
    assert!(lease::held(&c, "a1", "writer B", crate::logical::now_epoch()).unwrap());
    // Lapsed (as if A died long ago): abandoned.
    drop(lease);
    let later = crate::logical::now_epoch() + lease::TTL.as_secs() as i64 + 1;
    assert!(!lease::held(&c, "a1", "writer B", later).unwrap());
    assert_eq!(
        remove_incomplete(&c, "writer B").unwrap(),
        (vec![], vec!["a1".into()], vec![])
    );
    // Writer A itself, starting its next backup: its own lease belongs to
    // a backup that was killed (one physical backup at a time).
    assert!(!lease::held(&c, "a1", "writer A", crate::logical::now_epoch()).unwrap());
    // A prefix with no lease at all (a backup killed before its first, or
    // written by an older pg_ark) is abandoned at once.
    c.storage()
        .put(
            &format!("{}/data/y", backup_prefix(&c, "old")),
            b"y",
            PutMode::Create,
        )
        .unwrap();
    assert_eq!(remove_incomplete(&c, "writer B").unwrap().0, ["old"]);
    // A backup robbed of an object is not recorded complete: the error
    // names the object, and no descriptor is written.
    let (info, _) = load_backup(&c, "f1").unwrap();
    let mut robbed = m.clone();
    robbed.backup_id = "f2".into();
    let p2 = backup_prefix(&c, "f2");
    for f in robbed.files.iter_mut() {
        f.key = f.key.replacen(&backup_prefix(&c, "f1"), &p2, 1);
    }
    let mut info2 = info.clone();
    info2.backup_id = "f2".into();
    for f in &robbed.files {
        if !f.key.is_empty() && f.path != "global/1262" {
            c.storage().put(&f.key, b"z", PutMode::Create).unwrap();
        }
    }
    let e = finish_backup(&c, &robbed, &info2).unwrap_err();
    assert!(matches!(e, Error::BackupObjectsMissing { .. }), "{e}");
    assert!(e.to_string().contains("data/global/1262"), "{e}");
    assert!(e.hint().unwrap().contains("restored copy"), "{e:?}");
    assert!(list_backups(&c)
        .unwrap()
        .iter()
        .all(|b| b.backup_id != "f2"));
}

#[test]
fn a_manifest_path_outside_the_target_is_refused() {
    let (_r, c) = cluster();
    let src = pgdata();
    let mut m = take(&c, src.path(), "b3");
    let prefix = backup_prefix(&c, "b3");
    m.files[0].path = "../escape".into();
    c.storage()
        .delete(&format!("{prefix}/{MANIFEST_NAME}"))
        .unwrap();
    c.storage()
        .delete(&format!("{prefix}/{MANIFEST_NAME}.copy"))
        .unwrap();
    save_json(&c, &format!("{prefix}/{MANIFEST_NAME}"), &m).unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = restore_backup(&c, "b3", &out.path().join("x")).unwrap_err();
    assert!(e.to_string().contains("outside the target"), "{e}");
    assert!(!out.path().join("escape").exists());
}

/// A descriptor or manifest of a format this pg_ark does not know (a newer
/// pg_ark's) is refused by name wherever the backup is read, never
/// restored by guessing at its fields.
#[test]
fn a_backup_of_a_newer_format_is_refused_by_name() {
    let (_r, c) = cluster();
    let src = pgdata();
    let m = take(&c, src.path(), "b4");
    let prefix = backup_prefix(&c, "b4");
    let rewrite = |name: &str, doc: serde_json::Value| {
        for key in [format!("{prefix}/{name}"), format!("{prefix}/{name}.copy")] {
            c.storage().delete(&key).unwrap();
        }
        save_json(&c, &format!("{prefix}/{name}"), &doc).unwrap();
    };
    let mut newer = serde_json::to_value(&m).unwrap();
    newer["format_version"] = (MANIFEST_VERSION + 1).into();
    rewrite(MANIFEST_NAME, newer);
    let expect = |e: Error, name: &str| {
        let text = e.to_string();
        assert!(
            e.hint()
                .is_some_and(|h| h.contains("newer") || h.contains("writes this format")),
            "{e:?}"
        );
        assert!(text.contains(&format!("{prefix}/{name}")), "{text}");
        let supported = if name == MANIFEST_NAME {
            MANIFEST_VERSION
        } else {
            PHYSICAL_INFO_VERSION
        };
        let found = supported + 1;
        assert!(
            text.contains(&format!("has format version {found}, newer than pg_ark"))
                && text.contains(&format!("reads (up to {supported})")),
            "{text}"
        );
        assert!(
            matches!(e, Error::MetadataTooNew { found: f, .. } if f == u64::from(found)),
            "{e:?}"
        );
    };
    let out = tempfile::tempdir().unwrap();
    expect(
        restore_backup(&c, "b4", &out.path().join("x")).unwrap_err(),
        MANIFEST_NAME,
    );
    expect(load_backup(&c, "b4").unwrap_err(), MANIFEST_NAME);
    assert!(!out.path().join("x").join("PG_VERSION").exists());

    let (info, _) = {
        let mut m2 = serde_json::to_value(&m).unwrap();
        m2["format_version"] = 1.into();
        rewrite(MANIFEST_NAME, m2);
        load_backup(&c, "b4").unwrap()
    };
    // A newer descriptor whose fields changed shape: refused for its
    // version, before any field is read. Listing the backups (restore
    // plans, retention, the index) refuses it too, rather than act on a
    // backup it cannot read.
    let mut newer = serde_json::to_value(&info).unwrap();
    newer["format_version"] = 2.into();
    newer["kind"] = serde_json::json!({"block": "full"});
    newer["stop_lsn"] = 3.into();
    rewrite(INFO_NAME, newer);
    expect(load_backup(&c, "b4").unwrap_err(), INFO_NAME);
    // Reading leaves it out, naming it; changing the repository (retention,
    // a parent's choice, the index) refuses while it is there.
    assert_eq!(list_backups(&c).unwrap(), vec![]);
    let listing = list_all_backups(&c).unwrap();
    assert_eq!(listing.newer.len(), 1);
    assert_eq!(listing.newer[0].0, "b4");
    expect(list_backups_to_change(&c).unwrap_err(), INFO_NAME);
    expect(write_index(&c).unwrap_err(), INFO_NAME);
    let e = crate::restore::plan::plan(
        &c,
        &crate::restore::plan::Request {
            target: crate::restore::plan::Target::Immediate,
            timeline: crate::restore::plan::TimelineChoice::Latest,
            backup: Some("b4".into()),
        },
        "promote",
    )
    .unwrap_err();
    expect(e, INFO_NAME);
}

#[test]
fn a_truncated_file_is_padded_and_an_extended_one_cut() {
    let mut p = Padded {
        inner: &b"abc"[..],
        left: 5,
        ended: false,
    };
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut p, &mut out).unwrap();
    assert_eq!(out, b"abc\0\0");
    let mut p = Padded {
        inner: &b"abcdef"[..],
        left: 4,
        ended: false,
    };
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut p, &mut out).unwrap();
    assert_eq!(out, b"abcd");
    let sixteen = crate::wal::SegmentSize::DEFAULT;
    assert_eq!(
        sixteen
            .range("000000010000000000000002", "000000010000000100000001")
            .unwrap()
            .len(),
        256
    );
    assert!(sixteen
        .range("000000010000000000000002", "000000020000000000000003")
        .is_err());
}

#[test]
fn block_files_and_lsns() {
    for yes in [
        "base/5/16384",
        "base/5/16384.1",
        "base/5/16390_init",
        "global/1262",
        "global/1262.12",
    ] {
        assert!(increment::is_block_file(yes), "{yes}");
    }
    for no in [
        "base/5/16384_fsm",
        "base/5/16384_vm",
        "base/5/16384_vm.1",
        "base/5/PG_VERSION",
        "base/5/pg_filenode.map",
        "global/pg_control",
        "pg_xact/0000",
        "base/x/16384",
        "base/5/16384.",
        "base/5/16384.a",
        "16384",
    ] {
        assert!(!increment::is_block_file(no), "{no}");
    }
    assert_eq!(increment::parse_lsn("16/B374D848"), Some(0x16_B374_D848));
    assert_eq!(increment::parse_lsn("0/0"), Some(0));
    assert_eq!(increment::parse_lsn("x"), None);
    let mut page = vec![0u8; 8192];
    page[0..4].copy_from_slice(&0x16u32.to_ne_bytes());
    page[4..8].copy_from_slice(&0xB374_D848u32.to_ne_bytes());
    assert_eq!(increment::page_lsn(&page), 0x16_B374_D848);
}

/// A page whose header carries `lsn` and whose body is `fill`.
pub(super) fn page(lsn: u64, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; BLOCK as usize];
    p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
    p[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
    p
}

pub(super) fn pages(list: &[(u64, u8)]) -> Vec<u8> {
    list.iter().flat_map(|&(l, f)| page(l, f)).collect()
}

pub(super) fn assert_restores(
    c: &ClusterRepo,
    id: &str,
    expected: &[(&str, Vec<u8>)],
    absent: &[&str],
) {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("r");
    restore_backup(c, id, &target).unwrap();
    for (path, content) in expected {
        assert_eq!(
            &fs::read(target.join(path)).unwrap(),
            content,
            "{id}: {path}"
        );
    }
    for path in absent {
        assert!(!target.join(path).exists(), "{id}: {path}");
    }
}

#[test]
fn increments_store_changed_blocks_only_and_rebuild_every_backup_of_a_chain() {
    let (_r, c) = cluster();
    let src = pgdata();
    let r = src.path();
    // LSNs: the full starts at 0/2000000, the incremental at 0/3000000,
    // the differential at 0/4000000.
    let rel = "base/5/16384";
    write(
        r,
        rel,
        &pages(&[(0x100, 1), (0x100, 2), (0x100, 3), (0x100, 4)]),
    );
    write(
        r,
        "base/5/16500",
        &pages(&[(0x100, 1), (0x100, 2), (0x100, 3)]),
    );
    write(r, "base/5/16600", &pages(&[(0x100, 1)]));
    let (full, _) = take_kind(&c, r, "f", "full", None, "0/2000000", 10);
    let v_full = fs::read(r.join(rel)).unwrap();

    // Block 1 changes (new LSN); block 2 gets new bytes under its old LSN
    // (a hint-bit change: not stored, the full's copy comes back); block 4
    // is new. 16500 is truncated to one block, 16600 dropped, 16700 new.
    write(
        r,
        rel,
        &pages(&[(0x100, 1), (0x2000100, 20), (0x100, 33), (0x100, 4), (0, 0)]),
    );
    write(r, "base/5/16500", &pages(&[(0x100, 1)]));
    fs::remove_file(r.join("base/5/16600")).unwrap();
    write(r, "base/5/16700", &pages(&[(0x100, 7)]));
    write(r, "postgresql.auto.conf", b"# changed\n");
    let (inc, m_inc) = take_kind(&c, r, "i", "incremental", Some(&full), "0/3000000", 20);
    let e = m_inc.files.iter().find(|f| f.path == rel).unwrap();
    assert_eq!(e.blocks.as_deref(), Some(&[1, 4][..]), "{e:?}");
    assert_eq!(e.payload_len(), 2 * BLOCK);
    let e = m_inc
        .files
        .iter()
        .find(|f| f.path == "base/5/16500")
        .unwrap();
    assert_eq!(e.blocks.as_deref(), Some(&[][..]));
    assert_eq!((e.size, e.stored, e.key.as_str()), (BLOCK, 0, ""));
    let e = m_inc
        .files
        .iter()
        .find(|f| f.path == "base/5/16700")
        .unwrap();
    assert_eq!(e.blocks, None, "a new file is stored whole");
    let mut v_inc = pages(&[(0x100, 1), (0x2000100, 20), (0x100, 3), (0x100, 4), (0, 0)]);

    // A second incremental on the first: block 3 changes.
    write(
        r,
        rel,
        &pages(&[
            (0x100, 1),
            (0x2000100, 20),
            (0x100, 33),
            (0x3000200, 40),
            (0, 0),
        ]),
    );
    let (inc2, m_inc2) = take_kind(&c, r, "i2", "incremental", Some(&inc), "0/4000000", 30);
    let e = m_inc2.files.iter().find(|f| f.path == rel).unwrap();
    assert_eq!(e.blocks.as_deref(), Some(&[3, 4][..]), "{e:?}");
    let mut v_inc2 = v_inc.clone();
    v_inc2[3 * 8192..4 * 8192].copy_from_slice(&page(0x3000200, 40));

    // A differential, against the full: every block changed since 0/2000000.
    let (_, m_diff) = take_kind(&c, r, "d", "differential", Some(&full), "0/5000000", 40);
    let e = m_diff.files.iter().find(|f| f.path == rel).unwrap();
    assert_eq!(e.blocks.as_deref(), Some(&[1, 3, 4][..]), "{e:?}");

    assert_restores(
        &c,
        "f",
        &[
            (rel, v_full),
            ("base/5/16500", pages(&[(0x100, 1), (0x100, 2), (0x100, 3)])),
            ("base/5/16600", pages(&[(0x100, 1)])),
        ],
        &["base/5/16700"],
    );
    assert_restores(
        &c,
        "i",
        &[
            (rel, std::mem::take(&mut v_inc)),
            ("base/5/16500", pages(&[(0x100, 1)])),
            ("base/5/16700", pages(&[(0x100, 7)])),
            ("postgresql.auto.conf", b"# changed\n".to_vec()),
        ],
        &["base/5/16600"],
    );
    assert_restores(&c, "i2", &[(rel, v_inc2.clone())], &["base/5/16600"]);
    // The differential keeps the full's copy of block 2 (old LSN).
    assert_restores(&c, "d", &[(rel, v_inc2)], &["base/5/16600"]);
    assert_eq!(inc2.chain, "f");

    for id in ["f", "i", "i2", "d"] {
        let wal = [
            ("000000010000000000000002", 2),
            ("000000010000000000000003", 3),
        ];
        for (name, n) in wal {
            let _ = c.push_wal(name, &segment(n), Compression::Zstd, 1);
        }
        assert_eq!(verify_backup(&c, id).unwrap(), vec![], "{id}");
    }
    // A parent's damaged object is reported for the child that needs it.
    let full_entry = load_backup(&c, "f")
        .unwrap()
        .1
        .files
        .into_iter()
        .find(|f| f.path == rel)
        .unwrap();
    c.storage().delete(&full_entry.key).unwrap();
    let problems = verify_backup(&c, "i2").unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].file, rel);
    assert!(
        problems[0].reason.contains("parent backup \"f\""),
        "{problems:?}"
    );
    let out = tempfile::tempdir().unwrap();
    let e = restore_backup(&c, "i2", &out.path().join("x")).unwrap_err();
    assert!(e.to_string().contains(rel), "{e}");
}

fn described(id: &str, kind: &str, chain: &str, timeline: u32, epoch: i64) -> PhysicalBackupInfo {
    let mut b = PhysicalBackupInfo::for_tests(id, kind, None, chain, epoch);
    b.timeline = timeline;
    b.start_lsn = "0/2000028".into();
    b.stop_lsn = "0/2000100".into();
    b.start_wal = "000000010000000000000002".into();
    b.stop_wal = "000000010000000000000002".into();
    b.system_identifier = SYSID;
    b
}

#[test]
fn the_parent_is_the_newest_of_the_newest_chain_or_a_full_is_taken_with_a_reason() {
    use std::collections::HashSet;
    let none = HashSet::new();
    let reason = |c: ParentChoice| match c {
        ParentChoice::Full { reason } => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        reason(choose_parent(&[], BackupKind::Incremental, 1, &none)),
        "no full backup in this repository"
    );
    let list = vec![
        described("f1", "full", "f1", 1, 1),
        described("i1", "incremental", "f1", 1, 2),
        described("f2", "full", "f2", 1, 3),
        described("i2", "incremental", "f2", 1, 4),
        described("d2", "differential", "f2", 1, 5),
    ];
    let parent = |c: ParentChoice| match c {
        ParentChoice::Parent { parent, chain } => (parent.backup_id.clone(), chain),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        parent(choose_parent(&list, BackupKind::Incremental, 1, &none)),
        ("d2".to_string(), "f2".to_string())
    );
    assert_eq!(
        parent(choose_parent(&list, BackupKind::Differential, 1, &none)),
        ("f2".to_string(), "f2".to_string())
    );
    let r = reason(choose_parent(&list, BackupKind::Incremental, 2, &none));
    assert!(r.contains("timeline changed"), "{r}");
    let bad: HashSet<String> = ["d2".to_string()].into();
    let r = reason(choose_parent(&list, BackupKind::Incremental, 1, &bad));
    assert!(
        r.contains("\"d2\"") && r.contains("failed verification"),
        "{r}"
    );
    // A differential does not rely on d2.
    assert_eq!(
        parent(choose_parent(&list, BackupKind::Differential, 1, &bad)).0,
        "f2"
    );
}

#[test]
fn missing_wal_is_found_by_listing() {
    let (_r, c) = cluster();
    for (name, n) in [
        ("000000010000000000000002", 2),
        ("000000010000000000000004", 4),
    ] {
        c.push_wal(name, &segment(n), Compression::Zstd, 1).unwrap();
    }
    assert_eq!(
        missing_wal(&c, "000000010000000000000002", "000000010000000000000005").unwrap(),
        ["000000010000000000000003", "000000010000000000000005"]
    );
    assert!(
        missing_wal(&c, "000000010000000000000004", "000000010000000000000004")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn wal_summaries_name_the_blocks_to_read() {
    use increment::{listed_blocks, rel_fork, ForkChanges, RelFork};
    let f = |t, d, r, k| RelFork {
        tablespace: t,
        database: d,
        relfilenode: r,
        fork: k,
    };
    assert_eq!(rel_fork("base/5/16384"), Some((f(1663, 5, 16384, 0), 0)));
    assert_eq!(
        rel_fork("base/5/16384_vm.2"),
        Some((f(1663, 5, 16384, 2), 2))
    );
    assert_eq!(rel_fork("global/1262_fsm"), Some((f(1664, 0, 1262, 1), 0)));
    assert_eq!(
        rel_fork("pg_tblspc/16500/PG_17_202406281/5/16501_init"),
        Some((f(16500, 5, 16501, 3), 0))
    );
    assert_eq!(rel_fork("base/5/pg_filenode.map"), None);
    assert_eq!(rel_fork("base/5/16384_xx"), None);
    let ch = ForkChanges {
        limit: None,
        blocks: vec![131_075, 2, 9, 131_072 * 2],
    };
    // Segment 0 of 10 blocks, 8 in the parent: 2 and 9 changed, 8 and 9 new.
    assert_eq!(listed_blocks(Some(&ch), 0, 10, 8), [2, 8, 9]);
    // Segment 1: relation block 131075 is its block 3.
    assert_eq!(listed_blocks(Some(&ch), 1, 10, 10), [3]);
    // Truncated to 4 blocks, then grown: everything from block 4 on.
    let cut = ForkChanges {
        limit: Some(4),
        blocks: vec![1],
    };
    assert_eq!(listed_blocks(Some(&cut), 0, 7, 7), [1, 4, 5, 6]);
    // Not in any summary: unchanged, unless longer than in the parent.
    assert_eq!(listed_blocks(None, 0, 5, 5), Vec::<u32>::new());
    assert_eq!(listed_blocks(None, 0, 5, 3), [3, 4]);
}

#[test]
fn an_increment_from_wal_summaries_reads_only_the_listed_blocks() {
    let (_r, c) = cluster();
    let src = pgdata();
    let r = src.path();
    let rel = "base/5/16384";
    write(r, rel, &pages(&[(0x100, 1), (0x100, 2), (0x100, 3)]));
    let (full, fm) = take_kind(&c, r, "f", "full", None, "0/2000000", 10);
    // Blocks 0 and 1 change; the summary names block 1 only (as if block
    // 0's change came after this backup's start, which WAL replay covers).
    write(
        r,
        rel,
        &pages(&[(0x2000100, 10), (0x2000100, 20), (0x100, 3), (0, 0)]),
    );
    let dd = walk(r).unwrap();
    let prefix = backup_prefix(&c, "i");
    let fork = increment::rel_fork(rel).unwrap().0;
    let basis = Basis {
        reference_lsn: 0x2000000,
        parent_sizes: fm.files.iter().map(|f| (f.path.clone(), f.size)).collect(),
        summary: Some(
            [(
                fork,
                increment::ForkChanges {
                    limit: None,
                    blocks: vec![1],
                },
            )]
            .into(),
        ),
        parent_databases: fm.databases.clone(),
        databases: dd.databases.clone(),
        parent_root: None,
        same_shape: Default::default(),
    };
    let files = store_files(
        &c,
        &prefix,
        r,
        &dd.files,
        StoreOptions {
            compression: Compression::Zstd,
            level: 1,
            threads: 1,
            bundle_below: 0,
        },
        Some(&basis),
        None,
        &Progress::default(),
    )
    .unwrap();
    let e = files.iter().find(|f| f.path == rel).unwrap();
    assert_eq!(e.blocks.as_deref(), Some(&[1, 3][..]), "{e:?}");
    // Other relation files, in no summary, store no block.
    let other = files.iter().find(|f| f.path == "global/1262").unwrap();
    assert_eq!(other.blocks.as_deref(), Some(&[][..]));
    assert_eq!(full.backup_id, "f");
}

#[test]
fn small_files_share_bundles_and_each_is_checked_on_its_own() {
    BUNDLE.with(|b| b.set(BUNDLE_FILES_BELOW));
    let (_r, c) = cluster();
    let src = pgdata();
    let m = take(&c, src.path(), "b");
    BUNDLE.with(|b| b.set(0));
    let bundled: Vec<&ManifestFile> = m.files.iter().filter(|f| f.offset.is_some()).collect();
    // Every file but pg_control (last, on its own) and backup_label.
    assert_eq!(bundled.len(), m.files.len() - 2, "{:?}", m.files);
    let keys: std::collections::HashSet<&str> = bundled.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let objects = c
        .storage()
        .list(&format!("{}/", backup_prefix(&c, "b")))
        .unwrap();
    // One bundle, pg_control, backup_label, the manifest's root pair and
    // its one pack of segments, and the descriptor pair.
    assert_eq!(objects.len(), 8, "{objects:?}");
    for (name, n) in [
        ("000000010000000000000002", 2),
        ("000000010000000000000003", 3),
    ] {
        c.push_wal(name, &segment(n), Compression::Zstd, 1).unwrap();
    }
    assert_eq!(verify_backup(&c, "b").unwrap(), vec![]);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("r");
    restore_backup(&c, "b", &target).unwrap();
    for f in walk(src.path()).unwrap().files {
        assert_eq!(
            fs::read(target.join(&f.path)).unwrap(),
            fs::read(src.path().join(&f.path)).unwrap(),
            "{}",
            f.path
        );
    }
    // A manifest entry pointing past its bundle's end is named.
    let (info, mut manifest) = load_backup(&c, "b").unwrap();
    let victim = manifest
        .files
        .iter_mut()
        .find(|f| f.offset.is_some())
        .unwrap();
    victim.offset = Some(1 << 40);
    let path = victim.path.clone();
    let prefix = backup_prefix(&c, "b");
    for k in [MANIFEST_NAME, INFO_NAME] {
        c.storage().delete(&format!("{prefix}/{k}")).unwrap();
        c.storage().delete(&format!("{prefix}/{k}.copy")).unwrap();
    }
    for o in c
        .storage()
        .list(&format!("{prefix}/{SEGMENT_DIR}/"))
        .unwrap()
    {
        c.storage().delete(&o.key).unwrap();
    }
    finish_backup(&c, &manifest, &info).unwrap();
    let problems = verify_backup(&c, "b").unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].file, path);
    assert!(problems[0].reason.contains("offset"), "{problems:?}");
}

/// Many empty files (empty tables) are cut into bundles of at most
/// `BUNDLE_MEMBERS`, and restore exactly.
#[test]
fn empty_files_fill_bundles_of_a_bounded_count() {
    BUNDLE.with(|b| b.set(BUNDLE_FILES_BELOW));
    let (_r, c) = cluster();
    let src = pgdata();
    for n in 0..2500u32 {
        write(src.path(), &format!("base/5/{}", 40_000 + n), b"");
    }
    let m = take(&c, src.path(), "b");
    BUNDLE.with(|b| b.set(0));
    let mut members: std::collections::BTreeMap<&str, usize> = Default::default();
    for f in m.files.iter().filter(|f| f.offset.is_some()) {
        *members.entry(f.key.as_str()).or_default() += 1;
    }
    assert!(members.len() >= 3, "{members:?}");
    assert!(
        members.values().all(|&n| n <= BUNDLE_MEMBERS),
        "{members:?}"
    );
    assert_eq!(members.values().sum::<usize>(), m.files.len() - 2);
    let out = tempfile::tempdir().unwrap();
    restore_backup(&c, "b", &out.path().join("r")).unwrap();
    for f in walk(src.path()).unwrap().files {
        assert_eq!(
            fs::read(out.path().join("r").join(&f.path)).unwrap(),
            fs::read(src.path().join(&f.path)).unwrap(),
            "{}",
            f.path
        );
    }
}

#[test]
fn backups_started_in_the_same_second_are_ordered_by_start_lsn() {
    let mut full = described(
        "20261201T120000Z-F-j3",
        "full",
        "20261201T120000Z-F-j3",
        1,
        100,
    );
    full.start_lsn = "0/3000028".into();
    let mut diff = described(
        "20261201T120000Z-D-j4",
        "differential",
        "20261201T120000Z-F-j3",
        1,
        100,
    );
    diff.start_lsn = "0/5000028".into();
    // By id alone, "D-j4" sorts before "F-j3".
    let mut list = vec![diff.clone(), full.clone()];
    list.sort_by_key(backup_order);
    assert_eq!(list, [full.clone(), diff.clone()]);
    match choose_parent(&list, BackupKind::Incremental, 1, &Default::default()) {
        ParentChoice::Parent { parent, .. } => assert_eq!(parent.backup_id, diff.backup_id),
        other => panic!("{other:?}"),
    }
}

/// Every file below `root`, with its content.
pub(super) fn tree(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn many_files_chain(c: &ClusterRepo, r: &Path) -> (PhysicalBackupInfo, PhysicalBackupInfo) {
    for i in 0..40u8 {
        write(
            r,
            &format!("base/5/{}", 20000 + u32::from(i)),
            &pages(&[(0x100, i), (0x100, i + 1)]),
        );
        write(
            r,
            &format!("pg_xact/{i:04X}"),
            &vec![i; 100 + usize::from(i)],
        );
    }
    let (full, _) = take_kind(c, r, "f", "full", None, "0/2000000", 10);
    for i in (0..40u8).step_by(3) {
        write(
            r,
            &format!("base/5/{}", 20000 + u32::from(i)),
            &pages(&[(0x100, i), (0x2000200, 99)]),
        );
    }
    write(r, "pg_xact/0001", b"changed");
    let (inc, _) = take_kind(c, r, "i", "incremental", Some(&full), "0/3000000", 20);
    (full, inc)
}

#[test]
fn a_parallel_rebuild_gives_the_same_files_as_one_thread() {
    let (_r, c) = cluster();
    BUNDLE.with(|b| b.set(BUNDLE_FILES_BELOW));
    let src = pgdata();
    let (_, inc) = many_files_chain(&c, src.path());
    BUNDLE.with(|b| b.set(0));
    let out = tempfile::tempdir().unwrap();
    let one = out.path().join("one");
    restore_backup(&c, &inc.backup_id, &one).unwrap();
    let four = out.path().join("four");
    let counters = crate::restore::Counters::default();
    let opts = crate::restore::Options {
        jobs: 4,
        ..Default::default()
    };
    let report = crate::restore::rebuild(&c, &inc.backup_id, &four, &opts, &counters).unwrap();
    assert_eq!(tree(&one), tree(&four));
    assert_eq!(report.files, counters.files_done.load(Ordering::Relaxed));
    assert_eq!(report.kept, 0);
    assert!(report.fetched > 0);
    // The restored files are the source's (the ones a backup copies).
    let restored = tree(&four);
    for (rel, content) in tree(src.path()) {
        if rel == "backup_label" {
            continue; // the backup's own, not the old one left in the source
        }
        if let Some(r) = restored.get(&rel) {
            assert_eq!(r, &content, "{rel}");
        }
    }
}

#[test]
fn a_delta_restore_keeps_what_matches_downloads_less_and_removes_extras() {
    let (_r, c) = cluster();
    let src = pgdata();
    let (full, inc) = many_files_chain(&c, src.path());
    let out = tempfile::tempdir().unwrap();
    let fresh = out.path().join("fresh");
    let plain = crate::restore::rebuild(
        &c,
        &inc.backup_id,
        &fresh,
        &Default::default(),
        &Default::default(),
    )
    .unwrap();
    // An old copy: the full, with some damage and an extra file.
    let old = out.path().join("old");
    restore_backup(&c, &full.backup_id, &old).unwrap();
    write(&old, "base/5/20001", b"damaged");
    write(&old, "base/5/99999", b"not in the backup");
    write(&old, "pg_wal/000000010000000000000009", b"old wal");
    fs::create_dir_all(old.join("base/77")).unwrap();
    // Without --delta, a directory that is not empty is refused, untouched.
    let e = crate::restore::rebuild(
        &c,
        &inc.backup_id,
        &old,
        &Default::default(),
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::RestoreRefused { .. }), "{e}");
    assert!(old.join("base/5/99999").exists());
    let opts = crate::restore::Options {
        delta: true,
        jobs: 2,
        ..Default::default()
    };
    let delta =
        crate::restore::rebuild(&c, &inc.backup_id, &old, &opts, &Default::default()).unwrap();
    assert_eq!(tree(&old), tree(&fresh));
    assert!(!old.join("base/77").exists());
    assert!(delta.kept > 0 && delta.patched > 0, "{delta:?}");
    assert!(delta.removed >= 3, "{delta:?}");
    assert!(
        delta.fetched < plain.fetched,
        "delta fetched {} bytes, a full restore {}",
        delta.fetched,
        plain.fetched
    );
}

#[test]
fn a_directory_with_a_running_cluster_is_refused_even_with_delta() {
    let (_r, c) = cluster();
    let src = pgdata();
    take(&c, src.path(), "f");
    let out = tempfile::tempdir().unwrap();
    let t = out.path().join("live");
    write(
        &t,
        "postmaster.pid",
        format!("{}\n/x\n", std::process::id()).as_bytes(),
    );
    let opts = crate::restore::Options {
        delta: true,
        ..Default::default()
    };
    let e = crate::restore::rebuild(&c, "f", &t, &opts, &Default::default()).unwrap_err();
    assert!(e.to_string().contains("running cluster"), "{e}");
    assert!(t.join("postmaster.pid").exists());
}

#[test]
fn a_corrupt_object_stops_the_restore_with_the_file_named() {
    let (_r, c) = cluster();
    let src = pgdata();
    let m = take(&c, src.path(), "f");
    let f = m.files.iter().find(|f| f.path == "base/5/16384").unwrap();
    let mut obj = c.storage().get(&f.key).unwrap();
    let n = obj.len();
    obj[n / 2] ^= 0x55;
    c.storage().put(&f.key, &obj, PutMode::Overwrite).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = crate::restore::Options {
        jobs: 3,
        ..Default::default()
    };
    let e = crate::restore::rebuild(&c, "f", &out.path().join("x"), &opts, &Default::default())
        .unwrap_err();
    assert!(e.to_string().contains("base/5/16384"), "{e}");
}

#[test]
fn recovery_settings_replace_earlier_ones() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "postgresql.auto.conf",
        b"work_mem = '8MB'\nrestore_command = 'old'\nrecovery_target_time = 'x'\nark.archive_also = 'pgbackrest:main'\n",
    );
    let settings = vec![("recovery_target_lsn".to_string(), "'0/3000000'".to_string())];
    crate::restore::write_recovery(
        d.path(),
        "pg_ark wal-get --repo 'file:///r' %f %p",
        &settings,
        true,
    )
    .unwrap();
    let text = fs::read_to_string(d.path().join("postgresql.auto.conf")).unwrap();
    assert_eq!(
        text,
        "work_mem = '8MB'\n# pg_ark restore: recovery settings\nrestore_command = 'pg_ark wal-get --repo ''file:///r'' %f %p'\nrecovery_target_lsn = '0/3000000'\narchive_mode = 'off'\nark.archive_also = ''\n"
    );
    assert!(d.path().join("recovery.signal").exists());
}

#[test]
fn an_object_key_outside_its_backup_is_refused_before_anything_is_written() {
    let (_r, c) = cluster();
    let src = pgdata();
    take(&c, src.path(), "a");
    let mut m = take(&c, src.path(), "b");
    let prefix = backup_prefix(&c, "b");
    // The crafted manifest points one file at backup a's object.
    let theirs = load_backup(&c, "a").unwrap().1.files[0].key.clone();
    m.files[0].key = theirs;
    for k in [
        format!("{prefix}/{MANIFEST_NAME}"),
        format!("{prefix}/{MANIFEST_NAME}.copy"),
    ] {
        c.storage().delete(&k).unwrap();
    }
    save_json(&c, &format!("{prefix}/{MANIFEST_NAME}"), &m).unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = restore_backup(&c, "b", &out.path().join("x")).unwrap_err();
    assert!(e.to_string().contains("lies outside backup \"b\""), "{e}");
    assert!(!out.path().join("x").exists(), "nothing is written");
}

/// A database directory copied whole since the parent (a limit block on
/// its relfilenode 0 in the WAL summaries, or a `PG_VERSION` written anew)
/// is stored whole, whatever its pages' LSNs; the visibility map is stored
/// whole always; `global/` is no database.
#[test]
fn copied_databases_and_visibility_maps_are_stored_whole() {
    let (_r, c) = cluster();
    let src = pgdata();
    let r = src.path();
    let rel = "base/5/16384";
    write(r, rel, &pages(&[(0x100, 1), (0x100, 2), (0x100, 3)]));
    write(r, "base/5/16384_vm", &pages(&[(0x100, 1)]));
    write(r, "global/1262", &pages(&[(0x100, 1)]));
    let (full, _) = take_kind(&c, r, "f", "full", None, "0/2000000", 10);
    assert!(full.files > 0);
    let stored = |m: &Manifest, path: &str| {
        m.files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} in {:?}", m.files))
            .blocks
            .clone()
    };
    // Unchanged by page LSN: by block, nothing stored; the map whole.
    let (i1, m1) = take_kind(&c, r, "i1", "incremental", Some(&full), "0/3000000", 11);
    assert_eq!(stored(&m1, rel), Some(vec![]));
    assert_eq!(stored(&m1, "base/5/16384_vm"), None);
    assert_eq!(stored(&m1, "global/1262"), Some(vec![]));
    assert!(m1.databases.contains_key("base/5"), "{:?}", m1.databases);
    // PG_VERSION written again (crash recovery replaying a WAL_LOG
    // CREATE DATABASE does): the same directory, where the file system
    // keeps birth times.
    if fs::metadata(r.join("base/5")).unwrap().created().is_ok() {
        let v = fs::read(r.join("base/5/PG_VERSION")).unwrap();
        write(r, "base/5/PG_VERSION.new", &v);
        fs::rename(r.join("base/5/PG_VERSION.new"), r.join("base/5/PG_VERSION")).unwrap();
        assert_eq!(walk(r).unwrap().databases, m1.databases);
    }
    // The database directory made anew (same path, same old page LSNs);
    // the old one still exists meanwhile, so the inode differs.
    fs::rename(r.join("base/5"), r.join("base/5.old")).unwrap();
    fs::create_dir(r.join("base/5")).unwrap();
    for e in fs::read_dir(r.join("base/5.old")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), r.join("base/5").join(e.file_name())).unwrap();
    }
    fs::remove_dir_all(r.join("base/5.old")).unwrap();
    let (i2, m2) = take_kind(&c, r, "i2", "incremental", Some(&i1), "0/4000000", 12);
    assert_ne!(m2.databases["base/5"], m1.databases["base/5"]);
    assert_eq!(stored(&m2, rel), None, "the whole file");
    assert_eq!(stored(&m2, "global/1262"), Some(vec![]));
    // From WAL summaries: relfilenode 0 of database 5 names it whole.
    let mut basis = Basis {
        reference_lsn: 0x4000000,
        parent_sizes: m2.files.iter().map(|f| (f.path.clone(), f.size)).collect(),
        summary: Some(std::collections::HashMap::new()),
        parent_databases: m2.databases.clone(),
        databases: walk(r).unwrap().databases,
        parent_root: None,
        same_shape: Default::default(),
    };
    assert!(basis.by_block(rel, 3 * BLOCK));
    assert!(!basis.by_block("base/5/16384_vm", BLOCK));
    basis.summary = Some(
        [(
            increment::RelFork {
                tablespace: increment::DEFAULTTABLESPACE_OID,
                database: 5,
                relfilenode: 0,
                fork: 0,
            },
            increment::ForkChanges {
                limit: Some(0),
                blocks: vec![],
            },
        )]
        .into(),
    );
    assert!(!basis.by_block(rel, 3 * BLOCK));
    assert!(basis.by_block("global/1262", BLOCK));
    // A parent that recorded no identities (an older manifest): whole.
    basis.summary = None;
    basis.parent_databases.clear();
    assert!(!basis.by_block(rel, 3 * BLOCK));
    assert_eq!(i2.kind, BackupKind::Incremental);
    assert!(increment::is_database_dir(
        "pg_tblspc/16500/PG_17_202406281/5"
    ));
    assert!(increment::is_database_dir("base/5"));
    assert!(!increment::is_database_dir("base"));
    assert!(!increment::is_database_dir("base/x"));
    assert!(!increment::is_database_dir("global"));
    assert!(!increment::is_database_dir(
        "pg_tblspc/16500/PG_17_202406281"
    ));
}

#[test]
fn descriptors_without_a_segment_size_hold_16_mib_segments() {
    let b = PhysicalBackupInfo::for_tests("f", "full", None, "f", 1);
    let mut v = serde_json::to_value(&b).unwrap();
    assert_eq!(v["wal_segment_size"], 16 << 20);
    // As pg_ark wrote descriptors before it recorded the size.
    v.as_object_mut().unwrap().remove("wal_segment_size");
    let old: PhysicalBackupInfo = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(old.wal_segment_size, crate::wal::SegmentSize::DEFAULT);
    v["wal_segment_size"] = serde_json::json!(64 << 20);
    let big: PhysicalBackupInfo = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(big.wal_segment_size.bytes(), 64 << 20);
    v["wal_segment_size"] = serde_json::json!(1000);
    assert!(serde_json::from_value::<PhysicalBackupInfo>(v).is_err());
}

/// Expiry (`retention::physical::expire`): a dry run lists and removes
/// nothing; a real one removes the chains and the WAL no kept backup needs,
/// rewrites the index, and names where recovery can start.
#[test]
fn expiry_lists_in_a_dry_run_and_removes_whole_chains_and_old_wal() {
    use crate::retention::physical::{expire, Rules};
    let (_d, c) = cluster();
    let src = pgdata();
    let (f1, _) = take_kind(&c, src.path(), "f1", "full", None, "0/2000028", 100);
    take_kind(
        &c,
        src.path(),
        "i1",
        "incremental",
        Some(&f1),
        "0/2000028",
        150,
    );
    take_kind(&c, src.path(), "f2", "full", None, "0/2000028", 200);
    take_kind(&c, src.path(), "f3", "full", None, "0/2000028", 300);
    for (n, name) in [
        (1, "000000010000000000000001"),
        (2, "000000010000000000000002"),
    ] {
        c.push_wal(name, &segment(n), Compression::Zstd, 1).unwrap();
    }
    let rules = Rules {
        full: 2,
        diff: None,
        days: None,
    };
    let ids = |c: &ClusterRepo| -> Vec<String> {
        list_backups(c)
            .unwrap()
            .into_iter()
            .map(|b| b.backup_id)
            .collect()
    };
    let dry = expire(&c, rules, 1000, true).unwrap();
    let labels: Vec<&str> = dry
        .backups
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    // Children before parents.
    assert_eq!(labels, ["i1", "f1"]);
    assert_eq!(dry.wal[0]["first"], "000000010000000000000001");
    assert_eq!(dry.wal[0]["files"], 1);
    assert_eq!(ids(&c), ["f1", "i1", "f2", "f3"]);
    assert!(c.get_wal("000000010000000000000001").unwrap().is_some());

    let done = expire(&c, rules, 1000, false).unwrap();
    assert_eq!(
        done.prefixes,
        [backup_prefix(&c, "i1"), backup_prefix(&c, "f1")]
    );
    assert_eq!(ids(&c), ["f2", "f3"]);
    assert!(c.get_wal("000000010000000000000001").unwrap().is_none());
    assert!(c.get_wal("000000010000000000000002").unwrap().is_some());
    assert_eq!(done.recoverable_from["backup"], "f2");
    // Nothing of the removed chain is left, not even its prefix.
    assert!(c
        .storage()
        .list(&format!("{}/", backup_prefix(&c, "f1")))
        .unwrap()
        .is_empty());
    // Again: nothing more to do.
    let again = expire(&c, rules, 1000, false).unwrap();
    assert!(again.backups.is_empty() && again.wal.is_empty());
}

/// Under Object Lock, expiry deletes nothing before its retain-until: an
/// expired backup still locked stays, with the parent it needs, listed as
/// pending; the WAL stops at the first segment still locked; a later run,
/// once the locks have ended, removes them all, and nothing was ever
/// refused on the way.
#[test]
fn expiry_under_object_lock_waits_for_every_lock() {
    use crate::retention::physical::{expire, Rules};
    use crate::storage::write_once::WriteOnce;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(WriteOnce::locked_for(
        LocalStorage::open(dir.path()).unwrap(),
        100,
    ));
    let repo = Arc::new(Repository::open(Box::new(Arc::clone(&s)), true).unwrap());
    let c = repo.cluster(SYSID, 17, true).unwrap();
    let src = pgdata();
    let (f1, _) = take_kind(&c, src.path(), "f1", "full", None, "0/2000028", 100);
    take_kind(
        &c,
        src.path(),
        "i1",
        "incremental",
        Some(&f1),
        "0/2000028",
        150,
    );
    take_kind(&c, src.path(), "f2", "full", None, "0/2000028", 200);
    take_kind(&c, src.path(), "f3", "full", None, "0/2000028", 300);
    c.push_wal(
        "000000010000000000000001",
        &segment(1),
        Compression::Zstd,
        1,
    )
    .unwrap();
    let rules = Rules {
        full: 2,
        diff: None,
        days: None,
    };
    let ids = |c: &ClusterRepo| -> Vec<String> {
        list_backups(c)
            .unwrap()
            .into_iter()
            .map(|b| b.backup_id)
            .collect()
    };
    // f1's lock has ended, its child's has not: both stay; so does the
    // WAL, still locked.
    s.backdate(&format!("{}/", backup_prefix(&c, "f1")), 1000);
    let now = s.now();
    let r = expire(&c, rules, now, false).unwrap();
    assert!(r.backups.is_empty() && r.wal.is_empty(), "{:?}", r.backups);
    let pending: Vec<(&str, bool)> = r
        .pending
        .iter()
        .map(|p| (p["label"].as_str().unwrap(), p["retained_until"].is_null()))
        .collect();
    assert_eq!(pending, [("f1", true), ("i1", false)]);
    assert_eq!(ids(&c), ["f1", "i1", "f2", "f3"]);
    assert!(c.get_wal("000000010000000000000001").unwrap().is_some());
    // Every lock ended: all of it goes.
    s.backdate("", 1000);
    let r = expire(&c, rules, now, false).unwrap();
    assert_eq!(r.backups.len(), 2);
    assert!(r.pending.is_empty());
    assert_eq!(ids(&c), ["f2", "f3"]);
    assert!(c.get_wal("000000010000000000000001").unwrap().is_none());
    assert_eq!(s.refused(), Vec::<String>::new());
}

/// Under Object Lock, what retention keeps stays locked: once the last
/// extension is less than half a period away, every kept object's lock is
/// extended a full period, the repository's descriptor included; an
/// expired backup still locked (pending) is left to its lock's end.
#[test]
fn retention_extends_the_locks_of_what_it_keeps() {
    use crate::retention::physical::{expire, Rules};
    use crate::storage::write_once::WriteOnce;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(WriteOnce::locked_for(
        LocalStorage::open(dir.path()).unwrap(),
        100,
    ));
    let repo = Arc::new(Repository::open(Box::new(Arc::clone(&s)), true).unwrap());
    let c = repo.cluster(SYSID, 17, true).unwrap();
    let src = pgdata();
    take_kind(&c, src.path(), "f1", "full", None, "0/2000028", 100);
    write_index(&c).unwrap();
    take_kind(&c, src.path(), "f2", "full", None, "0/2000028", 200);
    let rules = Rules {
        full: 1,
        diff: None,
        days: None,
    };
    let descriptor = |id: &str| format!("{}/{INFO_NAME}", backup_prefix(&c, id));
    let until = |k: &str| {
        crate::storage::Storage::retained_until(&s, k)
            .unwrap()
            .unwrap()
    };
    let now = s.now();
    let first = expire(&c, rules, now, false).unwrap();
    assert_eq!(first.pending.len(), 1, "f1 is still locked");
    assert!(first.relocked["until"].is_string(), "{:?}", first.relocked);
    // Within half a period of the last extension: nothing to do.
    let again = expire(&c, rules, now + 40, false).unwrap();
    assert!(again.relocked.is_null());
    // Past it: a full period from then, for what is kept only.
    let f1_until = until(&descriptor("f1"));
    let later = expire(&c, rules, now + 60, false).unwrap();
    assert!(
        later.relocked["objects"].as_u64().unwrap() > 10,
        "{:?}",
        later.relocked
    );
    assert_eq!(until(&descriptor("f2")), now + 160);
    assert_eq!(until(layout::DESCRIPTOR), now + 160);
    assert_eq!(until(&c.key("cluster.info")), now + 160);
    assert_eq!(until(&descriptor("f1")), f1_until);
    // Of generations, those pruning keeps; the records of the extensions
    // themselves lapse.
    for folder in ["backup.index.d/", "locks.d/"] {
        let gens = crate::repo::generations::list(s.as_ref(), &c.key(folder)).unwrap();
        assert!(gens.len() >= 2, "{folder}: {gens:?}");
        let key = |g: u64| crate::repo::generations::key(&c.key(folder), g);
        if folder == "backup.index.d/" {
            // The few pruning keeps.
            assert_eq!(until(&key(*gens.last().unwrap())), now + 160);
        } else {
            assert!(until(&key(gens[0])) < now + 160, "{folder}");
        }
    }
    assert_eq!(s.refused(), Vec::<String>::new());
}

/// The parent decision (`physical::decide`) on a repository: a parent with
/// its WAL; a full, with the reason, when WAL between them is gone or the
/// checksums changed; a wait for WAL still to be archived that ends in a
/// transient failure.
#[test]
fn the_parent_decision_waits_for_ready_wal_and_falls_back_to_a_full_with_a_reason() {
    use crate::schedule::lifecycle::FailureClass;
    let (_d, c) = cluster();
    let src = pgdata();
    take_kind(&c, src.path(), "f1", "full", None, "0/2000028", 100);
    let none = std::collections::HashSet::new();
    let stop = AtomicBool::new(false);
    let waited = std::sync::Mutex::new(Vec::new());
    let waiting = |s: &str| waited.lock().unwrap().push(s.to_string());
    let started = |start_wal| Started {
        start_wal,
        timeline: 1,
        checksums: false,
    };
    let decide_now = |start_wal, wait_ms| {
        decide(
            &c,
            BackupKind::Incremental,
            started(start_wal),
            &none,
            src.path(),
            std::time::Duration::from_millis(wait_ms),
            &stop,
            &waiting,
        )
    };
    // Segments 2 and 3 (the parent's start to the one before ours) are
    // missing and not waiting to be archived: a full, saying why.
    let d = decide_now("000000010000000000000004", 0).unwrap();
    assert!(d.parent.is_none());
    let reason = d.fallback.unwrap();
    assert!(
        reason.contains("WAL segment 000000010000000000000002") && reason.contains("\"f1\""),
        "{reason}"
    );
    // Segment 2 waits in pg_wal (.ready): waited for, then a transient
    // failure when the archiver does not store it in time.
    write(
        src.path(),
        "pg_wal/archive_status/000000010000000000000002.ready",
        b"",
    );
    let e = decide_now("000000010000000000000004", 100).unwrap_err();
    assert_eq!(e.class, FailureClass::Transient, "{e}");
    assert!(e.message.contains("000000010000000000000002"), "{e}");
    assert!(waited
        .lock()
        .unwrap()
        .contains(&"000000010000000000000002".to_string()));
    // Archived: the parent, with its start as the reference.
    for (name, n) in [
        ("000000010000000000000002", 2),
        ("000000010000000000000003", 3),
    ] {
        c.push_wal(name, &segment(n), Compression::Zstd, 1).unwrap();
    }
    let d = decide_now("000000010000000000000004", 0).unwrap();
    let (parent, basis) = d.parent.unwrap();
    assert_eq!(parent.backup_id, "f1");
    assert_eq!(d.chain.as_deref(), Some("f1"));
    assert_eq!(basis.reference_lsn, 0x2000028);
    assert!(d.fallback.is_none());
    // Checksums turned on since: a full.
    let d = decide(
        &c,
        BackupKind::Differential,
        Started {
            start_wal: "000000010000000000000004",
            timeline: 1,
            checksums: true,
        },
        &none,
        src.path(),
        std::time::Duration::ZERO,
        &stop,
        &waiting,
    )
    .unwrap();
    assert!(d
        .fallback
        .unwrap()
        .contains("data checksums were turned on"));
}

/// A local repository whose data objects cannot be read: `transient`
/// (the network, an S3 5xx) or not (a backend error).
struct Unreadable {
    inner: LocalStorage,
    transient: bool,
}

impl Unreadable {
    fn fail(&self, key: &str) -> Result<(), crate::storage::StorageError> {
        if !key.contains("/data/") {
            return Ok(());
        }
        let message = format!("could not read \"{key}\": connection reset");
        Err(if self.transient {
            crate::storage::StorageError::Unavailable {
                location: "test".into(),
                message,
            }
        } else {
            crate::storage::StorageError::Backend {
                location: "test".into(),
                message,
            }
        })
    }
}

impl crate::storage::Storage for Unreadable {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, crate::storage::StorageError> {
        self.fail(key)?;
        self.inner.get(key)
    }
    fn get_reader<'a>(
        &'a self,
        key: &str,
    ) -> Result<Box<dyn std::io::Read + Send + 'a>, crate::storage::StorageError> {
        self.fail(key)?;
        self.inner.get_reader(key)
    }
    fn head(
        &self,
        key: &str,
    ) -> Result<Option<crate::storage::ObjectInfo>, crate::storage::StorageError> {
        self.inner.head(key)
    }
    fn put(
        &self,
        key: &str,
        data: &[u8],
        mode: PutMode,
    ) -> Result<(), crate::storage::StorageError> {
        self.inner.put(key, data, mode)
    }
    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn std::io::Read,
        mode: PutMode,
    ) -> Result<u64, crate::storage::StorageError> {
        self.inner.put_stream(key, body, mode)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<crate::storage::ObjectInfo>, crate::storage::StorageError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), crate::storage::StorageError> {
        self.inner.delete(key)
    }
}

/// A repository out of reach is no verdict on a backup: verification and
/// a rebuild fail with a transient storage error (a job retries them, and
/// records nothing), where an object that cannot be read for good is a
/// problem named with its file.
#[test]
fn an_unreachable_repository_is_no_verdict_on_the_backup() {
    let (dir, c) = cluster();
    let src = pgdata();
    take(&c, src.path(), "f1");
    for (name, n) in [
        ("000000010000000000000002", 2),
        ("000000010000000000000003", 3),
    ] {
        c.push_wal(name, &segment(n), Compression::Zstd, 1).unwrap();
    }
    assert_eq!(verify_backup(&c, "f1").unwrap(), vec![]);
    let over = |transient| {
        let storage = Unreadable {
            inner: LocalStorage::open(dir.path()).unwrap(),
            transient,
        };
        let repo = Arc::new(Repository::open(Box::new(storage), false).unwrap());
        repo.cluster(SYSID, 17, false).unwrap()
    };
    let unreachable = over(true);
    let e = verify_backup(&unreachable, "f1").unwrap_err();
    assert!(e.is_transient(), "{e}");
    let target = tempfile::tempdir().unwrap();
    let e = restore_backup(&unreachable, "f1", &target.path().join("r")).unwrap_err();
    assert!(e.is_transient(), "{e}");
    // Not transient: problems named with their files.
    let broken = over(false);
    let problems = verify_backup(&broken, "f1").unwrap();
    assert!(
        problems.iter().any(|p| p.file == "global/pg_control"),
        "{problems:?}"
    );
    let e = restore_backup(&broken, "f1", &target.path().join("r2")).unwrap_err();
    assert!(!e.is_transient(), "{e}");
}
