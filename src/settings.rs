//! Every `ark.*` setting, in one place.
//!
//! Each setting's reload level is chosen on purpose:
//! - `ark.database` is `postmaster`: the scheduler connects to it once, at
//!   start, and a bgworker cannot switch databases;
//! - `ark.scheduler_naptime` is `sighup`: the scheduler re-reads it on reload;
//! - `ark.repository`, `ark.compression` and `ark.compression_level` are
//!   `sighup`: the archiver picks them up on reload (PostgreSQL reloads the
//!   archiver on SIGHUP), so a repository can be fixed without a restart.
//!
//! The prefix `ark` is reserved (`MarkGUCPrefixReserved`), so a misspelt
//! `ark.*` setting is an error instead of a silently ignored placeholder.
use pg_ark_core::repo::compress::Compression;
use pg_ark_core::storage::lock::LockMode;
use pg_ark_core::RepoUrl;
use pgrx::{pg_guard, pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::{c_char, c_void, CStr, CString};
use std::time::Duration;

/// `ark.compression`: how stored files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
pub enum CompressionSetting {
    #[name = c"zstd"]
    Zstd,
    #[name = c"lz4"]
    Lz4,
    #[name = c"gzip"]
    Gzip,
    #[name = c"none"]
    None,
}

/// `ark.s3_object_lock_mode`: the S3 Object Lock every stored object gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
pub enum ObjectLockSetting {
    #[name = c"off"]
    Off,
    #[name = c"governance"]
    Governance,
    #[name = c"compliance"]
    Compliance,
}

impl From<CompressionSetting> for Compression {
    fn from(c: CompressionSetting) -> Compression {
        match c {
            CompressionSetting::Zstd => Compression::Zstd,
            CompressionSetting::Lz4 => Compression::Lz4,
            CompressionSetting::Gzip => Compression::Gzip,
            CompressionSetting::None => Compression::None,
        }
    }
}

pub static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
pub static SCHEDULER_NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static REPOSITORY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static COMPRESSION: GucSetting<CompressionSetting> =
    GucSetting::<CompressionSetting>::new(CompressionSetting::Zstd);
pub static COMPRESSION_LEVEL: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static ARCHIVE_PUSH_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(4);
pub static ARCHIVE_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static S3_ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static S3_REGION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"us-east-1"));
pub static S3_FORCE_PATH_STYLE: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static S3_ACCESS_KEY_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static S3_SECRET_ACCESS_KEY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static S3_CREDENTIALS_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static ENCRYPTION_RECIPIENTS_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static ENCRYPTION_IDENTITY_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static HTTP_LISTEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static HTTP_TOKEN_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static WORK_DIRECTORY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub static MAX_PARALLEL_JOBS: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static JOB_MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(3);
pub static JOB_RETRY_BASE: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static JOB_RETRY_CAP: GucSetting<i32> = GucSetting::<i32>::new(3600);
pub static JOB_HISTORY_DAYS: GucSetting<i32> = GucSetting::<i32>::new(30);
pub static CRON_TIMEZONE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"UTC"));
pub static LOGICAL_RETAIN_COUNT: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static LOGICAL_RETAIN_DAYS: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static RETENTION_FULL: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static RETENTION_DIFF: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static S3_OBJECT_LOCK_MODE: GucSetting<ObjectLockSetting> =
    GucSetting::<ObjectLockSetting>::new(ObjectLockSetting::Off);
