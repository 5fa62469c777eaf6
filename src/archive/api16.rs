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
