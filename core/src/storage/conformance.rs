//! The conformance suite for the storage contract (see `storage/mod.rs`).
//!
//! Every backend runs `run_all` against a fresh, empty storage: the local
//! backend in the core's unit tests, S3 against a real S3-compatible server in
//! the integration tests. A backend that passes keeps every rule the rest of
//! pg_ark relies on. Each check panics with the rule it found broken.
//!
//! The `put_stream` checks stream bodies larger than S3's part size
//! (`s3::PART_SIZE`, 8 MiB), so the S3 run covers multipart uploads, their
//! abort when the body fails midway, and conditional completion.
use super::{PutMode, Storage, StorageError};
use std::io::{self, Read};

/// Run every check. `storage` must be empty.
pub fn run_all(storage: &dyn Storage) {
    assert!(
        storage.list("").expect("list an empty storage").is_empty(),
        "storage must start empty"
    );
    missing_objects(storage);
    put_get_round_trip(storage);
    get_reader_streams_the_same_bytes(storage);
    create_never_overwrites(storage);
    overwrite_replaces(storage);
    list_is_prefix_based_sorted_and_deep(storage);
    delete_is_idempotent(storage);
    invalid_keys_are_refused(storage);
    empty_and_large_objects(storage);
    put_stream_round_trips(storage);
    put_stream_failure_leaves_nothing(storage);
    put_stream_create_never_overwrites(storage);
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

fn get_reader_streams_the_same_bytes(s: &dyn Storage) {
    match s.get_reader("conf/missing") {
        Err(StorageError::NotFound { key, .. }) => assert_eq!(key, "conf/missing"),
        Err(e) => panic!("get_reader of a missing object must be NotFound, got {e:?}"),
        Ok(_) => panic!("get_reader of a missing object must be NotFound, got a stream"),
    }
    // Larger than one S3 response chunk and than the local reader's buffer.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    s.put("conf/reader/big", &data, PutMode::Create)
        .expect("put");
    let mut got = Vec::new();
    s.get_reader("conf/reader/big")
        .expect("get_reader")
        .read_to_end(&mut got)
        .expect("read the stream");
    assert!(
        got == data,
        "get_reader must yield exactly the stored bytes"
    );
    s.put("conf/reader/empty", b"", PutMode::Create)
        .expect("put");
    let mut got = Vec::new();
    s.get_reader("conf/reader/empty")
        .expect("get_reader of an empty object")
        .read_to_end(&mut got)
        .expect("read");
    assert!(got.is_empty());
    s.delete("conf/reader/big").expect("delete");
    s.delete("conf/reader/empty").expect("delete");
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

/// Deterministic, incompressible-looking test data.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// A reader that hands out `data` in uneven chunks of at most `chunk` bytes,
/// reports `Interrupted` once on the way (to be retried, not failed), and
/// fails with `fail_at`'s error once that many bytes were read, if set.
/// `on_offset` runs once when that many bytes have been read.
struct TestBody<'a> {
    data: &'a [u8],
    pos: usize,
    chunk: usize,
    interrupted: bool,
    fail_at: Option<usize>,
    on_offset: Option<(usize, Box<dyn FnOnce() + 'a>)>,
}

impl<'a> TestBody<'a> {
    fn new(data: &'a [u8]) -> Self {
        TestBody {
            data,
            pos: 0,
            chunk: 1_000_003,
            interrupted: false,
            fail_at: None,
            on_offset: None,
        }
    }
}

impl Read for TestBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.interrupted && self.pos > 0 {
            self.interrupted = true;
            return Err(io::Error::new(io::ErrorKind::Interrupted, "signal"));
        }
        if self
            .on_offset
            .as_ref()
            .is_some_and(|(at, _)| self.pos >= *at)
        {
            if let Some((_, f)) = self.on_offset.take() {
                f();
            }
        }
        if self.fail_at.is_some_and(|at| self.pos >= at) {
            return Err(io::Error::other("the producer failed"));
        }
        let mut end = (self.pos + self.chunk.min(buf.len())).min(self.data.len());
        if let Some(at) = self.fail_at {
            end = end.min(at);
        }
        let n = end - self.pos;
        buf[..n].copy_from_slice(&self.data[self.pos..end]);
        self.pos = end;
        Ok(n)
    }
}

/// Larger than one part of any backend (S3 uses 8 MiB parts), with a short
/// last part.
const STREAM_BIG: usize = 20 * 1024 * 1024 + 12_345;

