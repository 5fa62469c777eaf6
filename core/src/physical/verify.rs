//! Reading a backup back: its manifest and chain, and verification of
//! every object against the manifest and of the WAL it needs.
use super::*;

/// A problem [`verify_backup`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (relative path) or object concerned.
    pub file: String,
    pub reason: String,
}

/// Why an object of a backup could not be read.
#[derive(Debug)]
pub(crate) enum ObjectError {
    /// The repository could not be reached (the network, an S3 server's
    /// 5xx, a stream that broke off): no verdict on the object, and trying
    /// again may succeed.
    Unreachable(crate::storage::StorageError),
    /// The object is missing, damaged, or differs from the manifest.
    Bad(String),
}

impl std::fmt::Display for ObjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectError::Unreachable(e) => write!(f, "{e}"),
            ObjectError::Bad(reason) => f.write_str(reason),
        }
    }
}

impl From<String> for ObjectError {
    fn from(reason: String) -> ObjectError {
        ObjectError::Bad(reason)
    }
}

impl ObjectError {
    /// A storage error reading `key`: unreachable when transient.
    fn storage(key: &str, e: crate::storage::StorageError) -> ObjectError {
        if e.is_transient() {
            ObjectError::Unreachable(e)
        } else {
            ObjectError::Bad(format!("object \"{key}\": {e}"))
        }
    }

    /// A read error of `key`'s stream: unreachable when it carries a
    /// transient storage error, else damaged content.
    fn stream(key: &str, e: std::io::Error) -> ObjectError {
        match crate::storage::StorageError::of_io(&e) {
            Some(s) if s.is_transient() => {
                ObjectError::Unreachable(crate::storage::StorageError::Unavailable {
                    location: String::new(),
                    message: s.to_string(),
                })
            }
            _ => ObjectError::Bad(format!("object \"{key}\" is corrupt: {e}")),
        }
    }
}

/// Reads objects for a restore or a verification, keeping the last few
/// bundles opened (each is read and checked once, however many files it
/// holds).
pub(crate) struct Objects<'a> {
    cluster: &'a ClusterRepo,
    bundles: std::collections::VecDeque<(String, std::sync::Arc<Vec<u8>>)>,
    /// Stored bytes downloaded so far.
    pub(crate) fetched: u64,
    /// Time spent waiting on the repository for them (nanoseconds).
    pub(crate) fetch_nanos: u64,
}

