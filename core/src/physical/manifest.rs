//! The manifest, format 2: a small root and write-once segments.
//!
//! ```text
//! clusters/<system id>/backup/<id>/manifest(.copy)        the root (checksummed pair)
//! clusters/<system id>/backup/<id>/manifest.d/<n:06>      segments (envelopes)
//! ```
//!
//! Every file path belongs to exactly one segment ([`segment_of`]):
//! - `rel:<dir>:<bucket>`: the main and init forks (every `.N` file) of
//!   the relfilenodes `bucket·1024 ..< (bucket+1)·1024` of database
//!   directory `<dir>` (`global`, `base/<db>`, `pg_tblspc/<spc>/<ver>/<db>`);
//! - `map:<dir>:<bucket>`: their free space and visibility map forks;
//! - `other:<dir>`: every other file of directory `<dir>`.
//!
//! Segments are JSON documents, packed in write order into objects
//! (`manifest.d/<n>`, up to [`PACK_FILES`] files each, so a small cluster's
//! manifest is one object), each sealed in the ordinary envelope (zstd,
//! the BLAKE3 of the content checked on every read). The root lists the
//! segments in id order, each with its owner (the backup whose folder
//! holds its pack), its place in the pack, the BLAKE3 of its own bytes, its
//! file count and its *shape*: the BLAKE3 of its files' paths and lengths.
//! Trust runs from the root's own SHA-256, to each segment's
//! BLAKE3, to each entry's BLAKE3, to each data object's own.
//!
//! **Unchanged segments are not rewritten.** When every file of a `rel:`
//! segment of an incremental or differential is unchanged since its
//! parent (a block-level entry that stores no block) and the segment's
//! shape is the parent's, the root refers to the object that lists the
//! parent's files, marked `unchanged`: each of its files reads as "the
//! parent's, whole". So a backup writes, and a parent's choice reads,
//! what changed, not every file. With WAL summaries (PostgreSQL 17+), such
//! a file is not even opened: its length from the walk equals the
//! parent's, and the summaries list no block of it.
//!
//! The segment rules ([`segment_of`], [`BUCKET`]) are part of format 2: a
//! reader refuses a file in another segment than they give.
//!
//! Objects are never replaced: a segment is put once, under a new name.
//! A referred segment lives in an ancestor's folder, which retention
//! keeps as long as this backup (chains are removed whole).
//!
//! Format 1 (one JSON document of every entry under `manifest`) is still
//! read, as one unsegmented list.
use super::*;
use crate::repo::envelope;

/// The manifest format this pg_ark writes (format 1 is still read).
pub const MANIFEST_VERSION: u32 = 2;
/// The folder of a backup's manifest segments.
pub const SEGMENT_DIR: &str = "manifest.d";
/// Relfilenodes per `rel:` and `map:` segment.
pub const BUCKET: u32 = 1024;
/// A pack of segments is cut once it holds this many files.
pub const PACK_FILES: u64 = 4096;

/// A manifest's root (format 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    pub format_version: u32,
    pub backup_id: String,
    pub dirs: Vec<String>,
    #[serde(default)]
    pub tablespaces: Vec<Tablespace>,
    #[serde(default)]
    pub databases: BTreeMap<String, String>,
    /// Files in every segment.
    pub files: u64,
    /// In id order.
    pub segments: Vec<SegmentRef>,
}

/// One segment, as the root records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    pub id: String,
    /// The backup whose folder holds the object: this one, or an ancestor
    /// when `unchanged`.
    pub owner: String,
    /// The number of its pack in the owner's `manifest.d/`.
    pub object: u32,
    /// Where it lies in the pack's content.
    pub offset: u64,
    pub len: u64,
    /// BLAKE3 of the segment's bytes (hex).
    pub blake3: String,
    pub files: u64,
    /// BLAKE3 of its files' names and lengths ([`shape`]).
    pub shape: String,
    /// The object lists the parent's files; each is the parent's, whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

