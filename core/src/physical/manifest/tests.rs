use super::super::tests::{
    assert_restores, cluster, pages, pgdata, segment, take_kind, tree, write, SUMMARY,
};
use super::*;
use crate::physical::increment::{ForkChanges, RelFork};

fn root_of(c: &ClusterRepo, id: &str) -> Root {
    match load_stored(c, id).unwrap().unwrap() {
        Stored::V2(root) => root,
        Stored::V1(_) => panic!("backup {id} has a format-1 manifest"),
    }
}

fn seg<'a>(root: &'a Root, id: &str) -> &'a SegmentRef {
    root.segments
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no segment {id} in {root:?}"))
}

fn push_wal(c: &ClusterRepo) {
    for (name, n) in [
        ("000000010000000000000002", 2),
        ("000000010000000000000003", 3),
    ] {
        c.push_wal(name, &segment(n), Compression::Zstd, 1).unwrap();
    }
}

/// Replace backup `id`'s manifest with `m` as pg_ark 0.1.0 wrote it (one
/// format-1 document, no packs).
fn write_format_1(c: &ClusterRepo, id: &str, m: &Manifest) {
    let prefix = backup_prefix(c, id);
    for o in c
        .storage()
        .list(&format!("{prefix}/{SEGMENT_DIR}/"))
        .unwrap()
    {
        c.storage().delete(&o.key).unwrap();
    }
    for k in [MANIFEST_NAME.to_string(), format!("{MANIFEST_NAME}.copy")] {
        c.storage().delete(&format!("{prefix}/{k}")).unwrap();
    }
    let v1 = Manifest {
        format_version: 1,
        ..m.clone()
    };
    save_json(c, &format!("{prefix}/{MANIFEST_NAME}"), &v1).unwrap();
}

/// Replace backup `id`'s root with `root` (a crafted one).
fn rewrite_root(c: &ClusterRepo, id: &str, root: &Root) {
    let key = format!("{}/{MANIFEST_NAME}", backup_prefix(c, id));
    c.storage().delete(&key).unwrap();
    c.storage().delete(&format!("{key}.copy")).unwrap();
    save_json(c, &key, root).unwrap();
}

#[test]
fn every_path_has_one_segment() {
    for (path, id) in [
        ("base/5/16384", "rel:base/5:16"),
        ("base/5/16384.12", "rel:base/5:16"),
        ("base/5/17407_init", "rel:base/5:16"),
        ("base/5/17408", "rel:base/5:17"),
        ("base/5/16384_fsm", "map:base/5:16"),
        ("base/5/16384_vm.1", "map:base/5:16"),
        ("global/1262", "rel:global:1"),
        ("global/pg_control", "other:global"),
        (
            "pg_tblspc/16400/PG_17_202406281/5/16384",
            "rel:pg_tblspc/16400/PG_17_202406281/5:16",
        ),
        ("base/5/PG_VERSION", "other:base/5"),
        ("base/5/pg_filenode.map", "other:base/5"),
        ("pg_xact/0000", "other:pg_xact"),
        ("PG_VERSION", "other:"),
        ("backup_label", "other:"),
    ] {
        assert_eq!(segment_of(path), id, "{path}");
    }
    // The order of a shape's files is its own.
    assert_eq!(shape([("a", 1), ("b", 2)]), shape([("b", 2), ("a", 1)]));
    assert_ne!(shape([("a", 1)]), shape([("a", 2)]));
}

