//! pg_basebackup as a job kind (`pg_basebackup`): a base backup written
//! under `ark.pg_basebackup_directory` (never anywhere else), optionally
//! incremental against a previous one (PostgreSQL 17 and later), its
//! `backup_manifest` read back, and a retention rule of its own.
use super::{invalid, one_of, text};
use crate::schedule::jobs::JobError;
use serde_json::{Map, Value};
use std::path::{Component, Path, PathBuf};

pub const FORMATS: [&str; 2] = ["plain", "tar"];
pub const CHECKPOINTS: [&str; 2] = ["fast", "spread"];
pub const WAL_METHODS: [&str; 2] = ["stream", "fetch"];
/// The first major whose pg_basebackup takes `--incremental`.
pub const INCREMENTAL_MAJOR: u32 = 17;

/// A relative path of plain names under the configured directory: no
/// absolute path, no `..`, no name starting with `.` or `-`.
pub fn check_target(key: &str, v: &Value) -> Result<(), JobError> {
    let Some(t) = v.as_str() else {
        return Err(invalid(
            key,
            format!("expected a directory name, found {v}"),
        ));
    };
    let path = Path::new(t);
    if t.is_empty() || path.is_absolute() {
        return Err(invalid(
            key,
            format!(
                "\"{t}\" is not a directory under ark.pg_basebackup_directory: name one \
                 relative to it, such as \"nightly\""
            ),
        ));
    }
    let plain = |c: &Component| match c {
        Component::Normal(n) => n.to_str().is_some_and(|n| {
            !n.is_empty()
                && n.len() <= 100
                && n.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        }),
        _ => false,
    };
    let components: Vec<Component> = path.components().collect();
    if components.len() > 8 || !components.iter().all(plain) {
        return Err(invalid(
            key,
            format!(
                "\"{t}\" is not a directory under ark.pg_basebackup_directory: use names of \
                 letters, digits, _, - and . separated by /, with no \"..\""
            ),
        ));
    }
    Ok(())
}

pub fn check_format(key: &str, v: &Value) -> Result<(), JobError> {
    one_of(key, v, &FORMATS)
}

pub fn check_checkpoint(key: &str, v: &Value) -> Result<(), JobError> {
    one_of(key, v, &CHECKPOINTS)
}

pub fn check_wal_method(key: &str, v: &Value) -> Result<(), JobError> {
    one_of(key, v, &WAL_METHODS)
}

/// pg_basebackup's client-side compression of a tar backup: `none`,
/// `gzip`, `lz4` or `zstd`, optionally with `:level`.
pub fn check_compression(key: &str, v: &Value) -> Result<(), JobError> {
    let ok = v.as_str().is_some_and(|s| {
        let (method, level) = s.split_once(':').unwrap_or((s, ""));
        let range = match method {
            "none" => return level.is_empty(),
            "gzip" => 1..=9,
            "lz4" => 1..=12,
            "zstd" => 1..=22,
            _ => return false,
        };
        level.is_empty() || level.parse::<i32>().is_ok_and(|l| range.contains(&l))
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "expected none, gzip, lz4 or zstd, optionally with :level (gzip 1-9, lz4 1-12, \
                 zstd 1-22), found {v}"
            ),
        ))
    }
}

