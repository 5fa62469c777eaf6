//! Restore: rebuild a physical backup into a data directory, and plan
//! recovery to a target (`plan`), from the repository alone.
//!
//! # Rebuilding ([`rebuild`])
//!
//! - Every directory of the manifest, then every file, rebuilt in place: the
//!   whole file from the chain's backup that holds it, then each newer
//!   backup's blocks and length. No staging copy of any backup.
//! - Files are rebuilt by `jobs` threads at once. Files that share a bundle
//!   are rebuilt by the same thread, so each bundle is downloaded once.
//! - Every object is checked against its envelope's digest and against the
//!   manifest (length and BLAKE3) before a byte of it is written; a
//!   mismatch stops the restore with the file and the object named.
//! - Every path comes from a manifest and must stay inside the target
//!   directory (no empty, `.` or `..` component); every object key must lie
//!   inside the cluster's `backup/` folder.
//! - **Never destroys data**: a directory holding a running cluster (a
//!   `postmaster.pid` whose process is alive) is always refused; a non-empty
//!   directory or tablespace location is refused unless `delta`.
//! - **Delta**: the directory holds an old copy of the cluster. A file
//!   stored whole is kept when its length and BLAKE3 match the manifest; a
//!   block-level file whose content matches the whole file its chain starts
//!   from gets only the newer blocks. Everything else is rewritten, and
//!   files and directories that the backup does not have are removed.
use crate::physical::{
    self, io_err, Chain, ManifestFile, ObjectError, Objects, PhysicalBackupInfo, BLOCK,
};
use crate::repo::ClusterRepo;
use crate::Error;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

pub mod drill;
pub mod inventory;
pub mod plan;
pub mod wal_scan;

/// How to rebuild.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Threads (at least 1).
    pub jobs: usize,
    pub delta: bool,
    /// Tablespace oid → the location to restore it into (default: where it
    /// was).
    pub tablespaces: HashMap<String, PathBuf>,
    /// Every tablespace not in `tablespaces` goes to `<root>/<oid>` instead
    /// of where it was (a drill's scratch cluster never writes outside its
    /// directory).
    pub tablespace_root: Option<PathBuf>,
}

/// Progress, shared with whoever shows it.
#[derive(Debug, Default)]
pub struct Counters {
    pub files_total: AtomicU64,
    pub files_done: AtomicU64,
    /// Bytes of the restored files (their lengths).
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
    /// Stored bytes downloaded.
    pub fetched: AtomicU64,
    /// Time the threads spent waiting on the repository, summed
    /// (nanoseconds).
    pub fetch_nanos: AtomicU64,
    /// Files kept as they were (delta).
    pub kept: AtomicU64,
    pub cancel: AtomicBool,
}

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct Report {
    pub info: PhysicalBackupInfo,
    pub files: u64,
    pub bytes: u64,
    /// Stored bytes downloaded.
    pub fetched: u64,
    /// Files kept as they were (delta), and those that got only new blocks.
    pub kept: u64,
    pub patched: u64,
    /// Files and directories removed (delta).
    pub removed: u64,
}

fn refused(target: &Path, reason: String, hint: &str) -> Error {
    Error::RestoreRefused {
        path: target.display().to_string(),
        reason,
        hint: hint.to_string(),
    }
}

/// A `postmaster.pid` in `dir` whose process is alive: its PID.
pub fn live_postmaster(dir: &Path) -> Option<i32> {
    let text = fs::read_to_string(dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    if pid <= 0 {
        return None;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive.then_some(pid)
}

fn is_empty_dir(p: &Path) -> bool {
    match fs::read_dir(p) {
        Ok(mut e) => e.next().is_none(),
        Err(_) => true,
    }
}

fn mkdir(p: &Path) -> Result<(), Error> {
    fs::create_dir_all(p).map_err(|e| io_err("create directory", p, e))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o700)).map_err(|e| io_err("chmod", p, e))
}

