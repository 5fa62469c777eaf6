use super::*;
use crate::process::{lock, Env, Program, STDERR_TAIL};
use crate::repo::envelope::hex;
use crate::repo::envelope::sha256;
use crate::repo::Repository;
use crate::repo::{info, ClusterRepo};
use crate::storage::local::LocalStorage;
use crate::storage::ObjectInfo;
use crate::storage::StorageError;
use crate::storage::{PutMode, Storage};
use crate::Error;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SYSID: u64 = 7_312_345_678_901_234_567;
const PG_DUMP: &str = "/var/cache/pg_ark/pg/17/bin/pg_dump";

fn cluster_in(storage: Box<dyn Storage>) -> ClusterRepo {
    let repo = Arc::new(Repository::open(storage, true).unwrap());
    repo.cluster(SYSID, 17, true).unwrap()
}

fn local_cluster() -> (tempfile::TempDir, ClusterRepo) {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster_in(Box::new(
        LocalStorage::open(&dir.path().join("repo")).unwrap(),
    ));
    (dir, c)
}

fn request(database: &str, format: DumpFormat) -> DumpRequest {
    DumpRequest {
        pg_dump: PathBuf::from(PG_DUMP),
        socket_dir: "/tmp".into(),
        port: 5432,
        user: None,
        database: database.into(),
        format,
        schemas: vec![],
        jobs: None,
        compression: None,
        work_dir: None,
    }
}

fn meta(label: &str) -> DumpMeta {
    DumpMeta {
        label: label.into(),
        job_id: Some(42),
        server_version: "17.2".into(),
        pg_dump_version: Some("pg_dump (PostgreSQL) 17.2".into()),
        series: None,
    }
}

fn command(program: &str, args: &[&str]) -> Program {
    Program::new(program).args(args)
}

fn args(c: &Program) -> Vec<String> {
    c.get_args()
        .iter()
        .map(|a| a.to_string_lossy().to_string())
        .collect()
}

fn keys(s: &dyn Storage, prefix: &str) -> Vec<String> {
    s.list(prefix).unwrap().into_iter().map(|o| o.key).collect()
}

#[test]
fn formats_parse_and_name_their_data() {
    for (text, f, data) in [
        ("custom", DumpFormat::Custom, "dump.custom"),
        ("Directory", DumpFormat::Directory, "dump.dir"),
        (" plain ", DumpFormat::Plain, "dump.sql"),
    ] {
        assert_eq!(DumpFormat::parse(text).unwrap(), f);
        assert_eq!(text.parse::<DumpFormat>().unwrap(), f);
        assert_eq!(f.data_name(), data);
        assert_eq!(DumpFormat::parse(f.as_str()).unwrap(), f);
        assert_eq!(f.to_string(), f.as_str());
    }
    let e = DumpFormat::parse("tar").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid logical backup request: unknown dump format \"tar\": expected custom, directory or plain"
    );
    assert_eq!(
        serde_json::to_value(DumpFormat::Directory).unwrap(),
        serde_json::json!("directory")
    );
}

#[test]
fn conninfo_quotes_every_value() {
    let mut r = request("my 'db' \\ x=1", DumpFormat::Custom);
    r.socket_dir = "/run/post gres".into();
    r.port = 5433;
    assert_eq!(
        r.conninfo(),
        r"dbname='my \'db\' \\ x=1' host='/run/post gres' port=5433"
    );
    r.user = Some("o'neil".into());
    assert_eq!(
        r.conninfo(),
        r"dbname='my \'db\' \\ x=1' host='/run/post gres' port=5433 user='o\'neil'"
    );
    assert_eq!(conninfo_quote(""), "''");
    assert_eq!(conninfo_quote("a=b c"), "'a=b c'");
}

