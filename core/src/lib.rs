//! pg_ark_core: the part of pg_ark that needs no running PostgreSQL.
//!
//! Everything that must also work with the server down lives here, free of
//! pgrx, so that the extension (inside the server) and the `pg_ark` CLI share
//! one implementation, tested with plain `cargo test`:
//!
//! - `storage`: the backends (local, S3) and the contract they keep;
//! - `repo`: the repository format (keys, envelopes, checksummed info files,
//!   compression, repository URLs);
//! - `wal`: WAL names, push (the archive module's engine) and get (for
//!   `restore_command`, with its spool);
//! - `process`: the one runner of every program pg_ark starts (argument
//!   vector, clean environment, own process group, timeout, cancellation);
//! - `physical`: physical backups; `restore`: rebuilding them and planning
//!   recovery to a target;
//! - `logical`: pg_dump backups; `retention`: which backups expire;
//! - `schedule`: cron expressions, job kinds and retry timing;
//! - `pg`: PostgreSQL's own facts (pg_control, the server log's words);
//! - `health`, `notify`, `workdir`, `pgdata`, `threads`.
pub mod crypto;
pub mod error;
pub mod health;
pub mod http;
pub mod logical;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod pg;
pub mod pgdata;
pub mod physical;
pub mod process;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod secret_file;
pub mod storage;
pub mod threads;
pub mod tools;
pub mod version;
pub mod wal;
pub mod workdir;

pub use error::Error;
pub use repo::url::RepoUrl;

/// Version of the core library (the same for the extension and the CLI).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
