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
    #[error(
        "pg_ark's repository has it, but the second destination, {destination}, does not: {reason}"
    )]
    SecondDestination { destination: String, reason: String },
    #[error("extension \"pg_ark\" is not installed in this database")]
    NotInstalled,
    #[error("{}", .0.message())]
    CatalogVersion(pg_ark_core::version::CatalogMismatch),
    #[error(transparent)]
    Core(#[from] pg_ark_core::Error),
    #[error(transparent)]
    Job(#[from] pg_ark_core::schedule::jobs::JobError),
    #[error(transparent)]
    Cron(#[from] pg_ark_core::schedule::cron::CronError),
    #[error("permission denied to {action}")]
    NotAdmin { action: &'static str, role: String },
    #[error("permission denied to read pg_ark's status")]
    NotMonitor { role: String },
    #[error("pg_ark's job queue is in database \"{queue_db}\", not in \"{current_db}\"")]
    WrongDatabase {
        queue_db: String,
        current_db: String,
    },
    #[error("pg_ark jobs cannot be queued during recovery")]
    InRecovery,
    #[error("the pg_ark scheduler is not running")]
    SchedulerNotRunning,
    #[error("the pg_ark scheduler did not confirm the new job within {seconds} seconds")]
    SchedulerTimeout { seconds: u64 },
    #[error("the pg_ark scheduler could not queue the job: {message}")]
    EnqueueFailed { message: String },
    #[error("job options are too large ({bytes} bytes; at most {max})")]
    OptionsTooLarge { bytes: usize, max: usize },
    #[error("schedule name must not be empty")]
    EmptyScheduleName,
    #[error("job {id} does not exist")]
    NoSuchJob { id: i64 },
    #[error("job {id} {state}: {error}")]
    JobFailed {
        id: i64,
        state: String,
        error: String,
    },
    #[error("job {id} cannot be {action}: it is {state}")]
    JobState {
        id: i64,
        action: &'static str,
        state: String,
    },
    #[error("job {id} did not end within {timeout}: it is {state}")]
    WaitTimeout {
        id: i64,
        timeout: String,
        state: String,
    },
    #[error("ark.wait() cannot see the job change under {isolation} isolation")]
    WaitNeedsReadCommitted { isolation: &'static str },
    #[error("SPI error: {0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl ArkError {
    /// The failure of a job attempt this error makes: transient only when
    /// the core says trying again may succeed.
    pub fn failure(&self) -> pg_ark_core::schedule::lifecycle::JobFailure {
        use pg_ark_core::schedule::lifecycle::JobFailure;
        match self {
            ArkError::Core(e) => JobFailure::from(e),
            other => JobFailure::permanent(other.to_string()),
        }
    }

    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use pg_ark_core::Error as C;
        match self {
            ArkError::NotPreloaded => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ArkError::NoRepository => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ArkError::SecondDestination { .. } => {
                PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION
            }
            ArkError::NotInstalled => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            ArkError::CatalogVersion(_) => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            ArkError::Core(e) if e.encryption().is_some() => {
                use pg_ark_core::crypto::CryptoError as K;
                match e.encryption() {
                    Some(K::Tampered { .. } | K::NotEncrypted { .. } | K::BadKeyObject { .. }) => {
                        PgSqlErrorCode::ERRCODE_DATA_CORRUPTED
                    }
                    Some(K::Io { .. }) => PgSqlErrorCode::ERRCODE_IO_ERROR,
                    _ => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                }
            }
            ArkError::Core(e) => match e {
                C::InvalidRepositoryUrl { .. } | C::InvalidSetting { .. } => {
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
                }
                C::NotAWalFileName { .. } | C::SegmentNameNotOfSize { .. } => {
                    PgSqlErrorCode::ERRCODE_INVALID_NAME
                }
                C::InvalidSegmentSize { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                C::SegmentSizeMismatch { .. } => {
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
                }
                C::RepositoryTooNew { .. }
                | C::MetadataTooNew { .. }
                | C::ClusterMismatch { .. } => {
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
                }
                C::WalConflict { .. } => PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                // Metadata that could not be reached is no damage.
                C::Info(pg_ark_core::repo::info::InfoError::Storage(_)) => {
                    PgSqlErrorCode::ERRCODE_IO_ERROR
                }
                C::Corrupt { .. }
                | C::ForeignWal { .. }
                | C::BadMetadata { .. }
                | C::Info(_)
                | C::Tampered { .. }
                | C::BackupObjectsMissing { .. } => PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                C::EncryptionMismatch { .. } => {
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
                }
                // Object Lock: a version kept until its date, or a bucket
                // that cannot lock. Neither passes by trying again now.
                C::Storage(
                    pg_ark_core::storage::StorageError::Retained { .. }
                    | pg_ark_core::storage::StorageError::ObjectLockUnavailable { .. },
                ) => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                C::Storage(_) | C::ReadFile { .. } => PgSqlErrorCode::ERRCODE_IO_ERROR,
                C::Unsupported { .. } => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                C::LocalIo { .. } => PgSqlErrorCode::ERRCODE_IO_ERROR,
                C::InvalidLogicalRequest { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                C::DumpFailed { .. } => PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
                C::DumpCancelled { .. } => PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                C::Program(pg_ark_core::process::ProgramError::Cancelled { .. }) => {
                    PgSqlErrorCode::ERRCODE_QUERY_CANCELED
                }
                C::Program(_) => PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
                C::LogicalBackupExists { .. } => PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                C::ArchiveTimeout { .. } => PgSqlErrorCode::ERRCODE_IO_ERROR,
                C::NotEnoughSpace { .. } => PgSqlErrorCode::ERRCODE_DISK_FULL,
                C::ArchiveInterrupted { .. } => PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN,
                C::PushPanicked { .. } => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                C::RestoreTarget { .. } | C::RestoreRefused { .. } => {
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
                }
            },
            ArkError::Job(pg_ark_core::schedule::jobs::JobError::SuperuserOnly { .. }) => {
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            ArkError::Job(_) | ArkError::Cron(_) | ArkError::OptionsTooLarge { .. } => {
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
            }
            ArkError::EmptyScheduleName => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            ArkError::NotAdmin { .. } | ArkError::NotMonitor { .. } => {
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            ArkError::InRecovery => PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            ArkError::WrongDatabase { .. }
            | ArkError::SchedulerNotRunning
            | ArkError::JobState { .. }
            | ArkError::WaitNeedsReadCommitted { .. } => {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            ArkError::SchedulerTimeout { .. } | ArkError::WaitTimeout { .. } => {
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED
            }
            ArkError::EnqueueFailed { .. } | ArkError::Spi(_) => {
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR
            }
            ArkError::NoSuchJob { .. } => PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            ArkError::JobFailed { .. } => PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
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
            ArkError::NotInstalled => Some("CREATE EXTENSION pg_ark;".into()),
            ArkError::SecondDestination { .. } => Some(
                "ark.archive_also names it. Fix it (the tool's message is above), or empty \
                 ark.archive_also and reload to archive into pg_ark's repository alone."
                    .into(),
            ),
            ArkError::CatalogVersion(m) => Some(m.hint()),
            ArkError::Core(e) => e.hint(),
            ArkError::Job(e) => e.hint(),
            ArkError::Cron(e) => e.hint(),
            ArkError::NotAdmin { role, .. } => Some(format!(
                "Only superusers and members of role ark_admin may schedule, run, cancel, retry or expire backups: GRANT ark_admin TO \"{role}\";"
            )),
            ArkError::NotMonitor { role } => Some(format!(
                "Members of ark_monitor (or ark_admin) may read pg_ark's status: GRANT ark_monitor TO \"{role}\";"
            )),
            ArkError::WrongDatabase { queue_db, .. } => Some(format!(
                "The scheduler reads schedules and jobs from ark.database; connect to \"{queue_db}\", or set ark.database and restart the server."
            )),
            ArkError::InRecovery => Some(
                "This server is a standby; pg_ark runs jobs on the primary.".into(),
            ),
            ArkError::SchedulerNotRunning => Some(
                "The scheduler starts once recovery is finished; look for \"pg_ark scheduler\" in pg_stat_activity and in the server log.".into(),
            ),
            ArkError::SchedulerTimeout { .. } => Some(
                "The job may still have been queued: look at ark.jobs before trying again.".into(),
            ),
            ArkError::OptionsTooLarge { .. } => {
                Some("Pass only the options the job kind needs.".into())
            }
            ArkError::NoSuchJob { .. } => Some("The jobs are listed in ark.jobs.".into()),
            ArkError::JobFailed { id, .. } => Some(format!(
                "The job's record is in ark.jobs (id {id}); nothing was removed after the error."
            )),
            ArkError::JobState { action, .. } => Some(match *action {
                "cancelled" => "Only queued, retrying and running jobs can be cancelled.".into(),
                _ => "Only failed, cancelled and retrying jobs can be retried.".into(),
            }),
            ArkError::WaitTimeout { id, .. } => Some(format!(
                "The job goes on; call ark.wait({id}) again, or ark.cancel({id}) to stop it."
            )),
            ArkError::WaitNeedsReadCommitted { .. } => Some(
                "Call ark.wait() in a READ COMMITTED transaction (the default).".into(),
            ),
            ArkError::EnqueueFailed { .. } | ArkError::Spi(_) | ArkError::EmptyScheduleName => None,
        }
    }

    /// The primary message: what failed (the cause is in [`ArkError::detail`]).
    pub fn primary(&self) -> String {
        match self {
            ArkError::Core(e) => e.primary(),
            ArkError::JobFailed { id, state, .. } => format!("job {id} {state}"),
            ArkError::EnqueueFailed { .. } => "the pg_ark scheduler could not queue the job".into(),
            other => other.to_string(),
        }
    }

    /// The cause, for the report's DETAIL.
    pub fn detail(&self) -> Option<String> {
        match self {
            ArkError::Core(e) => e.detail(),
            ArkError::JobFailed { error, .. } => Some(error.clone()),
            ArkError::EnqueueFailed { message } => Some(message.clone()),
            _ => None,
        }
    }

    /// Build the PostgreSQL error report for this error: message, DETAIL
    /// and HINT apart, as PostgreSQL's style guide asks.
    pub fn to_report(&self) -> ErrorReport {
        let mut report = ErrorReport::new(self.sqlstate(), self.primary(), "pg_ark");
        if let Some(detail) = self.detail() {
            report = report.set_detail(detail);
        }
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

impl From<ArkError> for pg_ark_core::schedule::lifecycle::JobFailure {
    fn from(e: ArkError) -> Self {
        e.failure()
    }
}
