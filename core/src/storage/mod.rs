//! Storage: the one contract every repository backend keeps.
//!
//! A repository is a flat namespace of *objects* named by *keys*: relative,
//! `/`-separated paths such as `wal/000000010000000000000001.zst`. A key is
//! never empty, never starts or ends with `/`, and has no empty, `.` or `..`
//! component ([`validate_key`]). Backends (local file system, S3) implement
//! [`Storage`]; `conformance::run_all` checks a backend against every rule
//! below, and runs for each backend in the test suite.
//!
//! # The contract, method by method
//!
//! - **`get`**: the whole object. A missing object is
//!   [`StorageError::NotFound`], never an empty buffer.
//! - **`get_reader`**: the same bytes as `get`, as a stream, so a large
//!   object is never held whole in memory (local: the file; S3: the
//!   response body, chunk by chunk, each chunk within the operation
//!   timeout). A missing object is [`StorageError::NotFound`] from the call
//!   itself. A failure in the middle is an error of a `read` (the caller
//!   must throw away what it read).
//! - **`head`**: `Ok(None)` for a missing object (not an error), else its size.
//! - **`put`**: stores the whole object **durably and atomically**.
//!   - Durable: once `put` returns `Ok`, the object survives a crash or power
//!     loss (local: file fsync'd, renamed into place, directory fsync'd;
//!     S3: the upload is acknowledged and its checksum verified by the server).
//!   - Atomic: a reader sees no object (or the old one) or the complete new
//!     one, never a part. A failed `put` leaves no partial object under `key`.
//!   - [`PutMode::Create`] never overwrites: if `key` exists the call fails
//!     with [`StorageError::AlreadyExists`] and the stored object is untouched.
//!     [`PutMode::Overwrite`] replaces the object atomically.
//! - **`put_stream`**: stores the bytes `body` yields until end of file, with
//!   the same guarantees as `put`, and returns how many bytes were stored.
//!   - Durable and atomic exactly like `put`: the object becomes visible only
//!     once complete. The whole body is never held in memory (local: written
//!     to the temporary file as it arrives; S3: at most two parts of 8 MiB
//!     or more, see `s3.rs`).
//!   - A caller aborts by making `body.read()` fail (for example when the
//!     process producing the data failed or was cancelled): `put_stream`
//!     then fails with [`StorageError::Io`] carrying the reader's error, and
//!     nothing is left under `key` (with `Overwrite`, an existing object
//!     stays as it was), nor any temporary file or multipart upload. (Should
//!     that cleanup fail too, the error says so and names what is left.)
//!     `ErrorKind::Interrupted` is retried, not treated as a failure.
//!   - [`PutMode::Create`] refuses an existing key with `AlreadyExists`
//!     before reading anything, and checks again when the object is put in
//!     place, so an object created by someone else while the body streamed
//!     is never replaced: local storage by `link(2)`; S3 by a conditional
//!     request (`If-None-Match: *`), which AWS S3 and the s3s-fs test server
//!     honor. On an S3-compatible server that ignores it, only the check
//!     before reading protects: two writers racing on the same new key can
//!     then both succeed, the later one replacing the other (see `s3.rs`).
//!     The same holds for `put`.
//! - **`list`**: every object whose key starts with `prefix` (a plain string
//!   prefix, so `wal/0000` matches `wal/00000001…`), at any depth, sorted by
//!   key. A prefix that matches nothing gives an empty list. Temporary files
//!   of in-flight writes are never listed.
//! - **`delete`**: removes the object; deleting a missing object succeeds, so
//!   retention can be retried safely. An object that Object Lock still keeps
//!   is not removed: the call fails with [`StorageError::Retained`] and
//!   leaves the object as it was (S3 with an Object Lock set removes every
//!   version of the key, never adding a delete marker; see `s3.rs`).
//! - **No overwrites in use.** pg_ark itself writes every key once, with
//!   `Create`, and never renames (see `repo::layout`): `Overwrite` is part
//!   of the contract for tests that play an attacker or a damaged disk.
//!   `write_once::WriteOnce` enforces it around any backend in tests.
//! - **`retained_until`**: until when S3 Object Lock keeps an object
//!   (`None` without a lock). A `delete` before then fails with
//!   [`StorageError::Retained`]; callers check first and put the deletion
//!   off to a later run.
//! - **`remove_stale_temporaries`**: removes what writers that died in the
//!   middle of a write left under a prefix (local: `.ark-tmp.<pid>.*` files of
//!   processes that no longer exist), never an object nor a live writer's
//!   file. Backends without such leftovers return 0. (On S3 a crash can
//!   leave an incomplete multipart upload, which is invisible to `get` and
//!   `list`; a bucket lifecycle rule for incomplete uploads removes it.)
//!
//! Every method may fail with [`StorageError::Io`] (or a backend's own
//! variant) for anything else; such errors name the key and the location.
use std::fmt;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod local;
pub mod lock;
pub mod s3;
pub mod versioned;
#[cfg(any(test, feature = "conformance"))]
pub mod write_once;