#[derive(Serialize, Deserialize)]
struct Segment {
    format_version: u32,
    id: String,
    files: Vec<ManifestFile>,
}

/// The segment that holds `path` (see the module documentation).
pub fn segment_of(path: &str) -> String {
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    match increment::rel_fork(path) {
        Some((fork, _)) if increment::is_block_file(path) => {
            format!("rel:{dir}:{}", fork.relfilenode / BUCKET)
        }
        Some((fork, _)) if increment::is_relation_file(path) => {
            format!("map:{dir}:{}", fork.relfilenode / BUCKET)
        }
        _ => format!("other:{dir}"),
    }
}

/// The shape of a segment: the BLAKE3 of its files' paths and lengths, in
/// path order.
pub fn shape<'a>(files: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let mut files: Vec<(&str, u64)> = files.into_iter().collect();
    files.sort_unstable();
    let mut h = blake3::Hasher::new();
    for (path, size) in files {
        h.update(path.as_bytes());
        h.update(&[0]);
        h.update(&size.to_le_bytes());
    }
    envelope::hex(h.finalize().as_bytes())
}

/// The entry of a file that is its parent's, whole: a block-level entry
/// that stores no block.
pub fn unchanged_entry(path: String, size: u64) -> ManifestFile {
    ManifestFile {
        path,
        size,
        blake3: envelope::hex(blake3::hash(&[]).as_bytes()),
        key: String::new(),
        stored: 0,
        blocks: Some(Vec::new()),
        offset: None,
    }
}

fn is_unchanged(f: &ManifestFile) -> bool {
    f.key.is_empty() && f.blocks.as_ref().is_some_and(Vec::is_empty)
}

fn segment_key(cluster: &ClusterRepo, owner: &str, n: u32) -> String {
    format!("{}/{SEGMENT_DIR}/{n:06}", backup_prefix(cluster, owner))
}

/// Write `manifest`'s segments and root (format 2) under its backup's
/// folder. `parent`: the parent's root, whose segments an unchanged one
/// refers to. Returns the root.
pub fn save_manifest(
    cluster: &ClusterRepo,
    manifest: &Manifest,
    parent: Option<&Root>,
) -> Result<Root, Error> {
    let id = &manifest.backup_id;
    let mut by_segment: BTreeMap<String, Vec<&ManifestFile>> = BTreeMap::new();
    for f in &manifest.files {
        by_segment.entry(segment_of(&f.path)).or_default().push(f);
    }
    let parents: BTreeMap<&str, &SegmentRef> = parent
        .map(|p| p.segments.iter().map(|s| (s.id.as_str(), s)).collect())
        .unwrap_or_default();
    let mut segments = Vec::with_capacity(by_segment.len());
    let mut pack = Pack::default();
    for (seg, mut files) in by_segment {
        let shape = shape(files.iter().map(|f| (f.path.as_str(), f.size)));
        let inherited = parents.get(seg.as_str()).filter(|p| {
            seg.starts_with("rel:") && p.shape == shape && files.iter().all(|f| is_unchanged(f))
        });
        if let Some(p) = inherited {
            segments.push(SegmentRef {
                unchanged: true,
                ..(*p).clone()
            });
            continue;
        }
        files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        let doc = Segment {
            format_version: MANIFEST_VERSION,
            id: seg.clone(),
            files: files.iter().map(|f| (*f).clone()).collect(),
        };
        let offset = pack.content.len() as u64;
        serde_json::to_writer(&mut pack.content, &doc).map_err(|e| Error::BadMetadata {
            location: cluster.location(),
            key: segment_key(cluster, id, pack.number),
            reason: e.to_string(),
        })?;
        let bytes = &pack.content[offset as usize..];
        segments.push(SegmentRef {
            id: seg,
            owner: id.clone(),
            object: pack.number,
            offset,
            len: bytes.len() as u64,
            blake3: envelope::hex(blake3::hash(bytes).as_bytes()),
            files: files.len() as u64,
            shape,
            unchanged: false,
        });
        pack.files += files.len() as u64;
        if pack.files >= PACK_FILES {
            pack.put(cluster, id)?;
        }
    }
    if pack.files > 0 || !pack.content.is_empty() {
        pack.put(cluster, id)?;
    }
    let root = Root {
        format_version: MANIFEST_VERSION,
        backup_id: id.clone(),
        dirs: manifest.dirs.clone(),
        tablespaces: manifest.tablespaces.clone(),
        databases: manifest.databases.clone(),
        files: manifest.files.len() as u64,
        segments,
    };
    save_json(
        cluster,
        &format!("{}/{MANIFEST_NAME}", backup_prefix(cluster, id)),
        &root,
    )?;
    Ok(root)
}

