//! The data directory walk: what a physical backup copies, by PostgreSQL's
//! own rules for a base backup (see the module documentation of
//! [`crate::physical`]).
use super::*;

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

/// The order of a backup's files: by path, with `global/pg_control` last
/// (it is copied last), as the walk lists them and a manifest is read.
pub fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    const LAST: &str = "global/pg_control";
    (a == LAST, a).cmp(&(b == LAST, b))
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
            // A link is followed; anything else is stat'ed through its
            // directory (`fstatat`), without resolving its path again.
            let meta = if ft.is_symlink() {
                fs::metadata(&path)
            } else {
                entry.metadata()
            }
            .map_err(|e| io_err("stat", &path, e))?;
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
    out.files.sort_by(|a, b| path_order(&a.path, &b.path));
    Ok(out)
}
