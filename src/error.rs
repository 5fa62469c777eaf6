//! Errors of the extension, and the one place where each becomes a
//! PostgreSQL error report with SQLSTATE, message and hint.
//!
//! Messages are lowercase and name the object and the value, the way
//! PostgreSQL's own messages do. Errors of the pgrx-free core
//! (`pg_ark_core::Error`) are mapped here too, so no other module chooses a
//! SQLSTATE.
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ArkError {
    #[error("pg_ark must be loaded via shared_preload_libraries")]
    NotPreloaded,
    #[error("ark.repository is not set")]
    NoRepository,
    #[error(transparent)]
    Core(#[from] pg_ark_core::Error),
}

impl ArkError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use pg_ark_core::Error as C;
        match self {
            ArkError::NotPreloaded => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ArkError::NoRepository => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ArkError::Core(e) => match e {
                C::InvalidRepositoryUrl { .. } | C::InvalidSetting { .. } => {
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
                }
                C::NotAWalFileName { .. } => PgSqlErrorCode::ERRCODE_INVALID_NAME,
                C::RepositoryTooNew { .. } | C::ClusterMismatch { .. } => {
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
                }
                C::WalConflict { .. } => PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                C::Corrupt { .. } | C::ForeignWal { .. } | C::BadMetadata { .. } | C::Info(_) => {
                    PgSqlErrorCode::ERRCODE_DATA_CORRUPTED
                }
                C::Storage(_) | C::ReadFile { .. } => PgSqlErrorCode::ERRCODE_IO_ERROR,
                C::Unsupported { .. } => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            },
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            ArkError::NotPreloaded => Some(
                "Add pg_ark to shared_preload_libraries in postgresql.conf and restart the server."
                    .into(),
            ),
            ArkError::NoRepository => Some(
                "Set ark.repository to file:///path or s3://bucket/prefix and reload the configuration."
                    .into(),
            ),
            ArkError::Core(e) => e.hint(),
        }
    }

    /// Build the PostgreSQL error report for this error.
    pub fn to_report(&self) -> ErrorReport {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), "pg_ark");
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report
    }

    /// Report at `level`; at ERROR and above this does not return.
    pub fn report(&self, level: PgLogLevel) {
        self.to_report().report(level)
    }
}
