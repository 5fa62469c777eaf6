//! The parent of an incremental or differential.
use super::*;
use crate::schedule::lifecycle::JobFailure;

/// What an `incremental` or `differential` is taken against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentChoice {
    Parent {
        parent: Box<PhysicalBackupInfo>,
        /// The chain's full.
        chain: String,
    },
    /// No usable parent: take a full, for this reason.
    Full { reason: String },
}

/// Choose the parent of a backup of `kind` among the complete `backups`
/// (oldest first) of a cluster now on `timeline`: the newest backup of the
/// newest chain for an incremental, that chain's full for a differential.
/// `unusable` names backups known to have failed verification.
pub fn choose_parent(
    backups: &[PhysicalBackupInfo],
    kind: BackupKind,
    timeline: u32,
    unusable: &std::collections::HashSet<String>,
) -> ParentChoice {
    let full = |reason: String| ParentChoice::Full { reason };
    let Some(head) = backups.iter().rev().find(|b| b.kind == BackupKind::Full) else {
        return full("no full backup in this repository".into());
    };
    let parent = if kind == BackupKind::Differential {
        head
    } else {
        backups
            .iter()
            .rev()
            .find(|b| b.backup_id == head.backup_id || b.chain == head.backup_id)
            .unwrap_or(head)
    };
    for b in [head, parent] {
        if unusable.contains(&b.backup_id) {
            return full(format!(
                "backup \"{}\", which it would rely on, failed verification",
                b.backup_id
            ));
        }
    }
    if parent.timeline != timeline {
        return full(format!(
            "the timeline changed: backup \"{}\" is on timeline {}, the cluster is on {timeline}",
            parent.backup_id, parent.timeline
        ));
    }
    ParentChoice::Parent {
        parent: Box::new(parent.clone()),
        chain: head.backup_id.clone(),
    }
}

/// What a physical backup is taken against.
#[derive(Debug)]
pub struct Decision {
    /// `None`: a full.
    pub parent: Option<(PhysicalBackupInfo, Basis)>,
    /// The chain's full (`None`: a full, which starts its own).
    pub chain: Option<String>,
    /// Why a full is taken instead of the kind asked for.
    pub fallback: Option<String>,
}

impl Decision {
    /// A full, as asked.
    pub fn full() -> Decision {
        Decision {
            parent: None,
            chain: None,
            fallback: None,
        }
    }
}

/// The backup being taken, as `pg_backup_start` left it.
#[derive(Debug, Clone, Copy)]
pub struct Started<'a> {
    /// The WAL segment its start LSN is in.
    pub start_wal: &'a str,
    pub timeline: u32,
    /// Whether the cluster has data checksums now.
    pub checksums: bool,
}

