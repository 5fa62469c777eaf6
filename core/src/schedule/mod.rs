//! What runs when: cron expressions, job kinds with their options, and
//! retry timing. The job queue itself lives in the extension's catalog.
pub mod cron;
pub mod jobs;