/// Segments waiting to be put as one object.
#[derive(Default)]
struct Pack {
    number: u32,
    content: Vec<u8>,
    files: u64,
}

impl Pack {
    fn put(&mut self, cluster: &ClusterRepo, id: &str) -> Result<(), Error> {
        let key = segment_key(cluster, id, self.number);
        let sealed = envelope::seal(&self.content, Compression::Zstd, 3)
            .map_err(|e| io_err("compress", Path::new(&key), e))?;
        cluster.storage().put(&key, &sealed, PutMode::Create)?;
        self.number += 1;
        self.content.clear();
        self.files = 0;
        Ok(())
    }
}

/// A backup's manifest as stored: format 1 whole, or format 2's root.
pub enum Stored {
    V1(Manifest),
    V2(Root),
}

/// Load backup `id`'s manifest document (`None`: it has none), its format
/// version checked first.
pub fn load_stored(cluster: &ClusterRepo, id: &str) -> Result<Option<Stored>, Error> {
    let key = format!("{}/{MANIFEST_NAME}", backup_prefix(cluster, id));
    let Some(v) = load_checked(cluster, &key, MANIFEST_VERSION)? else {
        return Ok(None);
    };
    let bad = |reason: String| Error::BadMetadata {
        location: cluster.location(),
        key: key.clone(),
        reason,
    };
    let stored = if v.get("format_version").and_then(serde_json::Value::as_u64) == Some(1) {
        Stored::V1(serde_json::from_value(v).map_err(|e| bad(e.to_string()))?)
    } else {
        let root: Root = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
        check_root(&root, id).map_err(bad)?;
        Stored::V2(root)
    };
    Ok(Some(stored))
}

/// The root's own rules: its id, segment ids in order and unique, an
/// owned segment owned by the backup and an unchanged one by another.
fn check_root(root: &Root, id: &str) -> Result<(), String> {
    if root.backup_id != id {
        return Err(format!(
            "it is the manifest of backup \"{}\", not \"{id}\"",
            root.backup_id
        ));
    }
    if root.segments.windows(2).any(|w| w[0].id >= w[1].id) {
        return Err("its segments are not in order, or one is listed twice".into());
    }
    for s in &root.segments {
        check_backup_id(&s.owner).map_err(|e| e.to_string())?;
        if s.unchanged && !s.id.starts_with("rel:") {
            return Err(format!(
                "segment \"{}\" is marked unchanged, which only a relation segment may be",
                s.id
            ));
        }
        if s.unchanged == (s.owner == id) {
            return Err(format!(
                "segment \"{}\" is {} but owned by backup \"{}\"",
                s.id,
                if s.unchanged { "unchanged" } else { "its own" },
                s.owner
            ));
        }
    }
    if root
        .segments
        .iter()
        .try_fold(0u64, |n, s| n.checked_add(s.files))
        != Some(root.files)
    {
        return Err("its segments' file counts do not add up to its own".into());
    }
    Ok(())
}

/// The packs read last (a child's root refers to its own packs and its
/// ancestors', in turn).
#[derive(Default)]
struct Packs(std::collections::VecDeque<(String, Vec<u8>)>);

impl Packs {
    const KEEP: usize = 8;
}

