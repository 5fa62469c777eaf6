//! pgBackRest as a job kind (`pgbackrest`): its backups, its `info`, its
//! `archive-push` (the archive module's second destination), and which
//! PostgreSQL majors a pgBackRest release reads.
use super::{extra_args, extra_options, invalid, one_of, text, tool_name, Extra, ToolBackup};
use crate::schedule::jobs::JobError;
use serde_json::{Map, Value};
use std::path::Path;

/// `type`: pgBackRest's backup types.
pub const TYPES: [&str; 3] = ["full", "diff", "incr"];

/// The pgBackRest options a job may pass on (`options`), each checked. No
/// option that names a path, a host, a command or a secret is here: those
/// belong in pgBackRest's configuration, which only the server's operating
/// system user writes. Nor `archive-check`: pg_ark checks the archive
/// itself (see [`backup_args`]).
pub const EXTRA: &[(&str, Extra)] = &[
    ("start-fast", Extra::Bool),
    ("backup-standby", Extra::Bool),
    ("checksum-page", Extra::Bool),
    (
        "compress-type",
        Extra::OneOf(&["none", "bz2", "gz", "lz4", "zst"]),
    ),
    ("compress-level", Extra::Int(0, 22)),
    ("delta", Extra::Bool),
    ("process-max", Extra::Int(1, 64)),
    ("resume", Extra::Bool),
];

pub fn check_type(key: &str, v: &Value) -> Result<(), JobError> {
    one_of(key, v, &TYPES)
}

pub fn check_options(key: &str, v: &Value) -> Result<(), JobError> {
    extra_options(key, v, EXTRA, "pgBackRest")
}

/// `stanza` is required.
pub fn check_all(options: &Map<String, Value>) -> Result<(), JobError> {
    match options.get("stanza") {
        Some(v) => tool_name("stanza", v),
        None => Err(invalid(
            "stanza",
            "a pgbackrest job needs the stanza to back up, for example {\"stanza\": \"main\"}",
        )),
    }
}

/// The options every pgBackRest command pg_ark runs gets first: the
/// configuration file (`ark.pgbackrest_config`), and the console quiet
/// with messages on standard error, whose end the job's error shows.
pub fn common_args(config: Option<&Path>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(c) = config {
        args.push(format!("--config={}", c.display()));
    }
    args.push("--log-level-console=off".into());
    args.push("--log-level-stderr=warn".into());
    args
}

/// `pgbackrest backup` for a job's checked options.
///
/// With `--no-archive-check`: pgBackRest's own check insists that
/// `archive_command` name pgbackrest, and with pg_ark's archive module
/// there is no `archive_command`. pg_ark checks instead, more strictly: the
/// job runs only while `ark.archive_also` hands every WAL file to the
/// stanza, and succeeds only once the backup's last WAL segment is archived
/// (in pg_ark's repository and the stanza's).
pub fn backup_args(options: &Map<String, Value>, config: Option<&Path>) -> Vec<String> {
    let mut args = common_args(config);
    args.push(format!(
        "--stanza={}",
        text(options, "stanza").unwrap_or("")
    ));
    if let Some(repo) = options.get("repo").and_then(Value::as_i64) {
        args.push(format!("--repo={repo}"));
    }
    args.push(format!(
        "--type={}",
        text(options, "type").unwrap_or("incr")
    ));
    args.extend(extra_args(options, "options", |name| {
        Some(format!("--no-{name}"))
    }));
    args.push("--no-archive-check".into());
    args.push("backup".into());
    args
}

/// `pgbackrest info --output=json` of one stanza.
pub fn info_args(stanza: &str, repo: Option<i64>, config: Option<&Path>) -> Vec<String> {
    let mut args = common_args(config);
    args.push(format!("--stanza={stanza}"));
    if let Some(r) = repo {
        args.push(format!("--repo={r}"));
    }
    args.push("--output=json".into());
    args.push("info".into());
    args
}

/// `pgbackrest archive-push` of one WAL file (its absolute path).
pub fn archive_push_args(stanza: &str, wal: &Path, config: Option<&Path>) -> Vec<String> {
    let mut args = common_args(config);
    args.push(format!("--stanza={stanza}"));
    args.push("archive-push".into());
    args.push(wal.display().to_string());
    args
}

/// The version `pgbackrest version` prints ("pgBackRest 2.45").
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let word = text
        .split_whitespace()
        .skip_while(|w| !w.eq_ignore_ascii_case("pgbackrest"))
        .nth(1)?;
    let mut parts = word.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some((major, minor))
}

/// The first pgBackRest release that reads each PostgreSQL major newer than
/// 15 (a lower bound: one release either side of it is refused by
/// pgBackRest itself, with its own message).
const FIRST_READS: [(u32, (u32, u32)); 3] = [(16, (2, 46)), (17, (2, 52)), (18, (2, 55))];

