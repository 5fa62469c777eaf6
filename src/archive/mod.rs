//! The archive module entry point: `archive_library = 'pg_ark'`.
//!
//! PostgreSQL has two archive-module C APIs, and pg_ark supports both:
//! - 15: `void _PG_archive_module_init(ArchiveModuleCallbacks *cb)`, whose
//!   callbacks take no state argument;
//! - 16+: `const ArchiveModuleCallbacks *_PG_archive_module_init(void)`,
//!   whose callbacks receive an `ArchiveModuleState *` (and, from 17, may set
//!   `arch_module_check_errdetail_string` to explain a failed check).
//!
//! pgrx has no bindings for `archive/archive_module.h`, so the structs are
//! declared here, per major, exactly as the C headers declare them.
//!
//! The callbacks never let an error or a panic escape: a failed archive is
//! reported as `false` with a logged reason, and PostgreSQL retries it. That
//! matters doubly before 17, where an ERROR inside a callback restarts the
//! archiver process.
use crate::error::ArkError;
use crate::settings;

pub mod status;
use pg_ark_core::repo::{ClusterRepo, PushOutcome, Repository};
use pg_ark_core::wal::push::PushAhead;
use pg_ark_core::{storage, RepoUrl};
use pgrx::{pg_sys, PgLogLevel};
use std::ffi::{c_char, CStr};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Is this process the archiver, loading us as `archive_library`?
pub fn loading_in_archiver() -> bool {
    // SAFETY: plain read of a backend global on the backend's own thread.
    unsafe { pg_sys::MyBackendType == pg_sys::BackendType::B_ARCHIVER }
}

/// The repository as this archiver process last opened it. Opening reads
/// (or creates) the repository descriptor and this cluster's entry, and
/// checks the entry's system identifier and major, so it is done once per
/// process and again only when `ark.repository` changes.
struct Opened {
    /// The settings it was opened with: repository URL, S3 options, workers.
    url: String,
    push: PushAhead,
}

static OPENED: Mutex<Option<Opened>> = Mutex::new(None);

/// The repository location whose stale temporaries this archiver removed.
static CLEANED: Mutex<Option<String>> = Mutex::new(None);

/// This cluster's system identifier and major version.
fn identity() -> (u64, u32) {
    // SAFETY: plain reads on the backend's own thread; the control file is
    // loaded long before the archiver runs.
    let sysid = unsafe { pg_sys::GetSystemIdentifier() };
    (sysid, pg_sys::PG_VERSION_NUM / 10000)
}

fn open_push(url: &str) -> Result<PushAhead, ArkError> {
    let (compression, level) = settings::compression()?;
    let workers = settings::archive_push_workers();
    let cluster = open_cluster(url)?;
    pgrx::log!("pg_ark archiver opened repository {}", cluster.location());
    // Once per open: a bucket that does not hold the lock pg_ark asks for.
    let window = u32::try_from(settings::RETENTION_DAYS.get())
        .ok()
        .filter(|&d| d > 0);
    match pg_ark_core::storage::lock_warnings(
        &pg_ark_core::RepoUrl::parse(url)?,
        &settings::s3_options()?,
        window,
    ) {
        Ok(warnings) => {
            for w in warnings {
                pgrx::warning!("pg_ark: repository {}: {}", cluster.location(), w);
            }
        }
        Err(e) => pgrx::warning!(
            "pg_ark: could not read the Object Lock configuration of repository {}: {}",
            cluster.location(),
            e
        ),
    }
    // A previous archiver killed in the middle of a push left its
    // temporary files; nothing else removes them. Once per location in
    // this archiver's life: it walks the cluster's whole entry.
    let mut cleaned = CLEANED.lock().unwrap_or_else(|p| p.into_inner());
    if cleaned.as_deref() != Some(cluster.location().as_str()) {
        match cluster.remove_stale_temporaries() {
            Ok(0) => {}
            Ok(n) => pgrx::log!(
                "pg_ark removed {} temporary files that an interrupted archiver left in {}",
                n,
                cluster.location()
            ),
            Err(e) => pgrx::warning!("pg_ark could not clean up temporary files: {}", e),
        }
        *cleaned = Some(cluster.location());
    }
    Ok(PushAhead::start(
        cluster,
        compression,
        level,
        workers,
        workers * 2,
    ))
}

/// The S3 options, with each S3 operation bounded by `ark.archive_timeout`.
fn archiver_s3_options() -> Result<pg_ark_core::storage::s3::S3Options, ArkError> {
    let mut o = settings::s3_options()?;
    o.operation_timeout = Some(settings::archive_timeout());
    Ok(o)
}

