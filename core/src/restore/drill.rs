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
use super::plan::{self, Request, Target, TimelineChoice};
use super::{Counters, Options};
use crate::pg::{control, log as server_log};
use crate::process::{Env, Program, ProgramError, Running, Stderr, Stdout};
use crate::repo::config::RepoConfig;
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
    pub repo: RepoConfig,
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

mod checks;
mod server;
use checks::*;
use server::*;
pub use server::{check_work_directory, stop_leftover_server};

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
mod tests;
