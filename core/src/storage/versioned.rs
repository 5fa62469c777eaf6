//! Reading a versioned bucket as it was: the defence against an attacker
//! who holds the repository's keys.
//!
//! With versioning and Object Lock, S3 lets anyone with write access hide an
//! object behind a delete marker or put a new version over it; it refuses
//! only to destroy a locked version. pg_ark never writes a key twice, so the
//! **first** version of every key is the genuine one, and anything newer,
//! or any delete marker, is tampering. [`AsOf`] is a read-only [`Storage`]
//! that reads, for each key, its first version that is not a delete marker,
//! and reports the rest ([`AsOf::tampering`]).
//!
//! An attacker can also *plant* keys pg_ark has not written yet (the next
//! WAL segment, a fake newer backup): such a key has one version, so it
//! looks genuine. Given a time before the compromise (`as_of`, seconds
//! since the epoch), the view ignores every version the server stamped
//! (`LastModified`, which the client cannot set) after it, and reports keys
//! first written after it as [`TamperKind::AfterAsOf`]. Without `as_of` a
//! planted key cannot be told from a genuine one.
//!
//! The view is only right for a repository written with an Object Lock set:
//! there, pg_ark removes objects by version id (no delete markers) and
//! never overwrites. On a bucket written without one, pg_ark's own deletes
//! leave delete markers, which this view reports, and its overwrites are
//! read as their first version.
//!
//! What the view saw: each `list(prefix)` lists the versions under that
//! prefix afresh (ListObjectVersions, as `list` lists objects) and records
//! the version chosen for each key and its tampering; `get`, `head` and
//! `get_reader` use the recorded choice, or list that one key's versions
//! first. So [`AsOf::tampering`] covers the keys listed or read so far;
//! [`AsOf::scan`] lists a whole prefix to cover it.
use super::s3::S3Storage;
use super::{validate_key, ObjectInfo, PutMode, Storage, StorageError};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};

/// One version (or delete marker) of an object in a versioned bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The key, relative to the storage's prefix (as `list` gives it).
    pub key: String,
    pub version_id: String,
    /// When the server stored it, in seconds since the epoch (S3 stamps
    /// whole seconds, so versions of one second tie).
    pub last_modified: i64,
    /// The current version (or marker) of the key.
    pub is_latest: bool,
    pub delete_marker: bool,
    /// The size in bytes (0 for a delete marker).
    pub size: u64,
}

/// A storage that keeps versions: what [`AsOf`] reads through. S3 storage
/// is one; a test can supply its own.
pub trait Versioned: Send + Sync {
    /// Where the storage is, for messages.
    fn location(&self) -> String;
    /// Every version and delete marker whose key starts with `prefix`,
    /// ordered by key, and within a key oldest first (see
    /// [`S3Storage::list_versions`]).
    fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, StorageError>;
    /// The versions of `key` alone, in the same order.
    fn key_versions(&self, key: &str) -> Result<Vec<ObjectVersion>, StorageError> {
        let mut all = self.list_versions(key)?;
        all.retain(|v| v.key == key);
        Ok(all)
    }
    /// One version's content; a missing version is NotFound.
    fn get_version(&self, key: &str, version_id: &str) -> Result<Vec<u8>, StorageError>;
    /// One version's content as a stream.
    fn get_reader_version<'a>(
        &'a self,
        key: &str,
        version_id: &str,
    ) -> Result<Box<dyn Read + Send + 'a>, StorageError> {
        Ok(Box::new(std::io::Cursor::new(
            self.get_version(key, version_id)?,
        )))
    }
}

impl Versioned for S3Storage {
    fn location(&self) -> String {
        Storage::location(self)
    }
    fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, StorageError> {
        S3Storage::list_versions(self, prefix)
    }
    fn key_versions(&self, key: &str) -> Result<Vec<ObjectVersion>, StorageError> {
        S3Storage::key_versions(self, key)
    }
    fn get_version(&self, key: &str, version_id: &str) -> Result<Vec<u8>, StorageError> {
        S3Storage::get_version(self, key, version_id)
    }
    fn get_reader_version<'a>(
        &'a self,
        key: &str,
        version_id: &str,
    ) -> Result<Box<dyn Read + Send + 'a>, StorageError> {
        S3Storage::get_reader_version(self, key, version_id)
    }
}

/// What was done to a key after pg_ark wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TamperKind {
    /// `count` versions were put over the one the view reads.
    NewerVersion { count: usize },
    /// `count` delete markers were put on the key; `hiding`: the newest
    /// entry is one of them, so a plain read finds no object.
    DeleteMarker { count: usize, hiding: bool },
    /// The key's first version was stored at `first_written`, after
    /// `as_of`: a key planted after the time, ignored by the view.
    AfterAsOf { first_written: i64, as_of: i64 },
    /// An object version was stored after a delete marker: someone planted
    /// the key before pg_ark wrote it and hid it (pg_ark's conditional
    /// write then succeeds), or put it back over a deletion. Which version
    /// is pg_ark's cannot be told, so the view reads none.
    Ambiguous,
}

