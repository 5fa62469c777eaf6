//! Job workers: dynamic background workers that run queued jobs.
//!
//! The scheduler starts one per runnable job, up to `ark.max_parallel_jobs`.
//! A worker claims jobs one at a time until none is runnable, then exits:
//!
//! - **Claim**: one `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)`,
//!   so a job runs exactly once. Claims take a transaction-level advisory
//!   lock first, so the check "no running job has my conflict key" (two
//!   physical backups never run together) cannot race with another claim.
//! - **Run**: the work itself (pg_dump, storage I/O) runs on a thread of its
//!   own with every signal blocked and never calls PostgreSQL. The worker's
//!   thread polls it, publishes progress, and watches for `ark.cancel()` and
//!   for SIGTERM.
//! - **End**: succeeded (result recorded); after a transient failure,
//!   retrying after `base × 2^(attempt-1)` capped, failed when out of
//!   attempts; after a permanent one, failed at once; cancelled; or, on
//!   SIGTERM, put back as retrying without using up an attempt (see
//!   `pg_ark_core::schedule::lifecycle`).
//!
//! A worker that dies mid-job (kill -9, crash) leaves its job `running`; the
//! scheduler notices that the worker's pid is gone and retries or fails it.
use crate::catalog::jobs::{claim, finish, Job, Outcome};
use crate::{settings, xact};
use pg_ark_core::schedule::lifecycle::JobFailure;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::{JsonB, PgMemoryContexts};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `backend_type` of job workers in `pg_stat_activity`.
pub use crate::server::JOB_WORKER_TYPE as WORKER_TYPE;

/// Start a job worker (from the scheduler).
pub fn launch() -> Result<DynamicBackgroundWorker, ()> {
    // The handle must outlive the current transaction's memory.
    // SAFETY: switches back to the current context when the closure returns.
    unsafe {
        PgMemoryContexts::TopMemoryContext.switch_to(|_| {
            BackgroundWorkerBuilder::new("pg_ark job worker")
                .set_type(WORKER_TYPE)
                .set_library("pg_ark")
                .set_function("ark_job_worker_main")
                .enable_spi_access()
                .set_start_time(BgWorkerStartTime::RecoveryFinished)
                .set_restart_time(None)
                .set_notify_pid(pg_sys::MyProcPid)
                .load_dynamic()
                .map_err(|_| ())
        })
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn ark_job_worker_main(_arg: pg_sys::Datum) {
    // SIGINT (pg_cancel_backend) cancels the running job instead of raising
    // an ERROR that would end the worker.
    BackgroundWorker::attach_signal_handlers(
        SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM | SignalWakeFlags::SIGINT,
    );
    BackgroundWorker::connect_worker_to_spi(Some(&settings::database()), None);
    loop {
        if shutdown_requested() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: on the worker's own thread, outside any transaction.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let job = match xact::run(claim) {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(e) => {
                warning!("pg_ark job worker could not claim a job: {}", e);
                break;
            }
        };
        log!(
            "pg_ark job {} ({}) started, attempt {} of {}",
            job.id,
            job.kind,
            job.attempts,
            job.max_attempts
        );
        let outcome = crate::worker::kinds::run(&job);
        if let Err(e) = xact::run(|| finish(&job, &outcome)) {
            warning!("pg_ark could not record the end of job {}: {}", job.id, e);
        }
    }
    // SAFETY: normal exit of a dynamic worker (never restarted).
    unsafe { pg_sys::proc_exit(0) };
}

/// The peak private memory of the job in progress: `supervise` samples it
/// while the work runs (`worker::kinds::run` reports it).
pub static JOB_MEMORY: pg_ark_core::memory::PeakSampler = pg_ark_core::memory::PeakSampler::new();

/// Set when the postmaster died: stop everything.
static POSTMASTER_GONE: AtomicBool = AtomicBool::new(false);

/// SIGTERM arrived (pgrx's handler sets ShutdownRequestPending, which,
/// unlike `sigterm_received()`, is not reset by reading it), or the
/// postmaster is gone.
pub(crate) fn shutdown_requested() -> bool {
    // SAFETY: a flag the signal handler sets; read on the worker's thread.
    let requested = unsafe { (&raw const pg_sys::ShutdownRequestPending).read_volatile() != 0 };
    requested || POSTMASTER_GONE.load(Ordering::SeqCst)
}

/// Shared between a job's work thread and the worker's thread.
#[derive(Default)]
pub struct Control {
    /// Set by the worker: stop as soon as possible.
    pub stop: Arc<AtomicBool>,
    /// Set by the work thread: what it is doing, for `ark.jobs.progress`.
    pub progress: Mutex<Value>,
    /// Bytes stored so far by the part in progress.
    pub bytes: Arc<AtomicU64>,
}