impl<'a> Objects<'a> {
    pub(crate) fn new(cluster: &'a ClusterRepo) -> Objects<'a> {
        Objects {
            cluster,
            bundles: Default::default(),
            fetched: 0,
            fetch_nanos: 0,
        }
    }

    /// The content of object `key`, its envelope checked.
    fn open(&mut self, key: &str, keep: bool) -> Result<std::sync::Arc<Vec<u8>>, ObjectError> {
        if let Some((_, data)) = self.bundles.iter().find(|(k, _)| k == key) {
            return Ok(data.clone());
        }
        if !key.starts_with(&self.cluster.key(layout::BACKUP)) {
            return Err(format!("its object \"{key}\" lies outside the backup").into());
        }
        let began = std::time::Instant::now();
        let obj = self.cluster.storage().get(key);
        self.fetch_nanos += began.elapsed().as_nanos() as u64;
        let obj = obj.map_err(|e| ObjectError::storage(key, e))?;
        self.fetched += obj.len() as u64;
        let (_, data) =
            envelope::open(&obj).map_err(|e| format!("object \"{key}\" is corrupt: {e}"))?;
        let data = std::sync::Arc::new(data);
        if keep {
            if self.bundles.len() >= 8 {
                self.bundles.pop_front();
            }
            self.bundles.push_back((key.to_string(), data.clone()));
        }
        Ok(data)
    }

    /// Stream `f`'s own object (a whole file, not bundled, not block-level)
    /// into `out`, decompressed as it is read, checked against its envelope
    /// and the manifest (length and BLAKE3) at the end. On an error, what
    /// was written must be thrown away.
    pub(crate) fn stream_to(
        &mut self,
        f: &ManifestFile,
        out: &mut dyn Write,
    ) -> Result<(), ObjectError> {
        use std::io::Read;
        let key = &f.key;
        if !key.starts_with(&self.cluster.key(layout::BACKUP)) {
            return Err(format!("its object \"{key}\" lies outside the backup").into());
        }
        let fetched = std::sync::Arc::new(AtomicU64::new(0));
        let nanos = std::sync::Arc::new(AtomicU64::new(0));
        let began = std::time::Instant::now();
        let reader = self.cluster.storage().get_reader(key);
        self.fetch_nanos += began.elapsed().as_nanos() as u64;
        let reader = reader.map_err(|e| ObjectError::storage(key, e))?;
        let counted = Counted {
            inner: reader,
            n: fetched.clone(),
            nanos: nanos.clone(),
        };
        let mut stream = envelope::open_stream(Box::new(counted))
            .map_err(|e| ObjectError::Bad(format!("object \"{key}\" is corrupt: {e}")))?;
        // The envelope's own digest is BLAKE3 of the same content when it
        // was written by this pg_ark: then it is the manifest's, and the
        // content is hashed once.
        let hashing = !stream.is_blake3_stream();
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let result = loop {
            match stream.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if hashing {
                        hasher.update(&buf[..n]);
                    }
                    len += n as u64;
                    if let Err(e) = out.write_all(&buf[..n]) {
                        break Err(ObjectError::Bad(format!("could not write it: {e}")));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(ObjectError::stream(key, e)),
            }
        };
        self.fetched += fetched.load(Ordering::Relaxed);
        self.fetch_nanos += nanos.load(Ordering::Relaxed);
        result?;
        let digest = match stream.verified_digest() {
            Some(d) if !hashing && d.kind == DigestKind::Blake3 => envelope::hex(&d.bytes),
            _ if !hashing => {
                return Err(format!("object \"{key}\": its digest was not checked").into())
            }
            _ => hasher.finalize().to_hex().to_string(),
        };
        if len != f.payload_len() || digest != f.blake3 {
            return Err(format!(
                "content differs from the manifest ({len} bytes, BLAKE3 {digest}; manifest: {} bytes, {})",
                f.payload_len(),
                f.blake3
            )
            .into());
        }
        Ok(())
    }

    /// What `f`'s object holds for it, checked against the manifest
    /// (length and BLAKE3); a block-level entry without blocks holds
    /// nothing.
    pub(crate) fn read(&mut self, f: &ManifestFile) -> Result<Vec<u8>, ObjectError> {
        if f.blocks.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let whole = self.open(&f.key, f.offset.is_some())?;
        let data = match f.offset {
            None => &whole[..],
            Some(at) => {
                let range = usize::try_from(at)
                    .ok()
                    .and_then(|a| Some(a..a.checked_add(usize::try_from(f.payload_len()).ok()?)?))
                    .filter(|r| r.end <= whole.len())
                    .ok_or_else(|| {
                        format!(
                            "bundle \"{}\" holds {} bytes, not {} at offset {at}",
                            f.key,
                            whole.len(),
                            f.payload_len()
                        )
                    })?;
                &whole[range]
            }
        };
        let digest = envelope::hex(&DigestKind::Blake3.of(data));
        if data.len() as u64 != f.payload_len() || digest != f.blake3 {
            return Err(format!(
                "content differs from the manifest ({} bytes, BLAKE3 {digest}; manifest: {} bytes, {})",
                data.len(),
                f.payload_len(),
                f.blake3
            )
            .into());
        }
        Ok(data.to_vec())
    }
}

/// Counts the bytes read through it.
struct Counted<'a> {
    inner: Box<dyn std::io::Read + Send + 'a>,
    n: std::sync::Arc<AtomicU64>,
    /// Time spent in the inner reads (nanoseconds).
    nanos: std::sync::Arc<AtomicU64>,
}

