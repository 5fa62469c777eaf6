//! Running PostgreSQL's programs (pg_dump today; pg_basebackup,
//! pg_combinebackup and pg_restore tomorrow) with an argument vector, never
//! a shell: in a process group of their own, with standard error captured
//! on a thread (its end kept for the message), and cancellation that stops
//! the whole group even while the program is silent (SIGTERM, then SIGKILL
//! after a grace period).
//!
//! Helper threads start with every signal blocked (`crate::threads`), so
//! that inside a PostgreSQL background worker no signal lands on them.
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How much of pg_dump's standard error is kept for the error message.
pub(crate) const STDERR_TAIL: usize = 8 * 1024;
/// How long pg_dump gets to stop after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How often the watcher looks at the process and the cancel flag.
const POLL: Duration = Duration::from_millis(50);
/// How long to wait for the end of standard error after the exit.
const STDERR_WAIT: Duration = Duration::from_secs(2);

/// Why a process did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Cancelled,
    /// "exit status 1: pg_dump: error: …"
    Failed(String),
}

/// How a process ended, for a message: "exit status 1" or
/// "terminated by signal 15 (SIGTERM)".
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGINT => " (SIGINT)",
                libc::SIGPIPE => " (SIGPIPE)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                _ => "",
            };
            format!("terminated by signal {sig}{name}")
        }
        None => status.to_string(),
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Start a named thread with every signal blocked.
pub(crate) fn spawn_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    crate::threads::with_signals_blocked(|| {
        std::thread::Builder::new().name(name.to_string()).spawn(f)
    })
}

/// The end of a child's standard error, filled by a thread of its own.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    truncated: bool,
    done: bool,
}

type TailShared = Arc<(Mutex<Tail>, Condvar)>;

