//! Physical backups (`full`, `incremental` and `differential` jobs).
//!
//! 1. Checks: not a standby; WAL archiving into pg_ark on (the backup is
//!    restorable only with the WAL from its start to its stop).
//! 2. `pg_backup_start(label, fast => true)` in this worker's own session
//!    (non-exclusive: the backup ends with the session if the worker dies).
//! 3. An incremental or differential chooses its parent
//!    (`physical::choose_parent`) and checks that the WAL from the
//!    parent's start to its own start is all in the repository (a gap means
//!    WAL was not archived, for example under `wal_level = minimal`, and
//!    page LSNs can no longer be trusted). Without a usable parent it takes
//!    a full, and its result says why (`fallback`).
//! 4. The data directory is read and stored on threads that never call
//!    PostgreSQL (`pg_ark_core::physical`), while this thread publishes
//!    progress and watches for `ark.cancel()` and SIGTERM.
//! 5. `pg_backup_stop(wait_for_archive => false)`; its `backup_label` is
//!    stored with the data.
//! 6. The WAL from the start to the stop segment is waited for in the
//!    repository (option `wait_timeout`, default 600 s).
//! 7. The manifest, then the descriptor: only now is the backup complete,
//!    and only now is it recorded in `ark.backups`.
//!
//! Any failure ends the backup (`pg_backup_stop`) and removes what was
//! stored; a retry starts clean.
use crate::catalog::jobs::{Job, Outcome};
use crate::error::ArkError;
use crate::repo::RepoTarget as Target;
use crate::worker::job::{set_progress, stopped, supervise, Control};
use crate::{settings, xact};
use pg_ark_core::physical::{
    self, BackupKind, Basis, Decision, Manifest, PhysicalBackupInfo, Progress, StoreOptions,
};
use pg_ark_core::repo::compress::Compression;
use pg_ark_core::repo::ClusterRepo;
use pg_ark_core::schedule::jobs;
use pg_ark_core::schedule::lifecycle::JobFailure;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct BackupPlan {
    target: Target,
    datadir: PathBuf,
    server_version: String,
    wait: Duration,
    /// `data_checksums` is on: pages are verified as they are read.
    checksums: bool,
}

struct Started {
    start_lsn: String,
    /// When pg_backup_start returned (Unix microseconds): every commit
    /// before the start LSN is older.
    start_time_us: Option<i64>,
    start_wal: String,
    timeline: u32,
}

fn setting(name: &str) -> Result<String, ArkError> {
    Ok(
        Spi::get_one_with_args::<String>("SELECT current_setting($1)", &[name.into()])?
            .unwrap_or_default(),
    )
}

fn unsupported(what: String) -> ArkError {
    ArkError::Core(pg_ark_core::Error::Unsupported { what })
}

fn plan(job: &Job) -> Result<BackupPlan, ArkError> {
    // SAFETY: plain read on the backend's thread.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(unsupported(
            "physical backups of a standby are not supported: run them on the primary".into(),
        ));
    }
    let (mode, library) = (setting("archive_mode")?, setting("archive_library")?);
    if mode == "off" || library != "pg_ark" {
        return Err(unsupported(format!(
            "a physical backup needs the WAL it spans in the repository, but archive_mode is {mode} and archive_library is \"{library}\"; set archive_mode = on and archive_library = 'pg_ark' (archive_mode needs a restart)"
        )));
    }
    let wait = job
        .options
        .get("wait_timeout")
        .and_then(Value::as_u64)
        .unwrap_or(600);
    Ok(BackupPlan {
        target: Target::current()?,
        datadir: PathBuf::from(setting("data_directory")?),
        server_version: setting("server_version")?,
        wait: Duration::from_secs(wait),
        checksums: setting("data_checksums")? == "on",
    })
}

fn start(label: &str) -> Result<Started, ArkError> {
    let row = Spi::connect_mut(|c| {
        let t = c.update(
            "SELECT lsn::text, pg_walfile_name(lsn),
                    (SELECT timeline_id FROM pg_control_checkpoint()),
                    (extract(epoch FROM clock_timestamp()) * 1000000)::int8
               FROM pg_backup_start($1, true) AS lsn",
            None,
            &[label.into()],
        )?;
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<i32>(3)?.unwrap_or(0),
            r.get::<i64>(4)?,
        ))
    })?;
    Ok(Started {
        start_lsn: row.0,
        start_wal: row.1,
        timeline: u32::try_from(row.2).unwrap_or(0),
        start_time_us: row.3,
    })
}

