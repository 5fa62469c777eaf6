//! `pg_ark rekey`: rotation of an encrypted repository's keys. Every data
//! key is unwrapped with the old identity (`--identity-file`) and wrapped
//! to the new recipients (`--recipients-file`) in a key object of the next
//! generation; no data object is read or rewritten. Interrupted, it is run
//! again and goes on where it stopped. `--remove-old` then deletes the
//! older generations, so that the old identity opens nothing any more and
//! can be destroyed.
use crate::repo_opts::RepoOpts;
use crate::Failure;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    repo: RepoOpts,
    /// Delete the older key objects once every data key is wrapped to the new recipients
    #[arg(long)]
    remove_old: bool,
    /// No progress output
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: &Args) -> Result<(), Failure> {
    let keys = args.repo.keys(None)?;
    let Some(to) = &keys.recipients else {
        return Err(Failure::Message(
            "pg_ark rekey needs --recipients-file: the new recipients to wrap every data key to"
                .into(),
        ));
    };
    if keys.identities.is_none() {
        return Err(Failure::Message(
            "pg_ark rekey needs --identity-file: an identity that opens the current key objects"
                .into(),
        ));
    }
    // Opened to read: the recipients given are the new ones, not a
    // writer's.
    let mut reading = keys.clone();
    reading.recipients = None;
    if args.repo.config().view != pg_ark_core::storage::ReadView::Current {
        return Err(Failure::Message(
            "pg_ark rekey writes key objects: --first-versions and --as-of only read".into(),
        ));
    }
    let url = pg_ark_core::RepoUrl::parse(&args.repo.repository)?;
    let repo = pg_ark_core::repo::Repository::open_with(
        pg_ark_core::storage::open(&url, &args.repo.s3()?)?,
        false,
        &reading,
    )?;
    let Some(enc) = repo.encryption() else {
        return Err(Failure::Message(format!(
            "repository {} is not encrypted: there are no keys to rotate",
            repo.location()
        )));
    };
    let quiet = args.quiet;
    let done = enc
        .rekey(to, args.remove_old, &mut |n, total, id| {
            if !quiet {
                eprintln!("pg_ark: data key {id}: wrapped to the new recipients ({n} of {total})");
            }
        })
        .map_err(pg_ark_core::Error::from)?;
    println!(
        "{} data key(s): {} wrapped to {:?} now, {} already were; {} old key object(s) removed",
        done.keys,
        done.written,
        to.fingerprints(),
        done.already,
        done.removed
    );
    Ok(())
}
