//! Job kinds, their options, and retry timing: the rules of pg_ark's job
//! queue that need no database.
//!
//! A job is a `kind` plus an `options` JSON object. Options are checked by
//! [`validate`] when the job (or the schedule that makes it) is created, and
//! again by [`check_claimed`] when a worker claims the job (a row written
//! behind the functions' back never runs): an unknown key is an error that
//! lists the allowed keys, and a value of the wrong type or range names the
//! key and what it accepts.
//!
//! Each kind is a row of [`KINDS`]: its name, its conflict key, the
//! physical backup it takes, and its options with their rules. What each
//! kind does: `docs/reference/jobs.md`.
//!
//! Retry timing and failure classes: [`super::lifecycle`].
use serde_json::{Map, Value};
use std::fmt;
use std::path::Path;

/// Everything pg_ark knows about a job kind outside the code that runs it.
///
/// Adding a kind: its row in [`job_kinds!`] below (which declares the
/// [`JobKind`] variant too, so no variant lacks a row), its runner (the
/// extension's `worker::kinds`, a `match` the compiler holds complete), the
/// kind in `catalog.sql`'s CHECK constraints (a unit test) and in the next
/// upgrade script's (`tests/upgrade.rs` compares the upgraded catalog with a
/// fresh one), the docs' rows (`tests/docs.rs`), and its integration test.
pub struct KindSpec {
    pub kind: JobKind,
    pub name: &'static str,
    /// Jobs with the same conflict key never run concurrently.
    pub conflict_key: Option<&'static str>,
    /// The physical backup the kind takes, if it takes one.
    pub backup: Option<crate::physical::BackupKind>,
    /// Its own options, in documentation order, each with its rule; the
    /// options of every kind ([`RETRY_OPTIONS`]) follow them.
    pub options: &'static [(&'static str, Rule)],
    /// Rules across its options, after each option's own.
    pub check_all: Option<CheckAll>,
    /// It runs another program as the server's operating system user (the
    /// tools of `crate::tools`): only superusers queue it, and a worker
    /// runs it only for a job a role that is a superuser queued.
    pub superuser: bool,
}

/// What an option's value must be.
#[derive(Clone, Copy)]
pub enum Rule {
    /// A non-empty name, or a non-empty array of them.
    Names,
    /// An integer in the range, both ends included.
    Int(i64, i64),
    /// Seconds, more than 0 and at most 30 days.
    Seconds,
    Bool,
    Text,
    /// Its own check.
    Custom(Check),
}

/// An option's own check: (key, value, every option, `$libdir`).
pub type Check = fn(&str, &Value, &Map<String, Value>, &Path) -> Result<(), JobError>;

/// A check across a kind's options.
pub type CheckAll = fn(&Map<String, Value>) -> Result<(), JobError>;

/// Every kind takes these, after its own.
pub const RETRY_OPTIONS: [(&str, Rule); 3] = [
    ("max_attempts", Rule::Int(1, 100)),
    ("retry_base", Rule::Seconds),
    ("retry_cap", Rule::Seconds),
];

/// Physical backups, expiry, verification and drills share one conflict
/// key: two physical backups of one cluster never run at once, no backup is
/// removed while a backup relies on it or a verification or a drill reads
/// it, and a drill never competes with a backup for the server's disk and
/// I/O.
const PHYSICAL: Option<&str> = Some("physical");

const BACKUP_OPTIONS: &[(&str, Rule)] = &[("wait_timeout", Rule::Int(1, 86_400))];

/// Declares [`JobKind`] and the kinds table together, one row per kind.
macro_rules! job_kinds {
    ($($variant:ident { $($field:ident: $value:expr),* $(,)? }),* $(,)?) => {
        /// The kinds of job the queue knows, in the order of [`KINDS`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum JobKind {
            $($variant),*
        }

        /// The kinds table: one row per [`JobKind`], in its order.
        pub static KINDS: [KindSpec; [$(JobKind::$variant),*].len()] =
            [$(KindSpec { kind: JobKind::$variant, $($field: $value),* }),*];
    };
}

