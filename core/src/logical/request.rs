//! What to dump, and pg_dump's argument vector.
use crate::process::{Env, Program, Stdout};
use crate::Error;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// How long `pg_dump --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(60);

/// pg_dump's output formats that pg_ark stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    /// `--format=custom`: one file, restored with pg_restore.
    Custom,
    /// `--format=directory`: one file per table, can be dumped in parallel.
    Directory,
    /// `--format=plain`: an SQL script.
    Plain,
}

impl DumpFormat {
    /// `custom`, `directory` or `plain` (any case).
    pub fn parse(s: &str) -> Result<DumpFormat, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "custom" => Ok(DumpFormat::Custom),
            "directory" => Ok(DumpFormat::Directory),
            "plain" => Ok(DumpFormat::Plain),
            _ => Err(Error::InvalidLogicalRequest {
                reason: format!("unknown dump format \"{s}\": expected custom, directory or plain"),
            }),
        }
    }

    /// The name pg_dump's `--format` takes, and `backup.info` records.
    pub fn as_str(self) -> &'static str {
        match self {
            DumpFormat::Custom => "custom",
            DumpFormat::Directory => "directory",
            DumpFormat::Plain => "plain",
        }
    }

    /// The name of the data inside a backup's directory: a file for custom
    /// and plain, a key prefix for directory.
    pub fn data_name(self) -> &'static str {
        match self {
            DumpFormat::Custom => "dump.custom",
            DumpFormat::Directory => "dump.dir",
            DumpFormat::Plain => "dump.sql",
        }
    }
}

impl fmt::Display for DumpFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DumpFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        DumpFormat::parse(s)
    }
}

/// What to dump and how to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRequest {
    /// The pg_dump program (of the server's major version or newer).
    pub pg_dump: PathBuf,
    /// The server's Unix socket directory (or a host name).
    pub socket_dir: String,
    pub port: u16,
    /// The role to connect as; `None` is libpq's default (the OS user).
    pub user: Option<String>,
    pub database: String,
    pub format: DumpFormat,
    /// Exact schema names to dump (none: the whole database). Each is
    /// quoted for pg_dump, so it matches that one schema, never a pattern.
    pub schemas: Vec<String>,
    /// Parallel workers (`--jobs`); directory format only.
    pub jobs: Option<u32>,
    /// Passed to pg_dump as `--compress=<value>` (e.g. `zstd:3`, `gzip:6`,
    /// `0`); `None` keeps pg_dump's default for the format.
    pub compression: Option<String>,
    /// Directory format only: where pg_dump writes the dump before it is
    /// uploaded. It must not exist yet (pg_dump creates it; its parent is
    /// created if missing) and is removed afterwards, also on failure.
    pub work_dir: Option<PathBuf>,
}

/// Quote `value` for a libpq conninfo string: in single quotes, with `\`
/// and `'` escaped by a backslash.
pub fn conninfo_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A schema name as a pg_dump pattern that matches exactly that name:
/// double-quoted (quotes doubled), so case, `*`, `?` and `.` are literal.
fn schema_pattern(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl DumpRequest {
    /// The libpq connection string: `dbname='…' host='…' port=… user='…'`.
    pub fn conninfo(&self) -> String {
        let mut s = format!(
            "dbname={} host={} port={}",
            conninfo_quote(&self.database),
            conninfo_quote(&self.socket_dir),
            self.port
        );
        if let Some(user) = &self.user {
            s.push_str(" user=");
            s.push_str(&conninfo_quote(user));
        }
        s
    }

    /// Refuse a request pg_dump could not run as meant.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::InvalidLogicalRequest { reason });
        let has_nul = |s: &str| s.contains('\0');
        if self.database.is_empty() || has_nul(&self.database) {
            return bad("the database name is empty or contains NUL".into());
        }
        if self.socket_dir.is_empty() || has_nul(&self.socket_dir) {
            return bad("the socket directory is empty or contains NUL".into());
        }
        if self
            .user
            .as_deref()
            .is_some_and(|u| u.is_empty() || has_nul(u))
        {
            return bad("the user name is empty or contains NUL".into());
        }
        if let Some(s) = self.schemas.iter().find(|s| s.is_empty() || has_nul(s)) {
            return bad(format!("invalid schema name {s:?}"));
        }
        if let Some(c) = &self.compression {
            if c.trim().is_empty() || has_nul(c) {
                return bad(format!("invalid compression {c:?}"));
            }
        }
        match (self.format, self.jobs) {
            (DumpFormat::Directory, Some(0)) => return bad("jobs must be at least 1".into()),
            (DumpFormat::Directory, _) | (_, None) => {}
            (f, Some(_)) => {
                return bad(format!("parallel jobs need the directory format, not {f}"))
            }
        }
        if self.format == DumpFormat::Directory && self.work_dir.is_none() {
            return bad("the directory format needs a work directory".into());
        }
        Ok(())
    }

    /// pg_dump's program: an argument vector, no shell. Custom and plain
    /// write to standard output; directory writes into `work_dir`. It gets
    /// the clean environment and libpq's variables (`PGPASSFILE`,
    /// `PGSSLMODE`, ...; the connection itself is all in `--dbname`); no
    /// password is passed.
    pub fn command(&self) -> Program {
        let mut p = Program::new(&self.pg_dump)
            .env_policy(Env::clean().libpq())
            .arg("--no-password")
            .arg(format!("--format={}", self.format.as_str()))
            .arg(format!("--dbname={}", self.conninfo()));
        for schema in &self.schemas {
            p = p.arg(format!("--schema={}", schema_pattern(schema)));
        }
        if let Some(c) = &self.compression {
            p = p.arg(format!("--compress={c}"));
        }
        if self.format == DumpFormat::Directory {
            if let Some(jobs) = self.jobs {
                p = p.arg(format!("--jobs={jobs}"));
            }
            if let Some(dir) = &self.work_dir {
                let mut arg = OsString::from("--file=");
                arg.push(dir.as_os_str());
                p = p.arg(arg);
            }
        }
        p
    }
}

/// pg_dump's `--version` line, e.g. `pg_dump (PostgreSQL) 17.2`.
pub fn pg_dump_version(pg_dump: &Path) -> Result<String, Error> {
    let done = Program::new(pg_dump)
        .arg("--version")
        .stdout(Stdout::Capture)
        .timeout(VERSION_TIMEOUT)
        .run(&AtomicBool::new(false))?;
    Ok(done.stdout_text())
}