#[test]
fn the_command_is_an_argument_vector() {
    let mut r = request("shop", DumpFormat::Custom);
    r.user = Some("backup".into());
    r.schemas = vec!["Sales".into(), "a\"b.c*".into()];
    r.compression = Some("zstd:3".into());
    let c = r.command();
    assert_eq!(c.get_program(), PG_DUMP);
    assert_eq!(
        args(&c),
        [
            "--no-password",
            "--format=custom",
            "--dbname=dbname='shop' host='/tmp' port=5432 user='backup'",
            "--schema=\"Sales\"",
            "--schema=\"a\"\"b.c*\"",
            "--compress=zstd:3",
        ]
    );
    assert_eq!(
        c.get_env(),
        &Env::clean().libpq(),
        "the clean environment and libpq's variables, nothing set"
    );

    let mut d = request("shop", DumpFormat::Directory);
    d.jobs = Some(4);
    d.work_dir = Some(PathBuf::from("/data/pg_ark_tmp/L1"));
    assert_eq!(
        args(&d.command()),
        [
            "--no-password",
            "--format=directory",
            "--dbname=dbname='shop' host='/tmp' port=5432",
            "--jobs=4",
            "--file=/data/pg_ark_tmp/L1",
        ]
    );
    d.validate().unwrap();

    let p = request("shop", DumpFormat::Plain);
    assert_eq!(
        args(&p.command()),
        [
            "--no-password",
            "--format=plain",
            "--dbname=dbname='shop' host='/tmp' port=5432"
        ]
    );
    p.validate().unwrap();
}

#[test]
fn requests_pg_dump_cannot_run_are_refused() {
    let invalid = |r: DumpRequest, what: &str| {
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
    };
    let mut r = request("shop", DumpFormat::Custom);
    r.jobs = Some(2);
    invalid(r, "parallel jobs need the directory format, not custom");
    let mut r = request("shop", DumpFormat::Directory);
    r.work_dir = Some("/w".into());
    r.jobs = Some(0);
    invalid(r, "jobs must be at least 1");
    invalid(
        request("shop", DumpFormat::Directory),
        "the directory format needs a work directory",
    );
    invalid(
        request("", DumpFormat::Custom),
        "the database name is empty",
    );
    let mut r = request("shop", DumpFormat::Custom);
    r.schemas = vec!["".into()];
    invalid(r, "invalid schema name");
    let mut r = request("shop", DumpFormat::Custom);
    r.compression = Some(" ".into());
    invalid(r, "invalid compression");
    let mut r = request("shop", DumpFormat::Custom);
    r.user = Some(String::new());
    invalid(r, "the user name is empty");
}

#[test]
fn database_names_round_trip_through_keys() {
    for (name, encoded) in [
        ("shop", "shop"),
        ("my db", "my%20db"),
        ("a/b", "a%2Fb"),
        (".", "%2E"),
        ("..", "%2E."),
        (".ark-tmp.x", "%2Eark-tmp.x"),
        ("x.y_z-1", "x.y_z-1"),
        ("100%", "100%25"),
        ("Ünï", "%C3%9Cn%C3%AF"),
        ("it's=\"q\"\\", "it%27s%3D%22q%22%5C"),
    ] {
        assert_eq!(encode_database(name), encoded, "{name:?}");
        assert_eq!(decode_database(encoded).as_deref(), Some(name));
        crate::storage::validate_key(&format!("logical/{encoded}/L")).unwrap();
    }
    // Every byte value a name can hold survives.
    let all: String = (1u8..=127).map(char::from).collect::<String>() + "ßπ漢🐘";
    let enc = encode_database(&all);
    assert!(enc
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"%_.-".contains(&b)));
    assert_eq!(decode_database(&enc).as_deref(), Some(all.as_str()));
    for bad in ["%", "%4", "%G0", "%FF", "a%2"] {
        assert_eq!(decode_database(bad), None, "{bad:?}");
    }
}

