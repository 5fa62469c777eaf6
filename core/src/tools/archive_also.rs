//! The archive module's second destination (`ark.archive_also`): while a
//! team runs pgBackRest or Barman beside pg_ark, PostgreSQL's one archiver
//! (pg_ark's module) hands every WAL file to the other tool too, and a file
//! counts as archived only once both have it.
//!
//! - `pgbackrest:STANZA` runs `pgbackrest archive-push` (an argument
//!   vector, in a process group of its own, bounded by a timeout);
//! - `directory:/absolute/path` copies the file durably into a directory,
//!   such as Barman's `incoming` directory: a hidden temporary file written
//!   and flushed, renamed into place, the directory flushed. A file of the
//!   same name and the same bytes already there counts as stored; other
//!   bytes are an error (nothing is overwritten).
use crate::process::Program;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondDestination {
    Pgbackrest { stanza: String },
    Directory(PathBuf),
}

impl SecondDestination {
    /// Read `ark.archive_also`.
    pub fn parse(text: &str) -> Result<SecondDestination, String> {
        let t = text.trim();
        if let Some(stanza) = t.strip_prefix("pgbackrest:") {
            if super::is_tool_name(stanza) {
                return Ok(SecondDestination::Pgbackrest {
                    stanza: stanza.into(),
                });
            }
            return Err(format!(
                "\"{stanza}\" is not a pgBackRest stanza name (letters, digits, _, - and ., \
                 starting with a letter or a digit)"
            ));
        }
        if let Some(dir) = t.strip_prefix("directory:") {
            let p = Path::new(dir);
            if p.is_absolute() {
                return Ok(SecondDestination::Directory(p.to_path_buf()));
            }
            return Err(format!("\"{dir}\" is not an absolute path"));
        }
        Err(format!(
            "\"{t}\" is neither pgbackrest:STANZA nor directory:/absolute/path"
        ))
    }

    /// How messages name it.
    pub fn describe(&self) -> String {
        match self {
            SecondDestination::Pgbackrest { stanza } => {
                format!("pgbackrest archive-push (stanza \"{stanza}\")")
            }
            SecondDestination::Directory(d) => format!("directory \"{}\"", d.display()),
        }
    }
}

/// How to reach pgBackRest.
pub struct PgbackrestProgram<'a> {
    pub program: &'a Path,
    pub config: Option<&'a Path>,
}

/// Hand WAL file `name` (at absolute path `wal`) to `dest`; returns once the
/// destination has it durably, or why not.
pub fn push(
    dest: &SecondDestination,
    wal: &Path,
    name: &str,
    pgbackrest: &PgbackrestProgram,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<(), String> {
    match dest {
        SecondDestination::Pgbackrest { stanza } => {
            Program::new(pgbackrest.program)
                .args(super::pgbackrest::archive_push_args(
                    stanza,
                    wal,
                    pgbackrest.config,
                ))
                .timeout(timeout)
                .run(cancel)
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        SecondDestination::Directory(dir) => copy_durably(wal, name, dir),
    }
}

/// Copy `src` into `dir` as `name`, durably, never overwriting other bytes.
///
/// The directory may be writable by another operating system user (Barman's
/// `incoming`), so nothing there is trusted: the temporary file has a random
/// name and is created only if nothing has that name (a planted symbolic
/// link is not followed), it is put in place only if nothing has the final
/// name, and a file found under the final name is read only if it is no
/// symbolic link. Each success, also "already there", ends with the file
/// and the directory flushed.
pub fn copy_durably(src: &Path, name: &str, dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes =
        std::fs::read(src).map_err(|e| format!("could not read \"{}\": {e}", src.display()))?;
    let dest = dir.join(name);
    let sync_dir = || {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("could not flush directory \"{}\": {e}", dir.display()))
    };
    let existing = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&dest);
    match existing {
        Ok(mut f) => {
            use std::io::Read;
            let mut there = Vec::new();
            f.read_to_end(&mut there)
                .map_err(|e| format!("could not read \"{}\": {e}", dest.display()))?;
            if there != bytes {
                return Err(format!(
                    "\"{}\" is already there with other contents; pg_ark does not overwrite it",
                    dest.display()
                ));
            }
            // A copy an interrupted attempt left: flushed before it counts.
            f.sync_all()
                .map_err(|e| format!("could not flush \"{}\": {e}", dest.display()))?;
            return sync_dir();
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!(
                "\"{}\" is a symbolic link; pg_ark neither follows nor replaces it",
                dest.display()
            ))
        }
        Err(e) => return Err(format!("could not read \"{}\": {e}", dest.display())),
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".pg_ark")
        .tempfile_in(dir)
        .map_err(|e| format!("could not create a file in \"{}\": {e}", dir.display()))?;
    tmp.write_all(&bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| format!("could not write \"{}\": {e}", tmp.path().display()))?;
    // Never replaces a file that appeared meanwhile (the temporary one is
    // removed when this fails).
    tmp.persist_noclobber(&dest)
        .map_err(|e| format!("could not store \"{}\": {}", dest.display(), e.error))?;
    sync_dir()
}