fn read_stderr(mut stderr: ChildStderr) -> io::Result<TailShared> {
    let shared: TailShared = Arc::default();
    let filler = Arc::clone(&shared);
    spawn_thread("pg_ark-dump-stderr", move || {
        let mut chunk = [0u8; 4096];
        loop {
            match stderr.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let mut t = lock(&filler.0);
                    t.buf.extend_from_slice(&chunk[..n]);
                    if t.buf.len() > 2 * STDERR_TAIL {
                        let cut = t.buf.len() - STDERR_TAIL;
                        t.buf.drain(..cut);
                        t.truncated = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        lock(&filler.0).done = true;
        filler.1.notify_all();
    })?;
    Ok(shared)
}

/// The last [`STDERR_TAIL`] bytes of standard error, waiting a little for
/// its end (a process that exited has closed it, unless a child of its own
/// still holds it).
fn stderr_text(shared: &TailShared) -> String {
    let (mutex, cond) = &**shared;
    let guard = lock(mutex);
    let guard = match cond.wait_timeout_while(guard, STDERR_WAIT, |t| !t.done) {
        Ok((g, _)) => g,
        Err(poisoned) => poisoned.into_inner().0,
    };
    let start = guard.buf.len().saturating_sub(STDERR_TAIL);
    let text = String::from_utf8_lossy(&guard.buf[start..]);
    let text = text.trim();
    if guard.truncated || start > 0 {
        format!("...{text}")
    } else {
        text.to_string()
    }
}

/// How the watcher saw the process end.
struct Exit {
    status: io::Result<ExitStatus>,
    cancelled: bool,
}

/// Send `sig` to the process group `pid` leads. Only called while the
/// leader is not reaped, so `pid` cannot have been reused.
fn signal_group(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a plain process group id and signal number.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

/// Own the child until it exits: stop it (SIGTERM to its group, SIGKILL
/// after [`TERM_GRACE`]) when `cancel` or `stop` is set.
fn watch(mut child: Child, cancel: &AtomicBool, stop: &AtomicBool) -> Exit {
    let pid = child.id();
    let mut cancelled = false;
    let mut terminated_at: Option<Instant> = None;
    let mut killed = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Exit {
                    status: Ok(status),
                    cancelled,
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Exit {
                    status: Err(e),
                    cancelled,
                };
            }
        }
        match terminated_at {
            None => {
                cancelled = cancel.load(Ordering::SeqCst);
                if cancelled || stop.load(Ordering::SeqCst) {
                    signal_group(pid, libc::SIGTERM);
                    terminated_at = Some(Instant::now());
                }
            }
            Some(at) if !killed && at.elapsed() >= TERM_GRACE => {
                signal_group(pid, libc::SIGKILL);
                let _ = child.kill();
                killed = true;
            }
            Some(_) => {}
        }
        std::thread::sleep(POLL);
    }
}

/// A running process: its watcher thread and its standard error.
pub struct Process {
    watcher: Option<JoinHandle<Exit>>,
    stop: Arc<AtomicBool>,
    stderr: Option<TailShared>,
    outcome: Option<Result<(), Failure>>,
}

impl Process {
    /// Start `cmd` in a process group of its own, with standard input
    /// closed, standard error captured and standard output piped (if
    /// `stdout`) or discarded.
    pub fn spawn(
        mut cmd: Command,
        stdout: bool,
        cancel: &Arc<AtomicBool>,
    ) -> io::Result<(Process, Option<ChildStdout>)> {
        cmd.stdin(Stdio::null())
            .stdout(if stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn()?;
        let out = child.stdout.take();
        let stderr = match child.stderr.take().map(read_stderr).transpose() {
            Ok(s) => s,
            Err(e) => {
                signal_group(child.id(), libc::SIGKILL);
                let _ = child.wait();
                return Err(e);
            }
        };
        // The watcher takes the child from `slot`; if it cannot start, the
        // child is taken back, stopped and reaped here.
        let slot = Arc::new(Mutex::new(Some(child)));
        let stop = Arc::new(AtomicBool::new(false));
        let (slot_w, cancel_w, stop_w) = (Arc::clone(&slot), Arc::clone(cancel), Arc::clone(&stop));
        let watcher = spawn_thread("pg_ark-dump-watch", move || match lock(&slot_w).take() {
            Some(child) => watch(child, &cancel_w, &stop_w),
            None => Exit {
                status: Err(io::Error::other("the process was already reaped")),
                cancelled: false,
            },
        });
        match watcher {
            Ok(handle) => Ok((
                Process {
                    watcher: Some(handle),
                    stop,
                    stderr,
                    outcome: None,
                },
                out,
            )),
            Err(e) => {
                if let Some(mut child) = lock(&slot).take() {
                    signal_group(child.id(), libc::SIGKILL);
                    let _ = child.wait();
                }
                Err(e)
            }
        }
    }

    /// Wait for the process to end, stopping it first with `stop`; the
    /// outcome is computed once and kept.
    pub fn finish(&mut self, stop: bool) -> Result<(), Failure> {
        if let Some(outcome) = &self.outcome {
            return outcome.clone();
        }
        if stop {
            self.stop.store(true, Ordering::SeqCst);
        }
        let exit = match self.watcher.take().map(JoinHandle::join) {
            Some(Ok(exit)) => exit,
            _ => Exit {
                status: Err(io::Error::other("its watcher thread failed")),
                cancelled: false,
            },
        };
        let outcome = if exit.cancelled {
            Err(Failure::Cancelled)
        } else {
            match exit.status {
                Ok(status) if status.success() => Ok(()),
                Ok(status) => {
                    let stderr = self.stderr.as_ref().map(stderr_text).unwrap_or_default();
                    let mut detail = describe_status(status);
                    if !stderr.is_empty() {
                        detail.push_str(": ");
                        detail.push_str(&stderr);
                    }
                    Err(Failure::Failed(detail))
                }
                Err(e) => Err(Failure::Failed(format!("could not wait for it: {e}"))),
            }
        };
        self.outcome = Some(outcome.clone());
        outcome
    }

    /// The outcome, if the process has been waited for.
    pub fn outcome(&self) -> Option<Result<(), Failure>> {
        self.outcome.clone()
    }
}

impl Drop for Process {
    /// Never leave the process running or unreaped.
    fn drop(&mut self) {
        if self.outcome.is_none() {
            let _ = self.finish(true);
        }
    }
}
