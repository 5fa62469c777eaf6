//! Physical backups: the files of a data directory, stored in the
//! repository with a manifest, and rebuilt from it.
//!
//! # Layout
//!
//! ```text
//! clusters/<system id>/backup/<id>/data/<path, each component encoded>   one object per file
//! clusters/<system id>/backup/<id>/manifest(.copy)     every file: size, BLAKE3, key
//! clusters/<system id>/backup/<id>/backup.info(.copy)  the descriptor, written last
//! ```
//!
//! Each file is an envelope (`repo/envelope.rs`): compressed as it streams,
//! with the BLAKE3 digest of its content, checked on every read. The
//! manifest records the same digest, so a restore or a verification checks
//! each file twice over: the object against itself, and against what the
//! backup read. `backup.info` is written only after the data, the manifest
//! and the `backup_label` are durable: a backup without one is incomplete
//! and never restored.
//!
//! # What is copied
//!
//! PostgreSQL's own rules for a base backup (`src/backend/backup/
//! basebackup.c`): the contents of `pg_wal`, `pg_replslot`, `pg_dynshmem`,
//! `pg_notify`, `pg_serial`, `pg_snapshots`, `pg_stat_tmp` and `pg_subtrans`
//! are left out (the directories themselves are kept, empty), as are
//! `postmaster.pid`, `postmaster.opts`, `pg_internal.init`, `backup_label`
//! and `tablespace_map` files of an earlier backup, temporary files and
//! relations (`pgsql_tmp*`, `t<n>_<relfilenode>`), and every fork but the
//! init fork of unlogged relations. `global/pg_control` is copied last.
//! pg_ark's own `pg_ark/` state folder is left out too.
//!
//! # Threads
//!
//! [`store_files`] reads on worker threads with every signal blocked and
//! never calls PostgreSQL: it is run from a job worker's thread while the
//! worker's session holds the backup open (`pg_backup_start`).
use crate::logical::encode_database as encode_component;
use crate::repo::compress::Compression;
use crate::repo::envelope::{self, DigestKind};
use crate::repo::{info, layout, ClusterRepo};
use crate::storage::PutMode;
use crate::wal::SegmentSize;
use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

pub mod checksum;
pub mod increment;
pub mod lease;
pub use checksum::{BadPage, PageCheck};
pub use increment::{Basis, BLOCK};

/// The version of `backup.info` and `manifest` this pg_ark writes and reads.
pub const PHYSICAL_INFO_VERSION: u32 = 1;
pub const INFO_NAME: &str = "backup.info";
pub const MANIFEST_NAME: &str = "manifest";

/// Directories whose contents a base backup leaves out.
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];
/// Files left out wherever they are.
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "pg_internal.init",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "recovery.signal",
    "standby.signal",
];
/// Top-level entries left out entirely.
const SKIP_TOP: &[&str] = &["pg_ark"];

/// One file to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// `/`-separated, relative to the data directory.
    pub path: String,
    pub size: u64,
}

/// What [`walk`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataDirectory {
    pub files: Vec<SourceFile>,
    /// Directories, relative, including the kept-empty ones. A tablespace's
    /// link (`pg_tblspc/<oid>`) is not one: see `tablespaces`.
    pub dirs: Vec<String>,
    pub tablespaces: Vec<Tablespace>,
    /// Each database directory's identity
    /// ([`increment::database_identity`]), by its path.
    pub databases: BTreeMap<String, String>,
}

/// A tablespace: the link `pg_tblspc/<oid>` and where it pointed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    pub oid: String,
    pub location: String,
}

