//! The runner of each job kind: the extension's half of the kinds table
//! (`pg_ark_core::schedule::jobs::KINDS`, which holds each kind's name,
//! options and conflict key). The `match` is exhaustive, so a new kind does
//! not compile until it has its runner here.
use crate::catalog::jobs::{Job, Outcome};
use crate::worker::job::JOB_MEMORY;
use crate::worker::{drill, logical, physical, tools, verify};
use pg_ark_core::memory;
use pg_ark_core::schedule::jobs::JobKind;
use pg_ark_core::schedule::lifecycle::JobFailure;
use serde_json::{json, Value};

/// Run a claimed job to its outcome. A succeeded job's result reports the
/// worker's memory while it ran: `memory.rss_anon_peak_kib` (private
/// memory, sampled while the work ran) and, where the kernel let the peak
/// be reset at the job's start, `memory.hwm_kib` (the resident set's peak,
/// shared buffers touched included).
pub fn run(job: &Job) -> Outcome {
    // Without the reset, VmHWM would be the worker's peak over every job
    // it ran: then it is not reported.
    let reset = memory::reset_peak();
    JOB_MEMORY.reset();
    JOB_MEMORY.sample();
    let outcome = run_kind(job);
    match outcome {
        Outcome::Succeeded(Value::Object(mut result)) => {
            if let Some(now) = JOB_MEMORY.sample() {
                let mut doc = json!({"rss_anon_peak_kib": JOB_MEMORY.peak_kib()});
                if reset {
                    doc["hwm_kib"] = json!(now.hwm_kib);
                }
                result.insert("memory".into(), doc);
            }
            Outcome::Succeeded(Value::Object(result))
        }
        other => other,
    }
}

fn run_kind(job: &Job) -> Outcome {
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
        JobKind::Pgbackrest | JobKind::Barman | JobKind::PgBasebackup => tools::run_tool(job),
    }
}