#[test]
fn labels_are_single_safe_components() {
    for ok in ["20261122T101500Z-j42", "a", "x.y_z-1", &"a".repeat(128)] {
        check_label(ok).unwrap();
    }
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "a b",
        "é",
        &"a".repeat(129),
    ] {
        assert!(check_label(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn timestamps_are_rfc3339_utc() {
    assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59Z");
    assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339_utc(1_795_428_900), "2026-11-23T10:15:00Z");
    assert_eq!(rfc3339_utc(253_402_300_799), "9999-12-31T23:59:59Z");
    assert!(now_epoch() > 1_700_000_000);
}

#[test]
fn a_missing_pg_dump_is_named() {
    let e = pg_dump_version(Path::new("/nonexistent/pg_dump")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("could not run \"/nonexistent/pg_dump\": No such file"),
        "{e}"
    );
}

/// The real pg_dump takes the argument vector and the quoted conninfo:
/// it gets as far as connecting (no server runs for unit tests).
#[test]
fn real_pg_dump_takes_the_arguments() {
    // make setup builds PostgreSQL 17, so its pg_dump is always there
    // (ARK_PG_DUMP names it when ARK_CACHE is elsewhere); a missing one
    // fails the test.
    let pg_dump = std::env::var("ARK_PG_DUMP").unwrap_or_else(|_| PG_DUMP.to_string());
    assert!(
        Path::new(&pg_dump).exists(),
        "no pg_dump at {pg_dump}: run make setup (or set ARK_PG_DUMP)"
    );
    let v = pg_dump_version(Path::new(&pg_dump)).unwrap();
    assert!(v.starts_with("pg_dump (PostgreSQL) 17."), "{v}");

    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open(dir.path()).unwrap();
    let mut r = request("it's \\ = \"odd\"", DumpFormat::Custom);
    r.socket_dir = "/nonexistent-ark".into();
    r.port = 5999;
    r.user = Some("o'neil".into());
    r.schemas = vec!["Sales".into()];
    r.pg_dump = PathBuf::from(&pg_dump);
    let control = DumpControl::new();
    let e = stream_command_output(&s, "d/x", r.command(), &r.database, &control).unwrap_err();
    assert!(matches!(e, Error::DumpFailed { .. }), "{e}");
    assert!(
        e.to_string().starts_with(
            "pg_dump failed for database \"it's \\ = \"odd\"\": exit status 1: pg_dump: error: \
             connection to server on socket \"/nonexistent-ark/.s.PGSQL.5999\" failed"
        ),
        "{e}"
    );
    assert!(keys(&s, "").is_empty());
}

fn write_file(path: &Path, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    fs::write(path, &data).unwrap();
    data
}

#[test]
fn output_streams_into_storage_hashed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open(&dir.path().join("repo")).unwrap();
    let control = DumpControl::new();
    let n = 3_000_000;
    let out = stream_command_output(
        &s,
        "dumps/random",
        command("head", &["-c", &n.to_string(), "/dev/urandom"]),
        "db",
        &control,
    )
    .unwrap();
    let stored = s.get("dumps/random").unwrap();
    assert_eq!(stored.len(), n);
    assert_eq!(out.bytes, n as u64);
    assert_eq!(out.sha256, hex(&sha256(&stored)));
    assert_eq!(control.bytes(), n as u64);

    let file = dir.path().join("input");
    let data = write_file(&file, 1_234_567);
    let control = DumpControl::new();
    let out = stream_command_output(
        &s,
        "dumps/cat",
        command("cat", &[file.to_str().unwrap()]),
        "db",
        &control,
    )
    .unwrap();
    assert_eq!(s.get("dumps/cat").unwrap(), data);
    assert_eq!(out.sha256, hex(&sha256(&data)));
    // An empty output is a valid (empty) object.
    let out = stream_command_output(
        &s,
        "dumps/empty",
        command("true", &[]),
        "db",
        &DumpControl::new(),
    )
    .unwrap();
    assert_eq!((out.bytes, s.get("dumps/empty").unwrap()), (0, vec![]));
    // Create: an existing key is refused, and kept.
    let e = stream_command_output(
        &s,
        "dumps/cat",
        command("true", &[]),
        "db",
        &DumpControl::new(),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Storage(StorageError::AlreadyExists { .. })),
        "{e}"
    );
    assert_eq!(s.get("dumps/cat").unwrap(), data);
}