pub(crate) fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::LocalIo {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// A temporary relation file: `t<backend>_<relfilenode>[_fork][.segment]`.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let mut parts = rest.splitn(2, '_');
    let (Some(backend), Some(tail)) = (parts.next(), parts.next()) else {
        return false;
    };
    !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && tail.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

/// The relfilenode of a relation file name (`16384`, `16384_fsm`,
/// `16384.1`), if it is one.
fn relfilenode(name: &str) -> Option<&str> {
    let end = name
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(name.len());
    (end > 0).then(|| &name[..end])
}

/// List what a base backup of `pgdata` copies, tablespaces included: the
/// files behind each link `pg_tblspc/<oid>` are listed under that path,
/// only in this major's `PG_<major>_<catversion>` directory (another
/// major's, left by pg_upgrade, is not this cluster's).
pub fn walk(pgdata: &Path) -> Result<DataDirectory, Error> {
    let mut out = DataDirectory::default();
    let major = fs::read_to_string(pgdata.join("PG_VERSION"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let own_version = format!("PG_{major}_");
    let mut stack = vec![(String::new(), pgdata.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| io_err("list", &dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list", &dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                return Err(io_err(
                    "back up",
                    &entry.path(),
                    std::io::Error::other("the file name is not UTF-8"),
                ));
            };
            names.push((name, entry));
        }
        // Unlogged relations: every fork but the init fork is left out.
        let unlogged: std::collections::HashSet<String> = names
            .iter()
            .filter_map(|(n, _)| n.strip_suffix("_init"))
            .filter(|base| relfilenode(base) == Some(*base))
            .map(str::to_string)
            .collect();
        for (name, entry) in names {
            let path = entry.path();
            let rel_name = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if (rel.is_empty() && SKIP_TOP.contains(&name.as_str()))
                || SKIP_FILES.contains(&name.as_str())
                || name.starts_with("pgsql_tmp")
                || is_temp_relation(&name)
            {
                continue;
            }
            if !name.ends_with("_init") && relfilenode(&name).is_some_and(|r| unlogged.contains(r))
            {
                continue;
            }
            let ft = entry.file_type().map_err(|e| io_err("stat", &path, e))?;
            if ft.is_symlink() && rel == "pg_tblspc" {
                let location = fs::read_link(&path).map_err(|e| io_err("read link", &path, e))?;
                let Some(location) = location.to_str() else {
                    return Err(io_err(
                        "back up",
                        &path,
                        std::io::Error::other("the tablespace location is not UTF-8"),
                    ));
                };
                out.tablespaces.push(Tablespace {
                    oid: name.clone(),
                    location: location.to_string(),
                });
                stack.push((rel_name, path));
                continue;
            }
            // In a tablespace, only this major's version directory.
            let in_tablespace_root = rel.starts_with("pg_tblspc/") && rel.matches('/').count() == 1;
            if in_tablespace_root && name.starts_with("PG_") && !name.starts_with(&own_version) {
                continue;
            }
            let meta = fs::metadata(&path).map_err(|e| io_err("stat", &path, e))?;
            if meta.is_dir() {
                if increment::is_database_dir(&rel_name) {
                    let version = fs::metadata(path.join("PG_VERSION")).ok();
                    if let Some(id) = increment::database_identity(&meta, version.as_ref()) {
                        out.databases.insert(rel_name.clone(), id);
                    }
                }
                out.dirs.push(rel_name.clone());
                if !(rel.is_empty() && EMPTY_DIRS.contains(&name.as_str())) {
                    stack.push((rel_name, path));
                } else if name == "pg_wal" {
                    out.dirs.push("pg_wal/archive_status".into());
                }
            } else if meta.is_file() {
                out.files.push(SourceFile {
                    path: rel_name,
                    size: meta.len(),
                });
            }
        }
    }
    out.dirs.sort();
    out.dirs.dedup();
    out.tablespaces.sort_by(|a, b| a.oid.cmp(&b.oid));
    // Name order, with global/pg_control last.
    out.files.sort_by(|a, b| {
        (a.path == "global/pg_control", &a.path).cmp(&(b.path == "global/pg_control", &b.path))
    });
    Ok(out)
}

/// One stored file, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    /// Bytes read (the file's length in the backup).
    #[serde(with = "u64_string")]
    pub size: u64,
    /// BLAKE3 of the content, hex.
    pub blake3: String,
    /// The object that holds it ("" when a block-level entry stores no
    /// block).
    pub key: String,
    #[serde(with = "u64_string")]
    pub stored: u64,
    /// Block-level entries (incremental and differential backups): the
    /// object holds only these 8 KiB blocks, in this order, and `blake3` is
    /// the digest of those bytes; every other block below `size` is the
    /// same file's in the parent backup (`PhysicalBackupInfo::parent`),
    /// rebuilt the same way. `None`: the object holds the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<u32>>,
    /// Bundled small files: the content starts at this offset in the
    /// object's content (`key` is a bundle shared by many files; `stored`
    /// is this file's share of it). `None`: the object is the file's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl ManifestFile {
    /// The length of what the object holds.
    pub fn payload_len(&self) -> u64 {
        match &self.blocks {
            Some(b) => b.len() as u64 * increment::BLOCK,
            None => self.size,
        }
    }
}

mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Every file and directory of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub backup_id: String,
    pub files: Vec<ManifestFile>,
    pub dirs: Vec<String>,
    /// The links in `pg_tblspc`, made before the files below them.
    #[serde(default)]
    pub tablespaces: Vec<Tablespace>,
    /// Each database directory's identity when it was walked: a backup
    /// against this one stores a directory whole when its identity differs
    /// (see `increment`). Manifests written before it have none, so every
    /// database of the next backup on them is stored whole.
    #[serde(default)]
    pub databases: BTreeMap<String, String>,
}

/// The kind of a physical backup. Stored by name (`full`,
/// `incremental`, `differential`) in `backup.info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Every file whole.
    Full,
    /// The blocks changed since its parent, the newest backup of its chain.
    Incremental,
    /// The blocks changed since its chain's full.
    Differential,
}

