//! `pg_ark restore`: rebuild a physical backup into a data directory and
//! set it up to recover to a target, from the repository alone (no
//! server, no database, no catalog).
//!
//! The plan is `pg_ark_core::restore::plan`, the same code as
//! `ark.restore_plan()`; `--dry-run` prints it and changes nothing.
use crate::progress::{self, Mode};
use crate::repo_opts::RepoOpts;
use crate::Failure;
use indicatif::ProgressBar;
use pg_ark_core::pg::log::{self as server_log, EndAction};
use pg_ark_core::physical;
use pg_ark_core::process::{Env, Program, Stdout};
use pg_ark_core::repo::ClusterRepo;
use pg_ark_core::restore::plan::{self, Request, Target, TimelineChoice};
use pg_ark_core::restore::{self, Counters, Options};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").args(["target_time", "target_lsn", "target_xid", "target_name", "immediate"])))]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoOpts,
    /// The data directory to restore into: empty or absent (or, with
    /// --delta, an old copy of this cluster)
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    /// The cluster to restore, when the repository holds several
    #[arg(long, value_name = "ID")]
    pub system_identifier: Option<u64>,
    /// Recover to this time (with its zone: '2026-12-01 18:00:00+00')
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Recover to this LSN (0/3000060)
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Recover until this transaction has ended
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<u64>,
    /// Recover to this restore point (pg_create_restore_point)
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent
    #[arg(long)]
    pub immediate: bool,
    /// latest, current or a timeline number
    #[arg(long, default_value = "latest", value_name = "TIMELINE")]
    pub target_timeline: String,
    /// Restore this backup (its chain) [default: the newest that reaches the target]
    #[arg(long, value_name = "BACKUP_ID")]
    pub backup: Option<String>,
    /// What the server does at the target: promote, pause or shutdown
    #[arg(long, default_value = "promote", value_name = "ACTION")]
    pub target_action: String,
    /// Restore tablespace OID into DIR instead of where it was (repeatable)
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// Files rebuilt at once [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Reuse an old copy of this cluster in DIR: keep the files that match
    #[arg(long)]
    pub delta: bool,
    /// Write archive_mode = off: a test restore that must not archive into
    /// the repository
    #[arg(long)]
    pub archive_off: bool,
    /// Start the restored cluster (pg_ctl from --pg-bin or PATH) and wait
    /// until recovery has reached the target
    #[arg(long)]
    pub start: bool,
    /// Directory of pg_ctl, for --start
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// No progress output
    #[arg(long, short)]
    pub quiet: bool,
}

fn target_of(a: &Args) -> Result<Target, Failure> {
    Ok(if let Some(t) = &a.target_time {
        Target::Time(plan::parse_time(t)?)
    } else if let Some(l) = &a.target_lsn {
        Target::Lsn(physical::increment::parse_lsn(l).ok_or_else(|| {
            Failure::Message(format!("\"{l}\" is not an LSN (for example 0/3000060)"))
        })?)
    } else if let Some(x) = a.target_xid {
        Target::Xid(x)
    } else if let Some(n) = &a.target_name {
        Target::Name(n.clone())
    } else if a.immediate {
        Target::Immediate
    } else {
        Target::Latest
    })
}

