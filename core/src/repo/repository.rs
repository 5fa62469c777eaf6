//! A repository and the clusters in it.
//!
//! `Repository::open` reads (or, for a writer, creates) the descriptor
//! `pg_ark.repo` and refuses a format newer than this pg_ark. `cluster`
//! attaches to the entry of one system identifier, creating it on first use
//! and otherwise checking that it records the same system identifier and
//! PostgreSQL major: WAL of another cluster or another major is never mixed
//! in.
use super::compress::Compression;
use super::envelope;
use super::info;
use crate::storage::{PutMode, Storage, StorageError};
use crate::wal::SegmentSize;
use crate::{wal, Error};
use serde_json::{json, Value};
use std::sync::Arc;

/// The newest repository format this pg_ark reads. It writes format 1 for
/// a clear repository (which every pg_ark reads), and format 2 for an
/// encrypted one, so that a pg_ark that cannot decrypt refuses it whole.
pub const FORMAT_VERSION: u64 = 2;
const FORMAT_CLEAR: u64 = 1;
const FORMAT_ENCRYPTED: u64 = 2;
/// The descriptor's record of an encrypted repository's scheme.
const ENCRYPTION_SCHEME: &str = "age-x25519";
use super::layout::{self, DESCRIPTOR};
use crate::crypto::layer::{Compared, EncryptedStorage, Keys};

pub struct Repository {
    storage: Box<dyn Storage>,
    /// The encryption layer `storage` is, in an encrypted repository.
    encrypted: Option<Arc<EncryptedStorage>>,
}

/// The outcome of storing a WAL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Newly stored.
    Stored { stored_bytes: u64 },
    /// An identical copy was already there, verified: success, nothing written.
    AlreadyArchived,
    /// The stored copy, `damaged_key`, was damaged (it failed its
    /// checksum): it stays as it was found, and the offered file was stored
    /// beside it as `repair_key`, which readers use instead.
    Repaired {
        damaged_key: String,
        repair_key: String,
        reason: String,
        stored_bytes: u64,
    },
}

impl Repository {
    /// Open the repository in `storage`, without keys; with `create`,
    /// initialize an empty one (clear).
    pub fn open(storage: Box<dyn Storage>, create: bool) -> Result<Repository, Error> {
        Repository::open_with(storage, create, &Keys::default())
    }