pub static S3_OBJECT_LOCK_DAYS: GucSetting<i32> = GucSetting::<i32>::new(14);
pub static NOTIFY_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static NOTIFY_ON_SUCCESS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static NOTIFY_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(5);
pub static NOTIFY_MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(5);
pub static HEALTH_BACKUP_MAX_AGE: GucSetting<i32> = GucSetting::<i32>::new(26 * 3600);
pub static HEALTH_ARCHIVE_BACKLOG: GucSetting<i32> = GucSetting::<i32>::new(16);
pub static PGBACKREST_PATH: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"pgbackrest"));
pub static PGBACKREST_CONFIG: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static BARMAN_PATH: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"barman"));
pub static BARMAN_CONFIG: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static PG_BASEBACKUP_DIRECTORY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static ARCHIVE_ALSO: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Report a refused value from a check hook: PostgreSQL adds the detail and
/// hint to its "invalid value for parameter" error.
fn refuse(detail: &str, hint: Option<&str>) -> bool {
    let detail = CString::new(detail).unwrap_or_default();
    let hint = CString::new(hint.unwrap_or_default()).unwrap_or_default();
    // SAFETY: pstrdup copies into the current memory context, which outlives
    // the hook; PostgreSQL reports these with its error.
    unsafe {
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
        pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(hint.as_ptr());
    }
    false
}

