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
use pgrx::pg_sys;
use std::ffi::{c_char, CStr};

/// Is this process the archiver, loading us as `archive_library`?
pub fn loading_in_archiver() -> bool {
    // SAFETY: plain read of a backend global on the backend's own thread.
    unsafe { pg_sys::MyBackendType == pg_sys::BackendType::B_ARCHIVER }
}

/// Why archiving cannot proceed, or `None` when it is configured.
fn not_configured_reason() -> Option<String> {
    // Storing WAL in a repository comes with the WAL-archiving work
    // (`ark.repository`); until then the module reports, truthfully, that it
    // has nowhere to put WAL, and PostgreSQL keeps every segment in pg_wal.
    Some("pg_ark has no repository to archive to: WAL archiving to a repository is not available in this build".into())
}

/// Archive one file. Returns whether the file is durably stored.
fn archive_file(file: &CStr, _path: &CStr) -> bool {
    let file = file.to_string_lossy();
    pgrx::warning!(
        "pg_ark could not archive file \"{}\": no repository is configured",
        file
    );
    false
}

unsafe fn cstr<'a>(p: *const c_char) -> Option<&'a CStr> {
    if p.is_null() {
        None
    } else {
        Some(CStr::from_ptr(p))
    }
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

    #[unsafe(no_mangle)]
    pub unsafe extern "C-unwind" fn _PG_archive_module_init(cb: *mut ArchiveModuleCallbacks) {
        if let Some(cb) = cb.as_mut() {
            cb.check_configured_cb = Some(check_configured);
            cb.archive_file_cb = Some(archive_file_cb);
            cb.shutdown_cb = None;
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

    #[cfg(not(feature = "pg16"))]
    unsafe extern "C" {
        /// 17+: detail shown with "archiving is not configured".
        static mut arch_module_check_errdetail_string: *mut c_char;
    }

    unsafe extern "C-unwind" fn check_configured(_state: *mut ArchiveModuleState) -> bool {
        guarded("configuration check", || match not_configured_reason() {
            None => true,
            Some(reason) => {
                #[cfg(not(feature = "pg16"))]
                {
                    // PostgreSQL prints this as the DETAIL of its warning; it
                    // must be palloc'd in a context that outlives the call.
                    let s = std::ffi::CString::new(reason).unwrap_or_default();
                    // SAFETY: archiver thread; pstrdup copies into the current context.
                    unsafe { arch_module_check_errdetail_string = pg_sys::pstrdup(s.as_ptr()) };
                }
                #[cfg(feature = "pg16")]
                pgrx::log!("{}", reason);
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

    static CALLBACKS: ArchiveModuleCallbacks = ArchiveModuleCallbacks {
        startup_cb: None,
        check_configured_cb: Some(check_configured),
        archive_file_cb: Some(archive_file_cb),
        shutdown_cb: None,
    };

    #[unsafe(no_mangle)]
    pub extern "C-unwind" fn _PG_archive_module_init() -> *const ArchiveModuleCallbacks {
        &CALLBACKS
    }
}