/// The entries of segment `s`, read and checked: its pack's envelope, its
/// BLAKE3, id, count and shape, and that each file belongs to it. An
/// unchanged segment's files read as their parent's, whole. The packs
/// read last are kept in `cache`.
fn load_segment(
    cluster: &ClusterRepo,
    s: &SegmentRef,
    cache: &mut Packs,
) -> Result<Vec<ManifestFile>, Error> {
    let key = segment_key(cluster, &s.owner, s.object);
    let bad = |reason: String| Error::BadMetadata {
        location: cluster.location(),
        key: key.clone(),
        reason,
    };
    if !cache.0.iter().any(|(k, _)| *k == key) {
        let obj = match cluster.storage().get(&key) {
            Ok(o) => o,
            Err(e) if e.is_not_found() => {
                return Err(bad(format!(
                    "manifest segment \"{}\" is missing from backup \"{}\"",
                    s.id, s.owner
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let (_, content) = envelope::open(&obj).map_err(|e| bad(e.to_string()))?;
        if cache.0.len() == Packs::KEEP {
            cache.0.pop_front();
        }
        cache.0.push_back((key.clone(), content));
    }
    let content = cache
        .0
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(&[][..], |(_, c)| c.as_slice());
    let bytes = usize::try_from(s.offset)
        .ok()
        .zip(usize::try_from(s.len).ok())
        .and_then(|(at, len)| content.get(at..at.checked_add(len)?))
        .ok_or_else(|| {
            bad(format!(
                "manifest segment \"{}\" lies beyond the end of its pack",
                s.id
            ))
        })?;
    let digest = envelope::hex(blake3::hash(bytes).as_bytes());
    if digest != s.blake3 {
        return Err(bad(format!(
            "manifest segment \"{}\" has BLAKE3 {digest}, its root records {}",
            s.id, s.blake3
        )));
    }
    let seg: Segment = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if seg.format_version != MANIFEST_VERSION || seg.id != s.id {
        return Err(bad(format!(
            "it holds segment \"{}\" (format {}), the root expects \"{}\"",
            seg.id, seg.format_version, s.id
        )));
    }
    if seg.files.len() as u64 != s.files
        || shape(seg.files.iter().map(|f| (f.path.as_str(), f.size))) != s.shape
    {
        return Err(bad(format!(
            "manifest segment \"{}\" does not hold the files its root records",
            s.id
        )));
    }
    if let Some(f) = seg.files.iter().find(|f| segment_of(&f.path) != s.id) {
        return Err(bad(format!(
            "\"{}\" does not belong in manifest segment \"{}\"",
            f.path, s.id
        )));
    }
    Ok(if s.unchanged {
        seg.files
            .into_iter()
            .map(|f| unchanged_entry(f.path, f.size))
            .collect()
    } else {
        seg.files
    })
}

/// Backup `id`'s manifest, every entry in path order (`None`: it has
/// none), and its root's segments (none for format 1).
pub fn load_manifest(
    cluster: &ClusterRepo,
    id: &str,
) -> Result<Option<(Manifest, Vec<SegmentRef>)>, Error> {
    let root = match load_stored(cluster, id)? {
        None => return Ok(None),
        Some(Stored::V1(m)) => return Ok(Some((m, Vec::new()))),
        Some(Stored::V2(root)) => root,
    };
    // The count is the root's word: a hint, bounded.
    let mut files = Vec::with_capacity(root.files.min(1 << 20) as usize);
    // Pack by pack (the owners' packs interleave in id order); the files
    // are sorted below.
    let mut order: Vec<&SegmentRef> = root.segments.iter().collect();
    order.sort_by(|a, b| (&a.owner, a.object, a.offset).cmp(&(&b.owner, b.object, b.offset)));
    let mut cache = Packs::default();
    for s in order {
        files.extend(load_segment(cluster, s, &mut cache)?);
    }
    files.sort_unstable_by(|a, b| path_order(&a.path, &b.path));
    let manifest = Manifest {
        format_version: MANIFEST_VERSION,
        backup_id: root.backup_id,
        files,
        dirs: root.dirs,
        tablespaces: root.tablespaces,
        databases: root.databases,
    };
    Ok(Some((manifest, root.segments)))
}

/// The packs `root` names that are not in the repository, found by
/// listing each owner's `manifest.d/` once.
pub fn missing_packs(cluster: &ClusterRepo, root: &Root) -> Result<Vec<String>, Error> {
    let mut present = std::collections::HashSet::new();
    let mut listed = std::collections::HashSet::new();
    let mut missing = std::collections::BTreeSet::new();
    for s in &root.segments {
        if listed.insert(s.owner.as_str()) {
            let folder = format!("{}/{SEGMENT_DIR}/", backup_prefix(cluster, &s.owner));
            present.extend(cluster.storage().list(&folder)?.into_iter().map(|o| o.key));
        }
        let key = segment_key(cluster, &s.owner, s.object);
        if !present.contains(&key) {
            missing.insert(key);
        }
    }
    Ok(missing.into_iter().collect())
}

/// Each unchanged segment of a backup (`segments`, its root's) must be
/// its parent's (`parent`, the parent root's; empty for format 1): the same
/// pack, place, digest, count and shape. `Err`: the first that is not.
pub fn check_unchanged(segments: &[SegmentRef], parent: &[SegmentRef]) -> Result<(), String> {
    for s in segments.iter().filter(|s| s.unchanged) {
        let theirs = parent.iter().find(|p| p.id == s.id);
        let same = theirs.is_some_and(|p| {
            (
                &p.owner, p.object, p.offset, p.len, &p.blake3, p.files, &p.shape,
            ) == (
                &s.owner, s.object, s.offset, s.len, &s.blake3, s.files, &s.shape,
            )
        });
        if !same {
            return Err(format!(
                "its manifest segment \"{}\" is marked unchanged, but its parent's is not the one it refers to (in backup \"{}\")",
                s.id, s.owner
            ));
        }
    }
    Ok(())
}

impl Basis {
    /// The basis against a parent whose manifest is `stored`: a format-1
    /// manifest gives every length now, a format-2 root its segments'
    /// shapes (see [`Basis::read_parent`]).
    pub fn against(stored: Stored, reference_lsn: u64) -> Basis {
        match stored {
            Stored::V1(manifest) => Basis {
                reference_lsn,
                parent_sizes: manifest
                    .files
                    .into_iter()
                    .map(|f| (f.path, f.size))
                    .collect(),
                parent_databases: manifest.databases,
                ..Default::default()
            },
            Stored::V2(root) => Basis {
                reference_lsn,
                parent_databases: root.databases.clone(),
                parent_root: Some(root),
                ..Default::default()
            },
        }
    }

    /// Learn the parent's lengths for `files` (this backup's walk) from a
    /// format-2 parent root: a `rel:` segment whose shape is the parent's
    /// takes them from the walk ([`Basis::same_shape`]), any other is read
    /// from the parent's segment ([`Basis::parent_sizes`]). Only those files are stored by block, so the
    /// others need no length.
    pub fn read_parent(
        &mut self,
        cluster: &ClusterRepo,
        files: &[SourceFile],
    ) -> Result<(), Error> {
        let Some(root) = self.parent_root.take() else {
            return Ok(());
        };
        let mut now: BTreeMap<String, Vec<&SourceFile>> = BTreeMap::new();
        for f in files.iter().filter(|f| increment::is_block_file(&f.path)) {
            now.entry(segment_of(&f.path)).or_default().push(f);
        }
        let mut cache = Packs::default();
        for s in &root.segments {
            let Some(mine) = now.get(&s.id) else { continue };
            if shape(mine.iter().map(|f| (f.path.as_str(), f.size))) == s.shape {
                self.same_shape.insert(s.id.clone());
            } else {
                self.parent_sizes.extend(
                    load_segment(cluster, s, &mut cache)?
                        .into_iter()
                        .map(|f| (f.path, f.size)),
                );
            }
        }
        self.parent_root = Some(root);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