impl BackupKind {
    pub const ALL: [BackupKind; 3] = [
        BackupKind::Full,
        BackupKind::Incremental,
        BackupKind::Differential,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
            BackupKind::Differential => "differential",
        }
    }

    /// The letter in backup ids (`20261201T120000Z-F-j1`).
    pub fn letter(self) -> char {
        match self {
            BackupKind::Full => 'F',
            BackupKind::Incremental => 'I',
            BackupKind::Differential => 'D',
        }
    }

    pub fn parse(s: &str) -> Option<BackupKind> {
        BackupKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A physical backup's descriptor (`backup.info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalBackupInfo {
    pub format_version: u32,
    pub kind: BackupKind,
    pub backup_id: String,
    /// The backup this one's block-level entries refer to (`None`: a full).
    #[serde(default)]
    pub parent: Option<String>,
    /// The full backup the chain starts with (its own id for a full).
    #[serde(default)]
    pub chain: String,
    /// Blocks with a page LSN at or after this were stored (the parent's
    /// start for an incremental, the full's for a differential).
    #[serde(default)]
    pub reference_lsn: Option<String>,
    pub start_lsn: String,
    /// When the backup started (Unix microseconds, after pg_backup_start
    /// returned): every commit before `start_lsn` is older. Restores to a
    /// time before it need an older backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_us: Option<i64>,
    pub stop_lsn: String,
    pub timeline: u32,
    /// The WAL segments from the start to the stop LSN, which a restore needs.
    pub start_wal: String,
    pub stop_wal: String,
    /// The cluster's `wal_segment_size`, which `start_wal` and `stop_wal`
    /// are named with. Descriptors written before pg_ark recorded it lack
    /// it: their clusters had 16 MiB segments (PostgreSQL's default), the
    /// only size those versions could restore.
    #[serde(default)]
    pub wal_segment_size: SegmentSize,
    pub started_at: String,
    pub finished_at: String,
    pub started_epoch: i64,
    pub finished_epoch: i64,
    #[serde(with = "u64_string")]
    pub original_bytes: u64,
    #[serde(with = "u64_string")]
    pub stored_bytes: u64,
    pub files: usize,
    pub server_version: String,
    #[serde(with = "u64_string")]
    pub system_identifier: u64,
    /// The cluster's tablespaces at the backup.
    #[serde(default)]
    pub tablespaces: Vec<Tablespace>,
    /// `data_checksums` was on.
    #[serde(default)]
    pub checksums: bool,
    pub job_id: Option<i64>,
    pub created_by: String,
}

#[cfg(test)]
impl PhysicalBackupInfo {
    /// A descriptor for unit tests: timeline 1, start and stop segment
    /// numbered after `epoch`.
    pub(crate) fn for_tests(
        id: &str,
        kind: &str,
        parent: Option<&str>,
        chain: &str,
        epoch: i64,
    ) -> PhysicalBackupInfo {
        PhysicalBackupInfo {
            format_version: PHYSICAL_INFO_VERSION,
            kind: BackupKind::parse(kind).expect("a backup kind"),
            backup_id: id.into(),
            parent: parent.map(str::to_string),
            chain: chain.into(),
            reference_lsn: None,
            start_lsn: String::new(),
            start_time_us: None,
            stop_lsn: String::new(),
            timeline: 1,
            start_wal: format!("00000001000000000000{epoch:04X}"),
            stop_wal: format!("00000001000000000000{epoch:04X}"),
            wal_segment_size: SegmentSize::DEFAULT,
            started_at: String::new(),
            finished_at: String::new(),
            started_epoch: epoch,
            finished_epoch: epoch,
            original_bytes: 0,
            stored_bytes: 0,
            files: 0,
            server_version: "17".into(),
            system_identifier: 1,
            tablespaces: Vec::new(),
            checksums: false,
            job_id: None,
            created_by: String::new(),
        }
    }
}

/// The key prefix of backup `id` (no trailing `/`).
pub fn backup_prefix(cluster: &ClusterRepo, id: &str) -> String {
    cluster.key(&layout::backup(id))
}

/// A backup id: one key component of safe characters.
pub fn check_backup_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidLogicalRequest {
            reason: format!("\"{id}\" is not a valid backup id (letters, digits, - and _)"),
        })
    }
}

/// The key of `path` (relative to the data directory) in backup `prefix`.
pub fn data_key(prefix: &str, path: &str) -> String {
    let encoded: Vec<String> = path.split('/').map(encode_component).collect();
    format!("{prefix}/data/{}", encoded.join("/"))
}

/// Progress and cancellation shared with the caller.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub cancel: AtomicBool,
}

/// How files are stored.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    pub compression: Compression,
    pub level: i32,
    /// Reading threads.
    pub threads: usize,
    /// Files stored whole and smaller than this are bundled, many to one
    /// object of up to [`BUNDLE_BYTES`] (0: every file its own object).
    pub bundle_below: u64,
}

/// The default of [`StoreOptions::bundle_below`].
pub const BUNDLE_FILES_BELOW: u64 = 64 * 1024;
/// Content of one bundle object, at most (a file is never split).
pub const BUNDLE_BYTES: u64 = 4 * 1024 * 1024;

/// One piece of work of [`store_files`].
enum Work {
    File(usize),
    Bundle(usize, Vec<usize>),
}