impl std::io::Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let began = std::time::Instant::now();
        let n = self.inner.read(buf);
        self.nanos
            .fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let n = n?;
        self.n.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Backup `id`'s descriptor alone (readable without an identity in an
/// encrypted repository).
pub fn load_descriptor(cluster: &ClusterRepo, id: &str) -> Result<PhysicalBackupInfo, Error> {
    check_backup_id(id)?;
    let prefix = backup_prefix(cluster, id);
    load_versioned(cluster, &format!("{prefix}/{INFO_NAME}"))?.ok_or_else(|| Error::BadMetadata {
        location: cluster.location(),
        key: format!("{prefix}/{INFO_NAME}"),
        reason: format!("backup \"{id}\" has no {INFO_NAME}: it is not a complete backup"),
    })
}

/// The manifest and descriptor of complete backup `id`.
pub fn load_backup(
    cluster: &ClusterRepo,
    id: &str,
) -> Result<(PhysicalBackupInfo, Manifest), Error> {
    load_backup_segments(cluster, id).map(|(info, manifest, _)| (info, manifest))
}

/// [`load_backup`], with its manifest root's segments (none for format 1).
fn load_backup_segments(
    cluster: &ClusterRepo,
    id: &str,
) -> Result<(PhysicalBackupInfo, Manifest, Vec<SegmentRef>), Error> {
    check_backup_id(id)?;
    let prefix = backup_prefix(cluster, id);
    let missing = |what: &str| Error::BadMetadata {
        location: cluster.location(),
        key: format!("{prefix}/{what}"),
        reason: format!("backup \"{id}\" has no {what}: it is not a complete backup"),
    };
    let info: PhysicalBackupInfo = load_versioned(cluster, &format!("{prefix}/{INFO_NAME}"))?
        .ok_or_else(|| missing(INFO_NAME))?;
    let (manifest, owners) = load_manifest(cluster, id)?.ok_or_else(|| missing(MANIFEST_NAME))?;
    Ok((info, manifest, owners))
}

/// A backup and every backup its block-level entries rely on: `[0]` is the
/// backup itself, the last one is the chain's full.
pub struct Chain {
    /// Each manifest's files in [`path_order`], each path once.
    pub backups: Vec<(PhysicalBackupInfo, Manifest)>,
}

/// Load backup `id` and its ancestors, each complete.
pub fn load_chain(cluster: &ClusterRepo, id: &str) -> Result<Chain, Error> {
    let mut backups: Vec<(PhysicalBackupInfo, Manifest)> = Vec::new();
    let mut roots: Vec<Vec<SegmentRef>> = Vec::new();
    let mut next = Some(id.to_string());
    while let Some(id) = next {
        if backups.iter().any(|(i, _)| i.backup_id == id) || backups.len() > 10_000 {
            return Err(Error::BadMetadata {
                location: cluster.location(),
                key: format!("{}/{INFO_NAME}", backup_prefix(cluster, &id)),
                reason: format!("backup \"{id}\" is its own ancestor"),
            });
        }
        let (info, manifest, segments) = load_backup_segments(cluster, &id)?;
        next = info.parent.clone();
        backups.push((info, manifest));
        roots.push(segments);
    }
    // A segment marked unchanged is its parent's (and so, in turn, an
    // ancestor's).
    for (level, segments) in roots.iter().enumerate() {
        let parent = roots.get(level + 1).map_or(&[][..], Vec::as_slice);
        if let Err(reason) = check_unchanged(segments, parent) {
            let id = &backups[level].0.backup_id;
            return Err(Error::BadMetadata {
                location: cluster.location(),
                key: format!("{}/{MANIFEST_NAME}", backup_prefix(cluster, id)),
                reason,
            });
        }
    }
    // Sorted, so that a path is found by binary search (no index that
    // copies every path), and listed once.
    for (info, manifest) in &mut backups {
        manifest
            .files
            .sort_unstable_by(|a, b| path_order(&a.path, &b.path));
        if let Some(w) = manifest.files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(Error::BadMetadata {
                location: cluster.location(),
                key: format!(
                    "{}/{MANIFEST_NAME}",
                    backup_prefix(cluster, &info.backup_id)
                ),
                reason: format!("it lists \"{}\" twice", w[0].path),
            });
        }
    }
    Ok(Chain { backups })
}

