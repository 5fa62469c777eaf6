//! What pg_ark reads from a data directory without a running server.
use crate::Error;
use std::path::Path;

/// The system identifier, read from `global/pg_control` (its home is
/// [`crate::pg::control`]).
pub use crate::pg::control::system_identifier;

/// The PostgreSQL major version, from `PG_VERSION`.
pub fn major_version(pgdata: &Path) -> Result<u32, Error> {
    let path = pgdata.join("PG_VERSION");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadFile {
        path: path.display().to_string(),
        source,
    })?;
    text.trim().parse().map_err(|_| Error::ReadFile {
        path: path.display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a major version: {:?}", text.trim()),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_control_and_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("global")).unwrap();
        let mut control = 7_312_345_678_901_234_567u64.to_le_bytes().to_vec();
        control.extend_from_slice(&[0u8; 100]);
        std::fs::write(dir.path().join("global/pg_control"), control).unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), "17\n").unwrap();
        assert_eq!(
            system_identifier(dir.path()).unwrap(),
            7_312_345_678_901_234_567
        );
        assert_eq!(major_version(dir.path()).unwrap(), 17);
        std::fs::write(dir.path().join("PG_VERSION"), "x").unwrap();
        assert!(major_version(dir.path()).is_err());
        assert!(system_identifier(&dir.path().join("nowhere")).is_err());
    }
}
