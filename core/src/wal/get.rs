//! Fetching WAL for recovery, with prefetch.
//!
//! `restore_command` runs once per file and recovery waits for each. When
//! the file is not already local, `fetch` gets it *and the next segments*
//! from the repository in parallel, delivers the one asked for, and keeps the
//! others, verified, in a spool directory; the next calls are then served
//! from the spool without a round trip. So replay waits on the network once
//! per `depth` segments instead of once per segment. The depth adapts
//! ([`adaptive_depth`]): it doubles each time recovery has used up a whole
//! batch and asks for the next segment, so a long replay from S3 soon
//! fetches many segments per round trip.
//!
//! The spool (`pg_wal/pg_ark_prefetch` by default) holds only verified,
//! decompressed files, each written under a temporary name and renamed, so a
//! crash never leaves a partial file under a WAL name. Files older than the
//! one asked for are removed: recovery never asks for them again.
use crate::repo::ClusterRepo;
use crate::wal::{self, SegmentSize, WalKind};
use crate::Error;
use std::path::{Path, PathBuf};

/// What `fetch` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Delivered from the repository; `prefetched` more are spooled.
    FromRepository { prefetched: usize },
    /// Delivered from the spool.
    FromSpool,
    /// Not in the repository: the end of the archive.
    Missing,
}

fn write_atomically(dest: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = dest.with_extension("pg_ark-tmp");
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, dest))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::ReadFile {
        path: path.display().to_string(),
        source,
    }
}

/// Deliver WAL segment `name` to `dest` from `spool` if it is there (spooled
/// files were verified when fetched). Needs no repository at all, so a
/// restore_command served from the spool makes no round trip. Also removes
/// spooled segments older than `name`, which recovery never asks for again.
/// Returns whether it delivered the file.
pub fn take_spooled(name: &str, dest: &Path, spool: &Path) -> Result<bool, Error> {
    if wal::classify(name)? != WalKind::Segment {
        return Ok(false);
    }
    clean_spool(spool, name);
    let spooled = spool.join(name);
    if !spooled.is_file() {
        return Ok(false);
    }
    // rename if on the same file system, else copy
    if std::fs::rename(&spooled, dest).is_err() {
        let data = std::fs::read(&spooled).map_err(|e| io(&spooled, e))?;
        write_atomically(dest, &data).map_err(|e| io(dest, e))?;
        let _ = std::fs::remove_file(&spooled);
    }
    Ok(true)
}

/// How many segments to fetch at once: it starts at `initial` and doubles,
/// up to `max`, each time recovery has used up a whole batch and comes back
/// for the very next segment (it replays faster than one round trip per
/// batch); it falls back to `initial` when recovery asks for anything else.
/// The state is the spool's `pg_ark_depth` file; segments are of `size`.
pub fn adaptive_depth(
    spool: &Path,
    name: &str,
    size: SegmentSize,
    initial: usize,
    max: usize,
) -> usize {
    let initial = initial.max(1);
    let max = max.max(initial);
    let state = std::fs::read_to_string(spool.join(DEPTH_FILE)).unwrap_or_default();
    let mut it = state.split_whitespace();
    let (Some(depth), Some(last)) = (it.next().and_then(|d| d.parse::<usize>().ok()), it.next())
    else {
        return initial;
    };
    let follows = size.next(last).is_ok_and(|n| n == name);
    if follows {
        depth.saturating_mul(2).clamp(initial, max)
    } else {
        initial
    }
}

const DEPTH_FILE: &str = "pg_ark_depth";

/// Segments fetched at once by the threads of one batch.
const FETCH_THREADS: usize = 8;

