//! The local file-system backend (`file:///path`), the embedded default.
//!
//! Durability follows PostgreSQL's own `durable_rename()` and contrib
//! basic_archive: write to a unique temporary name in the target directory,
//! fsync the file, move it into place, fsync the directory. Every directory
//! created on the way is fsync'd into its parent.
//!
//! `PutMode::Create` moves the temporary file into place with `link(2)`,
//! which fails atomically with `EEXIST` if the key exists, so two writers can
//! never both "create" the same object and an existing one is never replaced.
//! `PutMode::Overwrite` uses `rename(2)`.
//!
//! `put_stream` is `put` with the temporary file written as the data arrives
//! (a chunk at a time, so memory stays bounded); `PutMode::Create` checks
//! for an existing key before reading anything, so a doomed upload does not
//! stream a whole body first, and `link(2)` decides at the end. A failing
//! reader removes the temporary file and leaves nothing under the key.
//!
//! Temporary files are named `.ark-tmp.<pid>.<nanos>.<n>` and are never
//! listed; a crash can leave one behind, which `list` ignores, a later `put`
//! does not mind, and `remove_stale_temporaries` removes once its process is
//! gone (the archiver calls it when it opens the repository).
use super::{validate_key, ObjectInfo, PutMode, Storage, StorageError};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const TMP_PREFIX: &str = ".ark-tmp.";
/// `put_stream` moves data in chunks of this size: memory stays bounded.
const STREAM_CHUNK: usize = 256 * 1024;

pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage rooted at `root`, which is created if missing.
    pub fn open(root: &Path) -> Result<LocalStorage, StorageError> {
        let s = LocalStorage {
            root: root.to_path_buf(),
        };
        s.create_dirs(root)
            .map_err(|e| s.io("create directory", "", e))?;
        Ok(s)
    }

    fn io(&self, op: &'static str, key: &str, source: std::io::Error) -> StorageError {
        StorageError::Io {
            op,
            key: key.to_string(),
            location: self.location(),
            source,
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// Write a new object through a temporary file: `write` fills it (and
    /// names the failed operation on error), then it is fsync'd and moved
    /// into place as `mode` says, and the directory fsync'd. On any error the
    /// temporary file is removed and nothing is left under `key`.
    fn store(
        &self,
        key: &str,
        mode: PutMode,
        write: impl FnOnce(&mut File) -> Result<u64, (&'static str, std::io::Error)>,
    ) -> Result<u64, StorageError> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.create_dirs(&dir)
            .map_err(|e| self.io("create directory for", key, e))?;
        let tmp = tmp_name(&dir);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| ("write", e))
            .and_then(|mut f| {
                let n = write(&mut f)?;
                f.sync_all().map_err(|e| ("write", e))?;
                Ok(n)
            });
        let size = match written {
            Ok(n) => n,
            Err((op, e)) => {
                let _ = fs::remove_file(&tmp);
                return Err(self.io(op, key, e));
            }
        };
        let placed = match mode {
            PutMode::Create => fs::hard_link(&tmp, &path).map(|()| {
                let _ = fs::remove_file(&tmp);
            }),
            PutMode::Overwrite => fs::rename(&tmp, &path),
        };
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            if e.kind() == ErrorKind::AlreadyExists {
                return Err(StorageError::AlreadyExists {
                    key: key.to_string(),
                    location: self.location(),
                });
            }
            return Err(self.io("store", key, e));
        }
        fsync_dir(&dir).map_err(|e| self.io("sync directory of", key, e))?;
        Ok(size)
    }

    /// `mkdir -p`, fsyncing each new directory's parent so the new entry
    /// itself is durable.
    fn create_dirs(&self, dir: &Path) -> std::io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dirs(parent)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Some(parent) = dir.parent() {
            fsync_dir(parent)?;
        }
        Ok(())
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn tmp_name(dir: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!("{TMP_PREFIX}{}.{nanos}.{n}", std::process::id()))
}

