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
//! Temporary files start with `.ark-tmp.` and are never listed; a crash can
//! leave one behind, which `list` ignores and a later `put` does not mind.
use super::{validate_key, ObjectInfo, PutMode, Storage, StorageError};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const TMP_PREFIX: &str = ".ark-tmp.";

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

impl Storage for LocalStorage {
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
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.create_dirs(&dir)
            .map_err(|e| self.io("create directory for", key, e))?;
        let tmp = tmp_name(&dir);
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(self.io("write", key, e));
        }
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
        fsync_dir(&dir).map_err(|e| self.io("sync directory of", key, e))
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
