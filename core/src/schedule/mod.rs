//! What runs when: cron expressions, job kinds with their options, and the
//! job lifecycle (states, failure classes, backoff). The job queue itself
//! lives in the extension's catalog, which applies these decisions.
pub mod cron;
pub mod jobs;
pub mod lifecycle;
