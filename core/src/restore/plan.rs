//! Restore planning: which backup, which WAL, which recovery settings, for
//! a recovery target, from the repository alone. `ark.restore_plan()` and
//! `pg_ark restore` (and its `--dry-run`) run this same code.
//!
//! # The rules
//!
//! - **Timelines.** The target timeline's history files (`N.history`, in
//!   the archive) give the path of timelines that leads to it, with the LSN
//!   where each was left. `latest` is what PostgreSQL takes for it: the
//!   highest timeline reached by consecutive history files. A segment
//!   number is read from the newest timeline of the path that began at or
//!   before it, as recovery reads it (`XLogFileReadAnyTLI`).
//! - **Backups.** A complete backup can serve if it lies on the path: on a
//!   timeline of it, started after that timeline began and stopped before
//!   it was left. The newest that works is chosen.
//! - **Consistency.** Recovery must reach the backup's stop LSN before the
//!   point it stops at (otherwise PostgreSQL ends with "requested recovery
//!   stop point is before consistent recovery point"); a target before
//!   that falls to an older backup.
//! - **Where recovery stops** (recovery_target_inclusive on, its default):
//!   before the first commit or abort after the backup's start whose time is
//!   after a target time; after the commit or abort of a target
//!   transaction; after a named restore point; at a target LSN. These are
//!   found by reading the archived WAL (`wal_scan`), so a target that no
//!   record reaches is refused before anything is restored (PostgreSQL 13+
//!   would otherwise stop with "recovery ended before configured recovery
//!   target was reached").
//! - **WAL.** Every segment from the backup's start to the stop point must
//!   be in the repository; the first missing one is named.
use super::wal_scan::{self, Event, EventKind, ScanEnd};
use crate::physical::{self, increment::parse_lsn, PhysicalBackupInfo};
use crate::repo::{layout, ClusterRepo};
use crate::wal::{self, SegmentSize, WalKind};
use crate::Error;
use std::collections::{BTreeMap, BTreeSet};

mod commands;
mod target;
pub use commands::*;
pub use target::*;

/// What to plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub target: Target,
    pub timeline: TimelineChoice,
    /// Use this backup (its chain) and no other.
    pub backup: Option<String>,
}

/// One timeline of a path: its id, the LSN it began at, the LSN where the
/// next timeline of the path branched off it (`None`: the last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub timeline: u32,
    pub begin: u64,
    pub end: Option<u64>,
}

/// The archive's contents, as far as planning needs them.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    /// Segment file names.
    pub segments: BTreeSet<String>,
    /// Each timeline's history (`N.history`): the timelines before it, each
    /// with the LSN where it was left.
    pub histories: BTreeMap<u32, Vec<(u32, u64)>>,
    /// The cluster's WAL segment size, as its repository entry records it.
    pub segment_size: SegmentSize,
}

/// A timeline history file's entries: `parent<TAB>switchpoint<TAB>reason`.
pub fn parse_history(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            let lsn = parse_lsn(f.next()?)?;
            Some((tli, lsn))
        })
        .collect()
}

impl Archive {
    /// List the cluster's WAL and read its history files.
    pub fn load(cluster: &ClusterRepo) -> Result<Archive, Error> {
        let base = cluster.key(layout::WAL);
        let mut a = Archive {
            segment_size: cluster.segment_size(),
            ..Archive::default()
        };
        let mut history_names = Vec::new();
        for o in cluster.storage().list(&base)? {
            let name = o.key.rsplit('/').next().unwrap_or_default();
            match wal::classify(name) {
                Ok(WalKind::Segment) => {
                    a.segments.insert(name.to_string());
                }
                Ok(WalKind::TimelineHistory) => history_names.push(name.to_string()),
                _ => {}
            }
        }
        for name in history_names {
            let Ok(tli) = u32::from_str_radix(&name[..8], 16) else {
                continue;
            };
            if let Some(data) = cluster.get_wal(&name)? {
                a.histories
                    .insert(tli, parse_history(&String::from_utf8_lossy(&data)));
            }
        }
        Ok(a)
    }