#[test]
fn a_failing_command_stores_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open(&dir.path().join("repo")).unwrap();
    let file = dir.path().join("input");
    write_file(&file, 2_000_000);
    // All of its output arrives, then it exits with status 1.
    let e = stream_command_output(
        &s,
        "dumps/x",
        command("cat", &[file.to_str().unwrap(), "/nonexistent/ark-file"]),
        "x",
        &DumpControl::new(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::DumpFailed { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "pg_dump failed for database \"x\": exit status 1: cat: /nonexistent/ark-file: No such file or directory"
    );
    assert!(e.hint().is_some());
    assert_eq!(s.head("dumps/x").unwrap(), None);
    assert!(keys(&s, "").is_empty());
    assert_eq!(
        fs::read_dir(dir.path().join("repo/dumps")).unwrap().count(),
        0,
        "no temporary file is left"
    );

    // Killed by a signal.
    let e = stream_command_output(
        &s,
        "dumps/x",
        command("sh", &["-c", "kill -9 $$"]),
        "x",
        &DumpControl::new(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "pg_dump failed for database \"x\": terminated by signal 9 (SIGKILL)"
    );

    // A program that does not exist.
    let e = stream_command_output(
        &s,
        "dumps/x",
        command("/nonexistent/pg_dump", &[]),
        "x",
        &DumpControl::new(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("could not run \"/nonexistent/pg_dump\": No such file or directory"),
        "{e}"
    );
    assert!(keys(&s, "").is_empty());
}

#[test]
fn standard_error_is_kept_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open(dir.path()).unwrap();
    // ~70 KiB of complaints, more than a pipe holds: read on its own
    // thread, so the process never blocks on it.
    let missing: Vec<String> = (0..1000)
        .map(|i| format!("/nonexistent/{i:04}-{}", "x".repeat(40)))
        .collect();
    let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
    let e = stream_command_output(
        &s,
        "d/x",
        command("cat", &missing),
        "db",
        &DumpControl::new(),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("pg_dump failed for database \"db\": exit status 1: ..."),
        "{}",
        &text[..200]
    );
    assert!(text.len() < STDERR_TAIL + 200, "{}", text.len());
    assert!(
        text.ends_with(
            "/nonexistent/0999-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: No such file or directory"
        ),
        "the end of standard error is kept"
    );
}

fn cancel_when(control: &DumpControl, cond: impl Fn(&DumpControl) -> bool + Send + 'static) {
    let c = control.clone();
    std::thread::spawn(move || {
        while !cond(&c) {
            std::thread::sleep(Duration::from_millis(10));
        }
        c.request_cancel();
    });
}

#[test]
fn cancel_stops_a_silent_process_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open(dir.path()).unwrap();
    let control = DumpControl::new();
    let started = Instant::now();
    let armed = Instant::now();
    cancel_when(&control, move |_| {
        armed.elapsed() > Duration::from_millis(300)
    });
    // Like a pg_dump waiting for a lock: no output at all.
    let e =
        stream_command_output(&s, "d/x", command("sleep", &["60"]), "db", &control).unwrap_err();
    assert!(matches!(e, Error::DumpCancelled { .. }), "{e}");
    assert_eq!(e.to_string(), "the dump of database \"db\" was cancelled");
    // Cancelled, not run out: the silent process would take 60 s.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    assert!(keys(&s, "").is_empty());
}

#[test]
fn cancel_while_streaming_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open(dir.path()).unwrap();
    let control = DumpControl::new();
    cancel_when(&control, |c| c.bytes() >= 4 << 20);
    let e = stream_command_output(&s, "d/x", command("cat", &["/dev/zero"]), "db", &control)
        .unwrap_err();
    assert!(matches!(e, Error::DumpCancelled { .. }), "{e}");
    assert!(keys(&s, "").is_empty());
    assert_eq!(fs::read_dir(dir.path().join("d")).unwrap().count(), 0);
}