/// Choose the parent of an incremental or differential ([`choose_parent`]),
/// or fall back to a full with the reason: the checksums were turned on or
/// off since, the parent's manifest cannot be read, or WAL between the
/// parent and this backup is not in the repository. WAL still waiting to be
/// archived (a `.ready` file in `datadir`'s `pg_wal/archive_status`) is
/// waited for, up to `wait`: then the attempt fails, transient. `stop` ends
/// the wait; `waiting` is told each segment waited for. Runs on a work
/// thread (repository reads, waits), never calls PostgreSQL.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    cluster: &ClusterRepo,
    kind: BackupKind,
    started: Started<'_>,
    unusable: &std::collections::HashSet<String>,
    datadir: &Path,
    wait: std::time::Duration,
    stop: &AtomicBool,
    waiting: &dyn Fn(&str),
) -> Result<Decision, JobFailure> {
    let Started {
        start_wal,
        timeline,
        checksums,
    } = started;
    let full = |reason: String| Decision {
        parent: None,
        chain: None,
        fallback: Some(reason),
    };
    let backups = list_backups_to_change(cluster).map_err(JobFailure::from)?;
    let (parent, chain) = match choose_parent(&backups, kind, timeline, unusable) {
        ParentChoice::Full { reason } => return Ok(full(reason)),
        ParentChoice::Parent { parent, chain } => (*parent, chain),
    };
    // pg_checksums --enable rewrites every page's checksum without WAL and
    // without changing its LSN: the parent's pages would come back without
    // (or with stale) checksums under a pg_control that says they have them.
    if parent.checksums != checksums {
        return Ok(full(format!(
            "data checksums were turned {} since backup \"{}\" (pg_checksums rewrites every page without WAL)",
            if checksums { "on" } else { "off" },
            parent.backup_id
        )));
    }
    // The root only: the segments' lengths are read once the walk shows
    // which ones changed shape (`Basis::read_parent`).
    let stored = match load_stored(cluster, &parent.backup_id).and_then(|m| {
        m.ok_or_else(|| Error::BadMetadata {
            location: cluster.location(),
            key: format!(
                "{}/{MANIFEST_NAME}",
                backup_prefix(cluster, &parent.backup_id)
            ),
            reason: "it is missing".into(),
        })
    }) {
        Ok(m) => m,
        Err(e) => {
            return Ok(full(format!(
                "the manifest of backup \"{}\" could not be read: {e}",
                parent.backup_id
            )))
        }
    };
    // Its segments are read once the walk is done: they must be there.
    if let Stored::V2(root) = &stored {
        let missing = missing_packs(cluster, root).map_err(JobFailure::from)?;
        if let Some(first) = missing.first() {
            return Ok(full(format!(
                "the manifest of backup \"{}\" is incomplete (\"{first}\" is missing)",
                parent.backup_id
            )));
        }
    }
    let Some(reference_lsn) = increment::parse_lsn(&parent.start_lsn) else {
        return Ok(full(format!(
            "backup \"{}\" records no valid start LSN (\"{}\")",
            parent.backup_id, parent.start_lsn
        )));
    };
    // Every segment from the parent's start to the one before ours must be
    // in the repository; segments still waiting to be archived are waited for.
    let size = cluster.segment_size();
    let position = |name: &str| size.parse(name).map_err(JobFailure::from);
    let parent_start = position(&parent.start_wal)?;
    let previous = size.previous(start_wal).map_err(JobFailure::from)?;
    if let Some(last) = previous
        .map(|p| position(&p).map(|at| (p, at)))
        .transpose()?
        .filter(|(_, at)| at.segno >= parent_start.segno)
        .map(|(p, _)| p)
    {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let missing =
                missing_wal(cluster, &parent.start_wal, &last).map_err(JobFailure::from)?;
            let Some(first) = missing.first() else {
                break;
            };
            let ready = datadir
                .join("pg_wal/archive_status")
                .join(format!("{first}.ready"));
            // Not waiting to be archived: missing for good, unless the
            // archiver stored it between the listing and this check.
            let gone = !ready.exists()
                && missing_wal(cluster, first, first)
                    .map_err(JobFailure::from)?
                    .contains(first);
            if gone {
                return Ok(full(format!(
                    "WAL segment {first}, between backup \"{}\" and this one, is not in the repository (WAL archiving was off, or the segment was removed), so changed pages cannot be found by their LSN",
                    parent.backup_id
                )));
            }
            if stop.load(Ordering::SeqCst) {
                return Err(JobFailure::permanent(
                    "the backup was stopped while it waited for WAL to be archived",
                ));
            }
            if std::time::Instant::now() >= deadline {
                // A timeout: the archiver may catch up before the retry.
                return Err(JobFailure::transient(format!(
                    "WAL segment {first}, which this backup relies on, was not archived within {} s (check ark.archive_status())",
                    wait.as_secs()
                )));
            }
            waiting(first);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let basis = Basis::against(stored, reference_lsn);
    Ok(Decision {
        parent: Some((parent, basis)),
        chain: Some(chain),
        fallback: None,
    })
}
