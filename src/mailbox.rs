//! The enqueue mailbox: how `ark.backup()` queues a job *outside* the
//! calling transaction.
//!
//! `SELECT ark.wait(ark.backup('logical'))` is one statement in one
//! transaction. If `ark.backup()` inserted the job in that transaction, no
//! job worker could see it before the statement ended, and `ark.wait()`
//! would wait for ever. So `ark.backup()` hands the validated request to the
//! scheduler through this shared-memory mailbox; the scheduler inserts the
//! row in its own transaction, commits, and answers with the job id. Like
//! `nextval()`, queueing a job is therefore not undone by a rollback of the
//! caller (`ark.cancel()` is).
//!
//! The mailbox has a few slots; each goes Free → Pending (backend) → Taken
//! (scheduler, while it inserts) → Done (scheduler, with the id or an error)
//! → Free (backend, once it read the answer). A backend that gives up waiting
//! (timeout, query cancel) marks its slot Abandoned, and the scheduler frees
//! it; the scheduler also frees slots whose backend is gone or that nobody
//! collected for two minutes, so a slot can never leak.
use crate::error::ArkError;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::time::{Duration, Instant};

const SLOTS: usize = 16;
pub const MAX_OPTIONS: usize = 8192;
const MAX_TEXT: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum SlotState {
    Free,
    Pending,
    Taken,
    Done,
    Abandoned,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    state: SlotState,
    ticket: u64,
    requester_pid: i32,
    /// The role that asked (`GetUserId()`): the job's `queued_by`.
    role: u32,
    /// Seconds since the epoch when the request was posted.
    posted_at: u64,
    kind: [u8; 32],
    kind_len: usize,
    options: [u8; MAX_OPTIONS],
    options_len: usize,
    job_id: i64,
    error: [u8; MAX_TEXT],
    error_len: usize,
}

impl Slot {
    const EMPTY: Slot = Slot {
        state: SlotState::Free,
        ticket: 0,
        requester_pid: 0,
        role: 0,
        posted_at: 0,
        kind: [0; 32],
        kind_len: 0,
        options: [0; MAX_OPTIONS],
        options_len: 0,
        job_id: 0,
        error: [0; MAX_TEXT],
        error_len: 0,
    };
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Mailbox {
    scheduler_pid: i32,
    next_ticket: u64,
    slots: [Slot; SLOTS],
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox {
            scheduler_pid: 0,
            next_ticket: 1,
            slots: [Slot::EMPTY; SLOTS],
        }
    }
}

// SAFETY: plain old data, no pointers.
unsafe impl PGRXSharedMemory for Mailbox {}

// SAFETY: the name is unique to pg_ark.
static MAILBOX: PgLwLock<Mailbox> = unsafe { PgLwLock::new(c"pg_ark_mailbox") };

/// Reserve the mailbox in shared memory. `_PG_init`, while preloading only.
pub fn init() {
    pg_shmem_init!(MAILBOX);
}

/// The scheduler announces itself (pid 0: it is gone).
pub fn set_scheduler_pid(pid: i32) {
    MAILBOX.exclusive().scheduler_pid = pid;
}

/// Set the latch of backend `pid`, if it is still there.
pub fn wake(pid: i32) {
    if pid <= 0 {
        return;
    }
    // SAFETY: BackendPidGetProc takes ProcArrayLock itself; a PGPROC lives in
    // shared memory for the life of the server, so setting its latch is safe
    // even if the backend just exited.
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() {
            pg_sys::SetLatch(&raw mut (*proc_).procLatch);
        }
    }
}

/// The scheduler's pid, if it runs.
pub fn scheduler_pid() -> Option<i32> {
    let pid = MAILBOX.share().scheduler_pid;
    // SAFETY: lookup in the proc array.
    (pid > 0 && !unsafe { pg_sys::BackendPidGetProc(pid) }.is_null()).then_some(pid)
}

/// Wake the scheduler (no-op if it does not run).
pub fn wake_scheduler() {
    if let Some(pid) = scheduler_pid() {
        wake(pid);
    }
}

fn epoch_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether backend `pid` still exists.
fn backend_alive(pid: i32) -> bool {
    // SAFETY: lookup in the proc array.
    pid > 0 && !unsafe { pg_sys::BackendPidGetProc(pid) }.is_null()
}

/// Give up slot `index` of `ticket` (the requester stopped waiting).
fn abandon(index: usize, ticket: u64) {
    let mut mb = MAILBOX.exclusive();
    let slot = &mut mb.slots[index];
    if slot.ticket == ticket {
        if matches!(slot.state, SlotState::Pending | SlotState::Done) {
            *slot = Slot::EMPTY;
        } else if slot.state == SlotState::Taken {
            slot.state = SlotState::Abandoned;
        }
    }
}

fn copy_in(dst: &mut [u8], src: &str) -> usize {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src.as_bytes()[..n]);
    n
}

fn text(buf: &[u8], len: usize) -> String {
    String::from_utf8_lossy(&buf[..len.min(buf.len())]).into_owned()
}

