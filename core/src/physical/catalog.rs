//! A backup's descriptor, manifest and records in the repository: writing
//! them last (`finish_backup`), listing complete backups, the index,
//! removing backups and what failed ones left.
use super::*;

pub(crate) fn save_json(
    cluster: &ClusterRepo,
    key: &str,
    value: &impl Serialize,
) -> Result<(), Error> {
    let v = serde_json::to_value(value).map_err(|e| Error::BadMetadata {
        location: cluster.location(),
        key: key.into(),
        reason: e.to_string(),
    })?;
    info::save(cluster.storage(), key, &v, PutMode::Create).map_err(Error::from)
}

pub(crate) fn load_json<T: serde::de::DeserializeOwned>(
    cluster: &ClusterRepo,
    key: &str,
) -> Result<Option<T>, Error> {
    match info::load(cluster.storage(), key)? {
        None => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| Error::BadMetadata {
                location: cluster.location(),
                key: key.into(),
                reason: e.to_string(),
            }),
    }
}

/// A descriptor, manifest or index, its `format_version` checked before any
/// other field is read: a document of a newer pg_ark is refused by name,
/// never read by guessing at its fields.
pub(crate) fn load_versioned<T: serde::de::DeserializeOwned>(
    cluster: &ClusterRepo,
    key: &str,
) -> Result<Option<T>, Error> {
    let Some(v) = load_checked(cluster, key, PHYSICAL_INFO_VERSION)? else {
        return Ok(None);
    };
    serde_json::from_value(v)
        .map(Some)
        .map_err(|e| Error::BadMetadata {
            location: cluster.location(),
            key: key.into(),
            reason: e.to_string(),
        })
}

/// A checksummed document whose `format_version` is at most `supported`
/// (see [`load_versioned`]), not yet read any further.
pub(crate) fn load_checked(
    cluster: &ClusterRepo,
    key: &str,
    supported: u32,
) -> Result<Option<serde_json::Value>, Error> {
    let Some(v) = info::load(cluster.storage(), key)? else {
        return Ok(None);
    };
    match v.get("format_version").and_then(serde_json::Value::as_u64) {
        Some(n) if n <= u64::from(supported) => Ok(Some(v)),
        Some(n) => Err(Error::MetadataTooNew {
            location: cluster.location(),
            key: key.into(),
            found: n,
            supported: u64::from(supported),
        }),
        None => Err(Error::BadMetadata {
            location: cluster.location(),
            key: key.into(),
            reason: "its format_version is missing or not a whole number".into(),
        }),
    }
}

/// Write the manifest, then the descriptor: the backup is complete once
/// this returns.
///
/// Before the descriptor, every object the manifest names must be in the
/// backup's folder: another writer of the entry (a restored copy of this
/// cluster, say) that took the backup for abandoned may have removed it
/// (see [`lease`]). Such a backup is never recorded complete.
pub fn finish_backup(
    cluster: &ClusterRepo,
    manifest: &Manifest,
    descriptor: &PhysicalBackupInfo,
) -> Result<(), Error> {
    let prefix = backup_prefix(cluster, &manifest.backup_id);
    let parent = match &descriptor.parent {
        Some(p) => match load_stored(cluster, p)? {
            Some(Stored::V2(root)) => Some(root),
            _ => None,
        },
        None => None,
    };
    let root = save_manifest(cluster, manifest, parent.as_ref())?;
    let present: std::collections::HashSet<String> = cluster
        .storage()
        .list(&format!("{prefix}/"))?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut missing: Vec<String> = manifest
        .files
        .iter()
        .filter(|f| !f.key.is_empty())
        .map(|f| f.key.clone())
        .chain([
            format!("{prefix}/{MANIFEST_NAME}"),
            format!("{prefix}/{MANIFEST_NAME}.copy"),
        ])
        .filter(|k| !present.contains(k))
        .collect();
    // Its own packs, and those of its ancestors it refers to.
    missing.extend(missing_packs(cluster, &root)?);
    // Its parent must still be there too (another writer's expiry), and
    // every ancestor whose segments it refers to.
    let mut elders: Vec<&str> = descriptor.parent.iter().map(String::as_str).collect();
    for s in root.segments.iter().filter(|s| s.unchanged) {
        if !elders.contains(&s.owner.as_str()) {
            elders.push(&s.owner);
        }
    }
    for id in elders {
        let key = format!("{}/{INFO_NAME}", backup_prefix(cluster, id));
        if cluster.storage().head(&key)?.is_none() {
            missing.push(key);
        }
    }
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        return Err(Error::BackupObjectsMissing {
            location: cluster.location(),
            backup_id: manifest.backup_id.clone(),
            missing,
        });
    }
    save_json(cluster, &format!("{prefix}/{INFO_NAME}"), descriptor)
}