/// Open the repository and find the one cluster to restore.
pub fn open_cluster(repo: &RepoOpts, sysid: Option<u64>) -> Result<ClusterRepo, Failure> {
    let repository = repo.open()?;
    let mut clusters: Vec<ClusterRepo> = repository
        .clusters()?
        .into_iter()
        .filter(|c| sysid.is_none_or(|id| id == c.system_identifier))
        .collect();
    match clusters.len() {
        1 => Ok(clusters.remove(0)),
        0 => Err(Failure::Message(match sysid {
            Some(id) => format!(
                "the repository {} has no cluster with system identifier {id}",
                repository.location()
            ),
            None => format!("the repository {} holds no cluster", repository.location()),
        })),
        _ => Err(Failure::Message(format!(
            "the repository {} holds {} clusters ({}); choose one with --system-identifier",
            repository.location(),
            clusters.len(),
            clusters
                .iter()
                .map(|c| c.system_identifier.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn pg_ark_exe() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "pg_ark".into())
}

pub fn run(a: &Args) -> Result<(), Failure> {
    let req = Request {
        target: target_of(a)?,
        timeline: TimelineChoice::parse(&a.target_timeline)?,
        backup: a.backup.clone(),
    };
    let mut tablespaces = HashMap::new();
    for m in &a.tablespace_map {
        let Some((oid, dir)) = m.split_once('=') else {
            return Err(Failure::Message(format!(
                "--tablespace-map takes OID=DIR, not \"{m}\""
            )));
        };
        tablespaces.insert(oid.trim().to_string(), PathBuf::from(dir));
    }
    let cluster = open_cluster(&a.repo, a.system_identifier)?;
    let plan = plan::plan(&cluster, &req, &a.target_action)?;
    let pgdata = std::path::absolute(&a.pgdata).unwrap_or_else(|_| a.pgdata.clone());
    let (command_line, restore_command) = plan::command_lines(
        &plan,
        &req,
        &a.repo.config(),
        &pg_ark_exe(),
        &pgdata.display().to_string(),
        &a.target_action,
    );
    if a.dry_run {
        for (n, action, command, detail) in plan::steps(&plan, &restore_command, &command_line) {
            println!("{n:>2}. {action}");
            if !command.is_empty() {
                println!("      {command}");
            }
            if !detail.is_empty() {
                println!("      {detail}");
            }
        }
        return Ok(());
    }
    let say = |m: String| {
        if !a.quiet {
            eprintln!("pg_ark: {m}");
        }
    };
    say(format!(
        "restoring backup \"{}\" ({}, {} of them in its chain) into {}; recovery stops {}",
        plan.backup().backup_id,
        plan.backup().kind,
        plan.chain.len(),
        pgdata.display(),
        plan.stop
    ));
    let opts = Options {
        jobs: a
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        delta: a.delta,
        tablespaces,
        tablespace_root: None,
    };
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let report = {
        let mode = Mode::of_stderr(a.quiet);
        let shown = (mode != Mode::Off).then(|| spawn_progress(counters.clone(), mode));
        let r = restore::rebuild(
            &cluster,
            &plan.backup().backup_id,
            &pgdata,
            &opts,
            &counters,
        );
        if let Some((stop, handle)) = shown {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
        r?
    };
    restore::write_recovery(&pgdata, &restore_command, &plan.settings, a.archive_off)?;
    restore::mark_restored(&pgdata, &report.info)?;
    let secs = started.elapsed().as_secs_f64();
    say(format!(
        "rebuilt {} files ({}) in {secs:.1} s, {} fetched from the repository ({} bytes downloaded){}",
        report.files,
        plan::human_bytes(report.bytes),
        plan::human_bytes(report.fetched),
        report.fetched,
        if a.delta {
            format!(
                "; {} kept as they were, {} given only newer blocks, {} removed",
                report.kept, report.patched, report.removed
            )
        } else {
            String::new()
        }
    ));
    if !a.archive_off {
        say(format!(
            "once promoted, the cluster archives into {} on a new timeline (system identifier {}); \
             if the original still runs and archives, both write into that entry, on different timelines. \
             For a test restore, use --archive-off.",
            cluster.location(),
            cluster.system_identifier
        ));
    }
    if a.start {
        return start_and_wait(a, &pgdata, &plan);
    }
    println!(
        "restored into {}; start it with: pg_ctl -D {} start",
        pgdata.display(),
        plan::shell_quote(&pgdata.display().to_string())
    );
    Ok(())
}

/// The rebuild's progress, read from `c` by a thread of its own until
/// `stop`: a bar on a terminal, a plain line every [`progress::LINE_EVERY`]
/// otherwise.
fn spawn_progress(c: Arc<Counters>, mode: Mode) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let begun = Instant::now();
        let mut last_line = Instant::now();
        // Made once the rebuild knows its size.
        let mut bar: Option<ProgressBar> = None;
        let files = || {
            format!(
                "{}/{} files",
                c.files_done.load(Ordering::Relaxed),
                c.files_total.load(Ordering::Relaxed)
            )
        };
        loop {
            let stopping = s.load(Ordering::Relaxed);
            let total = c.bytes_total.load(Ordering::Relaxed);
            match mode {
                Mode::Bar => {
                    let done = c.bytes_done.load(Ordering::Relaxed);
                    match &bar {
                        Some(b) => {
                            b.set_length(total);
                            b.set_position(done);
                            b.set_message(files());
                        }
                        None if stopping || total > 0 => {
                            bar = Some(progress::bar_at(total, done, progress::RESTORE, files()));
                        }
                        None => {}
                    }
                }
                Mode::Lines if last_line.elapsed() >= progress::LINE_EVERY && !stopping => {
                    progress::line(&progress::restore_line(
                        c.bytes_done.load(Ordering::Relaxed),
                        total,
                        c.files_done.load(Ordering::Relaxed),
                        c.files_total.load(Ordering::Relaxed),
                        begun.elapsed(),
                    ));
                    last_line = Instant::now();
                }
                _ => {}
            }
            if stopping {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The bar stays, at where the rebuild ended.
        if let Some(b) = bar {
            progress::finish_with(&b, progress::RESTORE_DONE);
        }
    });
    (stop, handle)
}

/// How long `pg_ctl start -W` (which does not wait for the server) may take.
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(300);

/// `--start`: start the server and wait for the log line that says where
/// recovery stopped (or that it ended).
fn start_and_wait(a: &Args, pgdata: &Path, plan: &plan::Plan) -> Result<(), Failure> {
    let pg_ctl = a
        .pg_bin
        .as_ref()
        .map(|d| d.join("pg_ctl"))
        .unwrap_or_else(|| PathBuf::from("pg_ctl"));
    // A fresh log: one the restored directory brought along (a backup of
    // a cluster restored before) must not answer for this start.
    let log = pgdata.join("pg_ark_restore.log");
    match std::fs::remove_file(&log) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failure::Message(format!("{}: {e}", log.display()))),
    }
    // pg_ctl starts the user's own server, which lives on after pg_ark and
    // runs `pg_ark wal-get` with whatever the user's environment holds (S3
    // credentials, what its extensions need): it gets all of it.
    let started = Program::new(&pg_ctl)
        .env_policy(Env::clean().inherit_all())
        .arg("-D")
        .arg(pgdata)
        .arg("-l")
        .arg(&log)
        .args(["-W", "start"])
        .stdout(Stdout::Inherit)
        .timeout(PG_CTL_TIMEOUT)
        .run(&AtomicBool::new(false));
    match started {
        Ok(_) => {}
        Err(pg_ark_core::Error::Program(e)) => {
            return Err(Failure::Message(format!(
                "{} start failed ({}); see {}",
                pg_ctl.display(),
                e.detail(),
                log.display()
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let action = if plan.target == Target::Latest {
        EndAction::Promote
    } else {
        EndAction::parse(&a.target_action)
    };
    let begun = Instant::now();
    let mode = Mode::of_stderr(a.quiet);
    let spinner =
        (mode == Mode::Bar).then(|| progress::bar(0, progress::WAIT, recovery_progress("")));
    let mut last_line = Instant::now();
    let ended = |spinner: &Option<ProgressBar>| {
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
    };
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let waiting = recovery_progress(&text);
        if let Some(s) = &spinner {
            s.set_message(waiting);
        } else if mode == Mode::Lines && last_line.elapsed() >= progress::LINE_EVERY {
            progress::line(&format!(
                "{waiting} ({:.0} s)",
                begun.elapsed().as_secs_f64()
            ));
            last_line = Instant::now();
        }
        if let Some(l) = server_log::startup_failure(&text) {
            ended(&spinner);
            return Err(Failure::Message(format!(
                "recovery failed: {l} (see {})",
                log.display()
            )));
        }
        if server_log::recovery_ended(&text, action) {
            ended(&spinner);
            for l in server_log::recovery_lines(&text) {
                println!("{l}");
            }
            println!(
                "the restored cluster in {} {}",
                pgdata.display(),
                match action {
                    EndAction::Pause =>
                        "is paused at the target: SELECT pg_wal_replay_resume() promotes it",
                    EndAction::Shutdown => "stopped at the target",
                    EndAction::Promote => "is running",
                }
            );
            return Ok(());
        }
        if begun.elapsed() > Duration::from_secs(24 * 3600) {
            ended(&spinner);
            return Err(Failure::Message("recovery did not end within a day".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a server log says of recovery so far: the last WAL file restored
/// from the repository.
fn recovery_progress(log: &str) -> String {
    let last = log.lines().rev().find_map(|l| {
        let rest = &l[l.find("restored log file \"")? + "restored log file \"".len()..];
        Some(rest[..rest.find('"')?].to_string())
    });
    match last {
        Some(file) => format!("recovering: WAL file {file} restored"),
        None => "recovering: waiting for the first WAL file".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn recovery_progress_names_the_last_wal_file_restored() {
        let log = "2026-12-01 LOG:  starting point-in-time recovery to latest\n\
                   2026-12-01 LOG:  restored log file \"000000010000000000000003\" from archive\n\
                   2026-12-01 LOG:  redo starts at 0/3000028\n\
                   2026-12-01 LOG:  restored log file \"000000010000000000000004\" from archive\n\
                   2026-12-01 LOG:  consistent recovery state reached\n";
        assert_eq!(
            super::recovery_progress(log),
            "recovering: WAL file 000000010000000000000004 restored"
        );
        assert_eq!(
            super::recovery_progress("LOG:  starting point-in-time recovery\n"),
            "recovering: waiting for the first WAL file"
        );
    }
}