/// Store `files` of `pgdata` under `prefix` on `opts.threads` threads. Returns
/// the manifest entries in the order of `files`. The first error stops the
/// others; the caller removes what was stored.
#[allow(clippy::too_many_arguments)]
pub fn store_files(
    cluster: &ClusterRepo,
    prefix: &str,
    pgdata: &Path,
    files: &[SourceFile],
    opts: StoreOptions,
    basis: Option<&Basis>,
    pages: Option<&PageCheck>,
    progress: &Progress,
) -> Result<Vec<ManifestFile>, Error> {
    let StoreOptions {
        compression,
        level,
        threads,
        bundle_below,
    } = opts;
    progress
        .bytes_total
        .store(files.iter().map(|f| f.size).sum(), Ordering::Relaxed);
    // pg_control is copied last, after every other file is stored.
    let (last, rest): (Vec<usize>, Vec<usize>) =
        (0..files.len()).partition(|&i| files[i].path == "global/pg_control");
    let next = AtomicU64::new(0);
    // Per file: None = not stored (yet), Some(None) = vanished meanwhile.
    let results: Mutex<Vec<Option<Option<ManifestFile>>>> = Mutex::new(vec![None; files.len()]);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    // Small files stored whole go into bundles, in name order.
    let by_block = |f: &SourceFile| basis.is_some_and(|b| b.by_block(&f.path, f.size));
    let mut work: Vec<Work> = Vec::new();
    let mut bundle: Vec<usize> = Vec::new();
    let mut bundle_bytes = 0;
    for &i in &rest {
        let f = &files[i];
        if f.size < bundle_below && !by_block(f) {
            if bundle_bytes + f.size > BUNDLE_BYTES && !bundle.is_empty() {
                work.push(Work::Bundle(work.len(), std::mem::take(&mut bundle)));
                bundle_bytes = 0;
            }
            bundle.push(i);
            bundle_bytes += f.size;
        } else {
            work.push(Work::File(i));
        }
    }
    if !bundle.is_empty() {
        work.push(Work::Bundle(work.len(), bundle));
    }
    let store_bundle = |n: usize, members: &[usize]| -> Result<(), Error> {
        let stored = store_bundle(
            cluster,
            prefix,
            pgdata,
            n,
            members.iter().map(|&i| &files[i]),
            (compression, level),
            pages,
        )?;
        let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
        for (&i, entry) in members.iter().zip(stored) {
            progress
                .bytes_done
                .fetch_add(files[i].size, Ordering::Relaxed);
            r[i] = Some(entry);
        }
        Ok(())
    };
    let store_one = |i: usize| -> Result<(), Error> {
        let f = &files[i];
        let parent_len = basis.and_then(|b| {
            b.parent_sizes
                .get(&f.path)
                .filter(|_| b.by_block(&f.path, f.size))
                .map(|&len| {
                    let changed = match (&b.summary, increment::rel_fork(&f.path)) {
                        (Some(summary), Some((fork, segment))) => {
                            increment::Changed::Listed(summary.get(&fork), segment)
                        }
                        _ => increment::Changed::PageLsn(b.reference_lsn),
                    };
                    (len, changed)
                })
        });
        let entry = match parent_len {
            Some((len, changed)) => increment::store_increment(
                cluster,
                prefix,
                pgdata,
                f,
                len,
                changed,
                (compression, level),
                pages.filter(|_| checksum::is_checksummed(&f.path)),
            )?,
            None => store_file(
                cluster,
                prefix,
                pgdata,
                f,
                (compression, level),
                pages.filter(|_| checksum::is_checksummed(&f.path)),
            )?,
        };
        progress.bytes_done.fetch_add(f.size, Ordering::Relaxed);
        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(entry);
        Ok(())
    };
    let failed = |e: Error| {
        let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        progress.cancel.store(true, Ordering::SeqCst);
    };
    crate::threads::with_signals_blocked(|| {
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| loop {
                    if progress.cancel.load(Ordering::SeqCst) {
                        return;
                    }
                    let n = next.fetch_add(1, Ordering::SeqCst) as usize;
                    let Some(item) = work.get(n) else {
                        return;
                    };
                    let done = match item {
                        Work::File(i) => store_one(*i),
                        Work::Bundle(n, members) => store_bundle(*n, members),
                    };
                    if let Err(e) = done {
                        failed(e);
                        return;
                    }
                });
            }
        })
    });
    if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    if progress.cancel.load(Ordering::SeqCst) {
        return Err(Error::Unsupported {
            what: "the backup was cancelled".into(),
        });
    }
    for i in last {
        store_one(i)?;
    }
    let stored = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    for (e, f) in stored.into_iter().zip(files) {
        match e {
            Some(Some(entry)) => out.push(entry),
            Some(None) => {}
            None => {
                return Err(Error::Unsupported {
                    what: format!("\"{}\" was not stored", f.path),
                })
            }
        }
    }
    Ok(out)
}

/// Exactly `left` bytes of `inner`: if the file ends early (truncated
/// while it is read) the rest is zeros, as PostgreSQL's base backup pads;
/// bytes beyond `left` (extended meanwhile) are not read. WAL replay from
/// the backup's start repairs both.
pub(crate) struct Padded<R> {
    pub(crate) inner: R,
    pub(crate) left: u64,
    pub(crate) ended: bool,
}

