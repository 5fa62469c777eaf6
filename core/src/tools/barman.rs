//! Barman as a job kind (`barman`): `barman backup`, `barman check` and
//! `barman cron`, and the backups `barman list-backups` describes.
use super::{extra_args, extra_options, invalid, one_of, text, tool_name, Extra, ToolBackup};
use crate::schedule::jobs::JobError;
use serde_json::{Map, Value};
use std::path::Path;

/// `type`: what the job runs.
pub const TYPES: [&str; 3] = ["backup", "check", "cron"];

/// The options of `barman backup` a job may pass on (`options`).
pub const EXTRA: &[(&str, Extra)] = &[
    ("immediate-checkpoint", Extra::Bool),
    ("wait", Extra::Bool),
    ("wait-timeout", Extra::Int(1, 86_400)),
    ("jobs", Extra::Int(1, 64)),
    ("reuse-backup", Extra::OneOf(&["off", "copy", "link"])),
];

pub fn check_type(key: &str, v: &Value) -> Result<(), JobError> {
    one_of(key, v, &TYPES)
}

pub fn check_options(key: &str, v: &Value) -> Result<(), JobError> {
    extra_options(key, v, EXTRA, "barman backup")
}

/// `backup` and `check` need the server; `cron` runs for every server of
/// the configuration and takes none; `options` are `barman backup`'s.
pub fn check_all(options: &Map<String, Value>) -> Result<(), JobError> {
    let kind = text(options, "type").unwrap_or("backup");
    match (kind, options.get("server")) {
        ("cron", Some(_)) => Err(invalid(
            "server",
            "barman cron runs for every server of Barman's configuration: leave \"server\" out",
        )),
        ("cron", None) => Ok(()),
        // Barman reads "all" as every server of its configuration.
        (_, Some(v)) if v.as_str() == Some("all") => Err(invalid(
            "server",
            "\"all\" is every server to Barman: name one server per job",
        )),
        (_, Some(v)) => tool_name("server", v),
        (_, None) => Err(invalid(
            "server",
            format!("barman {kind} needs the Barman server, for example {{\"server\": \"pg\"}}"),
        )),
    }?;
    if kind != "backup" && options.contains_key("options") {
        return Err(invalid(
            "options",
            format!("barman {kind} takes no options; they are barman backup's"),
        ));
    }
    Ok(())
}

fn global_args(config: Option<&Path>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(c) = config {
        args.push(format!("--config={}", c.display()));
    }
    args
}

/// The command of a job's checked options.
pub fn job_args(options: &Map<String, Value>, config: Option<&Path>) -> Vec<String> {
    let mut args = global_args(config);
    let kind = text(options, "type").unwrap_or("backup");
    match kind {
        "cron" => args.push("cron".into()),
        "check" => {
            args.push("check".into());
            args.push(text(options, "server").unwrap_or("").into());
        }
        _ => {
            args.push("backup".into());
            // Of Barman's flags, only --immediate-checkpoint has a negation.
            args.extend(extra_args(options, "options", |name| {
                (name == "immediate-checkpoint").then(|| "--no-immediate-checkpoint".to_string())
            }));
            args.push(text(options, "server").unwrap_or("").into());
        }
    }
    args
}

/// `barman --format=json list-backups SERVER`.
pub fn list_args(server: &str, config: Option<&Path>) -> Vec<String> {
    let mut args = global_args(config);
    args.extend(["--format=json".into(), "list-backups".into(), server.into()]);
    args
}

/// `barman --format=json show-backup SERVER ID`.
pub fn show_args(server: &str, id: &str, config: Option<&Path>) -> Vec<String> {
    let mut args = global_args(config);
    args.extend([
        "--format=json".into(),
        "show-backup".into(),
        server.into(),
        id.into(),
    ]);
    args
}

/// Whether a Barman failure may go away by itself: another Barman process
/// holds the server's lock, or the server was briefly unreachable.
pub fn is_transient(stderr: &str) -> bool {
    stderr.contains("Another") && stderr.contains("process") && stderr.contains("running")
        || crate::schedule::lifecycle::client_message_is_transient(stderr)
}

/// A field of Barman's JSON that may be a number or a string of one.
fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether Barman calls the backup done: a backup still waiting for its WAL
/// (`WAITING_FOR_WALS`), running or failed is no restorable backup, and the
/// catalog records only done ones.
pub fn is_done(b: &ToolBackup) -> bool {
    b.info.get("status").and_then(Value::as_str) == Some("DONE")
}

