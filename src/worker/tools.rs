//! Jobs that run the backup tools people already have: `pgbackrest`,
//! `barman` and `pg_basebackup` (the rules and commands are
//! `pg_ark_core::tools`).
//!
//! The worker's thread gathers the facts (settings, the server's socket and
//! major, what `ark.backups` records of the tool); the tool then runs on a
//! work thread through `pg_ark_core::process` (an argument vector, a clean
//! environment, a process group of its own that a cancellation or the
//! job's `timeout` stops whole, the end of its standard error in the
//! error). Once it succeeded, the job reads what the tool made from the
//! tool's own machine-readable output, and records it in `ark.backups`
//! under the tool's kind, apart from pg_ark's own backups: pg_ark's
//! retention never touches them (a `pg_basebackup` job applies its own
//! rule, to its own directories).
use crate::catalog::jobs::{Job, Outcome};
use crate::error::ArkError;
use crate::worker::job::{outcome, set_progress, supervise, Control};
use crate::{settings, xact};
use pg_ark_core::process::{Program, Stdout};
use pg_ark_core::schedule::jobs::{self, JobKind};
use pg_ark_core::schedule::lifecycle::JobFailure;
use pg_ark_core::tools::{self, barman, basebackup, pgbackrest, ToolBackup};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A tool job's time limit when its options set none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Everything a tool job needs, gathered on the worker's thread.
struct Plan {
    kind: JobKind,
    options: Map<String, Value>,
    job_id: i64,
    major: u32,
    server_version: String,
    timeout: Duration,
    /// `ark.backups.repository` of what the tool makes.
    repository: String,
    /// The labels `ark.backups` records under `repository`.
    recorded: Vec<String>,
    pgbackrest: (PathBuf, Option<PathBuf>),
    /// `ark.archive_also`.
    archive_also: Option<String>,
    /// The data directory (where `pg_wal/archive_status` says what the
    /// archiver stored).
    data_dir: PathBuf,
    barman: (PathBuf, Option<PathBuf>),
    basebackup: Option<BasebackupPlan>,
}

struct BasebackupPlan {
    program: PathBuf,
    /// `ark.pg_basebackup_directory`.
    root: PathBuf,
    label: String,
    conn: basebackup::Connection,
    /// The pg_basebackup backups of the same target: (label, path, end,
    /// parent), newest first.
    earlier: Vec<(String, String, f64, Option<String>)>,
}

/// What the work thread found: the job's result, and the catalog's changes.
struct Done {
    result: Value,
    record: Vec<ToolBackup>,
    /// Labels to forget (the tool no longer lists them, or pg_basebackup's
    /// retention removed them).
    forget: Vec<String>,
}

fn setting(name: &str) -> Result<String, ArkError> {
    Ok(
        Spi::get_one_with_args::<String>("SELECT current_setting($1)", &[name.into()])?
            .unwrap_or_default(),
    )
}

