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
pub fn copy_durably(src: &Path, name: &str, dir: &Path) -> Result<(), String> {
    let bytes =
        std::fs::read(src).map_err(|e| format!("could not read \"{}\": {e}", src.display()))?;
    let dest = dir.join(name);
    match std::fs::read(&dest) {
        Ok(there) if there == bytes => return Ok(()),
        Ok(_) => {
            return Err(format!(
                "\"{}\" is already there with other contents; pg_ark does not overwrite it",
                dest.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("could not read \"{}\": {e}", dest.display())),
    }
    let tmp = dir.join(format!(".{name}.pg_ark-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        // Never replace a file that appeared meanwhile.
        std::fs::hard_link(&tmp, &dest)?;
        std::fs::remove_file(&tmp)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("could not store \"{}\": {e}", dest.display())
    })
}
