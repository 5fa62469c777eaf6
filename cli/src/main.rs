//! `pg_ark`: the command-line side of pg_ark, for when the server is down or
//! the database is gone. It links only `pg_ark_core`, never pgrx, so it runs
//! anywhere the repository can be read.
//!
//! Exit codes: 0 success; 1 an error (corrupt or foreign file, unreadable
//! repository, bad URL); 2 bad usage (clap's convention). `wal-get` exits 1
//! *quietly* when the file is not in the repository: that is how recovery
//! learns it has reached the end of the archive.
use clap::{Parser, Subcommand};
use pg_ark_core::repo::Repository;
use pg_ark_core::{archive_get, pgdata, storage, RepoUrl};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "pg_ark", version, about = "pg_ark: PostgreSQL backups managed by PostgreSQL", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options that name the repository. Every command that reads a repository
/// takes them, as flags or from the environment. S3 credentials come from the
/// standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile, web
/// identity, instance role), never from the command line.
#[derive(clap::Args, Debug)]
struct RepoOpts {
    /// Repository URL: file:///path or s3://bucket/prefix
    #[arg(long = "repo", env = "PG_ARK_REPOSITORY", value_name = "URL")]
    repository: String,
    /// S3 endpoint URL, for S3-compatible servers
    #[arg(long, env = "PG_ARK_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region [default: us-east-1]
    #[arg(long, env = "PG_ARK_S3_REGION", value_name = "REGION")]
    s3_region: Option<String>,
    /// Address buckets as endpoint/bucket (most S3-compatible servers need it)
    #[arg(long, env = "PG_ARK_S3_PATH_STYLE")]
    s3_path_style: bool,
}

impl RepoOpts {
    fn s3(&self) -> storage::s3::S3Options {
        storage::s3::S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            force_path_style: self.s3_path_style,
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a repository URL and print the location it names
    Location {
        #[command(flatten)]
        repo: RepoOpts,
    },
    /// Fetch a WAL file for recovery: restore_command = 'pg_ark wal-get --repo URL %f %p'
    ///
    /// The file is verified (checksum, and for segments the system identifier
    /// in its first page) and decompressed into DEST. A file that is not in the
    /// repository exits 1 without a message: the normal end of recovery.
    WalGet {
        #[command(flatten)]
        repo: RepoOpts,
        /// Data directory of the cluster being recovered (for its system
        /// identifier and major version)
        #[arg(long, env = "PGDATA", default_value = ".", value_name = "DIR")]
        pgdata: PathBuf,
        /// Segments to fetch at once when going to the repository (1: no prefetch)
        #[arg(long, env = "PG_ARK_PREFETCH", default_value_t = 4, value_name = "N")]
        prefetch: usize,
        /// WAL file name (%f)
        file: String,
        /// Where to write it (%p), relative to the data directory
        dest: PathBuf,
    },
}

/// How a command ended, when not in plain success.
enum Failure {
    /// Exit 1 without a message.
    Quiet,
    Error(pg_ark_core::Error),
}

impl From<pg_ark_core::Error> for Failure {
    fn from(e: pg_ark_core::Error) -> Self {
        Failure::Error(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Quiet) => ExitCode::from(1),
        Err(Failure::Error(e)) => {
            eprintln!("pg_ark: error: {e}");
            if let Some(h) = e.hint() {
                eprintln!("pg_ark: hint: {h}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Location { repo } => {
            match RepoUrl::parse(&repo.repository)? {
                RepoUrl::File { path } => println!("local repository at {}", path.display()),
                RepoUrl::S3 { bucket, prefix } => {
                    println!("S3 repository in bucket {bucket}, prefix \"{prefix}\"")
                }
            }
            Ok(())
        }
        Command::WalGet {
            repo,
            pgdata: dir,
            prefetch,
            file,
            dest,
        } => wal_get(&repo, &dir, &file, &dest, prefetch),
    }
}

fn wal_get(
    repo: &RepoOpts,
    dir: &std::path::Path,
    file: &str,
    dest: &std::path::Path,
    prefetch: usize,
) -> Result<(), Failure> {
    let url = RepoUrl::parse(&repo.repository)?;
    let sysid = pgdata::system_identifier(dir)?;
    let major = pgdata::major_version(dir)?;
    let repository = Arc::new(Repository::open(storage::open(&url, &repo.s3())?, false)?);
    let cluster = repository.cluster(sysid, major, false)?;
    let dest = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        dir.join(dest)
    };
    let spool = archive_get::default_spool(dir);
    match archive_get::fetch(&cluster, file, &dest, &spool, prefetch.max(1))? {
        archive_get::Fetched::Missing => Err(Failure::Quiet),
        _ => Ok(()),
    }
}
