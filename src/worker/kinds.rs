//! The runner of each job kind: the extension's half of the kinds table
//! (`pg_ark_core::schedule::jobs::KINDS`, which holds each kind's name,
//! options and conflict key). The `match` is exhaustive, so a new kind does
//! not compile until it has its runner here.
use crate::catalog::jobs::{Job, Outcome};
use crate::worker::{drill, logical, physical, verify};
use pg_ark_core::schedule::jobs::JobKind;
use pg_ark_core::schedule::lifecycle::JobFailure;

/// Run a claimed job to its outcome.
pub fn run(job: &Job) -> Outcome {
    match job.kind {
        JobKind::Logical => logical::run_logical(job),
        JobKind::Expire => logical::run_expire(job),
        JobKind::Full | JobKind::Incremental | JobKind::Differential => {
            match job.kind.backup_kind() {
                Some(kind) => physical::run_physical(job, kind),
                None => Outcome::Failed(JobFailure::permanent(format!(
                    "{} is not a physical backup",
                    job.kind
                ))),
            }
        }
        JobKind::Verify => verify::run_verify(job),
        JobKind::Drill => drill::run_drill(job),
    }
}