/// The record of the last restore drill of a backup, in its folder (it
/// goes when the backup goes).
pub const DRILL_NAME: &str = "drill.json";

/// Record the last restore drill of backup `id` (see `restore::drill`).
pub fn save_drill(cluster: &ClusterRepo, id: &str, doc: &serde_json::Value) -> Result<(), Error> {
    check_backup_id(id)?;
    // Each drill replaces the record of the one before.
    info::save(
        cluster.storage(),
        &format!("{}/{DRILL_NAME}", backup_prefix(cluster, id)),
        doc,
        PutMode::Overwrite,
    )
    .map_err(Error::from)
}

/// The last restore drill of backup `id`, if one was recorded.
pub fn load_drill(cluster: &ClusterRepo, id: &str) -> Result<Option<serde_json::Value>, Error> {
    check_backup_id(id)?;
    load_json(
        cluster,
        &format!("{}/{DRILL_NAME}", backup_prefix(cluster, id)),
    )
}

/// Remove everything of backup `id`: the descriptor first, so that an
/// interrupted removal never leaves a complete-looking backup.
pub fn delete_backup(cluster: &ClusterRepo, id: &str) -> Result<(), Error> {
    check_backup_id(id)?;
    let prefix = backup_prefix(cluster, id);
    let storage = cluster.storage();
    storage.delete(&format!("{prefix}/{INFO_NAME}"))?;
    storage.delete(&format!("{prefix}/{INFO_NAME}.copy"))?;
    for obj in storage.list(&format!("{prefix}/"))? {
        storage.delete(&obj.key)?;
    }
    Ok(())
}

/// Remove what failed or killed backups left: every backup prefix without a
/// descriptor and without a live lease of another holder than `own` (see
/// [`lease`]): a prefix another writer of the entry is filling holds one,
/// and is left alone. Only when `own` runs no physical backup (the job
/// queue runs one at a time: conflict key `physical`). Returns the ids
/// removed and the ids left to their writers.
pub fn remove_incomplete(
    cluster: &ClusterRepo,
    own: &str,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let now = crate::logical::now_epoch();
    let base = cluster.key(layout::BACKUP);
    let mut ids = std::collections::BTreeMap::<String, bool>::new();
    for o in cluster.storage().list(&base)? {
        let Some((id, name)) = o.key.strip_prefix(&base).and_then(|r| r.split_once('/')) else {
            continue;
        };
        let complete = ids.entry(id.to_string()).or_insert(false);
        *complete |= name == INFO_NAME;
    }
    let (mut removed, mut running) = (Vec::new(), Vec::new());
    for (id, complete) in ids {
        if !complete && check_backup_id(&id).is_ok() {
            if lease::held(cluster, &id, own, now)? {
                running.push(id);
                continue;
            }
            delete_backup(cluster, &id)?;
            removed.push(id);
        }
    }
    Ok((removed, running))
}

/// The order of backups, oldest first: by start time, then (for backups
/// started in the same second) by start LSN, then job and id.
pub fn backup_order(b: &PhysicalBackupInfo) -> (i64, u64, Option<i64>, String) {
    (
        b.started_epoch,
        increment::parse_lsn(&b.start_lsn).unwrap_or(0),
        b.job_id,
        b.backup_id.clone(),
    )
}

