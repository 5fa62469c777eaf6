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
//! until promotion (and a server that goes back into recovery has no
//! scheduler: the job queue is the primary's).
//!
//! While the extension in `ark.database` is at another version than the
//! library (a new library installed, `ALTER EXTENSION pg_ark UPDATE` not run
//! yet), a pass does nothing but refuse the mailbox's requests: no schedule
//! or job runs on a catalog of another version.
//!
//! Each pass ([`tick`]), in short transactions of its own:
//! 1. serves the enqueue mailbox (`ark.backup()`);
//! 2. recovers jobs left `running` by a worker that is gone (killed, or the
//!    server crashed): retried with backoff, or failed when out of attempts;
//! 3. queues each due schedule run exactly once: the job insert (unique on
//!    schedule and due time) and the schedule's new `next_run` commit
//!    together; after downtime a schedule runs once, not once per missed
//!    period;
//! 4. starts job workers (dynamic background workers) for runnable jobs, up
//!    to `ark.max_parallel_jobs`;
//! 5. hands due webhook notifications to a delivery thread and records the
//!    outcome of the previous batch;
//! 6. prunes finished jobs older than `ark.job_history_days`.
//!
//! An error in a pass is logged and the pass is retried on the next wake; it
//! never ends the worker.
use crate::catalog::jobs::{pause_after_restore, prune_history, recover_orphans};
use crate::mailbox;
use crate::server::{next_run, now_epoch};
use crate::worker::{job, notify};
use crate::{settings, xact};
use pg_ark_core::job_sql;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;
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
    // SIGINT (pg_cancel_backend) only wakes the scheduler: without a handler
    // of ours it would raise an ERROR and end the process.
    BackgroundWorker::attach_signal_handlers(
        SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM | SignalWakeFlags::SIGINT,
    );
    let database = settings::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // A row lock held by an idle session must never stall the scheduler.
    report(
        "set lock_timeout",
        xact::run(|| {
            Spi::run("SELECT pg_catalog.set_config('lock_timeout', '5s', false)")?;
            Ok(())
        }),
    );
    // SAFETY: reads the worker's own pid.
    mailbox::set_scheduler_pid(unsafe { pg_sys::MyProcPid });
    log!(
        "pg_ark scheduler started (database \"{}\", naptime {}s)",
        database,
        settings::scheduler_naptime().as_secs()
    );

    report("sweep the work directory", xact::run(sweep_work_directory));

    let mut state = State::default();
    let mut timezone = settings::cron_timezone();
    let mut sleep = Duration::ZERO;
    while BackgroundWorker::wait_latch(Some(sleep)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: on the worker's own thread, outside any transaction.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            log!(
                "pg_ark scheduler reloaded its configuration (ark.scheduler_naptime = {}s)",
                settings::scheduler_naptime().as_secs()
            );
            let tz = settings::cron_timezone();
            if tz != timezone {
                timezone = tz;
                state.recompute_schedules = true;
            }
        }
        let _ = BackgroundWorker::sigint_received();
        sleep = tick(&mut state);
    }

    mailbox::set_scheduler_pid(0);
    log!("pg_ark scheduler shutting down");
    // Exit code 1: the postmaster restarts the worker after RESTART_DELAY
    // unless the whole server is shutting down (exit 0 would unregister it).
    // SAFETY: proc_exit runs the normal exit callbacks and does not return.
    unsafe { pg_sys::proc_exit(1) };
}

/// What the scheduler keeps between passes.
#[derive(Default)]
pub struct State {
    workers: Vec<DynamicBackgroundWorker>,
    delivery: Option<notify::Delivery>,
    recompute_schedules: bool,
    installed_warned: bool,
    version_warned: bool,
    no_slot_warned: bool,
    last_prune: Option<std::time::Instant>,
}