#[test]
fn a_custom_backup_is_stored_with_its_metadata_last() {
    let (dir, c) = local_cluster();
    let file = dir.path().join("dump");
    let data = write_file(&file, 500_000);
    let control = DumpControl::new();
    let req = request("my 'shop'", DumpFormat::Custom);
    let before = now_epoch();
    let info = backup_with_command(
        &c,
        &req,
        command("cat", &[file.to_str().unwrap()]),
        &meta("20261122T101500Z-j42"),
        &control,
    )
    .unwrap();
    let prefix = format!("clusters/{SYSID}/logical/my%20%27shop%27/20261122T101500Z-j42");
    assert_eq!(
        backup_prefix(&c, "my 'shop'", "20261122T101500Z-j42"),
        prefix
    );
    assert_eq!(
        keys(c.storage(), &format!("{prefix}/")),
        [
            format!("{prefix}/backup.info"),
            format!("{prefix}/backup.info.copy"),
            format!("{prefix}/dump.custom"),
        ]
    );
    assert_eq!(info.data_key, format!("{prefix}/dump.custom"));
    assert_eq!(c.storage().get(&info.data_key).unwrap(), data);
    assert_eq!(info.bytes, data.len() as u64);
    assert_eq!(info.sha256.as_deref(), Some(hex(&sha256(&data)).as_str()));
    assert_eq!(
        info.files,
        [LogicalFile {
            key: info.data_key.clone(),
            bytes: data.len() as u64,
            sha256: hex(&sha256(&data)),
        }]
    );
    assert_eq!(
        (info.kind.as_str(), info.format, info.format_version),
        ("logical", DumpFormat::Custom, 1)
    );
    assert_eq!((info.system_identifier, info.job_id), (SYSID, Some(42)));
    assert_eq!(info.pg_dump_version, "pg_dump (PostgreSQL) 17.2");
    assert!(info.started_epoch >= before && info.finished_epoch >= info.started_epoch);
    assert_eq!(info.started_at, rfc3339_utc(info.started_epoch));
    assert_eq!(control.bytes(), data.len() as u64);

    // backup.info round-trips, with the system identifier as a string.
    let stored = info::load(c.storage(), &format!("{prefix}/backup.info"))
        .unwrap()
        .unwrap();
    assert_eq!(
        stored["system_identifier"],
        serde_json::json!(SYSID.to_string())
    );
    assert_eq!(stored["format"], serde_json::json!("custom"));
    assert_eq!(
        serde_json::from_value::<LogicalBackupInfo>(stored).unwrap(),
        info
    );
    assert_eq!(
        list_logical_backups(&c, None).unwrap(),
        std::slice::from_ref(&info)
    );
    assert_eq!(list_logical_backups(&c, Some("my 'shop'")).unwrap(), [info]);
    assert!(list_logical_backups(&c, Some("my")).unwrap().is_empty());

    // The same label again is refused before anything runs.
    let e = backup_with_command(
        &c,
        &req,
        command("cat", &["/nonexistent"]),
        &meta("20261122T101500Z-j42"),
        &control,
    )
    .unwrap_err();
    assert!(matches!(e, Error::LogicalBackupExists { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "logical backup \"20261122T101500Z-j42\" of database \"my 'shop'\" already exists in file://{}",
            dir.path().join("repo").display()
        )
    );
    assert_eq!(list_logical_backups(&c, None).unwrap().len(), 1);

    // Plain format: dump.sql.
    let p = backup_with_command(
        &c,
        &request("my 'shop'", DumpFormat::Plain),
        command("echo", &["SELECT 1;"]),
        &meta("p1"),
        &control,
    )
    .unwrap();
    assert!(p.data_key.ends_with("/my%20%27shop%27/p1/dump.sql"));
    assert_eq!(c.storage().get(&p.data_key).unwrap(), b"SELECT 1;\n");
}

#[test]
fn a_failed_or_cancelled_backup_leaves_nothing() {
    let (_dir, c) = local_cluster();
    let req = request("shop", DumpFormat::Custom);
    let e = backup_with_command(
        &c,
        &req,
        command("cat", &["/nonexistent/x"]),
        &meta("L1"),
        &DumpControl::new(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::DumpFailed { .. }), "{e}");
    let control = DumpControl::new();
    control.request_cancel();
    let e = backup_with_command(&c, &req, command("echo", &["data"]), &meta("L2"), &control)
        .unwrap_err();
    assert!(matches!(e, Error::DumpCancelled { .. }), "{e}");
    assert_eq!(
        scan_logical_backups(&c, None).unwrap(),
        LogicalCatalog::default()
    );
    assert!(keys(c.storage(), &format!("clusters/{SYSID}/logical")).is_empty());
    // A bad label is refused.
    let e = backup_with_command(
        &c,
        &req,
        command("true", &[]),
        &meta("../x"),
        &DumpControl::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("invalid label \"../x\""), "{e}");
}

fn dump_source(root: &Path) -> PathBuf {
    let src = root.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    write_file(&src.join("toc.dat"), 10_000);
    write_file(&src.join("3001.dat.gz"), 300_000);
    write_file(&src.join("3002.dat.gz"), 0);
    write_file(&src.join("sub/blob_1.dat"), 77);
    src
}

#[test]
fn a_directory_backup_uploads_each_file_and_removes_the_work_dir() {
    let (dir, c) = local_cluster();
    let src = dump_source(dir.path());
    let work = dir.path().join("pgdata/pg_ark_tmp/L1");
    let mut req = request("shop", DumpFormat::Directory);
    req.work_dir = Some(work.clone());
    req.jobs = Some(2);
    let control = DumpControl::new();
    let info = backup_with_command(
        &c,
        &req,
        command("cp", &["-R", src.to_str().unwrap(), work.to_str().unwrap()]),
        &meta("L1"),
        &control,
    )
    .unwrap();
    assert!(!work.exists(), "the work directory is removed");
    let prefix = format!("clusters/{SYSID}/logical/shop/L1");
    assert_eq!(info.data_key, format!("{prefix}/dump.dir"));
    let names: Vec<&str> = info
        .files
        .iter()
        .map(|f| f.key.strip_prefix(&format!("{prefix}/dump.dir/")).unwrap())
        .collect();
    assert_eq!(
        names,
        ["3001.dat.gz", "3002.dat.gz", "sub/blob_1.dat", "toc.dat"]
    );
    for f in &info.files {
        let name = f.key.rsplit_once("dump.dir/").unwrap().1;
        let original = fs::read(src.join(name)).unwrap();
        assert_eq!(c.storage().get(&f.key).unwrap(), original);
        assert_eq!(f.sha256, hex(&sha256(&original)));
        assert_eq!(f.bytes, original.len() as u64);
    }
    assert_eq!(info.bytes, 310_077);
    assert_eq!(control.bytes(), 310_077);
    assert_eq!(info.sha256, None);
    assert_eq!(list_logical_backups(&c, Some("shop")).unwrap(), [info]);
}

#[test]
fn a_failed_directory_dump_cleans_up() {
    let (dir, c) = local_cluster();
    let work = dir.path().join("tmp/L1");
    let mut req = request("shop", DumpFormat::Directory);
    req.work_dir = Some(work.clone());
    // It creates the work directory, then fails.
    let src = dump_source(dir.path());
    let e = backup_with_command(
        &c,
        &req,
        command(
            "cp",
            &[
                "-R",
                src.to_str().unwrap(),
                work.to_str().unwrap(),
                "/nonexistent/x/y",
            ],
        ),
        &meta("L1"),
        &DumpControl::new(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::DumpFailed { .. }), "{e}");
    assert!(!work.exists());
    assert_eq!(
        scan_logical_backups(&c, None).unwrap(),
        LogicalCatalog::default()
    );

    // An existing work directory is refused and left alone.
    fs::create_dir_all(&work).unwrap();
    fs::write(work.join("precious"), b"x").unwrap();
    let e = backup_with_command(
        &c,
        &req,
        command("true", &[]),
        &meta("L2"),
        &DumpControl::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert!(work.join("precious").exists());
}

/// A local storage that records the order of deletions.
struct Recording {
    inner: LocalStorage,
    deleted: Arc<Mutex<Vec<String>>>,
}

impl Storage for Recording {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        self.inner.get(key)
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        self.inner.head(key)
    }
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StorageError> {
        self.inner.put(key, data, mode)
    }
    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn Read,
        mode: PutMode,
    ) -> Result<u64, StorageError> {
        self.inner.put_stream(key, body, mode)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        lock(&self.deleted).push(key.to_string());
        self.inner.delete(key)
    }
}