/// The candidate value of a string setting in a check hook; `None` for NULL.
///
/// # Safety
/// `newval` must be the pointer PostgreSQL passes to a string check hook.
unsafe fn candidate(newval: *mut *mut c_char) -> Option<String> {
    // SAFETY: PostgreSQL passes a valid pointer to the candidate value.
    let value = unsafe { newval.as_ref().copied() }.filter(|p| !p.is_null())?;
    // SAFETY: a NUL-terminated string owned by the GUC machinery.
    Some(
        unsafe { CStr::from_ptr(value) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Check hook of `ark.cron_timezone`: an IANA zone name.
#[pg_guard]
unsafe extern "C-unwind" fn check_cron_timezone(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: called by PostgreSQL as a string check hook.
    let Some(text) = (unsafe { candidate(newval) }) else {
        return true;
    };
    match pg_ark_core::schedule::cron::parse_timezone(&text) {
        Ok(_) => true,
        Err(e) => refuse(&e.to_string(), e.hint().as_deref()),
    }
}

/// Check hook of `ark.notify_url`: empty, or an http(s) URL.
#[pg_guard]
unsafe extern "C-unwind" fn check_notify_url(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: called by PostgreSQL as a string check hook.
    let Some(text) = (unsafe { candidate(newval) }) else {
        return true;
    };
    if text.trim().is_empty() {
        return true;
    }
    match pg_ark_core::notify::validate_url(&text) {
        Ok(()) => true,
        Err(e) => refuse(
            &e,
            Some("Set ark.notify_url to an http:// or https:// URL, or to '' to send no notifications."),
        ),
    }
}

/// Check hook of `ark.repository`: a value that is not a repository URL is
/// refused where it is set (SET, ALTER SYSTEM, a reload), with the reason and
/// a hint, instead of failing later in the archiver.
#[pg_guard]
unsafe extern "C-unwind" fn check_repository(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: called by PostgreSQL as a string check hook.
    let Some(text) = (unsafe { candidate(newval) }) else {
        return true;
    };
    if text.is_empty() {
        return true; // unset: archiving reports "not configured"
    }
    match RepoUrl::parse(&text) {
        Ok(_) => true,
        Err(e) => refuse(&e.to_string(), e.hint().as_deref()),
    }
}

/// `ark.archive_also` is checked where it is set, like `ark.repository`:
/// `pgbackrest:STANZA` or `directory:/absolute/path`.
#[pg_guard]
unsafe extern "C-unwind" fn check_archive_also(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: called by PostgreSQL as a string check hook.
    let Some(text) = (unsafe { candidate(newval) }) else {
        return true;
    };
    if text.trim().is_empty() {
        return true;
    }
    match pg_ark_core::tools::archive_also::SecondDestination::parse(&text) {
        Ok(_) => true,
        Err(e) => refuse(
            &e,
            Some(
                "Name pgBackRest's stanza as pgbackrest:STANZA, or a directory as \
                 directory:/absolute/path (such as Barman's incoming directory); empty: none.",
            ),
        ),
    }
}

/// Register the settings. Called from `_PG_init`, once per process.
///
/// `preloading` is false when the archiver loads pg_ark as its
/// `archive_library` without `shared_preload_libraries`: a `postmaster`
/// setting cannot be defined after startup (PostgreSQL makes that FATAL, and
/// the archiver would die in a loop), so only the reloadable ones are
/// defined then; `ark.database` matters only to the scheduler, which does
/// not run in that case.
pub fn init(preloading: bool) {
    if preloading {
        GucRegistry::define_string_guc(
            c"ark.database",
            c"Database in which the pg_ark extension is installed and the scheduler connects.",
            c"The scheduler reads its schedules and job queue from this database. Changing it needs a restart.",
            &DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_string_guc(
            c"ark.http_listen",
            c"Address (host:port) where pg_ark's HTTP worker serves /health, /metrics and its dashboard; empty: off.",
            c"For example 127.0.0.1:8080. An address other than loopback needs ark.http_token_file. Changing it needs a restart.",
            &HTTP_LISTEN,
            GucContext::Postmaster,
            GucFlags::SUPERUSER_ONLY,
        );
    }
    GucRegistry::define_int_guc(
        c"ark.scheduler_naptime",
        c"How long the pg_ark scheduler sleeps between passes.",
        c"The scheduler also wakes at once on a reload or a shutdown request.",
        &SCHEDULER_NAPTIME,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    // SAFETY: the hook is #[pg_guard]ed and only reads its arguments.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"ark.repository",
            c"Repository that pg_ark stores WAL and backups in: file:///path or s3://bucket/prefix.",
            c"Empty means no repository: the archive module then reports that archiving is not configured.",
            &REPOSITORY,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY,
            Some(check_repository),
            None,
            None,
        );
    }
    GucRegistry::define_enum_guc(
        c"ark.compression",
        c"Compression of files stored in the repository: zstd, lz4, gzip or none.",
        c"Each stored file records its algorithm, so changing this never makes older files unreadable.",
        &COMPRESSION,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.compression_level",
        c"Compression level; 0 means the algorithm's default (zstd 1, gzip 6).",
        c"zstd accepts 1 to 19 and gzip 1 to 9; lz4 and none ignore the level.",
        &COMPRESSION_LEVEL,
        0,
        19,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.archive_push_workers",
        c"Threads that compress and store the next ready WAL files ahead of the archiver.",
        c"They push up to twice as many files ahead as there are workers.",
        &ARCHIVE_PUSH_WORKERS,
        1,
        16,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.archive_timeout",
        c"Longest one attempt to archive a WAL file may take.",
        c"After it the attempt fails (PostgreSQL retries the file), so a hung repository cannot hold the archiver, or a shutdown, for long.",
        &ARCHIVE_TIMEOUT,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"ark.s3_endpoint",
        c"S3 endpoint URL, for S3-compatible servers (empty: AWS's endpoint for the region).",
        c"For example http://127.0.0.1:9000. Usually combined with ark.s3_force_path_style = on.",
        &S3_ENDPOINT,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ark.s3_region",
        c"S3 region.",
        c"",
        &S3_REGION,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"ark.s3_force_path_style",
        c"Address buckets as endpoint/bucket instead of bucket.endpoint.",
        c"Most S3-compatible servers need this.",
        &S3_FORCE_PATH_STYLE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ark.s3_access_key_id",
        c"S3 access key ID; empty uses the standard AWS credential chain.",
        c"The chain: environment, profile, web identity (IRSA), container and instance roles.",
        &S3_ACCESS_KEY_ID,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"ark.s3_secret_access_key",
        c"S3 secret access key; only superusers can see it.",
        c"",
        &S3_SECRET_ACCESS_KEY,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_string_guc(
        c"ark.work_directory",
        c"Local directory, outside the data directory, where directory-format dumps are staged before upload.",
        c"Empty: /var/tmp/pg_ark-<system identifier>. It must be writable by the server's OS user.",
        &WORK_DIRECTORY,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_enum_guc(
        c"ark.s3_object_lock_mode",
        c"S3 Object Lock mode of every object stored: off, governance or compliance.",
        c"The bucket must have been created with Object Lock. Compliance: no one can delete a stored version before its lock ends; governance: only users allowed to bypass it.",
        &S3_OBJECT_LOCK_MODE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"ark.s3_object_lock_days",
        c"Days each stored object stays locked, with ark.s3_object_lock_mode; never less than ark.retention_days.",
        c"Retention removes an expired backup only once its lock has ended, in a later run.",
        &S3_OBJECT_LOCK_DAYS,
        1,
        36500,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"ark.s3_credentials_file",
        c"File with the S3 access key ID and secret key (AWS credentials format), read by the server's OS user.",
        c"The recommended place for keys: outside the data directory, so no physical backup copies them.",
        &S3_CREDENTIALS_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"ark.encryption_recipients_file",
        c"File of the age recipients (public keys, age1...) that a new encrypted repository's data keys are wrapped to.",
        c"Set before the repository is created: a repository is encrypted whole, from its start. Outside the data directory, writable by its owner only.",
        &ENCRYPTION_RECIPIENTS_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"ark.encryption_identity_file",
        c"File of an age identity (private key) that opens an encrypted repository's backups, for drills and deep verification on the server.",
        c"Optional: without it the server writes backups and WAL but cannot read them back. Outside the data directory, mode 0600.",
        &ENCRYPTION_IDENTITY_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"ark.http_token_file",
        c"File with the bearer token every request to pg_ark's HTTP endpoint must carry.",
        c"Outside the data directory, readable by the server's OS user only (mode 0600). Required when ark.http_listen is not a loopback address; read again on reload.",
        &HTTP_TOKEN_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    init_queue_settings();
    init_tool_settings();
    // SAFETY: called from _PG_init on the backend's thread; the string is static.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"ark".as_ptr()) };
}

/// `ark.database`, as text.
pub fn database() -> String {
    DATABASE
        .get()
        .and_then(|s| s.into_string().ok())
        .unwrap_or_else(|| "postgres".to_string())
}

/// `ark.scheduler_naptime`, as a duration.
pub fn scheduler_naptime() -> Duration {
    Duration::from_secs(u64::try_from(SCHEDULER_NAPTIME.get()).unwrap_or(10).max(1))
}

/// `ark.repository`, or `None` when unset or empty.
pub fn repository() -> Option<String> {
    REPOSITORY
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.trim().is_empty())
}

/// The location of the repository in use, as `ark.backups.repository`
/// records it ("" when none is set or it does not parse): the rows of
/// another repository the setting named before are not this one's.
pub fn repository_location() -> String {
    repository()
        .and_then(|u| RepoUrl::parse(&u).ok())
        .map(|u| u.location())
        .unwrap_or_default()
}

/// `ark.compression` and `ark.compression_level`, checked together: gzip's
/// levels stop at 9.
pub fn compression() -> Result<(Compression, i32), pg_ark_core::Error> {
    let c: Compression = COMPRESSION.get().into();
    let level = COMPRESSION_LEVEL.get();
    if level != 0 && !c.level_range().contains(&level) {
        let range = c.level_range();
        let reason = if range.start() == range.end() {
            format!("{c} has no compression levels; use 0")
        } else {
            format!(
                "{c} accepts levels {} to {} (or 0 for its default)",
                range.start(),
                range.end()
            )
        };
        return Err(pg_ark_core::Error::InvalidSetting {
            name: "ark.compression_level",
            value: level.to_string(),
            reason,
        });
    }
    Ok((c, level))
}

fn text(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.trim().is_empty())
}

/// The `ark.s3_*` settings, as the repository configuration the extension
/// and the CLI share.
pub fn s3_config() -> pg_ark_core::repo::config::S3Config {
    pg_ark_core::repo::config::S3Config {
        endpoint: text(&S3_ENDPOINT),
        region: text(&S3_REGION),
        path_style: S3_FORCE_PATH_STYLE.get(),
        access_key_id: text(&S3_ACCESS_KEY_ID),
        secret_access_key: text(&S3_SECRET_ACCESS_KEY),
        credentials_file: text(&S3_CREDENTIALS_FILE).map(std::path::PathBuf::from),
        operation_timeout: None,
        object_lock: pg_ark_core::storage::lock::ObjectLock::of_settings(
            match S3_OBJECT_LOCK_MODE.get() {
                ObjectLockSetting::Off => None,
                ObjectLockSetting::Governance => Some(LockMode::Governance),
                ObjectLockSetting::Compliance => Some(LockMode::Compliance),
            },
            u32::try_from(S3_OBJECT_LOCK_DAYS.get()).unwrap_or(1),
            u32::try_from(RETENTION_DAYS.get()).unwrap_or(0),
        ),
    }
}

/// The `ark.s3_*` settings, for opening an S3 repository. With
/// `ark.s3_credentials_file`, the keys come from that file (read now, so a
/// rotated key is picked up at the next open), and setting keys in
/// `ark.s3_access_key_id` or `ark.s3_secret_access_key` as well is an error.
pub fn s3_options() -> Result<pg_ark_core::storage::s3::S3Options, pg_ark_core::Error> {
    s3_config().options(
        &pg_ark_core::repo::config::SETTINGS,
        data_directory().as_deref(),
    )
}

/// The server's data directory (`None` before it is known).
pub(crate) fn data_directory() -> Option<std::path::PathBuf> {
    // SAFETY: DataDir is set at startup and not changed after; read on the
    // backend's own thread.
    let dd = unsafe { pg_sys::DataDir };
    (!dd.is_null()).then(|| {
        // SAFETY: a NUL-terminated string owned by PostgreSQL.
        let c = unsafe { CStr::from_ptr(dd) };
        std::path::PathBuf::from(c.to_string_lossy().into_owned())
    })
}

/// `ark.work_directory`, resolved (see `pg_ark_core::workdir::resolve`).
pub fn work_directory() -> Result<std::path::PathBuf, pg_ark_core::Error> {
    let data_dir = data_directory().unwrap_or_default();
    // SAFETY: the control file's identifier, loaded at start.
    let sysid = unsafe { pg_sys::GetSystemIdentifier() };
    pg_ark_core::workdir::resolve(text(&WORK_DIRECTORY).as_deref(), &data_dir, sysid)
}

/// `ark.archive_timeout`.
/// The server's `wal_segment_size` (set by initdb, read from pg_control
/// when the server starts): what pg_ark names, orders and reads the
/// cluster's WAL with, and records in its repository entry.
pub fn wal_segment_size() -> Result<pg_ark_core::wal::SegmentSize, pg_ark_core::Error> {
    // SAFETY: a plain read of an int the postmaster set from the control
    // file before any backend, worker or archiver was started.
    let bytes = unsafe { pg_sys::wal_segment_size };
    pg_ark_core::wal::SegmentSize::new(u64::try_from(bytes).unwrap_or(0))
}

pub fn archive_timeout() -> Duration {
    Duration::from_secs(u64::try_from(ARCHIVE_TIMEOUT.get()).unwrap_or(60).max(1))
}

/// `ark.archive_push_workers`.
pub fn archive_push_workers() -> usize {
    usize::try_from(ARCHIVE_PUSH_WORKERS.get())
        .unwrap_or(4)
        .max(1)
}

/// The settings of the other tools' job kinds (`pgbackrest`, `barman`,
/// `pg_basebackup`) and of the archive module's second destination. Each
/// names a program, a file or a directory the server's operating system
/// user uses: `sighup` and superuser only, so only who may edit
/// postgresql.conf (or run ALTER SYSTEM) chooses them.
fn init_tool_settings() {
    let path = |name: &'static std::ffi::CStr,
                short: &'static std::ffi::CStr,
                long: &'static std::ffi::CStr,
                setting: &'static GucSetting<Option<CString>>| {
        GucRegistry::define_string_guc(
            name,
            short,
            long,
            setting,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY,
        );
    };
    path(
        c"ark.pgbackrest_path",
        c"The pgBackRest program that pgbackrest jobs and ark.archive_also run.",
        c"A path, or a name looked up in the server's PATH. Job options never name a program.",
        &PGBACKREST_PATH,
    );
    path(
        c"ark.pgbackrest_config",
        c"pgBackRest's configuration file for pgbackrest jobs and ark.archive_also; empty: pgBackRest's default.",
        c"Passed as --config.",
        &PGBACKREST_CONFIG,
    );
    path(
        c"ark.barman_path",
        c"The Barman program that barman jobs run.",
        c"A path, or a name looked up in the server's PATH. Job options never name a program.",
        &BARMAN_PATH,
    );
    path(
        c"ark.barman_config",
        c"Barman's configuration file for barman jobs; empty: Barman's default.",
        c"Passed as --config.",
        &BARMAN_CONFIG,
    );
    path(
        c"ark.pg_basebackup_directory",
        c"Directory under which pg_basebackup jobs write their backups; empty: pg_basebackup jobs are refused.",
        c"An absolute path, writable by the server's OS user. A job's target is a directory under it.",
        &PG_BASEBACKUP_DIRECTORY,
    );
    // SAFETY: the hook is #[pg_guard]ed and only reads its arguments.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"ark.archive_also",
            c"A second destination for every WAL file the archive module stores: pgbackrest:STANZA or directory:/absolute/path; empty: none.",
            c"A file counts as archived only once both destinations have it (pgbackrest archive-push, or a durable copy such as into Barman's incoming directory).",
            &ARCHIVE_ALSO,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY,
            Some(check_archive_also),
            None,
            None,
        );
    }
}

/// Programs, files and directories of the other tools.
pub fn pgbackrest_path() -> std::path::PathBuf {
    std::path::PathBuf::from(text(&PGBACKREST_PATH).unwrap_or_else(|| "pgbackrest".into()))
}
pub fn pgbackrest_config() -> Option<std::path::PathBuf> {
    text(&PGBACKREST_CONFIG).map(std::path::PathBuf::from)
}
pub fn barman_path() -> std::path::PathBuf {
    std::path::PathBuf::from(text(&BARMAN_PATH).unwrap_or_else(|| "barman".into()))
}
pub fn barman_config() -> Option<std::path::PathBuf> {
    text(&BARMAN_CONFIG).map(std::path::PathBuf::from)
}
pub fn pg_basebackup_directory() -> Option<std::path::PathBuf> {
    text(&PG_BASEBACKUP_DIRECTORY).map(std::path::PathBuf::from)
}
pub fn archive_also() -> Option<String> {
    text(&ARCHIVE_ALSO)
}

/// The settings of the job queue, schedules, retention, notifications and
/// health thresholds. All are `sighup`: the scheduler and new job workers
/// pick up a reload.
fn init_queue_settings() {
    GucRegistry::define_int_guc(
        c"ark.max_parallel_jobs",
        c"How many pg_ark jobs may run at the same time, each in its own background worker.",
        c"Job workers count against max_worker_processes.",
        &MAX_PARALLEL_JOBS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.job_max_attempts",
        c"How many times a job is attempted before it fails for good.",
        c"A job's option max_attempts overrides it.",
        &JOB_MAX_ATTEMPTS,
        1,
        100,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.job_retry_base",
        c"Delay before the first retry of a failed job; it doubles with each attempt.",
        c"Attempt n is retried after base * 2^(n-1), at most ark.job_retry_cap. A job's option retry_base overrides it.",
        &JOB_RETRY_BASE,
        1,
        86400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"ark.job_retry_cap",
        c"Longest delay between two attempts of a job.",
        c"A job's option retry_cap overrides it.",
        &JOB_RETRY_CAP,
        1,
        7 * 86400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"ark.job_history_days",
        c"Days that finished jobs are kept in ark.jobs before the scheduler prunes them.",
        c"",
        &JOB_HISTORY_DAYS,
        1,
        36500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: the hook is #[pg_guard]ed and only reads its arguments.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"ark.cron_timezone",
            c"Time zone in which schedules' cron expressions are evaluated.",
            c"An IANA time zone name such as UTC or Europe/Berlin.",
            &CRON_TIMEZONE,
            GucContext::Sighup,
            GucFlags::default(),
            Some(check_cron_timezone),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"ark.logical_retain_count",
        c"Logical backups kept per database; older ones expire. 0 keeps them all.",
        c"A job's option retain_count overrides it. The newest dump of a database never expires.",
        &LOGICAL_RETAIN_COUNT,
        0,
        100_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.retention_full",
        c"Physical backup chains (a full and the backups that rely on it) kept; older chains expire whole.",
        c"Expiry runs after each physical backup and on ark.expire(). WAL older than the oldest kept backup's start expires with them.",
        &RETENTION_FULL,
        1,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.retention_diff",
        c"Differential backups kept per chain, with the incrementals taken on them. 0 keeps them all.",
        c"Incrementals are never removed on their own, only with the chain or the differential they rely on.",
        &RETENTION_DIFF,
        0,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.retention_days",
        c"Physical backup chains whose newest backup is younger than this many days are kept too. 0: only ark.retention_full counts.",
        c"A chain kept by either rule stays.",
        &RETENTION_DAYS,
        0,
        36500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.logical_retain_days",
        c"Days logical backups are kept; older ones expire. 0 keeps them regardless of age.",
        c"A job's option retain_days overrides it. A dump kept by either rule stays.",
        &LOGICAL_RETAIN_DAYS,
        0,
        36500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: the hook is #[pg_guard]ed and only reads its arguments.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"ark.notify_url",
            c"Webhook that receives a JSON POST when a job fails for good (and on success with ark.notify_on_success).",
            c"Empty sends no notifications.",
            &NOTIFY_URL,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY,
            Some(check_notify_url),
            None,
            None,
        );
    }
    GucRegistry::define_bool_guc(
        c"ark.notify_on_success",
        c"Also notify ark.notify_url when a job succeeds.",
        c"",
        &NOTIFY_ON_SUCCESS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.notify_timeout",
        c"How long one webhook delivery may take.",
        c"",
        &NOTIFY_TIMEOUT,
        1,
        300,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"ark.notify_max_attempts",
        c"How many times a webhook delivery is tried before it is given up.",
        c"",
        &NOTIFY_MAX_ATTEMPTS,
        1,
        100,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ark.health_backup_max_age",
        c"Age after which the last successful backup of a scheduled kind makes ark.status() degraded (twice that: failing).",
        c"",
        &HEALTH_BACKUP_MAX_AGE,
        60,
        365 * 86400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"ark.health_archive_backlog",
        c"WAL files waiting to be archived from which ark.status() reports a backlog.",
        c"",
        &HEALTH_ARCHIVE_BACKLOG,
        1,
        1_000_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

/// `ark.cron_timezone`, as text (`UTC` when unset).
pub fn cron_timezone() -> String {
    text(&CRON_TIMEZONE).unwrap_or_else(|| "UTC".into())
}

/// `ark.notify_url`, or `None` when unset.
pub fn notify_url() -> Option<String> {
    text(&NOTIFY_URL)
}

/// `ark.http_listen`, when set.
pub fn http_listen() -> Option<String> {
    text(&HTTP_LISTEN)
}

/// `ark.http_token_file`, when set.
pub fn http_token_file() -> Option<String> {
    text(&HTTP_TOKEN_FILE)
}

/// `ark.encryption_recipients_file` and `ark.encryption_identity_file`.
pub fn encryption_files() -> pg_ark_core::repo::config::EncryptionFiles {
    pg_ark_core::repo::config::EncryptionFiles {
        recipients_file: text(&ENCRYPTION_RECIPIENTS_FILE).map(std::path::PathBuf::from),
        identity_file: text(&ENCRYPTION_IDENTITY_FILE).map(std::path::PathBuf::from),
    }
}

/// `ark.s3_credentials_file`, when set.
pub fn s3_credentials_file() -> Option<String> {
    text(&S3_CREDENTIALS_FILE)
}