/// One pass; returns how long to sleep before the next one.
fn tick(st: &mut State) -> Duration {
    let naptime = settings::scheduler_naptime();
    // SAFETY: reads backend state on the worker's thread.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return naptime;
    }
    let installed = xact::run(crate::catalog::installed_version);
    if let Ok(Some(version)) = &installed {
        if let Some(m) =
            pg_ark_core::version::CatalogMismatch::check(version, crate::catalog::VERSION)
        {
            for req in mailbox::take_pending() {
                mailbox::answer(&req, Err(format!("{}: {}", m.message(), m.remedy())));
            }
            if !st.version_warned {
                warning!(
                    "pg_ark scheduler waits in database \"{}\" (ark.database): {}: {}",
                    settings::database(),
                    m.message(),
                    m.remedy()
                );
                st.version_warned = true;
            }
            return naptime;
        }
        if st.version_warned {
            log!(
                "pg_ark scheduler: extension \"pg_ark\" is at version {} now; schedules and jobs run",
                version
            );
            st.version_warned = false;
        }
    }
    if !matches!(installed, Ok(Some(_))) {
        for req in mailbox::take_pending() {
            mailbox::answer(
                &req,
                Err(format!(
                    "the pg_ark extension is not installed in database \"{}\" (ark.database)",
                    settings::database()
                )),
            );
        }
        if !st.installed_warned {
            log!(
                "pg_ark scheduler: the extension is not installed in database \"{}\"; waiting for CREATE EXTENSION pg_ark",
                settings::database()
            );
            st.installed_warned = true;
        }
        return naptime;
    }
    st.installed_warned = false;

    serve_mailbox();
    // After pg_ark restore, nothing is queued until the pause is in place.
    let paused = match xact::run(pause_after_restore) {
        Ok(Some(dir)) => {
            report(
                "record the pause after a restore",
                pg_ark_core::restore::record_schedules_paused(&dir).map_err(|e| e.to_string()),
            );
            true
        }
        Ok(None) => true,
        Err(e) => {
            report("pause schedules after a restore", Err(e));
            false
        }
    };
    report("recover interrupted jobs", xact::run(recover_orphans));
    if st.recompute_schedules {
        st.recompute_schedules = false;
        report("recompute schedules", xact::run(recompute_schedules));
    }
    if paused {
        report("queue due schedules", xact::run(enqueue_due));
        start_workers(st);
    }
    notify::pump(&mut st.delivery);
    if st
        .last_prune
        .is_none_or(|t| t.elapsed() > Duration::from_secs(600))
    {
        st.last_prune = Some(std::time::Instant::now());
        report("prune job history", xact::run(prune_history));
    }
    // Sleep until the next due thing, at most the naptime.
    let notifications = settings::notify_url().is_some() && st.delivery.is_none();
    let until_due = xact::run(|| seconds_until_due(notifications))
        .ok()
        .flatten();
    match until_due {
        Some(s) => naptime.min(Duration::from_secs_f64(s.clamp(0.1, 3600.0))),
        None => naptime,
    }
    .min(if st.delivery.is_some() {
        Duration::from_millis(500)
    } else {
        naptime
    })
}