impl<R: std::io::Read> std::io::Read for Padded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = if self.ended {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.ended = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Store one file, streamed (never held whole in memory). `None`: the file
/// was removed while the backup ran (a dropped relation), which WAL replay
/// accounts for, so it is left out.
fn store_file(
    cluster: &ClusterRepo,
    prefix: &str,
    pgdata: &Path,
    f: &SourceFile,
    (compression, level): (Compression, i32),
    pages: Option<&PageCheck>,
) -> Result<Option<ManifestFile>, Error> {
    let path = pgdata.join(&f.path);
    let key = data_key(prefix, &f.path);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path, e)),
    };
    let len = file.metadata().map_err(|e| io_err("stat", &path, e))?.len();
    let reader = Padded {
        inner: &file,
        left: len,
        ended: false,
    };
    let reader: Box<dyn std::io::Read + '_> = match pages {
        Some(check) => Box::new(checksum::Checking {
            inner: reader,
            file: &file,
            path: &f.path,
            check,
            page: Vec::with_capacity(BLOCK as usize),
            block: 0,
        }),
        None => Box::new(reader),
    };
    let mut sealed = envelope::SealReader::new(reader, len, compression, level)
        .map_err(|e| io_err("read", &path, e))?;
    let stored = cluster
        .storage()
        .put_stream(&key, &mut sealed, PutMode::Create)?;
    let digest = sealed.content_digest().ok_or_else(|| Error::Unsupported {
        what: format!("\"{}\" was not read to its end", f.path),
    })?;
    Ok(Some(ManifestFile {
        path: f.path.clone(),
        size: len,
        blake3: envelope::hex(&digest),
        key,
        stored,
        blocks: None,
        offset: None,
    }))
}

/// Store small files whole in one bundle object, `<prefix>/bundle/<n>`:
/// each is read whole (a file removed meanwhile is left out: `None`), the
/// contents are concatenated and sealed as one envelope, and each entry
/// records its offset and its own BLAKE3.
fn store_bundle<'a>(
    cluster: &ClusterRepo,
    prefix: &str,
    pgdata: &Path,
    n: usize,
    members: impl Iterator<Item = &'a SourceFile>,
    (compression, level): (Compression, i32),
    pages: Option<&PageCheck>,
) -> Result<Vec<Option<ManifestFile>>, Error> {
    let key = format!("{prefix}/bundle/{n:06}");
    let mut content = Vec::new();
    let mut entries = Vec::new();
    for f in members {
        let path = pgdata.join(&f.path);
        let mut file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                entries.push(None);
                continue;
            }
            Err(e) => return Err(io_err("open", &path, e)),
        };
        let start = content.len();
        std::io::Read::read_to_end(&mut file, &mut content)
            .map_err(|e| io_err("read", &path, e))?;
        let data = &content[start..];
        if let Some(check) = pages.filter(|_| checksum::is_checksummed(&f.path)) {
            for (block, page) in data.chunks(BLOCK as usize).enumerate() {
                check.check(&file, &f.path, block as u64, page);
            }
        }
        entries.push(Some(ManifestFile {
            path: f.path.clone(),
            size: data.len() as u64,
            blake3: envelope::hex(&DigestKind::Blake3.of(data)),
            key: key.clone(),
            stored: 0,
            blocks: None,
            offset: Some(start as u64),
        }));
    }
    if content.is_empty() && entries.iter().all(Option::is_none) {
        return Ok(entries);
    }
    let sealed = envelope::seal(&content, compression, level).map_err(|e| Error::LocalIo {
        op: "seal",
        path: key.clone(),
        source: e,
    })?;
    cluster.storage().put(&key, &sealed, PutMode::Create)?;
    // Each file's share of the stored bytes, by size (the rest to the last).
    let total = sealed.len() as u64;
    let content_len = (content.len() as u64).max(1);
    let mut given = 0;
    let last = entries.iter().rposition(Option::is_some);
    for (i, e) in entries.iter_mut().enumerate() {
        if let Some(e) = e {
            e.stored = if Some(i) == last {
                total - given
            } else {
                total * e.size / content_len
            };
            given += e.stored;
        }
    }
    Ok(entries)
}

/// Store a small file made by the backup itself (`backup_label`).
pub fn store_bytes(
    cluster: &ClusterRepo,
    prefix: &str,
    path: &str,
    content: &[u8],
) -> Result<ManifestFile, Error> {
    let key = data_key(prefix, path);
    let sealed = envelope::seal(content, Compression::None, 0).map_err(|e| Error::LocalIo {
        op: "seal",
        path: path.into(),
        source: e,
    })?;
    cluster.storage().put(&key, &sealed, PutMode::Create)?;
    Ok(ManifestFile {
        path: path.into(),
        size: content.len() as u64,
        blake3: envelope::hex(&DigestKind::Blake3.of(content)),
        key,
        stored: sealed.len() as u64,
        blocks: None,
        offset: None,
    })
}

fn save_json(cluster: &ClusterRepo, key: &str, value: &impl Serialize) -> Result<(), Error> {
    let v = serde_json::to_value(value).map_err(|e| Error::BadMetadata {
        location: cluster.location(),
        key: key.into(),
        reason: e.to_string(),
    })?;
    info::save(cluster.storage(), key, &v, PutMode::Create).map_err(Error::from)
}

fn load_json<T: serde::de::DeserializeOwned>(
    cluster: &ClusterRepo,
    key: &str,
) -> Result<Option<T>, Error> {
    match info::load(cluster.storage(), key)? {
        None => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| Error::BadMetadata {
                location: cluster.location(),
                key: key.into(),
                reason: e.to_string(),
            }),
    }
}

