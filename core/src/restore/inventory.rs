//! What a repository holds, from the repository alone: `pg_ark info`.
//!
//! The JSON document ([`inventory`]) is stable: fields are only ever
//! added. It is documented in docs/reference/json.md ("`pg_ark info --json`").
use super::plan::{format_lsn, Archive};
use crate::logical::list_logical_backups;
use crate::physical::{self, PhysicalBackupInfo};
use crate::repo::{ClusterRepo, Repository};
use crate::Error;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The format version of the document.
pub const INVENTORY_FORMAT: u32 = 1;

/// Runs of segment numbers, first and last.
pub type Runs = Vec<(u64, u64)>;

/// Consecutive runs of segment numbers, and the runs missing between them.
pub fn runs(mut segnos: Vec<u64>) -> (Runs, Runs) {
    segnos.sort_unstable();
    segnos.dedup();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for n in segnos {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == n => *last = n,
            _ => ranges.push((n, n)),
        }
    }
    let gaps = ranges
        .windows(2)
        .map(|w| (w[0].1 + 1, w[1].0 - 1))
        .collect();
    (ranges, gaps)
}

fn backup_json(b: &PhysicalBackupInfo) -> Value {
    json!({
        "backup_id": b.backup_id,
        "kind": b.kind,
        "parent": b.parent,
        "timeline": b.timeline,
        "start_lsn": b.start_lsn,
        "stop_lsn": b.stop_lsn,
        "start_wal": b.start_wal,
        "stop_wal": b.stop_wal,
        "wal_segment_size": b.wal_segment_size.bytes(),
        "started_at": b.started_at,
        "finished_at": b.finished_at,
        "original_bytes": b.original_bytes,
        "stored_bytes": b.stored_bytes,
        "files": b.files,
        "server_version": b.server_version,
        "checksums": b.checksums,
    })
}

/// What `pg_ark info` shows of a backup's last restore drill.
pub fn drill_summary(d: &Value) -> Value {
    json!({
        "ok": d["ok"],
        "at": d["at"],
        "job_id": d["job_id"],
        "target": d["target"],
        "rto_seconds": d["timings"]["rto_seconds"],
        "timings": d["timings"],
        "error": d.get("error"),
    })
}

/// One cluster's entry.
pub fn cluster_inventory(cluster: &ClusterRepo) -> Result<Value, Error> {
    let listing = physical::list_all_backups(cluster)?;
    let backups = listing.backups;
    // Backups a newer pg_ark wrote: named, with why they are not listed.
    let newer: Vec<Value> = listing
        .newer
        .iter()
        .map(|(id, e)| json!({"backup_id": id, "error": e.to_string()}))
        .collect();
    let mut chains: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for b in &backups {
        let chain = if b.chain.is_empty() {
            b.backup_id.clone()
        } else {
            b.chain.clone()
        };
        if !chains.contains_key(&chain) {
            order.push(chain.clone());
        }
        let mut doc = backup_json(b);
        // On S3, what keeps the backup from being deleted.
        if let Some((mode, until)) = physical::backup_lock(cluster, &b.backup_id)? {
            doc["lock"] =
                json!({"mode": mode, "retain_until": until.map(crate::logical::rfc3339_utc)});
        }
        doc["drill"] = match physical::load_drill(cluster, &b.backup_id) {
            Ok(Some(d)) => drill_summary(&d),
            Ok(None) => Value::Null,
            // Encrypted, and no identity to open it: no verdict either way.
            Err(e) if e.encryption().is_some_and(|c| c.needs_a_key()) => {
                json!({"ok": null, "error": format!("the drill record is encrypted: {e}")})
            }
            Err(e) => json!({"ok": false, "error": format!("the drill record is unreadable: {e}")}),
        };
        chains.entry(chain).or_default().push(doc);
    }
    let chains: Vec<Value> = order
        .iter()
        .map(|full| {
            let list = chains.remove(full).unwrap_or_default();
            let stored: u64 = list.iter().filter_map(|b| b["stored_bytes"].as_u64()).sum();
            json!({"full": full, "stored_bytes": stored, "backups": list})
        })
        .collect();
    let archive = Archive::load(cluster)?;
    let size = archive.segment_size;
    let timelines = wal_timelines(&archive);
    let logical: Vec<Value> = list_logical_backups(cluster, None)?
        .iter()
        .map(|d| {
            json!({
                "database": d.database,
                "label": d.label,
                "format": d.format.as_str(),
                "bytes": d.bytes,
                "started_at": d.started_at,
                "finished_at": d.finished_at,
                "server_version": d.server_version,
            })
        })
        .collect();
    let mut doc = json!({
        "system_identifier": cluster.system_identifier.to_string(),
        "pg_major": cluster.pg_major,
        "wal_segment_size": size.bytes(),
        "chains": chains,
        "wal": {"timelines": timelines},
        "logical": logical,
    });
    if !newer.is_empty() {
        doc["newer_backups"] = Value::Array(newer);
    }
    Ok(doc)
}

/// The archived WAL of `archive`, per timeline: its segments, their
/// consecutive runs and the gaps between them (first and last segment
/// names), and the timeline's history.
pub fn wal_timelines(archive: &Archive) -> Vec<Value> {
    let size = archive.segment_size;
    let mut by_tli: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for s in &archive.segments {
        let Ok(seg) = size.parse(s) else {
            continue;
        };
        by_tli.entry(seg.timeline).or_default().push(seg.segno);
    }
    by_tli
        .into_iter()
        .map(|(tli, segnos)| {
            let count = segnos.len();
            let (ranges, gaps) = runs(segnos);
            let span = |list: &[(u64, u64)]| -> Vec<Value> {
                list.iter()
                    .map(|&(a, b)| {
                        json!({
                            "first": size.name(tli, a),
                            "last": size.name(tli, b),
                            "segments": b - a + 1,
                        })
                    })
                    .collect()
            };
            let history = archive.histories.get(&tli).map(|h| {
                h.iter()
                    .map(|&(parent, lsn)| json!({"timeline": parent, "switched_at": format_lsn(lsn)}))
                    .collect::<Vec<_>>()
            });
            json!({
                "timeline": tli,
                "segments": count,
                "ranges": span(&ranges),
                "gaps": span(&gaps),
                "history": history,
            })
        })
        .collect()
}

/// Every cluster of `repo`.
pub fn inventory(repo: &Arc<Repository>) -> Result<Value, Error> {
    let clusters: Result<Vec<Value>, Error> =
        repo.clusters()?.iter().map(cluster_inventory).collect();
    Ok(json!({
        "format": INVENTORY_FORMAT,
        "repository": repo.location(),
        "clusters": clusters?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_gaps_of_segments() {
        let (r, g) = runs(vec![5, 3, 4, 9, 10, 12]);
        assert_eq!(r, [(3, 5), (9, 10), (12, 12)]);
        assert_eq!(g, [(6, 8), (11, 11)]);
        assert_eq!(runs(vec![]), (vec![], vec![]));
    }
}
