//! The `pg_ark http` background worker: `GET /health` and `GET /metrics`
//! on `ark.http_listen`.
//!
//! Registered from `_PG_init` only when `ark.http_listen` is set (it is a
//! `postmaster` setting). It is a worker of its own, so serving a scrape
//! never delays the scheduler. Its main thread connects to `ark.database`
//! and answers every request in a short transaction of its own, which
//! only reads, its queries limited to 4 s; an I/O thread (`pg_ark_core::http`)
//! accepts and parses the requests and never calls PostgreSQL. The I/O
//! thread wakes the main thread with a `SIGUSR1` to this process, whose
//! PostgreSQL handler (`procsignal_sigusr1_handler`) sets the worker's
//! latch; the I/O thread blocks every signal, so the signal is taken on the
//! main thread.
//!
//! Signals: SIGHUP re-reads the configuration and the token file; SIGTERM
//! ends the worker (the postmaster restarts it unless the server is
//! stopping).
//!
//! Without a usable listen address, or off loopback without a usable token
//! file, the worker logs why and does not listen; a reload tries the token
//! file again.
use crate::error::ArkError;
use crate::repo::RepoTarget;
use crate::settings;
use crate::xact;
use pg_ark_core::http::{self, Answer, Event, Route};
use pg_ark_core::metrics;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

pub const WORKER_NAME: &str = "pg_ark http";
const RESTART_DELAY: Duration = Duration::from_secs(5);
/// How often the dashboard's view of the repository's WAL is listed again.
const WAL_LISTING: Duration = Duration::from_secs(600);
/// A listing older than this is done again when the dashboard asks.
const WAL_FRESH_SECONDS: i64 = 120;

