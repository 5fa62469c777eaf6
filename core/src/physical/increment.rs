//! Block-level increments: which 8 KiB blocks of a relation file changed
//! since a reference LSN, and storing only those.
//!
//! # The rule (page LSNs)
//!
//! A block of a relation file is stored when
//! - it lies at or beyond the parent's length of the file (new), or
//! - its page LSN is 0 (a new, zeroed or never WAL-logged page: storing it
//!   costs nothing and never resurrects the parent's old content), or
//! - its page LSN is at or after the reference LSN: the parent's start (the
//!   redo point of its checkpoint) for an incremental, the full's for a
//!   differential.
//!
//! Every other block is as it was at the reference point: every change
//! after it is WAL-logged with a later LSN, and the checkpoint of
//! `pg_backup_start` flushed every change before this backup's start. A
//! page written while it is read is repaired by WAL replay from this
//! backup's start, as for a full backup. Changes without WAL that leave the
//! LSN alone are hint bits (harmless) and `wal_level = minimal`, which needs
//! `archive_mode = off` and so leaves a gap in the archive: the job checks
//! that the WAL from the parent's start to its own start is all in the
//! repository, and takes a full when it is not.
//!
//! Only main and init forks of relations are stored by block
//! (`base/<db>/<n>[_init][.<seg>]`, `global/<n>...`, and
//! `pg_tblspc/<oid>/PG_<version>/<db>/<n>...` in tablespaces). Free-space
//! maps are not WAL-logged page by page, and visibility maps are not either:
//! until recently PostgreSQL cleared a map bit (heap insert, update, delete)
//! without registering the map page in the WAL record or changing its LSN,
//! so neither the page LSN nor a WAL summary shows that the page changed
//! (pgsql-hackers, 2026, "Why clearing the VM doesn't require registering
//! vm buffer in wal record"). Both are stored whole on every major and
//! minor, as is every other file, and any relation file whose length is not
//! a whole number of blocks. One map page covers about 32,000 heap pages.
//!
//! # Databases copied whole
//!
//! `CREATE DATABASE ... STRATEGY FILE_COPY` and `ALTER DATABASE ... SET
//! TABLESPACE` copy a database directory file by file, without WAL for
//! the blocks: the copies keep the template's page LSNs, which may be older
//! than the parent's start. A database directory that is not the parent's
//! is stored whole:
//! - from WAL summaries, a limit block on relfilenode 0 of a database (what
//!   the summarizer records for those copies and for `DROP DATABASE`), as
//!   PostgreSQL's own `GetFileBackupMethod` does;
//! - always, when the directory's identity (its inode and birth time, see
//!   [`database_identity`]) differs from the one the parent's manifest
//!   records, or either has none.
use super::{data_key, io_err, ManifestFile, Padded, SourceFile};
use crate::repo::compress::Compression;
use crate::repo::envelope;
use crate::repo::ClusterRepo;
use crate::Error;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const BLOCK: u64 = 8192;

/// What an incremental or differential is taken against.
#[derive(Debug, Clone, Default)]
pub struct Basis {
    /// Blocks with a page LSN at or after this are stored.
    pub reference_lsn: u64,
    /// The parent's files that may be stored by block, and their lengths:
    /// every file of a format-1 parent; of a format-2 one, filled from
    /// `parent_root` by [`Basis::read_parent`] once the walk is done.
    pub parent_sizes: HashMap<String, u64>,
    /// The parent's segments whose shape the walk found again: each of
    /// their files is as long as the parent's (see [`Basis::parent_len`]),
    /// without a copy of every path.
    pub same_shape: std::collections::HashSet<String>,
    /// The parent's manifest root (format 2): the segments an unchanged
    /// one of this backup refers to.
    pub parent_root: Option<super::Root>,
    /// The blocks WAL changed from the reference LSN to this backup's
    /// start, from PostgreSQL's WAL summaries (17+): when present, only
    /// those blocks are read, and page LSNs are not compared.
    pub summary: Option<HashMap<RelFork, ForkChanges>>,
    /// The identity of each database directory in the parent (its
    /// manifest's `databases`).
    pub parent_databases: BTreeMap<String, String>,
    /// The identity of each database directory now ([`DataDirectory`]'s
    /// `databases`, from the walk of this backup).
    ///
    /// [`DataDirectory`]: super::DataDirectory
    pub databases: BTreeMap<String, String>,
}

