//! `pg_ark verify`: re-read physical backups from the repository alone and
//! check them, with the server down or the database gone.
//!
//! Each backup is checked as its restore would read it: every object of
//! every file (its own and the parents' blocks it relies on) is read,
//! decompressed and checked against its BLAKE3 digest and the manifest, and
//! the WAL from its start to its stop segment must be in the repository and
//! intact. Every problem is printed with its file; any problem exits 1.
use crate::progress::{self, Mode};
use crate::repo_opts::RepoOpts;
use crate::Failure;
use pg_ark_core::physical;
use pg_ark_core::storage::versioned::TamperKind;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    repo: RepoOpts,
    /// Only the cluster with this system identifier [default: every cluster]
    #[arg(long, value_name = "ID")]
    system_identifier: Option<u64>,
    /// Only this backup [default: every complete physical backup]
    #[arg(long, value_name = "BACKUP_ID")]
    backup: Option<String>,
    /// No progress output
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: &Args) -> Result<(), Failure> {
    let repo = args.repo.open()?;
    let clusters: Vec<_> = repo
        .clusters()?
        .into_iter()
        .filter(|c| {
            args.system_identifier
                .is_none_or(|id| id == c.system_identifier)
        })
        .collect();
    if let Some(id) = args.system_identifier {
        if clusters.is_empty() {
            return Err(Failure::Message(format!(
                "the repository {} has no cluster with system identifier {id}",
                repo.location()
            )));
        }
    }
    // What to check, first, so that progress knows the whole.
    let mut work = Vec::new();
    for cluster in &clusters {
        // The catalog index must agree with the descriptors; its
        // generations must be intact and each follow the one before.
        let mut warning = Vec::new();
        let mut damage = Vec::new();
        let sysid = cluster.system_identifier;
        if let Some(index) = physical::read_index_generations(cluster)? {
            let listed: Vec<String> = index.backups.into_iter().map(|b| b.backup_id).collect();
            let scanned: Vec<String> = physical::list_backups(cluster)?
                .into_iter()
                .map(|b| b.backup_id)
                .collect();
            if listed != scanned {
                warning.push(format!(
                    "cluster {sysid}: warning: the backup index lists {listed:?}, the descriptors {scanned:?}; the next backup or expiry writes a new generation"
                ));
            }
            for (key, why) in index.passed_over {
                damage.push(format!(
                    "cluster {sysid}: index generation {key} is damaged or unreadable: {why}"
                ));
            }
            for link in index.broken_links {
                damage.push(format!(
                    "cluster {sysid}: index generation {link}: a generation was changed or put in between"
                ));
            }
        }
        let ids: Vec<String> = match &args.backup {
            Some(id) => {
                physical::check_backup_id(id)?;
                if physical::list_backups(cluster)?
                    .iter()
                    .all(|b| &b.backup_id != id)
                {
                    Vec::new()
                } else {
                    vec![id.clone()]
                }
            }
            None => physical::list_backups(cluster)?
                .into_iter()
                .map(|b| b.backup_id)
                .collect(),
        };
        work.push((cluster, (warning, damage), ids));
    }
    let total: usize = work.iter().map(|(_, _, ids)| ids.len()).sum();
    let mode = Mode::of_stderr(args.quiet);
    let bar =
        (mode == Mode::Bar).then(|| progress::bar(total as u64, progress::VERIFY, String::new()));
    // Results go to stdout, under the bar when both are the terminal.
    let say = |text: &str| match &bar {
        Some(b) => b.suspend(|| println!("{text}")),
        None => println!("{text}"),
    };
    let result = (|| {
        let (mut checked, mut bad, mut damaged) = (0usize, 0usize, 0usize);
        for (cluster, (warnings, damage), ids) in work {
            for w in warnings {
                say(&w);
            }
            damaged += damage.len();
            for d in damage {
                say(&d);
            }
            for id in ids {
                let sysid = cluster.system_identifier;
                match &bar {
                    Some(b) => b.set_message(format!("backup {id} of cluster {sysid}")),
                    None if mode == Mode::Lines => progress::line(&format!(
                        "verifying backup {id} of cluster {sysid} ({} of {total})",
                        checked + 1
                    )),
                    None => {}
                }
                let info = physical::load_descriptor(cluster, &id)?;
                // Encrypted, and no identity: the stored bytes only.
                let (problems, only_stored) = match physical::verify_stored(cluster, &id)? {
                    Some(p) => (p, true),
                    None => (physical::verify_backup(cluster, &id)?, false),
                };
                checked += 1;
                if let Some(b) = &bar {
                    b.inc(1);
                }
                let mut what = match &info.parent {
                    Some(p) => format!("{}, on {p}", info.kind),
                    None => info.kind.to_string(),
                };
                if only_stored {
                    what.push_str("; encrypted, stored bytes only: no identity given");
                }
                if let Some((mode, until)) = physical::backup_lock(cluster, &id)? {
                    let until = until.map(pg_ark_core::logical::rfc3339_utc);
                    what.push_str(&format!(
                        "; Object Lock ({mode}) until {}",
                        until.as_deref().unwrap_or("unknown")
                    ));
                }
                if problems.is_empty() {
                    say(&format!("cluster {sysid} backup {id} ({what}): ok"));
                } else {
                    bad += 1;
                    say(&format!(
                        "cluster {sysid} backup {id} ({what}): {} problem(s)",
                        problems.len()
                    ));
                    for p in problems {
                        say(&format!("  {}: {}", p.file, p.reason));
                    }
                }
            }
        }
        Ok::<_, Failure>((checked, bad, damaged))
    })();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let (checked, bad, damaged) = result?;
    if let Some(id) = &args.backup {
        if checked == 0 {
            return Err(Failure::Message(format!(
                "backup \"{id}\" is not a complete physical backup in {}",
                repo.location()
            )));
        }
    }
    if bad > 0 {
        return Err(Failure::Message(format!(
            "{bad} of {checked} backup(s) failed verification"
        )));
    }
    // Read through --first-versions or --as-of: the whole repository's
    // versions, for what was put over pg_ark's objects, hid or planted.
    let mut tampered = 0;
    for view in crate::repo_opts::views() {
        let found = view.scan("").map_err(pg_ark_core::Error::from)?;
        // Objects stored after --as-of are ignored, not counted.
        tampered += found
            .iter()
            .filter(|t| !matches!(t.kind, TamperKind::AfterAsOf { .. }))
            .count();
    }
    if tampered > 0 {
        return Err(Failure::Message(format!(
            "{checked} backup(s) verified from the genuine versions, but the repository was tampered with: {tampered} finding(s), each named above"
        )));
    }
    if damaged > 0 {
        return Err(Failure::Message(format!(
            "{checked} backup(s) verified, but the repository's catalog has {damaged} problem(s)"
        )));
    }
    println!("{checked} backup(s) verified");
    Ok(())
}
