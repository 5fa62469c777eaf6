//! The catalog: the tables, views and roles of schema `ark`
//! (`catalog.sql`), and the job state machine (`jobs.rs`).
use pgrx::prelude::*;

pub mod jobs;
pub mod notifications;

// The catalog tables and roles come first: functions' grants refer to them.
extension_sql_file!("catalog.sql", name = "catalog", bootstrap);