/// The newest PostgreSQL major a pgBackRest release reads, as far as pg_ark
/// knows (`None`: newer than every major pg_ark knows of).
pub fn newest_major(version: (u32, u32)) -> Option<u32> {
    let mut newest = 15;
    for (major, first) in FIRST_READS {
        if version >= first {
            newest = major;
        } else {
            return Some(newest);
        }
    }
    None
}

/// Whether pgBackRest `version` reads a server of `major`; the refusal
/// says which it reads.
pub fn supports(version: (u32, u32), major: u32) -> Result<(), String> {
    match newest_major(version) {
        Some(newest) if major > newest => Err(format!(
            "pgBackRest {}.{} reads PostgreSQL up to {newest}, and this server is PostgreSQL \
             {major}",
            version.0, version.1
        )),
        _ => Ok(()),
    }
}

/// Whether a pgBackRest failure may go away by itself: another pgBackRest
/// holds the stanza's lock, or the server was briefly unreachable.
pub fn is_transient(stderr: &str) -> bool {
    stderr.contains("unable to acquire lock")
        || stderr.contains("LockAcquireError")
        || crate::schedule::lifecycle::client_message_is_transient(stderr)
}

/// The newest WAL segment in the stanza's archive, as `pgbackrest info
/// --output=json` lists it (its `archive` entries' `max`).
pub fn archived_through(json: &str, stanza: &str) -> Option<String> {
    let doc: Value = serde_json::from_str(json).ok()?;
    doc.as_array()?
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(stanza))?
        .get("archive")?
        .as_array()?
        .iter()
        .filter_map(|a| a.get("max").and_then(Value::as_str))
        .max()
        .map(str::to_string)
}

/// Whether every repository of the stanza answered `info` (status code 0):
/// only then does a backup missing from its list mean pgBackRest removed it.
pub fn info_is_complete(json: &str, stanza: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<Value>(json) else {
        return false;
    };
    let Some(entry) = doc.as_array().and_then(|a| {
        a.iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(stanza))
    }) else {
        return false;
    };
    let ok = |v: Option<&Value>| v.and_then(Value::as_i64) == Some(0);
    ok(entry.pointer("/status/code"))
        && entry
            .get("repo")
            .and_then(Value::as_array)
            .is_none_or(|repos| repos.iter().all(|r| ok(r.pointer("/status/code"))))
}

/// The last WAL segment a backup needs, as `pgbackrest info` names it.
pub fn stop_segment(backup: &ToolBackup) -> Option<&str> {
    backup.info.pointer("/archive/stop").and_then(Value::as_str)
}

/// Whether `pgbackrest info --output=json` finds `stanza` ready for a
/// backup: its status code 0 (ok) or 2 (no valid backups yet); otherwise
/// pgBackRest's own words for what is wrong (1: missing stanza path, 3:
/// missing stanza data, ...).
pub fn check_stanza(json: &str, stanza: &str) -> Result<(), String> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| format!("pgbackrest info printed no JSON pg_ark reads: {e}"))?;
    let entry = doc
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s.get("name").and_then(Value::as_str) == Some(stanza))
        })
        .ok_or_else(|| format!("pgbackrest info lists no stanza \"{stanza}\""))?;
    let code = entry.pointer("/status/code").and_then(Value::as_i64);
    match code {
        Some(0) | Some(2) => Ok(()),
        _ => Err(format!(
            "pgBackRest: stanza \"{stanza}\": {} (status code {})",
            entry
                .pointer("/status/message")
                .and_then(Value::as_str)
                .unwrap_or("unknown status"),
            code.map_or("none".into(), |c| c.to_string())
        )),
    }
}

/// The backups of `stanza` in `pgbackrest info --output=json`.
pub fn parse_info(json: &str, stanza: &str) -> Result<Vec<ToolBackup>, String> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| format!("pgbackrest info printed no JSON pg_ark reads: {e}"))?;
    let stanzas = doc
        .as_array()
        .ok_or("pgbackrest info printed no list of stanzas")?;
    let entry = stanzas
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(stanza))
        .ok_or_else(|| format!("pgbackrest info lists no stanza \"{stanza}\""))?;
    let mut out = Vec::new();
    for b in entry
        .get("backup")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let label = b
            .get("label")
            .and_then(Value::as_str)
            .ok_or("a backup in pgbackrest info has no label")?;
        let num = |path: &[&str]| {
            let mut v = b;
            for p in path {
                v = v.get(p)?;
            }
            v.as_f64()
        };
        out.push(ToolBackup {
            label: label.to_string(),
            format: b
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            size_bytes: num(&["info", "size"]).unwrap_or(0.0) as i64,
            started_at: num(&["timestamp", "start"]).unwrap_or(0.0),
            finished_at: num(&["timestamp", "stop"]).unwrap_or(0.0),
            info: b.clone(),
        });
    }
    Ok(out)
}