impl Basis {
    /// `path`, `size` bytes long now, is stored by block: the parent has
    /// it, it is a main or init fork of whole blocks, and its database
    /// directory is the parent's.
    pub fn by_block(&self, path: &str, size: u64) -> bool {
        self.parent_len(path, size).is_some()
            && is_block_file(path)
            && size.is_multiple_of(BLOCK)
            && !self.database_copied(path)
    }

    /// The length of `path` in the parent, if the parent has it; `size` is
    /// its length now, from the walk.
    pub fn parent_len(&self, path: &str, size: u64) -> Option<u64> {
        self.parent_sizes.get(path).copied().or_else(|| {
            (!self.same_shape.is_empty() && self.same_shape.contains(&super::segment_of(path)))
                .then_some(size)
        })
    }

    /// `path`, `size` bytes long now, is the parent's file, whole, without
    /// opening it: it is stored by block, the WAL summaries name no block
    /// of it, and the walk found it as long as the parent's. (Growth after
    /// the walk is this backup's WAL's to replay, as it is for a file read
    /// before it grows.)
    pub fn unchanged_by_summary(&self, path: &str, size: u64) -> bool {
        let Some(summary) = &self.summary else {
            return false;
        };
        self.parent_len(path, size) == Some(size)
            && self.by_block(path, size)
            && rel_fork(path).is_some_and(|(fork, _)| !summary.contains_key(&fork))
    }

    /// The database directory of relation file `path` was copied whole
    /// (created, moved or re-created) since the parent, or may have been.
    /// `global/` is no database directory and is never copied.
    pub fn database_copied(&self, path: &str) -> bool {
        let Some((dir, _)) = path.rsplit_once('/') else {
            return false;
        };
        if dir == "global" {
            return false;
        }
        if let (Some(summary), Some((fork, _))) = (&self.summary, rel_fork(path)) {
            let whole = RelFork {
                relfilenode: 0,
                fork: 0,
                ..fork
            };
            if summary.contains_key(&whole) {
                return true;
            }
        }
        match (self.databases.get(dir), self.parent_databases.get(dir)) {
            (Some(now), Some(then)) => now != then,
            _ => true,
        }
    }
}

/// The identity of a database directory: its inode and its birth time
/// (statx), which every way of making a database directory gives anew
/// (`CREATE DATABASE` with either strategy, `ALTER DATABASE SET
/// TABLESPACE`, a restore) and nothing else changes: not a chmod or chown,
/// not a remount (no device number), not crash recovery rewriting
/// `PG_VERSION`. Another directory under the same path, even one re-created
/// under the same OID, has another one. Where the file system keeps no
/// birth time, the inode and change time of its `PG_VERSION` stand in;
/// without either there is none, and the directory is stored whole.
pub fn database_identity(
    dir: &std::fs::Metadata,
    version: Option<&std::fs::Metadata>,
) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(born) = dir.created() {
        let t = born
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return Some(format!(
            "{}:b{}.{:09}",
            dir.ino(),
            t.as_secs(),
            t.subsec_nanos()
        ));
    }
    version.map(|v| {
        format!(
            "{}:v{}:c{}.{:09}",
            dir.ino(),
            v.ino(),
            v.ctime(),
            v.ctime_nsec()
        )
    })
}

/// A database directory: `base/<db>` or `pg_tblspc/<oid>/PG_<version>/<db>`
/// (in a tablespace, PostgreSQL makes it without a `PG_VERSION`).
pub fn is_database_dir(path: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["base", db] => digits(db),
        ["pg_tblspc", oid, version, db] => digits(oid) && version.starts_with("PG_") && digits(db),
        _ => false,
    }
}

/// A relation fork as WAL summaries name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelFork {
    pub tablespace: u32,
    pub database: u32,
    pub relfilenode: u32,
    /// 0 main, 1 free space map, 2 visibility map, 3 init.
    pub fork: u8,
}

/// What the WAL summaries say of one relation fork.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForkChanges {
    /// The fork was created or truncated to this many blocks in the range:
    /// every block from here on is new.
    pub limit: Option<u32>,
    /// Blocks WAL modified (relation block numbers, any order).
    pub blocks: Vec<u32>,
}

/// The default and global tablespaces' oids.
pub const DEFAULTTABLESPACE_OID: u32 = 1663;
pub const GLOBALTABLESPACE_OID: u32 = 1664;

