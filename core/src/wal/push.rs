//! Pushing WAL ahead of the archiver.
//!
//! PostgreSQL's archiver offers one file at a time and waits for each. With
//! compression and a network in the way that caps throughput at one core and
//! one round trip per segment. `PushAhead` keeps a few worker threads busy
//! with the *next* files waiting in `pg_wal/archive_status` (`.ready`), so
//! that when the archiver offers them they are usually stored already.
//!
//! Safety at any moment of a crash or stop:
//! - a file is reported archived only when *its own* push finished without
//!   error (its result is consumed exactly once, when the archiver asks);
//! - a file pushed ahead but never asked for (the server stopped) is offered
//!   again after restart, and an identical re-push is a success;
//! - `.ready` files are immutable WAL, so pushing one early stores the same
//!   bytes as pushing it when asked.
//!
//! Threads: workers are created with every signal blocked and only call the
//! pgrx-free core (file reads, compression, storage); results go back through
//! a mutex and condition variable. The archiver's own thread does all
//! reporting to PostgreSQL.
use crate::repo::compress::Compression;
use crate::repo::{ClusterRepo, PushOutcome};
use crate::Error;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What happened to a push. A failed push ahead is not trusted when the
/// archiver comes to its file (the cause may have passed): it is pushed
/// again.
type PushResult = Result<PushOutcome, Error>;

#[derive(Default)]
struct State {
    queue: VecDeque<(String, PathBuf)>,
    in_flight: BTreeSet<String>,
    done: HashMap<String, PushResult>,
    shutdown: bool,
}

/// The ready files found by the last scan of `archive_status` that are not
/// queued yet, in order. `archive_status` is scanned again only once these
/// run out, so a long backlog costs one directory scan per `depth`-ish
/// files instead of one (and a sort) per file.
#[derive(Default)]
struct Scan {
    pending: VecDeque<String>,
    /// Directory scans so far (for tests).
    scans: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    cluster: ClusterRepo,
    compression: Compression,
    level: i32,
}

pub struct PushAhead {
    shared: Arc<Shared>,
    scan: Mutex<Scan>,
    workers: Vec<std::thread::JoinHandle<()>>,
    depth: usize,
}