/// How `put` treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with `AlreadyExists` if the key exists; never overwrite.
    Create,
    /// Replace an existing object atomically.
    Overwrite,
}

/// What `head` and `list` report of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object \"{key}\" not found in {location}")]
    NotFound { key: String, location: String },
    #[error("object \"{key}\" already exists in {location}")]
    AlreadyExists { key: String, location: String },
    #[error("invalid object key \"{key}\": {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("could not {op} \"{key}\" in {location}: {source}")]
    Io {
        op: &'static str,
        key: String,
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: {message}")]
    Backend { location: String, message: String },
    /// A failure that may pass if the same call is tried again: the server
    /// could not be reached, timed out, throttled the request or answered
    /// with a server error.
    #[error("{location}: {message}")]
    Unavailable { location: String, message: String },
    /// An encrypted repository's object that cannot be opened: damaged or
    /// changed, stored in the clear, or without the key it needs.
    #[error(transparent)]
    Encryption(Box<crate::crypto::CryptoError>),
    /// A delete that Object Lock refuses: a version of the object is
    /// retained until `until` (epoch seconds; `None` when the server did not
    /// say, or a legal hold keeps it). Nothing was removed. Trying again
    /// succeeds only after that date, so this is not transient.
    #[error("object \"{key}\" in {location} is retained by Object Lock{}", until_text(.until))]
    Retained {
        key: String,
        location: String,
        until: Option<i64>,
    },
    /// Object Lock is set, but the bucket cannot apply it: it has no Object
    /// Lock, its versioning is off, or its configuration could not be read.
    #[error("{location}: Object Lock is set, but bucket \"{bucket}\" {reason}")]
    ObjectLockUnavailable {
        location: String,
        bucket: String,
        reason: String,
    },
}

fn until_text(until: &Option<i64>) -> String {
    match until {
        Some(t) => format!(" until {}", lock::utc(*t)),
        None => String::new(),
    }
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// Whether Object Lock refused to delete it (see [`StorageError::Retained`]).
    pub fn is_retained(&self) -> bool {
        matches!(self, StorageError::Retained { .. })
    }

    /// Whether trying again may succeed (see [`StorageError::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. })
    }

    /// The storage error an `io::Error` of a storage reader carries (a
    /// stream that broke off), if it carries one.
    pub fn of_io(e: &std::io::Error) -> Option<&StorageError> {
        e.get_ref()?.downcast_ref::<StorageError>()
    }
}

/// The storage contract (see the module documentation for each rule).
pub trait Storage: Send + Sync {
    /// Where this storage is, for messages (`file:///var/lib/ark`, `s3://b/p`).
    fn location(&self) -> String;
    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError>;
    /// The object as a stream (see the contract); by default `get`'s bytes.
    fn get_reader<'a>(
        &'a self,
        key: &str,
    ) -> Result<Box<dyn std::io::Read + Send + 'a>, StorageError> {
        Ok(Box::new(std::io::Cursor::new(self.get(key)?)))
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError>;
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StorageError>;
    /// Store everything `body` yields until EOF; returns the bytes stored.
    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn std::io::Read,
        mode: PutMode,
    ) -> Result<u64, StorageError>;
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;
    fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Remove what writers that no longer exist left under `prefix` (a crash
    /// in the middle of a write): temporary files of dead processes. Never
    /// touches objects, nor the temporaries of a live writer. Returns how
    /// many were removed; a backend with nothing to clean returns 0.
    fn remove_stale_temporaries(&self, _prefix: &str) -> Result<usize, StorageError> {
        Ok(0)
    }
    /// Until when (epoch seconds) S3 Object Lock retains object `key`, so
    /// that it cannot be deleted before: `None` for a backend or object
    /// without a lock, or a missing object.
    fn retained_until(&self, _key: &str) -> Result<Option<i64>, StorageError> {
        Ok(None)
    }
    /// The Object Lock object `key` carries, as S3 reports it (mode and
    /// retain-until, epoch seconds), whatever this storage was opened to
    /// ask for: for `pg_ark info` and `verify`. `None` without one.
    fn lock_state(&self, _key: &str) -> Result<Option<(String, Option<i64>)>, StorageError> {
        Ok(None)
    }
    /// Whether missing object `key` was written here before and is hidden
    /// now (S3 with an Object Lock set: a version or delete marker is
    /// left), so that it must not be created again. `false` elsewhere.
    fn hidden(&self, _key: &str) -> Result<bool, StorageError> {
        Ok(false)
    }
    /// How long each object is locked from its upload (seconds), when this
    /// storage puts an Object Lock on what it stores; `None` otherwise.
    fn lock_period(&self) -> Option<i64> {
        None
    }
    /// Keep object `key` (the version pg_ark wrote: the first) locked
    /// until at least `until` (epoch seconds): a lock is only ever
    /// extended. Returns whether it was. `Ok(false)` without a lock.
    fn extend_lock(&self, _key: &str, _until: i64) -> Result<bool, StorageError> {
        Ok(false)
    }
}

