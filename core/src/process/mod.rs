//! The one way pg_ark runs a program (pg_dump, pg_restore, psql, postgres,
//! pg_ctl, pg_controldata): a [`Program`], built as an argument vector,
//! never a shell command line, and started
//!
//! - with a **clean environment**: an allow-list, the groups the caller
//!   asks for, and its own additions ([`Env`]);
//! - in a **process group of its own** (or a session, for a server), so
//!   that the signals PostgreSQL sends to the worker's group never reach it,
//!   and so that stopping it stops what it started too (pg_dump's parallel
//!   workers, a shell's children);
//! - with a **timeout** and a **cancellation** flag, watched while it runs,
//!   even while it is silent: either stops the whole group (SIGTERM, or the
//!   program's own stop signal, then SIGKILL after a grace period);
//! - with its standard error read on a thread and its **last few KiB kept**
//!   for the error message ([`ProgramError`]).
//!
//! [`Program::run`] runs a program to its end and returns its captured
//! output; [`Program::spawn`] leaves it running (a dump streaming its output,
//! a server) behind a [`Running`] handle, which stops it when dropped.
//!
//! A program that talks to the user's terminal ([`Program::terminal`]: the
//! CLI's psql and pg_restore may ask for a password, and Ctrl-C must stop
//! them with pg_ark) stays in pg_ark's process group when pg_ark runs in the
//! foreground of a terminal; job control is then the shell's.
//!
//! Helper threads start with every signal blocked (`crate::threads`), so
//! that inside a PostgreSQL background worker no signal lands on them;
//! children start with no signal blocked and none ignored (reset between
//! fork and exec: the mask and ignored signals survive exec).
mod env;
mod output;
#[cfg(test)]
mod tests;

pub use env::Env;

use crate::Error;
use output::{Keep, Sink};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How much of standard error is kept for the message, by default.
pub const STDERR_TAIL: usize = 8 * 1024;
/// How much of standard output [`Program::capture_stdout`] keeps.
pub const CAPTURE_LIMIT: usize = 64 * 1024 * 1024;
/// How long a program gets to stop after its stop signal before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);
/// The longest pause between two looks at the program and the flags.
const POLL: Duration = Duration::from_millis(50);

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
                libc::SIGQUIT => " (SIGQUIT)",
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

/// "60 s", "0.5 s".
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Why a program did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// It exited with a status other than 0, or a signal ended it.
    #[error("{program} failed: {}", failed_detail(status, stderr))]
    Failed {
        program: String,
        /// "exit status 1", "terminated by signal 9 (SIGKILL)".
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// It ran past its time limit and was stopped, with its group.
    #[error("{program} did not finish within {} and was stopped{}", seconds(*limit), colon(stderr))]
    TimedOut {
        program: String,
        limit: Duration,
        stderr: String,
    },
    /// It was stopped because its caller was cancelled.
    #[error("{program} was cancelled")]
    Cancelled { program: String },
}

