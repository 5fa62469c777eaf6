//! The parent of an incremental or differential.
use super::*;

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
