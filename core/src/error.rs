//! Typed errors of the core. Each carries its own hint; the extension maps
//! each variant to a SQLSTATE in one place (`src/error.rs`), the CLI to an
//! exit code. Messages are lowercase and name the object and the values.
use crate::repo::envelope::EnvelopeError;
use crate::repo::info::InfoError;
use crate::storage::StorageError;
use crate::wal::segment::SegmentSize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A repository URL that cannot be used.
    #[error("invalid repository URL \"{url}\": {reason}")]
    InvalidRepositoryUrl { url: String, reason: String },

    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error(transparent)]
    Info(#[from] InfoError),

    #[error("repository {location} has format version {found}{}, newer than pg_ark {} reads (up to {supported})", created_by_text(.created_by), crate::VERSION)]
    RepositoryTooNew {
        location: String,
        found: u64,
        supported: u64,
        /// The pg_ark its descriptor says created it ("pg_ark 0.3.0").
        created_by: Option<String>,
    },

    /// A backup's descriptor, manifest or index written by a newer pg_ark.
    #[error("repository metadata \"{key}\" in {location} has format version {found}, newer than pg_ark {} reads (up to {supported})", crate::VERSION)]
    MetadataTooNew {
        location: String,
        key: String,
        found: u64,
        supported: u64,
    },

    /// Recipients set for a clear repository (a repository is encrypted
    /// whole or not at all).
    #[error("repository {location} is not encrypted, and {given}")]
    EncryptionMismatch {
        location: String,
        given: &'static str,
    },

    #[error("repository metadata \"{key}\" in {location} is invalid: {reason}")]
    BadMetadata {
        location: String,
        key: String,
        reason: String,
    },

    /// The repository's entry for this system identifier records another cluster.
    #[error("repository {location} belongs to another cluster: it records {what} {repo_value}, this cluster has {our_value}")]
    ClusterMismatch {
        location: String,
        what: &'static str,
        repo_value: String,
        our_value: String,
    },

    #[error("\"{name}\" is not a WAL file name")]
    NotAWalFileName { name: String },

    /// A WAL segment size PostgreSQL does not allow.
    #[error("{bytes} bytes is not a WAL segment size: PostgreSQL allows powers of two from 1 MiB to 1 GiB")]
    InvalidSegmentSize { bytes: u64 },

    /// A segment name that no cluster of the entry's segment size can have
    /// (its last eight digits reach the segments per log id).
    #[error("\"{name}\" is not a WAL segment name for {segment_size} segments: its last part must be below {:08X}", segment_size.per_xlogid())]
    SegmentNameNotOfSize {
        name: String,
        segment_size: SegmentSize,
    },

    /// The repository's entry holds WAL of another segment size than this
    /// cluster's (or than the data read from it).
    #[error("repository {location} records WAL segments of {recorded}{}, {what} has {ours}", if *recorded_by_default { " (the default of an entry written before pg_ark recorded the size)" } else { "" })]
    SegmentSizeMismatch {
        location: String,
        recorded: SegmentSize,
        recorded_by_default: bool,
        /// What has the other size: "this cluster", "WAL file \"...\"".
        what: String,
        ours: SegmentSize,
    },

    /// The same WAL file name was offered with different content.
    #[error("WAL file \"{name}\" is already archived with different content (stored {stored}, offered {offered})")]
    WalConflict {
        name: String,
        stored: String,
        offered: String,
    },

    #[error("stored object \"{key}\" in {location} is corrupt: {source}")]
    Corrupt {
        location: String,
        key: String,
        #[source]
        source: EnvelopeError,
    },

    #[error("WAL file \"{name}\" in the repository belongs to system identifier {found}, not {expected}")]
    ForeignWal {
        name: String,
        expected: u64,
        found: u64,
    },

    #[error("invalid setting {name} = {value:?}: {reason}")]
    InvalidSetting {
        name: &'static str,
        value: String,
        reason: String,
    },

    #[error("{what}")]
    Unsupported { what: String },

    #[error("could not read \"{path}\": {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A local file operation other than reading (logical backups' work
    /// directory, running a program).
    #[error("could not {op} \"{path}\": {source}")]
    LocalIo {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A program pg_ark ran (psql, pg_restore, pg_ctl, ...) failed, ran
    /// past its time limit, or was cancelled (`crate::process`).
    #[error(transparent)]
    Program(#[from] crate::process::ProgramError),

    /// A logical backup request that cannot be run as given.
    #[error("invalid logical backup request: {reason}")]
    InvalidLogicalRequest { reason: String },

    /// pg_dump exited with an error (or could not be read); nothing was stored.
    #[error("pg_dump failed for database \"{database}\": {detail}")]
    DumpFailed { database: String, detail: String },

    /// The dump was cancelled; nothing was stored.
    #[error("the dump of database \"{database}\" was cancelled")]
    DumpCancelled { database: String },

    #[error("not enough free space in \"{path}\": {needed} bytes needed, {available} available")]
    NotEnoughSpace {
        path: String,
        needed: u64,
        available: u64,
    },

    /// One attempt to archive a WAL file ran past `ark.archive_timeout`.
    #[error("could not archive WAL file \"{name}\" within {seconds} s")]
    ArchiveTimeout { name: String, seconds: u64 },

    /// The archiver is stopping; the file will be offered again.
    #[error("archiving of WAL file \"{name}\" was interrupted: the archiver is stopping")]
    ArchiveInterrupted { name: String },

    /// A push thread panicked (a defect); the file will be offered again.
    #[error("pushing WAL file \"{name}\" failed unexpectedly")]
    PushPanicked { name: String },

    /// A restore target the repository cannot serve (planning).
    #[error("cannot restore to the requested target: {reason}")]
    RestoreTarget { reason: String, hint: String },

    /// A restore that would destroy or mix data.
    #[error("refusing to restore into \"{path}\": {reason}")]
    RestoreRefused {
        path: String,
        reason: String,
        hint: String,
    },

    /// What pg_ark wrote was changed behind its back: an object it wrote
    /// once is hidden behind a delete marker (see `storage::versioned`).
    #[error("repository {location} was tampered with: \"{key}\" {what}")]
    Tampered {
        location: String,
        key: String,
        what: String,
    },

    #[error("backup \"{backup_id}\" in {location} lost objects before it was complete: {}", missing.join(", "))]
    BackupObjectsMissing {
        location: String,
        backup_id: String,
        missing: Vec<String>,
    },

    #[error("logical backup \"{label}\" of database \"{database}\" already exists in {location}")]
    LogicalBackupExists {
        location: String,
        database: String,
        label: String,
    },
}

/// " (created by pg_ark X)" when the repository's descriptor says so.
fn created_by_text(created_by: &Option<String>) -> String {
    created_by
        .as_deref()
        .map(|c| format!(" (created by {c})"))
        .unwrap_or_default()
}

impl Error {
    /// The primary message of a PostgreSQL report: what failed. The cause,
    /// if it is not part of the object's name, goes into [`Error::detail`];
    /// `Display` joins both, for logs and the CLI.
    pub fn primary(&self) -> String {
        match self {
            Error::InvalidRepositoryUrl { url, .. } => format!("invalid repository URL \"{url}\""),
            Error::RepositoryTooNew { location, .. } => {
                format!("repository {location} has a newer format version")
            }
            Error::BadMetadata { location, key, .. } => {
                format!("repository metadata \"{key}\" in {location} is invalid")
            }
            Error::MetadataTooNew { location, key, .. } => {
                format!("repository metadata \"{key}\" in {location} has a newer format version")
            }
            Error::ClusterMismatch { location, .. } => {
                format!("repository {location} belongs to another cluster")
            }
            Error::SegmentSizeMismatch { location, .. } => {
                format!("repository {location} holds WAL of another segment size")
            }
            Error::WalConflict { name, .. } => {
                format!("WAL file \"{name}\" is already archived with different content")
            }
            Error::Corrupt { location, key, .. } => {
                format!("stored object \"{key}\" in {location} is corrupt")
            }
            Error::ForeignWal { name, .. } => {
                format!("WAL file \"{name}\" in the repository belongs to another cluster")
            }
            Error::InvalidSetting { name, value, .. } => {
                format!("invalid value for setting {name}: {value:?}")
            }
            Error::DumpFailed { database, .. } => {
                format!("pg_dump failed for database \"{database}\"")
            }
            Error::Program(p) => match p {
                crate::process::ProgramError::Cancelled { .. } => p.to_string(),
                _ => format!("{} failed", p.program()),
            },
            Error::ArchiveInterrupted { name } => {
                format!("archiving of WAL file \"{name}\" was interrupted")
            }
            Error::RestoreTarget { .. } => "cannot restore to the requested target".into(),
            Error::BackupObjectsMissing {
                location,
                backup_id,
                ..
            } => {
                format!("backup \"{backup_id}\" in {location} lost objects before it was complete")
            }
            Error::RestoreRefused { path, .. } => format!("refusing to restore into \"{path}\""),
            other => other.to_string(),
        }
    }

    /// The cause behind [`Error::primary`], for the report's DETAIL.
    pub fn detail(&self) -> Option<String> {
        Some(match self {
            Error::InvalidRepositoryUrl { reason, .. }
            | Error::BadMetadata { reason, .. }
            | Error::InvalidSetting { reason, .. } => upper_first(reason),
            Error::MetadataTooNew {
                found, supported, ..
            } => format!(
                "It has format version {found}; this pg_ark ({}) reads formats up to {supported}: a newer pg_ark wrote it.",
                crate::VERSION
            ),
            Error::RepositoryTooNew {
                found,
                supported,
                created_by,
                ..
            } => format!(
                "The repository has format version {found}{}; this pg_ark ({}) reads formats up to {supported}.",
                created_by
                    .as_deref()
                    .map(|c| format!(", created by {c}"))
                    .unwrap_or_default(),
                crate::VERSION
            ),
            Error::ClusterMismatch {
                what,
                repo_value,
                our_value,
                ..
            } => {
                format!("The repository records {what} {repo_value}; this cluster has {our_value}.")
            }
            Error::WalConflict {
                stored, offered, ..
            } => format!("The stored copy has {stored}; the offered file has {offered}."),
            Error::SegmentSizeMismatch {
                recorded,
                recorded_by_default,
                what,
                ours,
                ..
            } => format!(
                "The repository records wal_segment_size {recorded}{}; {what} has {ours}.",
                if *recorded_by_default {
                    " (its entry was written before pg_ark recorded the size, so it holds 16MB segments)"
                } else {
                    ""
                }
            ),
            Error::Corrupt { source, .. } => upper_first(&source.to_string()),
            Error::ForeignWal {
                expected, found, ..
            } => format!("It belongs to system identifier {found}, not {expected}."),
            Error::DumpFailed { detail, .. } => upper_first(detail),
            Error::Program(crate::process::ProgramError::Cancelled { .. }) => return None,
            Error::Program(p) => upper_first(&p.detail()),
            Error::RestoreTarget { reason, .. } | Error::RestoreRefused { reason, .. } => {
                format!("{}.", upper_first(reason))
            }
            Error::ArchiveInterrupted { .. } => {
                "The archiver is stopping; the file will be offered again.".to_string()
            }
            Error::BackupObjectsMissing { missing, .. } => format!(
                "Missing from its folder: {}{}.",
                missing
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if missing.len() > 5 {
                    format!(" and {} more", missing.len() - 5)
                } else {
                    String::new()
                }
            ),
            _ => return None,
        })
    }

    /// Whether trying the same operation again may succeed: storage that
    /// could not be reached (the network, an S3 server's 5xx or throttling,
    /// a timeout), a dump that failed for a reason that goes away by itself
    /// (a shutdown, a lock timeout: see
    /// [`crate::schedule::lifecycle::client_message_is_transient`]), WAL not
    /// archived in time, and objects another writer of the repository entry
    /// removed. A job retries only these (see [`crate::schedule::lifecycle`]).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Storage(e) | Error::Info(InfoError::Storage(e)) => e.is_transient(),
            Error::DumpFailed { detail, .. } => {
                crate::schedule::lifecycle::client_message_is_transient(detail)
            }
            Error::ArchiveTimeout { .. } | Error::BackupObjectsMissing { .. } => true,
            Error::Program(p) => p.is_transient(),
            _ => false,
        }
    }

    /// The encryption error it is, if it is one (an object that could not
    /// be opened, read directly or as metadata).
    pub fn encryption(&self) -> Option<&crate::crypto::CryptoError> {
        match self {
            Error::Storage(StorageError::Encryption(e))
            | Error::Info(InfoError::Storage(StorageError::Encryption(e))) => Some(e),
            _ => None,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::InvalidRepositoryUrl { .. } => {
                "Use file:///absolute/path for a local repository or s3://bucket/prefix for S3.".into()
            }
            Error::RepositoryTooNew { .. } | Error::MetadataTooNew { .. } => "Use the pg_ark that writes this format (the extension and the CLI alike), or another repository.".into(),
            Error::ClusterMismatch { .. } => {
                "Is ark.repository pointing at the right repository? Each cluster needs its own entry; \
                 never copy one cluster's entry for another."
                    .into()
            }
            Error::SegmentSizeMismatch { .. } => {
                "Each repository entry holds WAL and backups of one segment size, the one its \
                 cluster was initialized with (initdb --wal-segsize). Point ark.repository at a \
                 new repository for a cluster of another size."
                    .into()
            }
            Error::InvalidSegmentSize { .. } => {
                "Use the cluster's wal_segment_size (SHOW wal_segment_size): 1MB, 2MB, ... 1GB.".into()
            }
            Error::SegmentNameNotOfSize { .. } => {
                "The name does not belong to this repository entry's cluster: check that WAL of \
                 only one cluster (of one segment size) is archived into it."
                    .into()
            }
            Error::WalConflict { .. } => {
                "The stored copy was kept. Check whether two clusters archive into the same repository \
                 entry, or whether pg_wal was restored from elsewhere."
                    .into()
            }
            Error::Corrupt { .. } | Error::ForeignWal { .. } => {
                "Do not use this file for recovery; check the repository's storage for other damage.".into()
            }
            Error::EncryptionMismatch { .. } => {
                "A repository is encrypted from its creation, whole: point the repository setting at \
                 a new location to start an encrypted one, or leave the keys out for this one. If it \
                 was encrypted, its descriptor pg_ark.repo was changed: do not trust its contents."
                    .into()
            }
            Error::Storage(StorageError::Encryption(e))
            | Error::Info(InfoError::Storage(StorageError::Encryption(e))) => {
                return crate::crypto::hint(e)
            }
            Error::Storage(StorageError::Unavailable { .. }) => {
                "The repository could not be reached; check the endpoint, the network and the \
                 server's health, then try again."
                    .into()
            }
            Error::Info(InfoError::Damaged { .. }) => {
                "Both copies of the metadata are damaged; restore them from a copy of the repository.".into()
            }
            Error::DumpFailed { .. } => {
                "Nothing was stored. Check that the database exists and accepts local connections \
                 of the role pg_ark dumps as, and that pg_dump is of the server's major version or newer."
                    .into()
            }
            Error::DumpCancelled { .. } => "Nothing was stored.".into(),
            Error::Program(p) => return p.hint(),
            Error::NotEnoughSpace { .. } => {
                "Free space there, or set ark.work_directory to a larger file system outside the \
                 data directory: a directory-format dump is staged there whole before it is uploaded."
                    .into()
            }
            Error::ArchiveTimeout { .. } => {
                "The repository is slow or does not answer; PostgreSQL tries the file again. \
                 Raise ark.archive_timeout if the link is merely slow."
                    .into()
            }
            Error::ArchiveInterrupted { .. } | Error::PushPanicked { .. } => {
                "The file stays in pg_wal and is offered again.".into()
            }
            Error::LogicalBackupExists { .. } => "Give each logical backup its own label.".into(),
            Error::Tampered { .. } => {
                "Someone with the repository's keys deleted or replaced what pg_ark wrote; under \
                 Object Lock the versions pg_ark wrote are still there. Read the repository as it \
                 was with pg_ark verify or restore --first-versions, or --as-of a time before the \
                 tampering; nothing is written into it meanwhile. See Protecting backups."
                    .into()
            }
            Error::BackupObjectsMissing { .. } => {
                "The backup was not recorded complete. Another writer of this repository entry \
                 removed its objects: is a restored copy of this cluster backing up into the same \
                 repository? Pause its schedules (ark.status() says so after pg_ark restore) or \
                 give it another repository."
                    .into()
            }
            Error::RestoreTarget { hint, .. } | Error::RestoreRefused { hint, .. } => hint.clone(),
            Error::LocalIo { .. } => {
                "Check that the path exists, that the PostgreSQL OS user may use it, and that the \
                 file system has free space."
                    .into()
            }
            Error::Storage(StorageError::Retained { .. }) => {
                "Nothing was removed. Object Lock keeps the object until the date named; it can \
                 be deleted after that date."
                    .into()
            }
            Error::Storage(StorageError::ObjectLockUnavailable { .. }) => {
                "Point the repository at a bucket created with Object Lock (aws s3api \
                 create-bucket --bucket NEW-BUCKET --object-lock-enabled-for-bucket, which turns \
                 versioning on too), or turn the Object Lock settings off."
                    .into()
            }
            Error::Storage(StorageError::Io { .. }) => {
                "Check that the repository location exists and is writable by the PostgreSQL OS user.".into()
            }
            _ => return None,
        })
    }
}

/// PostgreSQL's DETAIL is a sentence: capital first letter.
fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