fn colon(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

fn failed_detail(status: &str, stderr: &str) -> String {
    format!("{status}{}", colon(stderr))
}

impl ProgramError {
    /// The program's name ("pg_dump").
    pub fn program(&self) -> &str {
        match self {
            ProgramError::Failed { program, .. }
            | ProgramError::TimedOut { program, .. }
            | ProgramError::Cancelled { program } => program,
        }
    }

    /// The end of its standard error (empty when cancelled).
    pub fn stderr(&self) -> &str {
        match self {
            ProgramError::Failed { stderr, .. } | ProgramError::TimedOut { stderr, .. } => stderr,
            ProgramError::Cancelled { .. } => "",
        }
    }

    /// What happened, without the program's name: "exit status 1: pg_dump:
    /// error: ...", "did not finish within 60 s and was stopped".
    pub fn detail(&self) -> String {
        match self {
            ProgramError::Failed { status, stderr, .. } => failed_detail(status, stderr),
            ProgramError::TimedOut { limit, stderr, .. } => format!(
                "did not finish within {} and was stopped{}",
                seconds(*limit),
                colon(stderr)
            ),
            ProgramError::Cancelled { .. } => "cancelled".into(),
        }
    }

    /// Whether running it again may succeed: a timeout, or a failure whose
    /// message names a cause that goes away by itself (the server shutting
    /// down, a lock timeout: [`client_message_is_transient`]). A
    /// cancellation is neither: it is its own outcome.
    ///
    /// [`client_message_is_transient`]: crate::schedule::lifecycle::client_message_is_transient
    pub fn is_transient(&self) -> bool {
        match self {
            ProgramError::TimedOut { .. } => true,
            ProgramError::Failed { stderr, .. } => {
                crate::schedule::lifecycle::client_message_is_transient(stderr)
            }
            ProgramError::Cancelled { .. } => false,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            ProgramError::Failed { .. } => Some(
                "The end of the program's standard error is in the message. PostgreSQL's \
                 programs must be of the server's major version or newer."
                    .into(),
            ),
            ProgramError::TimedOut { .. } => Some(
                "It was stopped with every process it started. If it is merely slow, allow it \
                 more time."
                    .into(),
            ),
            ProgramError::Cancelled { .. } => None,
        }
    }
}

/// Where the program's standard output goes.
#[derive(Debug)]
pub enum Stdout {
    /// Discarded.
    Null,
    /// Kept (its first [`CAPTURE_LIMIT`] bytes) in [`Finished::stdout`].
    Capture,
    /// A pipe the caller reads ([`Running::take_stdout`]).
    Pipe,
    /// pg_ark's own standard output.
    Inherit,
    /// Written to this file.
    File(File),
}

/// Where the program's standard error goes; its end is kept for messages
/// unless it goes to a file.
#[derive(Debug)]
pub enum Stderr {
    /// Read, its end kept.
    Tail,
    /// Read, its end kept, and copied to pg_ark's own standard error as it
    /// comes (the CLI's programs: the user sees their messages).
    Tee,
    /// Written to this file (a server's log).
    File(File),
}

/// Which process group the program runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// A group of its own.
    Own,
    /// A session (and group) of its own, without a controlling terminal.
    Session,
    /// pg_ark's group when pg_ark runs in the foreground of a terminal
    /// (prompts and Ctrl-C reach it), otherwise its own.
    Terminal,
}

/// A program to run: see the module documentation.
#[derive(Debug)]
pub struct Program {
    path: PathBuf,
    args: Vec<OsString>,
    env: Env,
    /// pg_ark's environment as [`Env::resolve`] sees it (tests only).
    parent_env: Option<Vec<(OsString, OsString)>>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    stdout: Stdout,
    stderr: Stderr,
    tail: usize,
    timeout: Option<Duration>,
    stop_signal: libc::c_int,
    grace: Duration,
    group: Group,
    death_signal: Option<libc::c_int>,
}

