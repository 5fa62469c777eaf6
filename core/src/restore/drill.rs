//! Restore drills: prove that a backup restores, by restoring it.
//!
//! A drill ([`run`]) does what a DBA would do by hand, from the repository
//! alone:
//!
//! 1. **Plan** the restore ([`super::plan::plan`]): the backup (the newest
//!    complete one, or the one named), its chain, the WAL recovery needs and
//!    where it stops (consistency by default, or a target).
//! 2. **Check the space** ([`space_needed`]): the restored files plus room
//!    for the WAL recovery fetches, plus a reserve when the scratch cluster
//!    would share a file system with the primary's data or WAL (a drill must
//!    never fill the primary's disk). Otherwise the drill is refused before a
//!    byte is written, with the numbers.
//! 3. **Rebuild** the backup into `<scratch>/data` ([`super::rebuild`]),
//!    every tablespace inside the scratch directory, every object checked
//!    against its digest and the manifest.
//! 4. **Recover**: a scratch postmaster ([`server_args`]), a child of the
//!    drill in a session of its own, with `PR_SET_PDEATHSIG` (it dies with
//!    the process that started it); no TCP listener, its socket in the
//!    private scratch directory, a `pg_hba.conf` that admits local
//!    connections only, no archiving, no logical replication workers, no
//!    preloaded libraries but those the drill names (pg_ark's scheduler, or
//!    another extension's job runner, must not run the primary's jobs from a
//!    copy of its catalog), English messages, and `restore_command` =
//!    `pg_ark wal-get` from the repository, exactly as a real restore.
//! 5. **Check** ([`checks`]): recovery ended where the plan said ("recovery
//!    stopping"), the server accepts connections out of recovery, and for
//!    each table named: `amcheck` (`verify_heapam` and `bt_index_check` with
//!    `heapallindexed` on its B-tree indexes, on every partition) and/or its
//!    row count (as the table's owner). The check scripts resolve the table
//!    by name and then run with `search_path = pg_catalog, pg_temp`, every
//!    function and operator qualified: objects of the restored database
//!    cannot stand in for them.
//! 6. **Clean up**: an immediate shutdown, then the scratch directory is
//!    removed, whatever happened.
//!
//! A failure is a **verdict on the backup** ([`Failed::verdict`]) when the
//! backup did not rebuild, recover or pass its checks; a drill that could
//! not be carried out (no space, no amcheck, a table that does not exist)
//! fails without judging the backup.
//!
//! The report's timings are the drill's measured recovery time objective:
//! `rebuild_seconds` (the download and the writes, which overlap),
//! `download_seconds` (time the rebuild threads spent waiting on the
//! repository, summed over threads), `recovery_seconds` (server start to
//! ready, WAL replay included) and `rto_seconds` (plan, rebuild and
//! recovery: the time from "restore now" to a usable cluster).
use super::plan::{self, RepoArgs, Request, Target, TimelineChoice};
use super::{Counters, Options};
use crate::pg::{control, log as server_log};
use crate::process::{Env, Program, ProgramError, Running, Stderr, Stdout};
use crate::repo::ClusterRepo;
use crate::wal::SegmentSize;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What to drill, and with what.
#[derive(Debug, Clone)]
pub struct Spec {
    pub job_id: i64,
    /// The backup to restore (`None`: the newest complete one that reaches
    /// the target).
    pub backup: Option<String>,
    pub target: Target,
    pub timeline: TimelineChoice,
    /// The scratch directory (created; it must not exist yet), inside the
    /// work directory.
    pub scratch: PathBuf,
    /// PostgreSQL's programs (`postgres`, `psql`, `pg_controldata`) and
    /// `pg_ark`.
    pub bindir: PathBuf,
    pub repo: RepoArgs,
    /// Extra environment of the scratch server (S3 keys for `wal-get`).
    pub env: Vec<(String, String)>,
    /// Rebuild threads.
    pub jobs: usize,
    /// The database the checks run in, and the role they run as.
    pub database: String,
    pub user: String,
    pub amcheck: Vec<String>,
    pub count: Vec<String>,
    /// The visibility-map check (`pg_visibility`'s `pg_check_visible` and
    /// `pg_check_frozen` on every relation with a map).
    pub visibility: VisibilityCheck,
    /// `shared_preload_libraries` of the scratch server.
    pub preload: Vec<String>,
    /// Settings the scratch server needs at least the primary's values of
    /// (`max_connections`, ...), as `(name, value)`.
    pub settings: Vec<(String, String)>,
    /// How long recovery, and each check, may take.
    pub timeout: Duration,
    /// The primary's data directory and WAL directory: never signalled,
    /// never filled.
    pub primary_dirs: Vec<PathBuf>,
    /// The primary's `wal_segment_size`; its repository entry must record
    /// the same.
    pub wal_segment_size: SegmentSize,
}

/// Which databases of the restored cluster the visibility check covers
/// (option `visibility`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VisibilityCheck {
    /// `false`: not checked.
    Off,
    /// Every database that accepts connections. `required` (`true`): the
    /// drill fails without `pg_visibility`; otherwise (the option absent)
    /// the check is skipped, and says so, where it is not installed.
    Every { required: bool },
    /// The databases named (a name or an array of names): required.
    Databases(Vec<String>),
}