impl Chain {
    pub fn info(&self) -> &PhysicalBackupInfo {
        &self.backups[0].0
    }

    pub fn manifest(&self) -> &Manifest {
        &self.backups[0].1
    }

    /// The entries that rebuild `path` of the backup: its own entry first,
    /// then the parent's, down to the one that holds the whole file. Each
    /// comes with the id of its backup.
    pub fn layers(&self, path: &str) -> Result<Vec<(&str, &ManifestFile)>, String> {
        let mut out = Vec::new();
        for (info, manifest) in &self.backups {
            let Ok(i) = manifest
                .files
                .binary_search_by(|f| path_order(&f.path, path))
            else {
                return Err(format!(
                    "backup \"{}\" has no entry for it, which backup \"{}\" relies on",
                    info.backup_id,
                    out.last()
                        .map(|(id, _): &(&str, &ManifestFile)| *id)
                        .unwrap_or("?")
                ));
            };
            let f = &manifest.files[i];
            if f.blocks.is_some() && !increment::may_be_block_level(&f.path) {
                return Err(format!(
                    "its entry in backup \"{}\" is block-level, which only a relation's main, init or visibility map fork may be",
                    info.backup_id
                ));
            }
            if let Some(blocks) = &f.blocks {
                let limit = f.size.div_ceil(BLOCK);
                if blocks.windows(2).any(|w| w[0] >= w[1])
                    || blocks.last().is_some_and(|&b| u64::from(b) >= limit)
                {
                    return Err(format!(
                        "the block list of its entry in backup \"{}\" is out of order or beyond its length",
                        info.backup_id
                    ));
                }
            }
            out.push((info.backup_id.as_str(), f));
            if f.blocks.is_none() {
                return Ok(out);
            }
        }
        Err("no backup of the chain holds the whole file".into())
    }
}

/// Re-read every object that a restore of backup `id` reads (its own and
/// those of the ancestors it relies on), check each against its manifest,
/// and check that the WAL from its start to its stop segment is in the
/// repository and intact. Returns every problem found (empty: the backup
/// verifies).
pub fn verify_backup(cluster: &ClusterRepo, id: &str) -> Result<Vec<Problem>, Error> {
    let chain = load_chain(cluster, id)?;
    let info = chain.info().clone();
    let mut problems = Vec::new();
    let mut checked = std::collections::HashSet::new();
    let mut objects = Objects::new(cluster);
    for f in &chain.manifest().files {
        let layers = match chain.layers(&f.path) {
            Ok(l) => l,
            Err(reason) => {
                problems.push(Problem {
                    file: f.path.clone(),
                    reason,
                });
                continue;
            }
        };
        for (backup, entry) in layers {
            if !checked.insert((backup, entry.path.as_str())) {
                continue;
            }
            let read = if entry.offset.is_none() && entry.blocks.is_none() {
                objects.stream_to(entry, &mut std::io::sink())
            } else {
                objects.read(entry).map(drop)
            };
            // The repository out of reach says nothing about the backup:
            // the verification fails, transient, with no verdict.
            if let Err(ObjectError::Unreachable(e)) = read {
                return Err(e.into());
            }
            if let Err(reason) = read {
                let reason = if backup == id {
                    reason.to_string()
                } else {
                    format!("in parent backup \"{backup}\": {reason}")
                };
                problems.push(Problem {
                    file: f.path.clone(),
                    reason,
                });
            }
        }
    }
    if info.wal_segment_size != cluster.segment_size() {
        problems.push(Problem {
            file: "backup.info".into(),
            reason: format!(
                "the backup records wal_segment_size {}, its repository entry {}",
                info.wal_segment_size,
                cluster.segment_size()
            ),
        });
    }
    for seg in cluster
        .segment_size()
        .range(&info.start_wal, &info.stop_wal)?
    {
        match cluster.get_wal(&seg) {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(Problem {
                file: format!("WAL {seg}"),
                reason: "the segment is not in the repository".into(),
            }),
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => problems.push(Problem {
                file: format!("WAL {seg}"),
                reason: e.to_string(),
            }),
        }
    }
    Ok(problems)
}