/// Ask the postmaster to start the worker when `ark.http_listen` is set.
/// Only valid during `shared_preload_libraries` processing.
pub fn register() {
    if settings::http_listen().is_none() {
        return;
    }
    BackgroundWorkerBuilder::new(WORKER_NAME)
        .set_type(WORKER_NAME)
        .set_library("pg_ark")
        .set_function("ark_http_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART_DELAY))
        .load();
}

/// The listen address, or why there is none.
fn listen_address() -> Result<SocketAddr, String> {
    http::parse_listen(&settings::http_listen().unwrap_or_default())
}

/// The token requests must carry: from `ark.http_token_file` when set; an
/// address other than loopback requires one.
fn token(addr: &SocketAddr) -> Result<Option<String>, String> {
    match settings::http_token_file() {
        Some(path) => pg_ark_core::secret_file::read_token(
            std::path::Path::new(&path),
            settings::data_directory().as_deref(),
        )
        .map(Some)
        .map_err(|reason| format!("ark.http_token_file \"{path}\" cannot be used: {reason}")),
        None if http::is_loopback(addr) => Ok(None),
        None => Err(format!(
            "ark.http_listen {addr} is not a loopback address, and ark.http_token_file is not set: an endpoint off loopback needs a bearer token"
        )),
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn ark_http_main(_arg: pg_sys::Datum) {
    // SIGINT keeps PostgreSQL's handler (StatementCancelHandler): the
    // answers' statement timer cancels through it. A cancel while idle is
    // dropped by `wait`.
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(&settings::database()), None);
    if let Err(e) = xact::run(|| {
        // A lock held by an idle session must not hold an answer.
        Spi::run("SELECT pg_catalog.set_config('lock_timeout', '2s', false)")?;
        Ok(())
    }) {
        warning!("pg_ark http worker could not set its lock timeout: {}", e);
    }
    let addr = match listen_address() {
        Ok(a) => a,
        Err(reason) => {
            warning!("pg_ark http worker does not listen: {}", reason);
            // Exit code 0: not restarted; fixing the setting needs a
            // restart anyway.
            // SAFETY: proc_exit runs the exit callbacks and does not return
            // (its binding says so on some majors only).
            unsafe { pg_sys::proc_exit(0) };
            #[allow(unreachable_code)]
            return;
        }
    };
    let shared_token: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let (to_main, events) = mpsc::sync_channel::<Event>(http::QUEUE);
    let mut server: Option<http::Server> = None;
    let try_start = |server: &mut Option<http::Server>| match token(&addr) {
        Ok(t) => {
            if let Ok(mut slot) = shared_token.lock() {
                *slot = t;
            }
            if server.is_none() {
                let config = http::Config {
                    listen: addr,
                    token: shared_token.clone(),
                };
                match http::start(config, to_main.clone(), http::wake_postgres_main_thread) {
                    Ok(s) => *server = Some(s),
                    Err(e) => warning!("pg_ark http worker could not start its I/O thread: {}", e),
                }
            }
        }
        Err(reason) => {
            if server.is_some() {
                // Keep serving with the token in force; say why the new one
                // was not taken.
                warning!("pg_ark http worker keeps its token: {}", reason);
            } else {
                warning!("pg_ark http worker does not listen: {}", reason);
            }
        }
    };
    try_start(&mut server);
    // The repository's WAL, for the dashboard, listed by a thread of its
    // own; the repository is read here (settings) and again on reload.
    let repo_target = || xact::run(RepoTarget::current).map_err(|e| e.message);
    let target: Arc<Mutex<Result<RepoTarget, String>>> = Arc::new(Mutex::new(repo_target()));
    let limit = settings::archive_timeout();
    let wal = {
        let target = target.clone();
        http::watch_wal(
            move || {
                let t = target
                    .lock()
                    .map_err(|_| "the repository setting is unreadable".to_string())?
                    .clone()?;
                t.open_to_read(limit).map_err(|e| e.to_string())
            },
            WAL_LISTING,
        )
    };
    let wal = match wal {
        Ok(w) => Some(w),
        Err(e) => {
            warning!(
                "pg_ark http worker could not start its WAL listing thread: {}",
                e
            );
            None
        }
    };

    while wait() {
        if BackgroundWorker::sighup_received() {
            // SAFETY: on the worker's own thread, outside any transaction.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            try_start(&mut server);
            let now = repo_target();
            if let Ok(mut t) = target.lock() {
                *t = now;
            }
            if let Some(w) = &wal {
                w.poke();
            }
        }
        while let Ok(event) = events.try_recv() {
            match event {
                Event::Log(line) => log!("pg_ark http worker: {}", line),
                // The I/O thread answered 503 already (its deadline passed)
                // or the client is gone: nobody waits for this answer.
                Event::Request(req) if req.is_abandoned() => {}
                Event::Request(req) => {
                    let answer = serve(&req.route, wal.as_ref());
                    req.answer(answer);
                }
            }
        }
    }
    log!("pg_ark http worker shutting down");
    // SAFETY: proc_exit runs the normal exit callbacks and does not return.
    unsafe { pg_sys::proc_exit(1) };
}

/// Wait for the latch, or a second (a SIGTERM whose wake-up an answer's
/// lock wait consumed is seen within it); `false` when the worker must
/// stop. A cancel while idle (`pg_cancel_backend()`, or an answer's timer
/// that fired after its last check) has nothing to cancel: it is dropped
/// here, so it never ends the worker.
fn wait() -> bool {
    // SAFETY: the worker's own latch, on its own thread; clearing the
    // cancel flag is what ProcessInterrupts itself does.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            1000,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        // Interrupts other than a cancel are served (a ProcSignal barrier
        // must not wait for the next request); a cancel is held off
        // (HOLD_CANCEL_INTERRUPTS) and dropped.
        pg_sys::QueryCancelHoldoffCount += 1;
    }
    pgrx::check_for_interrupts!();
    // SAFETY: as above; RESUME_CANCEL_INTERRUPTS, then the cancel dropped.
    unsafe {
        pg_sys::QueryCancelHoldoffCount -= 1;
        pg_sys::QueryCancelPending = 0;
    }
    !BackgroundWorker::sigterm_received()
}

// utils/timeout.h, which pgrx 0.18 does not bind. STATEMENT_TIMEOUT is the
// fourth TimeoutId (3) in PostgreSQL 15, 17 and 18.
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;
unsafe extern "C-unwind" {
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
}

/// Arm (`Some`) or disarm (`None`) the statement timer, through pgrx's
/// guard (an ERROR in them becomes a Rust panic, not a longjmp).
fn statement_timer(ms: Option<std::ffi::c_int>) {
    // SAFETY: on the worker's own thread; the timeouts were registered
    // when it connected to its database.
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| match ms {
            Some(ms) => enable_timeout_after(STATEMENT_TIMEOUT, ms),
            None => disable_timeout(STATEMENT_TIMEOUT, false),
        })
    }
}

/// The longest an answer's queries may run: within the I/O thread's
/// deadline. SPI in a background worker never arms `statement_timeout`
/// (only the backend's command loop does), so the worker arms the timer
/// itself. When it fires, PostgreSQL's handler sends this process a
/// SIGINT, and the next interrupt check raises "canceling statement due to
/// statement timeout", which the answer's transaction catches.
const ANSWER_TIMEOUT_MS: std::ffi::c_int = 4000;

/// The answer to one request, from a transaction of its own.
fn serve(route: &Route, wal: Option<&http::WalWatch>) -> Answer {
    if *route == Route::Dashboard {
        // The I/O thread serves the page; nothing to read for it.
        return Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: http::DASHBOARD_PAGE.as_bytes().to_vec(),
        };
    }
    statement_timer(Some(ANSWER_TIMEOUT_MS));
    let outcome = xact::run(|| {
        Ok(match route {
            Route::Health { strict } => {
                let (doc, verdict) = crate::sql::status::status_document()?;
                let status = match verdict {
                    pg_ark_core::health::Verdict::Healthy => 200,
                    pg_ark_core::health::Verdict::Degraded if !strict => 200,
                    _ => 503,
                };
                Answer {
                    status,
                    content_type: "application/json",
                    body: serde_json::to_vec_pretty(&doc).unwrap_or_default(),
                }
            }
            Route::Dashboard => unreachable!("answered above"),
            Route::DashboardData => Answer {
                status: 200,
                content_type: "application/json",
                body: serde_json::to_vec(&dashboard_data(wal)?).unwrap_or_default(),
            },
            Route::Metrics(format) => {
                let facts = crate::sql::metrics::gather()?;
                Answer {
                    status: 200,
                    content_type: format.content_type(),
                    body: metrics::render(&facts, *format).into_bytes(),
                }
            }
        })
    });
    statement_timer(None);
    // A timer that fired after the transaction's last interrupt check must
    // not cancel anything else.
    // SAFETY: what ProcessInterrupts itself does, on the worker's thread.
    unsafe { pg_sys::QueryCancelPending = 0 };
    match outcome {
        Ok(a) => a,
        Err(e) => {
            // The reason goes to the server log, not to the client.
            warning!(
                "pg_ark http worker could not answer {:?}: {}",
                route,
                e.message
            );
            Answer::text(500, "pg_ark could not answer; the server log says why\n")
        }
    }
}