/// The pid in a temporary file's name, if it is one.
fn tmp_owner(name: &str) -> Option<u32> {
    name.strip_prefix(TMP_PREFIX)?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Whether process `pid` exists (it may belong to another user).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

impl Storage for LocalStorage {
    fn remove_stale_temporaries(&self, prefix: &str) -> Result<usize, StorageError> {
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.root.join(prefix.trim_end_matches('/'))
        };
        let mut removed = 0;
        let mut dirs = vec![start];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("list", prefix, e)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                match tmp_owner(&name) {
                    Some(pid) if pid != std::process::id() && !process_alive(pid) => {
                        match fs::remove_file(&path) {
                            Ok(()) => removed += 1,
                            Err(e) if e.kind() == ErrorKind::NotFound => {}
                            Err(e) => return Err(self.io("remove temporary file", &name, e)),
                        }
                    }
                    Some(_) => {}
                    None => {
                        if entry.file_type().is_ok_and(|t| t.is_dir()) {
                            dirs.push(path);
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path(key)?;
        fs::read(&path).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                StorageError::NotFound {
                    key: key.to_string(),
                    location: self.location(),
                }
            } else {
                self.io("read", key, e)
            }
        })
    }

    fn get_reader<'a>(
        &'a self,
        key: &str,
    ) -> Result<Box<dyn std::io::Read + Send + 'a>, StorageError> {
        let path = self.path(key)?;
        match fs::File::open(&path) {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => {
                Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
            }
            Ok(_) => Err(StorageError::NotFound {
                key: key.to_string(),
                location: self.location(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::NotFound {
                key: key.to_string(),
                location: self.location(),
            }),
            Err(e) => Err(self.io("read", key, e)),
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.len(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("stat", key, e)),
        }
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StorageError> {
        self.store(key, mode, |f| {
            f.write_all(data).map_err(|e| ("write", e))?;
            Ok(data.len() as u64)
        })
        .map(|_| ())
    }

    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn Read,
        mode: PutMode,
    ) -> Result<u64, StorageError> {
        if mode == PutMode::Create && self.head(key)?.is_some() {
            return Err(StorageError::AlreadyExists {
                key: key.to_string(),
                location: self.location(),
            });
        }
        self.store(key, mode, |f| {
            let mut buf = vec![0u8; STREAM_CHUNK];
            let mut total = 0u64;
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => return Ok(total),
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(("read the data for", e)),
                };
                f.write_all(&buf[..n]).map_err(|e| ("write", e))?;
                total += n as u64;
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut out = Vec::new();
        // Walk only the deepest directory the prefix names completely.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("list", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io("list", prefix, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let ft = entry.file_type().map_err(|e| self.io("list", prefix, e))?;
                let path = entry.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel.to_string_lossy().to_string();
                if ft.is_dir() {
                    // Descend only where keys below can still match.
                    let as_dir = format!("{key}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push(path);
                    }
                } else if ft.is_file() && key.starts_with(prefix) {
                    let size = entry
                        .metadata()
                        .map_err(|e| self.io("stat", &key, e))?
                        .len();
                    out.push(ObjectInfo { key, size });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    fsync_dir(dir).map_err(|e| self.io("sync directory of", key, e))?;
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("delete", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_storage_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(&dir.path().join("repo")).unwrap();
        super::super::conformance::run_all(&s);
    }

    #[test]
    fn stale_temporaries_of_dead_writers_are_removed_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        s.put("wal/a/x", b"kept", PutMode::Create).unwrap();
        // A pid that does not exist (beyond pid_max) and our own, live one.
        let dead = dir.path().join("wal/a/.ark-tmp.2147483647.1.0");
        let live = dir
            .path()
            .join(format!("wal/a/.ark-tmp.{}.1.0", std::process::id()));
        fs::write(&dead, b"partial").unwrap();
        fs::write(&live, b"in flight").unwrap();
        assert_eq!(s.remove_stale_temporaries("wal/").unwrap(), 1);
        assert!(!dead.exists());
        assert!(live.exists());
        assert_eq!(s.get("wal/a/x").unwrap(), b"kept");
        assert_eq!(s.remove_stale_temporaries("nothing/here/").unwrap(), 0);
    }

    #[test]
    fn temporary_files_are_never_listed_nor_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        s.put("a/b", b"x", PutMode::Create).unwrap();
        assert!(s.put("a/b", b"y", PutMode::Create).is_err());
        // a crash between write and rename leaves a temp file: not an object
        fs::write(
            dir.path().join("a").join(format!("{TMP_PREFIX}123")),
            b"partial",
        )
        .unwrap();
        let keys: Vec<String> = s.list("").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec!["a/b".to_string()]);
        let leftovers = fs::read_dir(dir.path().join("a")).unwrap().count();
        assert_eq!(
            leftovers, 2,
            "only the object and the simulated crash leftover"
        );
    }

    #[test]
    fn a_failed_put_stream_removes_its_temporary_file() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("producer died"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let e = s
            .put_stream("a/b", &mut Failing(3 * STREAM_CHUNK + 5), PutMode::Create)
            .unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "could not read the data for \"a/b\" in file://{}: producer died",
                dir.path().display()
            )),
            "{e}"
        );
        assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 0);
    }

    #[test]
    fn errors_name_key_and_location() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let e = s.get("missing/key").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "object \"missing/key\" not found in file://{}",
                dir.path().display()
            )
        );
    }
}
