//! Retention of physical backups and of the WAL they need.
//!
//! # Backups: whole chains
//!
//! A chain is a full and every backup that relies on it (same `chain`).
//! Chains are ranked newest first by their full's start. A chain is kept if
//! it is among the newest `full` chains, or (with `days`) it is needed to
//! recover to any point of the last `days` days: a recovery window, as
//! Barman calls it. That keeps every chain with a backup that finished in
//! the window, and the chain of the newest backup that finished before the
//! window began (recovery to the window's start begins there; pgBackRest's
//! time retention keeps the newest full older than the window alike). The
//! newest chain is always kept.
//! Expiry removes whole chains only, so a parent is never removed while a
//! child is kept.
//!
//! Within kept chains, with `diff`, only the newest `diff` differentials
//! stay; an older differential goes with every backup that relies on it
//! (the incrementals taken on it). Incrementals are never removed on their
//! own: the next backup of their chain may rely on them.
//!
//! # WAL
//!
//! Every WAL segment (and `.partial` and `.backup` file) whose position is
//! before the start segment of the oldest kept backup is removed, on every
//! timeline: no restore from a kept backup, to any point after it, reads
//! WAL from before its start. Timeline history files are always kept. With
//! no physical backup, no WAL is removed (the archive may be all there is).
use crate::physical::{self, BackupKind, PhysicalBackupInfo};
use crate::repo::{layout, ClusterRepo};
use crate::wal::{Segment, SegmentSize};
use crate::Error;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};

/// The retention rules of physical backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Full chains kept (at least 1).
    pub full: u32,
    /// Differentials kept per chain (`None`: all).
    pub diff: Option<u32>,
    /// A recovery window in days: every point of it stays recoverable.
    pub days: Option<u32>,
}

/// The backups `rules` remove, among complete `backups`, newest first (the
/// order to remove them in: children before parents).
pub fn select_expired(
    backups: &[PhysicalBackupInfo],
    rules: Rules,
    now_epoch: i64,
) -> Vec<&PhysicalBackupInfo> {
    let order = crate::physical::backup_order;
    // chain id -> members
    let mut chains: BTreeMap<&str, Vec<&PhysicalBackupInfo>> = BTreeMap::new();
    for b in backups {
        let chain = if b.kind == BackupKind::Full {
            b.backup_id.as_str()
        } else {
            b.chain.as_str()
        };
        chains.entry(chain).or_default().push(b);
    }
    let mut ranked: Vec<(&str, &Vec<&PhysicalBackupInfo>)> =
        chains.iter().map(|(k, v)| (*k, v)).collect();
    // Newest chain first, by its full (a chain without its full sorts by
    // its oldest member).
    let head = |members: &Vec<&PhysicalBackupInfo>, id: &str| {
        members
            .iter()
            .find(|b| b.backup_id == id)
            .or_else(|| members.iter().min_by_key(|b| order(b)))
            .map(|b| order(b))
    };
    ranked.sort_by_key(|c| std::cmp::Reverse(head(c.1, c.0)));
    // The recovery window: every point from its start on stays
    // recoverable. Recovery to its start begins from the newest backup
    // that finished by then, so that backup's chain stays whole.
    let window_start = rules
        .days
        .map(|d| now_epoch.saturating_sub(i64::from(d) * 86_400));
    let anchor: Option<&str> = window_start.and_then(|start| {
        backups
            .iter()
            .filter(|b| b.finished_epoch <= start)
            .max_by_key(|b| (b.finished_epoch, order(b)))
            .map(|b| {
                if b.kind == BackupKind::Full {
                    b.backup_id.as_str()
                } else {
                    b.chain.as_str()
                }
            })
    });
    let mut expired: HashSet<&str> = HashSet::new();
    for (rank, (chain, members)) in ranked.iter().enumerate() {
        let newest_finish = members.iter().map(|b| b.finished_epoch).max().unwrap_or(0);
        let in_window = window_start.is_some_and(|start| newest_finish > start);
        let keep = rank == 0
            || (rank as u64) < u64::from(rules.full.max(1))
            || in_window
            || anchor == Some(*chain);
        if !keep {
            expired.extend(members.iter().map(|b| b.backup_id.as_str()));
            continue;
        }
        if let Some(n) = rules.diff {
            let mut diffs: Vec<&&PhysicalBackupInfo> = members
                .iter()
                .filter(|b| b.kind == BackupKind::Differential)
                .collect();
            diffs.sort_by_key(|b| std::cmp::Reverse(order(b)));
            for d in diffs.iter().skip(n as usize) {
                expired.insert(d.backup_id.as_str());
            }
        }
    }
    // Whatever relies on an expired backup goes with it.
    loop {
        let more: Vec<&str> = backups
            .iter()
            .filter(|b| !expired.contains(b.backup_id.as_str()))
            .filter(|b| b.parent.as_deref().is_some_and(|p| expired.contains(p)))
            .map(|b| b.backup_id.as_str())
            .collect();
        if more.is_empty() {
            break;
        }
        expired.extend(more);
    }
    let mut out: Vec<&PhysicalBackupInfo> = backups
        .iter()
        .filter(|b| expired.contains(b.backup_id.as_str()))
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(order(b)));
    out
}