job_kinds! {
    Logical {
        name: "logical",
        conflict_key: None,
        backup: None,
        options: &[
            ("database", Rule::Names),
            ("format", Rule::Custom(dump_format)),
            ("schema", Rule::Names),
            ("jobs", Rule::Custom(dump_jobs)),
            ("compression", Rule::Custom(compression)),
            ("retain_count", Rule::Int(1, 100_000)),
            ("retain_days", Rule::Int(1, 36_500)),
        ],
        check_all: None,
        superuser: false,
    },
    Expire {
        name: "expire",
        conflict_key: PHYSICAL,
        backup: None,
        options: &[
            ("database", Rule::Names),
            ("retain_count", Rule::Int(1, 100_000)),
            ("retain_days", Rule::Int(1, 36_500)),
            ("retention_full", Rule::Int(1, 10_000)),
            ("retention_diff", Rule::Int(0, 10_000)),
            ("retention_days", Rule::Int(0, 36_500)),
            ("dry_run", Rule::Bool),
        ],
        check_all: None,
        superuser: false,
    },
    Full {
        name: "full",
        conflict_key: PHYSICAL,
        backup: Some(crate::physical::BackupKind::Full),
        options: BACKUP_OPTIONS,
        check_all: None,
        superuser: false,
    },
    Incremental {
        name: "incremental",
        conflict_key: PHYSICAL,
        backup: Some(crate::physical::BackupKind::Incremental),
        options: BACKUP_OPTIONS,
        check_all: None,
        superuser: false,
    },
    Differential {
        name: "differential",
        conflict_key: PHYSICAL,
        backup: Some(crate::physical::BackupKind::Differential),
        options: BACKUP_OPTIONS,
        check_all: None,
        superuser: false,
    },
    Verify {
        name: "verify",
        conflict_key: PHYSICAL,
        backup: None,
        options: &[("backup_id", Rule::Custom(backup_id))],
        check_all: None,
        superuser: false,
    },
    Drill {
        name: "drill",
        conflict_key: PHYSICAL,
        backup: None,
        options: &[
            ("backup_id", Rule::Custom(backup_id)),
            ("target_time", Rule::Text),
            ("target_lsn", Rule::Text),
            ("target_xid", Rule::Text),
            ("target_name", Rule::Text),
            ("target_timeline", Rule::Text),
            ("database", Rule::Custom(database_name)),
            ("amcheck", Rule::Names),
            ("count", Rule::Names),
            ("visibility", Rule::Custom(visibility)),
            ("shared_preload_libraries", Rule::Custom(libraries)),
            ("jobs", Rule::Int(1, 64)),
            ("timeout", Rule::Int(1, 7 * 86_400)),
        ],
        check_all: Some(drill_target),
        superuser: false,
    },
    Pgbackrest {
        name: "pgbackrest",
        conflict_key: Some("pgbackrest"),
        backup: None,
        options: &[
            ("stanza", Rule::Custom(tool_name)),
            ("type", Rule::Custom(pgbackrest_type)),
            ("repo", Rule::Int(1, 256)),
            ("options", Rule::Custom(pgbackrest_options)),
            ("timeout", Rule::Int(1, 7 * 86_400)),
        ],
        check_all: Some(crate::tools::pgbackrest::check_all),
        superuser: true,
    },
    Barman {
        name: "barman",
        conflict_key: None,
        backup: None,
        options: &[
            ("server", Rule::Custom(tool_name)),
            ("type", Rule::Custom(barman_type)),
            ("options", Rule::Custom(barman_options)),
            ("timeout", Rule::Int(1, 7 * 86_400)),
        ],
        check_all: Some(crate::tools::barman::check_all),
        superuser: true,
    },
    PgBasebackup {
        name: "pg_basebackup",
        conflict_key: Some("pg_basebackup"),
        backup: None,
        options: &[
            ("target", Rule::Custom(basebackup_target)),
            ("format", Rule::Custom(basebackup_format)),
            ("compression", Rule::Custom(basebackup_compression)),
            ("checkpoint", Rule::Custom(basebackup_checkpoint)),
            ("wal_method", Rule::Custom(basebackup_wal_method)),
            ("incremental", Rule::Custom(basebackup_incremental)),
            ("retain_count", Rule::Int(1, 100_000)),
            ("retain_days", Rule::Int(1, 36_500)),
            ("timeout", Rule::Int(1, 7 * 86_400)),
        ],
        check_all: Some(crate::tools::basebackup::check_all),
        superuser: true,
    },
}