/// The relation fork and segment number of a relation file's path.
pub fn rel_fork(path: &str) -> Option<(RelFork, u64)> {
    let num = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (tablespace, database, name) = match parts.as_slice() {
        ["global", name] => (GLOBALTABLESPACE_OID, 0, *name),
        ["base", db, name] => (DEFAULTTABLESPACE_OID, num(db)?, *name),
        ["pg_tblspc", spc, version, db, name] if version.starts_with("PG_") => {
            (num(spc)?, num(db)?, *name)
        }
        _ => return None,
    };
    let (stem, segment) = match name.split_once('.') {
        Some((s, seg)) => (s, u64::from(num(seg)?)),
        None => (name, 0),
    };
    let (rel, fork) = match stem.split_once('_') {
        None => (stem, 0),
        Some((rel, "fsm")) => (rel, 1),
        Some((rel, "vm")) => (rel, 2),
        Some((rel, "init")) => (rel, 3),
        Some(_) => return None,
    };
    Some((
        RelFork {
            tablespace,
            database,
            relfilenode: num(rel)?,
            fork,
        },
        segment,
    ))
}

/// The blocks of segment `segment` of a fork, `nblocks` long now and
/// `parent_blocks` long in the parent, that `changes` (from WAL
/// summaries) say to store: the modified ones, every one from the limit
/// block on, and every one beyond the parent's length.
pub fn listed_blocks(
    changes: Option<&ForkChanges>,
    segment: u64,
    nblocks: u64,
    parent_blocks: u64,
) -> Vec<u32> {
    let first = segment * super::checksum::RELSEG_BLOCKS;
    let mut out: Vec<u64> = Vec::new();
    if let Some(ch) = changes {
        out.extend(
            ch.blocks
                .iter()
                .map(|&b| u64::from(b))
                .filter(|&b| b >= first)
                .map(|b| b - first)
                .filter(|&b| b < nblocks),
        );
        if let Some(limit) = ch.limit {
            out.extend(u64::from(limit).saturating_sub(first)..nblocks);
        }
    }
    out.extend(parent_blocks.min(nblocks)..nblocks);
    out.sort_unstable();
    out.dedup();
    out.into_iter()
        .filter_map(|b| u32::try_from(b).ok())
        .collect()
}

/// A relation fork that is stored block by block: a main or init fork.
pub fn is_block_file(path: &str) -> bool {
    relation_fork(path).is_some_and(|fork| fork.is_empty() || fork == "init")
}

/// A file a manifest may hold by block: what [`is_block_file`] stores by
/// block, and visibility map forks, which pg_ark 0.1.0 stored by block
/// too (its incrementals are still read).
pub fn may_be_block_level(path: &str) -> bool {
    relation_fork(path).is_some_and(|fork| matches!(fork, "" | "init" | "vm"))
}

/// A file of any fork of a relation (main, `fsm`, `vm`, `init`).
pub fn is_relation_file(path: &str) -> bool {
    relation_fork(path).is_some()
}

/// The fork suffix of relation file `path` (`""` for the main fork), if it
/// is a relation file.
fn relation_fork(path: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = path.split('/').collect();
    let (dir_ok, name) = match parts.as_slice() {
        ["global", name] => (true, *name),
        ["base", db, name] => (digits(db), *name),
        // pg_tblspc/<oid>/PG_<major>_<catversion>/<db>/<file>
        ["pg_tblspc", oid, version, db, name] => (
            digits(oid) && version.starts_with("PG_") && digits(db),
            *name,
        ),
        _ => (false, ""),
    };
    if !dir_ok {
        return None;
    }
    let (stem, segment) = match name.split_once('.') {
        Some((s, seg)) => (s, Some(seg)),
        None => (name, None),
    };
    if segment.is_some_and(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let (number, fork) = match stem.split_once('_') {
        None => (stem, ""),
        Some((n, f @ ("fsm" | "vm" | "init"))) => (n, f),
        Some(_) => return None,
    };
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then_some(fork)
}

/// The LSN in a page header (`pd_lsn`: two native-endian 32-bit halves).
pub fn page_lsn(page: &[u8]) -> u64 {
    let half = |r: std::ops::Range<usize>| {
        page.get(r)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_ne_bytes)
            .unwrap_or(0)
    };
    (u64::from(half(0..4)) << 32) | u64::from(half(4..8))
}

/// Parse an LSN written as PostgreSQL prints it (see [`crate::wal::lsn`]).
pub use crate::wal::lsn::parse as parse_lsn;

