//! The installed `pg_ark` CLI (from the bindir of the installation under
//! test): help, version, and clear errors with hints.
use pg_ark_tests::PgInstall;
use std::process::Command;

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