#[test]
fn deletion_removes_the_metadata_first_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let c = cluster_in(Box::new(Recording {
        inner: LocalStorage::open(dir.path()).unwrap(),
        deleted: Arc::clone(&deleted),
    }));
    let src = dump_source(dir.path());
    let work = dir.path().join("w");
    let mut req = request("shop", DumpFormat::Directory);
    req.work_dir = Some(work.clone());
    let info = backup_with_command(
        &c,
        &req,
        command("cp", &["-R", src.to_str().unwrap(), work.to_str().unwrap()]),
        &meta("L1"),
        &DumpControl::new(),
    )
    .unwrap();
    let other = backup_with_command(
        &c,
        &request("shop", DumpFormat::Plain),
        command("echo", &["x"]),
        &meta("L10"),
        &DumpControl::new(),
    )
    .unwrap();
    lock(&deleted).clear();
    delete_logical_backup(&c, &info).unwrap();
    let prefix = format!("clusters/{SYSID}/logical/shop/L1");
    let order = lock(&deleted).clone();
    assert_eq!(
        order[..2],
        [
            format!("{prefix}/backup.info"),
            format!("{prefix}/backup.info.copy")
        ]
    );
    assert_eq!(order.len(), 2 + 4, "then the four data files");
    assert!(keys(c.storage(), &format!("{prefix}/")).is_empty());
    // "L1" is not a prefix match for "L10".
    assert_eq!(
        list_logical_backups(&c, None).unwrap(),
        std::slice::from_ref(&other)
    );
    delete_logical_backup(&c, &info).expect("deleting again succeeds");

    // Another entry's backup is refused.
    let mut foreign = other.clone();
    foreign.system_identifier = 1;
    assert!(delete_logical_backup(&c, &foreign).is_err());
    let mut bad = other.clone();
    bad.label = String::new();
    assert!(delete_logical_backup(&c, &bad).is_err());
    assert_eq!(list_logical_backups(&c, None).unwrap(), [other]);
}