/// The kinds' names, as hints and docs list them.
pub fn kind_names() -> String {
    KINDS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

impl JobKind {
    /// Every kind, in the order of the catalog's CHECK constraints on
    /// `ark.jobs.kind` and `ark.schedules.kind` (a test compares them).
    pub fn all() -> impl Iterator<Item = JobKind> {
        KINDS.iter().map(|s| s.kind)
    }

    pub fn spec(self) -> &'static KindSpec {
        // The macro writes the rows in the variants' order.
        &KINDS[self as usize]
    }

    pub fn parse(s: &str) -> Result<JobKind, JobError> {
        KINDS
            .iter()
            .find(|k| k.name == s)
            .map(|k| k.kind)
            .ok_or_else(|| JobError::UnknownKind { kind: s.into() })
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// The physical backup a job of this kind takes, if it takes one.
    pub fn backup_kind(self) -> Option<crate::physical::BackupKind> {
        self.spec().backup
    }

    /// Jobs with the same conflict key never run concurrently.
    pub fn conflict_key(self) -> Option<&'static str> {
        self.spec().conflict_key
    }

    /// The option keys this kind accepts, in documentation order.
    pub fn allowed_options(self) -> impl Iterator<Item = &'static str> {
        self.spec()
            .options
            .iter()
            .chain(RETRY_OPTIONS.iter())
            .map(|(key, _)| *key)
    }

    fn rule(self, key: &str) -> Option<Rule> {
        self.spec()
            .options
            .iter()
            .chain(RETRY_OPTIONS.iter())
            .find(|(k, _)| *k == key)
            .map(|(_, rule)| *rule)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("unknown job kind \"{kind}\"")]
    UnknownKind { kind: String },
    #[error("options must be a JSON object, not {found}")]
    OptionsNotAnObject { found: String },
    #[error("unknown option \"{key}\" for job kind \"{kind}\"")]
    UnknownOption {
        kind: String,
        key: String,
        allowed: String,
    },
    #[error("invalid value for option \"{key}\": {reason}")]
    InvalidOption { key: String, reason: String },
    #[error("invalid value for option \"{key}\": {reason}")]
    Library {
        key: String,
        reason: String,
        libdir: String,
    },
    #[error("{}", superuser_only(kind, role.as_deref()))]
    SuperuserOnly { kind: String, role: Option<String> },
    #[error(
        "job of kind \"{kind}\" has conflict_key {}, not {}",
        quoted(found.as_deref()),
        quoted(*expected)
    )]
    ConflictKey {
        kind: String,
        found: Option<String>,
        expected: Option<&'static str>,
    },
}

fn superuser_only(kind: &str, role: Option<&str>) -> String {
    match role {
        Some(r) => {
            format!("jobs of kind \"{kind}\" run only for superusers, and role \"{r}\" is not one")
        }
        None => format!("jobs of kind \"{kind}\" run only for superusers, and no role is recorded"),
    }
}