    /// The timelines that lead to `tli`, oldest first.
    pub fn path(&self, tli: u32) -> Vec<Step> {
        let mut out = Vec::new();
        let mut begin = 0;
        for &(t, end) in self.histories.get(&tli).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(Step {
                timeline: t,
                begin,
                end: Some(end),
            });
            begin = end;
        }
        out.push(Step {
            timeline: tli,
            begin,
            end: None,
        });
        out
    }

    /// PostgreSQL's `latest`: from timeline 1 (or the lowest one named),
    /// up while the next timeline's history file is in the archive.
    pub fn latest_timeline(&self, from: u32) -> u32 {
        let mut t = from.max(1);
        while self.histories.contains_key(&(t + 1)) {
            t += 1;
        }
        t
    }

    pub fn timeline_exists(&self, tli: u32) -> bool {
        tli == 1
            || self.histories.contains_key(&tli)
            || self
                .segments
                .iter()
                .any(|s| u32::from_str_radix(&s[..8], 16).ok() == Some(tli))
    }
}

/// The plan: what to fetch, what to set, where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The chain, full first, the backup to restore last.
    pub chain: Vec<PhysicalBackupInfo>,
    /// The timeline recovery follows, and its path.
    pub timeline: u32,
    pub path: Vec<Step>,
    pub target: Target,
    /// The segments recovery reads (first and last, and how many).
    pub first_segment: String,
    pub last_segment: String,
    pub segments: u64,
    /// Where recovery stops, in words.
    pub stop: String,
    /// The recovery settings (besides restore_command).
    pub settings: Vec<(String, String)>,
    /// Things the user should know.
    pub notes: Vec<String>,
}

impl Plan {
    pub fn backup(&self) -> &PhysicalBackupInfo {
        // A plan always has its backup (see `plan`).
        &self.chain[self.chain.len() - 1]
    }
}

fn impossible(reason: String, hint: &str) -> Error {
    Error::RestoreTarget {
        reason,
        hint: hint.to_string(),
    }
}

fn lsn_of(b: &PhysicalBackupInfo, field: &str, value: &str) -> Result<u64, Error> {
    parse_lsn(value).ok_or_else(|| Error::BadMetadata {
        location: String::new(),
        key: format!(
            "{}/{}",
            layout::backup(&b.backup_id),
            crate::physical::INFO_NAME
        ),
        reason: format!("its {field} \"{value}\" is not an LSN"),
    })
}

/// Which timeline holds segment `segno` for recovery along `path`.
fn timeline_for(size: SegmentSize, path: &[Step], segno: u64) -> u32 {
    path.iter()
        .rev()
        .find(|s| size.segno_of(s.begin) <= segno)
        .map(|s| s.timeline)
        .unwrap_or(path[0].timeline)
}

