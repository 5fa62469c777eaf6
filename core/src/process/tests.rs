//! The runner, on real programs (`sh` only here, as the program under test).
use super::*;
use std::sync::atomic::AtomicBool;

fn never() -> AtomicBool {
    AtomicBool::new(false)
}

fn sh(script: &str) -> Program {
    Program::new("sh").args(["-c", script])
}

fn program_error(r: Result<Finished, Error>) -> ProgramError {
    match r {
        Err(Error::Program(e)) => e,
        Err(e) => panic!("not a program error: {e}"),
        Ok(f) => panic!("it succeeded: {f:?}"),
    }
}

/// Whether `pid` is gone (or a zombie no one reaped yet), waiting up to 5 s.
fn gone(pid: i32) -> bool {
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(5) {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        });
        if !alive {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Start `script` (which prints a pid first) and read that pid.
fn spawn_printing_a_pid(program: Program) -> (Running, i32) {
    use std::io::BufRead;
    let mut running = program.stdout(Stdout::Pipe).spawn(None).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(running.take_stdout().unwrap())
        .read_line(&mut line)
        .unwrap();
    (running, line.trim().parse().expect("a pid"))
}

#[test]
fn a_timeout_stops_the_whole_group_grandchildren_too() {
    let began = Instant::now();
    // The shell's background child is the program's grandchild.
    let (mut running, grandchild) = spawn_printing_a_pid(
        sh("echo complaint >&2; sleep 100 & echo $!; sleep 100").timeout(Duration::from_secs(1)),
    );
    let e = running.finish(false).unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(
        e,
        ProgramError::TimedOut {
            program: "sh".into(),
            limit: Duration::from_secs(1),
            stderr: "complaint".into()
        }
    );
    assert!(gone(grandchild), "the grandchild {grandchild} survived");
    assert_eq!(
        e.to_string(),
        "sh did not finish within 1 s and was stopped: complaint"
    );
    assert!(e.is_transient(), "a timeout may pass");
    assert!(e.hint().is_some());
    // The same when run to its end.
    let e = program_error(
        sh("sleep 100 & sleep 100")
            .timeout(Duration::from_millis(200))
            .run(&never()),
    );
    assert!(matches!(e, ProgramError::TimedOut { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "sh did not finish within 0.2 s and was stopped"
    );
}

#[test]
fn a_program_that_ignores_its_stop_signal_is_killed_after_the_grace_period() {
    let began = Instant::now();
    let e = program_error(
        sh("trap '' TERM; sleep 100")
            .timeout(Duration::from_millis(100))
            .stop_signal(libc::SIGTERM, Duration::from_millis(300))
            .run(&never()),
    );
    assert!(matches!(e, ProgramError::TimedOut { .. }), "{e:?}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
}

#[test]
fn cancellation_stops_a_silent_program() {
    let cancel = Arc::new(AtomicBool::new(false));
    let setter = Arc::clone(&cancel);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        setter.store(true, Ordering::SeqCst);
    });
    let began = Instant::now();
    let e = program_error(sh("sleep 100 & sleep 100").run(&cancel));
    assert_eq!(
        e,
        ProgramError::Cancelled {
            program: "sh".into()
        }
    );
    assert_eq!(e.to_string(), "sh was cancelled");
    assert!(!e.is_transient(), "a cancel is its own outcome");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    // The same through a running handle.
    let cancel = Arc::new(AtomicBool::new(false));
    let mut running = sh("sleep 100").spawn(Some(Arc::clone(&cancel))).unwrap();
    assert!(!running.has_ended());
    cancel.store(true, Ordering::SeqCst);
    assert!(matches!(
        running.finish(false),
        Err(ProgramError::Cancelled { .. })
    ));
    assert!(running.has_ended());
}

#[test]
fn a_failure_carries_the_bounded_end_of_standard_error() {
    // ~100 KiB of complaints, more than a pipe holds: read on its own
    // thread, so the program never blocks on it.
    let e = program_error(
        sh("i=0; while [ $i -lt 3000 ]; do echo \"complaint $i: ..........................\"; i=$((i+1)); done >&2; exit 3")
            .stderr_tail(1000)
            .run(&never()),
    );
    let ProgramError::Failed { status, stderr, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(status, "exit status 3");
    assert!(stderr.starts_with("..."), "{stderr}");
    assert!(stderr.len() <= 1003, "{}", stderr.len());
    assert!(
        stderr.ends_with("complaint 2999: .........................."),
        "the end is kept: {stderr}"
    );
    let e = program_error(sh("echo out; echo 'psql: error: boom' >&2; exit 2").run(&never()));
    assert_eq!(e.to_string(), "sh failed: exit status 2: psql: error: boom");
    assert_eq!(e.detail(), "exit status 2: psql: error: boom");
    assert_eq!(e.stderr(), "psql: error: boom");
    assert!(
        !e.is_transient(),
        "a failure is permanent unless its words say"
    );
    let e = program_error(
        sh("echo 'FATAL:  the database system is shutting down' >&2; exit 1").run(&never()),
    );
    assert!(e.is_transient(), "{e}");
    // A signal, and the crate's error around it.
    let e = Error::from(program_error(sh("kill -9 $$").run(&never())));
    assert_eq!(e.to_string(), "sh failed: terminated by signal 9 (SIGKILL)");
    assert_eq!(e.primary(), "sh failed");
    assert_eq!(
        e.detail().as_deref(),
        Some("Terminated by signal 9 (SIGKILL)")
    );
    assert!(e.hint().is_some());
}

#[test]
fn the_environment_is_the_allow_list_the_groups_and_the_additions() {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let parent = [
        ("PATH", path.as_str()),
        ("HOME", "/home/ark"),
        ("ARK_TEST_SECRET", "leak"),
        ("PGDATA", "/primary"),
        ("PGHOST", "/primary-socket"),
        ("AWS_SECRET_ACCESS_KEY", "key"),
    ];
    let env = |policy: Env| {
        Program::new("env")
            .parent_env(&parent)
            .env_policy(policy)
            .env("PGPORT", "5999")
            .stdout(Stdout::Capture)
            .run(&never())
            .unwrap()
            .stdout_text()
    };
    let clean = env(Env::clean());
    let mut names: Vec<&str> = clean
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    names.sort();
    assert_eq!(names, ["HOME", "PATH", "PGPORT"], "{clean}");
    let libpq = env(Env::clean().libpq());
    assert!(libpq.contains("PGHOST=/primary-socket"), "{libpq}");
    assert!(
        !libpq.contains("PGDATA") && !libpq.contains("ARK_TEST_SECRET"),
        "{libpq}"
    );
    let repository = env(Env::clean().repository());
    assert!(
        repository.contains("AWS_SECRET_ACCESS_KEY=key"),
        "{repository}"
    );
    assert!(!repository.contains("PGHOST"), "{repository}");
    // This process's own environment is cleaned the same way.
    let real = Program::new("env")
        .stdout(Stdout::Capture)
        .run(&never())
        .unwrap()
        .stdout_text();
    for l in real.lines() {
        let name = l.split_once('=').map_or(l, |(k, _)| k);
        assert!(Env::clean().passes(name.as_ref()), "{name} passed: {real}");
    }
}

#[test]
fn input_and_output_are_pumped_on_threads() {
    // More than a pipe holds, both ways: no deadlock.
    let input: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let done = Program::new("cat")
        .stdin_bytes(input.clone())
        .stdout(Stdout::Capture)
        .run(&never())
        .unwrap();
    assert_eq!(done.stdout, input);
    assert!(!done.stdout_truncated && done.status.success());
    // A program that does not read its input is fine.
    let done = sh("echo ok")
        .stdin_bytes(input)
        .stdout(Stdout::Capture)
        .run(&never())
        .unwrap();
    assert_eq!(done.stdout_text(), "ok");
}

#[test]
fn a_missing_program_is_named() {
    let e = Program::new("/nonexistent/psql").run(&never()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("could not run \"/nonexistent/psql\": No such file"),
        "{e}"
    );
    assert!(Program::new("/nonexistent/postgres").spawn(None).is_err());
}

/// The process group and session of a `sh` run as `program`, from
/// `/proc/<pid>/stat`, and its pid.
fn group_and_session(program: Program) -> (i32, i32, i32) {
    let out = program
        .stdout(Stdout::Capture)
        .run(&never())
        .unwrap()
        .stdout_text();
    let (pid, rest) = out.split_once(' ').unwrap();
    let fields: Vec<&str> = rest.rsplit_once(") ").unwrap().1.split(' ').collect();
    (
        pid.parse().unwrap(),
        fields[2].parse().unwrap(),
        fields[3].parse().unwrap(),
    )
}

#[test]
fn each_program_has_a_group_of_its_own_a_server_a_session() {
    // SAFETY: getsid(0) cannot fail.
    let our_session = unsafe { libc::getsid(0) };
    let (pid, group, session) = group_and_session(sh("echo $$ $(cat /proc/$$/stat)"));
    assert_eq!(group, pid, "a group of its own");
    assert_eq!(session, our_session, "in pg_ark's session");
    let (pid, group, session) = group_and_session(sh("echo $$ $(cat /proc/$$/stat)").new_session());
    assert_eq!((group, session), (pid, pid), "a session of its own");
}

#[test]
fn a_running_program_is_stopped_when_dropped() {
    let began = Instant::now();
    let (running, grandchild) = spawn_printing_a_pid(sh("sleep 100 & echo $!; sleep 100"));
    let pid = running.id();
    drop(running);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert!(gone(pid as i32) && gone(grandchild));
}

#[test]
fn a_running_program_times_out_too() {
    let mut running = Program::new("sleep")
        .arg("100")
        .timeout(Duration::from_millis(200))
        .spawn(None)
        .unwrap();
    assert!(matches!(
        running.finish(false),
        Err(ProgramError::TimedOut { .. })
    ));
    // The outcome is kept.
    assert!(matches!(
        running.outcome(),
        Some(Err(ProgramError::TimedOut { .. }))
    ));
}

#[test]
fn a_program_dies_with_the_thread_that_started_it() {
    let mut running = std::thread::spawn(|| {
        Program::new("sleep")
            .arg("100")
            .die_with_parent(libc::SIGTERM)
            .spawn(None)
            .unwrap()
    })
    .join()
    .unwrap();
    let began = Instant::now();
    match running.finish(false) {
        Err(ProgramError::Failed { status, .. }) => {
            assert_eq!(status, "terminated by signal 15 (SIGTERM)")
        }
        other => panic!("{other:?}"),
    }
    assert!(began.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_display_is_the_argument_vector() {
    let p = Program::new("/usr/bin/psql").args(["-X", "-f", "a b.sql"]);
    assert_eq!(p.to_string(), "/usr/bin/psql -X -f a b.sql");
    assert_eq!(p.name(), "psql");
    assert_eq!(p.get_program(), Path::new("/usr/bin/psql"));
}

/// A program started from a thread that blocks every signal (as pg_ark's
/// work threads do), in a process that ignores one (as PostgreSQL's
/// workers do), starts with none blocked and none ignored: else it could
/// not be stopped with its stop signal, and the tools pg_ark runs could
/// not stop their own children (Barman's WAL receiver ignored SIGINT).
#[test]
fn a_program_starts_with_no_signal_blocked_or_ignored() {
    // SAFETY: SIGUSR2 is nobody's in this test process; restored below.
    let before = unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
    let r = crate::threads::with_signals_blocked(|| {
        std::thread::spawn(|| {
            Program::new("/bin/cat")
                .arg("/proc/self/status")
                .stdout(Stdout::Capture)
                .run(&AtomicBool::new(false))
        })
    })
    .join()
    .unwrap();
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGUSR2, before) };
    let out = r.unwrap().stdout_text();
    let mask = |field: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{out}");
    assert_eq!(mask("SigIgn:") & (1 << (libc::SIGUSR2 - 1)), 0, "{out}");
}