/// The kinds only superusers queue, as hints list them.
pub fn superuser_kind_names() -> String {
    KINDS
        .iter()
        .filter(|s| s.superuser)
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `role` (`None`: nobody recorded) may queue, or have run, a job of
/// `kind`: a kind that runs another program as the server's operating
/// system user is a superuser's, as PostgreSQL's own `archive_command` and
/// `COPY ... PROGRAM` are.
pub fn check_queuer(kind: JobKind, role: Option<&str>, superuser: bool) -> Result<(), JobError> {
    if kind.spec().superuser && !(superuser && role.is_some()) {
        return Err(JobError::SuperuserOnly {
            kind: kind.as_str().into(),
            role: role.map(str::to_string),
        });
    }
    Ok(())
}

fn quoted(key: Option<&str>) -> String {
    key.map_or("NULL".into(), |k| format!("\"{k}\""))
}

impl JobError {
    pub fn hint(&self) -> Option<String> {
        match self {
            JobError::UnknownKind { .. } => Some(format!("The job kinds are: {}.", kind_names())),
            JobError::OptionsNotAnObject { .. } => Some(
                "Pass options as a JSON object, for example '{\"format\": \"custom\"}'.".into(),
            ),
            JobError::UnknownOption { allowed, .. } => {
                Some(format!("The allowed option keys are: {allowed}."))
            }
            JobError::InvalidOption { .. } => None,
            JobError::Library { libdir, .. } => Some(format!(
                "Name libraries installed in $libdir ({libdir}) without a path, for example \
                 \"pg_stat_statements\": a drill's server runs as the server's operating system \
                 user, so pg_ark loads no library from anywhere else, whoever asks."
            )),
            JobError::SuperuserOnly { .. } => Some(format!(
                "Jobs of kinds {} run another program as the server's operating system user, \
                 as archive_command and COPY ... PROGRAM do: a superuser queues them and \
                 schedules them. Members of ark_admin run and schedule every other kind.",
                superuser_kind_names()
            )),
            JobError::ConflictKey { .. } => Some(
                "Queue jobs with ark.backup() or ark.schedule(), which set their conflict key; \
                 a job row written by hand is refused when a worker claims it."
                    .into(),
            ),
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> JobError {
    JobError::InvalidOption {
        key: key.into(),
        reason: reason.into(),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A job's whole-number option `key`, else the value of the setting that
/// defaults it: the one lookup of every counted option (`max_attempts`,
/// `retain_count`, `retention_full`, ...). 0, in either, means off.
pub fn count_option(options: &Value, key: &str, setting: i32) -> Option<u32> {
    match options.get(key).and_then(Value::as_u64) {
        Some(n) => u32::try_from(n).ok().filter(|n| *n > 0),
        None => u32::try_from(setting).ok().filter(|n| *n > 0),
    }
}

/// A job's seconds option `key` (`retry_base`, `retry_cap`; stored as
/// seconds), else the setting's seconds.
pub fn seconds_option(options: &Value, key: &str, setting: f64) -> f64 {
    options.get(key).and_then(Value::as_f64).unwrap_or(setting)
}

/// A non-empty string, or a non-empty array of non-empty strings.
fn names(key: &str, v: &Value) -> Result<Vec<String>, JobError> {
    let list = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(invalid(
                    key,
                    format!("expected strings in the array, found {}", json_type(other)),
                )),
            })
            .collect::<Result<_, _>>()?,
        Value::Array(_) => return Err(invalid(key, "the array is empty")),
        other => {
            return Err(invalid(
                key,
                format!(
                    "expected a name or an array of names, found {}",
                    json_type(other)
                ),
            ))
        }
    };
    if list.iter().any(|s| s.is_empty()) {
        return Err(invalid(key, "a name is empty"));
    }
    Ok(list)
}

/// PostgreSQL's suffix of loadable libraries (`DLSUFFIX`).
pub const DLSUFFIX: &str = if cfg!(target_os = "macos") {
    ".dylib"
} else {
    ".so"
};

/// One entry of `shared_preload_libraries` for a drill's scratch server:
/// the plain name of a library installed in `libdir` (PostgreSQL's
/// `$libdir`), as PostgreSQL finds it there (with or without `DLSUFFIX`).
///
/// PostgreSQL lets only superusers choose what a server preloads, and the
/// scratch server runs as the server's operating system user; a member of
/// `ark_admin` can queue a drill. So no path, no `$libdir/` macro, no list
/// hidden in one name, no dot-file: letters, digits, `_`, `-` and `.` (not
/// first, never `..`), naming a file that is in `libdir`.
fn library(key: &str, name: &str, libdir: &Path) -> Result<(), JobError> {
    let err = |reason: String| JobError::Library {
        key: key.into(),
        reason,
        libdir: libdir.display().to_string(),
    };
    if name.contains(['/', '\\']) || name.starts_with('$') {
        return Err(err(format!("\"{name}\" is a path, not a library name")));
    }
    let plain = name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && !name.contains("..");
    if !plain {
        return Err(err(format!(
            "\"{name}\" is not a library name (letters, digits, _, - and ., one name per entry)"
        )));
    }
    let found = [name.to_string(), format!("{name}{DLSUFFIX}")]
        .iter()
        .any(|file| std::fs::metadata(libdir.join(file)).is_ok_and(|m| m.is_file()));
    if found {
        Ok(())
    } else {
        Err(err(format!(
            "there is no library \"{name}\" in $libdir ({})",
            libdir.display()
        )))
    }
}

fn integer(key: &str, v: &Value, min: i64, max: i64) -> Result<i64, JobError> {
    match v.as_i64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(n) => Err(invalid(key, format!("{n} is out of range {min}..{max}"))),
        None => Err(invalid(
            key,
            format!(
                "expected an integer from {min} to {max}, found {}",
                match v {
                    Value::Number(n) => n.to_string(),
                    other => json_type(other).to_string(),
                }
            ),
        )),
    }
}

/// A number of seconds > 0 (strings such as '5 min' are turned into seconds
/// by the caller before validation: PostgreSQL parses intervals).
fn seconds(key: &str, v: &Value) -> Result<f64, JobError> {
    match v.as_f64() {
        Some(s) if s > 0.0 && s <= 30.0 * 86400.0 => Ok(s),
        Some(s) => Err(invalid(
            key,
            format!("{s} seconds is out of range (more than 0, at most 30 days)"),
        )),
        None => Err(invalid(
            key,
            format!(
                "expected a number of seconds or an interval such as '30s', found {}",
                json_type(v)
            ),
        )),
    }
}

/// The logical dump formats.
pub const FORMATS: [&str; 3] = ["custom", "directory", "plain"];

fn compression(key: &str, v: &Value, _: &Map<String, Value>, _: &Path) -> Result<(), JobError> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => {
            return Err(invalid(
                key,
                format!("expected a level or a method, found {}", json_type(other)),
            ))
        }
    };
    let (method, detail) = text.split_once(':').unwrap_or((&text, ""));
    let ok = if method.chars().all(|c| c.is_ascii_digit()) && !method.is_empty() {
        detail.is_empty() && method.parse::<u32>().is_ok_and(|n| n <= 9)
    } else {
        matches!(method, "none" | "gzip" | "lz4" | "zstd")
            && detail
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '=' || c == ',' || c == '_')
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "\"{text}\" is not a pg_dump compression: use a level 0-9, or none, gzip, lz4 \
                 or zstd, optionally with :level"
            ),
        ))
    }
}