/// The blocks of the first `len` bytes of `file` that the rule stores.
fn changed_blocks(
    file: &fs::File,
    path: &Path,
    len: u64,
    parent_len: u64,
    reference_lsn: u64,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<Vec<u32>, Error> {
    let mut changed = Vec::new();
    let mut buf = vec![0u8; 128 * BLOCK as usize];
    let mut reader = Padded {
        inner: file,
        left: len,
        ended: false,
    };
    let parent_blocks = parent_len / BLOCK;
    let mut block: u64 = 0;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = reader
                .read(&mut buf[filled..])
                .map_err(|e| io_err("read", path, e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        for page in buf[..filled].chunks(BLOCK as usize) {
            each(block, page);
            let lsn = page_lsn(page);
            if block >= parent_blocks || lsn == 0 || lsn >= reference_lsn {
                changed.push(u32::try_from(block).map_err(|_| {
                    io_err(
                        "read",
                        path,
                        std::io::Error::other("more than 2^32 blocks in one file"),
                    )
                })?);
            }
            block += 1;
        }
    }
    Ok(changed)
}

/// Reads the listed blocks of a file, in order (zeros where the file has
/// been truncated meanwhile).
struct Blocks<'a> {
    file: &'a fs::File,
    blocks: &'a [u32],
    next: usize,
    page: Vec<u8>,
    at: usize,
    /// Check each page read (blocks listed from WAL summaries are read only
    /// here).
    check: Option<(&'a super::PageCheck, &'a str)>,
}

impl Read for Blocks<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.page.len() {
            let Some(&b) = self.blocks.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.page.fill(0);
            let mut filled = 0;
            while filled < self.page.len() {
                let n = self.file.read_at(
                    &mut self.page[filled..],
                    u64::from(b) * BLOCK + filled as u64,
                )?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if let Some((check, path)) = self.check {
                if filled == self.page.len() {
                    check.check(self.file, path, u64::from(b), &self.page);
                }
            }
            self.at = 0;
        }
        let n = out.len().min(self.page.len() - self.at);
        out[..n].copy_from_slice(&self.page[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// How an increment finds its changed blocks.
pub(super) enum Changed<'a> {
    /// Read every block and compare its page LSN with this.
    PageLsn(u64),
    /// WAL summaries: read only these blocks (of this fork and segment).
    Listed(Option<&'a ForkChanges>, u64),
}

/// Store the changed blocks of `f`, whose parent copy was `parent_len`
/// bytes long. `Ok(None)`: the file vanished (a dropped relation).
#[allow(clippy::too_many_arguments)]
pub(super) fn store_increment(
    cluster: &ClusterRepo,
    prefix: &str,
    pgdata: &Path,
    f: &SourceFile,
    parent_len: u64,
    changed: Changed<'_>,
    (compression, level): (Compression, i32),
    pages: Option<&super::PageCheck>,
) -> Result<Option<ManifestFile>, Error> {
    let path = pgdata.join(&f.path);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path, e)),
    };
    let len = file.metadata().map_err(|e| io_err("stat", &path, e))?.len();
    let (blocks, listed) = match changed {
        Changed::PageLsn(reference_lsn) => (
            changed_blocks(
                &file,
                &path,
                len,
                parent_len,
                reference_lsn,
                |block, page| {
                    if let Some(check) = pages {
                        check.check(&file, &f.path, block, page);
                    }
                },
            )?,
            false,
        ),
        Changed::Listed(changes, segment) => (
            listed_blocks(changes, segment, len.div_ceil(BLOCK), parent_len / BLOCK),
            true,
        ),
    };
    let key = data_key(prefix, &f.path);
    if blocks.is_empty() {
        return Ok(Some(super::unchanged_entry(f.path.clone(), len)));
    }
    let payload = blocks.len() as u64 * BLOCK;
    let (stored, digest) = {
        let reader = Blocks {
            file: &file,
            blocks: &blocks,
            next: 0,
            page: vec![0u8; BLOCK as usize],
            at: BLOCK as usize,
            check: pages.filter(|_| listed).map(|p| (p, f.path.as_str())),
        };
        super::store::seal_and_put(cluster, &key, reader, payload, (compression, level), &path)?
    };
    Ok(Some(ManifestFile {
        path: f.path.clone(),
        size: len,
        blake3: envelope::hex(&digest),
        key,
        stored,
        blocks: Some(blocks),
        offset: None,
    }))
}