/// How a candidate backup fares against the target.
enum Verdict {
    Ok {
        last_segno: u64,
        stop: String,
    },
    /// The target lies before this backup's consistent point.
    TooEarly,
    /// Not usable, for this reason (and hint).
    No(String, &'static str),
}

/// Plan a restore of `cluster` for `req`, with `recovery_target_action`
/// (promote, pause or shutdown).
pub fn plan(
    cluster: &ClusterRepo,
    req: &Request,
    recovery_target_action: &str,
) -> Result<Plan, Error> {
    plan_with(cluster, req, recovery_target_action, &|| {})
}

/// [`plan`], calling `between` before each WAL segment it reads (the
/// server's SQL function checks for interrupts there).
pub fn plan_with(
    cluster: &ClusterRepo,
    req: &Request,
    recovery_target_action: &str,
    between: &dyn Fn(),
) -> Result<Plan, Error> {
    let listing = physical::list_all_backups(cluster)?;
    // A backup named that a newer pg_ark wrote: say so, not "not found".
    if let Some((_, e)) = listing
        .newer
        .into_iter()
        .find(|(id, _)| req.backup.as_deref() == Some(id.as_str()))
    {
        return Err(e);
    }
    let backups = listing.backups;
    let archive = Archive::load(cluster)?;
    let mut get = |name: &str| {
        between();
        cluster.get_wal(name)
    };
    plan_from(
        &backups,
        &archive,
        req,
        recovery_target_action,
        &mut get,
        || incomplete_backup(cluster, req.backup.as_deref()),
    )
}

/// Whether `id` has objects but no descriptor (an interrupted or running
/// backup).
fn incomplete_backup(cluster: &ClusterRepo, id: Option<&str>) -> Result<bool, Error> {
    let Some(id) = id else { return Ok(false) };
    physical::check_backup_id(id)?;
    let prefix = format!("{}/", physical::backup_prefix(cluster, id));
    Ok(!cluster.storage().list(&prefix)?.is_empty())
}

/// A backup that lies on the history of the timeline recovery follows.
struct Candidate<'a> {
    backup: &'a PhysicalBackupInfo,
    start: u64,
    stop: u64,
    /// The timeline recovery follows from it, and that timeline's history.
    tli: u32,
    path: Vec<Step>,
}

impl Candidate<'_> {
    /// The name of segment `segno` along this candidate's path.
    fn segment(&self, size: SegmentSize, segno: u64) -> String {
        size.name(timeline_for(size, &self.path, segno), segno)
    }
}

/// How far the archive reaches from a candidate's start.
struct Reach {
    first_seg: u64,
    stop_seg: u64,
    /// The last segment of the contiguous run from the start, if any.
    end_seg: Option<u64>,
    /// The first segment missing after that run.
    missing: String,
    /// Whether segments after the missing one exist (a gap, not the end).
    later_exist: bool,
    /// The name of the run's last segment.
    last: String,
}

impl Reach {
    fn of(archive: &Archive, c: &Candidate) -> Reach {
        let size = archive.segment_size;
        let present = |segno: u64| archive.segments.contains(&c.segment(size, segno));
        let first_seg = size.segno_of(c.start);
        let mut end_seg = None;
        let mut s = first_seg;
        while present(s) {
            end_seg = Some(s);
            s += 1;
        }
        let later_exist = archive.segments.iter().any(|n| {
            size.parse(n)
                .is_ok_and(|p| p.segno > s && timeline_for(size, &c.path, p.segno) == p.timeline)
        });
        let stop_seg = size.segno_of(c.stop);
        Reach {
            first_seg,
            stop_seg,
            end_seg,
            missing: c.segment(size, s),
            later_exist,
            last: c.segment(size, end_seg.unwrap_or(stop_seg)),
        }
    }

    /// Recovery cannot reach `what`: a gap, or the archive's end.
    fn beyond(&self, what: String, tli: u32) -> Verdict {
        if self.later_exist {
            Verdict::No(
                format!(
                    "WAL gap: segment {} is not in the repository, so recovery cannot reach {what}",
                    self.missing
                ),
                "Recover to a point before the gap, or restore a backup taken after it.",
            )
        } else {
            Verdict::No(
                format!(
                    "{what} is beyond the last archived WAL (the archive of timeline {tli} ends with segment {})",
                    self.last
                ),
                "Wait until the WAL is archived (pg_switch_wal() closes the current segment), or choose an earlier target.",
            )
        }
    }
}