/// `true` (against the newest pg_basebackup backup of the same target) or
/// the label of the one to build on.
pub fn check_incremental(key: &str, v: &Value) -> Result<(), JobError> {
    match v {
        Value::Bool(_) => Ok(()),
        Value::String(s) if is_label(s) => Ok(()),
        _ => Err(invalid(
            key,
            format!(
                "expected true, false or the label of a pg_basebackup backup to build on, found \
                 {v}"
            ),
        )),
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Compression only for the tar format (pg_basebackup compresses tar files
/// only).
pub fn check_all(options: &Map<String, Value>) -> Result<(), JobError> {
    let format = text(options, "format").unwrap_or("plain");
    if format != "tar" && options.get("compression").is_some_and(|c| c != "none") {
        return Err(invalid(
            "compression",
            "pg_basebackup compresses only the tar format: add \"format\": \"tar\"",
        ));
    }
    Ok(())
}

/// Whether the job asks for an incremental backup, and against what
/// (`None`: the newest of its target).
pub fn incremental(options: &Map<String, Value>) -> Option<Option<String>> {
    match options.get("incremental") {
        Some(Value::Bool(true)) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        _ => None,
    }
}

/// Refuse an incremental backup on a server older than 17.
pub fn check_incremental_major(options: &Map<String, Value>, major: u32) -> Result<(), JobError> {
    if incremental(options).is_some() && major < INCREMENTAL_MAJOR {
        return Err(invalid(
            "incremental",
            format!(
                "pg_basebackup takes incremental backups from PostgreSQL \
                 {INCREMENTAL_MAJOR} on, and this server is PostgreSQL {major}"
            ),
        ));
    }
    Ok(())
}

/// The directory a job's backups go in: the configured directory joined
/// with `target`, created if needed, and checked once created, through its
/// real path (a symbolic link must not lead out of the configured
/// directory).
pub fn target_dir(configured: &Path, target: Option<&str>) -> Result<PathBuf, String> {
    if !configured.is_absolute() {
        return Err(format!(
            "ark.pg_basebackup_directory is \"{}\", not an absolute path",
            configured.display()
        ));
    }
    let root = std::fs::canonicalize(configured).map_err(|e| {
        format!(
            "ark.pg_basebackup_directory \"{}\" cannot be used: {e}",
            configured.display()
        )
    })?;
    let mut dir = root.clone();
    if let Some(t) = target {
        check_target("target", &Value::String(t.into())).map_err(|e| e.to_string())?;
        // One level at a time, each checked through its real path before
        // anything is created under it: a symbolic link that leads out of
        // the configured directory is refused before pg_ark writes there.
        for part in Path::new(t).components() {
            let next = dir.join(part);
            match std::fs::create_dir(&next) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(format!(
                        "could not create directory \"{}\": {e}",
                        next.display()
                    ))
                }
            }
            let real = std::fs::canonicalize(&next)
                .map_err(|e| format!("could not resolve \"{}\": {e}", next.display()))?;
            if !real.starts_with(&root) || !real.is_dir() {
                return Err(format!(
                    "\"{}\" leads to \"{}\", outside ark.pg_basebackup_directory \"{}\"",
                    next.display(),
                    real.display(),
                    root.display()
                ));
            }
            dir = real;
        }
    }
    Ok(dir)
}

/// How pg_ark reaches the server: its socket directory, port and the
/// bootstrap superuser (a replication connection).
pub struct Connection {
    pub socket_dir: String,
    pub port: u16,
    pub user: String,
}

/// pg_basebackup's arguments for a job's checked options, writing into
/// `dest` (which must not exist), incremental against `parent_manifest`.
pub fn args(
    options: &Map<String, Value>,
    dest: &Path,
    conn: &Connection,
    parent_manifest: Option<&Path>,
    job_id: i64,
) -> Vec<String> {
    let mut args = vec![
        format!("--pgdata={}", dest.display()),
        format!("--host={}", conn.socket_dir),
        format!("--port={}", conn.port),
        format!("--username={}", conn.user),
        "--no-password".into(),
        format!(
            "--format={}",
            match text(options, "format") {
                Some("tar") => "tar",
                _ => "plain",
            }
        ),
        format!(
            "--wal-method={}",
            text(options, "wal_method").unwrap_or("stream")
        ),
        format!(
            "--checkpoint={}",
            text(options, "checkpoint").unwrap_or("fast")
        ),
        format!("--label=pg_ark job {job_id}"),
    ];
    if let Some(c) = text(options, "compression") {
        args.push(format!("--compress={c}"));
    }
    if let Some(m) = parent_manifest {
        args.push(format!("--incremental={}", m.display()));
    }
    args
}

/// What a `backup_manifest` says of its backup.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestFacts {
    pub files: u64,
    pub bytes: u64,
    pub timeline: u64,
    pub start_lsn: String,
    pub end_lsn: String,
    /// PostgreSQL 17's manifests name the cluster.
    pub system_identifier: Option<u64>,
}

/// Read a `backup_manifest` (PostgreSQL's JSON).
pub fn parse_manifest(bytes: &[u8]) -> Result<ManifestFacts, String> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("backup_manifest is not the JSON pg_basebackup writes: {e}"))?;
    let files = doc
        .get("Files")
        .and_then(Value::as_array)
        .ok_or("backup_manifest lists no Files")?;
    let ranges = doc
        .get("WAL-Ranges")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or("backup_manifest has no WAL-Ranges")?;
    let lsn = |r: &Value, k: &str| {
        r.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("backup_manifest's WAL-Ranges lack {k}"))
    };
    let first = &ranges[0];
    let last = &ranges[ranges.len() - 1];
    Ok(ManifestFacts {
        files: files.len() as u64,
        bytes: files
            .iter()
            .filter_map(|f| f.get("Size").and_then(Value::as_u64))
            .sum(),
        timeline: last.get("Timeline").and_then(Value::as_u64).unwrap_or(0),
        start_lsn: lsn(first, "Start-LSN")?,
        end_lsn: lsn(last, "End-LSN")?,
        system_identifier: doc.get("System-Identifier").and_then(Value::as_u64),
    })
}

/// One pg_basebackup backup the catalog records, for retention.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub label: String,
    /// Seconds since the epoch.
    pub finished_at: f64,
    /// The backup it is incremental to.
    pub parent: Option<String>,
}

/// Which backups of one target expire: whole chains (a full backup and the
/// incrementals built on it, directly or not), keeping the newest
/// `retain_count` chains and every chain with a backup younger than
/// `retain_days`; the newest chain never expires, and with neither rule
/// nothing does.
pub fn expired(
    backups: &[Kept],
    retain_count: Option<u32>,
    retain_days: Option<u32>,
    now: f64,
) -> Vec<String> {
    if retain_count.is_none() && retain_days.is_none() {
        return Vec::new();
    }
    let root_of = |label: &str| -> String {
        let mut cur = label.to_string();
        for _ in 0..=backups.len() {
            match backups
                .iter()
                .find(|b| b.label == cur)
                .and_then(|b| b.parent.clone())
            {
                Some(p) if backups.iter().any(|b| b.label == p) => cur = p,
                _ => break,
            }
        }
        cur
    };
    // Chains, newest (by their newest backup) first.
    let mut chains: Vec<(String, f64, Vec<String>)> = Vec::new();
    for b in backups {
        let root = root_of(&b.label);
        match chains.iter_mut().find(|c| c.0 == root) {
            Some(c) => {
                c.1 = c.1.max(b.finished_at);
                c.2.push(b.label.clone());
            }
            None => chains.push((root, b.finished_at, vec![b.label.clone()])),
        }
    }
    chains.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut out = Vec::new();
    for (i, (_, newest, members)) in chains.into_iter().enumerate() {
        let by_count = retain_count.is_some_and(|n| i < n as usize);
        let by_age = retain_days.is_some_and(|d| now - newest < f64::from(d) * 86_400.0);
        if i == 0 || by_count || by_age {
            continue;
        }
        out.extend(members);
    }
    out
}