/// Check the target before anything is written.
pub fn check_target(target: &Path, delta: bool) -> Result<(), Error> {
    if let Some(pid) = live_postmaster(target) {
        return Err(refused(
            target,
            format!(
                "it holds a running cluster (postmaster.pid names process {pid}, which is alive)"
            ),
            "Stop that server first (pg_ctl -D DIR stop), or restore into another directory.",
        ));
    }
    if target.exists() && !target.is_dir() {
        return Err(refused(
            target,
            "it is not a directory".into(),
            "Give a directory to restore into.",
        ));
    }
    if !delta && !is_empty_dir(target) {
        return Err(refused(
            target,
            "the directory is not empty".into(),
            "Restore into an empty or absent directory, or pass --delta to reuse an old copy of this cluster in it.",
        ));
    }
    Ok(())
}

/// A manifest path, as a path below `target`.
fn inside(target: &Path, rel: &str, manifest_key: &str, location: &str) -> Result<PathBuf, Error> {
    let ok = !rel.is_empty()
        && rel.split('/').all(|c| {
            !c.is_empty() && c != "." && c != ".." && !c.contains('\\') && !c.contains('\0')
        });
    if ok {
        Ok(target.join(rel))
    } else {
        Err(Error::BadMetadata {
            location: location.to_string(),
            key: manifest_key.to_string(),
            reason: format!("the path \"{rel}\" would lie outside the target directory"),
        })
    }
}

fn blake3_of_file(path: &Path) -> Option<(u64, String)> {
    let mut f = fs::File::open(path).ok()?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Some((len, h.finalize().to_hex().to_string()))
}

/// Remove what `target` has and the manifest does not (delta).
fn remove_extra(
    target: &Path,
    rel: &str,
    files: &HashSet<&str>,
    dirs: &HashSet<String>,
    links: &HashSet<String>,
    removed: &mut u64,
) -> Result<(), Error> {
    let dir = if rel.is_empty() {
        target.to_path_buf()
    } else {
        target.join(rel)
    };
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    // Directly in a tablespace's location, only this major's own
    // `PG_<major>_…` folder is the backup's: another major's (after
    // pg_upgrade), or anything else there, is never touched.
    let tablespace_root = links.contains(rel);
    for e in entries {
        let e = e.map_err(|err| io_err("read directory", &dir, err))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if tablespace_root {
            let ours =
                dirs.contains(&child) || files.iter().any(|f| f.starts_with(&format!("{child}/")));
            if !ours {
                continue;
            }
        }
        let path = e.path();
        let meta = fs::symlink_metadata(&path).map_err(|err| io_err("stat", &path, err))?;
        if meta.file_type().is_symlink() {
            if links.contains(&child) {
                remove_extra(target, &child, files, dirs, links, removed)?;
            } else {
                fs::remove_file(&path).map_err(|err| io_err("remove", &path, err))?;
                *removed += 1;
            }
        } else if meta.is_dir() {
            remove_extra(target, &child, files, dirs, links, removed)?;
            let wanted =
                dirs.contains(&child) || files.iter().any(|f| f.starts_with(&format!("{child}/")));
            if !wanted {
                fs::remove_dir_all(&path).map_err(|err| io_err("remove", &path, err))?;
                *removed += 1;
            }
        } else if !files.contains(child.as_str()) {
            fs::remove_file(&path).map_err(|err| io_err("remove", &path, err))?;
            *removed += 1;
        }
    }
    Ok(())
}

/// One file's work.
struct Job<'c> {
    path: PathBuf,
    rel: String,
    layers: Vec<(&'c str, &'c ManifestFile)>,
}

/// What rebuilding one file did.
#[derive(PartialEq)]
enum Done {
    Written,
    Kept,
    Patched,
}