impl VisibilityCheck {
    /// The check the job option `visibility` asks for: absent (the
    /// default: every database, where pg_visibility is available), `true`,
    /// `false`, a database name or an array of them.
    pub fn from_option(v: Option<&Value>) -> Result<VisibilityCheck, String> {
        match v {
            None | Some(Value::Null) => Ok(VisibilityCheck::Every { required: false }),
            Some(Value::Bool(true)) => Ok(VisibilityCheck::Every { required: true }),
            Some(Value::Bool(false)) => Ok(VisibilityCheck::Off),
            Some(Value::String(s)) if valid_database_name(s) => {
                Ok(VisibilityCheck::Databases(vec![s.clone()]))
            }
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|i| match i.as_str() {
                    Some(s) if valid_database_name(s) => Ok(s.to_string()),
                    _ => Err(format!("expected a database name, found {i}")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(VisibilityCheck::Databases),
            Some(Value::Array(_)) => Err("the array is empty".into()),
            Some(other) => Err(format!(
                "expected true, false, a database name or an array of them, found {other}"
            )),
        }
    }
}

/// A database name that psql cannot read as a connection string.
fn valid_database_name(d: &str) -> bool {
    !d.is_empty() && !d.contains('=') && !d.contains("://")
}

/// Room for what the drill writes besides the restored files: the prefetch
/// spool of `pg_ark wal-get` (at most 32 segments), the segment being
/// replayed, the first segment of the new timeline and the end of
/// recovery's checkpoint, plus 64 MiB for the server's own files.
pub fn space_needed(restored_bytes: u64, segments: u64, segment_size: SegmentSize) -> u64 {
    restored_bytes
        .saturating_add(segment_size.bytes().saturating_mul(segments.min(32) + 4))
        .saturating_add(64 * 1024 * 1024)
}

/// The reserve left free on a file system the drill shares with the
/// primary's data or WAL: a tenth of it, and at least 1 GiB.
pub fn shared_reserve(fs_total: u64) -> u64 {
    (fs_total / 10).max(1024 * 1024 * 1024)
}

/// Why a drill failed: the message, what was measured up to then, and
/// whether it is a verdict on the backup (it did not rebuild, recover or
/// pass its checks) rather than a drill that could not be carried out.
/// `transient`: the repository could not be reached (a job retries).
#[derive(Debug)]
pub struct Failed {
    pub message: String,
    pub report: Value,
    pub verdict: bool,
    pub transient: bool,
}

/// A failure inside the drill.
#[derive(Debug)]
struct Fail {
    message: String,
    /// A verdict on the backup.
    verdict: bool,
    /// May go away by itself (see [`crate::Error::is_transient`]).
    transient: bool,
}

fn setup(msg: impl Into<String>) -> Fail {
    Fail {
        message: msg.into(),
        verdict: false,
        transient: false,
    }
}

fn verdict(msg: impl Into<String>) -> Fail {
    Fail {
        message: msg.into(),
        verdict: true,
        transient: false,
    }
}

/// The drill could not be carried out because of `e`, with its hint.
fn setup_error(e: &crate::Error) -> Fail {
    let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
    Fail {
        message: format!("{e}{hint}"),
        verdict: false,
        transient: e.is_transient(),
    }
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// `shared_preload_libraries` without pg_ark.
pub fn preload_without_pg_ark(list: &[String]) -> String {
    list.iter()
        .map(|l| l.trim().trim_matches('"').to_string())
        .filter(|l| {
            let name = l.rsplit('/').next().unwrap_or(l);
            !l.is_empty() && name != "pg_ark" && name != "pg_ark.so"
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The scratch server's port: one no TCP listener holds now. The server
/// listens on no TCP port at all; the number names its socket in the
/// private scratch directory.
fn free_port() -> Result<u16, Fail> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| setup(format!("could not choose a port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| setup(format!("could not choose a port: {e}")))
}

/// What the scratch server's log says went wrong, for a message: its
/// errors and `pg_ark wal-get`'s messages (at most `n` lines), or else its
/// last `n` lines.
fn log_tail(log: &Path, n: usize) -> String {
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
struct Server {
    running: Option<Running>,
}

impl Server {
    /// Immediate shutdown (SIGQUIT; SIGKILL after 30 s): the cluster is
    /// thrown away.
    fn stop(&mut self) {
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
fn own_real_dir(path: &Path) -> Option<std::fs::Metadata> {
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
    let Some(pid) = super::live_postmaster(&data) else {
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
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

/// The environment of the drill's programs: the clean one (no `PG*`
/// variable of this process's: the primary's pg_ctl exports PGDATA, and
/// nothing may lead a child to the primary), in the C locale.
fn scratch_env() -> Env {
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
fn psql(
    spec: &Spec,
    stop: &AtomicBool,
    port: u16,
    sql: &str,
    vars: &[(&str, &str)],
) -> Result<String, String> {
    psql_in(spec, stop, port, &spec.database, sql, vars)
}

/// What a failed check says: psql's own words, on one line.
const CHECK_ERROR_BYTES: usize = 2000;

/// [`psql`] in database `database`.
fn psql_in(
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
fn server_args(spec: &Spec, port: u16) -> Vec<String> {
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
fn start_server(spec: &Spec, port: u16, log: &Path) -> Result<Server, Fail> {
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
const SERVER_STOP_GRACE: Duration = Duration::from_secs(30);

/// Wait until the scratch server is ready out of recovery, it exits, the
/// timeout passes or `stop` is set. Returns the log's recovery lines.
fn wait_ready(
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

/// Resolve table `:t` by name (the database's own search_path), then leave
/// only pg_catalog on the path: `:relid` (0 when there is none) and
/// `:missing`.
const RESOLVE: &str = "SELECT pg_catalog.to_regclass(:'t') IS NULL AS missing,
       coalesce(pg_catalog.to_regclass(:'t')::pg_catalog.oid, 0) AS relid \\gset
SET search_path = pg_catalog, pg_temp;
";

/// Create amcheck if it is not there (in a schema of its own), bring it up
/// to date; print its schema.
const AMCHECK_SETUP: &str = "SET search_path = pg_catalog, pg_temp;
SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_extension
                    WHERE extname OPERATOR(pg_catalog.=) 'amcheck') AS absent \\gset
\\if :absent
CREATE SCHEMA IF NOT EXISTS ark_drill;
CREATE EXTENSION amcheck WITH SCHEMA ark_drill;
\\else
ALTER EXTENSION amcheck UPDATE;
\\endif
SELECT n.nspname FROM pg_catalog.pg_extension e
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
 WHERE e.extname OPERATOR(pg_catalog.=) 'amcheck';
";

/// amcheck of table `:t` (or every leaf partition of it): "missing",
/// "kind <c>" for what is not a table, or the heaps checked, the problems
/// verify_heapam found and the B-tree indexes checked, one per line.
fn amcheck_script() -> String {
    format!(
        "{RESOLVE}\\if :missing
\\echo missing
\\else
SELECT c.relkind OPERATOR(pg_catalog.=) ANY ('{{r,p}}'::\"char\"[]) AS is_table, c.relkind AS kind
  FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) :relid::pg_catalog.oid \\gset
\\if :is_table
CREATE TEMPORARY TABLE ark_drill_rels AS
SELECT c.oid FROM pg_catalog.pg_class c
 WHERE c.oid OPERATOR(pg_catalog.=) :relid::pg_catalog.oid AND c.relkind OPERATOR(pg_catalog.=) 'r'
UNION
SELECT c.oid FROM pg_catalog.pg_partition_tree(:relid::pg_catalog.oid::pg_catalog.regclass) pt
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) pt.relid::pg_catalog.oid
 WHERE pt.isleaf AND c.relkind OPERATOR(pg_catalog.=) 'r';
SELECT pg_catalog.count(*) FROM pg_temp.ark_drill_rels;
SELECT pg_catalog.count(*)
  FROM pg_temp.ark_drill_rels r
 CROSS JOIN LATERAL :\"amschema\".verify_heapam(r.oid::pg_catalog.regclass, on_error_stop => false, check_toast => true) v;
SELECT pg_catalog.count(:\"amschema\".bt_index_check(i.indexrelid::pg_catalog.regclass, true))
  FROM pg_temp.ark_drill_rels r
  JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) r.oid
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
  JOIN pg_catalog.pg_am a ON a.oid OPERATOR(pg_catalog.=) c.relam
 WHERE a.amname OPERATOR(pg_catalog.=) 'btree' AND i.indisvalid;
\\else
\\echo kind :kind
\\endif
\\endif
"
    )
}

/// Row count of table `:t`, counted as its owner: "missing", "kind <c>"
/// for what is not a table (a view or a foreign table would run other
/// code), or the count.
fn count_script() -> String {
    format!(
        "{RESOLVE}\\if :missing
\\echo missing
\\else
SELECT c.relkind OPERATOR(pg_catalog.=) ANY ('{{r,p,m}}'::\"char\"[]) AS is_table, c.relkind AS kind,
       pg_catalog.pg_get_userbyid(c.relowner) AS owner
  FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) :relid::pg_catalog.oid \\gset
\\if :is_table
SET ROLE :\"owner\";
SELECT pg_catalog.format('SELECT pg_catalog.count(*) FROM %s', :relid::pg_catalog.oid::pg_catalog.regclass) \\gexec
\\else
\\echo kind :kind
\\endif
\\endif
"
    )
}

/// Whether `pg_visibility` can be created in the restored cluster, and the
/// databases that accept connections, as a JSON array.
const VISIBILITY_AVAILABLE: &str = "SET search_path = pg_catalog, pg_temp;
SELECT pg_catalog.count(*) FROM pg_catalog.pg_available_extensions
 WHERE name OPERATOR(pg_catalog.=) 'pg_visibility';
SELECT COALESCE(pg_catalog.json_agg(d.datname ORDER BY d.datname), '[]')
  FROM pg_catalog.pg_database d
 WHERE d.datallowconn AND d.datconnlimit OPERATOR(pg_catalog.<>) -2;
";

/// Create pg_visibility if it is not there (in a schema of its own), bring
/// it up to date; print its schema.
const VISIBILITY_SETUP: &str = "SET search_path = pg_catalog, pg_temp;
SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_extension
                    WHERE extname OPERATOR(pg_catalog.=) 'pg_visibility') AS absent \\gset
\\if :absent
CREATE SCHEMA IF NOT EXISTS ark_drill;
CREATE EXTENSION pg_visibility WITH SCHEMA ark_drill;
\\else
ALTER EXTENSION pg_visibility UPDATE;
\\endif
SELECT n.nspname FROM pg_catalog.pg_extension e
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
 WHERE e.extname OPERATOR(pg_catalog.=) 'pg_visibility';
";

/// The relations with a visibility map (tables, materialized views, TOAST
/// tables; not other sessions' temporary ones), as a condition on
/// `pg_class c`.
const HAS_VISIBILITY_MAP: &str = "c.relkind OPERATOR(pg_catalog.=) ANY ('{r,m,t}'::\"char\"[])
   AND c.relpersistence OPERATOR(pg_catalog.<>) 't'";

/// `pg_check_visible` and `pg_check_frozen` (schema `:vmschema`) on every
/// relation with a visibility map: one JSON object, `relations` (how many
/// were checked) and `problems` (those with tuples the map wrongly marks
/// all-visible or all-frozen: `relation`, `not_visible`, `not_frozen`).
fn visibility_script() -> String {
    format!(
        "SET search_path = pg_catalog, pg_temp;
SELECT pg_catalog.json_build_object(
  'relations', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c WHERE {HAS_VISIBILITY_MAP}),
  'problems', (SELECT COALESCE(pg_catalog.json_agg(p ORDER BY p.relation), '[]')
     FROM (SELECT c.oid::pg_catalog.regclass::pg_catalog.text AS relation,
                  v.n AS not_visible, f.n AS not_frozen
             FROM pg_catalog.pg_class c
            CROSS JOIN LATERAL (SELECT pg_catalog.count(*)
                  FROM :\"vmschema\".pg_check_visible(c.oid::pg_catalog.regclass)) v(n)
            CROSS JOIN LATERAL (SELECT pg_catalog.count(*)
                  FROM :\"vmschema\".pg_check_frozen(c.oid::pg_catalog.regclass)) f(n)
            WHERE {HAS_VISIBILITY_MAP}
              AND (v.n OPERATOR(pg_catalog.>) 0 OR f.n OPERATOR(pg_catalog.>) 0)) p));
"
    )
}

/// The visibility check of database `db` from the script's output: the
/// check's record, or the record and the failure (tuples the map wrongly
/// vouches for are a verdict on the backup).
fn visibility_outcome(db: &str, out: &str) -> Result<Value, (Value, Fail)> {
    let doc: Value = match serde_json::from_str(out.trim()) {
        Ok(d) => d,
        Err(_) => {
            let msg = format!("visibility check of database \"{db}\": unexpected output \"{out}\"");
            let check = json!({"check": "visibility", "database": db, "ok": false, "detail": msg});
            return Err((check, setup(msg)));
        }
    };
    let relations = doc["relations"].as_u64().unwrap_or(0);
    let problems = doc["problems"].as_array().cloned().unwrap_or_default();
    if problems.is_empty() {
        return Ok(json!({
            "check": "visibility", "database": db, "ok": true, "relations": relations,
            "detail": format!("pg_check_visible and pg_check_frozen found nothing on {relations} relation(s) with a visibility map"),
        }));
    }
    let named: Vec<String> = problems
        .iter()
        .take(10)
        .map(|p| {
            format!(
                "{} ({} tuple(s) not all-visible, {} not all-frozen)",
                p["relation"].as_str().unwrap_or("?"),
                p["not_visible"],
                p["not_frozen"]
            )
        })
        .collect();
    let more = if problems.len() > 10 {
        format!(" and {} more", problems.len() - 10)
    } else {
        String::new()
    };
    let msg = format!(
        "visibility: the visibility map of {} relation(s) in database \"{db}\" of the restored cluster marks pages all-visible or all-frozen whose tuples are not (pg_check_visible, pg_check_frozen): {}{more}",
        problems.len(),
        named.join(", ")
    );
    let check = json!({
        "check": "visibility", "database": db, "ok": false, "relations": relations,
        "problems": problems, "detail": msg,
    });
    Err((check, verdict(msg)))
}

/// The visibility check: every database it covers, one record each.
fn visibility_checks(
    spec: &Spec,
    stop: &AtomicBool,
    port: u16,
    done: &mut Vec<Value>,
) -> Result<(), (Value, Fail)> {
    let (required, named) = match &spec.visibility {
        VisibilityCheck::Off => return Ok(()),
        VisibilityCheck::Every { required } => (*required, None),
        VisibilityCheck::Databases(d) => (true, Some(d.clone())),
    };
    let failed = |msg: String, f: fn(String) -> Fail| {
        let check = json!({"check": "visibility", "ok": false, "detail": msg});
        Err((check, f(msg)))
    };
    let out = match psql(spec, stop, port, VISIBILITY_AVAILABLE, &[]) {
        Ok(out) => out,
        Err(e) => return failed(format!("visibility check: {e}"), setup),
    };
    let mut lines = out.lines();
    let available = lines.next().is_some_and(|n| n.trim() != "0");
    let every: Vec<String> = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    if !available {
        let msg = "pg_visibility is not available in the restored cluster's installation (it is a contrib module of PostgreSQL)".to_string();
        if required {
            return failed(
                format!("visibility check: {msg}; install it, or set \"visibility\": false"),
                setup,
            );
        }
        done.push(json!({"check": "visibility", "ok": true, "skipped": true, "detail": msg}));
        return Ok(());
    }
    let databases = named.unwrap_or(every);
    for db in &databases {
        let vmschema = match psql_in(spec, stop, port, db, VISIBILITY_SETUP, &[]) {
            Ok(s) if !s.is_empty() => s,
            other => {
                let e = other.err().unwrap_or_else(|| "it has no schema".into());
                let msg = format!(
                    "visibility check: pg_visibility could not be set up in database \"{db}\" of the restored cluster: {e}"
                );
                let check =
                    json!({"check": "visibility", "database": db, "ok": false, "detail": msg});
                return Err((check, setup(msg)));
            }
        };
        let vars = [("vmschema", vmschema.as_str())];
        match psql_in(spec, stop, port, db, &visibility_script(), &vars) {
            Ok(out) => done.push(visibility_outcome(db, &out)?),
            Err(e) => {
                let f: fn(String) -> Fail = if e == "the drill was stopped" {
                    setup
                } else {
                    verdict
                };
                let msg = format!(
                    "visibility check of database \"{db}\" in the restored cluster failed: {e}"
                );
                let check =
                    json!({"check": "visibility", "database": db, "ok": false, "detail": msg});
                return Err((check, f(msg)));
            }
        }
    }
    Ok(())
}

/// What a relkind is, in words.
fn relkind(out: &str) -> &'static str {
    match out.trim_start_matches("kind ").trim() {
        "v" => "a view",
        "m" => "a materialized view",
        "f" => "a foreign table",
        "S" => "a sequence",
        "i" | "I" => "an index",
        "c" => "a composite type",
        _ => "not a table",
    }
}

/// Run `check`'s `script` on table `vars["t"]`: its output, or the failed
/// check for a table that is missing or not a table (the drill could not
/// be carried out) or a script that failed (a verdict: the restored data
/// could not be read).
fn table_check(
    spec: &Spec,
    stop: &AtomicBool,
    port: u16,
    check: &str,
    script: &str,
    vars: &[(&str, &str)],
) -> Result<String, (Value, Fail)> {
    let table = vars.iter().find(|(k, _)| *k == "t").map_or("", |(_, v)| *v);
    let problem = |msg: String, f: fn(String) -> Fail| {
        let doc = json!({"check": check, "table": table, "ok": false, "detail": msg});
        Err((doc, f(msg)))
    };
    match psql(spec, stop, port, script, vars) {
        Ok(out) if out == "missing" => problem(
            format!(
                "{check}: there is no table \"{table}\" in database \"{}\" of the restored cluster",
                spec.database
            ),
            setup,
        ),
        Ok(out) if out.starts_with("kind ") => problem(
            format!("{check}: \"{table}\" is {}, not a table", relkind(&out)),
            setup,
        ),
        Ok(out) => Ok(out),
        Err(e) if e == "the drill was stopped" => problem(e, setup),
        Err(e) => problem(
            format!("{check} of table \"{table}\" in the restored cluster failed: {e}"),
            verdict,
        ),
    }
}

/// The checks of the restored cluster: one JSON object each.
fn checks(
    spec: &Spec,
    stop: &AtomicBool,
    port: u16,
    recovery: &[String],
) -> Result<Vec<Value>, (Vec<Value>, Fail)> {
    let mut done = Vec::new();
    let fail = |mut done: Vec<Value>, check: Value, f: Fail| {
        done.push(check);
        Err((done, f))
    };
    // Recovery ended where it was meant to: a target (or consistency) was
    // reached, or all the WAL was replayed.
    let reached = server_log::stop_line(recovery, spec.target == Target::Latest);
    match reached {
        Some(line) => done.push(json!({"check": "recovery", "ok": true, "detail": line})),
        None => {
            let msg = "the server started, but its log does not say that recovery reached the target (no \"recovery stopping\" line)".to_string();
            return fail(
                done,
                json!({"check": "recovery", "ok": false, "detail": msg}),
                verdict(msg),
            );
        }
    }
    match psql(
        spec,
        stop,
        port,
        "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('server_version');",
        &[],
    ) {
        Ok(out) if out.starts_with("f|") => done.push(json!({
            "check": "started", "ok": true,
            "detail": format!("accepts connections, out of recovery (PostgreSQL {})", &out[2..]),
        })),
        Ok(out) => {
            let msg = format!("the restored cluster is still in recovery ({out})");
            return fail(
                done,
                json!({"check": "started", "ok": false, "detail": msg}),
                verdict(msg),
            );
        }
        Err(e) => {
            let msg = format!(
                "could not connect to the restored cluster as \"{}\" in database \"{}\": {e}",
                spec.user, spec.database
            );
            return fail(
                done,
                json!({"check": "started", "ok": false, "detail": msg}),
                setup(msg),
            );
        }
    }
    let mut amschema = String::new();
    if !spec.amcheck.is_empty() {
        match psql(spec, stop, port, AMCHECK_SETUP, &[]) {
            Ok(s) if !s.is_empty() => amschema = s,
            other => {
                let e = other.err().unwrap_or_else(|| "it has no schema".into());
                let msg = format!("amcheck is not available in the restored cluster: {e}");
                return fail(
                    done,
                    json!({"check": "amcheck", "ok": false, "detail": msg}),
                    setup(msg),
                );
            }
        }
    }
    let script = amcheck_script();
    for table in &spec.amcheck {
        let vars = [("t", table.as_str()), ("amschema", amschema.as_str())];
        let out = match table_check(spec, stop, port, "amcheck", &script, &vars) {
            Ok(out) => out,
            Err((check, f)) => return fail(done, check, f),
        };
        let problem = |msg: String, f: fn(String) -> Fail| {
            let check = json!({"check": "amcheck", "table": table, "ok": false, "detail": msg});
            (check, f(msg))
        };
        let mut it = out.lines().map(|n| n.trim().parse::<u64>());
        let (check, f) = match (it.next(), it.next(), it.next()) {
            (Some(Ok(rels)), Some(Ok(0)), Some(Ok(indexes))) => {
                done.push(json!({
                    "check": "amcheck", "table": table, "ok": true,
                    "detail": format!("{rels} heap(s) verified; {indexes} B-tree index(es) checked with heapallindexed"),
                }));
                continue;
            }
            (Some(Ok(_)), Some(Ok(n)), Some(Ok(_))) => problem(
                format!(
                    "amcheck: verify_heapam found {n} problem(s) in table \"{table}\" of the restored cluster"
                ),
                verdict,
            ),
            _ => problem(
                format!("amcheck of table \"{table}\": unexpected output \"{out}\""),
                setup,
            ),
        };
        return fail(done, check, f);
    }
    let script = count_script();
    for table in &spec.count {
        let out = match table_check(spec, stop, port, "count", &script, &[("t", table)]) {
            Ok(out) => out,
            Err((check, f)) => return fail(done, check, f),
        };
        match out.trim().parse::<i64>() {
            Ok(rows) => {
                done.push(json!({"check": "count", "table": table, "ok": true, "rows": rows}))
            }
            Err(_) => {
                let msg = format!("count of table \"{table}\": unexpected output \"{out}\"");
                let check = json!({"check": "count", "table": table, "ok": false, "detail": msg});
                return fail(done, check, setup(msg));
            }
        }
    }
    if let Err((check, f)) = visibility_checks(spec, stop, port, &mut done) {
        return fail(done, check, f);
    }
    Ok(done)
}

/// The `max_*` settings recovery needs at least the backup's values of, as
/// `pg_controldata` reads them from the restored control file (none if it
/// cannot: the server then says what it misses).
fn control_settings(spec: &Spec, data: &Path, stop: &AtomicBool) -> Vec<(String, u64)> {
    control::pg_controldata(&spec.bindir, data, stop)
        .map(|c| c.recovery_minimums())
        .unwrap_or_default()
}

/// The larger of each setting's value in `ours` and in `control`.
fn at_least(ours: &[(String, String)], control: &[(String, u64)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ours.to_vec();
    for (name, v) in control {
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, cur)) => {
                if cur.parse::<u64>().is_ok_and(|c| c < *v) {
                    *cur = v.to_string();
                }
            }
            None => out.push((name.clone(), v.to_string())),
        }
    }
    out
}

/// Progress as the drill goes: the phase and a detail.
pub type Progress<'a> = &'a (dyn Fn(&str, Value) + Sync);

/// Run a drill. Whatever happens, the scratch server is stopped and the
/// scratch directory (if this drill made it) removed before this returns.
/// The report (a JSON object, also for a failure) names the backup, the
/// checks and the timings.
pub fn run(
    cluster: &ClusterRepo,
    spec: &Spec,
    counters: &Counters,
    stop: &AtomicBool,
    progress: Progress<'_>,
) -> Result<Value, Failed> {
    let began = Instant::now();
    let mut report = json!({
        "job_id": spec.job_id,
        "repository": cluster.location(),
        "target": target_text(&spec.target),
        "scratch": spec.scratch.display().to_string(),
        "timings": {},
    });
    let mut created = false;
    let result = drill(
        cluster,
        spec,
        counters,
        stop,
        progress,
        &mut report,
        began,
        &mut created,
    );
    // Clean up: the server is stopped already (dropped inside), the
    // directory goes now.
    let removed = match std::fs::remove_dir_all(&spec.scratch) {
        _ if !created => Ok(()),
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(setup(format!(
            "could not remove the scratch directory {}: {e}",
            spec.scratch.display()
        ))),
    };
    report["timings"]["total_seconds"] = json!(seconds(began.elapsed()));
    report["at"] = json!(crate::logical::rfc3339_utc(crate::logical::now_epoch()));
    match (result, removed) {
        (Ok(()), Ok(())) => {
            report["ok"] = json!(true);
            Ok(report)
        }
        (Err(f), _) | (Ok(()), Err(f)) => {
            report["ok"] = json!(false);
            report["error"] = json!(f.message);
            Err(Failed {
                message: f.message,
                report,
                verdict: f.verdict,
                transient: f.transient,
            })
        }
    }
}

fn target_text(t: &Target) -> String {
    match t {
        Target::Latest => "latest".into(),
        Target::Immediate => "immediate (consistency)".into(),
        Target::Time(us) => format!("time {}", plan::format_time(*us)),
        Target::Lsn(l) => format!("lsn {}", plan::format_lsn(*l)),
        Target::Xid(x) => format!("xid {x}"),
        Target::Name(n) => format!("restore point \"{n}\""),
    }
}

/// Free and total bytes, and the device, of the file system of `path`.
fn file_system(path: &Path) -> Result<(u64, u64, u64), Fail> {
    let free = crate::workdir::free_bytes(path).map_err(|e| setup(e.to_string()))?;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| setup(format!("{}: a NUL byte in the path", path.display())))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statvfs buffer we own.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(setup(format!(
            "could not check the file system of {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    let dev = std::fs::metadata(path)
        .map(|m| m.dev())
        .map_err(|e| setup(format!("{}: {e}", path.display())))?;
    Ok((free, st.f_blocks.saturating_mul(st.f_frsize), dev))
}

/// Cancels the rebuild when the drill stops; ends with its scope, however
/// the rebuild ends (a panic included).
struct Finished<'a>(&'a AtomicBool);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[allow(clippy::too_many_arguments)]
fn drill(
    cluster: &ClusterRepo,
    spec: &Spec,
    counters: &Counters,
    stop: &AtomicBool,
    progress: Progress<'_>,
    report: &mut Value,
    began: Instant,
    created: &mut bool,
) -> Result<(), Fail> {
    progress("plan", json!({}));
    cluster
        .expect_segment_size(spec.wal_segment_size)
        .map_err(|e| setup_error(&e))?;
    let req = Request {
        target: spec.target.clone(),
        timeline: spec.timeline.clone(),
        backup: spec.backup.clone(),
    };
    let p = plan::plan(cluster, &req, "promote").map_err(|e| setup_error(&e))?;
    let info = p.backup().clone();
    report["backup_id"] = json!(info.backup_id);
    report["kind"] = json!(info.kind);
    report["chain"] = json!(p
        .chain
        .iter()
        .map(|b| b.backup_id.clone())
        .collect::<Vec<_>>());
    report["planned_stop"] = json!(p.stop);
    report["wal_segments"] = json!(p.segments);
    report["restored_bytes"] = json!(info.original_bytes);
    report["timings"]["plan_seconds"] = json!(seconds(began.elapsed()));

    // The place and the space, before anything is written.
    let work = spec.scratch.parent().unwrap_or(Path::new("/"));
    check_work_directory(work).map_err(setup)?;
    let (available, total, dev) = file_system(work)?;
    let mut needed = space_needed(info.original_bytes, p.segments, spec.wal_segment_size);
    let shared: Vec<String> = spec
        .primary_dirs
        .iter()
        .filter(|d| std::fs::metadata(d).is_ok_and(|m| m.dev() == dev))
        .map(|d| d.display().to_string())
        .collect();
    let reserve = if shared.is_empty() {
        0
    } else {
        shared_reserve(total)
    };
    report["space"] = json!({
        "needed_bytes": needed, "reserve_bytes": reserve, "available_bytes": available,
        "shared_with": shared,
    });
    needed = needed.saturating_add(reserve);
    if available < needed {
        let why = if shared.is_empty() {
            String::new()
        } else {
            format!(
                ", and it keeps {} free for the primary, whose {} is on that file system",
                plan::human_bytes(reserve),
                shared.join(" and ")
            )
        };
        return Err(setup(format!(
            "not enough free space for the drill in {}: it needs {} ({} of restored files and room for the WAL recovery fetches{why}), and {} is free. Free space there, or set ark.work_directory to a larger file system",
            work.display(),
            plan::human_bytes(needed),
            plan::human_bytes(info.original_bytes),
            plan::human_bytes(available)
        )));
    }
    if std::fs::symlink_metadata(&spec.scratch).is_ok() {
        return Err(setup(format!(
            "the scratch directory {} exists already",
            spec.scratch.display()
        )));
    }
    std::fs::create_dir(&spec.scratch)
        .map_err(|e| setup(format!("could not create {}: {e}", spec.scratch.display())))?;
    *created = true;
    std::fs::set_permissions(&spec.scratch, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| setup(format!("{}: {e}", spec.scratch.display())))?;
    let data = spec.scratch.join("data");

    // Rebuild, every tablespace inside the scratch directory.
    progress(
        "rebuild",
        json!({"backup_id": info.backup_id, "bytes_total": info.original_bytes}),
    );
    let opts = Options {
        jobs: spec.jobs.max(1),
        delta: false,
        tablespaces: Default::default(),
        tablespace_root: Some(spec.scratch.join("tablespaces")),
    };
    let rebuild_began = Instant::now();
    let finished = AtomicBool::new(false);
    let rebuilt = std::thread::scope(|s| {
        // The drill's stop flag cancels the rebuild.
        s.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                if stop.load(Ordering::Relaxed) {
                    counters.cancel.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let _done = Finished(&finished);
        super::rebuild(cluster, &info.backup_id, &data, &opts, counters)
    });
    let rebuilt = match rebuilt {
        Ok(r) => r,
        Err(_) if stop.load(Ordering::Relaxed) => return Err(setup("the drill was stopped")),
        // The repository out of reach says nothing about the backup.
        Err(e) if e.is_transient() => return Err(setup_error(&e)),
        Err(e) => {
            return Err(verdict(format!(
                "restoring backup \"{}\" failed: {e}",
                info.backup_id
            )))
        }
    };
    let rebuild_s = rebuild_began.elapsed();
    report["files"] = json!(rebuilt.files);
    report["fetched_bytes"] = json!(rebuilt.fetched);
    report["timings"]["rebuild_seconds"] = json!(seconds(rebuild_s));
    report["timings"]["download_seconds"] = json!(seconds(Duration::from_nanos(
        counters.fetch_nanos.load(Ordering::Relaxed)
    )));
    if stop.load(Ordering::Relaxed) {
        return Err(setup("the drill was stopped"));
    }

    // Recovery settings, as pg_ark restore writes them.
    let mut get = vec![
        spec.bindir.join("pg_ark").display().to_string(),
        "wal-get".into(),
    ];
    get.extend(spec.repo.words());
    let restore_command = format!(
        "{} %f %p",
        get.iter()
            .map(|w| plan::shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    );
    super::write_recovery(&data, &restore_command, &p.settings, true)
        .map_err(|e| setup(e.to_string()))?;
    if !data.join("postgresql.conf").exists() {
        // The configuration lived outside the data directory (Debian's
        // /etc/postgresql): the command line carries what matters.
        std::fs::write(
            data.join("postgresql.conf"),
            "# pg_ark drill: the original configuration was outside the data directory\n",
        )
        .map_err(|e| setup(format!("{}: {e}", data.display())))?;
    }
    let hba =
        "# pg_ark drill: local connections of the server's OS user only\nlocal all all trust\n";
    std::fs::write(spec.scratch.join("pg_hba.conf"), hba)
        .and_then(|()| std::fs::write(spec.scratch.join("pg_ident.conf"), ""))
        .map_err(|e| setup(format!("{}: {e}", spec.scratch.display())))?;
    let mut run_spec = spec.clone();
    run_spec.settings = at_least(&spec.settings, &control_settings(spec, &data, stop));

    // Recover.
    let port = free_port()?;
    report["port"] = json!(port);
    progress(
        "recovery",
        json!({"backup_id": info.backup_id, "port": port}),
    );
    let log = spec.scratch.join("server.log");
    let recovery_began = Instant::now();
    let mut server = start_server(&run_spec, port, &log)?;
    let recovery = wait_ready(&mut server, &log, spec.timeout, stop);
    report["timings"]["recovery_seconds"] = json!(seconds(recovery_began.elapsed()));
    let recovery = recovery?;
    report["timings"]["rto_seconds"] = json!(seconds(began.elapsed()));
    report["recovery"] = json!(recovery);

    // Check.
    progress("checks", json!({"backup_id": info.backup_id, "port": port}));
    let checks_began = Instant::now();
    let checked = checks(&run_spec, stop, port, &recovery);
    report["timings"]["checks_seconds"] = json!(seconds(checks_began.elapsed()));
    server.stop();
    match checked {
        Ok(done) => {
            report["checks"] = json!(done);
            Ok(())
        }
        Err((done, f)) => {
            report["checks"] = json!(done);
            Err(f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn mib(n: u64) -> SegmentSize {
        SegmentSize::new(n * MIB).unwrap()
    }

    #[test]
    fn the_space_needed_covers_the_files_and_the_wal() {
        assert_eq!(space_needed(0, 0, mib(16)), 4 * 16 * MIB + 64 * MIB);
        assert_eq!(
            space_needed(1000, 2, mib(16)),
            1000 + 6 * 16 * MIB + 64 * MIB
        );
        // The segment size is the cluster's.
        assert_eq!(space_needed(0, 2, mib(64)), 6 * 64 * MIB + 64 * MIB);
        // The spool is bounded: a long replay does not ask for its WAL.
        assert_eq!(space_needed(0, 10_000, mib(16)), 36 * 16 * MIB + 64 * MIB);
        assert_eq!(space_needed(u64::MAX, 1, mib(16)), u64::MAX);
        assert_eq!(shared_reserve(100 * 1024 * MIB), 10 * 1024 * MIB);
        assert_eq!(shared_reserve(2 * 1024 * MIB), 1024 * MIB);
    }

    fn spec() -> Spec {
        Spec {
            job_id: 7,
            backup: None,
            target: Target::Immediate,
            timeline: TimelineChoice::Latest,
            scratch: PathBuf::from("/var/tmp/w/job-7-drill"),
            bindir: PathBuf::from("/usr/lib/postgresql/17/bin"),
            repo: RepoArgs::default(),
            env: vec![],
            jobs: 2,
            database: "postgres".into(),
            user: "postgres".into(),
            amcheck: vec![],
            count: vec![],
            visibility: VisibilityCheck::Every { required: false },
            preload: vec!["pg_stat_statements".into(), "pg_ark".into()],
            settings: vec![("max_connections".into(), "200".into())],
            timeout: Duration::from_secs(60),
            primary_dirs: vec![],
            wal_segment_size: SegmentSize::DEFAULT,
        }
    }

    #[test]
    fn pg_ark_is_taken_out_of_the_scratch_clusters_preload() {
        let p = |l: &[&str]| {
            preload_without_pg_ark(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(p(&["pg_ark"]), "");
        assert_eq!(p(&["pg_stat_statements", " pg_ark"]), "pg_stat_statements");
        assert_eq!(
            p(&["\"pg_ark\"", "auto_explain", "$libdir/pg_ark"]),
            "auto_explain"
        );
        assert_eq!(p(&[]), "");
    }

    #[test]
    fn the_scratch_server_is_confined() {
        let args = server_args(&spec(), 5433);
        let joined = args.join(" ");
        for want in [
            "-D /var/tmp/w/job-7-drill/data",
            "-c data_directory=/var/tmp/w/job-7-drill/data",
            "-c port=5433",
            "-c unix_socket_directories=/var/tmp/w/job-7-drill",
            "-c hba_file=/var/tmp/w/job-7-drill/pg_hba.conf",
            "-c archive_mode=off",
            "-c shared_preload_libraries=pg_stat_statements",
            "-c max_logical_replication_workers=0",
            "-c lc_messages=C",
            "-c max_connections=200",
        ] {
            assert!(joined.contains(want), "{want} missing from {joined}");
        }
        // No TCP listener, no pid file of the primary's.
        assert!(args.iter().any(|a| a == "listen_addresses="), "{joined}");
        assert!(args.iter().any(|a| a == "external_pid_file="), "{joined}");
    }

    #[test]
    fn max_wal_size_holds_two_segments_of_any_size() {
        for (size, want) in [(16, "1024MB"), (64, "1024MB"), (1024, "2048MB")] {
            let mut s = spec();
            s.wal_segment_size = mib(size);
            let args = server_args(&s, 5433);
            assert!(
                args.iter().any(|a| *a == format!("max_wal_size={want}")),
                "{size}: {args:?}"
            );
        }
    }

    #[test]
    fn the_backups_settings_win_when_they_are_larger() {
        let ours = vec![
            ("max_connections".to_string(), "100".to_string()),
            ("max_wal_senders".to_string(), "10".to_string()),
        ];
        let control = vec![
            ("max_connections".to_string(), 300),
            ("max_wal_senders".to_string(), 5),
            ("max_locks_per_transaction".to_string(), 128),
        ];
        assert_eq!(
            at_least(&ours, &control),
            vec![
                ("max_connections".to_string(), "300".to_string()),
                ("max_wal_senders".to_string(), "10".to_string()),
                ("max_locks_per_transaction".to_string(), "128".to_string()),
            ]
        );
    }

    #[test]
    fn only_a_drills_own_server_is_ever_signalled() {
        let dir = tempfile::tempdir().unwrap();
        // A pid file naming this test process: alive, but not a server
        // running in that directory.
        std::fs::create_dir_all(dir.path().join("a/data")).unwrap();
        std::fs::write(
            dir.path().join("a/data/postmaster.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(stop_leftover_server(&dir.path().join("a"), &[]), Ok(false));
        assert_eq!(
            stop_leftover_server(&dir.path().join("absent"), &[]),
            Ok(false)
        );
        // A data directory that is a link (to wherever a server runs) is
        // never followed.
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a/data"), dir.path().join("b/data")).unwrap();
        assert_eq!(stop_leftover_server(&dir.path().join("b"), &[]), Ok(false));
    }

    #[test]
    fn the_work_directory_must_be_private() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("work");
        check_work_directory(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_work_directory(&dir).unwrap_err();
        assert!(e.contains("may be written by other users"), "{e}");
        let link = base.path().join("link");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let e = check_work_directory(&link).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn the_visibility_option_reads_off_every_or_databases() {
        let f = |v: Value| VisibilityCheck::from_option(Some(&v));
        assert_eq!(
            VisibilityCheck::from_option(None),
            Ok(VisibilityCheck::Every { required: false })
        );
        assert_eq!(
            f(json!(true)),
            Ok(VisibilityCheck::Every { required: true })
        );
        assert_eq!(f(json!(false)), Ok(VisibilityCheck::Off));
        assert_eq!(
            f(json!("shop")),
            Ok(VisibilityCheck::Databases(vec!["shop".into()]))
        );
        assert_eq!(
            f(json!(["a", "b"])),
            Ok(VisibilityCheck::Databases(vec!["a".into(), "b".into()]))
        );
        for bad in [
            json!([]),
            json!(1),
            json!(""),
            json!(["a", 2]),
            json!("dbname=x"),
        ] {
            assert!(f(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_visibility_check_covers_every_relation_with_a_map_qualified() {
        let s = visibility_script();
        assert!(
            s.starts_with("SET search_path = pg_catalog, pg_temp;"),
            "{s}"
        );
        // Tables, materialized views and TOAST tables; never another
        // session's temporary table.
        assert!(s.contains("ANY ('{r,m,t}'::\"char\"[])"), "{s}");
        assert!(
            s.contains("relpersistence OPERATOR(pg_catalog.<>) 't'"),
            "{s}"
        );
        // The extension's functions by its schema, everything else from
        // pg_catalog: nothing of the restored database can stand in.
        assert!(s.contains(":\"vmschema\".pg_check_visible(c.oid::pg_catalog.regclass)"));
        assert!(s.contains(":\"vmschema\".pg_check_frozen(c.oid::pg_catalog.regclass)"));
        for call in ["count(", "json_agg(", "json_build_object("] {
            let bare = s.matches(call).count();
            let qualified = s.matches(&format!("pg_catalog.{call}")).count();
            assert_eq!(bare, qualified, "{call} unqualified in {s}");
        }
        assert_eq!(
            s.matches(" = ").count(),
            1,
            "operators are qualified but SET: {s}"
        );
        for setup in [VISIBILITY_SETUP, VISIBILITY_AVAILABLE] {
            assert!(setup.starts_with("SET search_path = pg_catalog, pg_temp;"));
        }
        assert!(VISIBILITY_SETUP.contains("CREATE EXTENSION pg_visibility WITH SCHEMA ark_drill"));
    }

    #[test]
    fn tuples_the_map_vouches_for_wrongly_fail_the_drill_naming_them() {
        let ok = visibility_outcome("shop", r#"{"relations": 42, "problems": []}"#).unwrap();
        assert_eq!(ok["ok"], true);
        assert_eq!(ok["relations"], 42);
        assert_eq!(ok["database"], "shop");
        let (check, f) = visibility_outcome(
            "shop",
            r#"{"relations": 42, "problems": [{"relation": "public.t", "not_visible": 2000, "not_frozen": 1990}]}"#,
        )
        .unwrap_err();
        assert!(f.verdict && !f.transient, "a verdict on the backup");
        assert_eq!(check["ok"], false);
        assert!(
            f.message.contains("database \"shop\"")
                && f.message
                    .contains("public.t (2000 tuple(s) not all-visible, 1990 not all-frozen)"),
            "{}",
            f.message
        );
        let (_, f) = visibility_outcome("shop", "garbage").unwrap_err();
        assert!(
            !f.verdict && f.message.contains("unexpected output"),
            "{}",
            f.message
        );
    }

    #[test]
    fn kinds_are_named() {
        assert_eq!(relkind("kind v"), "a view");
        assert_eq!(relkind("kind f"), "a foreign table");
        assert_eq!(relkind("kind x"), "not a table");
    }
}