/// When object `key` is still retained by Object Lock at `now` (epoch
/// seconds): its retain-until, for a deletion to wait for.
pub fn retained_after(
    storage: &dyn Storage,
    key: &str,
    now: i64,
) -> Result<Option<i64>, StorageError> {
    Ok(storage.retained_until(key)?.filter(|&t| t > now))
}

/// A shared storage is a storage.
impl<S: Storage + ?Sized> Storage for std::sync::Arc<S> {
    fn location(&self) -> String {
        (**self).location()
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        (**self).get(key)
    }
    fn get_reader<'a>(
        &'a self,
        key: &str,
    ) -> Result<Box<dyn std::io::Read + Send + 'a>, StorageError> {
        (**self).get_reader(key)
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        (**self).head(key)
    }
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StorageError> {
        (**self).put(key, data, mode)
    }
    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn std::io::Read,
        mode: PutMode,
    ) -> Result<u64, StorageError> {
        (**self).put_stream(key, body, mode)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        (**self).list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        (**self).delete(key)
    }
    fn remove_stale_temporaries(&self, prefix: &str) -> Result<usize, StorageError> {
        (**self).remove_stale_temporaries(prefix)
    }
    fn retained_until(&self, key: &str) -> Result<Option<i64>, StorageError> {
        (**self).retained_until(key)
    }
    fn lock_state(&self, key: &str) -> Result<Option<(String, Option<i64>)>, StorageError> {
        (**self).lock_state(key)
    }
    fn hidden(&self, key: &str) -> Result<bool, StorageError> {
        (**self).hidden(key)
    }
    fn lock_period(&self) -> Option<i64> {
        (**self).lock_period()
    }
    fn extend_lock(&self, key: &str, until: i64) -> Result<bool, StorageError> {
        (**self).extend_lock(key, until)
    }
}

impl fmt::Debug for dyn Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Storage({})", self.location())
    }
}

/// Open the storage a repository URL names; `s3` applies to S3 URLs.
pub fn open(url: &crate::RepoUrl, s3: &s3::S3Options) -> Result<Box<dyn Storage>, crate::Error> {
    match url {
        crate::RepoUrl::File { path } => Ok(Box::new(local::LocalStorage::open(path)?)),
        crate::RepoUrl::S3 { bucket, prefix } => {
            Ok(Box::new(s3::S3Storage::open(bucket, prefix, s3)?))
        }
    }
}

/// Which versions of a versioned bucket a reader sees (see [`versioned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadView {
    /// The current version of each key: what a plain reader sees.
    #[default]
    Current,
    /// The first version of each key, whatever was put over it or hid it.
    FirstVersions,
    /// The first version of each key, among versions stored up to this
    /// time (epoch seconds): keys first stored later are left out.
    AsOf(i64),
}

/// Delete `key` unless S3 Object Lock still retains it at `now` (never a
/// delete tried before its retain-until): `Ok(None)` once deleted,
/// `Ok(Some(until))` when it stays (the lock's end, when known).
pub fn delete_unless_retained(
    storage: &dyn Storage,
    key: &str,
    now: i64,
) -> Result<Option<Option<i64>>, StorageError> {
    if let Some(t) = retained_after(storage, key, now)? {
        return Ok(Some(Some(t)));
    }
    match storage.delete(key) {
        Ok(()) => Ok(None),
        Err(StorageError::Retained { until, .. }) => Ok(Some(until)),
        Err(e) => Err(e),
    }
}