/// Wait on this backend's latch for up to `d`, then check for interrupts
/// (so a query cancel or terminate ends the wait).
pub fn sleep(d: Duration) {
    let ms = i64::try_from(d.as_millis()).unwrap_or(1000).max(1);
    // SAFETY: backend's own latch, own thread.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// Ask the scheduler to queue a job of `kind` with `options` (validated
/// JSON text) for the current user; returns the new job's id once it is
/// committed.
pub fn enqueue(kind: &str, options: &str) -> Result<i64, ArkError> {
    // SAFETY: reads the backend's current user id.
    let role = u32::from(unsafe { pg_sys::GetUserId() });
    if options.len() > MAX_OPTIONS {
        return Err(ArkError::OptionsTooLarge {
            bytes: options.len(),
            max: MAX_OPTIONS,
        });
    }
    let scheduler = scheduler_pid().ok_or(ArkError::SchedulerNotRunning)?;
    // SAFETY: reading the backend's own pid.
    let me = unsafe { pg_sys::MyProcPid };
    let started = Instant::now();
    let (index, ticket) = loop {
        {
            let mut mb = MAILBOX.exclusive();
            let ticket = mb.next_ticket;
            if let Some(i) = mb.slots.iter().position(|s| s.state == SlotState::Free) {
                mb.next_ticket += 1;
                let slot = &mut mb.slots[i];
                *slot = Slot::EMPTY;
                slot.state = SlotState::Pending;
                slot.ticket = ticket;
                slot.requester_pid = me;
                slot.role = role;
                slot.posted_at = epoch_secs();
                slot.kind_len = copy_in(&mut slot.kind, kind);
                slot.options_len = copy_in(&mut slot.options, options);
                break (i, ticket);
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(ArkError::SchedulerTimeout { seconds: 10 });
        }
        sleep(Duration::from_millis(20));
    };
    wake(scheduler);
    // A query cancel or terminate during the wait raises an ERROR: give the
    // slot up before it propagates.
    PgTryBuilder::new(|| wait_answer(index, ticket, started))
        .catch_others(|e| {
            abandon(index, ticket);
            e.rethrow()
        })
        .execute()
}

fn wait_answer(index: usize, ticket: u64, started: Instant) -> Result<i64, ArkError> {
    let timeout = Duration::from_secs(30);
    loop {
        {
            let mut mb = MAILBOX.exclusive();
            let slot = &mut mb.slots[index];
            if slot.ticket == ticket && slot.state == SlotState::Done {
                let (id, err) = (slot.job_id, text(&slot.error, slot.error_len));
                *slot = Slot::EMPTY;
                return if err.is_empty() {
                    Ok(id)
                } else {
                    Err(ArkError::EnqueueFailed { message: err })
                };
            }
        }
        if started.elapsed() > timeout {
            abandon(index, ticket);
            return Err(ArkError::SchedulerTimeout {
                seconds: timeout.as_secs(),
            });
        }
        if scheduler_pid().is_none() {
            // It went away; its successor serves the mailbox.
            wake_scheduler();
        }
        sleep(Duration::from_millis(10));
    }
}

/// A request taken from the mailbox by the scheduler.
pub struct Request {
    index: usize,
    ticket: u64,
    pub kind: String,
    pub options: String,
    /// The role that asked.
    pub role: pg_sys::Oid,
}

/// Scheduler: take every pending request (marking them Taken), and free
/// abandoned slots, slots of backends that are gone, and answers nobody
/// collected.
pub fn take_pending() -> Vec<Request> {
    let now = epoch_secs();
    let mut mb = MAILBOX.exclusive();
    let mut out = Vec::new();
    for (index, slot) in mb.slots.iter_mut().enumerate() {
        let stale = slot.state != SlotState::Free
            && (!backend_alive(slot.requester_pid) || now.saturating_sub(slot.posted_at) > 120);
        if stale {
            *slot = Slot::EMPTY;
            continue;
        }
        match slot.state {
            SlotState::Pending => {
                slot.state = SlotState::Taken;
                out.push(Request {
                    index,
                    ticket: slot.ticket,
                    kind: text(&slot.kind, slot.kind_len),
                    options: text(&slot.options, slot.options_len),
                    role: pg_sys::Oid::from(slot.role),
                });
            }
            SlotState::Abandoned => *slot = Slot::EMPTY,
            _ => {}
        }
    }
    out
}

/// Scheduler: answer a request with the new job id or an error.
pub fn answer(req: &Request, result: Result<i64, String>) {
    let requester = {
        let mut mb = MAILBOX.exclusive();
        let slot = &mut mb.slots[req.index];
        if slot.ticket != req.ticket {
            return;
        }
        if slot.state == SlotState::Abandoned {
            *slot = Slot::EMPTY;
            return;
        }
        slot.state = SlotState::Done;
        match result {
            Ok(id) => slot.job_id = id,
            Err(e) if e.is_empty() => slot.error_len = copy_in(&mut slot.error, "unknown error"),
            Err(e) => slot.error_len = copy_in(&mut slot.error, &e),
        }
        slot.requester_pid
    };
    wake(requester);
}

/// Wake the scheduler once the current transaction commits (it would not
/// see the change before).
pub fn wake_scheduler_at_commit() {
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, wake_scheduler);
}
