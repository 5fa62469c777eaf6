//! Listing and deleting the logical backups of a cluster entry.
use super::*;
use crate::repo::{info, layout, ClusterRepo};
use crate::storage::Storage;
use crate::Error;
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------
// Listing, deletion, retention
// ---------------------------------------------------------------------------

/// A backup directory without a usable `backup.info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteLogicalBackup {
    /// The decoded database name (the encoded one if it does not decode).
    pub database: String,
    pub label: String,
    /// The key prefix of its objects (without the trailing `/`).
    pub prefix: String,
    pub objects: usize,
    pub bytes: u64,
    /// Why it is not a usable backup.
    pub reason: String,
}

/// The logical backups of a cluster entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogicalCatalog {
    /// Backups with a valid `backup.info`, by database, then start time.
    pub complete: Vec<LogicalBackupInfo>,
    /// Dumps without a usable `backup.info`: still running, failed before
    /// their cleanup, interrupted deletions, or damaged metadata.
    pub incomplete: Vec<IncompleteLogicalBackup>,
}

pub(crate) const NO_INFO: &str =
    "no backup.info: the dump is still running, failed before cleaning up, or its deletion was interrupted";

#[derive(Default)]
struct Group {
    has_info: bool,
    objects: usize,
    bytes: u64,
}

/// Read every logical backup of `cluster` (of `database` only, if given),
/// complete and incomplete. Storage errors fail the call; a damaged or
/// foreign `backup.info` only marks its backup incomplete.
pub fn scan_logical_backups(
    cluster: &ClusterRepo,
    database: Option<&str>,
) -> Result<LogicalCatalog, Error> {
    let storage = cluster.storage();
    let base = cluster.key(layout::LOGICAL);
    let prefix = match database {
        Some(db) => cluster.key(&layout::logical_database(&encode_database(db))),
        None => base.clone(),
    };
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    for obj in storage.list(&prefix)? {
        let Some(rest) = obj.key.strip_prefix(&base) else {
            continue;
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(enc), Some(label), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let g = groups
            .entry((enc.to_string(), label.to_string()))
            .or_default();
        g.objects += 1;
        g.bytes += obj.size;
        if name == INFO_NAME || name == format!("{INFO_NAME}.copy") {
            g.has_info = true;
        }
    }
    let mut catalog = LogicalCatalog::default();
    for ((enc, label), g) in groups {
        let decoded = decode_database(&enc);
        let incomplete = |reason: String| IncompleteLogicalBackup {
            database: decoded.clone().unwrap_or_else(|| enc.clone()),
            label: label.clone(),
            prefix: format!("{base}{enc}/{label}"),
            objects: g.objects,
            bytes: g.bytes,
            reason,
        };
        let Some(db) = decoded.clone() else {
            catalog.incomplete.push(incomplete(
                "the directory name is not an encoded database name".into(),
            ));
            continue;
        };
        if !g.has_info {
            catalog.incomplete.push(incomplete(NO_INFO.into()));
            continue;
        }
        let info_key = format!("{base}{enc}/{label}/{INFO_NAME}");
        let value = match info::load(storage, &info_key) {
            Ok(Some(v)) => v,
            Ok(None) => {
                catalog.incomplete.push(incomplete(NO_INFO.into()));
                continue;
            }
            Err(info::InfoError::Storage(e)) => return Err(e.into()),
            Err(e) => {
                catalog.incomplete.push(incomplete(e.to_string()));
                continue;
            }
        };
        let version = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if version > u64::from(LOGICAL_INFO_VERSION) {
            catalog.incomplete.push(incomplete(format!(
                "backup.info has format version {version}, newer than this pg_ark supports ({LOGICAL_INFO_VERSION})"
            )));
            continue;
        }
        match serde_json::from_value::<LogicalBackupInfo>(value) {
            Ok(i)
                if i.kind == "logical"
                    && i.database == db
                    && i.label == label
                    && i.system_identifier == cluster.system_identifier =>
            {
                catalog.complete.push(i)
            }
            Ok(i) => catalog.incomplete.push(incomplete(format!(
                "backup.info describes another backup ({} \"{}\" of database \"{}\", system identifier {})",
                i.kind, i.label, i.database, i.system_identifier
            ))),
            Err(e) => catalog
                .incomplete
                .push(incomplete(format!("backup.info is not valid: {e}"))),
        }
    }
    catalog.complete.sort_by(|a, b| {
        (&a.database, a.started_epoch, &a.label).cmp(&(&b.database, b.started_epoch, &b.label))
    });
    Ok(catalog)
}

/// The complete logical backups of `cluster` (of `database` only, if
/// given), by database then start time. Incomplete dumps are skipped; see
/// [`scan_logical_backups`] for them.
pub fn list_logical_backups(
    cluster: &ClusterRepo,
    database: Option<&str>,
) -> Result<Vec<LogicalBackupInfo>, Error> {
    Ok(scan_logical_backups(cluster, database)?.complete)
}

/// Delete a backup's `backup.info` and its copy, then every other object
/// under its prefix.
pub(crate) fn delete_prefix(storage: &dyn Storage, prefix: &str) -> Result<(), Error> {
    storage.delete(&format!("{prefix}/{INFO_NAME}"))?;
    storage.delete(&format!("{prefix}/{INFO_NAME}.copy"))?;
    for obj in storage.list(&format!("{prefix}/"))? {
        storage.delete(&obj.key)?;
    }
    Ok(())
}

/// Delete a backup: `backup.info` and its copy first, then the data, so an
/// interrupted deletion leaves an incomplete dump, never a valid-looking
/// backup with missing data. Deleting a deleted backup succeeds. A backup
/// that S3 Object Lock still retains is left whole: `Ok(Some(until))`, the
/// time its descriptor's lock ends.
pub fn delete_logical_backup(
    cluster: &ClusterRepo,
    backup: &LogicalBackupInfo,
) -> Result<Option<i64>, Error> {
    if backup.system_identifier != cluster.system_identifier {
        return Err(Error::InvalidLogicalRequest {
            reason: format!(
                "backup \"{}\" belongs to system identifier {}, not {}",
                backup.label, backup.system_identifier, cluster.system_identifier
            ),
        });
    }
    check_label(&backup.label)?;
    if backup.database.is_empty() {
        return Err(Error::InvalidLogicalRequest {
            reason: "the backup names no database".into(),
        });
    }
    let prefix = backup_prefix(cluster, &backup.database, &backup.label);
    let info = format!("{prefix}/{INFO_NAME}");
    let now = crate::logical::now_epoch();
    if let Some(until) = crate::storage::retained_after(cluster.storage(), &info, now)? {
        return Ok(Some(until));
    }
    delete_prefix(cluster.storage(), &prefix).map(|()| None)
}