/// A drill's `database`: a name, never a connection string (psql would
/// read one and connect elsewhere).
fn database_name(key: &str, v: &Value, _: &Map<String, Value>, _: &Path) -> Result<(), JobError> {
    match v.as_str() {
        Some(d) if !d.is_empty() && !d.contains('=') && !d.contains("://") => Ok(()),
        _ => Err(invalid(key, format!("expected a database name, found {v}"))),
    }
}

fn visibility(key: &str, v: &Value, _: &Map<String, Value>, _: &Path) -> Result<(), JobError> {
    crate::restore::drill::VisibilityCheck::from_option(Some(v))
        .map(|_| ())
        .map_err(|e| invalid(key, e))
}

fn libraries(key: &str, v: &Value, _: &Map<String, Value>, libdir: &Path) -> Result<(), JobError> {
    for name in names(key, v)? {
        library(key, &name, libdir)?;
    }
    Ok(())
}

fn dump_format(key: &str, v: &Value, _: &Map<String, Value>, _: &Path) -> Result<(), JobError> {
    match v.as_str() {
        Some(f) if FORMATS.contains(&f) => Ok(()),
        _ => Err(invalid(
            key,
            format!("expected one of {}, found {v}", FORMATS.join(", ")),
        )),
    }
}

/// A parallel dump: 1 to 64 jobs, in the directory format.
fn dump_jobs(key: &str, v: &Value, all: &Map<String, Value>, _: &Path) -> Result<(), JobError> {
    integer(key, v, 1, 64)?;
    if all.get("format").and_then(Value::as_str) != Some("directory") {
        return Err(invalid(
            key,
            "parallel dump needs \"format\": \"directory\"",
        ));
    }
    Ok(())
}

