//! Local work space for what must be staged before it goes to the
//! repository (today: directory-format pg_dump output).
//!
//! It lives outside the data directory: staged dumps must neither fill the
//! data volume nor be copied by a physical backup. Each job stages under
//! `job-<id>-<n>` in it, so the leftovers of a job whose worker died can be
//! found and swept.
use crate::Error;
use std::path::{Path, PathBuf};

/// The work directory: `configured` (absolute) or, when empty,
/// `/var/tmp/pg_ark-<system identifier>`. Refused inside `data_dir`.
pub fn resolve(configured: Option<&str>, data_dir: &Path, sysid: u64) -> Result<PathBuf, Error> {
    let dir = match configured.map(str::trim).filter(|s| !s.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(format!("/var/tmp/pg_ark-{sysid}")),
    };
    let invalid = |reason: String| Error::InvalidSetting {
        name: "ark.work_directory",
        value: dir.display().to_string(),
        reason,
    };
    if !dir.is_absolute() {
        return Err(invalid("it must be an absolute path".into()));
    }
    let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let nearest = nearest_existing(&dir);
    let real = std::fs::canonicalize(&nearest)
        .map(|r| r.join(dir.strip_prefix(&nearest).unwrap_or(Path::new(""))))
        .unwrap_or_else(|_| dir.clone());
    if real.starts_with(&data) {
        return Err(invalid(format!(
            "it is inside the data directory {}, which it could fill and which every physical backup copies",
            data.display()
        )));
    }
    Ok(dir)
}

/// `path` itself or its nearest ancestor that exists.
fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent.to_path_buf(),
            None => break,
        }
    }
    p
}

/// Bytes free for an unprivileged writer on the file system that holds (or
/// will hold) `path`.
pub fn free_bytes(path: &Path) -> Result<u64, Error> {
    let at = nearest_existing(path);
    let c =
        std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).map_err(|_| Error::LocalIo {
            op: "check free space of",
            path: at.display().to_string(),
            source: std::io::Error::other("path contains a NUL byte"),
        })?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statvfs buffer we own.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::LocalIo {
            op: "check free space of",
            path: at.display().to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuse to stage `needed` bytes in `dir` when its file system has less free.
pub fn check_space(dir: &Path, needed: u64) -> Result<(), Error> {
    let available = free_bytes(dir)?;
    if available < needed {
        return Err(Error::NotEnoughSpace {
            path: dir.display().to_string(),
            needed,
            available,
        });
    }
    Ok(())
}

/// The job id in a staging directory's name (`job-<id>-<n>`).
pub fn job_of(name: &str) -> Option<i64> {
    name.strip_prefix("job-")?.split('-').next()?.parse().ok()
}

/// Remove the staging directories in `dir` of jobs for which `running`
/// says no: the leftovers of workers that died (a restore drill's scratch
/// server still running in one is stopped first; nothing running in one of
/// `protected`, the primary's directories, is ever signalled). Returns what
/// it removed.
pub fn sweep(dir: &Path, protected: &[PathBuf], running: impl Fn(i64) -> bool) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(job) = job_of(&name.to_string_lossy()) else {
            continue;
        };
        if running(job) {
            continue;
        }
        // A restore drill's scratch server that outlived its worker; one
        // that would not stop keeps its directory.
        if crate::restore::drill::stop_leftover_server(&e.path(), protected).is_err() {
            continue;
        }
        if std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_directory_is_outside_the_data_directory() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        assert_eq!(
            resolve(None, &data, 42).unwrap(),
            PathBuf::from("/var/tmp/pg_ark-42")
        );
        let outside = base.path().join("work");
        assert_eq!(
            resolve(Some(outside.to_str().unwrap()), &data, 42).unwrap(),
            outside
        );
        let inside = data.join("pg_ark/tmp");
        let e = resolve(Some(inside.to_str().unwrap()), &data, 42).unwrap_err();
        assert!(e.to_string().contains("inside the data directory"), "{e}");
        let e = resolve(Some("relative/dir"), &data, 42).unwrap_err();
        assert!(e.to_string().contains("must be an absolute path"), "{e}");
    }

    #[test]
    fn free_space_is_checked_before_staging() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(&dir.path().join("not/yet")).unwrap();
        assert!(free > 0);
        check_space(dir.path(), 1).unwrap();
        let e = check_space(dir.path(), u64::MAX).unwrap_err();
        assert!(matches!(e, Error::NotEnoughSpace { .. }), "{e}");
    }

    #[test]
    fn leftovers_of_dead_jobs_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["job-7-0", "job-7-1", "job-9-0", "unrelated"] {
            std::fs::create_dir_all(dir.path().join(d).join("x")).unwrap();
        }
        let removed = sweep(dir.path(), &[], |job| job == 9);
        assert_eq!(
            removed,
            vec![dir.path().join("job-7-0"), dir.path().join("job-7-1")]
        );
        assert!(dir.path().join("job-9-0").exists() && dir.path().join("unrelated").exists());
    }
}