impl Program {
    /// `path` with no arguments, the clean environment, standard input
    /// closed, standard output discarded, standard error's end kept, in a
    /// group of its own, no time limit.
    pub fn new(path: impl Into<PathBuf>) -> Program {
        Program {
            path: path.into(),
            args: Vec::new(),
            env: Env::clean(),
            parent_env: None,
            cwd: None,
            stdin: None,
            stdout: Stdout::Null,
            stderr: Stderr::Tail,
            tail: STDERR_TAIL,
            timeout: None,
            stop_signal: libc::SIGTERM,
            grace: TERM_GRACE,
            group: Group::Own,
            death_signal: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Program {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Program {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Which of pg_ark's variables it gets (the additions made so far are
    /// kept).
    pub fn env_policy(mut self, env: Env) -> Program {
        let changes = std::mem::take(&mut self.env).changes().to_vec();
        self.env = env;
        for (k, v) in changes {
            match v {
                Some(v) => self.env.set(k, v),
                None => self.env.remove(k),
            }
        }
        self
    }

    /// Set a variable on top of the policy.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Program {
        self.env.set(key, value);
        self
    }

    /// Make sure a variable is not set.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Program {
        self.env.remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Program {
        self.cwd = Some(dir.into());
        self
    }

    /// Write `bytes` to its standard input (on a thread), then close it.
    pub fn stdin_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Program {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn stdout(mut self, stdout: Stdout) -> Program {
        self.stdout = stdout;
        self
    }

    pub fn stderr(mut self, stderr: Stderr) -> Program {
        self.stderr = stderr;
        self
    }

    /// Keep the last `bytes` of standard error (default [`STDERR_TAIL`]).
    pub fn stderr_tail(mut self, bytes: usize) -> Program {
        self.tail = bytes.max(1);
        self
    }

    /// Stop it (and its group) once it has run this long.
    pub fn timeout(mut self, limit: Duration) -> Program {
        self.timeout = Some(limit);
        self
    }

    /// Stop it with `signal` (default SIGTERM), then SIGKILL after `grace`.
    pub fn stop_signal(mut self, signal: libc::c_int, grace: Duration) -> Program {
        self.stop_signal = signal;
        self.grace = grace;
        self
    }

    /// A session of its own (a server: no controlling terminal, no signal
    /// to pg_ark's session reaches it).
    pub fn new_session(mut self) -> Program {
        self.group = Group::Session;
        self
    }

    /// It may talk to the user's terminal: see the module documentation.
    pub fn terminal(mut self) -> Program {
        self.group = Group::Terminal;
        self
    }

    /// It gets `signal` when the thread that started it ends
    /// (`PR_SET_PDEATHSIG`), and does not start at all if pg_ark is gone
    /// already: a scratch server never outlives its drill.
    pub fn die_with_parent(mut self, signal: libc::c_int) -> Program {
        self.death_signal = Some(signal);
        self
    }

    #[cfg(test)]
    pub(crate) fn parent_env(mut self, vars: &[(&str, &str)]) -> Program {
        self.parent_env = Some(vars.iter().map(|(k, v)| (k.into(), v.into())).collect());
        self
    }

    pub fn get_program(&self) -> &Path {
        &self.path
    }

    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    pub fn get_env(&self) -> &Env {
        &self.env
    }

    /// The name messages use: the program's file name.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap_or(self.path.as_os_str())
            .to_string_lossy()
            .into_owned()
    }

    /// Run it to its end (or its timeout, or until `cancel` is set).
    /// Standard output in a [`Stdout::Pipe`] is closed at once.
    pub fn run(self, cancel: &AtomicBool) -> Result<Finished, Error> {
        let (mut child, parts) = self.start()?;
        drop(child.stdout.take());
        let exit = watch(child, &parts.watch, || {
            cancel.load(Ordering::SeqCst).then_some(Reason::Cancelled)
        });
        parts.conclude(exit).map_err(Error::from)
    }

    /// Start it and leave it running; `cancel`, when set, stops it.
    pub fn spawn(self, cancel: Option<Arc<AtomicBool>>) -> Result<Running, Error> {
        let (mut child, parts) = self.start()?;
        let stdout = child.stdout.take();
        let stop = Arc::new(AtomicBool::new(false));
        // The watcher takes the child from `slot`; if it cannot start, the
        // child is taken back, stopped and reaped here.
        let slot = Arc::new(Mutex::new(Some(child)));
        let (slot_w, stop_w, watch_w) = (Arc::clone(&slot), Arc::clone(&stop), parts.watch);
        let watcher = spawn_thread("pg_ark-child-watch", move || {
            let Some(child) = lock(&slot_w).take() else {
                return Exit {
                    status: Err(io::Error::other("the process was already reaped")),
                    reason: None,
                };
            };
            watch(child, &watch_w, || {
                if cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst)) {
                    Some(Reason::Cancelled)
                } else if stop_w.load(Ordering::SeqCst) {
                    Some(Reason::Stopped)
                } else {
                    None
                }
            })
        });
        match watcher {
            Ok(handle) => Ok(Running {
                pid: watch_w.pid,
                watcher: Some(handle),
                stop,
                stdout,
                parts,
                outcome: None,
            }),
            Err(e) => {
                if let Some(mut child) = lock(&slot).take() {
                    signal(&watch_w, libc::SIGKILL);
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err(Error::LocalIo {
                    op: "run",
                    path: parts.path.clone(),
                    source: e,
                })
            }
        }
    }

    /// Spawn the child and its helper threads.
    fn start(self) -> Result<(Child, Parts), Error> {
        let name = self.name();
        let failed = |source| Error::LocalIo {
            op: "run",
            path: self.path.display().to_string(),
            source,
        };
        let mut cmd = Command::new(&self.path);
        cmd.args(&self.args).env_clear();
        let parent = match &self.parent_env {
            Some(vars) => vars.clone(),
            None => std::env::vars_os().collect(),
        };
        cmd.envs(self.env.resolve(parent));
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let capture = matches!(self.stdout, Stdout::Capture);
        cmd.stdout(match self.stdout {
            Stdout::Null => Stdio::null(),
            Stdout::Capture | Stdout::Pipe => Stdio::piped(),
            Stdout::Inherit => Stdio::inherit(),
            Stdout::File(f) => f.into(),
        });
        let tee = matches!(self.stderr, Stderr::Tee);
        cmd.stderr(match self.stderr {
            Stderr::Tail | Stderr::Tee => Stdio::piped(),
            Stderr::File(f) => f.into(),
        });
        let own_group = match self.group {
            Group::Own => true,
            Group::Session => true,
            Group::Terminal => !in_terminal_foreground(),
        };
        if own_group && self.group != Group::Session {
            cmd.process_group(0);
        }
        let session = self.group == Group::Session;
        {
            let death = self.death_signal;
            let parent = std::process::id();
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    // The signal mask and ignored signals survive exec, and
                    // pg_ark starts programs from threads that block every
                    // signal, in a PostgreSQL worker that ignores some: the
                    // program starts with none blocked and none ignored,
                    // so that it stops when told (the stop signal pg_ark
                    // sends, the SIGINT Barman stops its WAL receiver with).
                    let mut none: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut none);
                    if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    for sig in 1..libc::SIGRTMIN() {
                        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                            continue;
                        }
                        let mut old: libc::sigaction = std::mem::zeroed();
                        if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                            && old.sa_sigaction == libc::SIG_IGN
                        {
                            libc::signal(sig, libc::SIG_DFL);
                        }
                    }
                    if session && libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if let Some(sig) = death {
                        // Dies with the thread that started it, and never
                        // starts if pg_ark died before prctl took effect.
                        if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        if u32::try_from(libc::getppid()).ok() != Some(parent) {
                            libc::_exit(1);
                        }
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(failed)?;
        let watch = Watch {
            pid: child.id(),
            own_group,
            deadline: self.timeout.map(|t| Instant::now() + t),
            stop_signal: self.stop_signal,
            grace: self.grace,
        };
        let helpers = (|| -> io::Result<(Option<Sink>, Option<Sink>)> {
            if let (Some(bytes), Some(mut stdin)) = (self.stdin, child.stdin.take()) {
                // A program that exits without reading it all is fine.
                spawn_thread("pg_ark-child-input", move || {
                    let _ = stdin.write_all(&bytes);
                })?;
            }
            let stderr = child
                .stderr
                .take()
                .map(|s| Sink::read(s, Keep::Tail, self.tail, tee))
                .transpose()?;
            let captured = match child.stdout.take() {
                Some(s) if capture => Some(Sink::read(s, Keep::Head, CAPTURE_LIMIT, false)?),
                other => {
                    child.stdout = other;
                    None
                }
            };
            Ok((stderr, captured))
        })();
        match helpers {
            Ok((stderr, captured)) => Ok((
                child,
                Parts {
                    name,
                    path: self.path.display().to_string(),
                    watch,
                    stderr,
                    captured,
                    tail: self.tail,
                    timeout: self.timeout,
                },
            )),
            Err(e) => {
                signal(&watch, libc::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                Err(failed(e))
            }
        }
    }
}

impl fmt::Display for Program {
    /// The program and its arguments, for a log line (not for a shell).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        for a in &self.args {
            write!(f, " {}", a.to_string_lossy())?;
        }
        Ok(())
    }
}

/// Whether pg_ark runs in the foreground process group of its terminal.
fn in_terminal_foreground() -> bool {
    // SAFETY: open, tcgetpgrp, getpgrp and close on a descriptor owned here.
    unsafe {
        let fd = libc::open(
            c"/dev/tty".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        let foreground = libc::tcgetpgrp(fd);
        libc::close(fd);
        foreground > 0 && foreground == libc::getpgrp()
    }
}

/// A program that ended with status 0.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: ExitStatus,
    /// Its standard output, with [`Stdout::Capture`].
    pub stdout: Vec<u8>,
    /// More than [`CAPTURE_LIMIT`] bytes came; the rest was dropped.
    pub stdout_truncated: bool,
    /// The end of its standard error.
    pub stderr: String,
}

impl Finished {
    /// Standard output as text, trimmed.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_string()
    }
}