/// The kept backup that recovery can start from earliest: the one that
/// finished first. Recovery reaches any point from its end (its consistent
/// point) on, through the WAL kept from its start.
pub fn oldest_recoverable<'a>(kept: &[&'a PhysicalBackupInfo]) -> Option<&'a PhysicalBackupInfo> {
    kept.iter()
        .copied()
        .min_by_key(|b| (b.finished_epoch, crate::physical::backup_order(b)))
}

/// The WAL files that the `kept` backups do not need, as (name, key),
/// oldest first. Empty when nothing is kept.
pub fn expired_wal(
    cluster: &ClusterRepo,
    kept: &[&PhysicalBackupInfo],
) -> Result<Vec<(String, String)>, Error> {
    let base = cluster.key(layout::WAL);
    let listed: Vec<(String, String)> = cluster
        .storage()
        .list(&base)?
        .into_iter()
        .filter_map(|o| {
            // A repair, or a damaged copy an older pg_ark set aside, goes
            // with the file it stands for.
            let name = o.key.rsplit('/').next()?;
            let name = [layout::WAL_REPAIR, ".damaged-"]
                .iter()
                .find_map(|s| name.split_once(s).map(|(n, _)| n))
                .unwrap_or(name);
            Some((name.to_string(), o.key))
        })
        .collect();
    Ok(expired_of(cluster.segment_size(), listed, kept))
}

/// [`expired_wal`] over listed (name, key) pairs. A position is a segment
/// number computed with the cluster's real segment size (`XLogFromFileName`):
/// the last part of a name runs to `per_xlogid - 1` (`FF` for 16 MiB,
/// `FFF` for 1 MiB), so names cannot be ordered by a fixed formula. A name
/// that is impossible for the size, or not WAL, is never removed.
fn expired_of(
    size: SegmentSize,
    listed: Vec<(String, String)>,
    kept: &[&PhysicalBackupInfo],
) -> Vec<(String, String)> {
    let Some(oldest) = kept
        .iter()
        .filter_map(|b| size.position(&b.start_wal))
        .map(|s| s.segno)
        .min()
    else {
        return Vec::new();
    };
    let mut out: Vec<(Segment, String, String)> = listed
        .into_iter()
        .filter_map(|(name, key)| {
            let p = size.position(&name)?;
            (p.segno < oldest).then_some((p, name, key))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, n, k)| (n, k)).collect()
}

/// Runs of consecutive names on one timeline, for reports:
/// (timeline, first, last, files).
pub fn wal_runs(names: &[String]) -> Vec<(String, String, String, usize)> {
    let mut out: Vec<(String, String, String, usize)> = Vec::new();
    for n in names {
        let tli = n.get(..8).unwrap_or_default().to_string();
        match out.last_mut() {
            Some(run) if run.0 == tli => {
                run.2 = n.clone();
                run.3 += 1;
            }
            _ => out.push((tli, n.clone(), n.clone(), 1)),
        }
    }
    out
}

/// Of `keys` (numbered generations and their `.copy`, in folders), those
/// of the newest `keep` generations of each folder.
fn newest_generations(keys: Vec<String>, keep: usize) -> Vec<String> {
    let mut names: BTreeMap<String, std::collections::BTreeSet<(usize, String)>> = BTreeMap::new();
    let split = |k: &str| -> Option<(String, String)> {
        let base = k.strip_suffix(".copy").unwrap_or(k);
        let (folder, name) = base.rsplit_once('/')?;
        Some((folder.to_string(), name.to_string()))
    };
    for k in &keys {
        if let Some((folder, name)) = split(k) {
            // Same-length digits (or longer past twelve) sort as numbers.
            names.entry(folder).or_default().insert((name.len(), name));
        }
    }
    keys.into_iter()
        .filter(|k| {
            split(k).is_some_and(|(folder, name)| {
                names
                    .get(&folder)
                    .is_some_and(|set| set.iter().rev().take(keep).any(|(_, n)| *n == name))
            })
        })
        .collect()
}