/// What the search has learnt from the candidates judged so far.
#[derive(Default)]
struct Search {
    /// The newest candidate's reason for not serving, and its hint.
    first_reason: Option<(String, &'static str)>,
    /// Some candidate becomes consistent only after the target.
    too_early: bool,
    /// The target was found in the WAL, but before some candidate's
    /// consistent point (or, for a time, before its start).
    found_any: bool,
    /// Lowest LSN from which the archive was read to its end with no match,
    /// and on which timeline.
    searched_from: Option<(u32, u64)>,
    /// The oldest candidate that becomes consistent: id, LSN, finish time.
    earliest_consistent: Option<(String, u64, String)>,
}

impl Search {
    fn reason(&mut self, reason: String, hint: &'static str) {
        self.first_reason.get_or_insert((reason, hint));
    }
}

/// [`plan`] over loaded contents: `backups` oldest first.
pub fn plan_from(
    backups: &[PhysicalBackupInfo],
    archive: &Archive,
    req: &Request,
    recovery_target_action: &str,
    get: &mut wal_scan::GetSegment<'_>,
    incomplete: impl FnOnce() -> Result<bool, Error>,
) -> Result<Plan, Error> {
    check_request(req, recovery_target_action)?;
    let pool = named_backups(backups, req, incomplete)?;
    let candidates = candidates(&pool, archive, target_timeline(backups, archive, req)?)?;
    let size = archive.segment_size;
    let mut search = Search::default();
    for c in &candidates {
        let b = c.backup;
        if b.wal_segment_size != size {
            search.reason(
                format!(
                    "backup \"{}\" records wal_segment_size {}, but its repository entry holds WAL of {size}",
                    b.backup_id, b.wal_segment_size
                ),
                "Each repository entry holds one cluster's WAL; restore this backup from the repository it was taken into.",
            );
            continue;
        }
        let reach = Reach::of(archive, c);
        let Some(end_seg) = reach.end_seg.filter(|e| *e >= reach.stop_seg) else {
            search.reason(
                format!(
                    "WAL gap: backup \"{}\" needs segment {} to become consistent, and it is not in the repository",
                    b.backup_id, reach.missing
                ),
                "Check the archiver (pg_stat_archiver, ark.status()); take a new backup once WAL archives again.",
            );
            continue;
        };
        search.earliest_consistent = Some((b.backup_id.clone(), c.stop, b.finished_at.clone()));
        let verdict = match &req.target {
            Target::Latest if reach.later_exist => {
                reach.beyond("the latest archived WAL".into(), c.tli)
            }
            Target::Latest => Verdict::Ok {
                last_segno: end_seg,
                stop: format!("at the end of the archived WAL, segment {}", reach.last),
            },
            Target::Immediate => Verdict::Ok {
                last_segno: reach.stop_seg,
                stop: format!(
                    "as soon as the backup is consistent, at LSN {}",
                    format_lsn(c.stop)
                ),
            },
            Target::Lsn(l) => lsn_verdict(size, c, &reach, end_seg, *l, get)?,
            Target::Time(_) | Target::Xid(_) | Target::Name(_) => {
                event_verdict(size, c, &reach, &req.target, &mut search, get)?
            }
        };
        match verdict {
            Verdict::TooEarly => search.too_early = true,
            Verdict::No(r, h) => search.reason(r, h),
            Verdict::Ok { last_segno, stop } => {
                return Ok(finish(
                    size,
                    backups,
                    c,
                    reach.first_seg,
                    last_segno,
                    stop,
                    req,
                    recovery_target_action,
                ));
            }
        }
    }
    Err(no_plan(search, &req.target))
}

/// The request's own checks, before any backup is looked at.
fn check_request(req: &Request, recovery_target_action: &str) -> Result<(), Error> {
    if !matches!(recovery_target_action, "promote" | "pause" | "shutdown") {
        return Err(Error::InvalidSetting {
            name: "target action",
            value: recovery_target_action.into(),
            reason: "use promote, pause or shutdown".into(),
        });
    }
    if let Target::Name(n) = &req.target {
        if n.is_empty() || n.len() >= 64 {
            return Err(Error::InvalidSetting {
                name: "target name",
                value: n.clone(),
                reason: "a restore point's name has 1 to 63 bytes".into(),
            });
        }
    }
    Ok(())
}

/// The complete backups the request allows: the one it names, or all.
fn named_backups<'a>(
    backups: &'a [PhysicalBackupInfo],
    req: &Request,
    incomplete: impl FnOnce() -> Result<bool, Error>,
) -> Result<Vec<&'a PhysicalBackupInfo>, Error> {
    let named = |b: &&PhysicalBackupInfo| req.backup.as_ref().is_none_or(|id| &b.backup_id == id);
    let pool: Vec<&PhysicalBackupInfo> = backups.iter().filter(named).collect();
    if !pool.is_empty() {
        return Ok(pool);
    }
    Err(match &req.backup {
        Some(id) if incomplete()? => impossible(
            format!("backup \"{id}\" is not complete: it has no descriptor (it was interrupted, or it is still running)"),
            "Choose a complete backup: see ark.backups or pg_ark info.",
        ),
        Some(id) => impossible(
            format!("backup \"{id}\" is not in the repository"),
            "Choose a complete backup: see ark.backups or pg_ark info.",
        ),
        None => impossible(
            "the repository has no complete physical backup of this cluster".into(),
            "Take one with SELECT ark.backup('full').",
        ),
    })
}