/// Tampering found on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tamper {
    pub key: String,
    pub kind: TamperKind,
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = &self.key;
        match &self.kind {
            TamperKind::NewerVersion { count: 1 } => {
                write!(f, "{key}: a newer version was put over the first")
            }
            TamperKind::NewerVersion { count } => {
                write!(f, "{key}: {count} newer versions were put over the first")
            }
            TamperKind::DeleteMarker {
                count: 1,
                hiding: true,
            } => write!(f, "{key}: hidden behind a delete marker"),
            TamperKind::DeleteMarker {
                count,
                hiding: true,
            } => write!(f, "{key}: hidden behind a delete marker ({count} in all)"),
            TamperKind::DeleteMarker {
                count: 1,
                hiding: false,
            } => write!(f, "{key}: a delete marker was put over it"),
            TamperKind::DeleteMarker {
                count,
                hiding: false,
            } => write!(f, "{key}: {count} delete markers were put over it"),
            TamperKind::Ambiguous => write!(
                f,
                "{key}: a version was stored after a delete marker, so which one pg_ark wrote \
                 cannot be told: not read; read the repository --as-of a time before the tampering"
            ),
            TamperKind::AfterAsOf {
                first_written,
                as_of,
            } => write!(
                f,
                "{key}: first written at {}, after the as-of time {}: ignored",
                super::lock::utc(*first_written),
                super::lock::utc(*as_of)
            ),
        }
    }
}

/// The version the view reads for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub version_id: String,
    pub size: u64,
    pub last_modified: i64,
}

/// The view of a listing: the version read for each key, and the tampering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub chosen: BTreeMap<String, Chosen>,
    /// By key; per key in the order newer versions, delete markers.
    pub tampering: Vec<Tamper>,
}

/// The view of `versions` (per key oldest first, as `list_versions` gives
/// them): for each key, its first version that is not a delete marker and,
/// with `as_of`, was stored no later than `as_of`. A key with only delete
/// markers has nothing to read: left out, and reported. A key with an
/// object version after a delete marker (among those up to `as_of`) is
/// ambiguous: left out, and reported. Pure.
pub fn view(versions: &[ObjectVersion], as_of: Option<i64>) -> View {
    let mut by_key: BTreeMap<&str, Vec<&ObjectVersion>> = BTreeMap::new();
    for v in versions {
        by_key.entry(v.key.as_str()).or_default().push(v);
    }
    let mut out = View::default();
    for (key, entries) in by_key {
        let objects: Vec<&ObjectVersion> = entries
            .iter()
            .copied()
            .filter(|v| !v.delete_marker)
            .collect();
        let tamper = |kind| Tamper {
            key: key.to_string(),
            kind,
        };
        let Some(first) = objects.first() else {
            out.tampering.push(tamper(TamperKind::DeleteMarker {
                count: entries.len(),
                hiding: true,
            }));
            continue;
        };
        // Oldest first: an object version after a marker, up to `as_of`.
        let eligible = entries
            .iter()
            .filter(|v| as_of.is_none_or(|t| v.last_modified <= t));
        let mut marked = false;
        let ambiguous = eligible.into_iter().any(|v| {
            let after = marked && !v.delete_marker;
            marked |= v.delete_marker;
            after
        });
        if ambiguous {
            out.tampering.push(tamper(TamperKind::Ambiguous));
            continue;
        }
        let chosen = objects
            .iter()
            .position(|v| as_of.is_none_or(|t| v.last_modified <= t));
        let Some(at) = chosen else {
            if let Some(t) = as_of {
                out.tampering.push(tamper(TamperKind::AfterAsOf {
                    first_written: first.last_modified,
                    as_of: t,
                }));
            }
            continue;
        };
        let c = objects[at];
        out.chosen.insert(
            key.to_string(),
            Chosen {
                version_id: c.version_id.clone(),
                size: c.size,
                last_modified: c.last_modified,
            },
        );
        let newer = objects.len() - at - 1;
        if newer > 0 {
            out.tampering
                .push(tamper(TamperKind::NewerVersion { count: newer }));
        }
        let markers = entries.len() - objects.len();
        if markers > 0 {
            let hiding = entries
                .iter()
                .find(|v| v.is_latest)
                .or(entries.last())
                .is_some_and(|v| v.delete_marker);
            out.tampering.push(tamper(TamperKind::DeleteMarker {
                count: markers,
                hiding,
            }));
        }
    }
    out
}