impl PushAhead {
    /// Start `workers` threads that push up to `depth` files ahead.
    pub fn start(
        cluster: ClusterRepo,
        compression: Compression,
        level: i32,
        workers: usize,
        depth: usize,
    ) -> PushAhead {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            cluster,
            compression,
            level,
        });
        let handles = crate::threads::with_signals_blocked(|| {
            (0..workers.max(1))
                .filter_map(|i| {
                    let s = Arc::clone(&shared);
                    std::thread::Builder::new()
                        .name(format!("pg_ark-push-{i}"))
                        .spawn(move || worker(&s))
                        .ok()
                })
                .collect::<Vec<_>>()
        });
        PushAhead {
            shared,
            scan: Mutex::new(Scan::default()),
            workers: handles,
            depth,
        }
    }

    /// Archive `name` (at `path`, relative to the data directory): use the
    /// result of a push ahead if there is one (waiting for it if it is in
    /// flight), else have a worker push it now. Then queue the next ready
    /// files found in `archive_status`.
    ///
    /// The archiver's thread only waits: it gives up after `timeout`, or as
    /// soon as `should_stop` says so (polled every 100 ms), so a repository
    /// that does not answer holds neither the archiver nor a shutdown. A
    /// push still running then finishes (or times out) on its worker, and a
    /// later attempt at the same file uses its result.
    pub fn archive(
        &self,
        name: &str,
        path: &Path,
        archive_status: &Path,
        timeout: Duration,
        should_stop: &dyn Fn() -> bool,
    ) -> Result<PushOutcome, Error> {
        let deadline = Instant::now() + timeout;
        let result = {
            let mut st = self.lock();
            st.queue.retain(|(n, _)| n != name);
            if matches!(st.done.get(name), Some(Err(_))) {
                st.done.remove(name);
            }
            if !st.in_flight.contains(name) && !st.done.contains_key(name) {
                st.queue.push_front((name.to_string(), path.to_path_buf()));
                self.shared.changed.notify_all();
            }
            loop {
                if let Some(r) = st.done.remove(name) {
                    break r;
                }
                if should_stop() {
                    return Err(Error::ArchiveInterrupted { name: name.into() });
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::ArchiveTimeout {
                        name: name.into(),
                        seconds: timeout.as_secs(),
                    });
                }
                let wait = (deadline - now).min(Duration::from_millis(100));
                st = self
                    .shared
                    .changed
                    .wait_timeout(st, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        };
        self.schedule(name, archive_status);
        result
    }

    /// Queue the ready files after `current`, up to `depth` ahead.
    fn schedule(&self, current: &str, archive_status: &Path) {
        let mut scan = self.scan.lock().unwrap_or_else(|p| p.into_inner());
        // Drop what is behind the archiver: WAL is offered in name order.
        while scan.pending.front().is_some_and(|n| n.as_str() <= current) {
            scan.pending.pop_front();
        }
        if scan.pending.is_empty() {
            scan.pending = ready_after(current, archive_status);
            scan.scans += 1;
            // Forget results nobody will ask for (their file is no longer
            // ready: archived by a retry, or removed).
            let mut st = self.lock();
            st.done.retain(|n, _| scan.pending.contains(n));
        }
        let wal_dir = archive_status.parent().unwrap_or(Path::new("pg_wal"));
        let mut st = self.lock();
        while st.queue.len() + st.in_flight.len() + st.done.len() < self.depth {
            let Some(n) = scan.pending.pop_front() else {
                break;
            };
            if st.in_flight.contains(&n)
                || st.done.contains_key(&n)
                || st.queue.iter().any(|(q, _)| *q == n)
            {
                continue;
            }
            let p = wal_dir.join(&n);
            st.queue.push_back((n, p));
        }
        drop(st);
        self.shared.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for PushAhead {
    /// Tell the workers to stop after their current push, without waiting
    /// for them: one may be stuck on a repository that does not answer, and
    /// the archiver must not be. They never call PostgreSQL, and a push cut
    /// short by the process's exit leaves only a temporary object, which
    /// the next archiver removes.
    fn drop(&mut self) {
        self.lock().shutdown = true;
        self.shared.changed.notify_all();
        self.workers.clear();
    }
}

/// The `.ready` files after `current` in `archive_status`, in name order.
fn ready_after(current: &str, archive_status: &Path) -> VecDeque<String> {
    let Ok(entries) = std::fs::read_dir(archive_status) else {
        return VecDeque::new();
    };
    let mut ready: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".ready")
                .map(str::to_string)
        })
        .filter(|n| n.as_str() > current && crate::wal::classify(n).is_ok())
        .collect();
    ready.sort();
    ready.into()
}

fn push(shared: &Shared, name: &str, path: &Path) -> Result<PushOutcome, Error> {
    shared
        .cluster
        .push_wal_file(name, path, shared.compression, shared.level)
}

