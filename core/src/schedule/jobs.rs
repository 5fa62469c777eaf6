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
//! Kinds:
//! - `logical`: pg_dump of one or more databases into the repository;
//! - `expire`: apply logical-backup retention now;
//! - `verify`: re-read a physical backup (option `backup_id`; the newest by
//!   default) and check it against its manifest and the WAL it needs;
//! - `full`, `incremental`, `differential`: physical backups. They share the
//!   queue and conflict with each other: two physical backups of one cluster
//!   never run at once.
//! - `drill`: a restore drill. It restores a physical backup (option
//!   `backup_id`; the newest by default) into a scratch cluster, recovers it
//!   (to consistency, or to a target: `target_time`, `target_lsn`,
//!   `target_xid` or `target_name`), runs checks (`amcheck`, `count` on the
//!   tables named, in `database`), records the result and its timings, and
//!   removes the scratch cluster.
//!
//! Retry timing and failure classes: [`super::lifecycle`].
use serde_json::{Map, Value};
use std::fmt;
use std::path::Path;

/// The kinds of job the queue knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Logical,
    Expire,
    Full,
    Incremental,
    Differential,
    Verify,
    Drill,
}

pub const KIND_NAMES: &str = "logical, expire, full, incremental, differential, verify, drill";

impl JobKind {
    /// Every kind, in the order of the catalog's CHECK constraints on
    /// `ark.jobs.kind` and `ark.schedules.kind` (a test compares them).
    pub const ALL: [JobKind; 7] = [
        JobKind::Logical,
        JobKind::Expire,
        JobKind::Full,
        JobKind::Incremental,
        JobKind::Differential,
        JobKind::Verify,
        JobKind::Drill,
    ];

