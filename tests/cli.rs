//! The installed `pg_ark` CLI (from the bindir of the installation under
//! test): help, version, and clear errors with hints.
use pg_ark_core::repo::Repository;
use pg_ark_core::storage::local::LocalStorage;
use pg_ark_tests::{temp_dir, Cluster, PgInstall};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn pg_ark(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(PgInstall::from_env().bin("pg_ark"))
        .args(args)
        .env_remove("PG_ARK_REPOSITORY")
        .output()
        .expect("run pg_ark from the installation's bindir (make install)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (code, out, _) = pg_ark(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("pg_ark "), "{out}");
    let (code, out, _) = pg_ark(&["location", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--repo <URL>"), "{out}");
    assert!(
        out.contains("PG_ARK_REPOSITORY"),
        "the environment variable is documented: {out}"
    );
}

#[test]
fn repository_from_flag_or_environment() {
    let (code, out, _) = pg_ark(&["location", "--repo", "s3://backups/prod/eu"]);
    assert_eq!(
        (code, out.trim()),
        (0, "S3 repository in bucket backups, prefix \"prod/eu\"")
    );
    let out = Command::new(PgInstall::from_env().bin("pg_ark"))
        .arg("location")
        .env("PG_ARK_REPOSITORY", "file:///var/lib/ark/")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "local repository at /var/lib/ark"
    );
}

#[test]
fn bad_repository_is_a_clear_error_with_hint() {
    let (code, out, err) = pg_ark(&["location", "--repo", "ftp://host/x"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(
        err,
        "pg_ark: error: invalid repository URL \"ftp://host/x\": unknown scheme \"ftp\" (expected \"file\" or \"s3\")\n\
         pg_ark: hint: Use file:///absolute/path for a local repository or s3://bucket/prefix for S3.\n"
    );
}

#[test]
fn missing_repository_is_a_usage_error() {
    let (code, _, err) = pg_ark(&["location"]);
    assert_eq!(code, 2);
    assert!(err.contains("--repo <URL>"), "{err}");
}

/// `pg_ark wal-get` as PostgreSQL runs it: in the data directory, with
/// `%f` and `%p`.
fn wal_get(pgdata: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(PgInstall::from_env().bin("pg_ark"))
        .arg("wal-get")
        .args(args)
        .current_dir(pgdata)
        .env_remove("PG_ARK_REPOSITORY")
        .env_remove("PGDATA")
        .output()
        .expect("run pg_ark wal-get");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn wal_get_serves_its_spool_without_the_repository() {
    // No pg_control, and an S3 endpoint where nothing listens: a spooled
    // segment needs neither.
    let dir = temp_dir("ark-spool-");
    let spool = dir.path().join("pg_wal/pg_ark_prefetch");
    std::fs::create_dir_all(&spool).unwrap();
    let name = "000000010000000000000005";
    let body: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(spool.join(name), &body).unwrap();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let (code, err) = wal_get(
        dir.path(),
        &[
            "--repo",
            "s3://bucket/x",
            "--s3-endpoint",
            &endpoint,
            "--s3-path-style",
            name,
            "pg_wal/RECOVERYXLOG",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("pg_wal/RECOVERYXLOG")).unwrap(),
        body
    );
    assert!(
        !spool.join(name).exists(),
        "the spooled copy was handed over"
    );
}

#[test]
fn wal_get_exits_1_only_for_a_missing_file_and_stops_recovery_otherwise() {
    let mut cluster = Cluster::start();
    assert!(cluster.stop("fast").status.success());
    let sysid = cluster.system_identifier_from_control();
    let repo_dir = temp_dir("ark-repo-");
    let repo =
        Repository::open(Box::new(LocalStorage::open(repo_dir.path()).unwrap()), true).unwrap();
    Arc::new(repo)
        .cluster(sysid, cluster.install.major, true)
        .unwrap();
    let local = format!("file://{}", repo_dir.path().display());
    // Truly absent: exit 1 with no message, the normal end of recovery.
    let (code, err) = wal_get(
        &cluster.data,
        &[
            "--repo",
            &local,
            "000000010000000000000042",
            "pg_wal/RECOVERYXLOG",
        ],
    );
    assert_eq!((code, err.as_str()), (1, ""));
    // A repository that is not there is no "end of archive".
    let nowhere = format!("file://{}/none", repo_dir.path().display());
    let (code, err) = wal_get(
        &cluster.data,
        &[
            "--repo",
            &nowhere,
            "000000010000000000000042",
            "pg_wal/RECOVERYXLOG",
        ],
    );
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("not a pg_ark repository"), "{err}");
    // Unreachable S3: tried again with growing delays, then recovery stops.
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let (code, err) = wal_get(
        &cluster.data,
        &[
            "--repo",
            "s3://bucket/x",
            "--s3-endpoint",
            &endpoint,
            "--s3-path-style",
            "--retries",
            "2",
            "000000010000000000000042",
            "pg_wal/RECOVERYXLOG",
        ],
    );
    assert_eq!(code, 255, "{err}");
    assert!(
        err.contains("attempt 1 of 2 to fetch \"000000010000000000000042\" failed"),
        "{err}"
    );
    assert!(
        err.contains("pg_ark: error: ")
            && err.contains("pg_ark: hint: The repository could not be reached"),
        "{err}"
    );
    // Bad options in a restore_command stop recovery too (not clap's 2).
    let (code, err) = wal_get(&cluster.data, &["--no-such-flag", "x", "y"]);
    assert_eq!(code, 255, "{err}");
}
