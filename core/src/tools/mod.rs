//! The backup tools people already run, as job kinds of pg_ark's queue:
//! pgBackRest ([`pgbackrest`]), Barman ([`barman`]) and pg_basebackup
//! ([`basebackup`]).
//!
//! Each kind's options are checked here (the rules of the kinds table,
//! `schedule::jobs::KINDS`), and each tool's command is built here as an
//! argument vector from checked options and the server's settings: nothing
//! a role types reaches an argument unchecked, and no path comes from a
//! job's options (the programs are found through `ark.pgbackrest_path`,
//! `ark.barman_path` and the server's own binary directory; pg_basebackup
//! writes only under `ark.pg_basebackup_directory`). What a tool made is
//! read back from its own machine-readable output ([`ToolBackup`]).
//!
//! These kinds run programs as the server's operating system user, so only
//! superusers queue them (`KindSpec::superuser`).
use crate::schedule::jobs::JobError;
use serde::Serialize;
use serde_json::{Map, Value};

pub mod archive_also;
pub mod barman;
pub mod basebackup;
pub mod pgbackrest;

#[cfg(test)]
mod tests;

pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> JobError {
    JobError::InvalidOption {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A name a tool is given (a pgBackRest stanza, a Barman server): letters,
/// digits, `_`, `-` and `.`, starting with a letter or a digit (never an
/// option of the tool's), at most 64 characters.
pub fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The option rule of a stanza or a server name.
pub fn tool_name(key: &str, v: &Value) -> Result<(), JobError> {
    match v.as_str() {
        Some(n) if is_tool_name(n) => Ok(()),
        _ => Err(invalid(
            key,
            format!(
                "expected a name of letters, digits, _, - and . that starts with a letter or a \
                 digit (at most 64 characters), found {v}"
            ),
        )),
    }
}

/// The option rule of a choice among `allowed`.
pub fn one_of(key: &str, v: &Value, allowed: &[&str]) -> Result<(), JobError> {
    match v.as_str() {
        Some(s) if allowed.contains(&s) => Ok(()),
        _ => Err(invalid(
            key,
            format!("expected one of {}, found {v}", allowed.join(", ")),
        )),
    }
}

/// A tool option pg_ark passes on, and what its value may be.
#[derive(Clone, Copy, Debug)]
pub enum Extra {
    /// `true` gives `--name`, `false` `--no-name` (pgBackRest) or nothing
    /// (Barman's flags without a negation).
    Bool,
    Int(i64, i64),
    OneOf(&'static [&'static str]),
}

/// Check `options` (the job's `options` option): an object whose keys are
/// in `allowed`, each value of its kind.
pub fn extra_options(
    key: &str,
    v: &Value,
    allowed: &[(&str, Extra)],
    tool: &str,
) -> Result<(), JobError> {
    let Value::Object(map) = v else {
        return Err(invalid(
            key,
            format!("expected an object of {tool} options, for example {{\"start-fast\": true}}"),
        ));
    };
    let names = || {
        allowed
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, value) in map {
        let Some((_, rule)) = allowed.iter().find(|(n, _)| n == name) else {
            return Err(invalid(
                key,
                format!(
                    "\"{name}\" is not a {tool} option pg_ark passes on; the allowed ones are: {}",
                    names()
                ),
            ));
        };
        let ok = match rule {
            Extra::Bool => value.is_boolean(),
            Extra::Int(min, max) => value.as_i64().is_some_and(|n| (*min..=*max).contains(&n)),
            Extra::OneOf(choices) => value.as_str().is_some_and(|s| choices.contains(&s)),
        };
        if !ok {
            let expected = match rule {
                Extra::Bool => "true or false".to_string(),
                Extra::Int(min, max) => format!("an integer from {min} to {max}"),
                Extra::OneOf(choices) => format!("one of {}", choices.join(", ")),
            };
            return Err(invalid(
                key,
                format!("{tool} option \"{name}\" expects {expected}, found {value}"),
            ));
        }
    }
    Ok(())
}

/// The arguments of checked extra options, in the order given:
/// `--name=value`; for a boolean `--name`, or `negated(name)` for false
/// (`None`: nothing).
pub fn extra_args(
    options: &Map<String, Value>,
    key: &str,
    negated: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Value::Object(map)) = options.get(key) {
        for (name, value) in map {
            match value {
                Value::Bool(true) => out.push(format!("--{name}")),
                Value::Bool(false) => out.extend(negated(name)),
                Value::String(s) => out.push(format!("--{name}={s}")),
                Value::Number(n) => out.push(format!("--{name}={n}")),
                _ => {}
            }
        }
    }
    out
}