/// Why the watcher stopped the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Cancelled,
    TimedOut,
    /// Its owner finished it ([`Running::finish`] with `stop`).
    Stopped,
}

/// How the watcher saw the program end.
struct Exit {
    status: io::Result<ExitStatus>,
    reason: Option<Reason>,
}

/// What the watcher needs to know.
#[derive(Debug, Clone, Copy)]
struct Watch {
    pid: u32,
    own_group: bool,
    deadline: Option<Instant>,
    stop_signal: libc::c_int,
    grace: Duration,
}

/// Send `sig` to the program's group (or, sharing pg_ark's group, to the
/// program alone). Only called while the program is not reaped, so its pid
/// cannot have been reused.
fn signal(w: &Watch, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(w.pid) {
        let target = if w.own_group { -pid } else { pid };
        // SAFETY: kill(2) with a plain process (group) id and signal number.
        unsafe {
            libc::kill(target, sig);
        }
    }
}

/// Own the child until it exits: stop it (its stop signal to its group,
/// SIGKILL after the grace period) when `should_stop` says so or its time
/// is up.
fn watch(mut child: Child, w: &Watch, mut should_stop: impl FnMut() -> Option<Reason>) -> Exit {
    let mut reason = None;
    let mut signalled_at: Option<Instant> = None;
    let mut killed = false;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Exit {
                    status: Ok(status),
                    reason,
                }
            }
            Ok(None) => {}
            Err(e) => {
                signal(w, libc::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                return Exit {
                    status: Err(e),
                    reason,
                };
            }
        }
        match signalled_at {
            None => {
                let why = should_stop().or_else(|| {
                    w.deadline
                        .is_some_and(|d| Instant::now() >= d)
                        .then_some(Reason::TimedOut)
                });
                if let Some(why) = why {
                    reason = Some(why);
                    signal(w, w.stop_signal);
                    signalled_at = Some(Instant::now());
                }
            }
            Some(at) if !killed && at.elapsed() >= w.grace => {
                signal(w, libc::SIGKILL);
                let _ = child.kill();
                killed = true;
            }
            Some(_) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(POLL);
    }
}