/// Write the manifest, then the descriptor: the backup is complete once
/// this returns.
///
/// Before the descriptor, every object the manifest names must be in the
/// backup's folder: another writer of the entry (a restored copy of this
/// cluster, say) that took the backup for abandoned may have removed it
/// (see [`lease`]). Such a backup is never recorded complete.
pub fn finish_backup(
    cluster: &ClusterRepo,
    manifest: &Manifest,
    descriptor: &PhysicalBackupInfo,
) -> Result<(), Error> {
    let prefix = backup_prefix(cluster, &manifest.backup_id);
    save_json(cluster, &format!("{prefix}/{MANIFEST_NAME}"), manifest)?;
    let present: std::collections::HashSet<String> = cluster
        .storage()
        .list(&format!("{prefix}/"))?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut missing: Vec<String> = manifest
        .files
        .iter()
        .filter(|f| !f.key.is_empty() && !present.contains(&f.key))
        .map(|f| f.key.clone())
        .chain(
            [
                format!("{prefix}/{MANIFEST_NAME}"),
                format!("{prefix}/{MANIFEST_NAME}.copy"),
            ]
            .into_iter()
            .filter(|k| !present.contains(k)),
        )
        .collect();
    // Its parent must still be there too (another writer's expiry).
    if let Some(parent) = &descriptor.parent {
        let key = format!("{}/{INFO_NAME}", backup_prefix(cluster, parent));
        if cluster.storage().head(&key)?.is_none() {
            missing.push(key);
        }
    }
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        return Err(Error::BackupObjectsMissing {
            location: cluster.location(),
            backup_id: manifest.backup_id.clone(),
            missing,
        });
    }
    save_json(cluster, &format!("{prefix}/{INFO_NAME}"), descriptor)
}

/// The record of the last restore drill of a backup, in its folder (it
/// goes when the backup goes).
pub const DRILL_NAME: &str = "drill.json";

/// Record the last restore drill of backup `id` (see `restore::drill`).
pub fn save_drill(cluster: &ClusterRepo, id: &str, doc: &serde_json::Value) -> Result<(), Error> {
    check_backup_id(id)?;
    // Each drill replaces the record of the one before.
    info::save(
        cluster.storage(),
        &format!("{}/{DRILL_NAME}", backup_prefix(cluster, id)),
        doc,
        PutMode::Overwrite,
    )
    .map_err(Error::from)
}

/// The last restore drill of backup `id`, if one was recorded.
pub fn load_drill(cluster: &ClusterRepo, id: &str) -> Result<Option<serde_json::Value>, Error> {
    check_backup_id(id)?;
    load_json(
        cluster,
        &format!("{}/{DRILL_NAME}", backup_prefix(cluster, id)),
    )
}

/// Remove everything of backup `id`: the descriptor first, so that an
/// interrupted removal never leaves a complete-looking backup.
pub fn delete_backup(cluster: &ClusterRepo, id: &str) -> Result<(), Error> {
    check_backup_id(id)?;
    let prefix = backup_prefix(cluster, id);
    let storage = cluster.storage();
    storage.delete(&format!("{prefix}/{INFO_NAME}"))?;
    storage.delete(&format!("{prefix}/{INFO_NAME}.copy"))?;
    for obj in storage.list(&format!("{prefix}/"))? {
        storage.delete(&obj.key)?;
    }
    Ok(())
}

/// Remove what failed or killed backups left: every backup prefix without a
/// descriptor and without a live lease of another holder than `own` (see
/// [`lease`]): a prefix another writer of the entry is filling holds one,
/// and is left alone. Only when `own` runs no physical backup (the job
/// queue runs one at a time: conflict key `physical`). Returns the ids
/// removed and the ids left to their writers.
pub fn remove_incomplete(
    cluster: &ClusterRepo,
    own: &str,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let now = crate::logical::now_epoch();
    let base = cluster.key(layout::BACKUP);
    let mut ids = std::collections::BTreeMap::<String, bool>::new();
    for o in cluster.storage().list(&base)? {
        let Some((id, name)) = o.key.strip_prefix(&base).and_then(|r| r.split_once('/')) else {
            continue;
        };
        let complete = ids.entry(id.to_string()).or_insert(false);
        *complete |= name == INFO_NAME;
    }
    let (mut removed, mut running) = (Vec::new(), Vec::new());
    for (id, complete) in ids {
        if !complete && check_backup_id(&id).is_ok() {
            if lease::held(cluster, &id, own, now)? {
                running.push(id);
                continue;
            }
            delete_backup(cluster, &id)?;
            removed.push(id);
        }
    }
    Ok((removed, running))
}

/// The order of backups, oldest first: by start time, then (for backups
/// started in the same second) by start LSN, then job and id.
pub fn backup_order(b: &PhysicalBackupInfo) -> (i64, u64, Option<i64>, String) {
    (
        b.started_epoch,
        increment::parse_lsn(&b.start_lsn).unwrap_or(0),
        b.job_id,
        b.backup_id.clone(),
    )
}

/// The complete physical backups of `cluster`, oldest first.
pub fn list_backups(cluster: &ClusterRepo) -> Result<Vec<PhysicalBackupInfo>, Error> {
    let base = cluster.key(layout::BACKUP);
    let mut ids: Vec<String> = cluster
        .storage()
        .list(&base)?
        .into_iter()
        .filter_map(|o| {
            let rest = o.key.strip_prefix(&base)?;
            let (id, name) = rest.split_once('/')?;
            (name == INFO_NAME).then(|| id.to_string())
        })
        .collect();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        if let Some(info) = load_json::<PhysicalBackupInfo>(
            cluster,
            &format!("{}/{INFO_NAME}", backup_prefix(cluster, &id)),
        )? {
            if info.backup_id == id && info.system_identifier == cluster.system_identifier {
                out.push(info);
            }
        }
    }
    out.sort_by_key(backup_order);
    Ok(out)
}