/// End the backup: (stop LSN, its segment, backup_label).
fn stop() -> Result<(String, String, String), ArkError> {
    Ok(Spi::connect_mut(|c| {
        let t = c.update(
            "SELECT lsn::text, pg_walfile_name(lsn), labelfile
               FROM pg_backup_stop(false)",
            None,
            &[],
        )?;
        let r = t.first();
        Ok::<_, pgrx::spi::SpiError>((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<String>(3)?.unwrap_or_default(),
        ))
    })?)
}

/// After a failure: end the backup if it is still running, and remove
/// what was stored.
fn abandon(cluster: Option<&ClusterRepo>, id: &str) {
    let _ = xact::run(|| {
        Spi::run("SELECT pg_backup_stop(false)")?;
        Ok(())
    });
    if let Some(c) = cluster {
        if let Err(e) = physical::delete_backup(c, id) {
            warning!(
                "pg_ark could not remove the objects of failed backup \"{}\": {}",
                id,
                e
            );
        }
    }
}

fn copy(
    cluster: ClusterRepo,
    prefix: String,
    datadir: PathBuf,
    (compression, level): (Compression, i32),
    basis: Option<Basis>,
    checksums: Option<u64>,
    control: Arc<Control>,
) -> Result<Copied, JobFailure> {
    let dd = physical::walk(&datadir).map_err(JobFailure::from)?;
    let mut basis = basis;
    if let Some(b) = basis.as_mut() {
        b.databases = dd.databases.clone();
        b.read_parent(&cluster, &dd.files)
            .map_err(JobFailure::from)?;
    }
    let progress = Progress::default();
    let pages = checksums.map(physical::PageCheck::new);
    let files = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            physical::store_files(
                &cluster,
                &prefix,
                &datadir,
                &dd.files,
                StoreOptions {
                    compression,
                    level,
                    threads: 2,
                    bundle_below: physical::BUNDLE_FILES_BELOW,
                },
                basis.as_ref(),
                pages.as_ref(),
                &progress,
            )
        });
        while !worker.is_finished() {
            if control.stop.load(Ordering::SeqCst) {
                progress.cancel.store(true, Ordering::SeqCst);
            }
            let done = progress.bytes_done.load(Ordering::Relaxed);
            control.bytes.store(done, Ordering::Relaxed);
            set_progress(
                &control,
                json!({"phase": "copy", "bytes_done": done,
                       "bytes_total": progress.bytes_total.load(Ordering::Relaxed)}),
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        worker.join().unwrap_or_else(|_| {
            Err(pg_ark_core::Error::PushPanicked {
                name: prefix.clone(),
            })
        })
    })
    .map_err(JobFailure::from)?;
    let (bad, checked) = match &pages {
        Some(p) => (p.bad_pages(), Some(p.checked.load(Ordering::Relaxed))),
        None => (Vec::new(), None),
    };
    Ok(Copied {
        cluster,
        files,
        dirs: dd.dirs,
        tablespaces: dd.tablespaces,
        databases: dd.databases,
        bad,
        checked,
    })
}

/// What the copy stored, and what page verification found.
struct Copied {
    cluster: ClusterRepo,
    files: Vec<physical::ManifestFile>,
    dirs: Vec<String>,
    tablespaces: Vec<physical::Tablespace>,
    databases: std::collections::BTreeMap<String, String>,
    bad: Vec<physical::BadPage>,
    /// Pages checked (`None`: the cluster has no checksums).
    checked: Option<u64>,
}

/// The changed blocks from `from_lsn` to `to_lsn` on `timeline`, from
/// PostgreSQL's WAL summaries (17+ with `summarize_wal = on`), read in
/// this worker's session. `Err(reason)`: they cannot be used (not on, not
/// caught up within `wait`, or not covering the whole range), and page LSNs
/// are compared instead.
fn wal_summaries(
    from_lsn: &str,
    to_lsn: &str,
    timeline: u32,
    wait: Duration,
) -> Result<
    std::collections::HashMap<physical::increment::RelFork, physical::increment::ForkChanges>,
    String,