#[test]
fn incomplete_and_damaged_dumps_are_listed_apart() {
    let (_dir, c) = local_cluster();
    let s = c.storage();
    let a = backup_with_command(
        &c,
        &request("a", DumpFormat::Plain),
        command("echo", &["a"]),
        &meta("L1"),
        &DumpControl::new(),
    )
    .unwrap();
    let b = backup_with_command(
        &c,
        &request("b c", DumpFormat::Plain),
        command("echo", &["b"]),
        &meta("L1"),
        &DumpControl::new(),
    )
    .unwrap();
    let base = format!("clusters/{SYSID}/logical");
    // Data without backup.info: running, failed, or half deleted.
    s.put(
        &format!("{base}/a/L0/dump.custom"),
        b"partial",
        PutMode::Create,
    )
    .unwrap();
    // Both copies of backup.info damaged.
    s.put(&format!("{base}/a/L2/dump.sql"), b"x", PutMode::Create)
        .unwrap();
    s.put(
        &format!("{base}/a/L2/backup.info"),
        b"junk",
        PutMode::Create,
    )
    .unwrap();
    s.put(
        &format!("{base}/a/L2/backup.info.copy"),
        b"junk",
        PutMode::Create,
    )
    .unwrap();
    // A backup.info copied from elsewhere.
    for k in ["backup.info", "backup.info.copy"] {
        let v = s.get(&format!("{base}/a/L1/{k}")).unwrap();
        s.put(&format!("{base}/a/L3/{k}"), &v, PutMode::Create)
            .unwrap();
    }
    // Not a backup directory at all.
    s.put(&format!("{base}/%ZZ/L1/dump.sql"), b"x", PutMode::Create)
        .unwrap();
    s.put(&format!("{base}/stray"), b"x", PutMode::Create)
        .unwrap();

    let cat = scan_logical_backups(&c, None).unwrap();
    assert_eq!(cat.complete, [a.clone(), b.clone()]);
    let reasons: Vec<(&str, &str, &str)> = cat
        .incomplete
        .iter()
        .map(|i| (i.database.as_str(), i.label.as_str(), i.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert_eq!(reasons[0].0, "%ZZ");
    assert!(reasons[0].2.contains("not an encoded database name"));
    assert_eq!(
        (reasons[1].0, reasons[1].1, reasons[1].2),
        ("a", "L0", NO_INFO)
    );
    assert_eq!((reasons[2].0, reasons[2].1), ("a", "L2"));
    assert!(
        reasons[2].2.contains("damaged in both copies"),
        "{}",
        reasons[2].2
    );
    assert_eq!((reasons[3].0, reasons[3].1), ("a", "L3"));
    assert!(
        reasons[3].2.contains("describes another backup"),
        "{}",
        reasons[3].2
    );
    assert_eq!(cat.incomplete[1].objects, 1);
    assert_eq!(cat.incomplete[1].bytes, 7);

    assert_eq!(
        list_logical_backups(&c, Some("b c")).unwrap(),
        std::slice::from_ref(&b)
    );
    let only_a = scan_logical_backups(&c, Some("a")).unwrap();
    assert_eq!((only_a.complete.len(), only_a.incomplete.len()), (1, 3));
}