/// With WAL summaries, a relation segment whose files the summaries do
/// not name and whose lengths are the parent's is referred to, not
/// rewritten, and its files are not read: what the backup stores and
/// writes grows with what changed. Every backup of the chain still
/// restores exactly, and verifies.
#[test]
fn unchanged_relation_segments_are_referred_to_and_their_files_not_read() {
    let (_d, c) = cluster();
    let src = pgdata();
    let r = src.path();
    for n in 0..8u32 {
        write(
            r,
            &format!("base/5/{}", 20_000 + n),
            &pages(&[(0x100, 1), (0x100, 2)]),
        );
        write(r, &format!("base/5/{}", 30_000 + n), &pages(&[(0x100, 3)]));
    }
    push_wal(&c);
    let (full, _) = take_kind(&c, r, "f", "full", None, "0/2000000", 10);
    let before = tree(r);
    // One block of 30003 changes, as the summaries say; 20005 changes too
    // without them saying so (never in PostgreSQL): it is not read.
    write(r, "base/5/30003", &pages(&[(0x3000000, 9)]));
    write(r, "base/5/20005", &pages(&[(0x100, 7), (0x100, 7)]));
    let fork = |n: u32| RelFork {
        tablespace: increment::DEFAULTTABLESPACE_OID,
        database: 5,
        relfilenode: n,
        fork: 0,
    };
    let changes = |blocks: Vec<u32>| ForkChanges {
        limit: None,
        blocks,
    };
    SUMMARY.with(|s| *s.borrow_mut() = Some([(fork(30_003), changes(vec![0]))].into()));
    let (inc, m) = take_kind(&c, r, "i", "incremental", Some(&full), "0/3000000", 20);
    let root = root_of(&c, "i");
    let untouched = seg(&root, "rel:base/5:19");
    assert!(
        untouched.unchanged && untouched.owner == "f",
        "{untouched:?}"
    );
    assert_eq!(
        untouched,
        &SegmentRef {
            unchanged: true,
            ..seg(&root_of(&c, "f"), "rel:base/5:19").clone()
        }
    );
    let changed = seg(&root, "rel:base/5:29");
    assert!(!changed.unchanged && changed.owner == "i", "{changed:?}");
    let stored: Vec<&str> = m
        .files
        .iter()
        .filter(|f| !f.key.is_empty() && increment::is_block_file(&f.path))
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(stored, vec!["base/5/30003"]);
    let mut expected = tree(r);
    expected.insert("base/5/20005".into(), before["base/5/20005"].clone());
    for (name, id) in [("incremental", "i")] {
        let out = tempfile::tempdir().unwrap();
        restore_backup(&c, id, &out.path().join("r")).unwrap();
        let got = tree(&out.path().join("r"));
        let walked = walk(r).unwrap().files;
        assert!(walked.len() > 20);
        for f in walked {
            assert!(
                got.get(&f.path) == expected.get(&f.path),
                "{name}: {}",
                f.path
            );
        }
        assert_eq!(verify_backup(&c, id).unwrap(), vec![]);
    }
    // Nothing changed since: every relation segment refers to the one
    // that lists its files, whoever wrote it.
    SUMMARY.with(|s| *s.borrow_mut() = Some(Default::default()));
    take_kind(&c, r, "j", "incremental", Some(&inc), "0/3000100", 30);
    SUMMARY.with(|s| *s.borrow_mut() = None);
    let root = root_of(&c, "j");
    assert_eq!(seg(&root, "rel:base/5:19").owner, "f");
    assert_eq!(seg(&root, "rel:base/5:29").owner, "i");
    assert!(root
        .segments
        .iter()
        .filter(|s| s.id.starts_with("rel:"))
        .all(|s| s.unchanged));
    assert_restores(
        &c,
        "j",
        &[
            ("base/5/30003", expected["base/5/30003"].clone()),
            ("base/5/20005", before["base/5/20005"].clone()),
            ("base/5/20001", expected["base/5/20001"].clone()),
        ],
        &[],
    );
    assert_eq!(verify_backup(&c, "j").unwrap(), vec![]);
}

