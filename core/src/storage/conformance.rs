//! The conformance suite for the storage contract (see `storage/mod.rs`).
//!
//! Every backend runs `run_all` against a fresh, empty storage: the local
//! backend in the core's unit tests, S3 against a real S3-compatible server in
//! the integration tests. A backend that passes keeps every rule the rest of
//! pg_ark relies on. Each check panics with the rule it found broken.
use super::{PutMode, Storage, StorageError};

/// Run every check. `storage` must be empty.
pub fn run_all(storage: &dyn Storage) {
    assert!(
        storage.list("").expect("list an empty storage").is_empty(),
        "storage must start empty"
    );
    missing_objects(storage);
    put_get_round_trip(storage);
    create_never_overwrites(storage);
    overwrite_replaces(storage);
    list_is_prefix_based_sorted_and_deep(storage);
    delete_is_idempotent(storage);
    invalid_keys_are_refused(storage);
    empty_and_large_objects(storage);
}

fn missing_objects(s: &dyn Storage) {
    match s.get("conf/missing") {
        Err(StorageError::NotFound { key, .. }) => assert_eq!(key, "conf/missing"),
        other => panic!("get of a missing object must be NotFound, got {other:?}"),
    }
    assert_eq!(
        s.head("conf/missing").expect("head of a missing object"),
        None
    );
    assert!(s
        .list("conf/missing")
        .expect("list of a missing prefix")
        .is_empty());
}

fn put_get_round_trip(s: &dyn Storage) {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    s.put("conf/rt/object", &data, PutMode::Create)
        .expect("put");
    assert_eq!(s.get("conf/rt/object").expect("get"), data);
    let info = s
        .head("conf/rt/object")
        .expect("head")
        .expect("head of a stored object");
    assert_eq!(
        (info.key.as_str(), info.size),
        ("conf/rt/object", data.len() as u64)
    );
}

fn create_never_overwrites(s: &dyn Storage) {
    s.put("conf/create/x", b"first", PutMode::Create)
        .expect("first create");
    match s.put("conf/create/x", b"second", PutMode::Create) {
        Err(StorageError::AlreadyExists { key, .. }) => assert_eq!(key, "conf/create/x"),
        other => panic!("Create over an existing object must be AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        s.get("conf/create/x").expect("get"),
        b"first",
        "the stored object must be kept"
    );
}

fn overwrite_replaces(s: &dyn Storage) {
    s.put("conf/ow/x", b"old", PutMode::Overwrite)
        .expect("overwrite of a missing object creates it");
    s.put("conf/ow/x", b"new content", PutMode::Overwrite)
        .expect("overwrite");
    assert_eq!(s.get("conf/ow/x").expect("get"), b"new content");
    assert_eq!(s.head("conf/ow/x").expect("head").map(|i| i.size), Some(11));
}

fn list_is_prefix_based_sorted_and_deep(s: &dyn Storage) {
    for k in [
        "conf/ls/b/2",
        "conf/ls/a",
        "conf/ls/b/1",
        "conf/ls/c/d/e",
        "conf/lsx",
    ] {
        s.put(k, k.as_bytes(), PutMode::Create)
            .expect("put for list");
    }
    let keys = |p: &str| -> Vec<String> {
        s.list(p)
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect()
    };
    assert_eq!(
        keys("conf/ls/"),
        ["conf/ls/a", "conf/ls/b/1", "conf/ls/b/2", "conf/ls/c/d/e"]
    );
    assert_eq!(
        keys("conf/ls"),
        [
            "conf/ls/a",
            "conf/ls/b/1",
            "conf/ls/b/2",
            "conf/ls/c/d/e",
            "conf/lsx"
        ]
    );
    assert_eq!(keys("conf/ls/b"), ["conf/ls/b/1", "conf/ls/b/2"]);
    assert_eq!(keys("conf/ls/b/1"), ["conf/ls/b/1"]);
    let sized = s.list("conf/ls/a").expect("list");
    assert_eq!(sized[0].size, "conf/ls/a".len() as u64);
}

fn delete_is_idempotent(s: &dyn Storage) {
    s.put("conf/del/x", b"x", PutMode::Create).expect("put");
    s.delete("conf/del/x").expect("delete");
    assert_eq!(s.head("conf/del/x").expect("head"), None);
    assert!(s.get("conf/del/x").is_err_and(|e| e.is_not_found()));
    s.delete("conf/del/x")
        .expect("deleting a missing object succeeds");
    s.put("conf/del/x", b"again", PutMode::Create)
        .expect("a deleted key can be created again");
}

fn invalid_keys_are_refused(s: &dyn Storage) {
    for bad in ["", "/abs", "a//b", "../escape", "dir/"] {
        assert!(
            matches!(
                s.put(bad, b"x", PutMode::Create),
                Err(StorageError::InvalidKey { .. })
            ),
            "put of {bad:?} must be InvalidKey"
        );
        assert!(
            matches!(s.get(bad), Err(StorageError::InvalidKey { .. })),
            "get of {bad:?}"
        );
    }
}

fn empty_and_large_objects(s: &dyn Storage) {
    s.put("conf/empty", b"", PutMode::Create)
        .expect("put of an empty object");
    assert_eq!(s.get("conf/empty").expect("get"), b"");
    assert_eq!(s.head("conf/empty").expect("head").map(|i| i.size), Some(0));
    // A WAL segment's size: 16 MiB.
    let big: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    s.put("conf/big", &big, PutMode::Create)
        .expect("put of 16 MiB");
    assert!(s.get("conf/big").expect("get") == big, "16 MiB round trip");
}