/// Remove what jobs whose worker died left staged in `ark.work_directory`
/// (a job still running, perhaps under a previous scheduler, keeps its own).
fn sweep_work_directory() -> Result<(), crate::error::ArkError> {
    let installed = Spi::get_one::<bool>("SELECT to_regclass('ark.jobs') IS NOT NULL")?;
    if installed != Some(true) {
        return Ok(());
    }
    let dir = settings::work_directory()?;
    let mut running = Vec::new();
    Spi::connect(|c| {
        // Running by the catalog and by a live worker: after a crash the
        // catalog still says running until the orphans are recovered.
        for r in c.select(
            concat!(
                "SELECT j.id FROM ark.jobs j
              WHERE j.state = ",
                job_sql!(running),
                "
                AND j.worker_pid IN (SELECT pid FROM pg_catalog.pg_stat_activity)"
            ),
            None,
            &[],
        )? {
            if let Some(id) = r.get::<i64>(1)? {
                running.push(id);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })?;
    let data = std::path::PathBuf::from(
        Spi::get_one::<String>("SELECT current_setting('data_directory')")?.unwrap_or_default(),
    );
    let protected = [data.clone(), data.join("pg_wal")];
    for p in pg_ark_core::workdir::sweep(&dir, &protected, |id| running.contains(&id)) {
        log!(
            "pg_ark removed \"{}\", left by a job that did not finish",
            p.display()
        );
    }
    Ok(())
}

fn report(what: &str, r: Result<(), impl std::fmt::Display>) {
    if let Err(e) = r {
        warning!("pg_ark scheduler could not {}: {}", what, e);
    }
}

/// Insert the jobs `ark.backup()` asked for, each in its own transaction,
/// and answer the callers.
fn serve_mailbox() {
    for req in mailbox::take_pending() {
        let result = xact::run(|| {
            let options: Value = serde_json::from_str(&req.options).unwrap_or(Value::Null);
            crate::catalog::jobs::insert_job(&req.kind, &options, None, Some(req.role))?.ok_or(
                crate::error::ArkError::EnqueueFailed {
                    message: "the job row was not inserted".into(),
                },
            )
        });
        mailbox::answer(&req, result.map_err(|e| e.message));
    }
}

/// After ark.cron_timezone changed: every schedule's next run again.
fn recompute_schedules() -> Result<(), crate::error::ArkError> {
    let rows = Spi::connect(|c| {
        let t = c.select("SELECT id, cron FROM ark.schedules", None, &[])?;
        let mut out = Vec::new();
        for r in t {
            out.push((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<String>(2)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?;
    let now = now_epoch();
    for (id, cron) in rows {
        let next = match pg_ark_core::schedule::cron::CronSchedule::parse(&cron) {
            Ok(s) => next_run(&s, now)?,
            Err(_) => None,
        };
        Spi::run_with_args(
            "UPDATE ark.schedules SET next_run = to_timestamp($2::float8) WHERE id = $1",
            &[id.into(), next.map(|n| n as f64).into()],
        )?;
    }
    Ok(())
}

/// Queue every due schedule run, once.
fn enqueue_due() -> Result<(), crate::error::ArkError> {
    let due = Spi::connect_mut(|c| {
        let t = c.update(
            "SELECT id, name, cron, kind, options, extract(epoch FROM next_run)::float8,
                    created_by::oid
               FROM ark.schedules
              WHERE enabled AND paused IS NULL AND next_run <= now()
              ORDER BY next_run
              FOR UPDATE SKIP LOCKED",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
                r.get::<JsonB>(5)?.map(|j| j.0).unwrap_or(Value::Null),
                r.get::<f64>(6)?.unwrap_or(0.0),
                r.get::<pg_sys::Oid>(7)?,
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?;
    let now = now_epoch();
    for (id, name, cron, kind, options, due_at, created_by) in due {
        // Rows can be edited by hand: a bad one disables its schedule instead
        // of blocking every other one.
        let checked = pg_ark_core::schedule::cron::CronSchedule::parse(&cron)
            .map_err(|e| e.to_string())
            .and_then(|sched| {
                pg_ark_core::schedule::jobs::JobKind::parse(&kind)
                    .and_then(|k| {
                        pg_ark_core::schedule::jobs::validate(k, &options, &crate::server::libdir())
                    })
                    .map(|_| sched)
                    .map_err(|e| e.to_string())
            });
        let sched = match checked {
            Ok(sched) => sched,
            Err(e) => {
                warning!("pg_ark schedule \"{}\" is disabled: {}", name, e);
                Spi::run_with_args(
                    "UPDATE ark.schedules SET enabled = false WHERE id = $1",
                    &[id.into()],
                )?;
                continue;
            }
        };
        // The next run is the first one after *now*: missed periods collapse
        // into this one run.
        let next = next_run(&sched, now)?;
        let job =
            crate::catalog::jobs::insert_job(&kind, &options, Some((&name, due_at)), created_by)?;
        Spi::run_with_args(
            "UPDATE ark.schedules
                SET next_run = to_timestamp($2::float8), last_run = now(),
                    last_job_id = coalesce($3, last_job_id)
              WHERE id = $1",
            &[id.into(), next.map(|n| n as f64).into(), job.into()],
        )?;
        if let Some(job) = job {
            log!("pg_ark schedule \"{}\" queued job {} ({})", name, job, kind);
        }
    }
    Ok(())
}

/// Seconds until the next schedule, job attempt or notification comes due
/// (future ones only: what is due now was handled by this pass, or waits for
/// a worker slot, and a worker's exit wakes the scheduler anyway).
fn seconds_until_due(notifications: bool) -> Result<Option<f64>, crate::error::ArkError> {
    Ok(Spi::get_one_with_args::<f64>(
        concat!(
            "SELECT extract(epoch FROM least(
                    (SELECT min(next_run) FROM ark.schedules
                      WHERE enabled AND paused IS NULL AND next_run > clock_timestamp()),
                    (SELECT min(next_attempt_at) FROM ark.jobs
                      WHERE state IN ",
            job_sql!(runnable),
            " AND next_attempt_at > clock_timestamp()),
                    (SELECT min(next_attempt_at) FROM ark.notifications
                      WHERE $1 AND state = 'pending' AND next_attempt_at > clock_timestamp())
                ) - clock_timestamp())::float8"
        ),
        &[notifications.into()],
    )?)
}

/// Start job workers for runnable jobs, up to ark.max_parallel_jobs.
fn start_workers(st: &mut State) {
    use pgrx::bgworkers::BackgroundWorkerStatus as S;
    st.workers
        .retain(|w| matches!(w.pid(), Ok(_) | Err(S::NotYetStarted)));
    // Workers of a previous scheduler (restarted) count too.
    let (runnable, running) = xact::run(|| {
        let (r, w) = Spi::get_two_with_args::<i64, i64>(
            concat!(
                "SELECT (SELECT count(*) FROM ark.jobs
                      WHERE ",
                job_sql!(due),
                "),
                    (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = $1)"
            ),
            &[job::WORKER_TYPE.into()],
        )?;
        Ok((r.unwrap_or(0), w.unwrap_or(0)))
    })
    .unwrap_or((0, 0));
    let live = st.workers.len().max(usize::try_from(running).unwrap_or(0));
    let max = usize::try_from(settings::MAX_PARALLEL_JOBS.get()).unwrap_or(1);
    let wanted = usize::try_from(runnable)
        .unwrap_or(0)
        .min(max.saturating_sub(live));
    for _ in 0..wanted {
        match job::launch() {
            Ok(w) => {
                st.workers.push(w);
                st.no_slot_warned = false;
            }
            Err(()) => {
                if !st.no_slot_warned {
                    warning!(
                        "pg_ark could not start a job worker: no background worker slot is free"
                    );
                    st.no_slot_warned = true;
                }
                break;
            }
        }
    }
}
