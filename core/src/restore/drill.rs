//! Restore drills: prove that a backup restores, by restoring it.
//!
//! A drill ([`run`]) does what a DBA would do by hand, from the repository
//! alone:
//!
//! 1. **Plan** the restore ([`super::plan::plan`]): the backup (the newest
//!    complete one, or the one named), its chain, the WAL recovery needs and
//!    where it stops (consistency by default, or a target).
//! 2. **Check the space**: the restored files plus room for the WAL recovery
//!    fetches ([`space_needed`]) must be free where the scratch cluster goes;
//!    otherwise the drill is refused before a byte is written, with both
//!    numbers.
//! 3. **Rebuild** the backup into `<scratch>/data` ([`super::rebuild`]):
//!    every object checked against its digest and the manifest.
//! 4. **Recover**: a scratch postmaster, a child of the drill with
//!    `PR_SET_PDEATHSIG` (it dies with the process that started it), on a
//!    free port of 127.0.0.1, its socket in the scratch directory, a
//!    `pg_hba.conf` that admits local connections only, no archiving, pg_ark
//!    taken out of `shared_preload_libraries` (its scheduler must not run
//!    jobs in a copy of the catalog) and `restore_command` = `pg_ark wal-get`
//!    from the repository, exactly as a real restore.
//! 5. **Check**: recovery ended where the plan said ("recovery stopping"),
//!    the server accepts connections out of recovery, and for each table
//!    named: `amcheck` (`verify_heapam` and `bt_index_check` with
//!    `heapallindexed` on its B-tree indexes) and/or its row count.
//! 6. **Clean up**: an immediate shutdown, then the scratch directory is
//!    removed, whatever happened.
//!
//! The report's timings are the drill's measured recovery time objective:
//! `rebuild_seconds` (the download and the writes, which overlap),
//! `download_seconds` (time the rebuild threads spent waiting on the
//! repository, summed over threads), `recovery_seconds` (server start to
//! ready, WAL replay included) and `rto_seconds` (plan, rebuild and
//! recovery: the time from "restore now" to a usable cluster).
use super::plan::{self, RepoArgs, Request, Target, TimelineChoice};
use super::{Counters, Options};
use crate::repo::ClusterRepo;
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    /// The scratch directory (created; it must not exist yet).
    pub scratch: PathBuf,
    /// PostgreSQL's programs (`postgres`, `psql`) and `pg_ark`.
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
    /// `shared_preload_libraries` for the scratch server.
    pub preload: String,
    /// Settings the scratch server needs at least the primary's values of
    /// (`max_connections`, ...), as `(name, value)`.
    pub settings: Vec<(String, String)>,
    /// How long recovery may take.
    pub timeout: Duration,
}

/// Room for the WAL recovery fetches besides the restored files: the
/// prefetch spool of `pg_ark wal-get` (at most 32 segments), the segment
/// being replayed, the first segment of the new timeline and the end of
/// recovery's checkpoint, plus 64 MiB for the server's own files.
pub fn space_needed(restored_bytes: u64, segments: u64) -> u64 {
    const SEG: u64 = 16 * 1024 * 1024;
    restored_bytes
        .saturating_add(SEG * (segments.min(32) + 4))
        .saturating_add(64 * 1024 * 1024)
}