/// What a started program needs at its end.
struct Parts {
    name: String,
    /// The program's path, for messages.
    path: String,
    watch: Watch,
    stderr: Option<Sink>,
    captured: Option<Sink>,
    tail: usize,
    timeout: Option<Duration>,
}

impl Parts {
    fn conclude(&self, exit: Exit) -> Result<Finished, ProgramError> {
        let stderr = || {
            self.stderr
                .as_ref()
                .map(|s| s.tail_text(self.tail))
                .unwrap_or_default()
        };
        match exit.reason {
            Some(Reason::Cancelled) => {
                return Err(ProgramError::Cancelled {
                    program: self.name.clone(),
                })
            }
            Some(Reason::TimedOut) => {
                return Err(ProgramError::TimedOut {
                    program: self.name.clone(),
                    limit: self.timeout.unwrap_or_default(),
                    stderr: stderr(),
                })
            }
            Some(Reason::Stopped) | None => {}
        }
        match exit.status {
            Ok(status) if status.success() => {
                let (stdout, stdout_truncated) =
                    self.captured.as_ref().map(Sink::head).unwrap_or_default();
                Ok(Finished {
                    status,
                    stdout,
                    stdout_truncated,
                    stderr: stderr(),
                })
            }
            Ok(status) => Err(ProgramError::Failed {
                program: self.name.clone(),
                status: describe_status(status),
                stderr: stderr(),
            }),
            Err(e) => Err(ProgramError::Failed {
                program: self.name.clone(),
                status: format!("could not wait for it: {e}"),
                stderr: stderr(),
            }),
        }
    }
}

/// A program left running by [`Program::spawn`]. Dropping it stops the
/// program and waits for it.
pub struct Running {
    pid: u32,
    watcher: Option<JoinHandle<Exit>>,
    stop: Arc<AtomicBool>,
    stdout: Option<ChildStdout>,
    parts: Parts,
    outcome: Option<Result<Finished, ProgramError>>,
}

impl Running {
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Its standard output, with [`Stdout::Pipe`] (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// Whether it has ended (its outcome is then ready: [`Running::finish`]
    /// does not wait).
    pub fn has_ended(&self) -> bool {
        self.outcome.is_some() || self.watcher.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Wait for it to end, stopping it first with `stop`; the outcome is
    /// computed once and kept.
    pub fn finish(&mut self, stop: bool) -> Result<Finished, ProgramError> {
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
                reason: None,
            },
        };
        let outcome = self.parts.conclude(exit);
        self.outcome = Some(outcome.clone());
        outcome
    }

    /// The outcome, if it has been waited for.
    pub fn outcome(&self) -> Option<Result<Finished, ProgramError>> {
        self.outcome.clone()
    }
}

impl Drop for Running {
    /// Never leave the program running or unreaped.
    fn drop(&mut self) {
        if self.outcome.is_none() {
            let _ = self.finish(true);
        }
    }
}
