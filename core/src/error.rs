//! Typed errors of the core. Each carries its own hint; the extension maps
//! each variant to a SQLSTATE in one place (`src/error.rs`), the CLI to an
//! exit code.
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Error {
    /// A repository URL that cannot be used.
    #[error("invalid repository URL \"{url}\": {reason}")]
    InvalidRepositoryUrl { url: String, reason: String },
}

impl Error {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::InvalidRepositoryUrl { .. } => Some(
                "Use file:///absolute/path for a local repository or s3://bucket/prefix for S3."
                    .into(),
            ),
        }
    }
}
