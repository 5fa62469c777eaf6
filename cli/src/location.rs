//! `pg_ark location`: check a repository URL and say what it names.
use crate::repo_opts::RepoOpts;
use crate::Failure;
use pg_ark_core::RepoUrl;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    repo: RepoOpts,
}

pub fn run(args: &Args) -> Result<(), Failure> {
    match RepoUrl::parse(&args.repo.repository)? {
        RepoUrl::File { path } => println!("local repository at {}", path.display()),
        RepoUrl::S3 { bucket, prefix } => {
            println!("S3 repository in bucket {bucket}, prefix \"{prefix}\"")
        }
    }
    Ok(())
}