/// The timeline recovery follows; `None` for `current` (each backup's own).
fn target_timeline(
    backups: &[PhysicalBackupInfo],
    archive: &Archive,
    req: &Request,
) -> Result<Option<u32>, Error> {
    match req.timeline {
        TimelineChoice::Latest => {
            let lowest = backups.iter().map(|b| b.timeline).min().unwrap_or(1);
            Ok(Some(archive.latest_timeline(lowest)))
        }
        TimelineChoice::Id(n) => {
            if archive.timeline_exists(n) || backups.iter().any(|b| b.timeline == n) {
                return Ok(Some(n));
            }
            let mut known: Vec<u32> = archive.histories.keys().copied().collect();
            known.insert(0, 1);
            Err(impossible(
                format!(
                    "timeline {n} does not exist in the repository (its timelines: {})",
                    known
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "Use target_timeline 'latest', 'current' or one of the timelines listed.",
            ))
        }
        TimelineChoice::Current => Ok(None),
    }
}

/// The backups on the history of the timeline recovery follows, the
/// latest stop first.
fn candidates<'a>(
    pool: &[&'a PhysicalBackupInfo],
    archive: &Archive,
    fixed_tli: Option<u32>,
) -> Result<Vec<Candidate<'a>>, Error> {
    let mut candidates = Vec::new();
    let mut off_path = Vec::new();
    for b in pool.iter().rev() {
        let start = lsn_of(b, "start_lsn", &b.start_lsn)?;
        let stop = lsn_of(b, "stop_lsn", &b.stop_lsn)?;
        let tli = fixed_tli.unwrap_or(b.timeline);
        let path = archive.path(tli);
        let on = path.iter().any(|s| {
            s.timeline == b.timeline && s.begin <= start && s.end.is_none_or(|e| stop <= e)
        });
        if on {
            candidates.push(Candidate {
                backup: b,
                start,
                stop,
                tli,
                path,
            });
        } else {
            off_path.push(b.backup_id.clone());
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.stop));
    if candidates.is_empty() {
        return Err(impossible(
            format!(
                "no complete backup lies on the history of timeline {}: {} left it or came after it branched off",
                fixed_tli.unwrap_or(0),
                off_path.join(", ")
            ),
            "Choose the timeline of a backup with target_timeline, or take a new backup.",
        ));
    }
    Ok(candidates)
}

