//! The drill's scratch server: a free port, its settings, starting it and
//! waiting for recovery to end, psql against it, and the sweep of one an
//! earlier attempt left.
use super::*;

/// The scratch server's port: one no TCP listener holds now. The server
/// listens on no TCP port at all; the number names its socket in the
/// private scratch directory.
pub(super) fn free_port() -> Result<u16, Fail> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| setup(format!("could not choose a port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| setup(format!("could not choose a port: {e}")))
}

/// What the scratch server's log says went wrong, for a message: its
/// errors and `pg_ark wal-get`'s messages (at most `n` lines), or else its
/// last `n` lines.
pub(super) fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let problems: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            l.contains("FATAL:")
                || l.contains("PANIC:")
                || l.contains("ERROR:")
                || l.starts_with("pg_ark")
        })
        .collect();
    let chosen = if problems.is_empty() {
        &lines[lines.len().saturating_sub(n)..]
    } else {
        &problems[problems.len().saturating_sub(n)..]
    };
    chosen.join(" | ")
}

/// The scratch server, stopped (immediate shutdown) when dropped.
pub(super) struct Server {
    running: Option<Running>,
}

impl Server {
    /// Immediate shutdown (SIGQUIT; SIGKILL after 30 s): the cluster is
    /// thrown away.
    pub(super) fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = running.finish(true);
        }
    }

    /// How it ended, if it has.
    fn exited(&mut self) -> Option<String> {
        let running = self.running.as_mut()?;
        if !running.has_ended() {
            return None;
        }
        Some(match running.finish(false) {
            Ok(done) => crate::process::describe_status(done.status),
            Err(ProgramError::Failed { status, .. }) => status,
            Err(e) => e.to_string(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `path` is a directory itself (not a symbolic link) owned by this
/// process's user.
pub(super) fn own_real_dir(path: &Path) -> Option<std::fs::Metadata> {
    let m = std::fs::symlink_metadata(path).ok()?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    (m.file_type().is_dir() && m.uid() == me).then_some(m)
}

/// The work directory holds scratch clusters: it must be a directory of
/// this user's, not a link, that no one else may write to (as PostgreSQL
/// requires of a data directory). Created 0700 if missing.
pub fn check_work_directory(dir: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let Some(m) = own_real_dir(dir) else {
        return Err(format!(
            "the work directory {} is not a directory owned by the server's user (or it is a symbolic link): it would hold scratch clusters",
            dir.display()
        ));
    };
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "the work directory {} may be written by other users (mode {:o}): chmod 700 it, or set ark.work_directory to a private directory",
            dir.display(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Stop a scratch server that a dead drill left running in `dir` (its
/// `data/postmaster.pid`). Only a server of a drill's is signalled:
/// `dir` and `dir/data` are directories of this user's, not links; the
/// process runs in exactly that data directory (its working directory is
/// the same file); it is not this process's parent (the primary's
/// postmaster) and does not run in one of `protected` (the primary's
/// directories). Waits until it is gone: SIGQUIT, then SIGKILL after 10 s.
///
/// `Ok(true)`: one was stopped; `Ok(false)`: none of a drill's runs there;
/// `Err`: one runs there and would not stop (the directory must stay).
pub fn stop_leftover_server(dir: &Path, protected: &[PathBuf]) -> Result<bool, String> {
    let data = dir.join("data");
    let (Some(_), Some(data_meta)) = (own_real_dir(dir), own_real_dir(&data)) else {
        return Ok(false);
    };
    let Some(pid) = crate::restore::live_postmaster(&data) else {
        return Ok(false);
    };
    // SAFETY: getppid and getpid cannot fail.
    if pid == unsafe { libc::getppid() } || pid == unsafe { libc::getpid() } {
        return Ok(false);
    }
    let Ok(cwd) = std::fs::metadata(format!("/proc/{pid}/cwd")) else {
        return Ok(false);
    };
    if (cwd.dev(), cwd.ino()) != (data_meta.dev(), data_meta.ino()) {
        return Ok(false);
    }
    for p in protected {
        if let Ok(m) = std::fs::metadata(p) {
            if (m.dev(), m.ino()) == (cwd.dev(), cwd.ino()) {
                return Ok(false);
            }
        }
    }
    // SAFETY: signals a process verified above to be a server of `dir`.
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    let began = Instant::now();
    let gone = || !Path::new(&format!("/proc/{pid}")).exists() || !alive(pid);
    while !gone() {
        if began.elapsed() > Duration::from_secs(10) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if began.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "the scratch server (pid {pid}) in {} did not stop",
                dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

/// Whether `pid` is alive and not a zombie.
pub(super) fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

/// The environment of the drill's programs: the clean one (no `PG*`
/// variable of this process's: the primary's pg_ctl exports PGDATA, and
/// nothing may lead a child to the primary), in the C locale.
pub(super) fn scratch_env() -> Env {
    let mut env = Env::clean();
    env.set("LC_ALL", "C");
    env.remove("LANG");
    env.remove("LANGUAGE");
    env
}

/// Run `sql` (a psql script, with `vars` as psql variables) in the scratch
/// server: its output, unaligned and tuples only. The connection comes from
/// the environment (`PGHOST` ..., which libpq never parses as a connection
/// string).
pub(super) fn psql(
    spec: &Spec,
    stop: &AtomicBool,
    port: u16,
    sql: &str,
    vars: &[(&str, &str)],
) -> Result<String, String> {
    psql_in(spec, stop, port, &spec.database, sql, vars)
}

/// What a failed check says: psql's own words, on one line.
pub(super) const CHECK_ERROR_BYTES: usize = 2000;

/// [`psql`] in database `database`.
pub(super) fn psql_in(
    spec: &Spec,
    stop: &AtomicBool,
    port: u16,
    database: &str,
    sql: &str,
    vars: &[(&str, &str)],
) -> Result<String, String> {
    let script = spec.scratch.join("check.sql");
    std::fs::write(&script, sql).map_err(|e| format!("{}: {e}", script.display()))?;
    let mut program = Program::new(spec.bindir.join("psql"))
        .env_policy(scratch_env())
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"]);
    for (k, v) in vars {
        program = program.arg("-v").arg(format!("{k}={v}"));
    }
    // A check can hang (a lock, a function that never returns): it ends
    // with the drill's timeout, or when the drill is stopped (ark.cancel(),
    // shutdown).
    let run = program
        .arg("-f")
        .arg(&script)
        .env("PGHOST", &spec.scratch)
        .env("PGPORT", port.to_string())
        .env("PGUSER", &spec.user)
        .env("PGDATABASE", database)
        .env("PGAPPNAME", "pg_ark drill")
        .env(
            "PGOPTIONS",
            "-c statement_timeout=0 -c lock_timeout=0 -c default_transaction_read_only=off -c idle_in_transaction_session_timeout=0",
        )
        .stdout(Stdout::Capture)
        .stderr_tail(CHECK_ERROR_BYTES)
        .timeout(spec.timeout)
        .run(stop);
    match run {
        Ok(done) => Ok(done.stdout_text()),
        Err(crate::Error::Program(ProgramError::Cancelled { .. })) => {
            Err("the drill was stopped".to_string())
        }
        Err(crate::Error::Program(ProgramError::TimedOut { .. })) => Err(format!(
            "the check did not finish within {} s (option timeout)",
            spec.timeout.as_secs()
        )),
        Err(crate::Error::Program(ProgramError::Failed { status, stderr, .. })) => {
            Err(if stderr.is_empty() {
                format!("psql: {status}")
            } else {
                stderr.replace('\n', " ")
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The scratch server's settings on its command line: they override the
/// restored `postgresql.conf` and `postgresql.auto.conf`.
pub(super) fn server_args(spec: &Spec, port: u16) -> Vec<String> {
    let scratch = spec.scratch.display().to_string();
    let mut set: Vec<(String, String)> = vec![
        ("data_directory".into(), format!("{scratch}/data")),
        ("port".into(), port.to_string()),
        ("listen_addresses".into(), String::new()),
        ("unix_socket_directories".into(), scratch.clone()),
        ("hba_file".into(), format!("{scratch}/pg_hba.conf")),
        ("ident_file".into(), format!("{scratch}/pg_ident.conf")),
        ("external_pid_file".into(), String::new()),
        (
            "cluster_name".into(),
            format!("pg_ark drill {}", spec.job_id),
        ),
        ("archive_mode".into(), "off".into()),
        (
            "shared_preload_libraries".into(),
            preload_without_pg_ark(&spec.preload),
        ),
        ("max_logical_replication_workers".into(), "0".into()),
        ("logging_collector".into(), "off".into()),
        ("log_destination".into(), "stderr".into()),
        ("lc_messages".into(), "C".into()),
        ("shared_buffers".into(), "128MB".into()),
        ("huge_pages".into(), "off".into()),
        ("hot_standby".into(), "on".into()),
        // At least two segments, as PostgreSQL requires.
        (
            "max_wal_size".into(),
            format!(
                "{}MB",
                ((2 * spec.wal_segment_size.bytes()) >> 20).max(1024)
            ),
        ),
    ];
    set.extend(spec.settings.iter().cloned());
    let mut args = vec!["-D".to_string(), format!("{scratch}/data")];
    for (k, v) in set {
        args.push("-c".into());
        args.push(format!("{k}={v}"));
    }
    args
}

/// Start the scratch postmaster: a session of its own (signals to the
/// drill's process group do not reach it), dying with the drill, its output
/// into `log`; its environment reaches the repository (`pg_ark wal-get`)
/// and nothing else.
pub(super) fn start_server(spec: &Spec, port: u16, log: &Path) -> Result<Server, Fail> {
    let log_file = std::fs::File::create(log)
        .map_err(|e| setup(format!("could not create {}: {e}", log.display())))?;
    let err_file = log_file
        .try_clone()
        .map_err(|e| setup(format!("{}: {e}", log.display())))?;
    let mut program = Program::new(spec.bindir.join("postgres"))
        .args(server_args(spec, port))
        .current_dir(&spec.scratch)
        .env_policy(scratch_env().repository())
        .env("PGDATA", spec.scratch.join("data"))
        .stdout(Stdout::File(log_file))
        .stderr(Stderr::File(err_file))
        .new_session()
        .die_with_parent(libc::SIGQUIT)
        .stop_signal(libc::SIGQUIT, SERVER_STOP_GRACE);
    for (k, v) in &spec.env {
        program = program.env(k, v);
    }
    let running = program
        .spawn(None)
        .map_err(|e| setup(format!("could not start the scratch server: {e}")))?;
    Ok(Server {
        running: Some(running),
    })
}

/// How long the scratch server gets to stop after SIGQUIT.
pub(super) const SERVER_STOP_GRACE: Duration = Duration::from_secs(30);

/// Wait until the scratch server is ready out of recovery, it exits, the
/// timeout passes or `stop` is set. Returns the log's recovery lines.
pub(super) fn wait_ready(
    server: &mut Server,
    log: &Path,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Vec<String>, Fail> {
    let began = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if server_log::ready(&text) {
            return Ok(server_log::recovery_lines(&text)
                .into_iter()
                .map(str::to_string)
                .collect());
        }
        if let Some(status) = server.exited() {
            return Err(verdict(format!(
                "the restored cluster did not start ({status}): {}",
                log_tail(log, 8)
            )));
        }
        if stop.load(Ordering::Relaxed) {
            return Err(setup("the drill was stopped"));
        }
        if began.elapsed() > timeout {
            return Err(verdict(format!(
                "recovery did not finish within {} s (option timeout): {}",
                timeout.as_secs(),
                log_tail(log, 4)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
