//! A logical backup's metadata (`backup.info`), its keys and labels.
use super::*;
use crate::repo::{layout, ClusterRepo};
use crate::Error;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The version of `backup.info` this pg_ark writes and the newest it reads.
pub const LOGICAL_INFO_VERSION: u32 = 1;
/// The name of a backup's metadata (with `.copy` beside it).
pub const INFO_NAME: &str = "backup.info";

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
    cluster.key(&layout::logical(&encode_database(database), label))
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
