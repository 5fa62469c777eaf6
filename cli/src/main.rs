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
use pg_ark_core::{pgdata, storage, RepoUrl};
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
/// takes them, as flags or from the environment.
#[derive(clap::Args, Debug)]
struct RepoOpts {
    /// Repository URL: file:///path or s3://bucket/prefix
    #[arg(long = "repo", env = "PG_ARK_REPOSITORY", value_name = "URL")]
    repository: String,
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
            file,
            dest,
        } => wal_get(&repo, &dir, &file, &dest),
    }
}

fn wal_get(
    repo: &RepoOpts,
    dir: &std::path::Path,
    file: &str,
    dest: &std::path::Path,
) -> Result<(), Failure> {
    let url = RepoUrl::parse(&repo.repository)?;
    let sysid = pgdata::system_identifier(dir)?;
    let major = pgdata::major_version(dir)?;
    let repository = Arc::new(Repository::open(storage::open(&url)?, false)?);
    let cluster = repository.cluster(sysid, major, false)?;
    let Some(data) = cluster.get_wal(file)? else {
        return Err(Failure::Quiet);
    };
    let dest = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        dir.join(dest)
    };
    // Write beside the destination and rename, so recovery never sees a
    // partial file under the name it asked for.
    let tmp = dest.with_extension("pg_ark-tmp");
    let write = || -> std::io::Result<()> {
        std::fs::write(&tmp, &data)?;
        std::fs::rename(&tmp, &dest)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        pg_ark_core::Error::ReadFile {
            path: dest.display().to_string(),
            source,
        }
    })?;
    Ok(())
}
