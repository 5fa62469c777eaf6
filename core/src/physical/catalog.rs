//! A backup's descriptor, manifest and records in the repository: writing
//! them last (`finish_backup`), listing complete backups, the index,
//! removing backups and what failed ones left.
use super::*;
use crate::repo::generations;
use crate::repo::info::InfoError;

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
    info::save(cluster.storage(), key, &v).map_err(Error::from)
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

/// The records of a backup's restore drills, in its folder (they go when
/// the backup goes): one generation per drill (see `repo::generations`),
/// the newest intact one is the last drill.
pub const DRILL_FOLDER: &str = "drill/";

/// Where pg_ark 0.1 kept the one drill record it overwrote; still read.
const OLD_DRILL_NAME: &str = "drill.json";

/// Drill records kept per backup; older ones are removed as drills run.
pub const DRILLS_KEPT: usize = 3;

/// Record a restore drill of backup `id` (see `restore::drill`), as a new
/// generation: nothing is overwritten.
pub fn save_drill(cluster: &ClusterRepo, id: &str, doc: &serde_json::Value) -> Result<(), Error> {
    check_backup_id(id)?;
    let folder = format!("{}/{DRILL_FOLDER}", backup_prefix(cluster, id));
    generations::save_next(cluster.storage(), &folder, doc)?;
    generations::prune(cluster.storage(), &folder, DRILLS_KEPT)?;
    Ok(())
}

/// The last restore drill of backup `id`, if one was recorded.
pub fn load_drill(cluster: &ClusterRepo, id: &str) -> Result<Option<serde_json::Value>, Error> {
    check_backup_id(id)?;
    let prefix = backup_prefix(cluster, id);
    let folder = format!("{prefix}/{DRILL_FOLDER}");
    match generations::load_newest(cluster.storage(), &folder, |_| Ok(()))? {
        Some(newest) => Ok(Some(newest.value)),
        None => load_json(cluster, &format!("{prefix}/{OLD_DRILL_NAME}")),
    }
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
/// removed, the ids left to their writers, and the ids S3 Object Lock
/// still retains (what could go went; the rest goes in a later run).
#[allow(clippy::type_complexity)]
pub fn remove_incomplete(
    cluster: &ClusterRepo,
    own: &str,
) -> Result<(Vec<String>, Vec<String>, Vec<String>), Error> {
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
    let (mut removed, mut running, mut retained) = (Vec::new(), Vec::new(), Vec::new());
    for (id, complete) in ids {
        if !complete && check_backup_id(&id).is_ok() {
            if lease::held(cluster, &id, own, now)? {
                running.push(id);
                continue;
            }
            match delete_backup(cluster, &id) {
                Ok(()) => removed.push(id),
                Err(Error::Storage(e)) if e.is_retained() => retained.push(id),
                Err(e) => return Err(e),
            }
        }
    }
    Ok((removed, running, retained))
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

/// The index's generations (see `repo::generations`): each backup and each
/// expiry that changes the list adds one, never overwriting. Each carries
/// the checksum of the generation before it ([`IndexLink`]), so `pg_ark
/// verify` finds a generation put in between.
pub const INDEX_FOLDER: &str = "backup.index.d/";

/// Where pg_ark 0.1 kept the index it overwrote; still read.
const OLD_INDEX_NAME: &str = "backup.index";

/// Index generations kept; older ones go as new ones are written.
pub const INDEXES_KEPT: usize = 4;

/// The generation an index generation follows: its number and the
/// checksum of its payload (the one its checksummed pair records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexLink {
    pub seq: u64,
    pub checksum: String,
}

/// One generation of the index, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexGeneration {
    format_version: u32,
    backups: Vec<PhysicalBackupInfo>,
    #[serde(default)]
    prev: Option<IndexLink>,
}

/// The newest intact index generation, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRead {
    pub seq: u64,
    pub backups: Vec<PhysicalBackupInfo>,
    /// Newer generations that failed their checksum or are of a newer
    /// pg_ark: (key, why).
    pub passed_over: Vec<(String, String)>,
    /// Generations whose link does not match the generation before them.
    pub broken_links: Vec<String>,
}