fn backup_id(key: &str, v: &Value, _: &Map<String, Value>, _: &Path) -> Result<(), JobError> {
    match v.as_str() {
        Some(id) if crate::physical::check_backup_id(id).is_ok() => Ok(()),
        _ => Err(invalid(
            key,
            format!("expected a backup id (letters, digits, - and _), found {v}"),
        )),
    }
}

fn tool_name(key: &str, v: &Value, _: &Map<String, Value>, _: &Path) -> Result<(), JobError> {
    crate::tools::tool_name(key, v)
}

fn pgbackrest_type(key: &str, v: &Value, _: &Map<String, Value>, _: &Path) -> Result<(), JobError> {
    crate::tools::pgbackrest::check_type(key, v)
}

fn pgbackrest_options(
    key: &str,
    v: &Value,
    _: &Map<String, Value>,
    _: &Path,
) -> Result<(), JobError> {
    crate::tools::pgbackrest::check_options(key, v)
}

fn barman_type(key: &str, v: &Value, _: &Map<String, Value>, _: &Path) -> Result<(), JobError> {
    crate::tools::barman::check_type(key, v)
}

fn barman_options(key: &str, v: &Value, _: &Map<String, Value>, _: &Path) -> Result<(), JobError> {
    crate::tools::barman::check_options(key, v)
}

fn basebackup_target(
    key: &str,
    v: &Value,
    _: &Map<String, Value>,
    _: &Path,
) -> Result<(), JobError> {
    crate::tools::basebackup::check_target(key, v)
}

fn basebackup_format(
    key: &str,
    v: &Value,
    _: &Map<String, Value>,
    _: &Path,
) -> Result<(), JobError> {
    crate::tools::basebackup::check_format(key, v)
}

fn basebackup_compression(
    key: &str,
    v: &Value,
    _: &Map<String, Value>,
    _: &Path,
) -> Result<(), JobError> {
    crate::tools::basebackup::check_compression(key, v)
}

fn basebackup_checkpoint(
    key: &str,
    v: &Value,
    _: &Map<String, Value>,
    _: &Path,
) -> Result<(), JobError> {
    crate::tools::basebackup::check_checkpoint(key, v)
}

fn basebackup_wal_method(
    key: &str,
    v: &Value,
    _: &Map<String, Value>,
    _: &Path,
) -> Result<(), JobError> {
    crate::tools::basebackup::check_wal_method(key, v)
}

fn basebackup_incremental(
    key: &str,
    v: &Value,
    _: &Map<String, Value>,
    _: &Path,
) -> Result<(), JobError> {
    crate::tools::basebackup::check_incremental(key, v)
}

/// A drill's recovery target: at most one of the four, each parsed as
/// recovery will read it, and its timeline.
fn drill_target(map: &Map<String, Value>) -> Result<(), JobError> {
    let text = |k: &str| map.get(k).and_then(Value::as_str);
    crate::restore::plan::parse_target(
        text("target_time"),
        text("target_lsn"),
        text("target_xid"),
        text("target_name"),
        crate::restore::plan::Target::Immediate,
    )
    .map_err(|e| match e {
        crate::Error::InvalidSetting { name, reason, .. } => invalid(name, reason),
        other => invalid("target", other.to_string()),
    })?;
    if let Some(t) = text("target_timeline") {
        crate::restore::plan::TimelineChoice::parse(t)
            .map_err(|e| invalid("target_timeline", e.to_string()))?;
    }
    Ok(())
}