/// A read-only view of the repository at `url` (see [`ReadView`]), and the
/// versioned reader under it that reports tampering (`None` for
/// [`ReadView::Current`]). Only a versioned S3 bucket keeps versions.
#[allow(clippy::type_complexity)]
pub fn open_view(
    url: &crate::RepoUrl,
    s3: &s3::S3Options,
    view: ReadView,
) -> Result<(Box<dyn Storage>, Option<std::sync::Arc<versioned::AsOf>>), crate::Error> {
    let as_of = match view {
        ReadView::Current => return Ok((open(url, s3)?, None)),
        ReadView::FirstVersions => None,
        ReadView::AsOf(t) => Some(t),
    };
    match url {
        crate::RepoUrl::File { .. } => Err(crate::Error::Unsupported {
            what: "reading first versions, or as of a time, needs a versioned S3 bucket: \
                   a local repository keeps no versions"
                .into(),
        }),
        crate::RepoUrl::S3 { bucket, prefix } => {
            let inner = std::sync::Arc::new(s3::S3Storage::open(bucket, prefix, s3)?);
            let view = std::sync::Arc::new(versioned::AsOf::new(inner, as_of));
            Ok((Box::new(std::sync::Arc::clone(&view)), Some(view)))
        }
    }
}

/// Warnings, in words, about the bucket of the repository at `url` for the
/// Object Lock `s3` asks for (see [`lock::lock_warnings`]): empty for a
/// local repository, or an S3 one without a lock set.
pub fn lock_warnings(
    url: &crate::RepoUrl,
    s3: &s3::S3Options,
    recovery_window_days: Option<u32>,
) -> Result<Vec<String>, crate::Error> {
    let (crate::RepoUrl::S3 { bucket, prefix }, Some(wanted)) = (url, s3.object_lock) else {
        return Ok(Vec::new());
    };
    let bucket = s3::S3Storage::open(bucket, prefix, s3)?.bucket_lock()?;
    Ok(lock::lock_warnings(
        &bucket,
        Some(&wanted),
        recovery_window_days,
    ))
}

/// What was done behind pg_ark's back to the repository at `url`, when it
/// is an S3 bucket written with an Object Lock set (else `None`): every
/// key's versions scanned for versions put over pg_ark's and delete
/// markers (see [`versioned`]), one line each.
pub fn find_tampering(
    url: &crate::RepoUrl,
    s3: &s3::S3Options,
) -> Result<Option<Vec<String>>, crate::Error> {
    if s3.object_lock.is_none() || !matches!(url, crate::RepoUrl::S3 { .. }) {
        return Ok(None);
    }
    let (_, view) = open_view(url, s3, ReadView::FirstVersions)?;
    let Some(view) = view else {
        return Ok(None);
    };
    Ok(Some(
        view.scan("")?.iter().map(ToString::to_string).collect(),
    ))
}

/// Check that `key` is a valid object key (see the module documentation).
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let bad = |reason| {
        Err(StorageError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("the key is empty");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return bad("a key may not start or end with \"/\"");
    }
    if key
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("a key may not have empty, \".\" or \"..\" components");
    }
    if key.bytes().any(|b| b == 0 || b == b'\\') {
        return bad("a key may not contain NUL or backslash");
    }
    Ok(())
}

/// Append to `buf` what `body` yields until `buf` holds `limit` bytes or
/// `body` is at EOF; `Interrupted` reads are retried. Returns the number of
/// bytes appended (0 only at EOF).
pub(crate) fn read_up_to(
    body: &mut dyn std::io::Read,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<usize> {
    use std::io::Read;
    let start = buf.len();
    let want = limit.saturating_sub(start);
    buf.reserve(want);
    // `read_to_end` retries `Interrupted` and reads straight into `buf`.
    body.take(want as u64).read_to_end(buf)?;
    Ok(buf.len() - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_repository_has_no_versions_to_read() {
        let url = crate::RepoUrl::parse("file:///var/lib/ark").unwrap();
        for view in [ReadView::FirstVersions, ReadView::AsOf(0)] {
            let e = open_view(&url, &s3::S3Options::default(), view)
                .err()
                .unwrap();
            assert!(e.to_string().contains("needs a versioned S3 bucket"), "{e}");
        }
        // Nor anything to scan or warn about.
        let s3 = s3::S3Options {
            object_lock: lock::ObjectLock::of_settings(Some(lock::LockMode::Compliance), 1, 0),
            ..s3::S3Options::default()
        };
        assert_eq!(find_tampering(&url, &s3).unwrap(), None);
        assert!(lock_warnings(&url, &s3, None).unwrap().is_empty());
    }

    #[test]
    fn keys() {
        assert!(validate_key("wal/0001").is_ok());
        assert!(validate_key("a").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/./b", "../a", "a\\b"] {
            assert!(validate_key(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
