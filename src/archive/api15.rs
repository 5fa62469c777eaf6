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
