//! `pg_ark`: the command-line side of pg_ark, for when the server is down or
//! the database is gone. It links only `pg_ark_core`, never pgrx, so it runs
//! anywhere the repository can be read.
//!
//! Exit codes: 0 success, 1 an error about the repository or its contents,
//! 2 bad usage (clap's own convention).
use clap::{Parser, Subcommand};
use pg_ark_core::RepoUrl;
use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pg_ark: error: {e}");
            if let Some(h) = e.hint() {
                eprintln!("pg_ark: hint: {h}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), pg_ark_core::Error> {
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
    }
}
