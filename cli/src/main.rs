//! `pg_ark`: the command-line side of pg_ark, for when the server is down or
//! the database is gone. It links only `pg_ark_core`, never pgrx, so it runs
//! anywhere the repository can be read. One file per subcommand.
//!
//! Exit codes: 0 success; 1 an error, or for `wal-get` *quietly* a file that
//! is not in the repository (how recovery learns it has reached the end of
//! the archive); 2 bad usage (clap's convention); 255 for `wal-get` errors
//! that must stop recovery (PostgreSQL reads any status below 126 as "no
//! such file", which would end recovery early and promote at the wrong
//! point).
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod info;
mod location;
mod progress;
mod rekey;
mod repo_opts;
mod restore;
mod restore_logical;
mod verify;
mod wal_get;

#[derive(Parser, Debug)]
#[command(name = "pg_ark", version, about = "pg_ark: PostgreSQL backups managed by PostgreSQL", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a repository URL and print the location it names
    Location(location::Args),
    /// Fetch a WAL file for recovery: restore_command = 'pg_ark wal-get --repo URL %f %p'
    ///
    /// The file is verified (checksum, and for segments the system identifier
    /// in its first page) and decompressed into DEST. A file that is not in the
    /// repository exits 1 without a message: the normal end of recovery. Any
    /// other failure (corrupt or foreign file, unreachable repository after
    /// retries, full disk) exits 255 with a message, so recovery stops
    /// instead of finishing short.
    WalGet(wal_get::Args),
    /// Re-read physical backups and check every file and the WAL each needs
    ///
    /// Every object a restore of the backup would read (its own and its
    /// parents') is read and checked against its checksum and the manifest,
    /// and the WAL from the backup's start to its stop must be in the
    /// repository and intact. Each problem is printed with its file; any
    /// problem exits 1.
    Verify(verify::Args),
    /// Rotate an encrypted repository's keys: wrap every data key to new recipients
    ///
    /// With an identity that opens the current key objects (--identity-file)
    /// and the new recipients (--recipients-file), each data key gets a key
    /// object of the next generation; no backup or WAL object is rewritten.
    /// Run it again after an interruption. --remove-old then deletes the old
    /// key objects, so that the old identity can be destroyed.
    Rekey(rekey::Args),
    /// Restore a physical backup into a data directory, to a point in time
    ///
    /// From the repository alone (no server, no database, no catalog): the
    /// chain that reaches the target is rebuilt into DIR, every file checked
    /// against its manifest, and recovery.signal and the recovery settings
    /// (restore_command = 'pg_ark wal-get ...', recovery_target_*) are
    /// written. --dry-run prints the plan, as ark.restore_plan() does.
    Restore(Box<restore::Args>),
    /// What a repository holds: clusters, chains, backups, WAL per timeline
    /// with its gaps, logical dumps (--json: the stable document)
    Info(info::Args),
    /// Restore a logical dump into a database with pg_restore
    ///
    /// The newest complete dump of --database (or --dump LABEL), every
    /// object checked against its SHA-256 first. --if-empty restores only
    /// into a database without user tables (created if absent) and
    /// otherwise exits 0; without it a database that is not empty is
    /// refused unless --clean.
    RestoreLogical(Box<restore_logical::Args>),
}

/// How a command ended, when not in plain success.
pub enum Failure {
    /// Exit 1 without a message.
    Quiet,
    /// Exit 1 with the error and its hint.
    Error(pg_ark_core::Error),
    /// Exit 255 with the error and its hint: PostgreSQL stops recovery.
    Fatal(pg_ark_core::Error),
    /// Exit 1 with this message.
    Message(String),
}

impl From<pg_ark_core::Error> for Failure {
    fn from(e: pg_ark_core::Error) -> Self {
        Failure::Error(e)
    }
}

/// A status PostgreSQL's restore_command handling treats as fatal (any
/// above 125). Not 126 or 127, which PostgreSQL reports as "command not
/// executable" and "command not found".
pub const EXIT_STOP_RECOVERY: u8 = 255;

fn report(e: &pg_ark_core::Error) {
    eprintln!("pg_ark: error: {e}");
    if let Some(h) = e.hint() {
        eprintln!("pg_ark: hint: {h}");
    }
}

/// For `wal-get`: a panic anywhere (the main thread or a fetch thread) must
/// stop recovery, never read as "no such file". Rust's own exit status
/// after a panic, 101, is below 126, which PostgreSQL takes for the end of
/// the archive: it would promote at the wrong point.
fn stop_recovery_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("pg_ark: error: wal-get panicked; recovery must stop here, not end early");
        std::process::exit(i32::from(EXIT_STOP_RECOVERY));
    }));
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("wal-get") {
        stop_recovery_on_panic();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A restore_command with bad options must stop recovery too:
            // clap's usual status 2 would read as "no such file".
            let wal_get = std::env::args().nth(1).as_deref() == Some("wal-get");
            if wal_get && e.use_stderr() {
                let _ = e.print();
                return ExitCode::from(EXIT_STOP_RECOVERY);
            }
            e.exit()
        }
    };
    let result = match cli.command {
        Command::Location(args) => location::run(&args),
        Command::WalGet(args) => wal_get::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Restore(args) => restore::run(&args),
        Command::Info(args) => info::run(&args),
        Command::RestoreLogical(args) => restore_logical::run(&args),
        Command::Rekey(args) => rekey::run(&args),
    };
    // Read through --first-versions or --as-of: what was tampered with,
    // and what was stored after the time (ignored).
    let (tampered, later) = repo_opts::tampering();
    for t in tampered {
        eprintln!("pg_ark: warning: tampering: {t}");
    }
    const SHOWN: usize = 10;
    for t in later.iter().take(SHOWN) {
        eprintln!("pg_ark: note: {t}");
    }
    if later.len() > SHOWN {
        eprintln!(
            "pg_ark: note: and {} more object(s) first stored after the --as-of time, ignored",
            later.len() - SHOWN
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Quiet) => ExitCode::from(1),
        Err(Failure::Error(e)) => {
            report(&e);
            ExitCode::from(1)
        }
        Err(Failure::Message(m)) => {
            eprintln!("pg_ark: error: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Fatal(e)) => {
            report(&e);
            ExitCode::from(EXIT_STOP_RECOVERY)
        }
    }
}

#[cfg(test)]
mod tests {
    /// Set in the child that [`a_panic_in_wal_get_exits_255`] starts.
    const CHILD: &str = "PG_ARK_TEST_PANIC_CHILD";

    /// The real hook, in a real process: the test binary runs itself with
    /// only this test selected, and the child installs the hook and panics
    /// (in the main thread, or in a fetch thread).
    #[test]
    fn a_panic_in_wal_get_exits_255() {
        if let Ok(place) = std::env::var(CHILD) {
            super::stop_recovery_on_panic();
            if place == "thread" {
                let _ = std::thread::spawn(|| panic!("provoked in a fetch thread")).join();
                // A joined thread's panic must not be swallowed either.
                std::process::exit(0);
            }
            panic!("provoked in the main thread");
        }
        let exe = std::env::current_exe().expect("the test binary");
        for place in ["main", "thread"] {
            let out = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "tests::a_panic_in_wal_get_exits_255",
                    "--nocapture",
                ])
                .args(["--test-threads", "1"])
                .env(CHILD, place)
                .output()
                .expect("run the child");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(i32::from(super::EXIT_STOP_RECOVERY)),
                "a panic in the {place} thread: {stderr}"
            );
            assert!(stderr.contains("provoked in"), "{stderr}");
        }
    }
}