fn open_cluster(url: &str) -> Result<ClusterRepo, ArkError> {
    let storage = storage::open(&RepoUrl::parse(url)?, &archiver_s3_options()?)?;
    // The digest key (see `crypto::layer`) is in the state folder, which
    // pg_ark's own backups leave out; the archiver runs in the data
    // directory.
    let keys = settings::encryption_files()
        .keys(
            &pg_ark_core::repo::config::SETTINGS,
            settings::data_directory().as_deref(),
        )?
        .with_server_state(Path::new(STATE_DIR))
        .map_err(|source| pg_ark_core::Error::LocalIo {
            op: "read or create the keys in",
            path: STATE_DIR.into(),
            source,
        })?;
    let repo = Arc::new(Repository::open_with(storage, true, &keys)?);
    let (sysid, major) = identity();
    Ok(repo.attach(sysid, major, settings::wal_segment_size()?)?)
}

/// pg_ark's state folder in the data directory.
const STATE_DIR: &str = "pg_ark";

/// Why archiving cannot proceed, or `None` when it is configured.
fn not_configured_reason() -> Option<String> {
    match settings::repository() {
        None => Some("ark.repository is not set: pg_ark has no repository to archive to".into()),
        Some(url) => RepoUrl::parse(&url).err().map(|e| e.to_string()),
    }
}

/// Archive one file; returns whether the file is durably stored.
fn archive_file(file: &CStr, path: &CStr) -> bool {
    let file = file.to_string_lossy().into_owned();
    let path = path.to_string_lossy().into_owned();
    match try_archive(&file, &path).and_then(|outcome| {
        archive_also(&file, &path)?;
        Ok(outcome)
    }) {
        Ok(outcome) => {
            match outcome {
                PushOutcome::Stored { stored_bytes } => {
                    pgrx::debug1!(
                        "pg_ark archived \"{}\" ({} bytes stored)",
                        file,
                        stored_bytes
                    )
                }
                PushOutcome::AlreadyArchived => {
                    pgrx::log!(
                        "pg_ark: WAL file \"{}\" was already archived with identical content",
                        file
                    )
                }
                PushOutcome::Repaired {
                    damaged_key,
                    repair_key,
                    reason,
                    ..
                } => {
                    pgrx::pg_sys::panic::ErrorReport::new(
                        pgrx::PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                        format!("stored copy of WAL file \"{file}\" was damaged and has been repaired"),
                        "pg_ark",
                    )
                    .set_detail(format!(
                        "The stored copy \"{damaged_key}\" failed verification: {reason}. It stays as it was found; the file was stored again as \"{repair_key}\", which restores read."
                    ))
                    .set_hint("Check the repository's storage: other objects may be damaged too.")
                    .report(PgLogLevel::WARNING);
                }
            }
            true
        }
        Err(e) => {
            // A WARNING, never an ERROR: before 17 an ERROR here restarts the
            // archiver. PostgreSQL retries the file.
            // PostgreSQL's message style: what failed, then why (DETAIL),
            // then what to do (HINT).
            let mut report = pgrx::pg_sys::panic::ErrorReport::new(
                e.sqlstate(),
                format!("could not archive file \"{file}\""),
                "pg_ark",
            )
            .set_detail(format!(
                "{e}. The file stays in pg_wal, and PostgreSQL tries it again."
            ));
            if let Some(hint) = e.hint() {
                report = report.set_hint(hint);
            }
            report.report(PgLogLevel::WARNING);
            status::record_failure(&file, &e);
            false
        }
    }
}

