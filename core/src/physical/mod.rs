//! Physical backups: the files of a data directory, stored in the
//! repository with a manifest, and rebuilt from it.
//!
//! # Layout
//!
//! ```text
//! clusters/<system id>/backup/<id>/data/<path, each component encoded>   one object per file
//! clusters/<system id>/backup/<id>/manifest(.copy)     the manifest's root (see `manifest`)
//! clusters/<system id>/backup/<id>/manifest.d/<n>      its segments: every file's size, BLAKE3, key
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

mod catalog;
pub mod checksum;
pub mod increment;
pub mod lease;
mod manifest;
mod parent;
mod store;
mod verify;
mod walk;
pub use catalog::*;
pub use checksum::{BadPage, PageCheck};
pub use increment::{Basis, BLOCK};
pub use manifest::*;
pub use parent::*;
pub use store::*;
pub use verify::*;
pub use walk::*;

/// The version of `backup.info`, `manifest` and `backup.index` this pg_ark
/// writes and reads (checked first by `load_versioned`).
pub const PHYSICAL_INFO_VERSION: u32 = 1;
pub const INFO_NAME: &str = "backup.info";
pub const MANIFEST_NAME: &str = "manifest";

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

/// The key of backup `id`'s descriptor.
pub fn descriptor_key(cluster: &ClusterRepo, id: &str) -> String {
    format!("{}/{INFO_NAME}", backup_prefix(cluster, id))
}

/// The S3 Object Lock of backup `id`, where the storage reports one: its
/// descriptor's (mode, retain-until), which, written last, is locked
/// longest.
pub fn backup_lock(
    cluster: &ClusterRepo,
    id: &str,
) -> Result<Option<(String, Option<i64>)>, Error> {
    Ok(cluster.storage().lock_state(&descriptor_key(cluster, id))?)
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