/// What the dashboard shows: `ark.status()`, the kept backups (newest 500),
/// the chains, the newest 25 jobs, the newest 10 drills, the archiver's
/// counts, the recovery window, and the last listing of the repository's
/// WAL.
fn dashboard_data(wal: Option<&http::WalWatch>) -> Result<serde_json::Value, ArkError> {
    let (status, _) = crate::sql::status::status_document()?;
    let repository = settings::repository_location();
    let mut doc = Spi::get_one_with_args::<pgrx::JsonB>(
        r#"SELECT jsonb_build_object(
  'generated_at', extract(epoch FROM clock_timestamp())::float8,
  'backups', (SELECT coalesce(jsonb_agg(b ORDER BY b.finished), '[]') FROM (
      SELECT label, kind, database, info->>'chain' AS chain,
             extract(epoch FROM started_at)::float8 AS started,
             extract(epoch FROM finished_at)::float8 AS finished,
             size_bytes AS original_bytes,
             coalesce((info->>'stored_bytes')::int8, size_bytes) AS stored_bytes,
             info->>'start_wal' AS start_wal, info->>'stop_wal' AS stop_wal
        FROM ark.backups WHERE repository = $1
       ORDER BY finished_at DESC, id DESC LIMIT 500) b),
  'chains', (SELECT coalesce(jsonb_agg(c ORDER BY c.started), '[]') FROM (
      SELECT chain, backups, stored_bytes, verified_ok,
             extract(epoch FROM started_at)::float8 AS started,
             extract(epoch FROM last_finished_at)::float8 AS last_finished
        FROM ark.backup_chains WHERE repository = $1) c),
  'jobs', (SELECT coalesce(jsonb_agg(j ORDER BY j.id DESC), '[]') FROM (
      SELECT id, kind, state, attempts, max_attempts,
             extract(epoch FROM started_at)::float8 AS started,
             extract(epoch FROM finished_at - started_at)::float8 AS duration,
             left(last_error, 300) AS last_error
        FROM ark.jobs ORDER BY id DESC LIMIT 25) j),
  'drills', (SELECT coalesce(jsonb_agg(x ORDER BY x.at DESC), '[]') FROM (
      SELECT label AS backup,
             extract(epoch FROM (info->'drill'->>'at')::timestamptz)::float8 AS at,
             (info->'drill'->>'ok')::boolean AS ok,
             (info->'drill'->'timings'->>'rto_seconds')::float8 AS rto_seconds
        FROM ark.backups WHERE info ? 'drill' AND repository = $1
       ORDER BY info->'drill'->>'at' DESC LIMIT 10) x),
  'archive', (SELECT jsonb_build_object(
      'archived_count', archived_count, 'failed_count', failed_count,
      'last_archived_wal', last_archived_wal,
      'last_archived_time', extract(epoch FROM last_archived_time)::float8)
    FROM pg_catalog.pg_stat_archiver),
  'window', jsonb_build_object(
      'earliest', (SELECT extract(epoch FROM min(finished_at))::float8 FROM ark.backups
                    WHERE kind IN ('full', 'incremental', 'differential') AND repository = $1),
      'latest', (SELECT extract(epoch FROM last_archived_time)::float8
                   FROM pg_catalog.pg_stat_archiver)))"#,
        &[repository.into()],
    )?
    .map(|j| j.0)
    .unwrap_or_default();
    doc["archive"]["backlog"] = status["archive"]["backlog"].clone();
    doc["archive"]["last_failure_reason"] = status["archive"]["last_failure_reason"].clone();
    doc["status"] = status;
    doc["wal"] = match wal {
        Some(w) => {
            // Someone is looking: a listing older than this is done again
            // (in the background; this answer has the last one).
            let now = doc["generated_at"].as_f64().unwrap_or(0.0) as i64;
            if w.listed_at().is_some_and(|at| now - at > WAL_FRESH_SECONDS) {
                w.poke();
            }
            w.view.lock().map(|v| v.clone()).unwrap_or_default()
        }
        None => serde_json::json!({"error": "the WAL listing thread did not start"}),
    };
    doc["wal_segment_size"] = serde_json::json!(settings::wal_segment_size()
        .map(|s| s.bytes())
        .unwrap_or(16 * 1024 * 1024));
    Ok(doc)
}
