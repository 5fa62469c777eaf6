//! Logical backups: `pg_dump` of one database, stored in the repository.
//!
//! # Layout
//!
//! ```text
//! clusters/<system id>/logical/<database, encoded>/<label>/dump.custom      custom format
//! clusters/<system id>/logical/<database, encoded>/<label>/dump.sql         plain format
//! clusters/<system id>/logical/<database, encoded>/<label>/dump.dir/<file>  directory format
//! clusters/<system id>/logical/<database, encoded>/<label>/backup.info(.copy)
//! ```
//!
//! The database name is percent-encoded ([`encode_database`]): every byte
//! outside `[A-Za-z0-9_.-]`, and a leading `.`, becomes `%XX`, so any name
//! PostgreSQL accepts is one valid key component and decodes back exactly.
//! The label is chosen by the caller (e.g. `20261122T101500Z-j42`, see
//! [`check_label`]).
//!
//! # Order of writes, and what a reader may trust
//!
//! The data is stored first, each object durably and atomically
//! (`Storage::put_stream`, `PutMode::Create`); `backup.info` (a checksummed
//! pair, see `repo/info.rs`) is written last, only after all data is durable.
//! A backup is therefore complete exactly when its `backup.info` is
//! readable. A directory without one is an *incomplete* dump: still running,
//! failed before cleaning up, or a deletion that was interrupted.
//! [`list_logical_backups`] skips those; [`scan_logical_backups`] reports
//! them separately, with the reason. Deletion removes `backup.info` and its
//! copy first, then the data, so an interrupted deletion never leaves a
//! valid-looking backup with missing data.
//!
//! # Running pg_dump
//!
//! [`DumpRequest::command`] builds pg_dump's argument vector (never a shell
//! command line); the connection goes in one `--dbname` conninfo string with
//! every value quoted, and no password anywhere (`--no-password`: pg_dump
//! never prompts; authentication is the server's business, e.g. peer or a
//! `.pgpass` file of the OS user).
//!
//! - custom and plain: pg_dump writes to its standard output, which streams
//!   straight into `put_stream` (no local copy) through a reader that
//!   computes the SHA-256, counts bytes into [`DumpControl::bytes`], honors
//!   [`DumpControl::cancel`], and at end of output waits for pg_dump: a
//!   non-zero exit becomes a read error, so `put_stream` stores nothing.
//! - directory: pg_dump writes into the caller's work directory (it may run
//!   `--jobs` workers); each file is then streamed into the repository under
//!   `dump.dir/`, and the work directory is removed, also on failure.
//!
//! pg_dump's standard error is read on its own thread (so a chatty pg_dump
//! never blocks on a full pipe); its last 8 KiB end up in the error message.
//! Cancellation is watched by another thread, which stops pg_dump even while
//! it produces no output (waiting for a lock, say): SIGTERM to its process
//! group (pg_dump and its parallel workers), SIGKILL 5 seconds later.
//!
//! # Threads
//!
//! This module is meant to run on a thread of its own inside a PostgreSQL
//! background worker: it uses no PostgreSQL API, never panics outside of
//! tests, and creates its helper threads with every signal blocked
//! (`crate::threads`). Child processes start with the default signal mask
//! (the standard library resets it).

mod catalog;
mod info;
mod request;
mod run;
mod stream;

pub use catalog::*;
pub use info::*;
pub use request::*;
pub use run::*;
pub use stream::*;

#[cfg(test)]
mod tests;