/// The parent's choice reads its root, never its segments: a parent
/// whose pack is damaged is still chosen (only its restore, and the
/// incremental's reading of a changed segment, would find out). A parent
/// whose pack is gone is not: a full is taken, naming the pack. And a
/// backup that refers to a pack that is gone is never recorded complete.
#[test]
fn the_parent_choice_reads_the_root_only_and_missing_packs_are_caught() {
    let (_d, c) = cluster();
    let src = pgdata();
    let (f1, m1) = take_kind(&c, src.path(), "f1", "full", None, "0/2000028", 100);
    push_wal(&c);
    let prefix = backup_prefix(&c, "f1");
    let packs = c
        .storage()
        .list(&format!("{prefix}/{SEGMENT_DIR}/"))
        .unwrap();
    assert_eq!(packs.len(), 1, "a small manifest is one pack: {packs:?}");
    let pack = packs[0].key.clone();
    let mut damaged = c.storage().get(&pack).unwrap();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x40;
    c.storage().delete(&pack).unwrap();
    c.storage().put(&pack, &damaged, PutMode::Create).unwrap();
    let decide_now = || {
        decide(
            &c,
            BackupKind::Incremental,
            Started {
                start_wal: "000000010000000000000004",
                timeline: 1,
                checksums: false,
            },
            &Default::default(),
            src.path(),
            std::time::Duration::ZERO,
            &std::sync::atomic::AtomicBool::new(false),
            &|_| {},
        )
        .unwrap()
    };
    let d = decide_now();
    let (parent, basis) = d.parent.unwrap();
    assert_eq!(parent.backup_id, "f1");
    assert_eq!(basis.parent_root.as_ref().unwrap().backup_id, "f1");
    assert!(basis.parent_sizes.is_empty());
    let e = load_backup(&c, "f1").unwrap_err();
    assert!(e.to_string().contains(&pack), "{e}");

    c.storage().delete(&pack).unwrap();
    let d = decide_now();
    assert!(d.parent.is_none());
    let reason = d.fallback.unwrap();
    assert!(
        reason.contains("is incomplete") && reason.contains(&pack),
        "{reason}"
    );

    // A child that refers to f1's relation segment, finished after the
    // pack went: refused, naming it.
    let files = m1
        .files
        .iter()
        .filter(|f| segment_of(&f.path) == "rel:base/5:16")
        .map(|f| unchanged_entry(f.path.clone(), f.size))
        .collect();
    let child = Manifest {
        backup_id: "i1".into(),
        files,
        ..m1.clone()
    };
    let info = PhysicalBackupInfo {
        backup_id: "i1".into(),
        kind: BackupKind::Incremental,
        parent: Some("f1".into()),
        ..f1.clone()
    };
    let e = finish_backup(&c, &child, &info).unwrap_err();
    assert!(matches!(e, Error::BackupObjectsMissing { .. }), "{e}");
    assert!(e.to_string().contains(&pack), "{e}");
    assert!(list_backups(&c)
        .unwrap()
        .iter()
        .all(|b| b.backup_id != "i1"));
}

/// A segment that is damaged, lies elsewhere than its root says, holds
/// other files, or belongs to a backup that is no ancestor: each refused
/// with the object named, before anything is restored.
#[test]
fn a_damaged_or_misplaced_segment_is_refused_with_its_key() {
    let (_d, c) = cluster();
    let src = pgdata();
    take_kind(&c, src.path(), "a", "full", None, "0/2000028", 100);
    take_kind(&c, src.path(), "b", "full", None, "0/2000028", 200);
    let pack = format!("{}/{SEGMENT_DIR}/000000", backup_prefix(&c, "b"));
    let good = root_of(&c, "b");
    let refused = |what: &str, want: &str| {
        let out = tempfile::tempdir().unwrap();
        let e = restore_backup(&c, "b", &out.path().join("x")).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::BadMetadata { .. }), "{what}: {e:?}");
        assert!(text.contains(want), "{what}: {text}");
        assert!(!out.path().join("x").exists(), "{what}: nothing is written");
    };
    // A flipped byte in the pack.
    let original = c.storage().get(&pack).unwrap();
    let mut bad = original.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x40;
    c.storage().delete(&pack).unwrap();
    c.storage().put(&pack, &bad, PutMode::Create).unwrap();
    refused("a flipped byte", &pack);
    c.storage().delete(&pack).unwrap();
    c.storage().put(&pack, &original, PutMode::Create).unwrap();
    // The root places a segment elsewhere in its pack, or beyond it.
    let mut root = good.clone();
    root.segments[1].offset += 1;
    rewrite_root(&c, "b", &root);
    refused("a shifted offset", "BLAKE3");
    root = good.clone();
    root.segments[0].len = 1 << 40;
    rewrite_root(&c, "b", &root);
    refused("a segment beyond its pack", "beyond the end of its pack");
    // Two segments swapped in the root, with their digests.
    root = good.clone();
    let (x, y) = (root.segments[0].clone(), root.segments[1].clone());
    root.segments[0] = SegmentRef {
        id: x.id,
        ..y.clone()
    };
    root.segments[1] = SegmentRef { id: y.id, ..x };
    rewrite_root(&c, "b", &root);
    refused("a swapped segment", "the root expects");
    // A segment of backup a, which is no ancestor of b.
    root = good.clone();
    let theirs = seg(&root_of(&c, "a"), "rel:base/5:16").clone();
    let i = root
        .segments
        .iter()
        .position(|s| s.id == theirs.id)
        .unwrap();
    root.segments[i] = SegmentRef {
        unchanged: true,
        ..theirs
    };
    rewrite_root(&c, "b", &root);
    refused(
        "another backup's segment",
        "is marked unchanged, but its parent's is not",
    );
    // A segment owned by another backup but not marked unchanged.
    root.segments[i].unchanged = false;
    rewrite_root(&c, "b", &root);
    refused("an owned segment elsewhere", "owned by backup \"a\"");
    rewrite_root(&c, "b", &good);
    let out = tempfile::tempdir().unwrap();
    restore_backup(&c, "b", &out.path().join("x")).unwrap();
}