    /// Open the repository in `storage` with `keys`; with `create`,
    /// initialize an empty one, encrypted when `keys` has recipients. An
    /// encrypted repository is read and written through the encryption
    /// layer; recipients given for a clear repository are refused (a
    /// repository is encrypted whole or not at all).
    pub fn open_with(
        storage: Box<dyn Storage>,
        create: bool,
        keys: &Keys,
    ) -> Result<Repository, Error> {
        let location = storage.location();
        let desc = match info::load(storage.as_ref(), DESCRIPTOR)? {
            Some(desc) => desc,
            // Hidden, not missing: never written again over tampering
            // (read once more first: another process may have just made it).
            None if storage.hidden(DESCRIPTOR)? => {
                match info::load(storage.as_ref(), DESCRIPTOR)? {
                    Some(desc) => desc,
                    None => {
                        return Err(Error::Tampered {
                            location,
                            key: DESCRIPTOR.into(),
                            what: "is hidden behind a delete marker".into(),
                        })
                    }
                }
            }
            None if create => {
                let mut desc = json!({
                    "format": FORMAT_CLEAR,
                    "created_by": format!("pg_ark {}", crate::VERSION),
                });
                if let Some(r) = &keys.recipients {
                    desc["format"] = json!(FORMAT_ENCRYPTED);
                    desc["encryption"] = json!({
                        "scheme": ENCRYPTION_SCHEME,
                        "recipients_at_creation": r.fingerprints(),
                    });
                }
                match info::save(storage.as_ref(), DESCRIPTOR, &desc) {
                    Ok(()) => desc,
                    // Another process initialized it first: use theirs.
                    Err(info::InfoError::Storage(StorageError::AlreadyExists { .. })) => {
                        info::load(storage.as_ref(), DESCRIPTOR)?.unwrap_or(desc)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                return Err(Error::BadMetadata {
                    location,
                    key: DESCRIPTOR.into(),
                    reason: "missing: this is not a pg_ark repository".into(),
                })
            }
        };
        check_format(&location, &desc)?;
        match desc.get("encryption") {
            // A writer's recipients, or an identity (whose holder expects
            // an encrypted repository: a descriptor stripped of its
            // encryption must not pass clear objects off as its data),
            // for a clear repository. A reader's recipients are unused.
            None if keys.identities.is_some() => Err(Error::EncryptionMismatch {
                location,
                given: "an identity was given to decrypt it",
            }),
            None if keys.recipients.is_some() && create => Err(Error::EncryptionMismatch {
                location,
                given: "encryption recipients are set",
            }),
            None => Ok(Repository {
                storage,
                encrypted: None,
            }),
            Some(e) => {
                let scheme = e.get("scheme").and_then(Value::as_str);
                if scheme != Some(ENCRYPTION_SCHEME) {
                    return Err(Error::BadMetadata {
                        location,
                        key: DESCRIPTOR.into(),
                        reason: format!("unknown encryption scheme {scheme:?}"),
                    });
                }
                let layer = Arc::new(EncryptedStorage::new(storage, keys.clone()));
                Ok(Repository {
                    storage: Box::new(layer.clone()),
                    encrypted: Some(layer),
                })
            }
        }
    }

    /// The encryption layer of an encrypted repository.
    pub fn encryption(&self) -> Option<&EncryptedStorage> {
        self.encrypted.as_deref()
    }

    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    pub fn location(&self) -> String {
        self.storage.location()
    }

    /// Attach to the entry of cluster `system_identifier`, as a reader or a
    /// tool: the entry's WAL segment size is the one it records. With
    /// `create`, a missing entry is created recording PostgreSQL's default
    /// segment size (tests and tools that write no WAL); a server attaches
    /// with [`Repository::attach`], which records and checks its own size.
    pub fn cluster(
        self: &Arc<Self>,
        system_identifier: u64,
        pg_major: u32,
        create: bool,
    ) -> Result<ClusterRepo, Error> {
        let create = create.then_some(SegmentSize::DEFAULT);
        self.entry(system_identifier, pg_major, create)
    }

    /// Attach a running server to its entry, creating it on first use: the
    /// entry must record the server's system identifier, major and WAL
    /// segment size (an entry that records no size holds 16 MiB segments).
    pub fn attach(
        self: &Arc<Self>,
        system_identifier: u64,
        pg_major: u32,
        segment_size: SegmentSize,
    ) -> Result<ClusterRepo, Error> {
        let c = self.entry(system_identifier, pg_major, Some(segment_size))?;
        c.expect_segment_size(segment_size)?;
        Ok(c)
    }

    fn entry(
        self: &Arc<Self>,
        system_identifier: u64,
        pg_major: u32,
        create: Option<SegmentSize>,
    ) -> Result<ClusterRepo, Error> {
        let mut c = ClusterRepo {
            repo: Arc::clone(self),
            system_identifier,
            pg_major,
            segment_size: SegmentSize::DEFAULT,
            segment_size_by_default: true,
        };
        let key = c.key(layout::CLUSTER_INFO);
        let recorded = match info::load(self.storage(), &key)? {
            Some(v) => v,
            None if self.storage().hidden(&key)? => match info::load(self.storage(), &key)? {
                Some(v) => v,
                None => {
                    return Err(Error::Tampered {
                        location: self.location(),
                        key,
                        what: "is hidden behind a delete marker".into(),
                    })
                }
            },
            None => match create {
                Some(size) => {
                    let v = json!({
                        "system_identifier": system_identifier.to_string(),
                        "pg_major": pg_major,
                        "wal_segment_size": size.bytes(),
                        "created_by": format!("pg_ark {}", crate::VERSION),
                    });
                    match info::save(self.storage(), &key, &v) {
                        Ok(()) => v,
                        Err(info::InfoError::Storage(StorageError::AlreadyExists { .. })) => {
                            info::load(self.storage(), &key)?.unwrap_or(v)
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                None => {
                    return Err(Error::BadMetadata {
                        location: self.location(),
                        key,
                        reason: format!(
                            "missing: the repository has no cluster {system_identifier}"
                        ),
                    })
                }
            },
        };
        c.check_identity(&recorded)?;
        let (size, by_default) = match recorded.get("wal_segment_size") {
            // Written before pg_ark recorded the size: 16 MiB segments.
            None => (SegmentSize::DEFAULT, true),
            Some(v) => (
                v.as_u64()
                    .ok_or(())
                    .and_then(|b| SegmentSize::new(b).map_err(drop))
                    .map_err(|()| Error::BadMetadata {
                        location: self.location(),
                        key: key.clone(),
                        reason: format!("its wal_segment_size {v} is not a WAL segment size"),
                    })?,
                false,
            ),
        };
        c.segment_size = size;
        c.segment_size_by_default = by_default;
        Ok(c)
    }
}

impl Repository {
    /// Every cluster entry in the repository, by system identifier (each
    /// checked against its `cluster.info`).
    pub fn clusters(self: &Arc<Self>) -> Result<Vec<ClusterRepo>, Error> {
        let mut out = Vec::new();
        for o in self.storage().list(layout::CLUSTERS)? {
            let Some(sysid) = layout::cluster_of_info(&o.key) else {
                continue;
            };
            let key = layout::cluster_info(sysid);
            let Some(v) = info::load(self.storage(), &key)? else {
                continue;
            };
            let major = v
                .get("pg_major")
                .and_then(Value::as_u64)
                .and_then(|m| u32::try_from(m).ok())
                .ok_or_else(|| Error::BadMetadata {
                    location: self.location(),
                    key: key.clone(),
                    reason: "it records no PostgreSQL major version".into(),
                })?;
            out.push(self.cluster(sysid, major, false)?);
        }
        out.sort_by_key(|c| c.system_identifier);
        Ok(out)
    }
}

/// Refuse a descriptor of a format newer than this pg_ark reads.
fn check_format(location: &str, desc: &Value) -> Result<(), Error> {
    let found = desc
        .get("format")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::BadMetadata {
            location: location.to_string(),
            key: DESCRIPTOR.into(),
            reason: "no format version".into(),
        })?;
    if found > FORMAT_VERSION {
        return Err(Error::RepositoryTooNew {
            location: location.to_string(),
            found,
            supported: FORMAT_VERSION,
            created_by: desc
                .get("created_by")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    Ok(())
}

/// One cluster's entry in a repository.
#[derive(Clone)]
pub struct ClusterRepo {
    repo: Arc<Repository>,
    pub system_identifier: u64,
    pub pg_major: u32,
    segment_size: SegmentSize,
    /// The entry records no size (written before pg_ark recorded it).
    segment_size_by_default: bool,
}

impl ClusterRepo {
    /// The WAL segment size of this entry's cluster, as the entry records
    /// it: what every segment name, range and position in it is read with.
    pub fn segment_size(&self) -> SegmentSize {
        self.segment_size
    }

    /// Refuse a server whose `wal_segment_size` is not the entry's.
    pub fn expect_segment_size(&self, server: SegmentSize) -> Result<(), Error> {
        self.segment_size_is(server, "this cluster".into())
    }

    fn segment_size_is(&self, ours: SegmentSize, what: String) -> Result<(), Error> {
        if ours == self.segment_size {
            return Ok(());
        }
        Err(Error::SegmentSizeMismatch {
            location: self.repo.location(),
            recorded: self.segment_size,
            recorded_by_default: self.segment_size_by_default,
            what,
            ours,
        })
    }

    /// The key of `rest` inside this cluster's entry.
    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}{rest}", layout::cluster_entry(self.system_identifier))
    }

    /// The storage of the repository this entry is in.
    pub fn storage(&self) -> &dyn Storage {
        self.repo.storage()
    }

    /// Where the repository is, for messages.
    pub fn location(&self) -> String {
        self.repo.location()
    }

    /// The encryption layer, in an encrypted repository.
    pub fn encryption(&self) -> Option<&EncryptedStorage> {
        self.repo.encryption()
    }

    /// Remove temporary files that crashed writers left in this entry.
    pub fn remove_stale_temporaries(&self) -> Result<usize, Error> {
        Ok(self.storage().remove_stale_temporaries(&self.key(""))?)
    }

    fn check_identity(&self, recorded: &Value) -> Result<(), Error> {
        let mismatch = |what, repo_value: String, our_value: String| Error::ClusterMismatch {
            location: self.repo.location(),
            what,
            repo_value,
            our_value,
        };
        let sysid = recorded
            .get("system_identifier")
            .and_then(Value::as_str)
            .unwrap_or("(none)");
        if sysid != self.system_identifier.to_string() {
            return Err(mismatch(
                "system identifier",
                sysid.to_string(),
                self.system_identifier.to_string(),
            ));
        }
        let major = recorded
            .get("pg_major")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if major != u64::from(self.pg_major) {
            return Err(mismatch(
                "PostgreSQL major version",
                major.to_string(),
                self.pg_major.to_string(),
            ));
        }
        Ok(())
    }

    /// The key of WAL file `name`.
    pub fn wal_key(&self, name: &str) -> Result<String, Error> {
        Ok(self.key(&layout::wal_file(&wal::relative_key(name)?)))
    }

    /// Store WAL file `name` with content `data`, durably. An identical copy
    /// already stored is success, but only once its body has been read and
    /// verified: a damaged stored copy must never let PostgreSQL recycle the
    /// good segment. A damaged copy stays as it was found, and the offered
    /// file is stored beside it as `<key>.repair-<unix time>`
    /// (`PushOutcome::Repaired`), which [`ClusterRepo::get_wal`] reads; an
    /// intact copy of other content is refused and kept.
    pub fn push_wal(
        &self,
        name: &str,
        data: &[u8],
        compression: Compression,
        level: i32,
    ) -> Result<PushOutcome, Error> {
        let key = self.wal_key(name)?;
        let sealed = envelope::seal(data, compression, level).map_err(|e| Error::ReadFile {
            path: name.into(),
            source: e,
        })?;
        match self.repo.storage().put(&key, &sealed, PutMode::Create) {
            Ok(()) => Ok(PushOutcome::Stored {
                stored_bytes: sealed.len() as u64,
            }),
            Err(StorageError::AlreadyExists { .. }) => {
                self.compare_stored(name, &key, data, compression, level)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`ClusterRepo::push_wal`] of the file at `path`, streamed: the file
    /// is read once, hashed and compressed on its way into storage, with a
    /// bounded buffer (never a whole copy of the segment in memory). If the
    /// file changes length while it is read, nothing is stored. Only the
    /// rare "already there" case reads the whole file, to compare.
    pub fn push_wal_file(
        &self,
        name: &str,
        path: &std::path::Path,
        compression: Compression,
        level: i32,
    ) -> Result<PushOutcome, Error> {
        let key = self.wal_key(name)?;
        let read_err = |source| Error::ReadFile {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        let mut sealed =
            envelope::SealReader::new(file, len, compression, level).map_err(read_err)?;
        match self
            .repo
            .storage()
            .put_stream(&key, &mut sealed, PutMode::Create)
        {
            Ok(stored_bytes) => Ok(PushOutcome::Stored { stored_bytes }),
            Err(StorageError::AlreadyExists { .. }) => {
                let data = std::fs::read(path).map_err(read_err)?;
                self.compare_stored(name, &key, &data, compression, level)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `key` already holds an object: success if it is intact and holds
    /// `data`; an intact one of other content is a conflict. A damaged one
    /// stays as it is (nothing is ever overwritten): the first intact
    /// repair beside it answers instead, and without one the offered file
    /// is stored as a new repair.
    fn compare_stored(
        &self,
        name: &str,
        key: &str,
        data: &[u8],
        compression: Compression,
        level: i32,
    ) -> Result<PushOutcome, Error> {
        let first = match self.compare_one(name, key, data)? {
            Ok(outcome) => return Ok(outcome),
            Err(damage) => damage,
        };
        for repair in self.wal_repairs(key)? {
            if let Ok(outcome) = self.compare_one(name, &repair, data)? {
                return Ok(outcome);
            }
        }
        let sealed = envelope::seal(data, compression, level).map_err(|e| Error::ReadFile {
            path: name.into(),
            source: e,
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut repair_key = format!("{key}{}{now}", layout::WAL_REPAIR);
        let mut n = 1;
        loop {
            match self
                .repo
                .storage()
                .put(&repair_key, &sealed, PutMode::Create)
            {
                Ok(()) => break,
                Err(StorageError::AlreadyExists { .. }) => {
                    repair_key = format!("{key}{}{now}-{n}", layout::WAL_REPAIR);
                    n += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(PushOutcome::Repaired {
            damaged_key: key.to_string(),
            repair_key,
            reason: first,
            stored_bytes: sealed.len() as u64,
        })
    }

    /// Compare stored object `key` with `data`: the outcome when it is
    /// intact (the same, or an error for other content), else why it is
    /// damaged.
    fn compare_one(
        &self,
        name: &str,
        key: &str,
        data: &[u8],
    ) -> Result<Result<PushOutcome, String>, Error> {
        let content = envelope::DigestKind::Blake3.of(data);
        let conflict = |stored: String, kind: envelope::DigestKind| Error::WalConflict {
            name: name.into(),
            stored,
            offered: envelope::ContentDigest {
                kind,
                bytes: kind.of(data),
            }
            .to_string(),
        };
        // In an encrypted repository, the keyed digest tells without the
        // private key (see `crypto::layer`).
        let stored = match self.repo.encryption() {
            None => self.repo.storage().get(key)?,
            Some(enc) => match enc.compare(key, &content)? {
                Compared::Same => return Ok(Ok(PushOutcome::AlreadyArchived)),
                Compared::Differs => {
                    return Err(conflict(
                        "other content (its keyed digest differs)".into(),
                        envelope::DigestKind::Blake3,
                    ))
                }
                Compared::Damaged(reason) => return Ok(Err(reason)),
                Compared::Decrypted(obj) => obj,
            },
        };
        match envelope::open(&stored) {
            Ok((h, body)) if h.matches(data) && body == data => {
                Ok(Ok(PushOutcome::AlreadyArchived))
            }
            Ok((h, _)) => Err(conflict(h.digest.to_string(), h.digest.kind)),
            Err(damage) => Ok(Err(damage.to_string())),
        }
    }

    /// The repairs stored beside WAL object `key`, newest first.
    fn wal_repairs(&self, key: &str) -> Result<Vec<String>, Error> {
        let prefix = format!("{key}{}", layout::WAL_REPAIR);
        let mut keys: Vec<String> = self
            .repo
            .storage()
            .list(&prefix)?
            .into_iter()
            .map(|o| o.key)
            .collect();
        // `<time>`, then `<time>-<n>` for repairs in the same second.
        let order = |k: &String| -> (u64, u64) {
            let rest = k.strip_prefix(&prefix).unwrap_or_default();
            let (t, n) = rest.split_once('-').unwrap_or((rest, "0"));
            (t.parse().unwrap_or(0), n.parse().unwrap_or(0))
        };
        keys.sort_by_key(|k| std::cmp::Reverse(order(k)));
        Ok(keys)
    }

    /// Check WAL file `name` in the repository: `Ok(false)` if it is not
    /// there. It is read and verified as [`ClusterRepo::get_wal`] does,
    /// except in an encrypted repository opened without an identity (a
    /// server that writes with public keys only), where its stored bytes
    /// are checked against their digest.
    pub fn check_wal(&self, name: &str) -> Result<bool, Error> {
        let Some(enc) = self.encryption().filter(|e| !e.can_decrypt()) else {
            return Ok(self.get_wal(name)?.is_some());
        };
        let key = self.wal_key(name)?;
        if self.storage().head(&key)?.is_none() {
            return Ok(false);
        }
        let reason = match enc.check_stored(&key)? {
            Ok(_) => return Ok(true),
            Err(reason) => reason,
        };
        for repair in self.wal_repairs(&key)? {
            if enc.check_stored(&repair)?.is_ok() {
                return Ok(true);
            }
        }
        Err(
            StorageError::Encryption(Box::new(crate::crypto::CryptoError::Tampered {
                what: format!("WAL file \"{name}\""),
                reason,
            }))
            .into(),
        )
    }

    /// WAL object `key`, opened: `None` if it is missing, `Some(Err)` if it
    /// is damaged (its envelope, or its encryption, fails).
    fn open_wal_object(&self, key: &str) -> Result<Option<Result<Vec<u8>, Error>>, Error> {
        let obj = match self.repo.storage().get(key) {
            Ok(o) => o,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(StorageError::Encryption(c)) if !c.needs_a_key() => {
                return Ok(Some(Err(StorageError::Encryption(c).into())))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Some(envelope::open(&obj).map(|(_, data)| data).map_err(
            |source| Error::Corrupt {
                location: self.repo.location(),
                key: key.into(),
                source,
            },
        )))
    }

    /// Fetch WAL file `name`, verified: `Ok(None)` if it is not in the
    /// repository, an error if it is there but corrupt or foreign.
    /// A WAL file stored damaged is read from its newest intact repair.
    pub fn get_wal(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let key = self.wal_key(name)?;
        let data = match self.open_wal_object(&key)? {
            None => return Ok(None),
            Some(Ok(data)) => data,
            Some(Err(damage)) => {
                let mut repaired = None;
                for repair in self.wal_repairs(&key)? {
                    if let Some(Ok(data)) = self.open_wal_object(&repair)? {
                        repaired = Some(data);
                        break;
                    }
                }
                repaired.ok_or(damage)?
            }
        };
        if matches!(
            wal::classify(name)?,
            wal::WalKind::Segment | wal::WalKind::Partial
        ) {
            if let Some(found) = wal::segment_system_identifier(&data) {
                if found != self.system_identifier {
                    return Err(Error::ForeignWal {
                        name: name.into(),
                        expected: self.system_identifier,
                        found,
                    });
                }
            }
            // The page header's segment size, where it is one.
            if let Some(Ok(size)) = wal::segment_header_size(&data).map(SegmentSize::new) {
                self.segment_size_is(size, format!("its WAL file \"{name}\""))?;
            }
        }
        Ok(Some(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStorage;

    const SYSID: u64 = 7_312_345_678_901_234_567;

    fn segment(sysid: u64, fill: u8) -> Vec<u8> {
        let mut seg = vec![fill; 64 * 1024];
        seg[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        seg[24..32].copy_from_slice(&sysid.to_le_bytes());
        seg
    }

    fn repo(dir: &std::path::Path) -> Arc<Repository> {
        Arc::new(Repository::open(Box::new(LocalStorage::open(dir).unwrap()), true).unwrap())
    }

    #[test]
    fn push_then_get_round_trips_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let c = r.cluster(SYSID, 17, true).unwrap();
        let seg = segment(SYSID, 1);
        let name = "000000010000000000000003";
        assert!(matches!(
            c.push_wal(name, &seg, Compression::Zstd, 3).unwrap(),
            PushOutcome::Stored { .. }
        ));
        assert_eq!(
            c.push_wal(name, &seg, Compression::Lz4, 0).unwrap(),
            PushOutcome::AlreadyArchived
        );
        assert_eq!(c.get_wal(name).unwrap().unwrap(), seg);
        assert_eq!(c.get_wal("000000010000000000000004").unwrap(), None);
        assert_eq!(
            c.wal_key(name).unwrap(),
            format!("clusters/{SYSID}/wal/0000000100000000/{name}")
        );
    }

    #[test]
    fn a_conflicting_push_is_refused_and_the_original_kept() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let c = r.cluster(SYSID, 17, true).unwrap();
        let name = "000000010000000000000003";
        c.push_wal(name, &segment(SYSID, 1), Compression::Zstd, 0)
            .unwrap();
        let e = c
            .push_wal(name, &segment(SYSID, 2), Compression::Zstd, 0)
            .unwrap_err();
        assert!(matches!(e, Error::WalConflict { .. }), "{e}");
        assert!(e.to_string().starts_with(
            "WAL file \"000000010000000000000003\" is already archived with different content"
        ));
        assert_eq!(c.get_wal(name).unwrap().unwrap(), segment(SYSID, 1));
    }

    #[test]
    fn a_damaged_stored_copy_is_never_taken_as_archived() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let c = r.cluster(SYSID, 17, true).unwrap();
        let name = "000000010000000000000007";
        let seg = segment(SYSID, 4);
        c.push_wal(name, &seg, Compression::Zstd, 1).unwrap();
        // One flipped byte in the body: the header still records the
        // offered file's checksum, which alone used to pass as "identical".
        let key = c.wal_key(name).unwrap();
        let mut damaged = r.storage().get(&key).unwrap();
        let last = damaged.len() - 10;
        damaged[last] ^= 0x5a;
        r.storage().put(&key, &damaged, PutMode::Overwrite).unwrap();
        match c.push_wal(name, &seg, Compression::Zstd, 1).unwrap() {
            PushOutcome::Repaired {
                damaged_key,
                repair_key,
                reason,
                stored_bytes,
            } => {
                // Nothing is overwritten: the damaged object stays as
                // found, and the good copy is stored beside it.
                assert_eq!(damaged_key, key);
                assert_eq!(r.storage().get(&key).unwrap(), damaged);
                assert!(
                    repair_key.starts_with(&format!("{key}.repair-")),
                    "{repair_key}"
                );
                assert!(!reason.is_empty());
                assert_eq!(
                    stored_bytes,
                    r.storage().get(&repair_key).unwrap().len() as u64
                );
            }
            other => panic!("a damaged copy was taken as {other:?}"),
        }
        assert_eq!(c.get_wal(name).unwrap().unwrap(), seg);
        // With its repair: identical again, and nothing more is stored.
        assert_eq!(
            c.push_wal(name, &seg, Compression::Zstd, 1).unwrap(),
            PushOutcome::AlreadyArchived
        );
        assert_eq!(r.storage().list(&format!("{key}.")).unwrap().len(), 1);
        // Other content is still a conflict, against the repair.
        let e = c
            .push_wal(name, &segment(SYSID, 5), Compression::Zstd, 1)
            .unwrap_err();
        assert!(matches!(e, Error::WalConflict { .. }), "{e}");
        // The repair damaged too: a second one; the newest intact is read.
        let first = r.storage().list(&format!("{key}.")).unwrap()[0].key.clone();
        let mut bad = r.storage().get(&first).unwrap();
        let at = bad.len() - 10;
        bad[at] ^= 0x5a;
        r.storage().put(&first, &bad, PutMode::Overwrite).unwrap();
        assert!(matches!(
            c.push_wal(name, &seg, Compression::Zstd, 1).unwrap(),
            PushOutcome::Repaired { .. }
        ));
        assert_eq!(r.storage().list(&format!("{key}.")).unwrap().len(), 2);
        assert_eq!(c.get_wal(name).unwrap().unwrap(), seg);
    }

    #[test]
    fn another_major_or_a_copied_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        r.cluster(SYSID, 17, true).unwrap();
        let e = r.cluster(SYSID, 18, true).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!("repository file://{} belongs to another cluster: it records PostgreSQL major version 17, this cluster has 18", dir.path().display())
        );
        assert!(e.hint().is_some());
        // An entry copied under another system identifier is refused too.
        let s = r.storage();
        for k in ["cluster.info", "cluster.info.copy"] {
            let v = s.get(&format!("clusters/{SYSID}/{k}")).unwrap();
            s.put(&format!("clusters/42/{k}"), &v, PutMode::Create)
                .unwrap();
        }
        let e = r.cluster(42, 17, true).err().unwrap();
        assert!(
            e.to_string().contains(&format!(
                "it records system identifier {SYSID}, this cluster has 42"
            )),
            "{e}"
        );
    }

    #[test]
    fn corrupt_and_foreign_files_fail_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let c = r.cluster(SYSID, 17, true).unwrap();
        let name = "000000010000000000000005";
        // a segment of another cluster stored under this cluster's name
        c.push_wal(name, &segment(99, 1), Compression::None, 0)
            .unwrap();
        assert!(matches!(
            c.get_wal(name),
            Err(Error::ForeignWal { found: 99, .. })
        ));
        // damage a stored object
        let key = c.wal_key("000000010000000000000006").unwrap();
        c.push_wal(
            "000000010000000000000006",
            &segment(SYSID, 3),
            Compression::None,
            0,
        )
        .unwrap();
        let mut obj = r.storage().get(&key).unwrap();
        obj[100] ^= 0xff;
        r.storage().put(&key, &obj, PutMode::Overwrite).unwrap();
        let e = c.get_wal("000000010000000000000006").unwrap_err();
        assert!(
            e.to_string().contains("is corrupt: checksum mismatch"),
            "{e}"
        );
    }

    fn age_keys() -> (Keys, Keys) {
        use age::secrecy::ExposeSecret;
        let i = age::x25519::Identity::generate();
        let writer = Keys {
            recipients: Some(crate::crypto::Recipients::parse(&i.to_public().to_string()).unwrap()),
            identities: None,
            digest_key: Some([3; 32]),
            server_key: None,
        };
        let reader = Keys {
            recipients: None,
            identities: Some(Arc::new(
                crate::crypto::Identities::parse(i.to_string().expose_secret().as_bytes(), None)
                    .unwrap(),
            )),
            digest_key: None,
            server_key: None,
        };
        (writer, reader)
    }

    #[test]
    fn an_encrypted_repository_archives_idempotently_without_the_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = age_keys();
        let open = |keys: &Keys, create| {
            Arc::new(
                Repository::open_with(
                    Box::new(LocalStorage::open(dir.path()).unwrap()),
                    create,
                    keys,
                )
                .unwrap(),
            )
        };
        let w = open(&writer, true);
        assert!(w.encryption().is_some());
        let c = w.cluster(SYSID, 17, true).unwrap();
        let name = "000000010000000000000003";
        let seg = segment(SYSID, 1);
        assert!(matches!(
            c.push_wal(name, &seg, Compression::Zstd, 3).unwrap(),
            PushOutcome::Stored { .. }
        ));
        // Again, with another compression: the same content.
        assert_eq!(
            c.push_wal(name, &seg, Compression::Lz4, 0).unwrap(),
            PushOutcome::AlreadyArchived
        );
        let e = c
            .push_wal(name, &segment(SYSID, 2), Compression::Zstd, 0)
            .unwrap_err();
        assert!(matches!(e, Error::WalConflict { .. }), "{e}");
        // The writer cannot read it back; a reader with the identity can.
        assert!(matches!(
            c.get_wal(name),
            Err(Error::Storage(StorageError::Encryption(_)))
        ));
        let r = open(&reader, false);
        let rc = r.cluster(SYSID, 17, false).unwrap();
        assert_eq!(rc.get_wal(name).unwrap().unwrap(), seg);
        // A damaged stored copy is kept aside as stored and replaced.
        let key = c.wal_key(name).unwrap();
        let raw = LocalStorage::open(dir.path()).unwrap();
        let mut damaged = raw.get(&key).unwrap();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x5a;
        raw.put(&key, &damaged, PutMode::Overwrite).unwrap();
        match c.push_wal(name, &seg, Compression::Zstd, 1).unwrap() {
            PushOutcome::Repaired { damaged_key, .. } => {
                assert_eq!(raw.get(&damaged_key).unwrap(), damaged)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rc.get_wal(name).unwrap().unwrap(), seg);
        // The descriptor records it; an older reader refuses the format.
        let desc = info::load(&raw, DESCRIPTOR).unwrap().unwrap();
        assert_eq!(desc["format"], 2);
        assert_eq!(desc["encryption"]["scheme"], "age-x25519");
    }

    #[test]
    fn a_repository_is_encrypted_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _) = age_keys();
        let clear = repo(dir.path());
        clear.cluster(SYSID, 17, true).unwrap();
        let e = Repository::open_with(
            Box::new(LocalStorage::open(dir.path()).unwrap()),
            true,
            &writer,
        )
        .err()
        .unwrap();
        assert!(matches!(e, Error::EncryptionMismatch { .. }), "{e}");
        assert!(e.hint().unwrap().contains("new location"));
        // An encrypted repository opened without recipients cannot write.
        let dir2 = tempfile::tempdir().unwrap();
        Repository::open_with(
            Box::new(LocalStorage::open(dir2.path()).unwrap()),
            true,
            &writer,
        )
        .unwrap();
        let r = Arc::new(
            Repository::open(Box::new(LocalStorage::open(dir2.path()).unwrap()), true).unwrap(),
        );
        let c = r.cluster(SYSID, 17, true).unwrap();
        let e = c
            .push_wal(
                "000000010000000000000001",
                &segment(SYSID, 1),
                Compression::None,
                0,
            )
            .unwrap_err();
        assert!(e.to_string().contains("no recipients"), "{e}");
        assert!(e.hint().unwrap().contains("ark.encryption_recipients_file"));
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        info::save(
            &s,
            DESCRIPTOR,
            &json!({"format": 99, "created_by": "pg_ark 9.0.0"}),
        )
        .unwrap();
        let e = Repository::open(Box::new(s), true).err().unwrap();
        assert!(
            matches!(
                e,
                Error::RepositoryTooNew {
                    found: 99,
                    supported: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "repository file://{} has format version 99 (created by pg_ark 9.0.0), newer than pg_ark {} reads (up to 2)",
                dir.path().display(),
                crate::VERSION
            )
        );
        assert_eq!(
            e.primary(),
            format!(
                "repository file://{} has a newer format version",
                dir.path().display()
            )
        );
        assert_eq!(
            e.detail().unwrap(),
            format!(
                "The repository has format version 99, created by pg_ark 9.0.0; this pg_ark ({}) reads formats up to 2.",
                crate::VERSION
            )
        );
        let empty = tempfile::tempdir().unwrap();
        let e = Repository::open(Box::new(LocalStorage::open(empty.path()).unwrap()), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a pg_ark repository"), "{e}");
    }

    #[test]
    fn the_entry_records_its_segment_size_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        let mib = SegmentSize::new(1 << 20).unwrap();
        let c = r.attach(SYSID, 17, mib).unwrap();
        assert_eq!(c.segment_size(), mib);
        // Readers take the size from the entry.
        assert_eq!(r.cluster(SYSID, 17, false).unwrap().segment_size(), mib);
        assert_eq!(r.clusters().unwrap()[0].segment_size(), mib);
        r.attach(SYSID, 17, mib).unwrap();
        let e = r.attach(SYSID, 17, SegmentSize::DEFAULT).err().unwrap();
        assert!(matches!(e, Error::SegmentSizeMismatch { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "repository file://{} records WAL segments of 1MB, this cluster has 16MB",
                dir.path().display()
            )
        );
        assert!(e.hint().unwrap().contains("initdb --wal-segsize"));
        assert!(e.detail().unwrap().contains("wal_segment_size 1MB"));
        // A stored segment whose page header records another size.
        let mut seg = segment(SYSID, 0);
        seg[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        c.push_wal("000000010000000000000FFF", &seg, Compression::None, 0)
            .unwrap();
        let e = c.get_wal("000000010000000000000FFF").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("its WAL file \"000000010000000000000FFF\" has 16MB"),
            "{e}"
        );
    }

    #[test]
    fn an_entry_without_a_recorded_size_holds_16_mib_segments() {
        let dir = tempfile::tempdir().unwrap();
        let r = repo(dir.path());
        // cluster.info as pg_ark wrote it before it recorded the size.
        let v = json!({"system_identifier": SYSID.to_string(), "pg_major": 17});
        info::save(r.storage(), &format!("clusters/{SYSID}/cluster.info"), &v).unwrap();
        assert_eq!(
            r.cluster(SYSID, 17, false).unwrap().segment_size(),
            SegmentSize::DEFAULT
        );
        r.attach(SYSID, 17, SegmentSize::DEFAULT).unwrap();
        let e = r
            .attach(SYSID, 17, SegmentSize::new(64 << 20).unwrap())
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("records WAL segments of 16MB (the default of an entry written before pg_ark recorded the size), this cluster has 64MB"),
            "{e}"
        );
        // A recorded size that is none is damaged metadata.
        let dir2 = tempfile::tempdir().unwrap();
        let r2 = repo(dir2.path());
        let bad = json!({"system_identifier": SYSID.to_string(), "pg_major": 17, "wal_segment_size": 3000});
        info::save(
            r2.storage(),
            &format!("clusters/{SYSID}/cluster.info"),
            &bad,
        )
        .unwrap();
        assert!(matches!(
            r2.cluster(SYSID, 17, false),
            Err(Error::BadMetadata { .. })
        ));
    }
}
