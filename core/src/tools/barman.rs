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
            args.extend(extra_args(options, "options", |_| None));
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

/// The backups of `server` in `barman --format=json list-backups SERVER`
/// that are done (a failed or running backup is no backup).
pub fn parse_list(json: &str, server: &str) -> Result<Vec<ToolBackup>, String> {
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| format!("barman list-backups printed no JSON pg_ark reads: {e}"))?;
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
        if b.get("status").and_then(Value::as_str) != Some("DONE") {
            continue;
        }
        let end = number(b.get("end_time_timestamp"))
            .or_else(|| {
                b.get("end_time")
                    .and_then(Value::as_str)
                    .and_then(super::parse_time)
            })
            .unwrap_or(0.0);
        let begin = number(b.get("begin_time_timestamp"))
            .or_else(|| {
                b.get("begin_time")
                    .and_then(Value::as_str)
                    .and_then(super::parse_time)
            })
            .unwrap_or(end);
        out.push(ToolBackup {
            label: id.to_string(),
            format: b
                .get("backup_type")
                .and_then(Value::as_str)
                .unwrap_or("full")
                .to_string(),
            size_bytes: number(b.get("size_bytes")).unwrap_or(0.0) as i64,
            started_at: begin,
            finished_at: end,
            info: b.clone(),
        });
    }
    Ok(out)
}