fn try_archive(file: &str, path: &str) -> Result<PushOutcome, ArkError> {
    let url = settings::repository().ok_or(ArkError::NoRepository)?;
    let compression = settings::compression()?;
    // Reopen when any setting that shapes the repository handle changed.
    // S3Options' Debug hides the secret key, so its digest stands in for it.
    let s3 = archiver_s3_options()?;
    let secret = s3.secret_access_key.as_deref().map(|k| {
        pg_ark_core::repo::envelope::hex(&pg_ark_core::repo::envelope::sha256(k.as_bytes()))
    });
    // The encryption files' contents too: new recipients take effect at
    // once (a new data key, wrapped to them).
    let files = settings::encryption_files();
    let contents = |f: &Option<std::path::PathBuf>| {
        f.as_ref().map(|p| {
            std::fs::read(p)
                .map(|b| pg_ark_core::repo::envelope::hex(&pg_ark_core::repo::envelope::sha256(&b)))
                .unwrap_or_default()
        })
    };
    let fingerprint = format!(
        "{url} {s3:?} {secret:?} {:?} {} {files:?} {:?} {:?}",
        compression,
        settings::archive_push_workers(),
        contents(&files.recipients_file),
        contents(&files.identity_file),
    );
    let mut guard = OPENED.lock().unwrap_or_else(|p| p.into_inner());
    if guard.as_ref().is_none_or(|o| o.url != fingerprint) {
        *guard = None;
        *guard = Some(Opened {
            url: fingerprint,
            push: open_push(&url)?,
        });
    }
    let opened = guard.as_ref().ok_or(ArkError::NoRepository)?;
    match opened.push.archive(
        file,
        Path::new(path),
        Path::new("pg_wal/archive_status"),
        settings::archive_timeout(),
        &stop_requested,
    ) {
        Ok(o) => Ok(o),
        Err(e) => {
            // Reopen next time only when the repository itself is in doubt
            // (replaced, reformatted, another cluster's entry): opening
            // re-probes S3 and re-reads the descriptors. An unreachable
            // server, a conflicting or damaged file, a local I/O error keep
            // the handle.
            if needs_reopen(&e) {
                *guard = None;
            }
            Err(e.into())
        }
    }
}

/// Hand the file to `ark.archive_also`, the second destination, once pg_ark's
/// repository has it: the file counts as archived only when both have it.
fn archive_also(file: &str, path: &str) -> Result<(), ArkError> {
    use pg_ark_core::tools::archive_also::{push, PgbackrestProgram, SecondDestination};
    let Some(text) = settings::archive_also() else {
        return Ok(());
    };
    let fail = |destination: String, reason: String| ArkError::SecondDestination {
        destination,
        reason,
    };
    let dest = SecondDestination::parse(&text)
        .map_err(|reason| fail(format!("ark.archive_also = '{text}'"), reason))?;
    // PostgreSQL names the file relative to the data directory, where the
    // archiver runs.
    let wal = std::env::current_dir()
        .map(|d| d.join(path))
        .map_err(|e| fail(dest.describe(), e.to_string()))?;
    let program = settings::pgbackrest_path();
    let config = settings::pgbackrest_config();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    push(
        &dest,
        &wal,
        file,
        &PgbackrestProgram {
            program: &program,
            config: config.as_deref(),
        },
        settings::archive_timeout(),
        &cancel,
    )
    .map_err(|reason| fail(dest.describe(), reason))
}

fn needs_reopen(e: &pg_ark_core::Error) -> bool {
    use pg_ark_core::Error as E;
    matches!(
        e,
        E::ClusterMismatch { .. } | E::BadMetadata { .. } | E::RepositoryTooNew { .. } | E::Info(_)
    )
}

/// The archiver was asked to stop (SIGTERM): an attempt waiting on the
/// repository gives up at once. (A dead postmaster is noticed by the
/// archiver's own loop between files; `ark.archive_timeout` bounds the wait
/// until then.)
fn stop_requested() -> bool {
    // SAFETY: a plain read of a flag the archiver's signal handler sets, on
    // the archiver's own thread.
    unsafe { (&raw const pg_sys::ShutdownRequestPending).read_volatile() != 0 }
}

unsafe fn cstr<'a>(p: *const c_char) -> Option<&'a CStr> {
    if p.is_null() {
        None
    } else {
        Some(CStr::from_ptr(p))
    }
}

/// The archiver is stopping: stop the push-ahead workers. Files they pushed
/// but that were not yet reported are offered again after restart.
fn shutdown() {
    let mut guard = OPENED.lock().unwrap_or_else(|p| p.into_inner());
    *guard = None;
}

/// Run a callback body, turning a panic into `false` instead of letting it
/// unwind into the archiver.
fn guarded(what: &str, body: impl FnOnce() -> bool + std::panic::UnwindSafe) -> bool {
    match std::panic::catch_unwind(body) {
        Ok(ok) => ok,
        Err(_) => {
            pgrx::log!(
                "pg_ark archive module: {} failed unexpectedly; PostgreSQL will retry",
                what
            );
            false
        }
    }
}

#[cfg(feature = "pg15")]
#[path = "api15.rs"]
mod api;
#[cfg(not(feature = "pg15"))]
#[path = "api16.rs"]
mod api;
