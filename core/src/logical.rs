//! Logical backups: `pg_dump` of one database, stored in the repository.
//!
//! # Layout
//!
//! ```text
//! clusters/<system id>/logical/<database, encoded>/<label>/dump.custom      custom format
//! clusters/<system id>/logical/<database, encoded>/<label>/dump.sql         plain format
//! clusters/<system id>/logical/<database, encoded>/<label>/dump.dir/<file>  directory format
//! clusters/<system id>/logical/<database, encoded>/<label>/backup.info(.copy)
//! ```
//!
//! The database name is percent-encoded ([`encode_database`]): every byte
//! outside `[A-Za-z0-9_.-]`, and a leading `.`, becomes `%XX`, so any name
//! PostgreSQL accepts is one valid key component and decodes back exactly.
//! The label is chosen by the caller (e.g. `20261122T101500Z-j42`, see
//! [`check_label`]).
//!
//! # Order of writes, and what a reader may trust
//!
//! The data is stored first, each object durably and atomically
//! (`Storage::put_stream`, `PutMode::Create`); `backup.info` (a checksummed
//! pair, see `repo/info.rs`) is written last, only after all data is durable.
//! A backup is therefore complete exactly when its `backup.info` is
//! readable. A directory without one is an *incomplete* dump: still running,
//! failed before cleaning up, or a deletion that was interrupted.
//! [`list_logical_backups`] skips those; [`scan_logical_backups`] reports
//! them separately, with the reason. Deletion removes `backup.info` and its
//! copy first, then the data, so an interrupted deletion never leaves a
//! valid-looking backup with missing data.
//!
//! # Running pg_dump
//!
//! [`DumpRequest::command`] builds pg_dump's argument vector (never a shell
//! command line); the connection goes in one `--dbname` conninfo string with
//! every value quoted, and no password anywhere (`--no-password`: pg_dump
//! never prompts; authentication is the server's business, e.g. peer or a
//! `.pgpass` file of the OS user).
//!
//! - custom and plain: pg_dump writes to its standard output, which streams
//!   straight into `put_stream` (no local copy) through a reader that
//!   computes the SHA-256, counts bytes into [`DumpControl::bytes`], honors
//!   [`DumpControl::cancel`], and at end of output waits for pg_dump: a
//!   non-zero exit becomes a read error, so `put_stream` stores nothing.
//! - directory: pg_dump writes into the caller's work directory (it may run
//!   `--jobs` workers); each file is then streamed into the repository under
//!   `dump.dir/`, and the work directory is removed, also on failure.
//!
//! pg_dump's standard error is read on its own thread (so a chatty pg_dump
//! never blocks on a full pipe); its last 8 KiB end up in the error message.
//! Cancellation is watched by another thread, which stops pg_dump even while
//! it produces no output (waiting for a lock, say): SIGTERM to its process
//! group (pg_dump and its parallel workers), SIGKILL 5 seconds later.
//!
//! # Threads
//!
//! This module is meant to run on a thread of its own inside a PostgreSQL
//! background worker: it uses no PostgreSQL API, never panics outside of
//! tests, and creates its helper threads with every signal blocked
//! (`crate::threads`). Child processes start with the default signal mask
//! (the standard library resets it).
use crate::repo::envelope::hex;
use crate::repo::{info, ClusterRepo};
use crate::storage::{PutMode, Storage};
use crate::Error;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The version of `backup.info` this pg_ark writes and the newest it reads.
pub const LOGICAL_INFO_VERSION: u32 = 1;
/// The name of a backup's metadata (with `.copy` beside it).
pub const INFO_NAME: &str = "backup.info";
/// How much of pg_dump's standard error is kept for the error message.
const STDERR_TAIL: usize = 8 * 1024;
/// How long pg_dump gets to stop after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How often the watcher looks at the process and the cancel flag.
const POLL: Duration = Duration::from_millis(50);
/// How long to wait for the end of standard error after the exit.
const STDERR_WAIT: Duration = Duration::from_secs(2);

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

    /// pg_dump's command: an argument vector, no shell. Custom and plain
    /// write to standard output; directory writes into `work_dir`. The
    /// environment is inherited unchanged; no password is passed.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.pg_dump);
        cmd.arg("--no-password");
        cmd.arg(format!("--format={}", self.format.as_str()));
        cmd.arg(format!("--dbname={}", self.conninfo()));
        for schema in &self.schemas {
            cmd.arg(format!("--schema={}", schema_pattern(schema)));
        }
        if let Some(c) = &self.compression {
            cmd.arg(format!("--compress={c}"));
        }
        if self.format == DumpFormat::Directory {
            if let Some(jobs) = self.jobs {
                cmd.arg(format!("--jobs={jobs}"));
            }
            if let Some(dir) = &self.work_dir {
                let mut arg = OsString::from("--file=");
                arg.push(dir.as_os_str());
                cmd.arg(arg);
            }
        }
        cmd
    }
}