/// Deliver WAL file `name` to `dest`, from `spool` if it is there, else from
/// the repository together with up to `depth - 1` following segments
/// (fetched by up to 8 threads at once), named with the entry's segment
/// size. A segment name impossible for that size is refused.
pub fn fetch(
    cluster: &ClusterRepo,
    name: &str,
    dest: &Path,
    spool: &Path,
    depth: usize,
) -> Result<Fetched, Error> {
    let is_segment = wal::classify(name)? == WalKind::Segment;
    if is_segment {
        cluster.segment_size().parse(name)?;
    }
    if take_spooled(name, dest, spool)? {
        return Ok(Fetched::FromSpool);
    }
    let Some(data) = cluster.get_wal(name)? else {
        return Ok(Fetched::Missing);
    };
    if !is_segment || depth <= 1 {
        write_atomically(dest, &data).map_err(|e| io(dest, e))?;
        return Ok(Fetched::FromRepository { prefetched: 0 });
    }
    // The names that follow, then fetch them in parallel while this one is
    // written out.
    let mut next = Vec::new();
    let mut cur = name.to_string();
    for _ in 1..depth {
        let n = cluster.segment_size().next(&cur)?;
        cur = n.clone();
        if !spool.join(&n).is_file() {
            next.push(n);
        }
    }
    write_atomically(dest, &data).map_err(|e| io(dest, e))?;
    if next.is_empty() {
        return Ok(Fetched::FromRepository { prefetched: 0 });
    }
    std::fs::create_dir_all(spool).map_err(|e| io(spool, e))?;
    let _ = write_atomically(
        &spool.join(DEPTH_FILE),
        format!("{depth} {}\n", next.last().map_or(name, String::as_str)).as_bytes(),
    );
    let at = std::sync::atomic::AtomicUsize::new(0);
    let fetched = std::sync::atomic::AtomicUsize::new(0);
    crate::threads::with_signals_blocked(|| {
        std::thread::scope(|s| {
            for _ in 0..FETCH_THREADS.min(next.len()) {
                s.spawn(|| loop {
                    let i = at.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(n) = next.get(i) else { return };
                    // A prefetch that fails is not an error of this call:
                    // the file is fetched (and its error reported) when
                    // recovery asks for it.
                    if let Ok(Some(d)) = cluster.get_wal(n) {
                        let p = spool.join(n);
                        if write_atomically(&p, &d).is_ok() {
                            fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        })
    });
    Ok(Fetched::FromRepository {
        prefetched: fetched.into_inner(),
    })
}

/// Remove spooled segments that sort before `name`.
fn clean_spool(spool: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    for e in entries.flatten() {
        let f = e.file_name();
        let f = f.to_string_lossy();
        let stale_tmp = f.ends_with(".pg_ark-tmp");
        if stale_tmp || (wal::classify(&f).is_ok_and(|k| k == WalKind::Segment) && *f < *name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The default spool for a data directory.
pub fn default_spool(pgdata: &Path) -> PathBuf {
    pgdata.join("pg_wal/pg_ark_prefetch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefetch_depth_doubles_while_recovery_uses_up_whole_batches() {
        let d = tempfile::tempdir().unwrap();
        let spool = d.path();
        let size = SegmentSize::DEFAULT;
        assert_eq!(
            adaptive_depth(spool, "000000010000000000000010", size, 4, 32),
            4
        );
        std::fs::write(spool.join(DEPTH_FILE), "4 000000010000000000000013\n").unwrap();
        assert_eq!(
            adaptive_depth(spool, "000000010000000000000014", size, 4, 32),
            8
        );
        std::fs::write(spool.join(DEPTH_FILE), "32 000000010000000000000013\n").unwrap();
        assert_eq!(
            adaptive_depth(spool, "000000010000000000000014", size, 4, 32),
            32
        );
        // Anything but the next segment starts over.
        assert_eq!(
            adaptive_depth(spool, "000000010000000000000020", size, 4, 32),
            4
        );
        // A fixed depth.
        assert_eq!(
            adaptive_depth(spool, "000000010000000000000014", size, 4, 4),
            4
        );
    }
    use crate::repo::compress::Compression;
    use crate::repo::Repository;
    use crate::storage::local::LocalStorage;
    use std::sync::Arc;

    #[test]
    fn next_segment_names() {
        // With 1 MiB segments, FF is followed by 100 and FFF by the next
        // log id: the depth doubles across both.
        let d = tempfile::tempdir().unwrap();
        let mib = SegmentSize::new(1 << 20).unwrap();
        for (last, next) in [
            ("0000000100000000000000FF", "000000010000000000000100"),
            ("000000010000000000000FFF", "000000010000000100000000"),
        ] {
            std::fs::write(d.path().join(DEPTH_FILE), format!("4 {last}\n")).unwrap();
            assert_eq!(adaptive_depth(d.path(), next, mib, 4, 32), 8, "{next}");
        }
        let sixteen = SegmentSize::DEFAULT;
        std::fs::write(d.path().join(DEPTH_FILE), "4 0000000100000000000000FF\n").unwrap();
        assert_eq!(
            adaptive_depth(d.path(), "000000010000000100000000", sixteen, 4, 32),
            8
        );
        assert_eq!(
            adaptive_depth(d.path(), "000000010000000000000100", sixteen, 4, 32),
            4
        );
    }

    #[test]
    fn prefetched_segments_are_served_from_the_spool() {
        let repo_dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = Arc::new(
            Repository::open(Box::new(LocalStorage::open(repo_dir.path()).unwrap()), true).unwrap(),
        );
        let mib = SegmentSize::new(1 << 20).unwrap(); // 4096 segments per log id
        let c = repo.attach(42, 17, mib).unwrap();
        // Across the end of log id 0: ...FFF is followed by 1/0.
        let names: Vec<String> = (0xFFD..0x1003).map(|n| mib.name(1, n)).collect();
        assert_eq!(names[3], "000000010000000100000000");
        for (i, n) in names.iter().enumerate() {
            let mut seg = vec![i as u8; mib.bytes() as usize];
            seg[2..4].copy_from_slice(&2u16.to_le_bytes());
            seg[24..32].copy_from_slice(&42u64.to_le_bytes());
            seg[32..36].copy_from_slice(&(1u32 << 20).to_le_bytes());
            c.push_wal(n, &seg, Compression::Zstd, 1).unwrap();
        }
        let spool = work.path().join("spool");
        let dest = work.path().join("RECOVERYXLOG");
        assert_eq!(
            fetch(&c, &names[0], &dest, &spool, 4).unwrap(),
            Fetched::FromRepository { prefetched: 3 }
        );
        assert_eq!(std::fs::read(&dest).unwrap()[100], 0);
        // Remove them from the repository: the spool must serve them.
        for n in &names[1..4] {
            repo.storage().delete(&c.wal_key(n).unwrap()).unwrap();
        }
        for (i, n) in names.iter().enumerate().take(4).skip(1) {
            assert_eq!(
                fetch(&c, n, &dest, &spool, 4).unwrap(),
                Fetched::FromSpool,
                "{n}"
            );
            assert_eq!(std::fs::read(&dest).unwrap()[100], i as u8);
        }
        // The fifth comes from the repository again, prefetching the sixth.
        assert_eq!(
            fetch(&c, &names[4], &dest, &spool, 4).unwrap(),
            Fetched::FromRepository { prefetched: 1 }
        );
        assert_eq!(
            fetch(&c, &names[5], &dest, &spool, 4).unwrap(),
            Fetched::FromSpool
        );
        assert_eq!(
            fetch(&c, &mib.name(1, 0x1003), &dest, &spool, 4).unwrap(),
            Fetched::Missing
        );
        // A name no 1 MiB cluster has is refused, not taken as missing.
        assert!(matches!(
            fetch(&c, "000000010000000000001000", &dest, &spool, 4),
            Err(Error::SegmentNameNotOfSize { .. })
        ));
        assert_eq!(
            std::fs::read_dir(&spool)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name() != DEPTH_FILE)
                .count(),
            0,
            "nothing stale is left in the spool"
        );
    }
}