fn worker(shared: &Shared) {
    loop {
        let (name, path) = {
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if st.shutdown {
                    return;
                }
                if let Some(job) = st.queue.pop_front() {
                    st.in_flight.insert(job.0.clone());
                    break job;
                }
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| push(shared, &name, &path)))
                .unwrap_or_else(|_| Err(Error::PushPanicked { name: name.clone() }));
        let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.in_flight.remove(&name);
        st.done.insert(name, outcome);
        drop(st);
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::Repository;
    use crate::storage::local::LocalStorage;

    const LONG: Duration = Duration::from_secs(600);

    fn never() -> bool {
        false
    }

    /// Local storage whose writes wait until the gate opens: a repository
    /// that does not answer.
    struct Gated {
        inner: LocalStorage,
        open: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Gated {
        fn wait(&self) {
            let (m, cv) = &*self.open;
            let mut open = m.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        }
    }

    impl crate::storage::Storage for Gated {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn get(&self, key: &str) -> Result<Vec<u8>, crate::storage::StorageError> {
            self.inner.get(key)
        }
        fn head(
            &self,
            key: &str,
        ) -> Result<Option<crate::storage::ObjectInfo>, crate::storage::StorageError> {
            self.inner.head(key)
        }
        fn put(
            &self,
            key: &str,
            data: &[u8],
            mode: crate::storage::PutMode,
        ) -> Result<(), crate::storage::StorageError> {
            if key.contains("/wal/") {
                self.wait();
            }
            self.inner.put(key, data, mode)
        }
        fn put_stream(
            &self,
            key: &str,
            body: &mut dyn std::io::Read,
            mode: crate::storage::PutMode,
        ) -> Result<u64, crate::storage::StorageError> {
            self.wait();
            self.inner.put_stream(key, body, mode)
        }
        fn list(
            &self,
            prefix: &str,
        ) -> Result<Vec<crate::storage::ObjectInfo>, crate::storage::StorageError> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> Result<(), crate::storage::StorageError> {
            self.inner.delete(key)
        }
    }

    #[test]
    fn a_repository_that_does_not_answer_holds_the_archiver_only_until_its_deadline() {
        let (pgdata, repo_dir, names) = setup(2);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let storage = Gated {
            inner: LocalStorage::open(repo_dir.path()).unwrap(),
            open: Arc::clone(&gate),
        };
        let repo = Arc::new(Repository::open(Box::new(storage), true).unwrap());
        let pa = PushAhead::start(
            repo.cluster(42, 17, true).unwrap(),
            Compression::Zstd,
            1,
            2,
            4,
        );
        let st = pgdata.path().join("pg_wal/archive_status");
        let path = pgdata.path().join("pg_wal").join(&names[0]);
        let e = pa
            .archive(&names[0], &path, &st, Duration::from_millis(300), &never)
            .unwrap_err();
        assert!(matches!(e, Error::ArchiveTimeout { .. }), "{e}");
        assert!(
            e.to_string().starts_with(&format!(
                "could not archive WAL file \"{}\" within ",
                names[0]
            )),
            "{e}"
        );
        // A shutdown request ends the wait at once.
        let e = pa
            .archive(&names[0], &path, &st, LONG, &|| true)
            .unwrap_err();
        assert!(matches!(e, Error::ArchiveInterrupted { .. }), "{e}");
        // Once the repository answers, the push that was under way is
        // used: stored once, reported once.
        {
            let (m, cv) = &*gate;
            *m.lock().unwrap() = true;
            cv.notify_all();
        }
        let outcome = pa.archive(&names[0], &path, &st, LONG, &never).unwrap();
        assert!(matches!(outcome, PushOutcome::Stored { .. }), "{outcome:?}");
        // Dropping the pusher never waits for its workers.
        drop(pa);
    }

    fn setup(n: usize) -> (tempfile::TempDir, tempfile::TempDir, Vec<String>) {
        let pgdata = tempfile::tempdir().unwrap();
        let st = pgdata.path().join("pg_wal/archive_status");
        std::fs::create_dir_all(&st).unwrap();
        let mut names = Vec::new();
        for i in 1..=n {
            let name = format!("0000000100000000{i:08X}");
            let mut seg = vec![(i % 7) as u8; 1 << 20];
            seg[2..4].copy_from_slice(&2u16.to_le_bytes());
            seg[24..32].copy_from_slice(&42u64.to_le_bytes());
            std::fs::write(pgdata.path().join("pg_wal").join(&name), seg).unwrap();
            std::fs::write(st.join(format!("{name}.ready")), b"").unwrap();
            names.push(name);
        }
        (pgdata, tempfile::tempdir().unwrap(), names)
    }

    #[test]
    fn files_pushed_ahead_are_stored_and_reported_once() {
        let (pgdata, repo_dir, names) = setup(8);
        let repo = Arc::new(
            Repository::open(Box::new(LocalStorage::open(repo_dir.path()).unwrap()), true).unwrap(),
        );
        let pa = PushAhead::start(
            repo.cluster(42, 17, true).unwrap(),
            Compression::Zstd,
            1,
            2,
            4,
        );
        let st = pgdata.path().join("pg_wal/archive_status");
        for name in &names {
            let outcome = pa
                .archive(
                    name,
                    &pgdata.path().join("pg_wal").join(name),
                    &st,
                    LONG,
                    &never,
                )
                .unwrap();
            assert!(
                matches!(outcome, PushOutcome::Stored { .. }),
                "{name}: {outcome:?}"
            );
            // as PostgreSQL does once the callback returns true
            std::fs::rename(
                st.join(format!("{name}.ready")),
                st.join(format!("{name}.done")),
            )
            .unwrap();
        }
        let entry = repo.cluster(42, 17, false).unwrap();
        for name in &names {
            assert_eq!(entry.get_wal(name).unwrap().unwrap().len(), 1 << 20);
        }
        assert!(pa.lock().done.is_empty() && pa.lock().queue.is_empty());
    }

    #[test]
    fn a_failure_ahead_is_reported_by_the_archivers_own_push() {
        let (pgdata, repo_dir, names) = setup(3);
        let repo = Arc::new(
            Repository::open(Box::new(LocalStorage::open(repo_dir.path()).unwrap()), true).unwrap(),
        );
        let entry = repo.cluster(42, 17, true).unwrap();
        // A conflicting copy of the second file is already stored.
        entry
            .push_wal(&names[1], b"something else", Compression::None, 0)
            .unwrap();
        let pa = PushAhead::start(
            repo.cluster(42, 17, true).unwrap(),
            Compression::Zstd,
            1,
            2,
            4,
        );
        let st = pgdata.path().join("pg_wal/archive_status");
        pa.archive(
            &names[0],
            &pgdata.path().join("pg_wal").join(&names[0]),
            &st,
            LONG,
            &never,
        )
        .unwrap();
        std::fs::rename(
            st.join(format!("{}.ready", names[0])),
            st.join(format!("{}.done", names[0])),
        )
        .unwrap();
        let e = pa
            .archive(
                &names[1],
                &pgdata.path().join("pg_wal").join(&names[1]),
                &st,
                LONG,
                &never,
            )
            .unwrap_err();
        assert!(matches!(e, Error::WalConflict { .. }), "{e}");
        // Asked again (PostgreSQL retries), it fails again: never a silent success.
        assert!(pa
            .archive(
                &names[1],
                &pgdata.path().join("pg_wal").join(&names[1]),
                &st,
                LONG,
                &never,
            )
            .is_err());
    }

    /// A long backlog is scanned a few times, not once per file (which was
    /// quadratic: every push listed and sorted the whole directory).
    #[test]
    fn a_long_backlog_is_scanned_once_not_per_file() {
        let (pgdata, repo_dir, names) = setup(120);
        let repo = Arc::new(
            Repository::open(Box::new(LocalStorage::open(repo_dir.path()).unwrap()), true).unwrap(),
        );
        let pa = PushAhead::start(
            repo.cluster(42, 17, true).unwrap(),
            Compression::Zstd,
            1,
            2,
            4,
        );
        let st = pgdata.path().join("pg_wal/archive_status");
        for name in &names {
            let path = pgdata.path().join("pg_wal").join(name);
            pa.archive(name, &path, &st, LONG, &never).unwrap();
            std::fs::rename(
                st.join(format!("{name}.ready")),
                st.join(format!("{name}.done")),
            )
            .unwrap();
        }
        let scans = pa.scan.lock().unwrap().scans;
        // The first push scans; the last few find the list empty and look
        // again (as every push did before): a handful in all, not 120.
        assert!(
            (1..=8).contains(&scans),
            "{scans} scans for {} files",
            names.len()
        );
        let entry = repo.cluster(42, 17, false).unwrap();
        for name in &names {
            assert!(entry.get_wal(name).unwrap().is_some(), "{name}");
        }
    }
}