> {
    use physical::increment::{ForkChanges, RelFork};
    let on = xact::run(|| {
        Ok(Spi::get_one::<bool>(
            "SELECT current_setting('server_version_num')::int >= 170000
                AND coalesce(current_setting('summarize_wal', true), 'off') = 'on'",
        )?
        .unwrap_or(false))
    })
    .map_err(|e| e.to_string())?;
    if !on {
        return Err("summarize_wal is not on".into());
    }
    // The summarizer catches up with the checkpoint of pg_backup_start.
    let deadline = Instant::now() + wait;
    loop {
        let caught_up = xact::run(|| {
            Ok(Spi::get_one_with_args::<bool>(
                "SELECT summarized_lsn >= $1::pg_lsn FROM pg_get_wal_summarizer_state()",
                &[to_lsn.into()],
            )?
            .unwrap_or(false))
        })
        .map_err(|e| e.to_string())?;
        if caught_up {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the WAL summarizer did not reach {to_lsn} within {} s",
                wait.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
        pgrx::check_for_interrupts!();
    }
    let ranges: Vec<(String, String, bool, bool)> = xact::run(|| {
        Ok(Spi::connect(|c| {
            let t = c.select(
                "SELECT start_lsn::text, end_lsn::text,
                        start_lsn <= $2::pg_lsn, end_lsn >= $3::pg_lsn
                   FROM pg_available_wal_summaries()
                  WHERE tli = $1 AND end_lsn > $2::pg_lsn AND start_lsn < $3::pg_lsn
                  ORDER BY start_lsn",
                None,
                &[i64::from(timeline).into(), from_lsn.into(), to_lsn.into()],
            )?;
            let mut out = Vec::new();
            for r in t {
                out.push((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<bool>(3)?.unwrap_or(false),
                    r.get::<bool>(4)?.unwrap_or(false),
                ));
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        })?)
    })
    .map_err(|e| e.to_string())?;
    // Contiguous from before the parent's start to after this one's.
    let covered = ranges.first().is_some_and(|r| r.2)
        && ranges.last().is_some_and(|r| r.3)
        && ranges.windows(2).all(|w| w[0].1 == w[1].0);
    if !covered {
        return Err(format!(
            "the WAL summaries on timeline {timeline} do not cover {from_lsn} to {to_lsn}"
        ));
    }
    let mut forks: std::collections::HashMap<RelFork, ForkChanges> = Default::default();
    for (start, end, _, _) in &ranges {
        // Fetched through a cursor, a batch per SPI session (whose end frees
        // the batch): a summary of a busy range names every block written,
        // and no result set holding all of them is ever in this process.
        xact::run(|| {
            let cursor = Spi::connect(|c| {
                c.try_open_cursor(
                    "SELECT reltablespace::int8, reldatabase::int8, relfilenode::int8,
                            relforknumber::int4, relblocknumber::int8, is_limit_block
                       FROM pg_wal_summary_contents($1, $2::pg_lsn, $3::pg_lsn)",
                    &[
                        i64::from(timeline).into(),
                        start.clone().into(),
                        end.clone().into(),
                    ],
                )
                .map(|c| c.detach_into_name())
            })?;
            loop {
                let fetched = Spi::connect(|c| {
                    let mut cur = c.find_cursor(&cursor)?;
                    let t = cur.fetch(SUMMARY_BATCH)?;
                    let n = t.len();
                    for r in t {
                        let n = |v: Option<i64>| u32::try_from(v.unwrap_or(0)).unwrap_or(0);
                        let key = RelFork {
                            tablespace: n(r.get::<i64>(1)?),
                            database: n(r.get::<i64>(2)?),
                            relfilenode: n(r.get::<i64>(3)?),
                            fork: u8::try_from(r.get::<i32>(4)?.unwrap_or(0)).unwrap_or(0),
                        };
                        let block = n(r.get::<i64>(5)?);
                        let entry = forks.entry(key).or_default();
                        if r.get::<bool>(6)?.unwrap_or(false) {
                            entry.limit = Some(entry.limit.map_or(block, |l| l.min(block)));
                        } else {
                            entry.blocks.push(block);
                        }
                    }
                    if n == 0 {
                        drop(cur); // closes it
                    } else {
                        cur.detach_into_name();
                    }
                    Ok::<_, pgrx::spi::SpiError>(n)
                })?;
                if fetched == 0 {
                    break;
                }
                pgrx::check_for_interrupts!();
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(forks)
}

/// Rows of `pg_wal_summary_contents` fetched at a time.
const SUMMARY_BATCH: i64 = 10_000;

/// The ids of backups whose last verification failed.
fn unusable_backups() -> Result<std::collections::HashSet<String>, ArkError> {
    Ok(Spi::connect(|c| {
        let t = c.select(
            "SELECT label FROM ark.backups
              WHERE kind IN ('full', 'incremental', 'differential')
                AND (info->'verification'->>'ok')::boolean IS FALSE",
            None,
            &[],
        )?;
        let mut out = std::collections::HashSet::new();
        for r in t {
            if let Some(l) = r.get::<String>(1)? {
                out.insert(l);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?)
}

/// Wait until every segment from `start_wal` to `stop_wal` is in the
/// repository, or `wait` has passed.
fn wait_for_wal(
    cluster: &ClusterRepo,
    start_wal: &str,
    stop_wal: &str,
    wait: Duration,
    control: &Control,
) -> Result<(), JobFailure> {
    let segments = cluster
        .segment_size()
        .range(start_wal, stop_wal)
        .map_err(JobFailure::from)?;
    let deadline = Instant::now() + wait;
    let mut next = 0;
    while next < segments.len() {
        // A cheap existence check while waiting; once there, the segment is
        // read and verified (checksum, system identifier) once.
        let key = cluster.wal_key(&segments[next]).map_err(JobFailure::from)?;
        let present = cluster
            .storage()
            .head(&key)
            .map_err(JobFailure::from)?
            .is_some();
        if present {
            match cluster.check_wal(&segments[next]) {
                Ok(true) => {
                    next += 1;
                    continue;
                }
                Ok(false) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if control.stop.load(Ordering::SeqCst) {
            return Err(JobFailure::permanent(
                "the backup was stopped while it waited for its WAL",
            ));
        }
        if Instant::now() >= deadline {
            // A timeout: the archiver may catch up before the retry.
            return Err(JobFailure::transient(format!(
                "WAL segment \"{}\", which the backup needs, was not archived within {} s; the backup is not complete (check ark.archive_status())",
                segments[next],
                wait.as_secs()
            )));
        }
        set_progress(
            control,
            json!({"phase": "wait for WAL", "segment": segments[next]}),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Seconds spent in each phase of a backup, for its result.
struct Phases {
    at: Instant,
    out: serde_json::Map<String, Value>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            at: Instant::now(),
            out: serde_json::Map::new(),
        }
    }

    /// The phase `name` ended now.
    fn mark(&mut self, name: &str) {
        let now = Instant::now();
        let secs = (now - self.at).as_secs_f64();
        self.out
            .insert(name.into(), json!((secs * 1000.0).round() / 1000.0));
        self.at = now;
    }

    fn done(mut self, last: &str) -> Value {
        self.mark(last);
        Value::Object(self.out)
    }
}

/// Open the repository on a work thread (it may be S3), and remove what
/// failed or killed backups left first: no other physical backup of this
/// server runs (conflict key `physical`), so a backup prefix without a
/// descriptor or another writer's live lease is garbage.
fn open_repository(job: &Job, plan: &BackupPlan) -> Result<ClusterRepo, Outcome> {
    let target = plan.target.clone();
    let own = physical::lease::holder(&plan.datadir);
    let opened = supervise(
        job,
        move |_c, _tx: std::sync::mpsc::Sender<()>| {
            let c = target.open()?;
            let removed = physical::remove_incomplete(&c, &own)?;
            Ok::<_, pg_ark_core::Error>((c, removed))
        },
        |_| {},
    );
    match opened {
        Ok(Ok((c, (removed, running, retained)))) => {
            for r in removed {
                log!("pg_ark job {}: removed incomplete backup \"{}\"", job.id, r);
            }
            for r in running {
                log!(
                    "pg_ark job {}: backup \"{}\" is in progress elsewhere (it holds a lease): left alone",
                    job.id,
                    r
                );
            }
            for r in retained {
                log!(
                    "pg_ark job {}: incomplete backup \"{}\" is retained by Object Lock: removed once its lock ends",
                    job.id,
                    r
                );
            }
            Ok(c)
        }
        Ok(Err(e)) => Err(Outcome::Failed(e.into())),
        Err(s) => Err(stopped(s)),
    }
}

/// The parent of an incremental or differential, decided on a work thread
/// (`physical::decide`: repository reads, waits for WAL to be archived).
fn choose(
    job: &Job,
    plan: &BackupPlan,
    cluster: &ClusterRepo,
    started: &Started,
    requested: BackupKind,
    unusable: std::collections::HashSet<String>,
) -> Result<Decision, Outcome> {
    let (c, d, w) = (cluster.clone(), plan.datadir.clone(), plan.wait);
    let (start_wal, timeline, checksums) =
        (started.start_wal.clone(), started.timeline, plan.checksums);
    let decided = supervise(
        job,
        move |control, _tx: std::sync::mpsc::Sender<()>| {
            let waiting = |segment: &str| {
                set_progress(
                    &control,
                    json!({"phase": "wait for earlier WAL", "segment": segment}),
                )
            };
            physical::decide(
                &c,
                requested,
                physical::Started {
                    start_wal: &start_wal,
                    timeline,
                    checksums,
                },
                &unusable,
                &d,
                w,
                &control.stop,
                &waiting,
            )
        },
        |_| {},
    );
    match decided {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(Outcome::Failed(e)),
        Err(s) => Err(stopped(s)),
    }
}

/// Take the lease of backup `id` on a work thread (see physical::lease).
fn take_lease(
    job: &Job,
    cluster: &ClusterRepo,
    id: &str,
    datadir: &std::path::Path,
) -> Result<physical::lease::Lease, Outcome> {
    let holder = physical::lease::holder(datadir);
    let (c, i) = (cluster.clone(), id.to_string());
    match supervise(
        job,
        move |_c, _tx: std::sync::mpsc::Sender<()>| {
            physical::lease::Lease::take(&c, &i, &holder, physical::lease::RENEW_EVERY)
        },
        |_| {},
    ) {
        Ok(Ok(l)) => Ok(l),
        Ok(Err(e)) => Err(Outcome::Failed(e.into())),
        Err(s) => Err(stopped(s)),
    }
}

/// The server log's line for a backup that starts.
fn log_start(
    job: &Job,
    kind: BackupKind,
    id: &str,
    start_lsn: &str,
    requested: BackupKind,
    decision: &Decision,
) {
    match &decision.fallback {
        Some(reason) => log!(
            "pg_ark job {}: {} backup \"{}\" started at {}, a full instead of the {} requested: {}",
            job.id,
            kind,
            id,
            start_lsn,
            requested,
            reason
        ),
        None => log!(
            "pg_ark job {}: {} backup \"{}\" started at {}{}",
            job.id,
            kind,
            id,
            start_lsn,
            decision
                .parent
                .as_ref()
                .map(|(p, _)| format!(", against \"{}\"", p.backup_id))
                .unwrap_or_default()
        ),
    }
}

/// Record a complete backup in ark.backups (backend's thread). The backup
/// is complete in the repository whatever happens here.
fn record_backup(job: &Job, cluster: &ClusterRepo, prefix: &str, info: &PhysicalBackupInfo) {
    let doc = serde_json::to_value(info).unwrap_or(Value::Null);
    let recorded = xact::run(|| {
        Spi::run_with_args(
            "INSERT INTO ark.backups (kind, label, size_bytes, started_at, finished_at,
                    server_version, repository, path, job_id, info)
             VALUES ($10, $1, $2, to_timestamp($3::float8), to_timestamp($4::float8),
                     $5, $6, $7, $8, $9)
             ON CONFLICT (repository, path) DO NOTHING",
            &[
                info.backup_id.clone().into(),
                i64::try_from(info.original_bytes)
                    .unwrap_or(i64::MAX)
                    .into(),
                (info.started_epoch as f64).into(),
                (info.finished_epoch as f64).into(),
                info.server_version.clone().into(),
                cluster.location().into(),
                prefix.into(),
                job.id.into(),
                JsonB(doc.clone()).into(),
                info.kind.as_str().into(),
            ],
        )?;
        Ok(())
    });
    if let Err(e) = recorded {
        // The backup is complete in the repository; only the catalog row
        // is missing, which a later listing can restore.
        warning!(
            "pg_ark could not record backup \"{}\" in ark.backups: {}",
            info.backup_id,
            e
        );
    }
}

/// Retention, once a backup is complete: whole chains that are no longer
/// kept, and the WAL only they needed. A failure here leaves the backup
/// complete (said in `result`); the next backup or ark.expire() tries
/// again.
fn apply_retention(job: &Job, cluster: &ClusterRepo, result: &mut Value) {
    let rules = retention_rules(&job.options);
    let c = cluster.clone();
    match supervise(
        job,
        move |_control, _tx: std::sync::mpsc::Sender<()>| {
            pg_ark_core::retention::physical::expire(
                &c,
                rules,
                pg_ark_core::logical::now_epoch(),
                false,
            )
        },
        |_| {},
    ) {
        Ok(Ok(expired)) => {
            forget_expired(&cluster.location(), &expired.prefixes);
            for b in &expired.backups {
                log!("pg_ark job {}: expired backup {}", job.id, b["label"]);
            }
            result["expired"] = json!({"backups": expired.backups, "wal": expired.wal,
                                       "pending": expired.pending,
                                       "relocked": expired.relocked,
                                       "recoverable_from": expired.recoverable_from});
        }
        Ok(Err(e)) => {
            warning!("pg_ark job {}: retention was not applied: {}", job.id, e);
            result["expire_error"] = json!(e.to_string());
        }
        Err(_) => {
            result["expire_error"] = json!("stopped before retention was applied");
        }
    }
}

/// Where an increment's changed blocks come from: the WAL summaries, set
/// in `basis` when they cover the range from `parent`'s start (so that
/// unchanged data is not even read), else page LSNs, with the reason.
fn changes_from(
    parent: &PhysicalBackupInfo,
    basis: &mut Basis,
    started: &Started,
    wait: Duration,
) -> Value {
    match wal_summaries(
        &parent.start_lsn,
        &started.start_lsn,
        started.timeline,
        Duration::from_secs(60).min(wait),
    ) {
        Ok(s) => {
            basis.summary = Some(s);
            json!("WAL summaries")
        }
        Err(reason) => json!(format!("page LSNs ({reason})")),
    }
}

/// The pages checked and the checksum failures found, in `result` and in
/// the server log (one WARNING each, as base backups say them).
fn report_checksums(job: &Job, checked: u64, bad: &[physical::BadPage], result: &mut Value) {
    result["pages_checked"] = json!(checked);
    result["checksum_failures"] = json!(bad
        .iter()
        .map(|b| json!({"file": b.path, "block": b.block,
                        "expected": b.expected, "found": b.found}))
        .collect::<Vec<_>>());
    for b in bad {
        warning!(
            "pg_ark job {}: checksum verification failed in file \"{}\", block {}: calculated {:X} but expected {:X}",
            job.id,
            b.path,
            b.block,
            b.expected,
            b.found
        );
    }
}

/// Run a `full`, `incremental` or `differential` job.
pub fn run_physical(job: &Job, requested: BackupKind) -> Outcome {
    let plan = match xact::run(|| plan(job)) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(e),
    };
    let unusable = if requested == BackupKind::Full {
        Default::default()
    } else {
        match xact::run(unusable_backups) {
            Ok(u) => u,
            Err(e) => return Outcome::Failed(e),
        }
    };
    let compression = match settings::compression() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e.into()),
    };
    let mut phases = Phases::new();
    let started_epoch = pg_ark_core::logical::now_epoch();
    let cluster = match open_repository(job, &plan) {
        Ok(c) => c,
        Err(o) => return o,
    };
    phases.mark("open repository");
    let label = format!("pg_ark job {}", job.id);
    let started = match xact::run(|| start(&label)) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e.context("could not start the backup")),
    };
    phases.mark("pg_backup_start");
    let decision = if requested == BackupKind::Full {
        Decision::full()
    } else {
        match choose(job, &plan, &cluster, &started, requested, unusable) {
            Ok(d) => d,
            Err(o) => {
                abandon(None, "");
                return o;
            }
        }
    };
    let kind = match (&decision.parent, requested) {
        (None, _) => BackupKind::Full,
        (Some(_), BackupKind::Differential) => BackupKind::Differential,
        (Some(_), _) => BackupKind::Incremental,
    };
    let id = format!(
        "{}-{}-j{}",
        pg_ark_core::logical::rfc3339_utc(started_epoch).replace(['-', ':'], ""),
        kind.letter(),
        job.id
    );
    let prefix = physical::backup_prefix(&cluster, &id);
    // The lease comes before any object of the backup and is renewed until
    // its descriptor is written: another writer of this repository entry
    // (a restored copy of this cluster) leaves the prefix alone meanwhile
    // (see physical::lease).
    let mut lease = match take_lease(job, &cluster, &id, &plan.datadir) {
        Ok(l) => Some(l),
        Err(o) => {
            abandon(None, "");
            return o;
        }
    };
    log_start(job, kind, &id, &started.start_lsn, requested, &decision);
    let (parent_info, mut basis) = match decision.parent {
        Some((p, b)) => (Some(p), Some(b)),
        None => (None, None),
    };
    // Changed blocks from the WAL summaries when they cover the range, so
    // that unchanged data is not even read; else page LSNs.
    phases.mark("choose parent");
    let changes_from = match (&parent_info, basis.as_mut()) {
        (Some(p), Some(b)) => Some(changes_from(p, b, &started, plan.wait)),
        _ => None,
    };
    phases.mark("WAL summaries");
    let copied = {
        let (c, p, d) = (cluster.clone(), prefix.clone(), plan.datadir.clone());
        let checksums = plan
            .checksums
            .then(|| physical::increment::parse_lsn(&started.start_lsn))
            .flatten();
        supervise(
            job,
            move |control, _tx: std::sync::mpsc::Sender<()>| {
                copy(c, p, d, compression, basis, checksums, control)
            },
            |_| {},
        )
    };
    let Copied {
        cluster,
        mut files,
        dirs,
        tablespaces,
        databases,
        bad,
        checked,
    } = match copied {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            drop(lease.take());
            abandon(Some(&cluster), &id);
            return Outcome::Failed(e);
        }
        Err(s) => {
            drop(lease.take());
            abandon(Some(&cluster), &id);
            return stopped(s);
        }
    };
    phases.mark("copy");
    let (stop_lsn, stop_wal, label) = match xact::run(stop) {
        Ok(v) => v,
        Err(e) => {
            drop(lease.take());
            abandon(Some(&cluster), &id);
            return Outcome::Failed(e.context("could not stop the backup"));
        }
    };
    match physical::store_bytes(&cluster, &prefix, "backup_label", label.as_bytes()) {
        Ok(f) => files.push(f),
        Err(e) => {
            drop(lease.take());
            let _ = physical::delete_backup(&cluster, &id);
            return Outcome::Failed(e.into());
        }
    }
    phases.mark("stop");
    let waited = {
        let (c, a, b, w) = (
            cluster.clone(),
            started.start_wal.clone(),
            stop_wal.clone(),
            plan.wait,
        );
        supervise(
            job,
            move |control, _tx: std::sync::mpsc::Sender<()>| wait_for_wal(&c, &a, &b, w, &control),
            |_| {},
        )
    };
    match waited {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            drop(lease.take());
            let _ = physical::delete_backup(&cluster, &id);
            return Outcome::Failed(e);
        }
        Err(s) => {
            drop(lease.take());
            let _ = physical::delete_backup(&cluster, &id);
            return stopped(s);
        }
    }
    phases.mark("wait for WAL");
    let finished_epoch = pg_ark_core::logical::now_epoch();
    let info = PhysicalBackupInfo {
        format_version: physical::PHYSICAL_INFO_VERSION,
        kind,
        backup_id: id.clone(),
        parent: parent_info.as_ref().map(|p| p.backup_id.clone()),
        chain: decision.chain.clone().unwrap_or_else(|| id.clone()),
        reference_lsn: parent_info.as_ref().map(|p| p.start_lsn.clone()),
        start_lsn: started.start_lsn.clone(),
        start_time_us: started.start_time_us,
        stop_lsn: stop_lsn.clone(),
        timeline: started.timeline,
        start_wal: started.start_wal.clone(),
        stop_wal,
        wal_segment_size: cluster.segment_size(),
        started_at: pg_ark_core::logical::rfc3339_utc(started_epoch),
        finished_at: pg_ark_core::logical::rfc3339_utc(finished_epoch),
        started_epoch,
        finished_epoch,
        original_bytes: files.iter().map(|f| f.size).sum(),
        stored_bytes: files.iter().map(|f| f.stored).sum(),
        files: files.len(),
        server_version: plan.server_version.clone(),
        system_identifier: cluster.system_identifier,
        tablespaces: tablespaces.clone(),
        checksums: plan.checksums,
        job_id: Some(job.id),
        created_by: format!("pg_ark {}", env!("CARGO_PKG_VERSION")),
    };
    let manifest = Manifest {
        format_version: physical::PHYSICAL_INFO_VERSION,
        backup_id: id.clone(),
        files,
        dirs,
        tablespaces,
        databases,
    };
    // Fenced: a backup whose lease may have lapsed (renewals failed, or the
    // worker stalled) may have lost objects to another writer's cleanup.
    if let Some(age) = lease.as_ref().and_then(|l| l.stale()) {
        drop(lease.take());
        let _ = physical::delete_backup(&cluster, &id);
        // A conflict with another writer: the next attempt takes a new one.
        return Outcome::Failed(JobFailure::transient(format!(
            "the lease of backup \"{id}\" was last renewed {age} s ago, so another writer of the repository entry may have taken it for abandoned; the backup is not recorded complete"
        )));
    }
    if let Err(e) = physical::finish_backup(&cluster, &manifest, &info) {
        drop(lease.take());
        let _ = physical::delete_backup(&cluster, &id);
        return Outcome::Failed(e.into());
    }
    // Complete: the descriptor is written, and the lease ends.
    drop(lease.take());
    record_backup(job, &cluster, &prefix, &info);
    let mut result = json!({
        "backup_id": id,
        "kind": kind,
        "parent": info.parent,
        "chain": info.chain,
        "path": prefix,
        "start_lsn": info.start_lsn,
        "stop_lsn": info.stop_lsn,
        "timeline": info.timeline,
        "files": info.files,
        "original_bytes": info.original_bytes,
        "stored_bytes": info.stored_bytes,
    });
    if let Some(reason) = decision.fallback {
        result["requested"] = json!(requested);
        result["fallback"] = json!(reason);
    }
    if let Some(from) = changes_from {
        result["changes_from"] = from;
    }
    if let Some(n) = checked {
        report_checksums(job, n, &bad, &mut result);
    }
    // Retention, now that this backup is complete: whole chains that are
    // no longer kept, and the WAL only they needed. A failure here leaves
    // the backup complete; the next backup or ark.expire() tries again.
    phases.mark("finish");
    apply_retention(job, &cluster, &mut result);
    phases.mark("expire");
    scan_for_tampering(job, &plan.target, &mut result);
    result["seconds"] = json!(phases.done("tampering"));
    Outcome::Succeeded(result)
}

/// On a bucket under Object Lock, every key's versions scanned for what
/// was done behind pg_ark's back (see `storage::find_tampering`), into
/// `result`. A scan that fails is said in `result` and the log; the
/// backup stays complete.
fn scan_for_tampering(job: &Job, target: &Target, result: &mut Value) {
    let t = target.clone();
    match supervise(
        job,
        move |_control, _tx: std::sync::mpsc::Sender<()>| t.tampering(),
        |_| {},
    ) {
        Ok(Ok(found)) => crate::worker::verify::report_tampering(job, found, result),
        Ok(Err(e)) => {
            warning!(
                "pg_ark job {}: the repository's versions were not scanned: {}",
                job.id,
                e
            );
            result["tampering_error"] = json!(e.to_string());
        }
        Err(_) => {}
    }
}

/// The physical retention rules: a job's options over the settings.
pub(crate) fn retention_rules(options: &Value) -> pg_ark_core::retention::physical::Rules {
    let pick = |key: &str, setting: i32| jobs::count_option(options, key, setting);
    pg_ark_core::retention::physical::Rules {
        full: pick("retention_full", settings::RETENTION_FULL.get()).unwrap_or(2),
        diff: pick("retention_diff", settings::RETENTION_DIFF.get()),
        days: pick("retention_days", settings::RETENTION_DAYS.get()),
    }
}

/// Remove the catalog rows of expired physical backups (backend's thread).
pub(crate) fn forget_expired(location: &str, prefixes: &[String]) {
    let r = xact::run(|| {
        for p in prefixes {
            Spi::run_with_args(
                "DELETE FROM ark.backups WHERE repository = $1 AND path = $2",
                &[location.into(), p.clone().into()],
            )?;
        }
        Ok(())
    });
    if let Err(e) = r {
        warning!("pg_ark could not update ark.backups: {}", e);
    }
}