/// pg_dump's `--version` line, e.g. `pg_dump (PostgreSQL) 17.2`.
pub fn pg_dump_version(pg_dump: &Path) -> Result<String, Error> {
    let failed = |source| Error::LocalIo {
        op: "run",
        path: pg_dump.display().to_string(),
        source,
    };
    let out = Command::new(pg_dump)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(failed)?;
    if !out.status.success() {
        return Err(failed(io::Error::other(format!(
            "{}: {}",
            describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        ))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The major version in a `pg_dump --version` line (`17` of `17.2`,
/// `18devel` or `17beta1`); `None` if there is none.
pub fn pg_dump_major(version: &str) -> Option<u32> {
    let words: Vec<&str> = version.split_whitespace().collect();
    let number = match words.iter().position(|w| *w == "(PostgreSQL)") {
        Some(i) => words.get(i + 1)?,
        None => words.last()?,
    };
    let digits: String = number.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Live progress and cancellation of one backup, shared with the caller.
#[derive(Debug, Clone, Default)]
pub struct DumpControl {
    /// Bytes handed to the repository so far: added to as the dump streams
    /// (never reset here; for the directory format it grows during the
    /// upload that follows pg_dump).
    pub bytes: Arc<AtomicU64>,
    /// Set to stop: pg_dump is terminated and nothing is stored.
    pub cancel: Arc<AtomicBool>,
}

impl DumpControl {
    pub fn new() -> DumpControl {
        DumpControl::default()
    }

    pub fn request_cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// What the caller knows about a backup, recorded in its `backup.info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpMeta {
    /// The backup's label, unique per database (see [`check_label`]).
    pub label: String,
    pub job_id: Option<i64>,
    /// The server's version (e.g. `server_version`).
    pub server_version: String,
    /// pg_dump's version line; `None` runs `pg_dump --version`
    /// ([`run_logical_backup`]) or records "unknown" ([`backup_with_command`]).
    pub pg_dump_version: Option<String>,
    /// The retention series (see [`series_key`]): `schedule:<name>` for a
    /// schedule's dumps; `None` for an ad-hoc dump, whose series is its
    /// format and schema set.
    pub series: Option<String>,
}

/// One stored object of a logical backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalFile {
    /// Its repository key.
    pub key: String,
    pub bytes: u64,
    /// SHA-256 of its content, hex.
    pub sha256: String,
}

/// A logical backup's `backup.info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalBackupInfo {
    /// [`LOGICAL_INFO_VERSION`] when written.
    pub format_version: u32,
    /// Always "logical".
    pub kind: String,
    pub label: String,
    pub database: String,
    pub format: DumpFormat,
    /// When pg_dump was started / when the data was durable (RFC 3339 UTC).
    pub started_at: String,
    pub finished_at: String,
    /// The same instants in seconds since the Unix epoch.
    pub started_epoch: i64,
    pub finished_epoch: i64,
    /// Total bytes stored.
    pub bytes: u64,
    /// SHA-256 (hex) of the dump file (custom and plain; `None` for directory).
    pub sha256: Option<String>,
    /// Every data object with its size and SHA-256 (one for custom/plain).
    pub files: Vec<LogicalFile>,
    /// The dump's key: the file (custom, plain) or the key prefix of the
    /// directory's files (directory, `…/dump.dir`).
    pub data_key: String,
    pub schemas: Vec<String>,
    pub compression: Option<String>,
    pub server_version: String,
    pub pg_dump_version: String,
    #[serde(with = "u64_as_string")]
    pub system_identifier: u64,
    pub job_id: Option<i64>,
    pub created_by: String,
    /// The retention series of a schedule's dump (`schedule:<name>`);
    /// absent for ad-hoc dumps and in files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
}

/// The series a dump's retention counts in, per database: its schedule's,
/// or for an ad-hoc dump its format and schema set. A schema-only or
/// ad-hoc dump with its own rule never expires a schedule's full dumps.
pub fn series_key(b: &LogicalBackupInfo) -> String {
    match &b.series {
        Some(s) => format!("{}\u{0}{s}", b.database),
        None => {
            let mut schemas = b.schemas.clone();
            schemas.sort();
            format!(
                "{}\u{0}adhoc:{}:{}",
                b.database,
                b.format.as_str(),
                schemas.join(",")
            )
        }
    }
}

/// 64-bit identifiers as JSON strings, like `cluster.info`, so that no JSON
/// reader rounds them.
mod u64_as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Encode a database name as one key component: bytes outside
/// `[A-Za-z0-9_.-]`, and a leading `.`, become `%XX` (uppercase hex).
pub fn encode_database(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_database`]; `None` for a string it cannot have
/// produced (bad `%` escape, not UTF-8).
pub fn decode_database(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A label is 1 to 128 characters of `[A-Za-z0-9_.-]`, not starting with
/// `.`: one key component, safe in every storage and shell.
pub fn check_label(label: &str) -> Result<(), Error> {
    let ok = !label.is_empty()
        && label.len() <= 128
        && !label.starts_with('.')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidLogicalRequest {
            reason: format!(
                "invalid label \"{label}\": use 1 to 128 characters of A-Z, a-z, 0-9, \"_\", \".\" and \"-\", not starting with \".\""
            ),
        })
    }
}

/// The key prefix (without the trailing `/`) of a backup.
pub fn backup_prefix(cluster: &ClusterRepo, database: &str, label: &str) -> String {
    cluster.key(&format!("logical/{}/{label}", encode_database(database)))
}

/// Seconds since the Unix epoch, now.
pub fn now_epoch() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `epoch` as RFC 3339 in UTC, e.g. `2026-11-22T10:15:00Z`.
pub fn rfc3339_utc(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

// ---------------------------------------------------------------------------
// Running a dump process
// ---------------------------------------------------------------------------

/// Why a dump process did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Cancelled,
    /// "exit status 1: pg_dump: error: …"
    Failed(String),
}

impl Failure {
    fn into_error(self, database: &str) -> Error {
        match self {
            Failure::Cancelled => Error::DumpCancelled {
                database: database.into(),
            },
            Failure::Failed(detail) => Error::DumpFailed {
                database: database.into(),
                detail,
            },
        }
    }

    fn message(&self, database: &str) -> String {
        self.clone().into_error(database).to_string()
    }
}

fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGPIPE => " (SIGPIPE)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                _ => "",
            };
            format!("terminated by signal {sig}{name}")
        }
        None => status.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Start a named thread with every signal blocked.
fn spawn_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    crate::threads::with_signals_blocked(|| {
        std::thread::Builder::new().name(name.to_string()).spawn(f)
    })
}

/// The end of a child's standard error, filled by a thread of its own.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    truncated: bool,
    done: bool,
}

type TailShared = Arc<(Mutex<Tail>, Condvar)>;

fn read_stderr(mut stderr: ChildStderr) -> io::Result<TailShared> {
    let shared: TailShared = Arc::default();
    let filler = Arc::clone(&shared);
    spawn_thread("pg_ark-dump-stderr", move || {
        let mut chunk = [0u8; 4096];
        loop {
            match stderr.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let mut t = lock(&filler.0);
                    t.buf.extend_from_slice(&chunk[..n]);
                    if t.buf.len() > 2 * STDERR_TAIL {
                        let cut = t.buf.len() - STDERR_TAIL;
                        t.buf.drain(..cut);
                        t.truncated = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        lock(&filler.0).done = true;
        filler.1.notify_all();
    })?;
    Ok(shared)
}

/// The last [`STDERR_TAIL`] bytes of standard error, waiting a little for
/// its end (a process that exited has closed it, unless a child of its own
/// still holds it).
fn stderr_text(shared: &TailShared) -> String {
    let (mutex, cond) = &**shared;
    let guard = lock(mutex);
    let guard = match cond.wait_timeout_while(guard, STDERR_WAIT, |t| !t.done) {
        Ok((g, _)) => g,
        Err(poisoned) => poisoned.into_inner().0,
    };
    let start = guard.buf.len().saturating_sub(STDERR_TAIL);
    let text = String::from_utf8_lossy(&guard.buf[start..]);
    let text = text.trim();
    if guard.truncated || start > 0 {
        format!("...{text}")
    } else {
        text.to_string()
    }
}

/// How the watcher saw the process end.
struct Exit {
    status: io::Result<ExitStatus>,
    cancelled: bool,
}

/// Send `sig` to the process group `pid` leads. Only called while the
/// leader is not reaped, so `pid` cannot have been reused.
fn signal_group(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a plain process group id and signal number.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

/// Own the child until it exits: stop it (SIGTERM to its group, SIGKILL
/// after [`TERM_GRACE`]) when `cancel` or `stop` is set.
fn watch(mut child: Child, cancel: &AtomicBool, stop: &AtomicBool) -> Exit {
    let pid = child.id();
    let mut cancelled = false;
    let mut terminated_at: Option<Instant> = None;
    let mut killed = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Exit {
                    status: Ok(status),
                    cancelled,
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Exit {
                    status: Err(e),
                    cancelled,
                };
            }
        }
        match terminated_at {
            None => {
                cancelled = cancel.load(Ordering::SeqCst);
                if cancelled || stop.load(Ordering::SeqCst) {
                    signal_group(pid, libc::SIGTERM);
                    terminated_at = Some(Instant::now());
                }
            }
            Some(at) if !killed && at.elapsed() >= TERM_GRACE => {
                signal_group(pid, libc::SIGKILL);
                let _ = child.kill();
                killed = true;
            }
            Some(_) => {}
        }
        std::thread::sleep(POLL);
    }
}

/// A running dump process: its watcher thread and its standard error.
struct DumpProcess {
    watcher: Option<JoinHandle<Exit>>,
    stop: Arc<AtomicBool>,
    stderr: Option<TailShared>,
    outcome: Option<Result<(), Failure>>,
}

impl DumpProcess {
    /// Start `cmd` in a process group of its own, with standard input
    /// closed, standard error captured and standard output piped (if
    /// `stdout`) or discarded.
    fn spawn(
        mut cmd: Command,
        stdout: bool,
        cancel: &Arc<AtomicBool>,
    ) -> io::Result<(DumpProcess, Option<ChildStdout>)> {
        cmd.stdin(Stdio::null())
            .stdout(if stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn()?;
        let out = child.stdout.take();
        let stderr = match child.stderr.take().map(read_stderr).transpose() {
            Ok(s) => s,
            Err(e) => {
                signal_group(child.id(), libc::SIGKILL);
                let _ = child.wait();
                return Err(e);
            }
        };
        // The watcher takes the child from `slot`; if it cannot start, the
        // child is taken back, stopped and reaped here.
        let slot = Arc::new(Mutex::new(Some(child)));
        let stop = Arc::new(AtomicBool::new(false));
        let (slot_w, cancel_w, stop_w) = (Arc::clone(&slot), Arc::clone(cancel), Arc::clone(&stop));
        let watcher = spawn_thread("pg_ark-dump-watch", move || match lock(&slot_w).take() {
            Some(child) => watch(child, &cancel_w, &stop_w),
            None => Exit {
                status: Err(io::Error::other("the process was already reaped")),
                cancelled: false,
            },
        });
        match watcher {
            Ok(handle) => Ok((
                DumpProcess {
                    watcher: Some(handle),
                    stop,
                    stderr,
                    outcome: None,
                },
                out,
            )),
            Err(e) => {
                if let Some(mut child) = lock(&slot).take() {
                    signal_group(child.id(), libc::SIGKILL);
                    let _ = child.wait();
                }
                Err(e)
            }
        }
    }

    /// Wait for the process to end, stopping it first with `stop`; the
    /// outcome is computed once and kept.
    fn finish(&mut self, stop: bool) -> Result<(), Failure> {
        if let Some(outcome) = &self.outcome {
            return outcome.clone();
        }
        if stop {
            self.stop.store(true, Ordering::SeqCst);
        }
        let exit = match self.watcher.take().map(JoinHandle::join) {
            Some(Ok(exit)) => exit,
            _ => Exit {
                status: Err(io::Error::other("its watcher thread failed")),
                cancelled: false,
            },
        };
        let outcome = if exit.cancelled {
            Err(Failure::Cancelled)
        } else {
            match exit.status {
                Ok(status) if status.success() => Ok(()),
                Ok(status) => {
                    let stderr = self.stderr.as_ref().map(stderr_text).unwrap_or_default();
                    let mut detail = describe_status(status);
                    if !stderr.is_empty() {
                        detail.push_str(": ");
                        detail.push_str(&stderr);
                    }
                    Err(Failure::Failed(detail))
                }
                Err(e) => Err(Failure::Failed(format!("could not wait for it: {e}"))),
            }
        };
        self.outcome = Some(outcome.clone());
        outcome
    }

    /// The outcome, if the process has been waited for.
    fn outcome(&self) -> Option<Result<(), Failure>> {
        self.outcome.clone()
    }
}

impl Drop for DumpProcess {
    /// Never leave the process running or unreaped.
    fn drop(&mut self) {
        if self.outcome.is_none() {
            let _ = self.finish(true);
        }
    }
}

/// The dump process's standard output as a reader: at end of output the
/// process is waited for, and its failure becomes the read's error.
struct ProcessOutput<'a> {
    stdout: ChildStdout,
    process: &'a mut DumpProcess,
    database: &'a str,
    eof: bool,
}

impl Read for ProcessOutput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            match self.process.finish(false) {
                Ok(()) => self.eof = true,
                Err(f) => return Err(io::Error::other(f.message(self.database))),
            }
        }
        Ok(n)
    }
}

/// A reader that hashes and counts what passes, publishes the count, and
/// fails once the backup is cancelled.
struct Metered<'a, R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    control: &'a DumpControl,
    database: &'a str,
}

impl<'a, R: Read> Metered<'a, R> {
    fn new(inner: R, control: &'a DumpControl, database: &'a str) -> Self {
        Metered {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            control,
            database,
        }
    }

    fn sha256_hex(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.control.is_cancelled() {
            return Err(io::Error::other(Failure::Cancelled.message(self.database)));
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        self.control.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What [`stream_command_output`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamedDump {
    pub bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

/// Run `cmd` and stream its standard output into `key` (`PutMode::Create`),
/// with no local copy. The object is stored only if the command exits with
/// status 0 and was not cancelled; otherwise nothing is left under `key`
/// and the error carries the command's exit status and the end of its
/// standard error. `database` names the dump in messages.
pub fn stream_command_output(
    storage: &dyn Storage,
    key: &str,
    cmd: Command,
    database: &str,
    control: &DumpControl,
) -> Result<StreamedDump, Error> {
    let program = cmd.get_program().to_string_lossy().to_string();
    let (mut process, stdout) =
        DumpProcess::spawn(cmd, true, &control.cancel).map_err(|source| Error::LocalIo {
            op: "run",
            path: program,
            source,
        })?;
    let Some(stdout) = stdout else {
        let _ = process.finish(true);
        return Err(Error::DumpFailed {
            database: database.into(),
            detail: "its standard output could not be captured".into(),
        });
    };
    let output = ProcessOutput {
        stdout,
        process: &mut process,
        database,
        eof: false,
    };
    let mut reader = Metered::new(output, control, database);
    let stored = storage.put_stream(key, &mut reader, PutMode::Create);
    let streamed = StreamedDump {
        bytes: reader.bytes,
        sha256: reader.sha256_hex(),
    };
    drop(reader);
    match stored {
        Ok(_) => match process.finish(false) {
            Ok(()) => Ok(streamed),
            Err(f) => {
                // Not reached through put_stream (it reads to the end), but
                // never keep the output of a failed run.
                let _ = storage.delete(key);
                Err(f.into_error(database))
            }
        },
        Err(e) => {
            // The process's own failure, if it ended first, is the cause;
            // otherwise the cancel, or the storage's error.
            let ended_first = process.outcome();
            let _ = process.finish(true);
            match ended_first {
                Some(Err(f)) => Err(f.into_error(database)),
                _ if control.is_cancelled() => Err(Failure::Cancelled.into_error(database)),
                _ => Err(e.into()),
            }
        }
    }
}

/// Run `cmd`, which writes a dump into a directory, to its end.
fn run_to_completion(cmd: Command, database: &str, control: &DumpControl) -> Result<(), Error> {
    let program = cmd.get_program().to_string_lossy().to_string();
    let (mut process, _) =
        DumpProcess::spawn(cmd, false, &control.cancel).map_err(|source| Error::LocalIo {
            op: "run",
            path: program,
            source,
        })?;
    process.finish(false).map_err(|f| f.into_error(database))
}

/// Removes the work directory when dropped.
struct WorkDir<'a>(&'a Path);

impl Drop for WorkDir<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(self.0);
    }
}

/// Every regular file below `dir`, as (`/`-separated relative name, path),
/// sorted by name.
fn files_below(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let io_err = |op, path: &Path, source| Error::LocalIo {
        op,
        path: path.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((rel, path)) = stack.pop() {
        let entries = fs::read_dir(&path).map_err(|e| io_err("list", &path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list", &path, e))?;
            let p = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                return Err(io_err(
                    "upload",
                    &p,
                    io::Error::other("the file name is not UTF-8"),
                ));
            };
            let rel_name = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type().map_err(|e| io_err("stat", &p, e))?;
            if ft.is_dir() {
                stack.push((rel_name, p));
            } else if ft.is_file() {
                out.push((rel_name, p));
            } else {
                return Err(io_err("upload", &p, io::Error::other("not a regular file")));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The directory format: run pg_dump into the work directory, then stream
/// each file into `<data_key>/<name>`. The work directory is removed in
/// every case.
fn dump_directory(
    storage: &dyn Storage,
    data_key: &str,
    cmd: Command,
    req: &DumpRequest,
    control: &DumpControl,
) -> Result<Vec<LogicalFile>, Error> {
    let Some(work) = req.work_dir.as_deref() else {
        return Err(Error::InvalidLogicalRequest {
            reason: "the directory format needs a work directory".into(),
        });
    };
    if fs::symlink_metadata(work).is_ok() {
        return Err(Error::InvalidLogicalRequest {
            reason: format!(
                "the work directory \"{}\" already exists; remove it or choose another",
                work.display()
            ),
        });
    }
    if let Some(parent) = work.parent() {
        fs::create_dir_all(parent).map_err(|source| Error::LocalIo {
            op: "create directory",
            path: parent.display().to_string(),
            source,
        })?;
    }
    let _cleanup = WorkDir(work);
    run_to_completion(cmd, &req.database, control)?;
    let mut files = Vec::new();
    for (name, path) in files_below(work)? {
        let key = format!("{data_key}/{name}");
        let file = fs::File::open(&path).map_err(|source| Error::LocalIo {
            op: "open",
            path: path.display().to_string(),
            source,
        })?;
        let mut reader = Metered::new(file, control, &req.database);
        let stored = storage.put_stream(&key, &mut reader, PutMode::Create);
        if control.is_cancelled() {
            return Err(Failure::Cancelled.into_error(&req.database));
        }
        let bytes = stored?;
        files.push(LogicalFile {
            key,
            bytes,
            sha256: reader.sha256_hex(),
        });
    }
    Ok(files)
}

/// Dump `req.database` with pg_dump into the repository entry `cluster`,
/// as backup `meta.label`. See the module documentation for the layout and
/// the guarantees; on any error nothing that looks like a backup is left.
pub fn run_logical_backup(
    cluster: &ClusterRepo,
    req: &DumpRequest,
    meta: &DumpMeta,
    control: &DumpControl,
) -> Result<LogicalBackupInfo, Error> {
    req.validate()?;
    check_label(&meta.label)?;
    let mut meta = meta.clone();
    if meta.pg_dump_version.is_none() {
        meta.pg_dump_version = Some(pg_dump_version(&req.pg_dump)?);
    }
    backup_with_command(cluster, req, req.command(), &meta, control)
}

/// [`run_logical_backup`] with a prepared command in pg_dump's place: it
/// must write the dump to its standard output (custom, plain) or into
/// `req.work_dir` (directory).
pub fn backup_with_command(
    cluster: &ClusterRepo,
    req: &DumpRequest,
    cmd: Command,
    meta: &DumpMeta,
    control: &DumpControl,
) -> Result<LogicalBackupInfo, Error> {
    req.validate()?;
    check_label(&meta.label)?;
    let storage = cluster.storage();
    let prefix = backup_prefix(cluster, &req.database, &meta.label);
    if !storage.list(&format!("{prefix}/"))?.is_empty() {
        return Err(Error::LogicalBackupExists {
            location: cluster.location(),
            database: req.database.clone(),
            label: meta.label.clone(),
        });
    }
    let started = now_epoch();
    let data_key = format!("{prefix}/{}", req.format.data_name());
    let data = match req.format {
        DumpFormat::Custom | DumpFormat::Plain => {
            stream_command_output(storage, &data_key, cmd, &req.database, control).map(|s| {
                let file = LogicalFile {
                    key: data_key.clone(),
                    bytes: s.bytes,
                    sha256: s.sha256.clone(),
                };
                (s.bytes, Some(s.sha256), vec![file])
            })
        }
        DumpFormat::Directory => dump_directory(storage, &data_key, cmd, req, control)
            .map(|files| (files.iter().map(|f| f.bytes).sum(), None, files)),
    };
    let (bytes, sha256, files) = match data {
        Ok(d) if !control.is_cancelled() => d,
        Ok(_) => {
            let _ = delete_prefix(storage, &prefix);
            return Err(Failure::Cancelled.into_error(&req.database));
        }
        Err(e) => {
            // The prefix was empty when we started: whatever is there is ours.
            let _ = delete_prefix(storage, &prefix);
            return Err(e);
        }
    };
    let finished = now_epoch();
    let info = LogicalBackupInfo {
        format_version: LOGICAL_INFO_VERSION,
        kind: "logical".into(),
        label: meta.label.clone(),
        database: req.database.clone(),
        format: req.format,
        started_at: rfc3339_utc(started),
        finished_at: rfc3339_utc(finished),
        started_epoch: started,
        finished_epoch: finished,
        bytes,
        sha256,
        files,
        data_key,
        schemas: req.schemas.clone(),
        compression: req.compression.clone(),
        server_version: meta.server_version.clone(),
        pg_dump_version: meta
            .pg_dump_version
            .clone()
            .unwrap_or_else(|| "unknown".into()),
        system_identifier: cluster.system_identifier,
        job_id: meta.job_id,
        created_by: format!("pg_ark {}", crate::VERSION),
        series: meta.series.clone(),
    };
    let info_key = format!("{prefix}/{INFO_NAME}");
    let saved = serde_json::to_value(&info)
        .map_err(|e| Error::BadMetadata {
            location: cluster.location(),
            key: info_key.clone(),
            reason: e.to_string(),
        })
        .and_then(|v| info::save(storage, &info_key, &v, PutMode::Create).map_err(Error::from));
    if let Err(e) = saved {
        let _ = delete_prefix(storage, &prefix);
        return Err(e);
    }
    Ok(info)
}

// ---------------------------------------------------------------------------
// Listing, deletion, retention
// ---------------------------------------------------------------------------

/// A backup directory without a usable `backup.info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteLogicalBackup {
    /// The decoded database name (the encoded one if it does not decode).
    pub database: String,
    pub label: String,
    /// The key prefix of its objects (without the trailing `/`).
    pub prefix: String,
    pub objects: usize,
    pub bytes: u64,
    /// Why it is not a usable backup.
    pub reason: String,
}

/// The logical backups of a cluster entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogicalCatalog {
    /// Backups with a valid `backup.info`, by database, then start time.
    pub complete: Vec<LogicalBackupInfo>,
    /// Dumps without a usable `backup.info`: still running, failed before
    /// their cleanup, interrupted deletions, or damaged metadata.
    pub incomplete: Vec<IncompleteLogicalBackup>,
}

const NO_INFO: &str =
    "no backup.info: the dump is still running, failed before cleaning up, or its deletion was interrupted";

#[derive(Default)]
struct Group {
    has_info: bool,
    objects: usize,
    bytes: u64,
}

/// Read every logical backup of `cluster` (of `database` only, if given),
/// complete and incomplete. Storage errors fail the call; a damaged or
/// foreign `backup.info` only marks its backup incomplete.
pub fn scan_logical_backups(
    cluster: &ClusterRepo,
    database: Option<&str>,
) -> Result<LogicalCatalog, Error> {
    let storage = cluster.storage();
    let base = cluster.key("logical/");
    let prefix = match database {
        Some(db) => format!("{base}{}/", encode_database(db)),
        None => base.clone(),
    };
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    for obj in storage.list(&prefix)? {
        let Some(rest) = obj.key.strip_prefix(&base) else {
            continue;
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(enc), Some(label), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let g = groups
            .entry((enc.to_string(), label.to_string()))
            .or_default();
        g.objects += 1;
        g.bytes += obj.size;
        if name == INFO_NAME || name == format!("{INFO_NAME}.copy") {
            g.has_info = true;
        }
    }
    let mut catalog = LogicalCatalog::default();
    for ((enc, label), g) in groups {
        let decoded = decode_database(&enc);
        let incomplete = |reason: String| IncompleteLogicalBackup {
            database: decoded.clone().unwrap_or_else(|| enc.clone()),
            label: label.clone(),
            prefix: format!("{base}{enc}/{label}"),
            objects: g.objects,
            bytes: g.bytes,
            reason,
        };
        let Some(db) = decoded.clone() else {
            catalog.incomplete.push(incomplete(
                "the directory name is not an encoded database name".into(),
            ));
            continue;
        };
        if !g.has_info {
            catalog.incomplete.push(incomplete(NO_INFO.into()));
            continue;
        }
        let info_key = format!("{base}{enc}/{label}/{INFO_NAME}");
        let value = match info::load(storage, &info_key) {
            Ok(Some(v)) => v,
            Ok(None) => {
                catalog.incomplete.push(incomplete(NO_INFO.into()));
                continue;
            }
            Err(info::InfoError::Storage(e)) => return Err(e.into()),
            Err(e) => {
                catalog.incomplete.push(incomplete(e.to_string()));
                continue;
            }
        };
        let version = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if version > u64::from(LOGICAL_INFO_VERSION) {
            catalog.incomplete.push(incomplete(format!(
                "backup.info has format version {version}, newer than this pg_ark supports ({LOGICAL_INFO_VERSION})"
            )));
            continue;
        }
        match serde_json::from_value::<LogicalBackupInfo>(value) {
            Ok(i)
                if i.kind == "logical"
                    && i.database == db
                    && i.label == label
                    && i.system_identifier == cluster.system_identifier =>
            {
                catalog.complete.push(i)
            }
            Ok(i) => catalog.incomplete.push(incomplete(format!(
                "backup.info describes another backup ({} \"{}\" of database \"{}\", system identifier {})",
                i.kind, i.label, i.database, i.system_identifier
            ))),
            Err(e) => catalog
                .incomplete
                .push(incomplete(format!("backup.info is not valid: {e}"))),
        }
    }
    catalog.complete.sort_by(|a, b| {
        (&a.database, a.started_epoch, &a.label).cmp(&(&b.database, b.started_epoch, &b.label))
    });
    Ok(catalog)
}

/// The complete logical backups of `cluster` (of `database` only, if
/// given), by database then start time. Incomplete dumps are skipped; see
/// [`scan_logical_backups`] for them.
pub fn list_logical_backups(
    cluster: &ClusterRepo,
    database: Option<&str>,
) -> Result<Vec<LogicalBackupInfo>, Error> {
    Ok(scan_logical_backups(cluster, database)?.complete)
}

/// Delete a backup's `backup.info` and its copy, then every other object
/// under its prefix.
fn delete_prefix(storage: &dyn Storage, prefix: &str) -> Result<(), Error> {
    storage.delete(&format!("{prefix}/{INFO_NAME}"))?;
    storage.delete(&format!("{prefix}/{INFO_NAME}.copy"))?;
    for obj in storage.list(&format!("{prefix}/"))? {
        storage.delete(&obj.key)?;
    }
    Ok(())
}

/// Delete a backup: `backup.info` and its copy first, then the data, so an
/// interrupted deletion leaves an incomplete dump, never a valid-looking
/// backup with missing data. Deleting a deleted backup succeeds.
pub fn delete_logical_backup(
    cluster: &ClusterRepo,
    backup: &LogicalBackupInfo,
) -> Result<(), Error> {
    if backup.system_identifier != cluster.system_identifier {
        return Err(Error::InvalidLogicalRequest {
            reason: format!(
                "backup \"{}\" belongs to system identifier {}, not {}",
                backup.label, backup.system_identifier, cluster.system_identifier
            ),
        });
    }
    check_label(&backup.label)?;
    if backup.database.is_empty() {
        return Err(Error::InvalidLogicalRequest {
            reason: "the backup names no database".into(),
        });
    }
    delete_prefix(
        cluster.storage(),
        &backup_prefix(cluster, &backup.database, &backup.label),
    )
}

/// Delete what an incomplete dump left. Only for a dump that is known not
/// to be running any more: a running dump looks incomplete too.
pub fn delete_incomplete_logical_backup(
    cluster: &ClusterRepo,
    dump: &IncompleteLogicalBackup,
) -> Result<(), Error> {
    let base = cluster.key("logical/");
    let valid = dump
        .prefix
        .strip_prefix(&base)
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(enc, label)| !enc.is_empty() && !label.is_empty() && !label.contains('/'));
    if !valid {
        return Err(Error::InvalidLogicalRequest {
            reason: format!(
                "\"{}\" is not a logical backup of this cluster entry",
                dump.prefix
            ),
        });
    }
    delete_prefix(cluster.storage(), &dump.prefix)
}

/// The backups that retention removes, in the order given. Per database, a
/// backup is kept if it is among the newest `keep_last` of its series (see
/// [`series_key`]), or younger than `keep_days` days (by its start, relative
/// to `now_epoch`); the newest backup of each series is always kept, and
/// with neither rule set nothing expires. "Newest" orders by start time,
/// then finish time, then job id, then label.
pub fn select_expired(
    backups: &[LogicalBackupInfo],
    keep_last: Option<u32>,
    keep_days: Option<u32>,
    now_epoch: i64,
) -> Vec<&LogicalBackupInfo> {
    if keep_last.is_none() && keep_days.is_none() {
        return Vec::new();
    }
    let mut by_series: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, b) in backups.iter().enumerate() {
        by_series.entry(series_key(b)).or_default().push(i);
    }
    let mut rank = vec![0usize; backups.len()];
    for indexes in by_series.values_mut() {
        indexes.sort_by(|&a, &b| {
            let (x, y) = (&backups[a], &backups[b]);
            (y.started_epoch, y.finished_epoch, y.job_id, &y.label).cmp(&(
                x.started_epoch,
                x.finished_epoch,
                x.job_id,
                &x.label,
            ))
        });
        for (r, &i) in indexes.iter().enumerate() {
            rank[i] = r;
        }
    }
    backups
        .iter()
        .enumerate()
        .filter(|&(i, b)| {
            let newest = rank[i] == 0;
            let in_last = keep_last.is_some_and(|n| (rank[i] as u64) < u64::from(n));
            let young = keep_days
                .is_some_and(|d| now_epoch.saturating_sub(b.started_epoch) < i64::from(d) * 86_400);
            !(newest || in_last || young)
        })
        .map(|(_, b)| b)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::envelope::sha256;
    use crate::repo::Repository;
    use crate::storage::local::LocalStorage;
    use crate::storage::ObjectInfo;
    use crate::storage::StorageError;

    const SYSID: u64 = 7_312_345_678_901_234_567;
    const PG_DUMP: &str = "/var/cache/pg_ark/pg/17/bin/pg_dump";

    fn cluster_in(storage: Box<dyn Storage>) -> ClusterRepo {
        let repo = Arc::new(Repository::open(storage, true).unwrap());
        repo.cluster(SYSID, 17, true).unwrap()
    }

    fn local_cluster() -> (tempfile::TempDir, ClusterRepo) {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster_in(Box::new(
            LocalStorage::open(&dir.path().join("repo")).unwrap(),
        ));
        (dir, c)
    }

    fn request(database: &str, format: DumpFormat) -> DumpRequest {
        DumpRequest {
            pg_dump: PathBuf::from(PG_DUMP),
            socket_dir: "/tmp".into(),
            port: 5432,
            user: None,
            database: database.into(),
            format,
            schemas: vec![],
            jobs: None,
            compression: None,
            work_dir: None,
        }
    }

    fn meta(label: &str) -> DumpMeta {
        DumpMeta {
            label: label.into(),
            job_id: Some(42),
            server_version: "17.2".into(),
            pg_dump_version: Some("pg_dump (PostgreSQL) 17.2".into()),
            series: None,
        }
    }

    fn command(program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args);
        c
    }

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().to_string())
            .collect()
    }

    fn keys(s: &dyn Storage, prefix: &str) -> Vec<String> {
        s.list(prefix).unwrap().into_iter().map(|o| o.key).collect()
    }

    #[test]
    fn formats_parse_and_name_their_data() {
        for (text, f, data) in [
            ("custom", DumpFormat::Custom, "dump.custom"),
            ("Directory", DumpFormat::Directory, "dump.dir"),
            (" plain ", DumpFormat::Plain, "dump.sql"),
        ] {
            assert_eq!(DumpFormat::parse(text).unwrap(), f);
            assert_eq!(text.parse::<DumpFormat>().unwrap(), f);
            assert_eq!(f.data_name(), data);
            assert_eq!(DumpFormat::parse(f.as_str()).unwrap(), f);
            assert_eq!(f.to_string(), f.as_str());
        }
        let e = DumpFormat::parse("tar").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid logical backup request: unknown dump format \"tar\": expected custom, directory or plain"
        );
        assert_eq!(
            serde_json::to_value(DumpFormat::Directory).unwrap(),
            serde_json::json!("directory")
        );
    }

    #[test]
    fn conninfo_quotes_every_value() {
        let mut r = request("my 'db' \\ x=1", DumpFormat::Custom);
        r.socket_dir = "/run/post gres".into();
        r.port = 5433;
        assert_eq!(
            r.conninfo(),
            r"dbname='my \'db\' \\ x=1' host='/run/post gres' port=5433"
        );
        r.user = Some("o'neil".into());
        assert_eq!(
            r.conninfo(),
            r"dbname='my \'db\' \\ x=1' host='/run/post gres' port=5433 user='o\'neil'"
        );
        assert_eq!(conninfo_quote(""), "''");
        assert_eq!(conninfo_quote("a=b c"), "'a=b c'");
    }

    #[test]
    fn the_command_is_an_argument_vector() {
        let mut r = request("shop", DumpFormat::Custom);
        r.user = Some("backup".into());
        r.schemas = vec!["Sales".into(), "a\"b.c*".into()];
        r.compression = Some("zstd:3".into());
        let c = r.command();
        assert_eq!(c.get_program(), PG_DUMP);
        assert_eq!(
            args(&c),
            [
                "--no-password",
                "--format=custom",
                "--dbname=dbname='shop' host='/tmp' port=5432 user='backup'",
                "--schema=\"Sales\"",
                "--schema=\"a\"\"b.c*\"",
                "--compress=zstd:3",
            ]
        );
        assert_eq!(c.get_envs().count(), 0, "the environment is left alone");

        let mut d = request("shop", DumpFormat::Directory);
        d.jobs = Some(4);
        d.work_dir = Some(PathBuf::from("/data/pg_ark_tmp/L1"));
        assert_eq!(
            args(&d.command()),
            [
                "--no-password",
                "--format=directory",
                "--dbname=dbname='shop' host='/tmp' port=5432",
                "--jobs=4",
                "--file=/data/pg_ark_tmp/L1",
            ]
        );
        d.validate().unwrap();

        let p = request("shop", DumpFormat::Plain);
        assert_eq!(
            args(&p.command()),
            [
                "--no-password",
                "--format=plain",
                "--dbname=dbname='shop' host='/tmp' port=5432"
            ]
        );
        p.validate().unwrap();
    }

    #[test]
    fn requests_pg_dump_cannot_run_are_refused() {
        let invalid = |r: DumpRequest, what: &str| {
            let e = r.validate().unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        };
        let mut r = request("shop", DumpFormat::Custom);
        r.jobs = Some(2);
        invalid(r, "parallel jobs need the directory format, not custom");
        let mut r = request("shop", DumpFormat::Directory);
        r.work_dir = Some("/w".into());
        r.jobs = Some(0);
        invalid(r, "jobs must be at least 1");
        invalid(
            request("shop", DumpFormat::Directory),
            "the directory format needs a work directory",
        );
        invalid(
            request("", DumpFormat::Custom),
            "the database name is empty",
        );
        let mut r = request("shop", DumpFormat::Custom);
        r.schemas = vec!["".into()];
        invalid(r, "invalid schema name");
        let mut r = request("shop", DumpFormat::Custom);
        r.compression = Some(" ".into());
        invalid(r, "invalid compression");
        let mut r = request("shop", DumpFormat::Custom);
        r.user = Some(String::new());
        invalid(r, "the user name is empty");
    }

    #[test]
    fn database_names_round_trip_through_keys() {
        for (name, encoded) in [
            ("shop", "shop"),
            ("my db", "my%20db"),
            ("a/b", "a%2Fb"),
            (".", "%2E"),
            ("..", "%2E."),
            (".ark-tmp.x", "%2Eark-tmp.x"),
            ("x.y_z-1", "x.y_z-1"),
            ("100%", "100%25"),
            ("Ünï", "%C3%9Cn%C3%AF"),
            ("it's=\"q\"\\", "it%27s%3D%22q%22%5C"),
        ] {
            assert_eq!(encode_database(name), encoded, "{name:?}");
            assert_eq!(decode_database(encoded).as_deref(), Some(name));
            crate::storage::validate_key(&format!("logical/{encoded}/L")).unwrap();
        }
        // Every byte value a name can hold survives.
        let all: String = (1u8..=127).map(char::from).collect::<String>() + "ßπ漢🐘";
        let enc = encode_database(&all);
        assert!(enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%_.-".contains(&b)));
        assert_eq!(decode_database(&enc).as_deref(), Some(all.as_str()));
        for bad in ["%", "%4", "%G0", "%FF", "a%2"] {
            assert_eq!(decode_database(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn labels_are_single_safe_components() {
        for ok in ["20261122T101500Z-j42", "a", "x.y_z-1", &"a".repeat(128)] {
            check_label(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "é",
            &"a".repeat(129),
        ] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_428_900), "2026-11-23T10:15:00Z");
        assert_eq!(rfc3339_utc(253_402_300_799), "9999-12-31T23:59:59Z");
        assert!(now_epoch() > 1_700_000_000);
    }

    #[test]
    fn pg_dump_versions_parse() {
        assert_eq!(pg_dump_major("pg_dump (PostgreSQL) 17.2"), Some(17));
        assert_eq!(
            pg_dump_major("pg_dump (PostgreSQL) 16.4 (Ubuntu 16.4-0ubuntu0.24.04.2)"),
            Some(16)
        );
        assert_eq!(pg_dump_major("pg_dump (PostgreSQL) 18devel"), Some(18));
        assert_eq!(pg_dump_major("pg_dump (PostgreSQL) 18beta1"), Some(18));
        assert_eq!(pg_dump_major("nonsense"), None);
        assert_eq!(pg_dump_major(""), None);
        let e = pg_dump_version(Path::new("/nonexistent/pg_dump")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("could not run \"/nonexistent/pg_dump\": No such file"),
            "{e}"
        );
    }

    /// The real pg_dump takes the argument vector and the quoted conninfo:
    /// it gets as far as connecting (no server runs for unit tests).
    #[test]
    fn real_pg_dump_takes_the_arguments() {
        // make setup builds PostgreSQL 17, so its pg_dump is always there
        // (ARK_PG_DUMP names it when ARK_CACHE is elsewhere); a missing one
        // fails the test.
        let pg_dump = std::env::var("ARK_PG_DUMP").unwrap_or_else(|_| PG_DUMP.to_string());
        assert!(
            Path::new(&pg_dump).exists(),
            "no pg_dump at {pg_dump}: run make setup (or set ARK_PG_DUMP)"
        );
        let v = pg_dump_version(Path::new(&pg_dump)).unwrap();
        assert!(v.starts_with("pg_dump (PostgreSQL) 17."), "{v}");
        assert_eq!(pg_dump_major(&v), Some(17));

        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let mut r = request("it's \\ = \"odd\"", DumpFormat::Custom);
        r.socket_dir = "/nonexistent-ark".into();
        r.port = 5999;
        r.user = Some("o'neil".into());
        r.schemas = vec!["Sales".into()];
        r.pg_dump = PathBuf::from(&pg_dump);
        let control = DumpControl::new();
        let e = stream_command_output(&s, "d/x", r.command(), &r.database, &control).unwrap_err();
        assert!(matches!(e, Error::DumpFailed { .. }), "{e}");
        assert!(
            e.to_string().starts_with(
                "pg_dump failed for database \"it's \\ = \"odd\"\": exit status 1: pg_dump: error: \
                 connection to server on socket \"/nonexistent-ark/.s.PGSQL.5999\" failed"
            ),
            "{e}"
        );
        assert!(keys(&s, "").is_empty());
    }

    fn write_file(path: &Path, len: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        fs::write(path, &data).unwrap();
        data
    }

    #[test]
    fn output_streams_into_storage_hashed_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(&dir.path().join("repo")).unwrap();
        let control = DumpControl::new();
        let n = 3_000_000;
        let out = stream_command_output(
            &s,
            "dumps/random",
            command("head", &["-c", &n.to_string(), "/dev/urandom"]),
            "db",
            &control,
        )
        .unwrap();
        let stored = s.get("dumps/random").unwrap();
        assert_eq!(stored.len(), n);
        assert_eq!(out.bytes, n as u64);
        assert_eq!(out.sha256, hex(&sha256(&stored)));
        assert_eq!(control.bytes(), n as u64);

        let file = dir.path().join("input");
        let data = write_file(&file, 1_234_567);
        let control = DumpControl::new();
        let out = stream_command_output(
            &s,
            "dumps/cat",
            command("cat", &[file.to_str().unwrap()]),
            "db",
            &control,
        )
        .unwrap();
        assert_eq!(s.get("dumps/cat").unwrap(), data);
        assert_eq!(out.sha256, hex(&sha256(&data)));
        // An empty output is a valid (empty) object.
        let out = stream_command_output(
            &s,
            "dumps/empty",
            command("true", &[]),
            "db",
            &DumpControl::new(),
        )
        .unwrap();
        assert_eq!((out.bytes, s.get("dumps/empty").unwrap()), (0, vec![]));
        // Create: an existing key is refused, and kept.
        let e = stream_command_output(
            &s,
            "dumps/cat",
            command("true", &[]),
            "db",
            &DumpControl::new(),
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::Storage(StorageError::AlreadyExists { .. })),
            "{e}"
        );
        assert_eq!(s.get("dumps/cat").unwrap(), data);
    }

    #[test]
    fn a_failing_command_stores_nothing_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(&dir.path().join("repo")).unwrap();
        let file = dir.path().join("input");
        write_file(&file, 2_000_000);
        // All of its output arrives, then it exits with status 1.
        let e = stream_command_output(
            &s,
            "dumps/x",
            command("cat", &[file.to_str().unwrap(), "/nonexistent/ark-file"]),
            "x",
            &DumpControl::new(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::DumpFailed { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "pg_dump failed for database \"x\": exit status 1: cat: /nonexistent/ark-file: No such file or directory"
        );
        assert!(e.hint().is_some());
        assert_eq!(s.head("dumps/x").unwrap(), None);
        assert!(keys(&s, "").is_empty());
        assert_eq!(
            fs::read_dir(dir.path().join("repo/dumps")).unwrap().count(),
            0,
            "no temporary file is left"
        );

        // Killed by a signal.
        let e = stream_command_output(
            &s,
            "dumps/x",
            command("sh", &["-c", "kill -9 $$"]),
            "x",
            &DumpControl::new(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "pg_dump failed for database \"x\": terminated by signal 9 (SIGKILL)"
        );

        // A program that does not exist.
        let e = stream_command_output(
            &s,
            "dumps/x",
            command("/nonexistent/pg_dump", &[]),
            "x",
            &DumpControl::new(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("could not run \"/nonexistent/pg_dump\": No such file or directory"),
            "{e}"
        );
        assert!(keys(&s, "").is_empty());
    }

    #[test]
    fn standard_error_is_kept_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        // ~70 KiB of complaints, more than a pipe holds: read on its own
        // thread, so the process never blocks on it.
        let missing: Vec<String> = (0..1000)
            .map(|i| format!("/nonexistent/{i:04}-{}", "x".repeat(40)))
            .collect();
        let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
        let e = stream_command_output(
            &s,
            "d/x",
            command("cat", &missing),
            "db",
            &DumpControl::new(),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("pg_dump failed for database \"db\": exit status 1: ..."),
            "{}",
            &text[..200]
        );
        assert!(text.len() < STDERR_TAIL + 200, "{}", text.len());
        assert!(
            text.ends_with("/nonexistent/0999-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: No such file or directory"),
            "the end of standard error is kept"
        );
    }

    fn cancel_when(control: &DumpControl, cond: impl Fn(&DumpControl) -> bool + Send + 'static) {
        let c = control.clone();
        std::thread::spawn(move || {
            while !cond(&c) {
                std::thread::sleep(Duration::from_millis(10));
            }
            c.request_cancel();
        });
    }

    #[test]
    fn cancel_stops_a_silent_process_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let control = DumpControl::new();
        let started = Instant::now();
        let armed = Instant::now();
        cancel_when(&control, move |_| {
            armed.elapsed() > Duration::from_millis(300)
        });
        // Like a pg_dump waiting for a lock: no output at all.
        let e = stream_command_output(&s, "d/x", command("sleep", &["60"]), "db", &control)
            .unwrap_err();
        assert!(matches!(e, Error::DumpCancelled { .. }), "{e}");
        assert_eq!(e.to_string(), "the dump of database \"db\" was cancelled");
        // Cancelled, not run out: the silent process would take 60 s.
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{:?}",
            started.elapsed()
        );
        assert!(keys(&s, "").is_empty());
    }

    #[test]
    fn cancel_while_streaming_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let control = DumpControl::new();
        cancel_when(&control, |c| c.bytes() >= 4 << 20);
        let e = stream_command_output(&s, "d/x", command("cat", &["/dev/zero"]), "db", &control)
            .unwrap_err();
        assert!(matches!(e, Error::DumpCancelled { .. }), "{e}");
        assert!(keys(&s, "").is_empty());
        assert_eq!(fs::read_dir(dir.path().join("d")).unwrap().count(), 0);
    }

    #[test]
    fn a_custom_backup_is_stored_with_its_metadata_last() {
        let (dir, c) = local_cluster();
        let file = dir.path().join("dump");
        let data = write_file(&file, 500_000);
        let control = DumpControl::new();
        let req = request("my 'shop'", DumpFormat::Custom);
        let before = now_epoch();
        let info = backup_with_command(
            &c,
            &req,
            command("cat", &[file.to_str().unwrap()]),
            &meta("20261122T101500Z-j42"),
            &control,
        )
        .unwrap();
        let prefix = format!("clusters/{SYSID}/logical/my%20%27shop%27/20261122T101500Z-j42");
        assert_eq!(
            backup_prefix(&c, "my 'shop'", "20261122T101500Z-j42"),
            prefix
        );
        assert_eq!(
            keys(c.storage(), &format!("{prefix}/")),
            [
                format!("{prefix}/backup.info"),
                format!("{prefix}/backup.info.copy"),
                format!("{prefix}/dump.custom"),
            ]
        );
        assert_eq!(info.data_key, format!("{prefix}/dump.custom"));
        assert_eq!(c.storage().get(&info.data_key).unwrap(), data);
        assert_eq!(info.bytes, data.len() as u64);
        assert_eq!(info.sha256.as_deref(), Some(hex(&sha256(&data)).as_str()));
        assert_eq!(
            info.files,
            [LogicalFile {
                key: info.data_key.clone(),
                bytes: data.len() as u64,
                sha256: hex(&sha256(&data)),
            }]
        );
        assert_eq!(
            (info.kind.as_str(), info.format, info.format_version),
            ("logical", DumpFormat::Custom, 1)
        );
        assert_eq!((info.system_identifier, info.job_id), (SYSID, Some(42)));
        assert_eq!(info.pg_dump_version, "pg_dump (PostgreSQL) 17.2");
        assert!(info.started_epoch >= before && info.finished_epoch >= info.started_epoch);
        assert_eq!(info.started_at, rfc3339_utc(info.started_epoch));
        assert_eq!(control.bytes(), data.len() as u64);

        // backup.info round-trips, with the system identifier as a string.
        let stored = info::load(c.storage(), &format!("{prefix}/backup.info"))
            .unwrap()
            .unwrap();
        assert_eq!(
            stored["system_identifier"],
            serde_json::json!(SYSID.to_string())
        );
        assert_eq!(stored["format"], serde_json::json!("custom"));
        assert_eq!(
            serde_json::from_value::<LogicalBackupInfo>(stored).unwrap(),
            info
        );
        assert_eq!(
            list_logical_backups(&c, None).unwrap(),
            std::slice::from_ref(&info)
        );
        assert_eq!(list_logical_backups(&c, Some("my 'shop'")).unwrap(), [info]);
        assert!(list_logical_backups(&c, Some("my")).unwrap().is_empty());

        // The same label again is refused before anything runs.
        let e = backup_with_command(
            &c,
            &req,
            command("cat", &["/nonexistent"]),
            &meta("20261122T101500Z-j42"),
            &control,
        )
        .unwrap_err();
        assert!(matches!(e, Error::LogicalBackupExists { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "logical backup \"20261122T101500Z-j42\" of database \"my 'shop'\" already exists in file://{}",
                dir.path().join("repo").display()
            )
        );
        assert_eq!(list_logical_backups(&c, None).unwrap().len(), 1);

        // Plain format: dump.sql.
        let p = backup_with_command(
            &c,
            &request("my 'shop'", DumpFormat::Plain),
            command("echo", &["SELECT 1;"]),
            &meta("p1"),
            &control,
        )
        .unwrap();
        assert!(p.data_key.ends_with("/my%20%27shop%27/p1/dump.sql"));
        assert_eq!(c.storage().get(&p.data_key).unwrap(), b"SELECT 1;\n");
    }

    #[test]
    fn a_failed_or_cancelled_backup_leaves_nothing() {
        let (_dir, c) = local_cluster();
        let req = request("shop", DumpFormat::Custom);
        let e = backup_with_command(
            &c,
            &req,
            command("cat", &["/nonexistent/x"]),
            &meta("L1"),
            &DumpControl::new(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::DumpFailed { .. }), "{e}");
        let control = DumpControl::new();
        control.request_cancel();
        let e = backup_with_command(&c, &req, command("echo", &["data"]), &meta("L2"), &control)
            .unwrap_err();
        assert!(matches!(e, Error::DumpCancelled { .. }), "{e}");
        assert_eq!(
            scan_logical_backups(&c, None).unwrap(),
            LogicalCatalog::default()
        );
        assert!(keys(c.storage(), &format!("clusters/{SYSID}/logical")).is_empty());
        // A bad label is refused.
        let e = backup_with_command(
            &c,
            &req,
            command("true", &[]),
            &meta("../x"),
            &DumpControl::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid label \"../x\""), "{e}");
    }

    fn dump_source(root: &Path) -> PathBuf {
        let src = root.join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        write_file(&src.join("toc.dat"), 10_000);
        write_file(&src.join("3001.dat.gz"), 300_000);
        write_file(&src.join("3002.dat.gz"), 0);
        write_file(&src.join("sub/blob_1.dat"), 77);
        src
    }

    #[test]
    fn a_directory_backup_uploads_each_file_and_removes_the_work_dir() {
        let (dir, c) = local_cluster();
        let src = dump_source(dir.path());
        let work = dir.path().join("pgdata/pg_ark_tmp/L1");
        let mut req = request("shop", DumpFormat::Directory);
        req.work_dir = Some(work.clone());
        req.jobs = Some(2);
        let control = DumpControl::new();
        let info = backup_with_command(
            &c,
            &req,
            command("cp", &["-R", src.to_str().unwrap(), work.to_str().unwrap()]),
            &meta("L1"),
            &control,
        )
        .unwrap();
        assert!(!work.exists(), "the work directory is removed");
        let prefix = format!("clusters/{SYSID}/logical/shop/L1");
        assert_eq!(info.data_key, format!("{prefix}/dump.dir"));
        let names: Vec<&str> = info
            .files
            .iter()
            .map(|f| f.key.strip_prefix(&format!("{prefix}/dump.dir/")).unwrap())
            .collect();
        assert_eq!(
            names,
            ["3001.dat.gz", "3002.dat.gz", "sub/blob_1.dat", "toc.dat"]
        );
        for f in &info.files {
            let name = f.key.rsplit_once("dump.dir/").unwrap().1;
            let original = fs::read(src.join(name)).unwrap();
            assert_eq!(c.storage().get(&f.key).unwrap(), original);
            assert_eq!(f.sha256, hex(&sha256(&original)));
            assert_eq!(f.bytes, original.len() as u64);
        }
        assert_eq!(info.bytes, 310_077);
        assert_eq!(control.bytes(), 310_077);
        assert_eq!(info.sha256, None);
        assert_eq!(list_logical_backups(&c, Some("shop")).unwrap(), [info]);
    }

    #[test]
    fn a_failed_directory_dump_cleans_up() {
        let (dir, c) = local_cluster();
        let work = dir.path().join("tmp/L1");
        let mut req = request("shop", DumpFormat::Directory);
        req.work_dir = Some(work.clone());
        // It creates the work directory, then fails.
        let src = dump_source(dir.path());
        let e = backup_with_command(
            &c,
            &req,
            command(
                "cp",
                &[
                    "-R",
                    src.to_str().unwrap(),
                    work.to_str().unwrap(),
                    "/nonexistent/x/y",
                ],
            ),
            &meta("L1"),
            &DumpControl::new(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::DumpFailed { .. }), "{e}");
        assert!(!work.exists());
        assert_eq!(
            scan_logical_backups(&c, None).unwrap(),
            LogicalCatalog::default()
        );

        // An existing work directory is refused and left alone.
        fs::create_dir_all(&work).unwrap();
        fs::write(work.join("precious"), b"x").unwrap();
        let e = backup_with_command(
            &c,
            &req,
            command("true", &[]),
            &meta("L2"),
            &DumpControl::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert!(work.join("precious").exists());
    }

    /// A local storage that records the order of deletions.
    struct Recording {
        inner: LocalStorage,
        deleted: Arc<Mutex<Vec<String>>>,
    }

    impl Storage for Recording {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
            self.inner.get(key)
        }
        fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
            self.inner.head(key)
        }
        fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StorageError> {
            self.inner.put(key, data, mode)
        }
        fn put_stream(
            &self,
            key: &str,
            body: &mut dyn Read,
            mode: PutMode,
        ) -> Result<u64, StorageError> {
            self.inner.put_stream(key, body, mode)
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> Result<(), StorageError> {
            lock(&self.deleted).push(key.to_string());
            self.inner.delete(key)
        }
    }

    #[test]
    fn deletion_removes_the_metadata_first_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let deleted = Arc::new(Mutex::new(Vec::new()));
        let c = cluster_in(Box::new(Recording {
            inner: LocalStorage::open(dir.path()).unwrap(),
            deleted: Arc::clone(&deleted),
        }));
        let src = dump_source(dir.path());
        let work = dir.path().join("w");
        let mut req = request("shop", DumpFormat::Directory);
        req.work_dir = Some(work.clone());
        let info = backup_with_command(
            &c,
            &req,
            command("cp", &["-R", src.to_str().unwrap(), work.to_str().unwrap()]),
            &meta("L1"),
            &DumpControl::new(),
        )
        .unwrap();
        let other = backup_with_command(
            &c,
            &request("shop", DumpFormat::Plain),
            command("echo", &["x"]),
            &meta("L10"),
            &DumpControl::new(),
        )
        .unwrap();
        lock(&deleted).clear();
        delete_logical_backup(&c, &info).unwrap();
        let prefix = format!("clusters/{SYSID}/logical/shop/L1");
        let order = lock(&deleted).clone();
        assert_eq!(
            order[..2],
            [
                format!("{prefix}/backup.info"),
                format!("{prefix}/backup.info.copy")
            ]
        );
        assert_eq!(order.len(), 2 + 4, "then the four data files");
        assert!(keys(c.storage(), &format!("{prefix}/")).is_empty());
        // "L1" is not a prefix match for "L10".
        assert_eq!(
            list_logical_backups(&c, None).unwrap(),
            std::slice::from_ref(&other)
        );
        delete_logical_backup(&c, &info).expect("deleting again succeeds");

        // Another entry's backup is refused.
        let mut foreign = other.clone();
        foreign.system_identifier = 1;
        assert!(delete_logical_backup(&c, &foreign).is_err());
        let mut bad = other.clone();
        bad.label = String::new();
        assert!(delete_logical_backup(&c, &bad).is_err());
        assert_eq!(list_logical_backups(&c, None).unwrap(), [other]);
    }

    #[test]
    fn incomplete_and_damaged_dumps_are_listed_apart() {
        let (_dir, c) = local_cluster();
        let s = c.storage();
        let a = backup_with_command(
            &c,
            &request("a", DumpFormat::Plain),
            command("echo", &["a"]),
            &meta("L1"),
            &DumpControl::new(),
        )
        .unwrap();
        let b = backup_with_command(
            &c,
            &request("b c", DumpFormat::Plain),
            command("echo", &["b"]),
            &meta("L1"),
            &DumpControl::new(),
        )
        .unwrap();
        let base = format!("clusters/{SYSID}/logical");
        // Data without backup.info: running, failed, or half deleted.
        s.put(
            &format!("{base}/a/L0/dump.custom"),
            b"partial",
            PutMode::Create,
        )
        .unwrap();
        // Both copies of backup.info damaged.
        s.put(&format!("{base}/a/L2/dump.sql"), b"x", PutMode::Create)
            .unwrap();
        s.put(
            &format!("{base}/a/L2/backup.info"),
            b"junk",
            PutMode::Create,
        )
        .unwrap();
        s.put(
            &format!("{base}/a/L2/backup.info.copy"),
            b"junk",
            PutMode::Create,
        )
        .unwrap();
        // A backup.info copied from elsewhere.
        for k in ["backup.info", "backup.info.copy"] {
            let v = s.get(&format!("{base}/a/L1/{k}")).unwrap();
            s.put(&format!("{base}/a/L3/{k}"), &v, PutMode::Create)
                .unwrap();
        }
        // Not a backup directory at all.
        s.put(&format!("{base}/%ZZ/L1/dump.sql"), b"x", PutMode::Create)
            .unwrap();
        s.put(&format!("{base}/stray"), b"x", PutMode::Create)
            .unwrap();

        let cat = scan_logical_backups(&c, None).unwrap();
        assert_eq!(cat.complete, [a.clone(), b.clone()]);
        let reasons: Vec<(&str, &str, &str)> = cat
            .incomplete
            .iter()
            .map(|i| (i.database.as_str(), i.label.as_str(), i.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert_eq!(reasons[0].0, "%ZZ");
        assert!(reasons[0].2.contains("not an encoded database name"));
        assert_eq!(
            (reasons[1].0, reasons[1].1, reasons[1].2),
            ("a", "L0", NO_INFO)
        );
        assert_eq!((reasons[2].0, reasons[2].1), ("a", "L2"));
        assert!(
            reasons[2].2.contains("damaged in both copies"),
            "{}",
            reasons[2].2
        );
        assert_eq!((reasons[3].0, reasons[3].1), ("a", "L3"));
        assert!(
            reasons[3].2.contains("describes another backup"),
            "{}",
            reasons[3].2
        );
        assert_eq!(cat.incomplete[1].objects, 1);
        assert_eq!(cat.incomplete[1].bytes, 7);

        assert_eq!(
            list_logical_backups(&c, Some("b c")).unwrap(),
            std::slice::from_ref(&b)
        );
        let only_a = scan_logical_backups(&c, Some("a")).unwrap();
        assert_eq!((only_a.complete.len(), only_a.incomplete.len()), (1, 3));

        for dump in &cat.incomplete {
            delete_incomplete_logical_backup(&c, dump).unwrap();
        }
        let cat = scan_logical_backups(&c, None).unwrap();
        assert_eq!((cat.complete, cat.incomplete), (vec![a, b], vec![]));
        assert_eq!(keys(s, &format!("{base}/a/")).len(), 3);
        let stray = IncompleteLogicalBackup {
            database: "x".into(),
            label: "y".into(),
            prefix: format!("clusters/{SYSID}/wal"),
            objects: 0,
            bytes: 0,
            reason: String::new(),
        };
        assert!(delete_incomplete_logical_backup(&c, &stray).is_err());
    }

    // ----- retention -----

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn backup(db: &str, label: &str, age_secs: i64) -> LogicalBackupInfo {
        LogicalBackupInfo {
            format_version: 1,
            kind: "logical".into(),
            label: label.into(),
            database: db.into(),
            format: DumpFormat::Custom,
            started_at: rfc3339_utc(NOW - age_secs),
            finished_at: rfc3339_utc(NOW - age_secs + 60),
            started_epoch: NOW - age_secs,
            finished_epoch: NOW - age_secs + 60,
            bytes: 1,
            sha256: None,
            files: vec![],
            data_key: String::new(),
            schemas: vec![],
            compression: None,
            server_version: "17".into(),
            pg_dump_version: "17".into(),
            system_identifier: SYSID,
            job_id: None,
            created_by: String::new(),
            series: None,
        }
    }

    #[test]
    fn retention_counts_per_series() {
        // Two schedules' full dumps, and ad-hoc schema-only dumps, of one
        // database: a rule applied to the schema-only ones never touches
        // the others, and each series keeps its own newest.
        let mut all = Vec::new();
        for (i, series) in ["schedule:nightly", "schedule:nightly", "schedule:hourly"]
            .iter()
            .enumerate()
        {
            let mut b = backup("app", &format!("full{i}"), 1000 - i as i64);
            b.series = Some(series.to_string());
            all.push(b);
        }
        for i in 0..3 {
            let mut b = backup("app", &format!("schema{i}"), 500 - i);
            b.schemas = vec!["sales".into()];
            all.push(b);
        }
        assert_eq!(
            labels(&select_expired(&all, Some(1), None, NOW)),
            ["full0", "schema0", "schema1"]
        );
        // Ties on time are broken by job id, not by label text ("j10" < "j9").
        let mut a = backup("db", "x-j9", 100);
        a.job_id = Some(9);
        let mut b = backup("db", "x-j10", 100);
        b.job_id = Some(10);
        assert_eq!(
            labels(&select_expired(&[a, b], Some(1), None, NOW)),
            ["x-j9"]
        );
    }

    fn labels<'a>(v: &[&'a LogicalBackupInfo]) -> Vec<&'a str> {
        v.iter().map(|b| b.label.as_str()).collect()
    }

    #[test]
    fn retention_keeps_the_newest_n_or_the_young() {
        // Given out of order on purpose.
        let all = vec![
            backup("a", "a3", 3 * DAY),
            backup("a", "a1", DAY),
            backup("a", "a30", 30 * DAY),
            backup("a", "a7", 7 * DAY),
            backup("a", "a0", 0),
            backup("a", "a8", 8 * DAY),
        ];
        let exp = |last, days| labels(&select_expired(&all, last, days, NOW));
        assert!(exp(None, None).is_empty(), "no rule: nothing expires");
        assert_eq!(exp(Some(2), None), ["a3", "a30", "a7", "a8"]);
        assert_eq!(exp(Some(0), None), ["a3", "a1", "a30", "a7", "a8"]);
        assert_eq!(exp(Some(1), None), ["a3", "a1", "a30", "a7", "a8"]);
        assert!(exp(Some(6), None).is_empty());
        assert!(exp(Some(100), None).is_empty());
        // Younger than 7 days: ages 0, 1, 3; exactly 7 days is not younger.
        assert_eq!(exp(None, Some(7)), ["a30", "a7", "a8"]);
        assert_eq!(exp(None, Some(0)), ["a3", "a1", "a30", "a7", "a8"]);
        assert!(exp(None, Some(31)).is_empty());
        // Either rule keeps a backup.
        assert_eq!(exp(Some(5), Some(2)), ["a30"]);
        assert_eq!(exp(Some(1), Some(4)), ["a30", "a7", "a8"]);
        assert_eq!(exp(Some(4), Some(1)), ["a30", "a8"]);
    }

    #[test]
    fn retention_never_expires_the_newest_of_a_database() {
        let all = vec![
            backup("a", "a100", 100 * DAY),
            backup("a", "a200", 200 * DAY),
            backup("b", "b365", 365 * DAY),
        ];
        let e = select_expired(&all, None, Some(7), NOW);
        assert_eq!(labels(&e), ["a200"]);
        let e = select_expired(&all, Some(0), Some(0), NOW);
        assert_eq!(labels(&e), ["a200"]);
        assert!(select_expired(&[], Some(0), Some(0), NOW).is_empty());
    }

    #[test]
    fn retention_counts_per_database() {
        let all = vec![
            backup("a", "a1", DAY),
            backup("b", "b1", DAY),
            backup("a", "a2", 2 * DAY),
            backup("b", "b2", 2 * DAY),
            backup("a", "a3", 3 * DAY),
        ];
        assert_eq!(labels(&select_expired(&all, Some(2), None, NOW)), ["a3"]);
        assert_eq!(
            labels(&select_expired(&all, Some(1), None, NOW)),
            ["a2", "b2", "a3"]
        );
    }

    #[test]
    fn retention_breaks_ties_and_keeps_future_dumps() {
        // Same start: the later finish is newer, then the greater label.
        let mut x = backup("a", "x", DAY);
        x.finished_epoch += 10;
        let all = vec![backup("a", "z", DAY), x, backup("a", "y", DAY)];
        assert_eq!(
            labels(&select_expired(&all, Some(1), None, NOW)),
            ["z", "y"]
        );
        assert_eq!(labels(&select_expired(&all, Some(2), None, NOW)), ["y"]);
        // A start in the future (clock skew) is young, never expired by age.
        let all = vec![backup("a", "future", -DAY), backup("a", "old", 9 * DAY)];
        assert_eq!(labels(&select_expired(&all, None, Some(1), NOW)), ["old"]);
        let all = vec![backup("a", "old", 9 * DAY), backup("a", "future", -DAY)];
        assert_eq!(labels(&select_expired(&all, None, Some(1), NOW)), ["old"]);
    }

    /// Every combination of up to 6 backups over 2 databases, ages and
    /// rules, against the rule stated plainly.
    #[test]
    fn retention_matches_its_definition_exhaustively() {
        let ages = [0, DAY / 2, DAY, 2 * DAY, 5 * DAY, 40 * DAY];
        let lasts = [None, Some(0), Some(1), Some(2), Some(3), Some(7)];
        let days = [None, Some(0), Some(1), Some(2), Some(6), Some(100)];
        let mut cases = 0;
        for n in 0..=6usize {
            // Each backup goes to database a or b: every assignment.
            for mask in 0..(1u32 << n) {
                let all: Vec<LogicalBackupInfo> = (0..n)
                    .map(|i| {
                        let db = if mask & (1 << i) != 0 { "b" } else { "a" };
                        backup(
                            db,
                            &format!("{db}{i}"),
                            ages[(i * 7 + mask as usize) % ages.len()],
                        )
                    })
                    .collect();
                for &last in &lasts {
                    for &d in &days {
                        cases += 1;
                        let expired = select_expired(&all, last, d, NOW);
                        let expected: Vec<&LogicalBackupInfo> = all
                            .iter()
                            .filter(|b| {
                                let newer = all
                                    .iter()
                                    .filter(|o| {
                                        o.database == b.database
                                            && (o.started_epoch, o.finished_epoch, &o.label)
                                                > (b.started_epoch, b.finished_epoch, &b.label)
                                    })
                                    .count() as u64;
                                let keep = (last.is_none() && d.is_none())
                                    || newer == 0
                                    || last.is_some_and(|l| newer < u64::from(l))
                                    || d.is_some_and(|d| {
                                        NOW - b.started_epoch < i64::from(d) * DAY
                                    });
                                !keep
                            })
                            .collect();
                        assert_eq!(
                            labels(&expired),
                            labels(&expected),
                            "n={n} mask={mask} last={last:?} days={d:?}"
                        );
                        // Invariants: each database keeps at least one.
                        for db in ["a", "b"] {
                            let total = all.iter().filter(|b| b.database == db).count();
                            let gone = expired.iter().filter(|b| b.database == db).count();
                            assert!(total == 0 || gone < total);
                        }
                    }
                }
            }
        }
        assert!(cases > 4000, "{cases}");
    }
}
