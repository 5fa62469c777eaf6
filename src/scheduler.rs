//! The `pg_ark scheduler` background worker.
//!
//! Registered from `_PG_init` when pg_ark is preloaded. It connects to
//! `ark.database`, names itself in `pg_stat_activity` (backend_type
//! `pg_ark scheduler`), and loops on its latch:
//! - SIGHUP: re-read the configuration file and log the settings in force;
//! - SIGTERM (fast shutdown, `pg_terminate_backend`): leave the loop and exit
//!   with code 1, so the postmaster restarts it unless the server is stopping;
//! - postmaster death: exit.
//!
//! It starts only once recovery is finished, so on a standby it does nothing
//! until promotion. Schedules and the job queue plug into `tick()`.
use crate::settings;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::time::Duration;

pub const WORKER_NAME: &str = "pg_ark scheduler";
/// How long the postmaster waits before restarting a worker that exited.
const RESTART_DELAY: Duration = Duration::from_secs(5);

/// Ask the postmaster to start the scheduler. Only valid during
/// `shared_preload_libraries` processing.
pub fn register() {
    BackgroundWorkerBuilder::new(WORKER_NAME)
        .set_type(WORKER_NAME)
        .set_library("pg_ark")
        .set_function("ark_scheduler_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART_DELAY))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn ark_scheduler_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = settings::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!(
        "pg_ark scheduler started (database \"{}\", naptime {}s)",
        database,
        settings::scheduler_naptime().as_secs()
    );

    while BackgroundWorker::wait_latch(Some(settings::scheduler_naptime())) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: on the worker's own thread, outside any transaction.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            log!(
                "pg_ark scheduler reloaded its configuration (ark.scheduler_naptime = {}s)",
                settings::scheduler_naptime().as_secs()
            );
        }
        tick();
    }

    log!("pg_ark scheduler shutting down");
    // Exit code 1: the postmaster restarts the worker after RESTART_DELAY
    // unless the whole server is shutting down (exit 0 would unregister it).
    // SAFETY: proc_exit runs the normal exit callbacks and does not return.
    unsafe { pg_sys::proc_exit(1) };
}

/// One pass of the scheduler. The schedule and job-queue issue fills it in;
/// today a pass only reports that the worker is alive.
fn tick() {
    pgrx::debug1!("pg_ark scheduler pass");
}