/// The server's own binary directory (pg_basebackup is of its major).
fn bindir() -> PathBuf {
    // SAFETY: my_exec_path is the server binary's path, set at start.
    let exec = unsafe { std::ffi::CStr::from_ptr((&raw const pg_sys::my_exec_path).cast()) }
        .to_string_lossy()
        .into_owned();
    PathBuf::from(exec)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn labels(repository: &str, kind: &str) -> Result<Vec<String>, ArkError> {
    let mut out = Vec::new();
    Spi::connect(|c| {
        let t = c.select(
            "SELECT label FROM ark.backups WHERE kind = $1 AND repository = $2",
            None,
            &[kind.into(), repository.into()],
        )?;
        for r in t {
            if let Some(l) = r.get::<String>(1)? {
                out.push(l);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })?;
    Ok(out)
}

fn plan(job: &Job) -> Result<Plan, JobFailure> {
    let options = job.options.as_object().cloned().unwrap_or_default();
    let major = pg_sys::PG_VERSION_NUM / 10000;
    let timeout = options
        .get("timeout")
        .and_then(Value::as_u64)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let text = |k: &str| tools::text(&options, k).unwrap_or("").to_string();
    let repository = match job.kind {
        JobKind::Pgbackrest => match options.get("repo").and_then(Value::as_i64) {
            Some(r) => format!("pgbackrest:{}/repo{r}", text("stanza")),
            None => format!("pgbackrest:{}", text("stanza")),
        },
        JobKind::Barman => format!("barman:{}", text("server")),
        JobKind::PgBasebackup => {
            basebackup::check_incremental_major(&options, major)
                .map_err(|e| JobFailure::permanent(e.to_string()))?;
            let root = settings::pg_basebackup_directory().ok_or_else(|| {
                JobFailure::permanent(
                    "ark.pg_basebackup_directory is not set: pg_basebackup jobs write only under \
                     it. Set it to an absolute path the server's operating system user can \
                     write, and reload",
                )
            })?;
            format!("pg_basebackup:{}", root.display())
        }
        other => {
            return Err(JobFailure::permanent(format!(
                "{other} is not a job of another tool"
            )))
        }
    };
    let gathered = xact::run(|| {
        let recorded = labels(&repository, job.kind.as_str())?;
        let server_version = setting("server_version")?;
        if job.kind == JobKind::PgBasebackup {
            let socket_dir = setting("unix_socket_directories")?
                .split(',')
                .map(str::trim)
                .find(|s| !s.is_empty())
                .map(str::to_string)
                .unwrap_or_default();
            let port: u16 = setting("port")?.parse().unwrap_or(5432);
            let user = Spi::get_one::<String>(
                "SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = 10",
            )?
            .unwrap_or_else(|| "postgres".into());
            let label = Spi::get_one_with_args::<String>(
                "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD\"T\"HH24MISS\"Z\"') || '-j' || $1",
                &[job.id.to_string().into()],
            )?
            .unwrap_or_else(|| format!("j{}", job.id));
            let mut earlier = Vec::new();
            Spi::connect(|c| {
                let t = c.select(
                    "SELECT label, path, extract(epoch FROM finished_at)::float8,
                            info->>'incremental_of'
                       FROM ark.backups
                      WHERE kind = 'pg_basebackup' AND repository = $1
                        AND coalesce(info->>'target', '') = $2
                      ORDER BY finished_at DESC, id DESC",
                    None,
                    &[repository.clone().into(), text("target").into()],
                )?;
                for r in t {
                    earlier.push((
                        r.get::<String>(1)?.unwrap_or_default(),
                        r.get::<String>(2)?.unwrap_or_default(),
                        r.get::<f64>(3)?.unwrap_or(0.0),
                        r.get::<String>(4)?,
                    ));
                }
                Ok::<_, pgrx::spi::SpiError>(())
            })?;
            Ok((
                recorded,
                server_version,
                Some(BasebackupPlan {
                    program: bindir().join("pg_basebackup"),
                    root: settings::pg_basebackup_directory().unwrap_or_default(),
                    label,
                    conn: basebackup::Connection {
                        socket_dir,
                        port,
                        user,
                    },
                    earlier,
                }),
            ))
        } else {
            Ok((recorded, server_version, None))
        }
    })?;
    let (recorded, server_version, basebackup) = gathered;
    if job.kind == JobKind::PgBasebackup && tools::text(&options, "format") != Some("tar") {
        // The plain format writes each tablespace at its own path, outside
        // ark.pg_basebackup_directory (and, on this host, onto the live one).
        let tablespaces = xact::run(|| {
            Ok(Spi::get_one::<i64>(
                "SELECT count(*) FROM pg_catalog.pg_tablespace
                  WHERE spcname NOT IN ('pg_default', 'pg_global')",
            )?
            .unwrap_or(0))
        })?;
        if tablespaces > 0 {
            return Err(JobFailure::permanent(format!(
                "this cluster has {tablespaces} tablespace(s), which pg_basebackup's plain format \
                 writes at their own paths, outside ark.pg_basebackup_directory: use \
                 \"format\": \"tar\""
            )));
        }
    }
    if job.kind == JobKind::Pgbackrest {
        // Its WAL reaches the stanza only through pg_ark's archive module.
        let (mode, library) =
            xact::run(|| Ok((setting("archive_mode")?, setting("archive_library")?)))?;
        if !matches!(mode.as_str(), "on" | "always") || library != "pg_ark" {
            return Err(JobFailure::permanent(format!(
                "pgBackRest's backups need their WAL in the stanza's archive, which pg_ark's \
                 archive module puts there (ark.archive_also), and archive_mode is '{mode}', \
                 archive_library '{library}': set archive_mode = on and archive_library = \
                 'pg_ark'"
            )));
        }
    }
    Ok(Plan {
        kind: job.kind,
        options,
        job_id: job.id,
        major,
        server_version,
        timeout,
        repository,
        recorded,
        pgbackrest: (settings::pgbackrest_path(), settings::pgbackrest_config()),
        archive_also: settings::archive_also(),
        // SAFETY: DataDir is set at start and never changes.
        data_dir: PathBuf::from(
            unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }
                .to_string_lossy()
                .into_owned(),
        ),
        barman: (settings::barman_path(), settings::barman_config()),
        basebackup,
    })
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A program's failure as a job's: the tool's words, transient when the
/// tool's message says its cause goes away (`tool_transient`).
fn failed(e: pg_ark_core::Error, tool_transient: fn(&str) -> bool) -> JobFailure {
    match &e {
        pg_ark_core::Error::Program(p) if tool_transient(p.stderr()) => {
            JobFailure::transient(e.to_string())
        }
        _ => JobFailure::from(&e),
    }
}

/// Run `program` with `args` to its end: its standard output, captured.
fn run(
    program: &Path,
    args: Vec<String>,
    plan: &Plan,
    stop: &AtomicBool,
    tool_transient: fn(&str) -> bool,
) -> Result<String, JobFailure> {
    let finished = Program::new(program)
        .args(args)
        .stdout(Stdout::Capture)
        .timeout(plan.timeout)
        .run(stop)
        .map_err(|e| failed(e, tool_transient))?;
    Ok(finished.stdout_text())
}

fn work(plan: Plan, control: Arc<Control>) -> Result<Done, JobFailure> {
    let stop = &control.stop;
    match plan.kind {
        JobKind::Pgbackrest => run_pgbackrest(&plan, &control, stop),
        JobKind::Barman => run_barman(&plan, &control, stop),
        _ => run_basebackup(&plan, &control, stop),
    }
}

fn run_pgbackrest(plan: &Plan, control: &Control, stop: &AtomicBool) -> Result<Done, JobFailure> {
    let (program, config) = (&plan.pgbackrest.0, plan.pgbackrest.1.as_deref());
    let stanza = tools::text(&plan.options, "stanza").unwrap_or("");
    set_progress(control, json!({"phase": "pgbackrest version"}));
    let out = run(
        program,
        vec!["version".into()],
        plan,
        stop,
        pgbackrest::is_transient,
    )?;
    let version = pgbackrest::parse_version(&out).ok_or_else(|| {
        JobFailure::permanent(format!(
            "\"{} version\" printed \"{out}\", not a pgBackRest version",
            program.display()
        ))
    })?;
    pgbackrest::supports(version, plan.major).map_err(|e| {
        JobFailure::permanent(format!(
            "{e}: install a pgBackRest that reads it and point ark.pgbackrest_path at it"
        ))
    })?;
    let repo = plan.options.get("repo").and_then(Value::as_i64);
    set_progress(control, json!({"phase": "pgbackrest info"}));
    let info = run(
        program,
        pgbackrest::info_args(stanza, repo, config),
        plan,
        stop,
        pgbackrest::is_transient,
    )?;
    pgbackrest::check_stanza(&info, stanza).map_err(JobFailure::permanent)?;
    // The backup is restorable only with its WAL in the stanza's archive,
    // which pg_ark's archive module alone can put there.
    let wanted = tools::archive_also::SecondDestination::Pgbackrest {
        stanza: stanza.to_string(),
    };
    let current = plan
        .archive_also
        .as_deref()
        .map(tools::archive_also::SecondDestination::parse);
    if current != Some(Ok(wanted)) {
        return Err(JobFailure::permanent(format!(
            "pgBackRest's backups of stanza \"{stanza}\" need every WAL file in its archive, and \
             ark.archive_also is {}: set ark.archive_also = 'pgbackrest:{stanza}' (pg_ark's \
             archive module then hands each WAL file to pgbackrest archive-push) and reload",
            plan.archive_also
                .as_deref()
                .map_or("empty".to_string(), |a| format!("'{a}'"))
        )));
    }
    let kind = tools::text(&plan.options, "type").unwrap_or("incr");
    set_progress(
        control,
        json!({"phase": format!("pgbackrest backup --type={kind}")}),
    );
    run(
        program,
        pgbackrest::backup_args(&plan.options, config),
        plan,
        stop,
        pgbackrest::is_transient,
    )?;
    set_progress(control, json!({"phase": "pgbackrest info"}));
    let info = run(
        program,
        pgbackrest::info_args(stanza, repo, config),
        plan,
        stop,
        pgbackrest::is_transient,
    )?;
    let listed = pgbackrest::parse_info(&info, stanza)
        .map_err(|e| JobFailure::permanent(format!("pgBackRest's backup succeeded, but {e}")))?;
    let made = tools::newest(&listed).cloned().ok_or_else(|| {
        JobFailure::permanent(format!(
            "pgBackRest's backup succeeded, but pgbackrest info lists no backup of stanza \
             \"{stanza}\""
        ))
    })?;
    // Done only once its last WAL segment is archived, in both places.
    let segment = pgbackrest::stop_segment(&made).ok_or_else(|| {
        JobFailure::permanent(format!(
            "pgbackrest info names no last WAL segment of backup {}",
            made.label
        ))
    })?;
    set_progress(
        control,
        json!({"phase": "waiting for the backup's WAL to be archived", "segment": segment}),
    );
    wait_archived(&plan.data_dir, segment, plan.timeout, stop).map_err(|e| {
        JobFailure::permanent(format!(
            "pgBackRest's backup {} is not restorable: {e}",
            made.label
        ))
    })?;
    // And the stanza's own word that its archive has it: the archiver's
    // status says what pg_ark's module stored only if it is the archiver
    // and ark.archive_also did not change meanwhile.
    let info = run(
        program,
        pgbackrest::info_args(stanza, repo, config),
        plan,
        stop,
        pgbackrest::is_transient,
    )?;
    match pgbackrest::archived_through(&info, stanza) {
        Some(max) if max.as_str() >= segment => {}
        found => {
            return Err(JobFailure::permanent(format!(
                "pgBackRest's backup {} is not restorable: its last WAL segment {segment} is \
                 not in stanza \"{stanza}\"'s archive (which holds WAL up to {})",
                made.label,
                found.as_deref().unwrap_or("nothing")
            )))
        }
    }
    // Rows are forgotten only when every repository answered.
    let (new, mut gone) = tools::sync(&plan.recorded, &listed);
    if !pgbackrest::info_is_complete(&info, stanza) {
        gone.clear();
    }
    let record: Vec<ToolBackup> = new.into_iter().cloned().collect();
    Ok(Done {
        result: json!({
            "tool": "pgbackrest",
            "wal_archived_through": segment,
            "pgbackrest_version": format!("{}.{}", version.0, version.1),
            "stanza": stanza,
            "label": made.label,
            "type": made.format,
            "size_bytes": made.size_bytes,
            "repo_size_bytes": made.info.pointer("/info/repository/size"),
            "started_at": made.started_at,
            "finished_at": made.finished_at,
            "prior": made.info.get("prior"),
            "recorded": record.iter().map(|b| b.label.clone()).collect::<Vec<_>>(),
            "forgotten": gone,
        }),
        record,
        forget: gone,
    })
}

/// Wait until PostgreSQL's archiver reports WAL segment `segment` archived
/// (its `.done` status file, or the segment gone with no `.ready` left):
/// with `ark.archive_also`, in pg_ark's repository and the second
/// destination both.
fn wait_archived(
    data_dir: &Path,
    segment: &str,
    limit: Duration,
    stop: &AtomicBool,
) -> Result<(), String> {
    let status = data_dir.join("pg_wal/archive_status");
    let started = std::time::Instant::now();
    loop {
        let done = status.join(format!("{segment}.done")).exists();
        let ready = status.join(format!("{segment}.ready")).exists();
        let present = data_dir.join("pg_wal").join(segment).exists();
        if done || (!ready && !present) {
            return Ok(());
        }
        if stop.load(Ordering::SeqCst) {
            return Err("stopped".into());
        }
        if started.elapsed() >= limit {
            return Err(format!(
                "WAL segment {segment} was not archived within {} s (the server log says why)",
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run_barman(plan: &Plan, control: &Control, stop: &AtomicBool) -> Result<Done, JobFailure> {
    let (program, config) = (&plan.barman.0, plan.barman.1.as_deref());
    let kind = tools::text(&plan.options, "type").unwrap_or("backup");
    set_progress(control, json!({"phase": format!("barman {kind}")}));
    let args = barman::job_args(&plan.options, config);
    let server = tools::text(&plan.options, "server").unwrap_or("");
    if kind == "cron" {
        let out = run_keeping_stdout(program, args, plan, stop)?;
        return Ok(Done {
            result: json!({"tool": "barman", "type": kind, "output": out}),
            record: Vec::new(),
            forget: Vec::new(),
        });
    }
    if kind == "check" {
        // barman check exits 1 when a check fails; its JSON says which.
        let out = run_any_status(program, barman::check_args(server, config), plan, stop)?;
        let mut result = barman::judge_check(&out, server).map_err(JobFailure::permanent)?;
        result["tool"] = json!("barman");
        result["type"] = json!("check");
        result["server"] = json!(server);
        return Ok(Done {
            result,
            record: Vec::new(),
            forget: Vec::new(),
        });
    }
    // The backup this job makes is the one listed after it and not before
    // (whatever its status: without --wait, Barman's backup may still be
    // waiting for its WAL).
    let list_all = |phase: &str| -> Result<Vec<ToolBackup>, JobFailure> {
        set_progress(control, json!({"phase": phase}));
        // Its errors are in its JSON ({"_ERROR": [...]}), with exit status 1.
        let list = run_any_status(program, barman::list_args(server, config), plan, stop)?;
        barman::parse_list(&list, server).map_err(JobFailure::permanent)
    };
    let before = list_all("barman list-backups")?;
    set_progress(control, json!({"phase": "barman backup"}));
    run_keeping_stdout(program, args, plan, stop)?;
    let after = list_all("barman list-backups")?;
    let made_now: Vec<ToolBackup> = after
        .iter()
        .filter(|b| !before.iter().any(|o| o.label == b.label))
        .cloned()
        .collect();
    let mut made = tools::newest(&made_now).cloned().ok_or_else(|| {
        JobFailure::permanent(format!(
            "Barman's backup succeeded, but barman list-backups lists no new backup of server \
             \"{server}\""
        ))
    })?;
    let shown = run(
        program,
        barman::show_args(server, &made.label, config),
        plan,
        stop,
        barman::is_transient,
    )?;
    barman::show_backup(&shown, server, &mut made)
        .map_err(|e| JobFailure::permanent(format!("Barman's backup succeeded, but {e}")))?;
    // The catalog records the done ones.
    let listed: Vec<ToolBackup> = after.into_iter().filter(barman::is_done).collect();
    let (new, gone) = tools::sync(&plan.recorded, &listed);
    let record: Vec<ToolBackup> = new
        .into_iter()
        .map(|b| {
            if b.label == made.label {
                made.clone()
            } else {
                b.clone()
            }
        })
        .collect();
    Ok(Done {
        result: json!({
            "tool": "barman",
            "server": server,
            "label": made.label,
            "type": made.format,
            "size_bytes": made.size_bytes,
            "started_at": made.started_at,
            "finished_at": made.finished_at,
            "status": made.info.get("status"),
            "recorded": record.iter().map(|b| b.label.clone()).collect::<Vec<_>>(),
            "forgotten": gone,
        }),
        record,
        forget: gone,
    })
}

/// Run Barman with its standard output in a file (Barman reports failed
/// checks and its errors there, whatever its exit status): how it ended,
/// and the last `limit` bytes of that output.
fn run_to_file(
    program: &Path,
    args: Vec<String>,
    plan: &Plan,
    stop: &AtomicBool,
    limit: usize,
) -> Result<(Result<(), pg_ark_core::Error>, String), JobFailure> {
    let file = tempfile::tempfile()
        .map_err(|e| JobFailure::transient(format!("could not create a temporary file: {e}")))?;
    let reader = file
        .try_clone()
        .map_err(|e| JobFailure::transient(format!("could not open a temporary file: {e}")))?;
    let r = Program::new(program)
        .args(args)
        .stdout(Stdout::File(file))
        .timeout(plan.timeout)
        .run(stop)
        .map(|_| ());
    Ok((r, tail_of(reader, limit)))
}

/// Run Barman: on failure, the end of its standard output goes into the
/// error with the end of its standard error.
fn run_keeping_stdout(
    program: &Path,
    args: Vec<String>,
    plan: &Plan,
    stop: &AtomicBool,
) -> Result<String, JobFailure> {
    let (r, stdout) = run_to_file(program, args, plan, stop, pg_ark_core::process::STDERR_TAIL)?;
    match r {
        Ok(()) => Ok(stdout),
        Err(e) => {
            let f = failed(e, barman::is_transient);
            Err(if stdout.is_empty() {
                f
            } else {
                JobFailure {
                    message: format!("{}; its output ends: {stdout}", f.message),
                    class: f.class,
                }
            })
        }
    }
}

/// Run Barman for its JSON report, whatever its exit status (`check`,
/// `list-backups`): all of its output (up to what a captured output
/// keeps: a report cut at its front would not parse); only a timeout, a
/// cancellation or a failure to start is an error.
fn run_any_status(
    program: &Path,
    args: Vec<String>,
    plan: &Plan,
    stop: &AtomicBool,
) -> Result<String, JobFailure> {
    let (r, stdout) = run_to_file(
        program,
        args,
        plan,
        stop,
        pg_ark_core::process::CAPTURE_LIMIT,
    )?;
    match r {
        Ok(())
        | Err(pg_ark_core::Error::Program(pg_ark_core::process::ProgramError::Failed { .. })) => {
            Ok(stdout)
        }
        Err(e) => Err(failed(e, barman::is_transient)),
    }
}

/// The last `limit` bytes of a program's output file.
fn tail_of(mut f: std::fs::File, limit: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = Vec::new();
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let start = len.saturating_sub(limit as u64);
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).trim().to_string()
}

fn run_basebackup(plan: &Plan, control: &Control, stop: &AtomicBool) -> Result<Done, JobFailure> {
    let bb = plan
        .basebackup
        .as_ref()
        .ok_or_else(|| JobFailure::permanent("no pg_basebackup plan"))?;
    let target = tools::text(&plan.options, "target");
    let dir = basebackup::target_dir(&bb.root, target).map_err(JobFailure::permanent)?;
    let dest = dir.join(&bb.label);
    // The one to build on: the label asked for, or the newest of the target
    // (none yet: a full backup, as pgBackRest does).
    let parent = match basebackup::incremental(&plan.options) {
        None => None,
        Some(Some(label)) => Some(
            bb.earlier
                .iter()
                .find(|e| e.0 == label)
                .cloned()
                .ok_or_else(|| {
                    JobFailure::permanent(format!(
                        "ark.backups records no pg_basebackup backup \"{label}\" of target \
                         \"{}\" to build on",
                        target.unwrap_or("")
                    ))
                })?,
        ),
        Some(None) => bb.earlier.first().cloned(),
    };
    let parent_manifest = parent
        .as_ref()
        .map(|p| Path::new(&p.1).join("backup_manifest"));
    if let Some(m) = &parent_manifest {
        if !m.is_file() {
            return Err(JobFailure::permanent(format!(
                "the backup to build on has no manifest at \"{}\"",
                m.display()
            )));
        }
    }
    let started = now();
    set_progress(
        control,
        json!({"phase": "pg_basebackup", "directory": dest}),
    );
    let r = Program::new(&bb.program)
        .args(basebackup::args(
            &plan.options,
            &dest,
            &bb.conn,
            parent_manifest.as_deref(),
            plan.job_id,
        ))
        .timeout(plan.timeout)
        .run(stop);
    if let Err(e) = r {
        // pg_basebackup removes what it wrote when it fails, not when it
        // is stopped.
        if !stop.load(Ordering::SeqCst) || dest.exists() {
            let _ = std::fs::remove_dir_all(&dest);
        }
        return Err(failed(e, |_| false));
    }
    let manifest = std::fs::read(dest.join("backup_manifest")).map_err(|e| {
        JobFailure::permanent(format!(
            "pg_basebackup succeeded, but its backup_manifest cannot be read: {e}"
        ))
    })?;
    let facts = basebackup::parse_manifest(&manifest).map_err(JobFailure::permanent)?;
    let made = ToolBackup {
        label: bb.label.clone(),
        format: tools::text(&plan.options, "format")
            .unwrap_or("plain")
            .to_string(),
        size_bytes: i64::try_from(dir_size(&dest)).unwrap_or(i64::MAX),
        started_at: started,
        finished_at: now(),
        info: json!({
            "target": target.unwrap_or(""),
            "directory": dest,
            "incremental_of": parent.as_ref().map(|p| p.0.clone()),
            "compression": tools::text(&plan.options, "compression"),
            "files": facts.files,
            "data_bytes": facts.bytes,
            "timeline": facts.timeline,
            "start_lsn": facts.start_lsn,
            "end_lsn": facts.end_lsn,
        }),
    };
    // Retention: whole chains of this target, this backup included.
    let mut kept: Vec<basebackup::Kept> = bb
        .earlier
        .iter()
        .map(|e| basebackup::Kept {
            label: e.0.clone(),
            finished_at: e.2,
            parent: e.3.clone(),
        })
        .collect();
    kept.push(basebackup::Kept {
        label: made.label.clone(),
        finished_at: made.finished_at,
        parent: parent.as_ref().map(|p| p.0.clone()),
    });
    let expired = basebackup::expired(
        &kept,
        jobs::count_option(&Value::Object(plan.options.clone()), "retain_count", 0),
        jobs::count_option(&Value::Object(plan.options.clone()), "retain_days", 0),
        made.finished_at,
    );
    let mut forget = Vec::new();
    let mut retention_errors = Vec::new();
    for label in &expired {
        let Some(e) = bb.earlier.iter().find(|e| &e.0 == label) else {
            continue;
        };
        // Only a directory of its own, under the configured directory.
        let path = PathBuf::from(&e.1);
        let inside = std::fs::canonicalize(&path)
            .ok()
            .zip(std::fs::canonicalize(&bb.root).ok())
            .is_some_and(|(p, root)| p.starts_with(&root) && p != root);
        if !path.exists() {
            forget.push(label.clone());
        } else if !inside {
            retention_errors.push(format!(
                "\"{}\" is not under ark.pg_basebackup_directory; left alone",
                path.display()
            ));
        } else {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => forget.push(label.clone()),
                Err(err) => {
                    retention_errors.push(format!("could not remove \"{}\": {err}", path.display()))
                }
            }
        }
    }
    let mut result = json!({
        "tool": "pg_basebackup",
        "label": made.label,
        "directory": dest,
        "format": made.format,
        "size_bytes": made.size_bytes,
        "incremental_of": made.info.get("incremental_of"),
        "start_lsn": facts.start_lsn,
        "end_lsn": facts.end_lsn,
        "expired": forget,
    });
    if !retention_errors.is_empty() {
        result["retention_errors"] = json!(retention_errors);
    }
    Ok(Done {
        result,
        record: vec![made],
        forget,
    })
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Record what the tool made, and forget what it no longer has
/// (backend's thread).
fn record(plan_repository: &str, kind: JobKind, job_id: i64, server_version: &str, done: &Done) {
    let r = xact::run(|| {
        for b in &done.record {
            let path = b
                .info
                .get("directory")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| b.label.clone());
            Spi::run_with_args(
                "INSERT INTO ark.backups (kind, label, format, size_bytes, started_at,
                        finished_at, server_version, repository, path, job_id, info)
                 VALUES ($1, $2, $3, $4, to_timestamp($5::float8), to_timestamp($6::float8),
                         $7, $8, $9, $10, $11)
                 ON CONFLICT (repository, path) DO NOTHING",
                &[
                    kind.as_str().into(),
                    b.label.clone().into(),
                    b.format.clone().into(),
                    b.size_bytes.into(),
                    b.started_at.into(),
                    b.finished_at.into(),
                    server_version.into(),
                    plan_repository.into(),
                    path.into(),
                    job_id.into(),
                    JsonB(b.info.clone()).into(),
                ],
            )?;
        }
        for label in &done.forget {
            Spi::run_with_args(
                "DELETE FROM ark.backups WHERE kind = $1 AND repository = $2 AND label = $3",
                &[
                    kind.as_str().into(),
                    plan_repository.into(),
                    label.clone().into(),
                ],
            )?;
        }
        Ok(())
    });
    if let Err(e) = r {
        warning!("pg_ark could not update ark.backups: {}", e);
    }
}

/// Run a `pgbackrest`, `barman` or `pg_basebackup` job.
pub fn run_tool(job: &Job) -> Outcome {
    let plan = match plan(job) {
        Ok(p) => p,
        Err(f) => return Outcome::Failed(f),
    };
    let (repository, kind, job_id, server_version) = (
        plan.repository.clone(),
        plan.kind,
        plan.job_id,
        plan.server_version.clone(),
    );
    let r = supervise(
        job,
        move |control, _tx: std::sync::mpsc::Sender<()>| work(plan, control),
        |_| {},
    );
    let r = r.map(|done| {
        done.map(|d| {
            record(&repository, kind, job_id, &server_version, &d);
            d.result
        })
    });
    outcome(r)
}