fn index_accept(v: &serde_json::Value) -> Result<(), String> {
    match v.get("format_version").and_then(serde_json::Value::as_u64) {
        Some(n) if n <= u64::from(PHYSICAL_INFO_VERSION) => Ok(()),
        Some(n) => Err(format!(
            "format_version {n}, newer than this pg_ark reads ({PHYSICAL_INFO_VERSION})"
        )),
        None => Err("its format_version is missing".into()),
    }
}

/// Write a new index generation from the descriptors, if the list changed;
/// returns what it lists.
pub fn write_index(cluster: &ClusterRepo) -> Result<Vec<PhysicalBackupInfo>, Error> {
    let backups = list_backups_to_change(cluster)?;
    let folder = cluster.key(INDEX_FOLDER);
    let storage = cluster.storage();
    let prev = match generations::load_newest(storage, &folder, index_accept) {
        Ok(Some(n)) => {
            let same = serde_json::from_value::<IndexGeneration>(n.value.clone())
                .is_ok_and(|g| g.backups == backups);
            if same && n.passed_over.is_empty() {
                return Ok(backups);
            }
            Some(IndexLink {
                seq: n.seq,
                checksum: info::checksum(&n.value),
            })
        }
        // None intact: the new generation starts the chain again.
        Ok(None) | Err(InfoError::Damaged { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let g = IndexGeneration {
        format_version: PHYSICAL_INFO_VERSION,
        backups,
        prev,
    };
    let v = serde_json::to_value(&g).map_err(|e| Error::BadMetadata {
        location: cluster.location(),
        key: folder.clone(),
        reason: e.to_string(),
    })?;
    generations::save_next(storage, &folder, &v)?;
    generations::prune(storage, &folder, INDEXES_KEPT)?;
    Ok(g.backups)
}

/// The catalog index, if the repository has one.
pub fn read_index(cluster: &ClusterRepo) -> Result<Option<Vec<PhysicalBackupInfo>>, Error> {
    Ok(read_index_generations(cluster)?.map(|i| i.backups))
}

/// The newest intact index generation, with what was passed over to reach
/// it and the links between the generations kept that do not hold.
pub fn read_index_generations(cluster: &ClusterRepo) -> Result<Option<IndexRead>, Error> {
    let folder = cluster.key(INDEX_FOLDER);
    let storage = cluster.storage();
    let Some(newest) = generations::load_newest(storage, &folder, index_accept)? else {
        return Ok(
            load_versioned::<BackupIndex>(cluster, &cluster.key(OLD_INDEX_NAME))?.map(|i| {
                IndexRead {
                    seq: 0,
                    backups: i.backups,
                    passed_over: Vec::new(),
                    broken_links: Vec::new(),
                }
            }),
        );
    };
    let bad = |reason: String| Error::BadMetadata {
        location: cluster.location(),
        key: generations::key(&folder, newest.seq),
        reason,
    };
    let g: IndexGeneration =
        serde_json::from_value(newest.value).map_err(|e| bad(e.to_string()))?;
    // Each kept generation up to the newest must name the one before it.
    let mut broken_links = Vec::new();
    let mut checksums = std::collections::BTreeMap::new();
    for seq in generations::list(storage, &folder)? {
        if seq > newest.seq {
            break;
        }
        let key = generations::key(&folder, seq);
        let Ok(Some(v)) = info::load(storage, &key) else {
            continue;
        };
        let link = v
            .get("prev")
            .cloned()
            .and_then(|p| serde_json::from_value::<Option<IndexLink>>(p).ok())
            .flatten();
        if let Some((&before, sum)) = checksums.last_key_value() {
            let holds = link
                .as_ref()
                .is_some_and(|l: &IndexLink| l.seq == before && &l.checksum == sum);
            if !holds {
                broken_links.push(format!(
                    "{key}: does not follow generation {before} (it names {})",
                    link.map(|l| format!("generation {} with checksum {}", l.seq, l.checksum))
                        .unwrap_or_else(|| "none".into())
                ));
            }
        }
        checksums.insert(seq, info::checksum(&v));
    }
    Ok(Some(IndexRead {
        seq: newest.seq,
        backups: g.backups,
        passed_over: newest.passed_over,
        broken_links,
    }))
}