/// A string option, if set.
pub fn text<'a>(options: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    options.get(key).and_then(Value::as_str)
}

/// A backup another tool made, as its own output describes it: one row of
/// `ark.backups` (kind `pgbackrest`, `barman` or `pg_basebackup`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolBackup {
    /// The tool's own name for it (pgBackRest's label, Barman's backup id,
    /// pg_basebackup's directory name).
    pub label: String,
    /// Its type in the tool's words (`full`, `incr`, `diff`; Barman's
    /// `backup_type`; pg_basebackup's `plain` or `tar`).
    pub format: String,
    /// Bytes of the backup as the tool counts them.
    pub size_bytes: i64,
    /// Seconds since the epoch.
    pub started_at: f64,
    pub finished_at: f64,
    /// The tool's description of it, kept as `ark.backups.info`.
    pub info: Value,
}

/// Which of a tool's backups the catalog lacks (to record), and which rows
/// name backups the tool no longer lists (its own retention removed them):
/// the catalog follows the tool, and pg_ark never deletes them itself.
pub fn sync<'a>(
    recorded: &[String],
    listed: &'a [ToolBackup],
) -> (Vec<&'a ToolBackup>, Vec<String>) {
    let new = listed
        .iter()
        .filter(|b| !recorded.contains(&b.label))
        .collect();
    let gone = recorded
        .iter()
        .filter(|r| !listed.iter().any(|b| &b.label == *r))
        .cloned()
        .collect();
    (new, gone)
}

/// The newest of `listed` (by its end), the one a job that just succeeded
/// made.
pub fn newest(listed: &[ToolBackup]) -> Option<&ToolBackup> {
    listed.iter().max_by(|a, b| {
        a.finished_at
            .total_cmp(&b.finished_at)
            .then_with(|| a.label.cmp(&b.label))
    })
}

/// Seconds since the epoch of a time written as "2026-12-06 05:01:02" (UTC
/// unless an offset follows: "+01:00", "+0100", "Z"), or ISO 8601's "T"
/// form. Barman writes its times so.
pub fn parse_time(text: &str) -> Option<f64> {
    let t = text.trim();
    let (date, rest) = t.split_at(t.find([' ', 'T'])?);
    let rest = &rest[1..];
    let mut d = date.split('-');
    let (y, mo, da): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let split = rest.find(['+', '-', 'Z', ' ']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(split);
    let mut c = clock.split(':');
    let h: f64 = c.next()?.parse().ok()?;
    let mi: f64 = c.next()?.parse().ok()?;
    let s: f64 = c.next().unwrap_or("0").parse().ok()?;
    let zone = zone.trim();
    let offset = if zone.is_empty() || zone == "Z" || zone == "UTC" {
        0.0
    } else {
        let sign = if zone.starts_with('-') { -1.0 } else { 1.0 };
        let digits: String = zone[1..].chars().filter(char::is_ascii_digit).collect();
        let (oh, om) = match digits.len() {
            2 => (digits.parse::<f64>().ok()?, 0.0),
            4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
            _ => return None,
        };
        sign * (oh * 3600.0 + om * 60.0)
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let days = days_from_civil(y, mo, da);
    Some(days as f64 * 86400.0 + h * 3600.0 + mi * 60.0 + s - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