/// Check `options` for a job of `kind`; returns them unchanged when valid.
/// `libdir` is PostgreSQL's `$libdir` (`pg_config --pkglibdir`), where the
/// libraries of a drill's `shared_preload_libraries` must be.
pub fn validate(
    kind: JobKind,
    options: &Value,
    libdir: &Path,
) -> Result<Map<String, Value>, JobError> {
    let Value::Object(map) = options else {
        return Err(JobError::OptionsNotAnObject {
            found: json_type(options).into(),
        });
    };
    for (key, v) in map {
        let Some(rule) = kind.rule(key) else {
            return Err(JobError::UnknownOption {
                kind: kind.as_str().into(),
                key: key.clone(),
                allowed: kind.allowed_options().collect::<Vec<_>>().join(", "),
            });
        };
        match rule {
            Rule::Names => {
                names(key, v)?;
            }
            Rule::Int(min, max) => {
                integer(key, v, min, max)?;
            }
            Rule::Seconds => {
                seconds(key, v)?;
            }
            Rule::Bool if !v.is_boolean() => {
                return Err(invalid(key, format!("expected true or false, found {v}")));
            }
            Rule::Text if !v.is_string() => {
                return Err(invalid(key, format!("expected a string, found {v}")));
            }
            Rule::Bool | Rule::Text => {}
            Rule::Custom(check) => check(key, v, map, libdir)?,
        }
    }
    if let Some(check_all) = kind.spec().check_all {
        check_all(map)?;
    }
    if let (Some(b), Some(c)) = (
        map.get("retry_base").and_then(Value::as_f64),
        map.get("retry_cap").and_then(Value::as_f64),
    ) {
        if c < b {
            return Err(invalid(
                "retry_cap",
                format!("{c} seconds is less than retry_base ({b} seconds)"),
            ));
        }
    }
    Ok(map.clone())
}

/// Check a job a worker is about to run, as its row is: its kind, its
/// options (with [`validate`], as when it was queued), its conflict key
/// (the one its kind has, or two physical backups could run at once), and,
/// for a kind only superusers queue, that the role recorded as queueing it
/// (`queued_by`: its name and whether it is a superuser now) is one. A row
/// written behind the functions' back fails here and never runs.
pub fn check_claimed(
    kind: &str,
    options: &Value,
    conflict_key: Option<&str>,
    queued_by: (Option<&str>, bool),
    libdir: &Path,
) -> Result<JobKind, JobError> {
    let parsed = JobKind::parse(kind)?;
    check_queuer(parsed, queued_by.0, queued_by.1)?;
    if conflict_key != parsed.conflict_key() {
        return Err(JobError::ConflictKey {
            kind: kind.into(),
            found: conflict_key.map(str::to_string),
            expected: parsed.conflict_key(),
        });
    }
    validate(parsed, options, libdir)?;
    Ok(parsed)
}

/// The list of names in option `key` (`database`, `schema`), if given.
pub fn option_names(options: &Value, key: &str) -> Option<Vec<String>> {
    options.get(key).and_then(|v| names(key, v).ok())
}

/// Seconds in an interval written as a number with a unit ('30s', '30 sec',
/// '5 min', '1.5 hours', '2d', '500ms') or as `HH:MM:SS`; `None` if it is
/// neither (or not positive).
pub fn parse_interval(text: &str) -> Option<f64> {
    let t = text.trim().to_ascii_lowercase();
    if let Some((h, rest)) = t.split_once(':') {
        let (m, sec) = rest.split_once(':').unwrap_or((rest, "0"));
        let v = h.trim().parse::<f64>().ok()? * 3600.0
            + m.trim().parse::<f64>().ok()? * 60.0
            + sec.trim().parse::<f64>().ok()?;
        return (v > 0.0 && v.is_finite()).then_some(v);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" | "msec" | "millisecond" | "milliseconds" => 0.001,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        _ => return None,
    };
    let v = n * factor;
    (v > 0.0 && v.is_finite()).then_some(v)
}

#[cfg(test)]
mod tests;
