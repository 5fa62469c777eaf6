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
    let s3 = args.repo.s3()?;
    // Key objects are what opens the repository: on a bucket under Object
    // Lock they are locked like everything the server stores.
    if let (pg_ark_core::RepoUrl::S3 { bucket, prefix }, None) = (&url, s3.object_lock) {
        let locked = pg_ark_core::storage::s3::S3Storage::open(bucket, prefix, &s3)
            .map_err(pg_ark_core::Error::from)?
            .bucket_lock()
            .is_ok_and(|b| b.enabled);
        if locked {
            return Err(Failure::Message(format!(
                "bucket \"{bucket}\" has Object Lock: give --s3-object-lock-mode and --s3-object-lock-days as the server's ark.s3_object_lock_mode and ark.s3_object_lock_days, so that the new key objects are locked too"
            )));
        }
    }
    let repo = pg_ark_core::repo::Repository::open_with(
        pg_ark_core::storage::open(&url, &s3)?,
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
    if done.retained > 0 {
        println!(
            "{} old key object(s) are retained by Object Lock: run pg_ark rekey --remove-old again once their lock ends",
            done.retained
        );
    }
    Ok(())
}