/// The backups of `server` in `barman --format=json list-backups SERVER`,
/// whatever their status ([`is_done`]).
pub fn parse_list(json: &str, server: &str) -> Result<Vec<ToolBackup>, String> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| format!("barman list-backups printed no JSON pg_ark reads: {e}"))?;
    if let Some(e) = json_error(&doc) {
        return Err(format!("Barman: {e}"));
    }
    let list = doc
        .get(server)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("barman list-backups lists no server \"{server}\""))?;
    let mut out = Vec::new();
    for b in list {
        let id = b
            .get("backup_id")
            .and_then(Value::as_str)
            .ok_or("a backup in barman list-backups has no backup_id")?;
        // list-backups gives the end only (a string of seconds);
        // show_backup adds the beginning.
        let end = number(b.get("end_time_timestamp")).unwrap_or(0.0);
        out.push(ToolBackup {
            label: id.to_string(),
            format: b
                .get("backup_type")
                .and_then(Value::as_str)
                .unwrap_or("full")
                .to_string(),
            size_bytes: number(b.get("size_bytes")).unwrap_or(0.0) as i64,
            started_at: end,
            finished_at: end,
            info: b.clone(),
        });
    }
    Ok(out)
}

/// Complete `backup` with `barman --format=json show-backup SERVER ID`: its
/// beginning, and Barman's whole description of it.
pub fn show_backup(json: &str, server: &str, backup: &mut ToolBackup) -> Result<(), String> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| format!("barman show-backup printed no JSON pg_ark reads: {e}"))?;
    let shown = doc
        .get(server)
        .filter(|s| s.get("backup_id").and_then(Value::as_str) == Some(backup.label.as_str()))
        .ok_or_else(|| format!("barman show-backup does not show backup {}", backup.label))?;
    let base = shown.get("base_backup_information");
    if let Some(begin) = base.and_then(|b| number(b.get("begin_time_timestamp"))) {
        backup.started_at = begin;
    }
    if let Some(end) = base.and_then(|b| number(b.get("end_time_timestamp"))) {
        backup.finished_at = end;
    }
    backup.info = shown.clone();
    Ok(())
}

/// `barman --format=json check SERVER`.
pub fn check_args(server: &str, config: Option<&Path>) -> Vec<String> {
    let mut args = global_args(config);
    args.extend(["--format=json".into(), "check".into(), server.into()]);
    args
}

/// Barman's error in its JSON (`{"_ERROR": [...]}`), if that is what it
/// printed.
fn json_error(doc: &Value) -> Option<String> {
    doc.get("_ERROR").and_then(Value::as_array).map(|e| {
        e.iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Barman's checks of `server` (`check --format=json`), judged: every
/// check must pass. The result document, or what failed in Barman's words.
///
/// Barman's own archiver (`archiver = on`) insists on an `archive_command`,
/// and a server that archives through pg_ark's module has none: Barman
/// then refuses to back up. Its streaming archiver (`streaming_archiver =
/// on`, with a replication slot, kept running by `barman cron`) needs none;
/// the failure says so.
pub fn judge_check(json: &str, server: &str) -> Result<Value, String> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| format!("barman check printed no JSON pg_ark reads: {e}"))?;
    if let Some(e) = json_error(&doc) {
        return Err(format!("Barman: {e}"));
    }
    let checks = doc
        .get(server)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("barman check reports nothing of server \"{server}\""))?;
    let mut failed = Vec::new();
    for (name, c) in checks {
        if c.get("status").and_then(Value::as_str) == Some("OK") {
            continue;
        }
        let hint = c.get("hint").and_then(Value::as_str).unwrap_or("");
        failed.push(if hint.is_empty() {
            format!("{name}: FAILED")
        } else {
            format!("{name}: FAILED ({hint})")
        });
    }
    if failed.is_empty() {
        return Ok(serde_json::json!({ "checks": checks.len() }));
    }
    let mut msg = format!("barman check of server \"{server}\": {}", failed.join("; "));
    if failed.iter().any(|f| f.starts_with("archive_command:")) {
        msg.push_str(
            ". Barman's archiver needs an archive_command, and a server that archives through \
             pg_ark's module has none: use Barman's streaming archiver (streaming_archiver = on \
             with a slot_name, archiver = off) and schedule barman cron every minute",
        );
    }
    Err(msg)
}
