//! `pg_ark wal-get`: the `restore_command`.
//!
//! Exit status is what decides whether recovery goes on, so it is chosen
//! with care: 0 delivered; 1, quietly, only when the file is truly absent
//! from the repository (the normal end of the archive); anything else (a
//! corrupt or foreign file, a repository still unreachable after retries, a
//! full disk, a bad option) exits 255, which makes PostgreSQL stop recovery
//! with our message in its log instead of promoting at the wrong point.
//!
//! A segment already in the prefetch spool is delivered without opening the
//! repository: no round trip, no S3 connection.
use crate::repo_opts::RepoOpts;
use crate::Failure;
use pg_ark_core::repo::Repository;
use pg_ark_core::{pgdata, storage, wal, RepoUrl};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    repo: RepoOpts,
    /// Data directory of the cluster being recovered (for its system
    /// identifier and major version)
    #[arg(long, env = "PGDATA", default_value = ".", value_name = "DIR")]
    pgdata: PathBuf,
    /// Segments to fetch at once when going to the repository, at first
    /// (1: no prefetch). The depth doubles, up to --prefetch-max, while
    /// recovery uses up whole batches
    #[arg(long, env = "PG_ARK_PREFETCH", default_value_t = 4, value_name = "N")]
    prefetch: usize,
    /// The most segments fetched at once (set it to --prefetch for a fixed depth)
    #[arg(
        long,
        env = "PG_ARK_PREFETCH_MAX",
        default_value_t = 32,
        value_name = "N"
    )]
    prefetch_max: usize,
    /// Tries of a fetch that fails for a reason that may pass (the
    /// repository unreachable, throttling, a server error), with growing
    /// delays (1 s, 2 s, 4 s, ...), before recovery is stopped
    #[arg(long, env = "PG_ARK_RETRIES", default_value_t = 4, value_name = "N")]
    retries: u32,
    /// WAL file name (%f)
    file: String,
    /// Where to write it (%p), relative to the data directory
    dest: PathBuf,
}

pub fn run(args: &Args) -> Result<(), Failure> {
    fetch(args).map_err(|f| match f {
        // Recovery must never read an error as "no such file".
        Failure::Error(e) => Failure::Fatal(e),
        other => other,
    })
}

fn fetch(args: &Args) -> Result<(), Failure> {
    let dest = if args.dest.is_absolute() {
        args.dest.clone()
    } else {
        args.pgdata.join(&args.dest)
    };
    let spool = wal::get::default_spool(&args.pgdata);
    if wal::get::take_spooled(&args.file, &dest, &spool)? {
        return Ok(());
    }
    let url = RepoUrl::parse(&args.repo.repository)?;
    let s3 = args.repo.s3()?;
    let keys = args.repo.keys(Some(&args.pgdata))?;
    let sysid = pgdata::system_identifier(&args.pgdata)?;
    let major = pgdata::major_version(&args.pgdata)?;
    let tries = args.retries.max(1);
    let mut attempt = 1;
    loop {
        match fetch_once(&url, &s3, &keys, sysid, major, args, &dest, &spool) {
            Err(e) if e.is_transient() && attempt < tries => {
                let delay = Duration::from_secs(1u64 << (attempt - 1).min(5));
                eprintln!(
                    "pg_ark: warning: attempt {attempt} of {tries} to fetch \"{}\" failed: {e}; trying again in {} s",
                    args.file,
                    delay.as_secs()
                );
                std::thread::sleep(delay);
                attempt += 1;
            }
            Err(e) => return Err(Failure::Error(e)),
            Ok(wal::get::Fetched::Missing) => return Err(Failure::Quiet),
            Ok(_) => return Ok(()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
/// One try: open the repository, then fetch with the prefetch depth for
/// segments of the size its entry records.
fn fetch_once(
    url: &RepoUrl,
    s3: &storage::s3::S3Options,
    keys: &pg_ark_core::crypto::layer::Keys,
    sysid: u64,
    major: u32,
    args: &Args,
    dest: &Path,
    spool: &Path,
) -> Result<wal::get::Fetched, pg_ark_core::Error> {
    let (storage, view) = storage::open_view(url, s3, args.repo.config().view)?;
    crate::repo_opts::remember(view);
    let repository = Arc::new(Repository::open_with(storage, false, keys)?);
    let cluster = repository.cluster(sysid, major, false)?;
    let depth = if args.prefetch <= 1 {
        1
    } else {
        wal::get::adaptive_depth(
            spool,
            &args.file,
            cluster.segment_size(),
            args.prefetch,
            args.prefetch_max,
        )
    };
    wal::get::fetch(&cluster, &args.file, dest, spool, depth)
}
