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
use crate::{settings, status};
use pg_ark_core::archive_push::PushAhead;
use pg_ark_core::repo::{ClusterRepo, PushOutcome, Repository};
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
    // A previous archiver killed in the middle of a push left its
    // temporary files; nothing else removes them.
    match cluster.remove_stale_temporaries() {
        Ok(0) => {}
        Ok(n) => pgrx::log!(
            "pg_ark removed {} temporary files that an interrupted archiver left in {}",
            n,
            cluster.location()
        ),
        Err(e) => pgrx::warning!("pg_ark could not clean up temporary files: {}", e),
    }
    Ok(PushAhead::start(
        cluster,
        compression,
        level,
        workers,
        workers * 2,
    ))
}

fn open_cluster(url: &str) -> Result<ClusterRepo, ArkError> {
    let storage = storage::open(&RepoUrl::parse(url)?, &settings::s3_options())?;
    let repo = Arc::new(Repository::open(storage, true)?);
    let (sysid, major) = identity();
    Ok(repo.cluster(sysid, major, true)?)
}

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
    match try_archive(&file, &path) {
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
            }
            true
        }
        Err(e) => {
            // A WARNING, never an ERROR: before 17 an ERROR here restarts the
            // archiver. PostgreSQL retries the file.
            let mut report = e.to_report();
            report = report.set_detail(format!(
                "pg_ark could not archive \"{file}\"; PostgreSQL will retry it"
            ));
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
    let fingerprint = format!(
        "{url} {:?} {:?} {}",
        settings::s3_options(),
        compression,
        settings::archive_push_workers()
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
    match opened
        .push
        .archive(file, Path::new(path), Path::new("pg_wal/archive_status"))
    {
        Ok(o) => Ok(o),
        Err(e) => {
            // Reopen next time: the repository may have been replaced.
            *guard = None;
            Err(e.into())
        }
    }
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
mod api {
    //! PostgreSQL 15's archive-module API (`postmaster/pgarch.h`).
    use super::*;

    #[repr(C)]
    pub struct ArchiveModuleCallbacks {
        pub check_configured_cb: Option<unsafe extern "C-unwind" fn() -> bool>,
        pub archive_file_cb:
            Option<unsafe extern "C-unwind" fn(file: *const c_char, path: *const c_char) -> bool>,
        pub shutdown_cb: Option<unsafe extern "C-unwind" fn()>,
    }

    unsafe extern "C-unwind" fn check_configured() -> bool {
        guarded("configuration check", || match not_configured_reason() {
            None => true,
            Some(reason) => {
                pgrx::log!("{}", reason);
                false
            }
        })
    }

    unsafe extern "C-unwind" fn archive_file_cb(file: *const c_char, path: *const c_char) -> bool {
        match (cstr(file), cstr(path)) {
            (Some(f), Some(p)) => guarded("archive", || archive_file(f, p)),
            _ => false,
        }
    }

    unsafe extern "C-unwind" fn shutdown_cb() {
        let _ = std::panic::catch_unwind(shutdown);
    }

    #[unsafe(no_mangle)]
    pub unsafe extern "C-unwind" fn _PG_archive_module_init(cb: *mut ArchiveModuleCallbacks) {
        if let Some(cb) = cb.as_mut() {
            cb.check_configured_cb = Some(check_configured);
            cb.archive_file_cb = Some(archive_file_cb);
            cb.shutdown_cb = Some(shutdown_cb);
        }
    }
}

#[cfg(not(feature = "pg15"))]
mod api {
    //! PostgreSQL 16+'s archive-module API (`archive/archive_module.h`).
    use super::*;

    #[repr(C)]
    pub struct ArchiveModuleState {
        pub private_data: *mut std::ffi::c_void,
    }

    #[repr(C)]
    pub struct ArchiveModuleCallbacks {
        pub startup_cb: Option<unsafe extern "C-unwind" fn(state: *mut ArchiveModuleState)>,
        pub check_configured_cb:
            Option<unsafe extern "C-unwind" fn(state: *mut ArchiveModuleState) -> bool>,
        pub archive_file_cb: Option<
            unsafe extern "C-unwind" fn(
                state: *mut ArchiveModuleState,
                file: *const c_char,
                path: *const c_char,
            ) -> bool,
        >,
        pub shutdown_cb: Option<unsafe extern "C-unwind" fn(state: *mut ArchiveModuleState)>,
    }

    unsafe extern "C" {
        /// 17+: detail shown with "archiving is not configured".
        static mut arch_module_check_errdetail_string: *mut c_char;
    }

    unsafe extern "C-unwind" fn check_configured(_state: *mut ArchiveModuleState) -> bool {
        guarded("configuration check", || match not_configured_reason() {
            None => true,
            Some(reason) => {
                // PostgreSQL prints this as the DETAIL of its warning; it
                // must be palloc'd in a context that outlives the call.
                let s = std::ffi::CString::new(reason).unwrap_or_default();
                // SAFETY: archiver thread; pstrdup copies into the current context.
                unsafe { arch_module_check_errdetail_string = pg_sys::pstrdup(s.as_ptr()) };
                false
            }
        })
    }

    unsafe extern "C-unwind" fn archive_file_cb(
        _state: *mut ArchiveModuleState,
        file: *const c_char,
        path: *const c_char,
    ) -> bool {
        match (cstr(file), cstr(path)) {
            (Some(f), Some(p)) => guarded("archive", || archive_file(f, p)),
            _ => false,
        }
    }

    unsafe extern "C-unwind" fn shutdown_cb(_state: *mut ArchiveModuleState) {
        let _ = std::panic::catch_unwind(shutdown);
    }

    static CALLBACKS: ArchiveModuleCallbacks = ArchiveModuleCallbacks {
        startup_cb: None,
        check_configured_cb: Some(check_configured),
        archive_file_cb: Some(archive_file_cb),
        shutdown_cb: Some(shutdown_cb),
    };

    #[unsafe(no_mangle)]
    pub extern "C-unwind" fn _PG_archive_module_init() -> *const ArchiveModuleCallbacks {
        &CALLBACKS
    }
}