fn rebuild_file(
    job: &Job<'_>,
    delta: bool,
    objects: &mut Objects<'_>,
    manifest_key: &str,
    location: &str,
) -> Result<Done, Error> {
    // A damaged object names its file; the repository out of reach is a
    // storage error (transient: a drill or a job tries again).
    let bad = |key: &str, backup: &str, e: ObjectError| match e {
        ObjectError::Unreachable(e) => Error::Storage(e),
        ObjectError::Bad(reason) => Error::BadMetadata {
            location: location.to_string(),
            key: if key.is_empty() {
                manifest_key.to_string()
            } else {
                key.to_string()
            },
            reason: format!("\"{}\" (backup \"{backup}\"): {reason}", job.rel),
        },
    };
    let top = job.layers[0].1;
    let whole = job.layers[job.layers.len() - 1].1;
    // Which layers to apply, oldest first: all, or (delta) only the block
    // layers over a file that matches the chain's whole file.
    let mut skip_base = false;
    if delta {
        if let Ok(meta) = fs::symlink_metadata(&job.path) {
            if meta.is_file() {
                if let Some((len, digest)) = blake3_of_file(&job.path) {
                    if top.blocks.is_none() && len == top.size && digest == top.blake3 {
                        return Ok(Done::Kept);
                    }
                    if top.blocks.is_some() && len == whole.size && digest == whole.blake3 {
                        skip_base = true;
                    }
                }
            } else {
                // A directory or link where a file belongs.
                if meta.is_dir() {
                    fs::remove_dir_all(&job.path).map_err(|e| io_err("remove", &job.path, e))?;
                } else {
                    fs::remove_file(&job.path).map_err(|e| io_err("remove", &job.path, e))?;
                }
            }
        }
    }
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(!skip_base)
        .open(&job.path)
        .map_err(|e| io_err("create", &job.path, e))?;
    let layers = job.layers.iter().rev().skip(usize::from(skip_base));
    for &(backup, entry) in layers {
        if entry.blocks.is_none() && entry.offset.is_none() {
            // A whole file in its own object: streamed, never held whole.
            objects
                .stream_to(entry, &mut out)
                .map_err(|reason| bad(&entry.key, backup, reason))?;
            continue;
        }
        let data = objects
            .read(entry)
            .map_err(|reason| bad(&entry.key, backup, reason))?;
        match &entry.blocks {
            None => out
                .write_all(&data)
                .map_err(|e| io_err("write", &job.path, e))?,
            Some(blocks) => {
                use std::os::unix::fs::FileExt;
                out.set_len(entry.size)
                    .map_err(|e| io_err("truncate", &job.path, e))?;
                for (page, &b) in data.chunks(BLOCK as usize).zip(blocks) {
                    let at = u64::from(b) * BLOCK;
                    let n = (entry.size.saturating_sub(at)).min(BLOCK) as usize;
                    out.write_all_at(&page[..n], at)
                        .map_err(|e| io_err("write", &job.path, e))?;
                }
            }
        }
    }
    // fsync'd with all the others at the end (see `rebuild`); start the
    // write-back now, so it runs while other files are rebuilt.
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on an open file descriptor; a
        // failure only means the write-back starts later.
        unsafe {
            libc::sync_file_range(out.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    Ok(if skip_base {
        Done::Patched
    } else {
        Done::Written
    })
}

/// fsync every path (files and directories), `threads` at a time.
fn sync_paths(paths: &[&Path], threads: usize) -> Result<(), Error> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    crate::threads::with_signals_blocked(|| {
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = paths.get(i) else { return };
                    let r = fs::File::open(p).and_then(|f| f.sync_all());
                    if let Err(e) = r {
                        let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                        f.get_or_insert(io_err("fsync", p, e));
                        return;
                    }
                });
            }
        })
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Rebuild backup `id` into `target` (see the module documentation).
/// Writes no recovery settings: see [`write_recovery`].
pub fn rebuild(
    cluster: &ClusterRepo,
    id: &str,
    target: &Path,
    opts: &Options,
    counters: &Counters,
) -> Result<Report, Error> {
    check_target(target, opts.delta)?;
    let chain: Chain = physical::load_chain(cluster, id)?;
    let location = cluster.location();
    let manifest_key = format!(
        "{}/{}",
        physical::backup_prefix(cluster, id),
        physical::MANIFEST_NAME
    );
    let manifest = chain.manifest();
    // Every check before anything is written: paths, layers, tablespaces.
    let mut jobs = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        let path = inside(target, &f.path, &manifest_key, &location)?;
        let layers = chain.layers(&f.path).map_err(|reason| Error::BadMetadata {
            location: location.clone(),
            key: manifest_key.clone(),
            reason: format!("\"{}\": {reason}", f.path),
        })?;
        // Each object lies inside the prefix of the backup that lists it.
        for (backup, entry) in &layers {
            let own = format!("{}/", physical::backup_prefix(cluster, backup));
            if !entry.key.is_empty() && !entry.key.starts_with(&own) {
                return Err(Error::BadMetadata {
                    location: location.clone(),
                    key: manifest_key.clone(),
                    reason: format!(
                        "the object \"{}\" of \"{}\" lies outside backup \"{backup}\"",
                        entry.key, f.path
                    ),
                });
            }
        }
        jobs.push(Job {
            path,
            rel: f.path.clone(),
            layers,
        });
    }
    for d in &manifest.dirs {
        inside(target, d, &manifest_key, &location)?;
    }
    for oid in opts.tablespaces.keys() {
        if !manifest.tablespaces.iter().any(|t| &t.oid == oid) {
            let known: Vec<&str> = manifest
                .tablespaces
                .iter()
                .map(|t| t.oid.as_str())
                .collect();
            return Err(Error::InvalidLogicalRequest {
                reason: format!(
                    "the backup has no tablespace {oid} to map (its tablespaces: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
    }
    let mut links = Vec::new();
    for ts in &manifest.tablespaces {
        if ts.oid.is_empty() || !ts.oid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::BadMetadata {
                location: location.clone(),
                key: manifest_key.clone(),
                reason: format!("\"{}\" is not a tablespace oid", ts.oid),
            });
        }
        let loc = match (opts.tablespaces.get(&ts.oid), &opts.tablespace_root) {
            (Some(l), _) => l.clone(),
            (None, Some(root)) => root.join(&ts.oid),
            (None, None) => PathBuf::from(&ts.location),
        };
        if !loc.is_absolute() {
            return Err(Error::InvalidLogicalRequest {
                reason: format!(
                    "the location of tablespace {} must be an absolute path, not \"{}\"",
                    ts.oid,
                    loc.display()
                ),
            });
        }
        if !opts.delta && !is_empty_dir(&loc) {
            return Err(refused(
                &loc,
                format!(
                    "it is the location of tablespace {} and it is not empty",
                    ts.oid
                ),
                "Restore the tablespace elsewhere with --tablespace-map OID=DIR, or pass --delta.",
            ));
        }
        links.push((ts.oid.clone(), loc));
    }
    mkdir(target)?;
    mkdir(&target.join("pg_tblspc"))?;
    for (oid, loc) in &links {
        mkdir(loc)?;
        let link = target.join("pg_tblspc").join(oid);
        if let Ok(meta) = fs::symlink_metadata(&link) {
            if meta.file_type().is_symlink() && fs::read_link(&link).ok().as_deref() == Some(loc) {
                continue;
            }
            if meta.is_dir() {
                fs::remove_dir_all(&link).map_err(|e| io_err("remove", &link, e))?;
            } else {
                fs::remove_file(&link).map_err(|e| io_err("remove", &link, e))?;
            }
        }
        std::os::unix::fs::symlink(loc, &link).map_err(|e| io_err("link", &link, e))?;
    }
    let mut removed = 0;
    if opts.delta {
        let files: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        let dirs: HashSet<String> = manifest.dirs.iter().cloned().collect();
        let link_names: HashSet<String> = links
            .iter()
            .map(|(o, _)| format!("pg_tblspc/{o}"))
            .collect();
        remove_extra(target, "", &files, &dirs, &link_names, &mut removed)?;
    }
    for d in &manifest.dirs {
        mkdir(&target.join(d))?;
    }
    for j in &jobs {
        if let Some(parent) = j.path.parent() {
            if !parent.is_dir() {
                mkdir(parent)?;
            }
        }
    }
    // Units of work: the files of one bundle together.
    let mut units: Vec<Vec<usize>> = Vec::new();
    let mut by_bundle: HashMap<&str, usize> = HashMap::new();
    for (i, j) in jobs.iter().enumerate() {
        let base = j.layers[j.layers.len() - 1].1;
        if base.offset.is_some() {
            if let Some(&u) = by_bundle.get(base.key.as_str()) {
                units[u].push(i);
                continue;
            }
            by_bundle.insert(base.key.as_str(), units.len());
        }
        units.push(vec![i]);
    }
    // Largest first, so the last thread is not left with the biggest file.
    let size_of = |u: &Vec<usize>| -> u64 { u.iter().map(|&i| manifest.files[i].size).sum() };
    units.sort_by_key(|u| std::cmp::Reverse(size_of(u)));
    counters
        .files_total
        .store(jobs.len() as u64, Ordering::Relaxed);
    counters.bytes_total.store(
        manifest.files.iter().map(|f| f.size).sum(),
        Ordering::Relaxed,
    );
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let kept = AtomicU64::new(0);
    let patched = AtomicU64::new(0);
    let threads = opts.jobs.clamp(1, 64).min(units.len().max(1));
    crate::threads::with_signals_blocked(|| {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let mut objects = Objects::new(cluster);
                    loop {
                        if counters.cancel.load(Ordering::Relaxed) {
                            return;
                        }
                        let u = next.fetch_add(1, Ordering::Relaxed);
                        let Some(unit) = units.get(u) else { return };
                        for &i in unit {
                            let (before, before_nanos) = (objects.fetched, objects.fetch_nanos);
                            let r = rebuild_file(
                                &jobs[i],
                                opts.delta,
                                &mut objects,
                                &manifest_key,
                                &location,
                            );
                            counters
                                .fetched
                                .fetch_add(objects.fetched - before, Ordering::Relaxed);
                            counters
                                .fetch_nanos
                                .fetch_add(objects.fetch_nanos - before_nanos, Ordering::Relaxed);
                            match r {
                                Ok(done) => {
                                    if done == Done::Kept {
                                        kept.fetch_add(1, Ordering::Relaxed);
                                        counters.kept.fetch_add(1, Ordering::Relaxed);
                                    } else if done == Done::Patched {
                                        patched.fetch_add(1, Ordering::Relaxed);
                                    }
                                    counters.files_done.fetch_add(1, Ordering::Relaxed);
                                    counters
                                        .bytes_done
                                        .fetch_add(manifest.files[i].size, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    counters.cancel.store(true, Ordering::Relaxed);
                                    let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                                    if f.is_none() {
                                        *f = Some(e);
                                    }
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        })
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    // Durable before the restore says it is done: every file, then every
    // directory. Done at the end, by all threads, so the kernel writes back
    // while files are still being rebuilt instead of each thread waiting on
    // its own file's flush.
    let mut dirs: Vec<PathBuf> = manifest.dirs.iter().map(|d| target.join(d)).collect();
    dirs.push(target.to_path_buf());
    dirs.push(target.join("pg_tblspc"));
    dirs.extend(links.iter().map(|(_, l)| l.clone()));
    let paths: Vec<&Path> = jobs
        .iter()
        .map(|j| j.path.as_path())
        .chain(dirs.iter().map(PathBuf::as_path))
        .collect();
    sync_paths(&paths, threads)?;
    if counters.cancel.load(Ordering::Relaxed) {
        return Err(refused(
            target,
            "the restore was cancelled".into(),
            "Run it again; with --delta, what is already there is kept.",
        ));
    }
    let info = chain.info().clone();
    Ok(Report {
        files: jobs.len() as u64,
        bytes: manifest.files.iter().map(|f| f.size).sum(),
        fetched: counters.fetched.load(Ordering::Relaxed),
        kept: kept.into_inner(),
        patched: patched.into_inner(),
        removed,
        info,
    })
}

/// Write the recovery settings into `target`: `recovery.signal`, and in
/// `postgresql.auto.conf` (the backup's own, with earlier recovery
/// settings of pg_ark's taken out) `restore_command` and `settings`, and
/// `ark.archive_also` emptied: a restored copy has its source's system
/// identifier, and its new timeline's WAL must not reach the source's
/// pgBackRest stanza or directory (set it again to feed one of its own).
pub fn write_recovery(
    target: &Path,
    restore_command: &str,
    settings: &[(String, String)],
    archive_off: bool,
) -> Result<(), Error> {
    let auto = target.join("postgresql.auto.conf");
    let old = fs::read_to_string(&auto).unwrap_or_default();
    let ours = |line: &str| {
        let key = line.split('=').next().unwrap_or_default().trim();
        key == "restore_command"
            || key == "ark.archive_also"
            || key.starts_with("recovery_target")
            || (archive_off && key == "archive_mode")
    };
    let mut text: String = old
        .lines()
        .filter(|l| !ours(l) && !l.starts_with("# pg_ark restore"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str("# pg_ark restore: recovery settings\n");
    text.push_str(&format!(
        "restore_command = '{}'\n",
        restore_command.replace('\'', "''")
    ));
    for (k, v) in settings {
        text.push_str(&format!("{k} = {v}\n"));
    }
    if archive_off {
        text.push_str("archive_mode = 'off'\n");
    }
    text.push_str("ark.archive_also = ''\n");
    write_durably(&auto, text.as_bytes())?;
    write_durably(&target.join("recovery.signal"), b"")?;
    Ok(())
}

/// The file in a restored data directory that names the backup it came
/// from, so the server's pg_ark does not retry the job that took it (the
/// catalog in the backup still shows that job running).
pub const RESTORED_FROM: &str = "pg_ark/restored_from.json";

/// Write [`RESTORED_FROM`] into `target`.
pub fn mark_restored(target: &Path, info: &PhysicalBackupInfo) -> Result<(), Error> {
    mkdir(&target.join("pg_ark"))?;
    let doc = serde_json::json!({
        "backup_id": info.backup_id,
        "job_id": info.job_id,
        "system_identifier": info.system_identifier.to_string(),
    });
    write_durably(&target.join(RESTORED_FROM), doc.to_string().as_bytes())
}

/// The marker [`RESTORED_FROM`] in data directory `data`, if there is one
/// that can be read.
pub fn restored_marker(data: &Path) -> Option<serde_json::Value> {
    let text = fs::read_to_string(data.join(RESTORED_FROM)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Record in [`RESTORED_FROM`] that the restored cluster's schedules were
/// paused, so that they are paused once only (an administrator may resume
/// them). Written to a new file, then renamed over the marker.
pub fn record_schedules_paused(data: &Path) -> Result<(), Error> {
    let Some(mut doc) = restored_marker(data) else {
        return Ok(());
    };
    doc["schedules_paused"] = serde_json::json!(true);
    let path = data.join(RESTORED_FROM);
    let tmp = data.join(format!("{RESTORED_FROM}.tmp"));
    write_durably(&tmp, doc.to_string().as_bytes())?;
    fs::rename(&tmp, &path).map_err(|e| io_err("rename", &tmp, e))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("fsync", dir, e))?;
    }
    Ok(())
}

fn write_durably(path: &Path, data: &[u8]) -> Result<(), Error> {
    let mut f = fs::File::create(path).map_err(|e| io_err("create", path, e))?;
    f.write_all(data).map_err(|e| io_err("write", path, e))?;
    f.sync_all().map_err(|e| io_err("fsync", path, e))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err("chmod", path, e))
}
