use super::*;
use crate::repo::Repository;
use crate::storage::local::LocalStorage;

const SYSID: u64 = 42;

fn cluster() -> (tempfile::TempDir, ClusterRepo) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(
        Repository::open(Box::new(LocalStorage::open(dir.path()).unwrap()), true).unwrap(),
    );
    let c = repo.cluster(SYSID, 17, true).unwrap();
    (dir, c)
}

use std::sync::Arc;

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// A data directory with something of everything the rules name.
fn pgdata() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    write(r, "PG_VERSION", b"17\n");
    write(r, "global/pg_control", &[7u8; 8192]);
    write(r, "global/1262", &[1u8; 8192]);
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
fn a_tablespace_is_refused_clearly() {
    let d = pgdata();
    let ts = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(ts.path(), d.path().join("pg_tblspc/16500")).unwrap();
    let e = walk(d.path()).unwrap_err();
    assert!(e.to_string().contains("pg_tblspc/16500"), "{e}");
}

fn take(c: &ClusterRepo, src: &Path, id: &str) -> Manifest {
    let dd = walk(src).unwrap();
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
        },
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
    };
    let info = PhysicalBackupInfo {
        format_version: PHYSICAL_INFO_VERSION,
        kind: "full".into(),
        backup_id: id.into(),
        start_lsn: "0/2000028".into(),
        stop_lsn: "0/3000100".into(),
        timeline: 1,
        start_wal: "000000010000000000000002".into(),
        stop_wal: "000000010000000000000003".into(),
        started_at: String::new(),
        finished_at: String::new(),
        started_epoch: 1,
        finished_epoch: 2,
        original_bytes: 0,
        stored_bytes: 0,
        files: manifest.files.len(),
        server_version: "17".into(),
        system_identifier: SYSID,
        job_id: Some(1),
        created_by: "test".into(),
    };
    finish_backup(c, &manifest, &info).unwrap();
    manifest
}

fn segment(n: u8) -> Vec<u8> {
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

    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("restored");
    let info = restore_backup(&c, &m.backup_id, &target).unwrap();
    assert_eq!(info.kind, "full");
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
    assert_eq!(remove_incomplete(&c).unwrap(), ["b2"]);
    assert!(c.storage().list(&format!("{prefix}/")).unwrap().is_empty());
    assert_eq!(list_backups(&c).unwrap().len(), 1);
    assert_eq!(remove_incomplete(&c).unwrap(), Vec::<String>::new());
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
    assert_eq!(
        wal_range("000000010000000000000002", "000000010000000100000001")
            .unwrap()
            .len(),
        256
    );
    assert!(wal_range("000000010000000000000002", "000000020000000000000003").is_err());
}