/// Why the work was stopped early.
pub enum Stopped {
    Cancelled,
    Interrupted,
    /// The work thread panicked: a defect, a failed attempt not retried.
    Broken(String),
    /// The work thread could not start (the system out of threads or
    /// memory): a failed attempt that may succeed later.
    NoThread(String),
}

/// Run `work` on a thread with signals blocked while this (the worker's)
/// thread watches: every second it publishes `progress` and checks for
/// `ark.cancel()`; SIGTERM stops the work. `on_event` runs on this thread
/// for each event the work sends (to record finished parts in the catalog).
pub fn supervise<T: Send + 'static, E: Send + 'static>(
    job: &Job,
    work: impl FnOnce(Arc<Control>, std::sync::mpsc::Sender<E>) -> T + Send + 'static,
    mut on_event: impl FnMut(E),
) -> Result<T, Stopped> {
    let control = Arc::new(Control::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let c2 = Arc::clone(&control);
    let handle = match pg_ark_core::threads::with_signals_blocked(|| {
        std::thread::Builder::new()
            .name(format!("pg_ark-job-{}", job.id))
            .spawn(move || work(c2, tx))
    }) {
        Ok(h) => h,
        Err(e) => {
            return Err(Stopped::NoThread(format!("could not start a thread: {e}")));
        }
    };
    let mut stopped = None;
    let started = Instant::now();
    let mut last_check = Instant::now();
    loop {
        while let Ok(ev) = rx.try_recv() {
            on_event(ev);
        }
        JOB_MEMORY.sample();
        if handle.is_finished() {
            break;
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(20))) && !shutdown_requested() {
            // wait_latch returns false for SIGTERM (seen below) or the
            // postmaster's death.
            POSTMASTER_GONE.store(true, Ordering::SeqCst);
        }
        if shutdown_requested() && stopped.is_none() {
            stopped = Some(Stopped::Interrupted);
            control.stop.store(true, Ordering::SeqCst);
        }
        if BackgroundWorker::sigint_received() && stopped.is_none() {
            log!("pg_ark job {}: cancelled by pg_cancel_backend()", job.id);
            stopped = Some(Stopped::Cancelled);
            control.stop.store(true, Ordering::SeqCst);
        }
        if stopped.is_none() && last_check.elapsed() >= Duration::from_secs(1) {
            last_check = Instant::now();
            let mut progress = control
                .progress
                .lock()
                .map(|p| p.clone())
                .unwrap_or(Value::Null);
            if let Value::Object(map) = &mut progress {
                map.insert("bytes".into(), json!(control.bytes.load(Ordering::Relaxed)));
                map.insert("elapsed_seconds".into(), json!(started.elapsed().as_secs()));
            }
            let cancel = xact::run(|| {
                Ok(Spi::get_one_with_args::<bool>(
                    "UPDATE ark.jobs SET progress = $2 WHERE id = $1 RETURNING cancel_requested",
                    &[job.id.into(), JsonB(progress).into()],
                )?
                .unwrap_or(false))
            });
            if cancel == Ok(true) {
                stopped = Some(Stopped::Cancelled);
                control.stop.store(true, Ordering::SeqCst);
            }
        }
    }
    while let Ok(ev) = rx.try_recv() {
        on_event(ev);
    }
    let result = handle.join();
    match (stopped, result) {
        (Some(s), _) => Err(s),
        (None, Ok(v)) => Ok(v),
        (None, Err(_)) => Err(Stopped::Broken("the job's work thread panicked".into())),
    }
}

/// The outcome for a work result.
pub fn outcome<E: Into<JobFailure>>(r: Result<Result<Value, E>, Stopped>) -> Outcome {
    match r {
        Ok(Ok(v)) => Outcome::Succeeded(v),
        // A fast shutdown signals this worker and pg_dump's backend
        // together: the work can fail (its connection cut) before the
        // supervisor saw the SIGTERM. A failure during shutdown is an
        // interruption, not an attempt used up; work that finished anyway
        // keeps its result.
        Ok(Err(_)) if shutdown_requested() => Outcome::Interrupted,
        Ok(Err(e)) => Outcome::Failed(e.into()),
        Err(Stopped::Cancelled) => Outcome::Cancelled,
        Err(Stopped::Interrupted) => Outcome::Interrupted,
        // A panic is a defect, not weather; a thread that could not start is.
        Err(Stopped::Broken(e)) => Outcome::Failed(JobFailure::permanent(e)),
        Err(Stopped::NoThread(e)) => Outcome::Failed(JobFailure::transient(e)),
    }
}

/// The outcome for work stopped early.
pub fn stopped(s: Stopped) -> Outcome {
    outcome::<JobFailure>(Err(s))
}

/// Progress document helper.
pub fn set_progress(control: &Control, doc: Value) {
    if let Ok(mut p) = control.progress.lock() {
        *p = doc;
    }
}