/// A parent written by pg_ark 0.1 (a format-1 manifest) takes a format-2
/// incremental: its lengths come from the whole list, and the chain
/// restores exactly.
#[test]
fn an_incremental_on_a_format_1_parent_restores_exactly() {
    let (_d, c) = cluster();
    let src = pgdata();
    let r = src.path();
    write(
        r,
        "base/5/16384",
        &pages(&[(0x100, 3), (0x100, 4), (0x100, 3)]),
    );
    let (full, m) = take_kind(&c, r, "f", "full", None, "0/2000000", 10);
    write_format_1(&c, "f", &m);
    assert!(matches!(load_stored(&c, "f").unwrap(), Some(Stored::V1(_))));
    write(
        r,
        "base/5/16384",
        &pages(&[(0x100, 3), (0x3000000, 5), (0x100, 3)]),
    );
    take_kind(&c, r, "i", "incremental", Some(&full), "0/3000000", 20);
    assert!(root_of(&c, "i").segments.iter().all(|s| !s.unchanged));
    assert_restores(
        &c,
        "i",
        &[("base/5/16384", fs::read(r.join("base/5/16384")).unwrap())],
        &[],
    );
}

/// pg_ark 0.1.0 stored visibility maps by block: a format-1 incremental
/// whose `_vm` entry is block-level (here: no block changed) still
/// restores, the map coming from its parent; a block-level entry for any
/// other kind of file is refused.
#[test]
fn a_format_1_incremental_with_a_block_level_visibility_map_restores() {
    let (_d, c) = cluster();
    let src = pgdata();
    let r = src.path();
    write(r, "base/5/16384_vm", &[9u8; 8192]);
    let (full, _) = take_kind(&c, r, "f", "full", None, "0/2000000", 10);
    let (_, m) = take_kind(&c, r, "i", "incremental", Some(&full), "0/3000000", 20);
    let as_0_1 = |m: &Manifest, path: &str| {
        let mut v1 = m.clone();
        let e = v1.files.iter_mut().find(|f| f.path == path).unwrap();
        *e = unchanged_entry(e.path.clone(), e.size);
        write_format_1(&c, "i", &v1);
    };
    as_0_1(&m, "base/5/16384_vm");
    assert_restores(&c, "i", &[("base/5/16384_vm", vec![9u8; 8192])], &[]);
    as_0_1(&m, "pg_xact/0000");
    let out = tempfile::tempdir().unwrap();
    let e = restore_backup(&c, "i", &out.path().join("x")).unwrap_err();
    assert!(
        e.to_string().contains("pg_xact/0000") && e.to_string().contains("block-level"),
        "{e}"
    );
}

/// A manifest that lists a path twice is refused: which entry would
/// rebuild it is not for a reader to guess.
#[test]
fn a_path_listed_twice_is_refused() {
    let (_d, c) = cluster();
    let src = pgdata();
    let m = take_kind(&c, src.path(), "f", "full", None, "0/2000000", 10).1;
    let mut twice = m.clone();
    twice.files.push(m.files[0].clone());
    write_format_1(&c, "f", &twice);
    let out = tempfile::tempdir().unwrap();
    let e = restore_backup(&c, "f", &out.path().join("x")).unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    assert!(e.to_string().contains(&m.files[0].path), "{e}");
    assert!(!out.path().join("x").exists());
}