/// A target LSN: recovery stops after the first record that starts at or
/// after it, so that record must be in the archive whole.
fn lsn_verdict(
    size: SegmentSize,
    c: &Candidate,
    reach: &Reach,
    end_seg: u64,
    l: u64,
    get: &mut wal_scan::GetSegment<'_>,
) -> Result<Verdict, Error> {
    if l < c.stop {
        return Ok(Verdict::TooEarly);
    }
    if size.segno_of(l) > end_seg {
        return Ok(reach.beyond(format!("LSN {}", format_lsn(l)), c.tli));
    }
    let name_of = |segno: u64| Some(c.segment(size, segno));
    let end = wal_scan::scan(size, c.start, Some(l), &name_of, &mut *get, &mut |_| false)?;
    let next = match end {
        ScanEnd::Reached { at } => wal_scan::record_at(size, at, &name_of, &mut *get)?
            .ok()
            .map(|next| (at, next)),
        _ => None,
    };
    Ok(match next {
        Some((at, next)) => Verdict::Ok {
            last_segno: size.segno_before(next),
            stop: format!(
                "at LSN {}, after the record that starts at {}",
                format_lsn(l),
                format_lsn(at)
            ),
        },
        None => reach.beyond(
            format!(
                "LSN {} (recovery stops after the first record at or after it)",
                format_lsn(l)
            ),
            c.tli,
        ),
    })
}

/// A target found by reading the WAL: a time, a transaction or a restore
/// point. Only a scan along the same path (with `current`, each backup has
/// its own) says what lies beyond; an older backup reads only what lies
/// before what a newer one read.
fn event_verdict(
    size: SegmentSize,
    c: &Candidate,
    reach: &Reach,
    target: &Target,
    search: &mut Search,
    get: &mut wal_scan::GetSegment<'_>,
) -> Result<Verdict, Error> {
    let until = search
        .searched_from
        .filter(|(t, f)| *t == c.tli && *f > c.start)
        .map(|(_, f)| f);
    let mut found: Option<Event> = None;
    let name_of = |segno: u64| Some(c.segment(size, segno));
    let end = wal_scan::scan(size, c.start, until, &name_of, &mut *get, &mut |e| {
        let hit = match (target, &e.kind) {
            (Target::Time(t), EventKind::Commit { .. } | EventKind::Abort { .. }) => e.time > *t,
            (Target::Xid(x), EventKind::Commit { xid } | EventKind::Abort { xid }) => {
                u64::from(*xid) == (x & 0xFFFF_FFFF)
            }
            (Target::Name(n), EventKind::RestorePoint { name }) => name == n,
            _ => false,
        };
        if hit {
            found = Some(e.clone());
        }
        hit
    })?;
    // Commits before the backup's start are in its data: a time before the
    // start needs an older backup.
    let b = c.backup;
    let started = b
        .start_time_us
        .unwrap_or(b.finished_epoch.saturating_mul(1_000_000));
    let before_start = matches!(target, Target::Time(t) if *t < started);
    Ok(match found {
        Some(e) if before_start || e.lsn < c.stop => {
            search.found_any = true;
            Verdict::TooEarly
        }
        Some(e) => Verdict::Ok {
            last_segno: size.segno_before(e.end),
            stop: describe_stop(target, &e),
        },
        None => {
            let same_path = search.searched_from.is_some_and(|(t, _)| t == c.tli);
            if !same_path || matches!(end, ScanEnd::Reached { .. }) {
                search.searched_from = Some((c.tli, c.start));
            }
            reach.beyond(no_target(target), c.tli)
        }
    })
}

/// Why no candidate serves. A target found in the WAL, but before every
/// backup's consistent point, is too early; otherwise the newest backup's
/// reason.
fn no_plan(search: Search, target: &Target) -> Error {
    let scanned = matches!(target, Target::Time(_) | Target::Xid(_) | Target::Name(_));
    let too_early = search.too_early && (search.found_any || !scanned);
    if let Some((r, h)) = search.first_reason.filter(|_| !too_early) {
        return impossible(r, h);
    }
    let (id, lsn, at) = search.earliest_consistent.unwrap_or_default();
    impossible(
        format!(
            "the target is before the oldest backup that could serve: backup \"{id}\" becomes consistent at LSN {} (it finished at {at})",
            format_lsn(lsn)
        ),
        "Choose a later target; older states of the cluster are not in the repository.",
    )
}

/// What recovery cannot reach when the target was not found.
fn no_target(target: &Target) -> String {
    match target {
        Target::Time(t) => format!(
            "the target time {} (no transaction ended after it in the archived WAL)",
            format_time(*t)
        ),
        Target::Xid(x) => format!("the end of transaction {x}"),
        Target::Name(n) => format!("the restore point \"{n}\""),
        _ => "the target".into(),
    }
}