/// A retain-until for people: a legal hold has none.
fn retained_text(until: i64) -> String {
    match until {
        i64::MAX => "a legal hold".into(),
        t => crate::logical::rfc3339_utc(t),
    }
}

/// What physical expiry removed (or, in a dry run, would remove).
pub struct Expired {
    /// One summary per backup, newest first.
    pub backups: Vec<Value>,
    /// The prefixes of the backups, for the catalog.
    pub prefixes: Vec<String>,
    /// One summary per run of WAL files.
    pub wal: Vec<Value>,
    /// Expired backups that S3 Object Lock still retains, each with the
    /// time its lock ends: kept, with the WAL they need, until a run after
    /// that time removes them.
    pub pending: Vec<Value>,
    /// The oldest point recovery can reach after expiry: the end of the
    /// kept backup that finished first (`null`: no physical backup).
    pub recoverable_from: Value,
    /// Under Object Lock, the locks of what is kept, extended when they
    /// were due (see [`keep_locked`]): until when, and how many objects.
    pub relocked: Value,
}

/// Where each extension of the locks of what retention keeps is recorded
/// (generations, in the cluster entry): `{"until": <epoch seconds>}`.
pub const LOCKS_FOLDER: &str = "locks.d/";

/// Under Object Lock, keep locked what retention keeps: each object is
/// locked for the lock period from its upload, but a repository keeps its
/// descriptors, its key objects, its history files, the backups retention
/// keeps (a count of fulls can outlive any period) and the WAL they need
/// for longer. Once the last extension's date is less than half a period
/// away (or none was made), every such object's first version is locked
/// until a full period from `now` (PutObjectRetention, which only ever
/// extends), and the new date is recorded. Backups in `pending` and the
/// WAL only expired backups needed are left to their locks' end. `None`
/// for a storage without a lock, or when nothing was due.
pub fn keep_locked(
    cluster: &ClusterRepo,
    kept: &[&PhysicalBackupInfo],
    pending: &HashSet<&str>,
    now: i64,
) -> Result<Option<(i64, usize)>, Error> {
    use crate::repo::generations;
    let storage = cluster.storage();
    let Some(period) = storage.lock_period() else {
        return Ok(None);
    };
    let folder = cluster.key(LOCKS_FOLDER);
    let recorded = match generations::load_newest(storage, &folder, |_| Ok(())) {
        Ok(n) => n.and_then(|n| n.value["until"].as_i64()),
        Err(crate::repo::info::InfoError::Damaged { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    // A record further ahead than a period is not pg_ark's (or the period
    // was shortened): extend all the same.
    if recorded.is_some_and(|t| t - now >= period / 2 && t - now <= period) {
        return Ok(None);
    }
    let until = now + period;
    // The backups that stay, and the WAL from the oldest one's start on.
    let live: Vec<&PhysicalBackupInfo> = kept
        .iter()
        .copied()
        .filter(|b| !pending.contains(b.backup_id.as_str()))
        .collect();
    let expired: HashSet<String> = expired_wal(cluster, &live)?
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let mut keys = vec![
        layout::DESCRIPTOR.to_string(),
        format!("{}.copy", layout::DESCRIPTOR),
    ];
    // Every key object (what opens an encrypted repository: a planted
    // "newer" generation must not let the genuine ones lapse).
    keys.extend(storage.list(layout::KEYS)?.into_iter().map(|o| o.key));
    // Of the records kept as generations, those pruning keeps (the newest
    // few); older ones lapse and are pruned.
    let (mut drills, mut indexes) = (Vec::new(), Vec::new());
    let entry = cluster.key("");
    for o in storage.list(&entry)? {
        let rel: Vec<&str> = o.key[entry.len()..].split('/').collect();
        match rel[..] {
            ["backup", id, ref rest @ ..] => {
                if !live.iter().any(|b| b.backup_id == id) {
                    continue;
                }
                match rest.first() {
                    // A finished backup's leases hold nothing any more.
                    Some(&"lease") => continue,
                    Some(&"drill") => drills.push(o.key),
                    _ => keys.push(o.key),
                }
            }
            ["wal", ..] if live.is_empty() || expired.contains(&o.key) => {}
            ["backup.index.d", _] => indexes.push(o.key),
            // Logical dumps keep the lock of their upload (their retention
            // is their own), and these records are extended by their next.
            ["logical", ..] | ["locks.d", ..] => {}
            _ => keys.push(o.key),
        }
    }
    keys.extend(newest_generations(drills, physical::DRILLS_KEPT));
    keys.extend(newest_generations(indexes, physical::INDEXES_KEPT));
    let mut extended = 0;
    for k in &keys {
        extended += usize::from(storage.extend_lock(k, until)?);
    }
    generations::save_next(
        storage,
        &folder,
        &json!({"format_version": 1, "until": until}),
    )?;
    generations::prune(storage, &folder, 2)?;
    Ok(Some((until, extended)))
}

/// Apply `rules` to the physical backups of `cluster` and to its WAL: whole
/// chains, children before parents (each backup's descriptor first, so an
/// interruption never leaves a complete-looking backup without its parent),
/// then the WAL that no kept backup needs. With `dry_run`, only list.
/// `now` (epoch seconds) places the recovery window of `rules.days`.
pub fn expire(
    cluster: &ClusterRepo,
    rules: Rules,
    now: i64,
    dry_run: bool,
) -> Result<Expired, Error> {
    let backups = physical::list_backups_to_change(cluster)?;
    let mut expired = select_expired(&backups, rules, now);
    // Never a delete before Object Lock allows it: a backup whose
    // descriptor (written last, so retained longest) is still retained
    // stays for a later run, and so do the parents it needs.
    let mut pending = std::collections::BTreeMap::<String, Option<i64>>::new();
    for b in &expired {
        let key = physical::descriptor_key(cluster, &b.backup_id);
        if let Some(t) = crate::storage::retained_after(cluster.storage(), &key, now)? {
            pending.insert(b.backup_id.clone(), Some(t));
        }
    }
    // (A parent retention keeps anyway is no pending backup.)
    let expired_ids: HashSet<String> = expired.iter().map(|b| b.backup_id.clone()).collect();
    loop {
        let needed: Vec<String> = expired
            .iter()
            .filter(|b| pending.contains_key(&b.backup_id))
            .filter_map(|b| b.parent.clone())
            .filter(|p| expired_ids.contains(p) && !pending.contains_key(p))
            .collect();
        if needed.is_empty() {
            break;
        }
        for p in needed {
            pending.insert(p, None);
        }
    }
    expired.retain(|b| !pending.contains_key(&b.backup_id));
    let gone: std::collections::HashSet<&str> =
        expired.iter().map(|b| b.backup_id.as_str()).collect();
    let kept: Vec<&PhysicalBackupInfo> = backups
        .iter()
        .filter(|b| !gone.contains(b.backup_id.as_str()))
        .collect();
    let wal = expired_wal(cluster, &kept)?;
    let recoverable_from = oldest_recoverable(&kept).map_or(Value::Null, |b| {
        json!({
            "backup": b.backup_id, "path": physical::backup_prefix(cluster, &b.backup_id),
            "time": b.finished_at, "lsn": b.stop_lsn, "timeline": b.timeline,
        })
    });
    let mut out = Expired {
        backups: Vec::new(),
        prefixes: Vec::new(),
        wal: Vec::new(),
        pending: pending
            .iter()
            .map(|(id, until)| {
                json!({
                    "label": id,
                    "path": physical::backup_prefix(cluster, id),
                    "retained_until": until.map(retained_text),
                    "reason": match until {
                        Some(_) => "retained by Object Lock",
                        None => "a backup retained by Object Lock needs it",
                    },
                })
            })
            .collect(),
        recoverable_from,
        relocked: Value::Null,
    };
    for b in &expired {
        if !dry_run {
            match physical::delete_backup(cluster, &b.backup_id) {
                Ok(()) => {}
                // A version locked longer than the descriptor's current one
                // said (a version put over it, or a lock extended): the
                // backup stays, pending, for a later run.
                Err(Error::Storage(crate::storage::StorageError::Retained { until, .. })) => {
                    out.pending.push(json!({
                        "label": b.backup_id,
                        "path": physical::backup_prefix(cluster, &b.backup_id),
                        "retained_until": until.map(retained_text),
                        "reason": "retained by Object Lock",
                    }));
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let prefix = physical::backup_prefix(cluster, &b.backup_id);
        out.backups.push(json!({
            "kind": b.kind, "label": b.backup_id, "path": prefix,
            "job_id": b.job_id, "finished_at": b.finished_at,
        }));
        out.prefixes.push(prefix);
    }
    // WAL oldest first: the first file still retained ends the deletion
    // (the files after it were written, and locked, later).
    let mut wal = wal;
    for at in 0..wal.len() {
        if crate::storage::retained_after(cluster.storage(), &wal[at].1, now)?.is_some() {
            wal.truncate(at);
            break;
        }
    }
    // A backup found locked only as it was deleted keeps the WAL it
    // needs: none goes in this run.
    if out.pending.len() > pending.len() {
        wal.clear();
    }
    if !dry_run {
        for at in 0..wal.len() {
            match cluster.storage().delete(&wal[at].1) {
                Ok(()) => {}
                Err(e) if e.is_retained() => {
                    wal.truncate(at);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // The catalog index follows the descriptors (this runs after every
        // physical backup too).
        physical::write_index(cluster)?;
        let held: HashSet<&str> = pending.keys().map(String::as_str).collect();
        // Best effort: what was removed stays removed, and is reported.
        match keep_locked(cluster, &kept, &held, now) {
            Ok(Some((until, objects))) => {
                out.relocked =
                    json!({"until": crate::logical::rfc3339_utc(until), "objects": objects});
            }
            Ok(None) => {}
            Err(e) => out.relocked = json!({"error": e.to_string()}),
        }
    }
    let names: Vec<String> = wal.into_iter().map(|(n, _)| n).collect();
    for (timeline, first, last, files) in wal_runs(&names) {
        out.wal.push(json!({
            "timeline": timeline, "first": first, "last": last, "files": files,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: Vec<&PhysicalBackupInfo>) -> Vec<&str> {
        v.into_iter().map(|b| b.backup_id.as_str()).collect()
    }

    fn history() -> Vec<PhysicalBackupInfo> {
        let b = PhysicalBackupInfo::for_tests;
        vec![
            b("f1", "full", None, "f1", 10),
            b("i1", "incremental", Some("f1"), "f1", 11),
            b("f2", "full", None, "f2", 20),
            b("d2a", "differential", Some("f2"), "f2", 21),
            b("i2", "incremental", Some("d2a"), "f2", 22),
            b("d2b", "differential", Some("f2"), "f2", 23),
            b("f3", "full", None, "f3", 30),
        ]
    }

    #[test]
    fn whole_chains_expire_newest_first() {
        let h = history();
        let r = |full, diff, days| Rules { full, diff, days };
        assert_eq!(
            ids(select_expired(&h, r(3, None, None), 100)),
            Vec::<&str>::new()
        );
        assert_eq!(ids(select_expired(&h, r(2, None, None), 100)), ["i1", "f1"]);
        assert_eq!(
            ids(select_expired(&h, r(1, None, None), 100)),
            ["d2b", "i2", "d2a", "f2", "i1", "f1"]
        );
        // A differential beyond the count goes with the incremental on it.
        assert_eq!(
            ids(select_expired(&h, r(2, Some(1), None), 100)),
            ["i2", "d2a", "i1", "f1"]
        );
        // By age: a chain whose newest backup is younger than a day stays.
        let day = 86_400;
        assert_eq!(
            ids(select_expired(&h, r(1, None, Some(1)), 23 + day - 1)),
            ["i1", "f1"]
        );
        // The newest chain always stays.
        assert_eq!(
            ids(select_expired(&h[..2], r(1, None, None), 100)),
            Vec::<&str>::new()
        );
    }

    /// `days` is a recovery window: any point of the last `days` days can
    /// be recovered, so the chain that recovery to the window's start
    /// begins from stays, even when its newest backup is older than that.
    #[test]
    fn days_keep_every_point_of_the_window_recoverable() {
        let day = 86_400;
        let now = 100 * day;
        let b = PhysicalBackupInfo::for_tests;
        let mut h = vec![
            b("f1", "full", None, "f1", now - 12 * day),
            b("i1", "incremental", Some("f1"), "f1", now - 8 * day),
            b("f2", "full", None, "f2", now - 5 * day),
        ];
        let rules = Rules {
            full: 1,
            diff: None,
            days: Some(7),
        };
        // Chains finished 8 and 5 days ago, a window of 7 days: the older
        // chain is where recovery to 7 days ago starts.
        assert!(ids(select_expired(&h, rules, now)).is_empty());
        let kept: Vec<&PhysicalBackupInfo> = h.iter().collect();
        assert_eq!(
            oldest_recoverable(&kept).map(|b| b.backup_id.as_str()),
            Some("f1")
        );
        // An older chain than that one is not needed.
        h.insert(0, b("f0", "full", None, "f0", now - 20 * day));
        assert_eq!(ids(select_expired(&h, rules, now)), ["f0"]);
        // With every backup inside the window, every chain stays, however
        // many fulls the count allows.
        let young = vec![
            b("f4", "full", None, "f4", now - 3 * day),
            b("f5", "full", None, "f5", now - 2 * day),
        ];
        assert!(ids(select_expired(&young, rules, now)).is_empty());
        // Without days, only the count applies.
        let count = Rules {
            days: None,
            ..rules
        };
        assert_eq!(ids(select_expired(&h, count, now)), ["i1", "f1", "f0"]);
    }

    /// What retention used to order WAL by: `log * 0x100 + seg`, right
    /// for 16 MiB segments only.
    fn old_position(name: &str) -> u64 {
        let log = u64::from_str_radix(&name[8..16], 16).unwrap();
        let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
        log * 0x100 + seg
    }

    fn listed(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    format!("wal/{}/{n}", n.get(..16).unwrap_or(n)),
                )
            })
            .collect()
    }

    #[test]
    fn one_mib_segments_are_ordered_by_their_real_number() {
        let mib = SegmentSize::new(1 << 20).unwrap();
        // A kept backup starts at segment 0x800 of log id 0; the segment
        // after 000000010000000000000FFF is 000000010000000100000000.
        let mut kept = PhysicalBackupInfo::for_tests("f", "full", None, "f", 1);
        kept.start_wal = "000000010000000000000800".into();
        kept.wal_segment_size = mib;
        let names = [
            "0000000100000000000007FF",
            "000000010000000000000800",
            "000000010000000000000FFF",
            "000000010000000100000000",
            "000000010000000100000001.partial",
            "000000010000000100000002.00000028.backup",
            "00000002.history",
        ];
        // The old order put 1/0 (256) before the backup's start (0x800), so
        // expiry would have deleted WAL the kept backup needs to replay.
        assert!(old_position("000000010000000100000000") < old_position(&kept.start_wal));
        assert!(
            old_position("000000010000000000000FFF") > old_position("000000010000000100000000")
        );
        let expired: Vec<String> = expired_of(mib, listed(&names), &[&kept])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(expired, ["0000000100000000000007FF"]);
        // Positions are the real segment numbers.
        assert_eq!(
            mib.position("000000010000000100000000").unwrap().segno,
            0x1000
        );
        assert_eq!(
            mib.position("000000010000000000000FFF").unwrap().segno,
            0xFFF
        );
    }

    #[test]
    fn expiry_keeps_what_it_cannot_place() {
        let sixty_four = SegmentSize::new(64 << 20).unwrap();
        let mut kept = PhysicalBackupInfo::for_tests("f", "full", None, "f", 1);
        kept.start_wal = "000000010000000100000000".into();
        kept.wal_segment_size = sixty_four;
        // 0/40 is no 64 MiB segment: kept, not guessed at.
        let names = [
            "00000001000000000000003F",
            "000000010000000000000040",
            "00000002000000000000003E",
            "junk",
        ];
        let expired: Vec<String> = expired_of(sixty_four, listed(&names), &[&kept])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        // Ordered by (timeline, segment).
        assert_eq!(
            expired,
            ["00000001000000000000003F", "00000002000000000000003E"]
        );
        assert!(expired_of(sixty_four, listed(&names), &[]).is_empty());
    }

    #[test]
    fn wal_runs_by_timeline() {
        let names: Vec<String> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000020000000000000002",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            wal_runs(&names),
            [
                (
                    "00000001".to_string(),
                    "000000010000000000000001".to_string(),
                    "000000010000000000000002".to_string(),
                    2
                ),
                (
                    "00000002".to_string(),
                    "000000020000000000000002".to_string(),
                    "000000020000000000000002".to_string(),
                    1
                )
            ]
        );
    }
}