/// The catalog index of a cluster's physical backups, `backup.index` (a
/// checksummed pair beside the `backup/` folder): every complete backup's
/// descriptor, oldest first, so that chains can be listed without listing
/// every object. The descriptors stay the truth: the index is rewritten
/// from them after each backup and each expiry, and `pg_ark verify`
/// reports an index that disagrees with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupIndex {
    pub format_version: u32,
    pub backups: Vec<PhysicalBackupInfo>,
}

pub const INDEX_NAME: &str = "backup.index";

/// Rewrite the catalog index from the descriptors; returns what it lists.
pub fn write_index(cluster: &ClusterRepo) -> Result<Vec<PhysicalBackupInfo>, Error> {
    let backups = list_backups(cluster)?;
    let index = BackupIndex {
        format_version: PHYSICAL_INFO_VERSION,
        backups,
    };
    let key = cluster.key(INDEX_NAME);
    let v = serde_json::to_value(&index).map_err(|e| Error::BadMetadata {
        location: cluster.location(),
        key: key.clone(),
        reason: e.to_string(),
    })?;
    info::save(cluster.storage(), &key, &v, PutMode::Overwrite)?;
    Ok(index.backups)
}

/// The catalog index, if the repository has one.
pub fn read_index(cluster: &ClusterRepo) -> Result<Option<Vec<PhysicalBackupInfo>>, Error> {
    Ok(load_json::<BackupIndex>(cluster, &cluster.key(INDEX_NAME))?.map(|i| i.backups))
}

/// A problem [`verify_backup`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (relative path) or object concerned.
    pub file: String,
    pub reason: String,
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
    fn open(&mut self, key: &str, keep: bool) -> Result<std::sync::Arc<Vec<u8>>, String> {
        if let Some((_, data)) = self.bundles.iter().find(|(k, _)| k == key) {
            return Ok(data.clone());
        }
        if !key.starts_with(&self.cluster.key(layout::BACKUP)) {
            return Err(format!("its object \"{key}\" lies outside the backup"));
        }
        let began = std::time::Instant::now();
        let obj = self.cluster.storage().get(key);
        self.fetch_nanos += began.elapsed().as_nanos() as u64;
        let obj = obj.map_err(|e| format!("object \"{key}\": {e}"))?;
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
    ) -> Result<(), String> {
        use std::io::Read;
        let key = &f.key;
        if !key.starts_with(&self.cluster.key(layout::BACKUP)) {
            return Err(format!("its object \"{key}\" lies outside the backup"));
        }
        let fetched = std::sync::Arc::new(AtomicU64::new(0));
        let nanos = std::sync::Arc::new(AtomicU64::new(0));
        let began = std::time::Instant::now();
        let reader = self.cluster.storage().get_reader(key);
        self.fetch_nanos += began.elapsed().as_nanos() as u64;
        let reader = reader.map_err(|e| format!("object \"{key}\": {e}"))?;
        let counted = Counted {
            inner: reader,
            n: fetched.clone(),
            nanos: nanos.clone(),
        };
        let mut stream = envelope::open_stream(Box::new(counted))
            .map_err(|e| format!("object \"{key}\" is corrupt: {e}"))?;
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
                        break Err(format!("could not write it: {e}"));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(format!("object \"{key}\" is corrupt: {e}")),
            }
        };
        self.fetched += fetched.load(Ordering::Relaxed);
        self.fetch_nanos += nanos.load(Ordering::Relaxed);
        result?;
        let digest = match stream.verified_digest() {
            Some(d) if !hashing && d.kind == DigestKind::Blake3 => envelope::hex(&d.bytes),
            _ if !hashing => return Err(format!("object \"{key}\": its digest was not checked")),
            _ => hasher.finalize().to_hex().to_string(),
        };
        if len != f.payload_len() || digest != f.blake3 {
            return Err(format!(
                "content differs from the manifest ({len} bytes, BLAKE3 {digest}; manifest: {} bytes, {})",
                f.payload_len(),
                f.blake3
            ));
        }
        Ok(())
    }

    /// What `f`'s object holds for it, checked against the manifest
    /// (length and BLAKE3); a block-level entry without blocks holds
    /// nothing.
    pub(crate) fn read(&mut self, f: &ManifestFile) -> Result<Vec<u8>, String> {
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
            ));
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

/// The manifest and descriptor of complete backup `id`.
pub fn load_backup(
    cluster: &ClusterRepo,
    id: &str,
) -> Result<(PhysicalBackupInfo, Manifest), Error> {
    check_backup_id(id)?;
    let prefix = backup_prefix(cluster, id);
    let missing = |what: &str| Error::BadMetadata {
        location: cluster.location(),
        key: format!("{prefix}/{what}"),
        reason: format!("backup \"{id}\" has no {what}: it is not a complete backup"),
    };
    let info: PhysicalBackupInfo =
        load_json(cluster, &format!("{prefix}/{INFO_NAME}"))?.ok_or_else(|| missing(INFO_NAME))?;
    let manifest: Manifest = load_json(cluster, &format!("{prefix}/{MANIFEST_NAME}"))?
        .ok_or_else(|| missing(MANIFEST_NAME))?;
    Ok((info, manifest))
}