/// `shared_preload_libraries` without pg_ark: the scratch cluster must not
/// run pg_ark's scheduler on its copy of the catalog.
pub fn preload_without_pg_ark(list: &str) -> String {
    list.split(',')
        .map(|l| l.trim().trim_matches('"').to_string())
        .filter(|l| {
            let name = l.rsplit('/').next().unwrap_or(l);
            !l.is_empty() && name != "pg_ark" && name != "pg_ark.so"
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a drill failed: the message, and what was measured up to then.
#[derive(Debug)]
pub struct Failed {
    pub message: String,
    pub report: Value,
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A free TCP port on 127.0.0.1 (the kernel's choice).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("could not find a free port on 127.0.0.1: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("could not find a free port on 127.0.0.1: {e}"))
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
    child: Option<Child>,
}

impl Server {
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            // Immediate shutdown: the cluster is thrown away.
            // SAFETY: signals our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
            let began = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if began.elapsed() > Duration::from_secs(30) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stop a scratch server that a dead drill left running in `dir` (its
/// `data/postmaster.pid`): only a process whose working directory is that
/// data directory (PostgreSQL's postmaster runs in it), so a recycled pid
/// is never signalled. Waits until it is gone (SIGQUIT, then SIGKILL after
/// 10 s). Returns whether one was stopped.
pub fn stop_leftover_server(dir: &Path) -> bool {
    let data = dir.join("data");
    let Some(pid) = super::live_postmaster(&data) else {
        return false;
    };
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    let real = std::fs::canonicalize(&data).ok();
    if cwd.is_none() || cwd != real {
        return false;
    }
    // SAFETY: signals a process verified above to be a server of `dir`.
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    let began = Instant::now();
    while super::live_postmaster(&data) == Some(pid)
        && std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        if began.elapsed() > Duration::from_secs(10) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if began.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Run `sql` (a psql script, with `vars` as psql variables) in the scratch
/// server: its output, unaligned and tuples only.
fn psql(
    spec: &Spec,
    stop: &AtomicBool,
    port: u16,
    database: &str,
    sql: &str,
    vars: &[(&str, &str)],
) -> Result<String, String> {
    let mut cmd = Command::new(spec.bindir.join("psql"));
    cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .arg("-h")
        .arg(&spec.scratch)
        .arg("-p")
        .arg(port.to_string())
        .arg("-U")
        .arg(&spec.user)
        .arg("-d")
        .arg(database);
    for (k, v) in vars {
        cmd.arg("-v").arg(format!("{k}={v}"));
    }
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not run {}: {e}", spec.bindir.join("psql").display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(sql.as_bytes())
            .map_err(|e| format!("could not send the check to psql: {e}"))?;
    }
    // A check can hang (a lock, a view that never returns): it ends with
    // the drill's timeout, or when the drill is stopped (ark.cancel(),
    // shutdown). Its output is a few lines, well within the pipes' buffers.
    let began = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if stop.load(Ordering::Relaxed) || began.elapsed() > spec.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(if stop.load(Ordering::Relaxed) {
                    "the drill was stopped".to_string()
                } else {
                    format!(
                        "the check did not finish within {} s (option timeout)",
                        spec.timeout.as_secs()
                    )
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("psql: {e}")),
        }
    }
    let out = child.wait_with_output().map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', " "))
    }
}

/// The scratch server's settings on its command line: they override the
/// restored `postgresql.conf` and `postgresql.auto.conf`.
fn server_args(spec: &Spec, port: u16) -> Vec<String> {
    let scratch = spec.scratch.display().to_string();
    let mut set: Vec<(String, String)> = vec![
        ("port".into(), port.to_string()),
        ("listen_addresses".into(), "127.0.0.1".into()),
        ("unix_socket_directories".into(), scratch.clone()),
        ("hba_file".into(), format!("{scratch}/pg_hba.conf")),
        ("ident_file".into(), format!("{scratch}/pg_ident.conf")),
        ("archive_mode".into(), "off".into()),
        ("shared_preload_libraries".into(), spec.preload.clone()),
        ("logging_collector".into(), "off".into()),
        ("log_destination".into(), "stderr".into()),
        ("shared_buffers".into(), "128MB".into()),
        ("huge_pages".into(), "off".into()),
        ("hot_standby".into(), "on".into()),
        ("max_wal_size".into(), "1GB".into()),
    ];
    set.extend(spec.settings.iter().cloned());
    let mut args = vec!["-D".to_string(), format!("{scratch}/data")];
    for (k, v) in set {
        args.push("-c".into());
        args.push(format!("{k}={v}"));
    }
    args
}

fn start_server(spec: &Spec, port: u16, log: &Path) -> Result<Server, String> {
    let log_file = std::fs::File::create(log)
        .map_err(|e| format!("could not create {}: {e}", log.display()))?;
    let err_file = log_file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(spec.bindir.join("postgres"));
    cmd.args(server_args(spec, port))
        .current_dir(&spec.scratch)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file);
    // The primary's environment (pg_ctl exports PGDATA) must not lead
    // `pg_ark wal-get` to the primary's data directory.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("PGDATA", spec.scratch.join("data"));
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Its own session (signals to the drill's process group do not
            // reach it), and it dies with the drill.
            libc::setsid();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        format!(
            "could not start {}: {e}",
            spec.bindir.join("postgres").display()
        )
    })?;
    Ok(Server { child: Some(child) })
}

/// Wait until the scratch server is ready out of recovery, it exits, the
/// timeout passes or `stop` is set. Returns the log's recovery lines.
fn wait_ready(
    server: &mut Server,
    log: &Path,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Vec<String>, String> {
    let began = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("database system is ready to accept connections") {
            return Ok(text
                .lines()
                .filter(|l| {
                    l.contains("recovery stopping")
                        || l.contains("consistent recovery state reached")
                        || l.contains("redo done at")
                        || l.contains("last completed transaction")
                        || l.contains("selected new timeline ID")
                })
                .map(|l| l.trim().to_string())
                .collect());
        }
        let exited = match server.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(crate::process::describe_status(status)),
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        };
        if let Some(status) = exited {
            return Err(format!(
                "the restored cluster did not start ({status}): {}",
                log_tail(log, 8)
            ));
        }
        if stop.load(Ordering::Relaxed) {
            return Err("the drill was stopped".into());
        }
        if began.elapsed() > timeout {
            return Err(format!(
                "recovery did not finish within {} s (option timeout): {}",
                timeout.as_secs(),
                log_tail(log, 4)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The checks of the restored cluster: one JSON object each.
fn checks(
    spec: &Spec,
    stop: &AtomicBool,
    port: u16,
    recovery: &[String],
) -> Result<Vec<Value>, (Vec<Value>, String)> {
    let mut done = Vec::new();
    let fail = |mut done: Vec<Value>, check: Value, msg: String| {
        done.push(check);
        Err((done, msg))
    };
    // Recovery ended where it was meant to: a target (or consistency) was
    // reached, or all the WAL was replayed.
    let stopping = recovery.iter().find(|l| l.contains("recovery stopping"));
    let reached = match &spec.target {
        Target::Latest => recovery.iter().find(|l| l.contains("redo done at")),
        _ => stopping,
    };
    match reached {
        Some(line) => done.push(json!({"check": "recovery", "ok": true, "detail": line})),
        None => {
            let msg = "the server started, but its log does not say that recovery reached the target (no \"recovery stopping\" line)".to_string();
            return fail(
                done,
                json!({"check": "recovery", "ok": false, "detail": msg}),
                msg,
            );
        }
    }
    match psql(
        spec,
        stop,
        port,
        &spec.database,
        "SELECT pg_is_in_recovery(), current_setting('server_version');",
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
                msg,
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
                msg,
            );
        }
    }
    if !spec.amcheck.is_empty() {
        if let Err(e) = psql(
            spec,
            stop,
            port,
            &spec.database,
            "CREATE EXTENSION IF NOT EXISTS amcheck;",
            &[],
        ) {
            let msg = format!("amcheck is not available in the restored cluster: {e}");
            return fail(
                done,
                json!({"check": "amcheck", "ok": false, "detail": msg}),
                msg,
            );
        }
    }
    for table in &spec.amcheck {
        let sql = "SELECT to_regclass(:'t') IS NULL AS missing \\gset
\\if :missing
\\echo missing
\\else
SELECT count(*) FROM verify_heapam(to_regclass(:'t'), on_error_stop => false);
SELECT count(bt_index_check(i.indexrelid, true))
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
 WHERE i.indrelid = to_regclass(:'t') AND a.amname = 'btree' AND i.indisvalid;
\\endif
";
        match psql(spec, stop, port, &spec.database, sql, &[("t", table)]) {
            Ok(out) if out == "missing" => {
                let msg = format!("amcheck: there is no table \"{table}\" in database \"{}\" of the restored cluster", spec.database);
                return fail(
                    done,
                    json!({"check": "amcheck", "table": table, "ok": false, "detail": msg}),
                    msg,
                );
            }
            Ok(out) => {
                let mut it = out.lines();
                let corrupt: u64 = it
                    .next()
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(u64::MAX);
                let indexes: u64 = it.next().and_then(|n| n.trim().parse().ok()).unwrap_or(0);
                if corrupt != 0 {
                    let msg = format!("amcheck: verify_heapam found {corrupt} problem(s) in table \"{table}\" of the restored cluster");
                    return fail(
                        done,
                        json!({"check": "amcheck", "table": table, "ok": false, "detail": msg}),
                        msg,
                    );
                }
                done.push(json!({
                    "check": "amcheck", "table": table, "ok": true,
                    "detail": format!("heap verified; {indexes} B-tree index(es) checked with heapallindexed"),
                }));
            }
            Err(e) => {
                let msg =
                    format!("amcheck of table \"{table}\" in the restored cluster failed: {e}");
                return fail(
                    done,
                    json!({"check": "amcheck", "table": table, "ok": false, "detail": msg}),
                    msg,
                );
            }
        }
    }
    for table in &spec.count {
        let sql = "SELECT to_regclass(:'t') IS NULL AS missing \\gset
\\if :missing
\\echo missing
\\else
SELECT format('SELECT count(*) FROM %s', to_regclass(:'t')) \\gexec
\\endif
";
        match psql(spec, stop, port, &spec.database, sql, &[("t", table)]) {
            Ok(out) => match out.trim().parse::<i64>() {
                Ok(rows) => {
                    done.push(json!({"check": "count", "table": table, "ok": true, "rows": rows}))
                }
                Err(_) => {
                    let msg = format!("count: there is no table \"{table}\" in database \"{}\" of the restored cluster", spec.database);
                    return fail(
                        done,
                        json!({"check": "count", "table": table, "ok": false, "detail": msg}),
                        msg,
                    );
                }
            },
            Err(e) => {
                let msg = format!("count of table \"{table}\" in the restored cluster failed: {e}");
                return fail(
                    done,
                    json!({"check": "count", "table": table, "ok": false, "detail": msg}),
                    msg,
                );
            }
        }
    }
    Ok(done)
}

/// Progress as the drill goes: the phase and a detail.
pub type Progress<'a> = &'a (dyn Fn(&str, Value) + Sync);

/// Run a drill. Whatever happens, the scratch server is stopped and the
/// scratch directory removed before this returns. The report (a JSON
/// object, also for a failure) names the backup, the checks and the
/// timings.
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
        "target": target_text(&spec.target),
        "scratch": spec.scratch.display().to_string(),
    });
    let result = drill(cluster, spec, counters, stop, progress, &mut report, began);
    // Clean up: the server is stopped already (dropped inside), the
    // directory goes now.
    let removed = match std::fs::remove_dir_all(&spec.scratch) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "could not remove the scratch directory {}: {e}",
            spec.scratch.display()
        )),
    };
    report["timings"]["total_seconds"] = json!(seconds(began.elapsed()));
    report["at"] = json!(crate::logical::rfc3339_utc(crate::logical::now_epoch()));
    match (result, removed) {
        (Ok(()), Ok(())) => {
            report["ok"] = json!(true);
            Ok(report)
        }
        (Err(message), _) | (Ok(()), Err(message)) => {
            report["ok"] = json!(false);
            report["error"] = json!(message);
            Err(Failed { message, report })
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

fn drill(
    cluster: &ClusterRepo,
    spec: &Spec,
    counters: &Counters,
    stop: &AtomicBool,
    progress: Progress<'_>,
    report: &mut Value,
    began: Instant,
) -> Result<(), String> {
    progress("plan", json!({}));
    let req = Request {
        target: spec.target.clone(),
        timeline: spec.timeline.clone(),
        backup: spec.backup.clone(),
    };
    let p = plan::plan(cluster, &req, "promote").map_err(|e| {
        let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
        format!("{e}{hint}")
    })?;
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
    let plan_s = began.elapsed();
    report["timings"] = json!({"plan_seconds": seconds(plan_s)});

    // Space, before anything is written.
    let needed = space_needed(info.original_bytes, p.segments);
    let parent = spec.scratch.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("could not create {}: {e}", parent.display()))?;
    let available = crate::workdir::free_bytes(parent).map_err(|e| e.to_string())?;
    report["space"] = json!({"needed_bytes": needed, "available_bytes": available});
    if available < needed {
        return Err(format!(
            "not enough free space for the drill in {}: it needs {} ({} of restored files and room for the WAL recovery fetches), and {} is free. Free space there, or set ark.work_directory to a larger file system",
            parent.display(),
            plan::human_bytes(needed),
            plan::human_bytes(info.original_bytes),
            plan::human_bytes(available)
        ));
    }
    if spec.scratch.exists() {
        return Err(format!(
            "the scratch directory {} exists already",
            spec.scratch.display()
        ));
    }
    std::fs::create_dir_all(&spec.scratch)
        .map_err(|e| format!("could not create {}: {e}", spec.scratch.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&spec.scratch, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", spec.scratch.display()))?;
    let data = spec.scratch.join("data");

    // Rebuild, tablespaces inside the scratch directory.
    progress(
        "rebuild",
        json!({"backup_id": info.backup_id, "bytes_total": info.original_bytes}),
    );
    let tablespaces = p
        .backup()
        .tablespaces
        .iter()
        .map(|t| (t.oid.clone(), spec.scratch.join("tablespaces").join(&t.oid)))
        .collect();
    let opts = Options {
        jobs: spec.jobs.max(1),
        delta: false,
        tablespaces,
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
        let r = super::rebuild(cluster, &info.backup_id, &data, &opts, counters);
        finished.store(true, Ordering::Relaxed);
        r
    })
    .map_err(|e| format!("restoring backup \"{}\" failed: {e}", info.backup_id))?;
    let rebuild_s = rebuild_began.elapsed();
    report["files"] = json!(rebuilt.files);
    report["fetched_bytes"] = json!(rebuilt.fetched);
    report["timings"]["rebuild_seconds"] = json!(seconds(rebuild_s));
    report["timings"]["download_seconds"] = json!(seconds(Duration::from_nanos(
        counters.fetch_nanos.load(Ordering::Relaxed)
    )));
    if stop.load(Ordering::Relaxed) {
        return Err("the drill was stopped".into());
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
    super::write_recovery(&data, &restore_command, &p.settings, true).map_err(|e| e.to_string())?;
    if !data.join("postgresql.conf").exists() {
        // The configuration lived outside the data directory (Debian's
        // /etc/postgresql): the command line carries what matters.
        std::fs::write(
            data.join("postgresql.conf"),
            "# pg_ark drill: the original configuration was outside the data directory\n",
        )
        .map_err(|e| format!("{}: {e}", data.display()))?;
    }
    let hba =
        "# pg_ark drill: local connections of the server's OS user only\nlocal all all trust\n";
    std::fs::write(spec.scratch.join("pg_hba.conf"), hba)
        .and_then(|()| std::fs::write(spec.scratch.join("pg_ident.conf"), ""))
        .map_err(|e| format!("{}: {e}", spec.scratch.display()))?;

    // Recover.
    let port = free_port()?;
    report["port"] = json!(port);
    progress(
        "recovery",
        json!({"backup_id": info.backup_id, "port": port}),
    );
    let log = spec.scratch.join("server.log");
    let recovery_began = Instant::now();
    let mut server = start_server(spec, port, &log)?;
    let recovery = wait_ready(&mut server, &log, spec.timeout, stop);
    let recovery_s = recovery_began.elapsed();
    report["timings"]["recovery_seconds"] = json!(seconds(recovery_s));
    let recovery = recovery?;
    report["timings"]["rto_seconds"] = json!(seconds(began.elapsed()));
    report["recovery"] = json!(recovery);

    // Check.
    progress("checks", json!({"backup_id": info.backup_id, "port": port}));
    let checks_began = Instant::now();
    let checked = checks(spec, stop, port, &recovery);
    report["timings"]["checks_seconds"] = json!(seconds(checks_began.elapsed()));
    server.stop();
    match checked {
        Ok(done) => {
            report["checks"] = json!(done);
            Ok(())
        }
        Err((done, msg)) => {
            report["checks"] = json!(done);
            Err(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_space_needed_covers_the_files_and_the_wal() {
        let mib = 1024 * 1024;
        assert_eq!(space_needed(0, 0), 4 * 16 * mib + 64 * mib);
        assert_eq!(space_needed(1000, 2), 1000 + 6 * 16 * mib + 64 * mib);
        // The spool is bounded: a long replay does not ask for its WAL.
        assert_eq!(space_needed(0, 10_000), 36 * 16 * mib + 64 * mib);
        assert_eq!(space_needed(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn pg_ark_is_taken_out_of_the_scratch_clusters_preload() {
        let p = preload_without_pg_ark;
        assert_eq!(p("pg_ark"), "");
        assert_eq!(p("pg_stat_statements, pg_ark"), "pg_stat_statements");
        assert_eq!(p("\"pg_ark\",auto_explain,$libdir/pg_ark"), "auto_explain");
        assert_eq!(p(""), "");
    }

    #[test]
    fn the_scratch_server_is_confined() {
        let spec = Spec {
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
            preload: "pg_stat_statements".into(),
            settings: vec![("max_connections".into(), "200".into())],
            timeout: Duration::from_secs(60),
        };
        let args = server_args(&spec, 5433).join(" ");
        for want in [
            "-D /var/tmp/w/job-7-drill/data",
            "-c port=5433",
            "-c listen_addresses=127.0.0.1",
            "-c unix_socket_directories=/var/tmp/w/job-7-drill",
            "-c hba_file=/var/tmp/w/job-7-drill/pg_hba.conf",
            "-c archive_mode=off",
            "-c shared_preload_libraries=pg_stat_statements",
            "-c max_connections=200",
        ] {
            assert!(args.contains(want), "{want} missing from {args}");
        }
    }

    #[test]
    fn a_leftover_directory_without_a_server_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        // A pid file naming this test process: alive, but not a server
        // running in that directory.
        std::fs::write(
            dir.path().join("data/postmaster.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert!(!stop_leftover_server(dir.path()));
        assert!(!stop_leftover_server(&dir.path().join("absent")));
    }
}