fn describe_stop(target: &Target, e: &Event) -> String {
    let at = format!("(LSN {}, {})", format_lsn(e.lsn), format_time(e.time));
    match (target, &e.kind) {
        (Target::Time(t), EventKind::Commit { xid }) => format!(
            "before the commit of transaction {xid} {at}, the first after {}",
            format_time(*t)
        ),
        (Target::Time(t), EventKind::Abort { xid }) => format!(
            "before the abort of transaction {xid} {at}, the first transaction to end after {}",
            format_time(*t)
        ),
        (_, EventKind::Commit { xid }) => format!("after the commit of transaction {xid} {at}"),
        (_, EventKind::Abort { xid }) => format!(
            "after the abort of transaction {xid} {at}: its changes will not be in the restored cluster"
        ),
        (_, EventKind::RestorePoint { name }) => format!("after the restore point \"{name}\" {at}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    size: SegmentSize,
    backups: &[PhysicalBackupInfo],
    c: &Candidate,
    first_seg: u64,
    last_seg: u64,
    stop: String,
    req: &Request,
    action: &str,
) -> Plan {
    let (tli, path) = (c.tli, &c.path);
    // The chain: follow parents (all complete: the backup list has them).
    let mut chain = vec![c.backup.clone()];
    while let Some(p) = chain.last().and_then(|c| c.parent.clone()) {
        match backups.iter().find(|x| x.backup_id == p) {
            Some(x) if chain.len() < 10_000 => chain.push(x.clone()),
            _ => break,
        }
    }
    chain.reverse();
    let mut notes = Vec::new();
    if chain.first().is_some_and(|f| f.parent.is_some()) {
        notes.push(format!(
            "the chain is broken: backup \"{}\" relies on a backup that is not complete; the restore will fail",
            chain[0].backup_id
        ));
    }
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let chosen: Option<(&str, String)> = match &req.target {
        Target::Latest => None,
        Target::Immediate => Some(("recovery_target", quote("immediate"))),
        Target::Time(t) => Some(("recovery_target_time", quote(&format_time(*t)))),
        Target::Lsn(l) => Some(("recovery_target_lsn", quote(&format_lsn(*l)))),
        Target::Xid(x) => Some(("recovery_target_xid", quote(&(x & 0xFFFF_FFFF).to_string()))),
        Target::Name(n) => Some(("recovery_target_name", quote(n))),
    };
    // Every other target blank and inclusive on, here in
    // postgresql.auto.conf, whatever the restored postgresql.conf says: the
    // plan's stop point assumes exactly these. The blanks come first:
    // PostgreSQL refuses a blank assigned after a target is set ("multiple
    // recovery targets specified").
    let mut settings: Vec<(String, String)> = Vec::new();
    for other in [
        "recovery_target",
        "recovery_target_time",
        "recovery_target_lsn",
        "recovery_target_xid",
        "recovery_target_name",
    ] {
        if chosen.as_ref().is_none_or(|(k, _)| *k != other) {
            settings.push((other.into(), "''".into()));
        }
    }
    if let Some((k, v)) = chosen {
        settings.push((k.into(), v));
    }
    settings.push(("recovery_target_inclusive".into(), quote("on")));
    settings.push(("recovery_target_timeline".into(), quote(&tli.to_string())));
    if req.target != Target::Latest {
        settings.push(("recovery_target_action".into(), quote(action)));
    }
    Plan {
        chain,
        timeline: tli,
        path: path.to_vec(),
        target: req.target.clone(),
        first_segment: size.name(timeline_for(size, path, first_seg), first_seg),
        last_segment: size.name(timeline_for(size, path, last_seg), last_seg),
        segments: last_seg.saturating_sub(first_seg) + 1,
        stop,
        settings,
        notes,
    }
}

#[cfg(test)]
mod tests;