/// A backup and every backup its block-level entries rely on: `[0]` is the
/// backup itself, the last one is the chain's full.
pub struct Chain {
    pub backups: Vec<(PhysicalBackupInfo, Manifest)>,
    index: Vec<std::collections::HashMap<String, usize>>,
}

/// Load backup `id` and its ancestors, each complete.
pub fn load_chain(cluster: &ClusterRepo, id: &str) -> Result<Chain, Error> {
    let mut backups: Vec<(PhysicalBackupInfo, Manifest)> = Vec::new();
    let mut next = Some(id.to_string());
    while let Some(id) = next {
        if backups.iter().any(|(i, _)| i.backup_id == id) || backups.len() > 10_000 {
            return Err(Error::BadMetadata {
                location: cluster.location(),
                key: format!("{}/{INFO_NAME}", backup_prefix(cluster, &id)),
                reason: format!("backup \"{id}\" is its own ancestor"),
            });
        }
        let (info, manifest) = load_backup(cluster, &id)?;
        next = info.parent.clone();
        backups.push((info, manifest));
    }
    let index = backups
        .iter()
        .map(|(_, m)| {
            m.files
                .iter()
                .enumerate()
                .map(|(i, f)| (f.path.clone(), i))
                .collect()
        })
        .collect();
    Ok(Chain { backups, index })
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
        for (level, (info, manifest)) in self.backups.iter().enumerate() {
            let Some(&i) = self.index[level].get(path) else {
                return Err(format!(
                    "backup \"{}\" has no entry for it, which backup \"{}\" relies on",
                    info.backup_id,
                    out.last()
                        .map(|(id, _): &(&str, &ManifestFile)| *id)
                        .unwrap_or("?")
                ));
            };
            let f = &manifest.files[i];
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
            if let Err(reason) = read {
                let reason = if backup == id {
                    reason
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
            Err(e) => problems.push(Problem {
                file: format!("WAL {seg}"),
                reason: e.to_string(),
            }),
        }
    }
    Ok(problems)
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

/// What an `incremental` or `differential` is taken against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentChoice {
    Parent {
        parent: Box<PhysicalBackupInfo>,
        /// The chain's full.
        chain: String,
    },
    /// No usable parent: take a full, for this reason.
    Full { reason: String },
}

/// Choose the parent of a backup of `kind` among the complete `backups`
/// (oldest first) of a cluster now on `timeline`: the newest backup of the
/// newest chain for an incremental, that chain's full for a differential.
/// `unusable` names backups known to have failed verification.
pub fn choose_parent(
    backups: &[PhysicalBackupInfo],
    kind: BackupKind,
    timeline: u32,
    unusable: &std::collections::HashSet<String>,
) -> ParentChoice {
    let full = |reason: String| ParentChoice::Full { reason };
    let Some(head) = backups.iter().rev().find(|b| b.kind == BackupKind::Full) else {
        return full("no full backup in this repository".into());
    };
    let parent = if kind == BackupKind::Differential {
        head
    } else {
        backups
            .iter()
            .rev()
            .find(|b| b.backup_id == head.backup_id || b.chain == head.backup_id)
            .unwrap_or(head)
    };
    for b in [head, parent] {
        if unusable.contains(&b.backup_id) {
            return full(format!(
                "backup \"{}\", which it would rely on, failed verification",
                b.backup_id
            ));
        }
    }
    if parent.timeline != timeline {
        return full(format!(
            "the timeline changed: backup \"{}\" is on timeline {}, the cluster is on {timeline}",
            parent.backup_id, parent.timeline
        ));
    }
    ParentChoice::Parent {
        parent: Box::new(parent.clone()),
        chain: head.backup_id.clone(),
    }
}

/// Rebuild backup `id` into `target`, which must be empty or absent: every
/// directory, then every file, each object checked against its manifest.
/// A block-level file is rebuilt in place: the whole file from the chain's
/// backup that holds it, then each newer backup's blocks and length, in
/// order. Writes no recovery settings (the caller does). Returns the
/// descriptor.
pub fn restore_backup(
    cluster: &ClusterRepo,
    id: &str,
    target: &Path,
) -> Result<PhysicalBackupInfo, Error> {
    restore_backup_with(cluster, id, target, &std::collections::HashMap::new())
}

/// [`restore_backup`], with each tablespace (by oid) restored into the
/// location `tablespaces` gives, or else where it was. Each location must
/// be empty or absent; `pg_tblspc/<oid>` becomes a link to it.
pub fn restore_backup_with(
    cluster: &ClusterRepo,
    id: &str,
    target: &Path,
    tablespaces: &std::collections::HashMap<String, PathBuf>,
) -> Result<PhysicalBackupInfo, Error> {
    let opts = crate::restore::Options {
        jobs: 1,
        delta: false,
        tablespaces: tablespaces.clone(),
        tablespace_root: None,
    };
    Ok(crate::restore::rebuild(cluster, id, target, &opts, &Default::default())?.info)
}

#[cfg(test)]
mod tests;
