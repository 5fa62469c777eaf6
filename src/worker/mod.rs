//! The background workers: the scheduler (schedules, the queue, webhooks,
//! answering the mailbox through which SQL calls reach it) and the job
//! worker that runs one job at a time.
pub mod drill;
pub mod http;
pub mod job;
pub mod kinds;
pub mod logical;
pub mod notify;
pub mod physical;
pub mod scheduler;
pub mod tools;
pub mod verify;