/// The complete physical backups of `cluster`, oldest first, and the
/// backups a newer pg_ark wrote, which this one cannot read (their ids and
/// why).
pub struct Listing {
    pub backups: Vec<PhysicalBackupInfo>,
    pub newer: Vec<(String, Error)>,
}

/// Every complete backup's descriptor, read: see [`Listing`].
pub fn list_all_backups(cluster: &ClusterRepo) -> Result<Listing, Error> {
    let base = cluster.key(layout::BACKUP);
    let mut ids: Vec<String> = cluster
        .storage()
        .list(&base)?
        .into_iter()
        .filter_map(|o| {
            let rest = o.key.strip_prefix(&base)?;
            let (id, name) = rest.split_once('/')?;
            (name == INFO_NAME).then(|| id.to_string())
        })
        .collect();
    ids.dedup();
    let mut backups = Vec::new();
    let mut newer = Vec::new();
    for id in ids {
        match load_versioned::<PhysicalBackupInfo>(
            cluster,
            &format!("{}/{INFO_NAME}", backup_prefix(cluster, &id)),
        ) {
            Ok(Some(info)) => {
                if info.backup_id == id && info.system_identifier == cluster.system_identifier {
                    backups.push(info);
                }
            }
            Ok(None) => {}
            Err(e @ Error::MetadataTooNew { .. }) => newer.push((id, e)),
            Err(e) => return Err(e),
        }
    }
    backups.sort_by_key(backup_order);
    Ok(Listing { backups, newer })
}

/// The complete physical backups this pg_ark can read, oldest first, for
/// reading them (restore plans, `pg_ark info`, verification). A newer
/// pg_ark's backups are left out; [`list_all_backups`] names them.
pub fn list_backups(cluster: &ClusterRepo) -> Result<Vec<PhysicalBackupInfo>, Error> {
    Ok(list_all_backups(cluster)?.backups)
}

/// The complete physical backups, for changing the repository (retention,
/// a parent's choice, the index): refused while a newer pg_ark's backup is
/// there, whose parents and WAL this pg_ark could not account for.
pub fn list_backups_to_change(cluster: &ClusterRepo) -> Result<Vec<PhysicalBackupInfo>, Error> {
    let listing = list_all_backups(cluster)?;
    match listing.newer.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(listing.backups),
    }
}

/// The catalog index of a cluster's physical backups, `backup.index` (a
/// checksummed pair beside the `backup/` folder): every complete backup's
/// descriptor, oldest first, so that chains can be listed without listing
/// every object. The descriptors stay the truth: the index is rewritten
/// from them after each backup and each expiry, and `pg_ark verify`
/// reports an index that disagrees with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupIndex {
    pub format_version: u32,
    pub backups: Vec<PhysicalBackupInfo>,
}

pub const INDEX_NAME: &str = "backup.index";

/// Rewrite the catalog index from the descriptors; returns what it lists.
pub fn write_index(cluster: &ClusterRepo) -> Result<Vec<PhysicalBackupInfo>, Error> {
    let backups = list_backups_to_change(cluster)?;
    let index = BackupIndex {
        format_version: PHYSICAL_INFO_VERSION,
        backups,
    };
    let key = cluster.key(INDEX_NAME);
    let v = serde_json::to_value(&index).map_err(|e| Error::BadMetadata {
        location: cluster.location(),
        key: key.clone(),
        reason: e.to_string(),
    })?;
    info::save(cluster.storage(), &key, &v, PutMode::Overwrite)?;
    Ok(index.backups)
}

/// The catalog index, if the repository has one.
pub fn read_index(cluster: &ClusterRepo) -> Result<Option<Vec<PhysicalBackupInfo>>, Error> {
    Ok(load_versioned::<BackupIndex>(cluster, &cluster.key(INDEX_NAME))?.map(|i| i.backups))
}