/// A read-only view of a versioned storage as it was (see the module
/// documentation). `put`, `put_stream` and `delete` fail.
pub struct AsOf<V: Versioned + ?Sized = S3Storage> {
    inner: Arc<V>,
    as_of: Option<i64>,
    seen: Mutex<Seen>,
}

/// What the view recorded of the keys it listed or read.
#[derive(Default)]
struct Seen {
    chosen: HashMap<String, Chosen>,
    tampering: BTreeMap<String, Vec<TamperKind>>,
}

impl<V: Versioned + ?Sized> AsOf<V> {
    /// A view of `inner`: the first version of each key, ignoring versions
    /// stored after `as_of` (seconds since the epoch) when it is given.
    pub fn new(inner: Arc<V>, as_of: Option<i64>) -> AsOf<V> {
        AsOf {
            inner,
            as_of,
            seen: Mutex::new(Seen::default()),
        }
    }

    pub fn as_of(&self) -> Option<i64> {
        self.as_of
    }

    /// The tampering found on the keys listed or read so far, by key.
    pub fn tampering(&self) -> Vec<Tamper> {
        let seen = self.seen();
        seen.tampering
            .iter()
            .flat_map(|(key, kinds)| {
                kinds.iter().map(|kind| Tamper {
                    key: key.clone(),
                    kind: kind.clone(),
                })
            })
            .collect()
    }

    /// List every key under `prefix` through the view, and return the
    /// tampering found under it.
    pub fn scan(&self, prefix: &str) -> Result<Vec<Tamper>, StorageError> {
        self.list(prefix)?;
        let mut all = self.tampering();
        all.retain(|t| t.key.starts_with(prefix));
        Ok(all)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // The map stays consistent whatever a panicking holder did.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record the view of `versions`, which covers every key it names.
    fn record(&self, versions: &[ObjectVersion]) -> View {
        let v = view(versions, self.as_of);
        let mut seen = self.seen();
        for key in versions.iter().map(|v| &v.key) {
            seen.chosen.remove(key);
            seen.tampering.remove(key);
        }
        for (key, c) in &v.chosen {
            seen.chosen.insert(key.clone(), c.clone());
        }
        for t in &v.tampering {
            seen.tampering
                .entry(t.key.clone())
                .or_default()
                .push(t.kind.clone());
        }
        v
    }

    /// The version read for `key`: recorded, or found now.
    fn choice(&self, key: &str) -> Result<Option<Chosen>, StorageError> {
        validate_key(key)?;
        if let Some(c) = self.seen().chosen.get(key) {
            return Ok(Some(c.clone()));
        }
        let versions = self.inner.key_versions(key)?;
        Ok(self.record(&versions).chosen.remove(key))
    }

    fn not_found(&self, key: &str) -> StorageError {
        StorageError::NotFound {
            key: key.into(),
            location: self.inner.location(),
        }
    }

    fn read_only(&self, op: &str, key: &str) -> StorageError {
        let when = match self.as_of {
            Some(t) => format!(" as of {}", super::lock::utc(t)),
            None => String::new(),
        };
        StorageError::Backend {
            location: self.inner.location(),
            message: format!(
                "cannot {op} \"{key}\": this is a read-only view of the repository{when}, \
                 first versions only"
            ),
        }
    }
}

impl<V: Versioned + ?Sized> Storage for AsOf<V> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        match self.choice(key)? {
            Some(c) => self.inner.get_version(key, &c.version_id),
            None => Err(self.not_found(key)),
        }
    }

    fn get_reader<'a>(&'a self, key: &str) -> Result<Box<dyn Read + Send + 'a>, StorageError> {
        match self.choice(key)? {
            Some(c) => self.inner.get_reader_version(key, &c.version_id),
            None => Err(self.not_found(key)),
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        Ok(self.choice(key)?.map(|c| ObjectInfo {
            key: key.into(),
            size: c.size,
        }))
    }

    /// A key this view reads nothing of, but which has object versions
    /// (ambiguous): never taken for a missing one.
    fn hidden(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.choice(key)?.is_none()
            && self
                .inner
                .key_versions(key)?
                .iter()
                .any(|v| !v.delete_marker && self.as_of.is_none_or(|t| v.last_modified <= t)))
    }

    fn put(&self, key: &str, _data: &[u8], _mode: PutMode) -> Result<(), StorageError> {
        Err(self.read_only("store", key))
    }

    fn put_stream(
        &self,
        key: &str,
        _body: &mut dyn Read,
        _mode: PutMode,
    ) -> Result<u64, StorageError> {
        Err(self.read_only("store", key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let versions = self.inner.list_versions(prefix)?;
        Ok(self
            .record(&versions)
            .chosen
            .into_iter()
            .map(|(key, c)| ObjectInfo { key, size: c.size })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        Err(self.read_only("delete", key))
    }
}

#[cfg(test)]
mod tests;
