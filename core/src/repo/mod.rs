//! The repository format: how pg_ark lays out what it stores, so that a
//! repository describes itself and a restore needs nothing else.
//!
//! Every key is built in [`layout`], which shows the whole tree.
//!
//! Every stored file is wrapped in an envelope (`envelope.rs`): compression
//! algorithm, original length and digest (BLAKE3; SHA-256 in version 1) of
//! the original. Descriptors are
//! checksummed pairs (`info.rs`).
pub mod compress;
pub mod config;
pub mod envelope;
pub mod generations;
pub mod info;
pub mod layout;
pub mod repository;
pub mod url;

pub use repository::{ClusterRepo, PushOutcome, Repository};
