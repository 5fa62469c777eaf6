//! Recovery targets, and the LSN and time forms they are written in.
use super::*;

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Replay all the archived WAL.
    Latest,
    /// Stop as soon as the backup is consistent.
    Immediate,
    /// Unix microseconds.
    Time(i64),
    Lsn(u64),
    /// A transaction id (`xid8`; recovery compares its low 32 bits).
    Xid(u64),
    Name(String),
}

/// The target given as text (`ark.restore_plan()`'s arguments, a drill's
/// options): at most one of them; `default` when none is.
pub fn parse_target(
    time: Option<&str>,
    lsn: Option<&str>,
    xid: Option<&str>,
    name: Option<&str>,
    default: Target,
) -> Result<Target, Error> {
    let given = [time, lsn, xid, name]
        .iter()
        .filter(|t| t.is_some())
        .count();
    if given > 1 {
        return Err(Error::InvalidSetting {
            name: "recovery target",
            value: format!("{given} targets"),
            reason: "give at most one of target_time, target_lsn, target_xid and target_name"
                .into(),
        });
    }
    if let Some(t) = time {
        return Ok(Target::Time(parse_time(t)?));
    }
    if let Some(l) = lsn {
        return crate::physical::increment::parse_lsn(l)
            .map(Target::Lsn)
            .ok_or_else(|| Error::InvalidSetting {
                name: "target_lsn",
                value: l.to_string(),
                reason: "not an LSN".into(),
            });
    }
    if let Some(x) = xid {
        return x
            .trim()
            .parse()
            .map(Target::Xid)
            .map_err(|_| Error::InvalidSetting {
                name: "target_xid",
                value: x.to_string(),
                reason: "not a transaction id".into(),
            });
    }
    if let Some(n) = name {
        if n.is_empty() {
            return Err(Error::InvalidSetting {
                name: "target_name",
                value: String::new(),
                reason: "a restore point name is not empty".into(),
            });
        }
        return Ok(Target::Name(n.to_string()));
    }
    Ok(default)
}

/// `recovery_target_timeline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineChoice {
    Latest,
    Current,
    Id(u32),
}

impl TimelineChoice {
    pub fn parse(text: &str) -> Result<TimelineChoice, Error> {
        match text.trim() {
            "latest" | "" => Ok(TimelineChoice::Latest),
            "current" => Ok(TimelineChoice::Current),
            t => t
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(TimelineChoice::Id)
                .ok_or_else(|| Error::InvalidSetting {
                    name: "target_timeline",
                    value: t.to_string(),
                    reason: "use latest, current or a timeline number".into(),
                }),
        }
    }
}

/// An LSN as PostgreSQL prints it (see [`crate::wal::lsn`]).
pub use crate::wal::lsn::format as format_lsn;

/// A Unix-microseconds time as `recovery_target_time` takes it (UTC).
pub fn format_time(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let sub = micros.rem_euclid(1_000_000);
    match chrono::DateTime::from_timestamp(secs, (sub * 1000) as u32) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        None => format!("{micros} µs"),
    }
}

/// Parse a time as `recovery_target_time` would, with an explicit zone
/// (`+02`, `+02:00`, `Z` or ` UTC`): Unix microseconds.
pub fn parse_time(text: &str) -> Result<i64, Error> {
    let t = text.trim();
    let t = t
        .strip_suffix(" UTC")
        .or_else(|| t.strip_suffix("UTC"))
        .map(|s| format!("{}+00:00", s.trim_end()))
        .unwrap_or_else(|| t.to_string());
    let t = if let Some(s) = t.strip_suffix('Z') {
        format!("{s}+00:00")
    } else {
        t
    };
    // A bare hour offset (+02, -05) as PostgreSQL prints it.
    let t = match t.rfind(['+', '-']) {
        Some(i)
            if i > 10
                && t[i + 1..].len() == 2
                && t[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{t}:00")
        }
        _ => t,
    };
    let t = t.replacen('T', " ", 1);
    for f in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M%:z"] {
        if let Ok(d) = chrono::DateTime::parse_from_str(&t, f) {
            return Ok(d.timestamp_micros());
        }
    }
    Err(Error::InvalidSetting {
        name: "target time",
        value: text.to_string(),
        reason: "use YYYY-MM-DD HH:MM:SS[.ffffff] with a time zone offset (+00, +02:00, Z or UTC)"
            .into(),
    })
}