    pub fn parse(s: &str) -> Result<JobKind, JobError> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| JobError::UnknownKind { kind: s.into() })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Logical => "logical",
            JobKind::Expire => "expire",
            JobKind::Full => "full",
            JobKind::Incremental => "incremental",
            JobKind::Differential => "differential",
            JobKind::Verify => "verify",
            JobKind::Drill => "drill",
        }
    }

    /// Physical backups of one cluster never run at the same time.
    pub fn is_physical(self) -> bool {
        matches!(
            self,
            JobKind::Full | JobKind::Incremental | JobKind::Differential
        )
    }

    /// The physical backup a job of this kind takes, if it takes one.
    pub fn backup_kind(self) -> Option<crate::physical::BackupKind> {
        use crate::physical::BackupKind as B;
        match self {
            JobKind::Full => Some(B::Full),
            JobKind::Incremental => Some(B::Incremental),
            JobKind::Differential => Some(B::Differential),
            _ => None,
        }
    }

    /// Jobs with the same conflict key never run concurrently. Expiry,
    /// verification and drills share the physical backups' key: no backup
    /// is removed while a backup relies on it or a verification or a drill
    /// reads it, and a drill never competes with a backup for the server's
    /// disk and I/O.
    pub fn conflict_key(self) -> Option<&'static str> {
        (self.is_physical() || matches!(self, JobKind::Verify | JobKind::Expire | JobKind::Drill))
            .then_some("physical")
    }

    /// The option keys this kind accepts, in documentation order.
    pub fn allowed_options(self) -> &'static [&'static str] {
        match self {
            JobKind::Logical => &[
                "database",
                "format",
                "schema",
                "jobs",
                "compression",
                "retain_count",
                "retain_days",
                "max_attempts",
                "retry_base",
                "retry_cap",
            ],
            JobKind::Expire => &[
                "database",
                "retain_count",
                "retain_days",
                "retention_full",
                "retention_diff",
                "retention_days",
                "dry_run",
                "max_attempts",
                "retry_base",
                "retry_cap",
            ],
            JobKind::Full | JobKind::Incremental | JobKind::Differential => {
                &["wait_timeout", "max_attempts", "retry_base", "retry_cap"]
            }
            JobKind::Verify => &["backup_id", "max_attempts", "retry_base", "retry_cap"],
            JobKind::Drill => &[
                "backup_id",
                "target_time",
                "target_lsn",
                "target_xid",
                "target_name",
                "target_timeline",
                "database",
                "amcheck",
                "count",
                "visibility",
                "shared_preload_libraries",
                "jobs",
                "timeout",
                "max_attempts",
                "retry_base",
                "retry_cap",
            ],
        }
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

fn quoted(key: Option<&str>) -> String {
    key.map_or("NULL".into(), |k| format!("\"{k}\""))
}

impl JobError {
    pub fn hint(&self) -> Option<String> {
        match self {
            JobError::UnknownKind { .. } => Some(format!("The job kinds are: {KIND_NAMES}.")),
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

fn compression(key: &str, v: &Value) -> Result<(), JobError> {
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
    let allowed = kind.allowed_options();
    for (key, v) in map {
        if !allowed.contains(&key.as_str()) {
            return Err(JobError::UnknownOption {
                kind: kind.as_str().into(),
                key: key.clone(),
                allowed: allowed.join(", "),
            });
        }
        match key.as_str() {
            "database" if kind == JobKind::Drill => match v.as_str() {
                // A name, never a connection string (psql would read one
                // and connect elsewhere).
                Some(d) if !d.is_empty() && !d.contains('=') && !d.contains("://") => {}
                _ => return Err(invalid(key, format!("expected a database name, found {v}"))),
            },
            "visibility" if kind == JobKind::Drill => {
                crate::restore::drill::VisibilityCheck::from_option(Some(v))
                    .map_err(|e| invalid(key, e))?;
            }
            "shared_preload_libraries" => {
                for name in names(key, v)? {
                    library(key, &name, libdir)?;
                }
            }
            "database" | "schema" | "amcheck" | "count" => {
                names(key, v)?;
            }
            "jobs" if kind == JobKind::Drill => {
                integer(key, v, 1, 64)?;
            }
            "timeout" => {
                integer(key, v, 1, 7 * 86_400)?;
            }
            "target_time" | "target_lsn" | "target_xid" | "target_name" | "target_timeline"
                if !v.is_string() =>
            {
                return Err(invalid(key, format!("expected a string, found {v}")));
            }
            "format" => match v.as_str() {
                Some(f) if FORMATS.contains(&f) => {}
                _ => {
                    return Err(invalid(
                        key,
                        format!("expected one of {}, found {v}", FORMATS.join(", ")),
                    ))
                }
            },
            "jobs" => {
                integer(key, v, 1, 64)?;
                if map.get("format").and_then(Value::as_str) != Some("directory") {
                    return Err(invalid(
                        key,
                        "parallel dump needs \"format\": \"directory\"",
                    ));
                }
            }
            "compression" => compression(key, v)?,
            "retain_count" => {
                integer(key, v, 1, 100_000)?;
            }
            "retain_days" => {
                integer(key, v, 1, 36_500)?;
            }
            "retention_full" => {
                integer(key, v, 1, 10_000)?;
            }
            "retention_diff" => {
                integer(key, v, 0, 10_000)?;
            }
            "retention_days" => {
                integer(key, v, 0, 36_500)?;
            }
            "dry_run" if !v.is_boolean() => {
                return Err(invalid(key, format!("expected true or false, found {v}")));
            }
            "max_attempts" => {
                integer(key, v, 1, 100)?;
            }
            "wait_timeout" => {
                integer(key, v, 1, 86_400)?;
            }
            "retry_base" | "retry_cap" => {
                seconds(key, v)?;
            }
            "backup_id" => match v.as_str() {
                Some(id) if crate::physical::check_backup_id(id).is_ok() => {}
                _ => {
                    return Err(invalid(
                        key,
                        format!("expected a backup id (letters, digits, - and _), found {v}"),
                    ))
                }
            },
            _ => {}
        }
    }
    if kind == JobKind::Drill {
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
/// options (with [`validate`], as when it was queued) and its conflict key
/// (the one its kind has, or two physical backups could run at once). A
/// row written behind the functions' back fails here and never runs.
pub fn check_claimed(
    kind: &str,
    options: &Value,
    conflict_key: Option<&str>,
    libdir: &Path,
) -> Result<JobKind, JobError> {
    let parsed = JobKind::parse(kind)?;
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
mod tests {
    use super::*;
    use serde_json::json;

    /// A `$libdir` with no library in it.
    fn nowhere() -> &'static Path {
        Path::new("/nonexistent/pg_ark/libdir")
    }

    #[test]
    fn options_override_the_settings_that_default_them() {
        let o = json!({"retain_count": 3, "retention_diff": 0, "retry_base": 2.5});
        assert_eq!(count_option(&o, "retain_count", 7), Some(3));
        // 0 as an option turns the rule off, whatever the setting says.
        assert_eq!(count_option(&o, "retention_diff", 5), None);
        assert_eq!(count_option(&o, "retain_days", 7), Some(7));
        assert_eq!(count_option(&o, "retain_days", 0), None);
        assert_eq!(count_option(&o, "retain_days", -1), None);
        assert_eq!(seconds_option(&o, "retry_base", 60.0), 2.5);
        assert_eq!(seconds_option(&o, "retry_cap", 3600.0), 3600.0);
    }

    /// The catalog constrains `ark.jobs.kind` and `ark.schedules.kind` to
    /// exactly these kinds, and the hint lists them.
    #[test]
    fn the_catalog_and_the_hint_know_every_kind() {
        let names: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
        let list = names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let check = format!("CHECK (kind IN ({list}))");
        let catalog = include_str!("../../../src/catalog/catalog.sql");
        assert_eq!(
            catalog.matches(&check).count(),
            2,
            "catalog.sql lacks {check}"
        );
        assert_eq!(KIND_NAMES, names.join(", "));
    }

    #[test]
    fn kinds_parse_and_conflict() {
        assert_eq!(JobKind::parse("logical").unwrap(), JobKind::Logical);
        assert_eq!(
            JobKind::parse("Logical").unwrap_err(),
            JobError::UnknownKind {
                kind: "Logical".into()
            }
        );
        assert_eq!(JobKind::Full.conflict_key(), Some("physical"));
        assert_eq!(JobKind::Differential.conflict_key(), Some("physical"));
        assert_eq!(JobKind::Logical.conflict_key(), None);
        assert_eq!(JobKind::Verify.conflict_key(), Some("physical"));
        assert_eq!(JobKind::Expire.conflict_key(), Some("physical"));
    }

    #[test]
    fn unknown_keys_list_the_allowed_ones() {
        let e = validate(JobKind::Logical, &json!({"databse": "x"}), nowhere()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown option \"databse\" for job kind \"logical\""
        );
        assert_eq!(
            e.hint().unwrap(),
            "The allowed option keys are: database, format, schema, jobs, compression, \
             retain_count, retain_days, max_attempts, retry_base, retry_cap."
        );
    }

    #[test]
    fn good_logical_options_pass() {
        for o in [
            json!({}),
            json!({"database": "app", "format": "custom"}),
            json!({"database": ["a", "b"], "schema": "public", "compression": "zstd:3"}),
            json!({"format": "directory", "jobs": 2, "compression": 6}),
            json!({"retain_count": 3, "retain_days": 7, "max_attempts": 5,
                   "retry_base": 0.5, "retry_cap": 60}),
        ] {
            validate(JobKind::Logical, &o, nowhere()).unwrap_or_else(|e| panic!("{o}: {e}"));
        }
    }

    #[test]
    fn bad_values_name_the_key_and_the_rule() {
        let cases = [
            (json!({"format": "tar"}), "invalid value for option \"format\": expected one of custom, directory, plain, found \"tar\""),
            (json!({"jobs": 2}), "invalid value for option \"jobs\": parallel dump needs \"format\": \"directory\""),
            (json!({"format": "directory", "jobs": 0}), "invalid value for option \"jobs\": 0 is out of range 1..64"),
            (json!({"database": ""}), "invalid value for option \"database\": a name is empty"),
            (json!({"database": []}), "invalid value for option \"database\": the array is empty"),
            (json!({"database": 5}), "invalid value for option \"database\": expected a name or an array of names, found a number"),
            (json!({"compression": "brotli"}), "invalid value for option \"compression\": \"brotli\" is not a pg_dump compression: use a level 0-9, or none, gzip, lz4 or zstd, optionally with :level"),
            (json!({"compression": 12}), "invalid value for option \"compression\": \"12\" is not a pg_dump compression: use a level 0-9, or none, gzip, lz4 or zstd, optionally with :level"),
            (json!({"max_attempts": 0}), "invalid value for option \"max_attempts\": 0 is out of range 1..100"),
            (json!({"max_attempts": "3"}), "invalid value for option \"max_attempts\": expected an integer from 1 to 100, found a string"),
            (json!({"retry_base": -1}), "invalid value for option \"retry_base\": -1 seconds is out of range (more than 0, at most 30 days)"),
            (json!({"retry_base": 10, "retry_cap": 5}), "invalid value for option \"retry_cap\": 5 seconds is less than retry_base (10 seconds)"),
            (json!({"retain_days": 0}), "invalid value for option \"retain_days\": 0 is out of range 1..36500"),
        ];
        for (o, msg) in cases {
            assert_eq!(
                validate(JobKind::Logical, &o, nowhere())
                    .unwrap_err()
                    .to_string(),
                msg,
                "{o}"
            );
        }
    }

    #[test]
    fn options_must_be_an_object_and_kinds_available() {
        assert_eq!(
            validate(JobKind::Logical, &json!([1]), nowhere())
                .unwrap_err()
                .to_string(),
            "options must be a JSON object, not an array"
        );
        for kind in [JobKind::Full, JobKind::Incremental, JobKind::Differential] {
            assert!(validate(kind, &json!({"wait_timeout": 60}), nowhere()).is_ok());
        }
        assert_eq!(
            validate(JobKind::Expire, &json!({"format": "custom"}), nowhere())
                .unwrap_err()
                .to_string(),
            "unknown option \"format\" for job kind \"expire\""
        );
    }

    #[test]
    fn drill_options_are_checked_when_queued() {
        for o in [
            json!({}),
            json!({"backup_id": "20261201T030000Z-F-j4", "database": "shop",
                   "amcheck": ["public.orders"], "count": "public.orders",
                   "jobs": 4, "timeout": 600}),
            json!({"visibility": false}),
            json!({"visibility": true}),
            json!({"visibility": "shop"}),
            json!({"visibility": ["shop", "postgres"]}),
            json!({"target_time": "2026-12-01 14:03:00+00"}),
            json!({"target_lsn": "0/3000060", "target_timeline": "current"}),
            json!({"target_xid": "1234"}),
            json!({"target_name": "before-migration"}),
        ] {
            validate(JobKind::Drill, &o, nowhere()).unwrap_or_else(|e| panic!("{o}: {e}"));
        }
        let cases = [
            (json!({"target_time": "yesterday"}), "\"target time\""),
            (json!({"target_lsn": "nope"}), "\"target_lsn\": not an LSN"),
            (
                json!({"target_xid": "1", "target_name": "x"}),
                "at most one of",
            ),
            (json!({"target_timeline": "0"}), "\"target_timeline\""),
            (json!({"database": ["a", "b"]}), "expected a database name"),
            (
                json!({"database": "host=/tmp dbname=x"}),
                "expected a database name",
            ),
            (
                json!({"database": "postgresql://elsewhere/x"}),
                "expected a database name",
            ),
            (json!({"amcheck": []}), "the array is empty"),
            (json!({"visibility": []}), "the array is empty"),
            (
                json!({"visibility": 1}),
                "expected true, false, a database name",
            ),
            (
                json!({"visibility": ["shop", "host=/tmp dbname=x"]}),
                "expected a database name",
            ),
            (json!({"timeout": 0}), "\"timeout\""),
            (
                json!({"format": "custom"}),
                "unknown option \"format\" for job kind \"drill\"",
            ),
        ];
        for (o, want) in cases {
            let e = validate(JobKind::Drill, &o, nowhere())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{o}: {e}");
        }
        assert_eq!(JobKind::parse("drill").unwrap(), JobKind::Drill);
        assert_eq!(JobKind::Drill.conflict_key(), Some("physical"));
    }

    #[test]
    fn a_drill_preloads_only_plain_names_of_libdir_libraries() {
        let libdir = tempfile::tempdir().unwrap();
        std::fs::write(libdir.path().join(format!("amcheck{DLSUFFIX}")), b"").unwrap();
        std::fs::write(libdir.path().join("timescaledb-2.1.0.so"), b"").unwrap();
        std::fs::create_dir(libdir.path().join("adir")).unwrap();
        let check = |v: Value| {
            validate(
                JobKind::Drill,
                &json!({ "shared_preload_libraries": v }),
                libdir.path(),
            )
        };
        for ok in [
            json!("amcheck"),
            json!(format!("amcheck{DLSUFFIX}")),
            json!(["amcheck", "timescaledb-2.1.0"]),
        ] {
            check(ok.clone()).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let lib = libdir.path().join("amcheck").display().to_string();
        for (bad, why) in [
            (json!("/tmp/x.so"), "is a path"),
            (json!(lib), "is a path"),
            (json!("$libdir/amcheck"), "is a path"),
            (json!("$libdir/../../tmp/x"), "is a path"),
            (json!("../x"), "is a path"),
            (json!("amcheck/../amcheck"), "is a path"),
            (json!("..\\x"), "is a path"),
            (json!(".."), "not a library name"),
            (json!(".amcheck"), "not a library name"),
            (json!("amcheck,/tmp/x"), "is a path"),
            (json!("amcheck, x"), "not a library name"),
            (json!("amcheck\"x"), "not a library name"),
            (json!("a..b"), "not a library name"),
            (json!(["amcheck", "/tmp/x.so"]), "is a path"),
            (json!("adir"), "there is no library \"adir\" in $libdir"),
            (json!("nope"), "there is no library \"nope\" in $libdir"),
        ] {
            let e = check(bad.clone()).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("invalid value for option \"shared_preload_libraries\": ")
                    && e.to_string().contains(why),
                "{bad}: {e}"
            );
            assert!(
                e.hint().is_some_and(|h| h.contains("$libdir (")),
                "{bad}: {:?}",
                e.hint()
            );
        }
    }

    #[test]
    fn a_claimed_job_is_checked_again_conflict_key_included() {
        let libdir = nowhere();
        assert_eq!(
            check_claimed("full", &json!({}), Some("physical"), libdir).unwrap(),
            JobKind::Full
        );
        assert_eq!(
            check_claimed("logical", &json!({}), None, libdir).unwrap(),
            JobKind::Logical
        );
        let e = check_claimed("full", &json!({}), None, libdir).unwrap_err();
        assert_eq!(
            e.to_string(),
            "job of kind \"full\" has conflict_key NULL, not \"physical\""
        );
        assert!(e.hint().unwrap().contains("ark.backup()"));
        let e = check_claimed("incremental", &json!({}), Some("other"), libdir).unwrap_err();
        assert_eq!(
            e.to_string(),
            "job of kind \"incremental\" has conflict_key \"other\", not \"physical\""
        );
        let e = check_claimed("logical", &json!({}), Some("physical"), libdir).unwrap_err();
        assert_eq!(
            e.to_string(),
            "job of kind \"logical\" has conflict_key \"physical\", not NULL"
        );
        let e = check_claimed(
            "drill",
            &json!({"shared_preload_libraries": "/tmp/x.so"}),
            Some("physical"),
            libdir,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("\"shared_preload_libraries\": \"/tmp/x.so\" is a path"),
            "{e}"
        );
        assert!(check_claimed("backup", &json!({}), None, libdir).is_err());
    }

    #[test]
    fn intervals_in_words_and_clock_form() {
        for (text, secs) in [
            ("30s", 30.0),
            ("30 sec", 30.0),
            ("5 min", 300.0),
            ("1.5 hours", 5400.0),
            ("2d", 172_800.0),
            ("500ms", 0.5),
            ("00:05:00", 300.0),
            ("1:30", 5400.0),
            ("45", 45.0),
        ] {
            assert_eq!(parse_interval(text), Some(secs), "{text}");
        }
        for bad in ["soon", "", "-5 s", "0s", "5 fortnights", "1:xx"] {
            assert_eq!(parse_interval(bad), None, "{bad}");
        }
    }

    #[test]
    fn option_names_reads_one_or_many() {
        assert_eq!(
            option_names(&json!({"database": "a"}), "database"),
            Some(vec!["a".to_string()])
        );
        assert_eq!(
            option_names(&json!({"database": ["a", "b"]}), "database"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(option_names(&json!({}), "database"), None);
    }
}
