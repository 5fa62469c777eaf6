//! The control file's facts pg_ark reads: the system identifier, straight
//! from `global/pg_control`; everything else as `pg_controldata` prints it
//! (its labels, in the C locale, are the same in PostgreSQL 15 to 18).
use crate::process::{Program, Stdout};
use crate::Error;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// How long `pg_controldata` may take.
pub const PG_CONTROLDATA_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings whose values a server replaying WAL must have at least as
/// large as the server that wrote it (otherwise recovery stops: "insufficient
/// parameter settings"): `pg_controldata`'s label and the setting's name.
pub const RECOVERY_MINIMUMS: [(&str, &str); 5] = [
    ("max_connections setting", "max_connections"),
    ("max_worker_processes setting", "max_worker_processes"),
    ("max_wal_senders setting", "max_wal_senders"),
    ("max_prepared_xacts setting", "max_prepared_transactions"),
    ("max_locks_per_xact setting", "max_locks_per_transaction"),
];

/// The system identifier: the first field (uint64) of `global/pg_control`.
pub fn system_identifier(pgdata: &Path) -> Result<u64, Error> {
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).map_err(|source| Error::ReadFile {
        path: path.display().to_string(),
        source,
    })?;
    let first: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::ReadFile {
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "pg_control is too short",
            ),
        })?;
    Ok(u64::from_le_bytes(first))
}

/// What `pg_controldata` printed: its `label: value` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlData {
    fields: Vec<(String, String)>,
}

impl ControlData {
    /// Read `pg_controldata`'s output (in the C locale).
    pub fn parse(text: &str) -> ControlData {
        ControlData {
            fields: text
                .lines()
                .filter_map(|l| {
                    let (label, value) = l.split_once(':')?;
                    Some((label.trim().to_string(), value.trim().to_string()))
                })
                .collect(),
        }
    }

    /// The value of `label` (without its colon).
    pub fn get(&self, label: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v.as_str())
    }

    /// "Database system identifier".
    pub fn system_identifier(&self) -> Option<u64> {
        self.get("Database system identifier")?.parse().ok()
    }

    /// The [`RECOVERY_MINIMUMS`] the control file records, by setting name.
    pub fn recovery_minimums(&self) -> Vec<(String, u64)> {
        RECOVERY_MINIMUMS
            .iter()
            .filter_map(|(label, name)| Some((name.to_string(), self.get(label)?.parse().ok()?)))
            .collect()
    }
}

/// Run `bindir/pg_controldata` on `pgdata`, in the C locale.
pub fn pg_controldata(
    bindir: &Path,
    pgdata: &Path,
    cancel: &AtomicBool,
) -> Result<ControlData, Error> {
    let done = Program::new(bindir.join("pg_controldata"))
        .arg(pgdata)
        .env("LC_ALL", "C")
        .env_remove("LANGUAGE")
        .stdout(Stdout::Capture)
        .timeout(PG_CONTROLDATA_TIMEOUT)
        .run(cancel)?;
    Ok(ControlData::parse(&String::from_utf8_lossy(&done.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL 17.11's pg_controldata, as printed (the lines pg_ark reads
    /// and their neighbours; 15 and 18 print the same labels).
    const PG17: &str = "pg_control version number:            1700
Catalog version number:               202406281
Database system identifier:           7715776207141808515
Database cluster state:               in production
pg_control last modified:             Sat Dec  5 11:12:21 2026
Latest checkpoint location:           0/14E60C8
Latest checkpoint's NextXID:          0:738
Latest checkpoint's oldestCommitTsXid:0
wal_level setting:                    replica
wal_log_hints setting:                off
max_connections setting:              100
max_worker_processes setting:         8
max_wal_senders setting:              10
max_prepared_xacts setting:           0
max_locks_per_xact setting:           64
track_commit_timestamp setting:       off
Bytes per WAL segment:                16777216
";

    #[test]
    fn pg_controldata_output_reads_as_labels_and_values() {
        let c = ControlData::parse(PG17);
        assert_eq!(c.system_identifier(), Some(7_715_776_207_141_808_515));
        assert_eq!(c.get("Database cluster state"), Some("in production"));
        // Values may hold colons; labels never do.
        assert_eq!(c.get("Latest checkpoint's NextXID"), Some("0:738"));
        assert_eq!(c.get("Latest checkpoint's oldestCommitTsXid"), Some("0"));
        assert_eq!(
            c.get("pg_control last modified"),
            Some("Sat Dec  5 11:12:21 2026")
        );
        assert_eq!(
            c.recovery_minimums(),
            [
                ("max_connections".to_string(), 100),
                ("max_worker_processes".to_string(), 8),
                ("max_wal_senders".to_string(), 10),
                ("max_prepared_transactions".to_string(), 0),
                ("max_locks_per_transaction".to_string(), 64),
            ]
        );
        assert_eq!(ControlData::parse("garbage").recovery_minimums(), []);
    }

    #[test]
    fn the_system_identifier_is_the_control_files_first_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("global")).unwrap();
        let mut control = 7_312_345_678_901_234_567u64.to_le_bytes().to_vec();
        control.extend_from_slice(&[0u8; 100]);
        std::fs::write(dir.path().join("global/pg_control"), control).unwrap();
        assert_eq!(
            system_identifier(dir.path()).unwrap(),
            7_312_345_678_901_234_567
        );
        std::fs::write(dir.path().join("global/pg_control"), [1u8; 4]).unwrap();
        assert!(system_identifier(dir.path()).is_err());
        assert!(system_identifier(&dir.path().join("nowhere")).is_err());
    }

    #[test]
    fn a_missing_pg_controldata_is_an_error() {
        let e = pg_controldata(
            Path::new("/nonexistent/bin"),
            Path::new("/nonexistent/data"),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("could not run \"/nonexistent/bin/pg_controldata\""),
            "{e}"
        );
    }
}