/// Verification of an encrypted repository without an identity: every
/// stored object of backup `id`, and the WAL from its start to its stop
/// segment, checked against the digest of its stored bytes, which needs no
/// key (see `crypto::layer`). What the objects hold, and whether one the
/// manifest names is missing, only [`verify_backup`] with an identity can
/// tell. `None` when the repository is not encrypted or an identity was
/// given (then use [`verify_backup`]).
pub fn verify_stored(cluster: &ClusterRepo, id: &str) -> Result<Option<Vec<Problem>>, Error> {
    let Some(enc) = cluster.encryption().filter(|e| !e.can_decrypt()) else {
        return Ok(None);
    };
    let info = load_descriptor(cluster, id)?;
    let mut problems = Vec::new();
    let check = |key: &str, file: String, problems: &mut Vec<Problem>| -> Result<(), Error> {
        match enc.check_stored(key) {
            Ok(Ok(_)) => {}
            Ok(Err(reason)) => problems.push(Problem { file, reason }),
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => problems.push(Problem {
                file,
                reason: e.to_string(),
            }),
        }
        Ok(())
    };
    let prefix = format!("{}/", backup_prefix(cluster, id));
    let objects = cluster.storage().list(&prefix)?;
    if !objects.iter().any(|o| o.key.ends_with("/manifest")) {
        problems.push(Problem {
            file: "manifest".into(),
            reason: "the backup has no manifest object".into(),
        });
    }
    for o in &objects {
        if layout::stored_in_clear(&o.key) {
            continue;
        }
        let file = o.key.strip_prefix(&prefix).unwrap_or(&o.key).to_string();
        check(&o.key, file, &mut problems)?;
    }
    for seg in cluster
        .segment_size()
        .range(&info.start_wal, &info.stop_wal)?
    {
        // A segment stored damaged counts as well as its intact repair.
        match cluster.check_wal(&seg) {
            Ok(true) => {}
            Ok(false) => problems.push(Problem {
                file: format!("WAL {seg}"),
                reason: "the segment is not in the repository".into(),
            }),
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => problems.push(Problem {
                file: format!("WAL {seg}"),
                reason: e.to_string(),
            }),
        }
    }
    Ok(Some(problems))
}

/// The segments from `first` to `last` (inclusive, one timeline) that are
/// not in the repository, found by listing (no segment is read).
pub fn missing_wal(cluster: &ClusterRepo, first: &str, last: &str) -> Result<Vec<String>, Error> {
    let wanted = cluster.segment_size().range(first, last)?;
    let mut present = std::collections::HashSet::new();
    let mut listed = std::collections::HashSet::new();
    for seg in &wanted {
        let group = &seg[..16];
        if listed.insert(group.to_string()) {
            let base = cluster.key(&layout::wal_group(group));
            for o in cluster.storage().list(&base)? {
                if let Some(name) = o.key.strip_prefix(&base) {
                    present.insert(name.to_string());
                }
            }
        }
    }
    Ok(wanted
        .into_iter()
        .filter(|s| !present.contains(s))
        .collect())
}