fn put_stream_round_trips(s: &dyn Storage) {
    let small = pattern(100_000, 1);
    let n = s
        .put_stream(
            "conf/stream/small",
            &mut TestBody::new(&small),
            PutMode::Create,
        )
        .expect("put_stream of a small body");
    assert_eq!(n, small.len() as u64, "put_stream returns the bytes stored");
    assert_eq!(s.get("conf/stream/small").expect("get"), small);

    let n = s
        .put_stream("conf/stream/empty", &mut io::empty(), PutMode::Create)
        .expect("put_stream of an empty body");
    assert_eq!(n, 0);
    assert_eq!(s.get("conf/stream/empty").expect("get"), b"");

    let big = pattern(STREAM_BIG, 2);
    let n = s
        .put_stream("conf/stream/big", &mut TestBody::new(&big), PutMode::Create)
        .expect("put_stream of a body larger than a part");
    assert_eq!(n, big.len() as u64);
    assert_eq!(
        s.head("conf/stream/big").expect("head").map(|i| i.size),
        Some(big.len() as u64)
    );
    assert!(
        s.get("conf/stream/big").expect("get") == big,
        "a streamed multi-part body round-trips"
    );

    // Overwrite replaces: a large object by a small one, and a large one by
    // another large one. (Not checked: a small object replaced by a large
    // one. s3s-fs 0.14, the S3 test server, keeps the replaced PutObject's
    // SHA-256 for the new multipart object, so the SDK rejects its GET;
    // AWS S3 stores the new object's checksum.)
    let n = s
        .put_stream("conf/stream/big", &mut &small[..], PutMode::Overwrite)
        .expect("put_stream overwrite");
    assert_eq!(n, small.len() as u64);
    assert_eq!(s.get("conf/stream/big").expect("get"), small);
    let other = pattern(STREAM_BIG - 1_000_000, 5);
    s.put_stream("conf/stream/big2", &mut &big[..], PutMode::Overwrite)
        .expect("put_stream overwrite of a missing object creates it");
    let n = s
        .put_stream("conf/stream/big2", &mut &other[..], PutMode::Overwrite)
        .expect("put_stream overwrite with a large body");
    assert_eq!(n, other.len() as u64);
    assert!(s.get("conf/stream/big2").expect("get") == other);
}

fn put_stream_failure_leaves_nothing(s: &dyn Storage) {
    let big = pattern(STREAM_BIG, 3);
    // Failing early (within the first part) and late (after two full parts
    // were sent, so S3 has a multipart upload to abort).
    for (key, fail_at) in [
        ("conf/stream/fail/early", 5_000),
        ("conf/stream/fail/late", 17 * 1024 * 1024),
    ] {
        let mut body = TestBody::new(&big);
        body.fail_at = Some(fail_at);
        match s.put_stream(key, &mut body, PutMode::Create) {
            Err(StorageError::Io { source, .. }) => {
                assert_eq!(source.to_string(), "the producer failed")
            }
            other => panic!("a failing body must fail put_stream with Io, got {other:?}"),
        }
        assert_eq!(s.head(key).expect("head"), None, "nothing stored at {key}");
        assert!(s.get(key).is_err_and(|e| e.is_not_found()));
    }
    assert!(
        s.list("conf/stream/fail").expect("list").is_empty(),
        "a failed put_stream leaves nothing to list"
    );
    // A failed Overwrite keeps the previous object as it was.
    s.put("conf/stream/fail/kept", b"previous", PutMode::Create)
        .expect("put");
    let mut body = TestBody::new(&big);
    body.fail_at = Some(9 * 1024 * 1024);
    assert!(s
        .put_stream("conf/stream/fail/kept", &mut body, PutMode::Overwrite)
        .is_err());
    assert_eq!(s.get("conf/stream/fail/kept").expect("get"), b"previous");
    // The key stays usable.
    s.put_stream("conf/stream/fail/late", &mut &big[..], PutMode::Create)
        .expect("a key whose streaming failed can be created");
    assert!(s.get("conf/stream/fail/late").expect("get") == big);
}

fn put_stream_create_never_overwrites(s: &dyn Storage) {
    s.put("conf/stream/create/x", b"first", PutMode::Create)
        .expect("put");
    let big = pattern(STREAM_BIG, 4);
    let mut body = TestBody::new(&big);
    match s.put_stream("conf/stream/create/x", &mut body, PutMode::Create) {
        Err(StorageError::AlreadyExists { key, .. }) => assert_eq!(key, "conf/stream/create/x"),
        other => {
            panic!("put_stream Create over an existing object must be AlreadyExists, got {other:?}")
        }
    }
    assert_eq!(body.pos, 0, "Create refuses an existing key before reading");
    assert_eq!(s.get("conf/stream/create/x").expect("get"), b"first");

    // Someone else creates the key while the body streams: the object of
    // the other writer is kept, and the streamed one is not stored.
    for (key, len) in [
        ("conf/stream/create/race-small", 300_000),
        ("conf/stream/create/race-big", STREAM_BIG),
    ] {
        let mut body = TestBody::new(&big[..len]);
        body.on_offset = Some((
            len / 2,
            Box::new(move || {
                s.put(key, b"the other writer", PutMode::Create)
                    .expect("the racing writer creates the key");
            }),
        ));
        match s.put_stream(key, &mut body, PutMode::Create) {
            Err(StorageError::AlreadyExists { .. }) => {}
            other => panic!(
                "put_stream Create must not replace an object created meanwhile ({key}), got {other:?}"
            ),
        }
        assert_eq!(s.get(key).expect("get"), b"the other writer");
    }
}
