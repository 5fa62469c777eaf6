//! pg_ark_core: the part of pg_ark that needs no running PostgreSQL.
//!
//! Storage backends, the repository format, the backup catalog and restore
//! planning live here, free of pgrx, so that the extension (inside the
//! server) and the `pg_ark` CLI (with the server down) share one
//! implementation. Everything here is tested with plain `cargo test`.
pub mod archive_get;
pub mod archive_push;
pub mod cron;
pub mod error;
pub mod health;
pub mod jobs;
pub mod logical;
pub mod notify;
pub mod pgdata;
pub mod repo;
pub mod repo_url;
pub mod storage;
pub mod threads;
pub mod wal;
pub mod workdir;

pub use error::Error;
pub use repo_url::RepoUrl;

/// Version of the core library (the same for the extension and the CLI).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
