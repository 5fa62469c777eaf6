//! The no-overwrite contract, enforced: a storage wrapper that refuses
//! every overwrite, every second write of a key, and (with a simulated
//! Object Lock) every delete before an object's retain-until, and a whole
//! repository life to run through it.
//!
//! pg_ark writes each key once (`repo::layout`), so that a bucket under S3
//! Object Lock in compliance mode, which keeps every version and refuses
//! early deletes, holds a whole repository. [`WriteOnce`] records every
//! refusal, as some callers swallow errors (a lease renewal, a failed
//! dump's cleanup): a test asserts [`WriteOnce::refused`] is empty after
//! [`run_life`].
use super::{ObjectInfo, PutMode, Storage, StorageError};
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// A storage that lets every key be written once (see the module).
pub struct WriteOnce<S> {
    inner: S,
    /// Every key ever written through this wrapper, with when (its clock).
    written: Mutex<HashMap<String, i64>>,
    refused: Mutex<Vec<String>>,
    /// The simulated lock period, seconds (`None`: no lock).
    lock: Option<i64>,
    /// Seconds added to the real clock, to move past retain-until dates.
    skew: AtomicI64,
}

impl<S: Storage> WriteOnce<S> {
    pub fn new(inner: S) -> WriteOnce<S> {
        WriteOnce {
            inner,
            written: Mutex::default(),
            refused: Mutex::default(),
            lock: None,
            skew: AtomicI64::new(0),
        }
    }

    /// As if under Object Lock: every object written is retained for
    /// `seconds`, and a delete before then is refused.
    pub fn locked_for(inner: S, seconds: i64) -> WriteOnce<S> {
        WriteOnce {
            lock: Some(seconds),
            ..WriteOnce::new(inner)
        }
    }

    /// The storage under the wrapper, to play an attacker or a damaged disk.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// What was refused so far, one line each.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Move this storage's clock `seconds` ahead (past retain-until dates).
    pub fn advance(&self, seconds: i64) {
        self.skew.fetch_add(seconds, Ordering::SeqCst);
    }

    /// As if every key under `prefix` had been written `seconds` earlier
    /// (its retain-until moves with it).
    pub fn backdate(&self, prefix: &str, seconds: i64) {
        if let Ok(mut w) = self.written.lock() {
            for (k, t) in w.iter_mut() {
                if k.starts_with(prefix) {
                    *t -= seconds;
                }
            }
        }
    }

    /// This storage's clock (epoch seconds).
    pub fn now(&self) -> i64 {
        crate::logical::now_epoch() + self.skew.load(Ordering::SeqCst)
    }

    fn refuse(&self, what: String) -> StorageError {
        if let Ok(mut r) = self.refused.lock() {
            r.push(what.clone());
        }
        StorageError::Backend {
            location: self.inner.location(),
            message: format!("write-once storage: {what}"),
        }
    }

    /// Check a write of `key` before it is made.
    fn may_write(&self, key: &str, mode: PutMode) -> Result<(), StorageError> {
        if mode == PutMode::Overwrite {
            return Err(self.refuse(format!("overwrite of \"{key}\"")));
        }
        let ever = self
            .written
            .lock()
            .map(|w| w.contains_key(key))
            .unwrap_or(false);
        // A key written before and there now: `Create` fails as it should.
        // Written before and gone: a second write of the key.
        if ever && self.inner.head(key)?.is_none() {
            return Err(self.refuse(format!("second write of \"{key}\"")));
        }
        Ok(())
    }

    fn wrote(&self, key: &str) {
        let now = self.now();
        if let Ok(mut w) = self.written.lock() {
            w.entry(key.to_string()).or_insert(now);
        }
    }
}

impl<S: Storage> Storage for WriteOnce<S> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        self.inner.get(key)
    }
    fn get_reader<'a>(&'a self, key: &str) -> Result<Box<dyn Read + Send + 'a>, StorageError> {
        self.inner.get_reader(key)
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        self.inner.head(key)
    }
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StorageError> {
        self.may_write(key, mode)?;
        self.inner.put(key, data, mode)?;
        self.wrote(key);
        Ok(())
    }
    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn Read,
        mode: PutMode,
    ) -> Result<u64, StorageError> {
        self.may_write(key, mode)?;
        let n = self.inner.put_stream(key, body, mode)?;
        self.wrote(key);
        Ok(n)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        if let Some(until) = self.retained_until(key)? {
            if until > self.now() {
                self.refuse(format!("delete of \"{key}\" before its retain-until"));
                return Err(StorageError::Retained {
                    key: key.into(),
                    location: self.inner.location(),
                    until: Some(until),
                });
            }
        }
        self.inner.delete(key)
    }
    fn remove_stale_temporaries(&self, prefix: &str) -> Result<usize, StorageError> {
        self.inner.remove_stale_temporaries(prefix)
    }
    fn lock_period(&self) -> Option<i64> {
        self.lock
    }
    fn extend_lock(&self, key: &str, until: i64) -> Result<bool, StorageError> {
        let Some(period) = self.lock else {
            return Ok(false);
        };
        let Ok(mut w) = self.written.lock() else {
            return Ok(false);
        };
        match w.get_mut(key) {
            Some(t) if *t + period < until => {
                *t = until - period;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    fn retained_until(&self, key: &str) -> Result<Option<i64>, StorageError> {
        let Some(period) = self.lock else {
            return Ok(None);
        };
        let at = self.written.lock().ok().and_then(|w| w.get(key).copied());
        Ok(at.map(|t| t + period))
    }
}

/// A whole repository life through `storage`, with public calls only, as
/// the server, the archiver and the CLI make them: the repository and its
/// cluster entry; WAL archived, archived again, found damaged and repaired;
/// a full and an incremental backup with a renewed lease; the index;
/// drills; verification; a restore compared with its source; expiry,
/// which with `lock` (the storage's [`WriteOnce::advance`]) first finds
/// everything retained, then removes it once its lock has ended. Panics
/// on any failure. `damage` overwrites an object as an attacker or a bad
/// disk would (under the wrapper).
pub fn run_life(
    storage: std::sync::Arc<dyn Storage>,
    damage: &dyn Fn(&str, &[u8]),
    advance: Option<&dyn Fn(i64)>,
) {
    use crate::physical::{self, lease, BackupKind, PhysicalBackupInfo};
    use crate::repo::compress::Compression;
    use crate::repo::{PushOutcome, Repository};
    use crate::retention::physical::{expire, Rules};
    const SYSID: u64 = 7_400_000_000_000_000_025;

    let segment = |n: u8| {
        let mut seg = vec![n; 1 << 20];
        seg[2..4].copy_from_slice(&2u16.to_le_bytes());
        seg[24..32].copy_from_slice(&SYSID.to_le_bytes());
        seg
    };
    let repo = std::sync::Arc::new(
        Repository::open(Box::new(std::sync::Arc::clone(&storage)), true).unwrap(),
    );
    // Opened twice: the second reads what the first created.
    Repository::open(Box::new(std::sync::Arc::clone(&storage)), true).unwrap();
    let c = repo.cluster(SYSID, 17, true).unwrap();
    repo.cluster(SYSID, 17, true).unwrap();

    // WAL: archived, archived again, damaged and archived again.
    for n in 1..=4u8 {
        let name = format!("00000001000000000000000{n}");
        c.push_wal(&name, &segment(n), Compression::Zstd, 1)
            .unwrap();
    }
    let two = "000000010000000000000002";
    assert_eq!(
        c.push_wal(two, &segment(2), Compression::Zstd, 1).unwrap(),
        PushOutcome::AlreadyArchived
    );
    let key = c.wal_key(two).unwrap();
    let mut bad = storage.get(&key).unwrap();
    let at = bad.len() - 10;
    bad[at] ^= 0x5a;
    damage(&key, &bad);
    assert!(matches!(
        c.push_wal(two, &segment(2), Compression::Zstd, 1).unwrap(),
        PushOutcome::Repaired { .. }
    ));
    assert_eq!(c.get_wal(two).unwrap().unwrap(), segment(2));
    assert_eq!(
        c.push_wal(two, &segment(2), Compression::Zstd, 1).unwrap(),
        PushOutcome::AlreadyArchived
    );

    // A data directory.
    let src = tempfile::tempdir().unwrap();
    let write = |rel: &str, content: &[u8]| {
        let p = src.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    write("PG_VERSION", b"17\n");
    write("global/pg_control", &[7u8; 8192]);
    write("base/5/PG_VERSION", b"17\n");
    write("base/5/16384", &[3u8; 3 * 8192]);
    write("postgresql.auto.conf", b"# auto\n");

    let take = |id: &str, kind: &str, parent: Option<&PhysicalBackupInfo>, epoch: i64| {
        let lease =
            lease::Lease::take(&c, id, "life", std::time::Duration::from_millis(20)).unwrap();
        let basis = parent.map(|p| {
            let stored = physical::load_stored(&c, &p.backup_id).unwrap().unwrap();
            physical::Basis::against(stored, 0x2000000)
        });
        let dd = physical::walk(src.path()).unwrap();
        let mut basis = basis;
        if let Some(b) = basis.as_mut() {
            b.databases = dd.databases.clone();
            b.read_parent(&c, &dd.files).unwrap();
        }
        let prefix = physical::backup_prefix(&c, id);
        let mut files = physical::store_files(
            &c,
            &prefix,
            src.path(),
            &dd.files,
            physical::StoreOptions {
                compression: Compression::Zstd,
                level: 1,
                threads: 2,
                bundle_below: 0,
            },
            basis.as_ref(),
            None,
            &physical::Progress::default(),
        )
        .unwrap();
        files.push(
            physical::store_bytes(
                &c,
                &prefix,
                "backup_label",
                b"START WAL LOCATION: 0/2000028\n",
            )
            .unwrap(),
        );
        // Renewed at least once: a new lease object, never an overwrite.
        let leases = format!("{prefix}/{}/", lease::LEASE_DIR);
        let first: Vec<_> = storage.list(&leases).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while storage.list(&leases).unwrap() == first {
            assert!(std::time::Instant::now() < deadline, "no lease renewal");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let manifest = physical::Manifest {
            format_version: physical::PHYSICAL_INFO_VERSION,
            backup_id: id.into(),
            files,
            dirs: dd.dirs,
            tablespaces: dd.tablespaces,
            databases: dd.databases,
        };
        let info = PhysicalBackupInfo {
            format_version: physical::PHYSICAL_INFO_VERSION,
            kind: BackupKind::parse(kind).unwrap(),
            backup_id: id.into(),
            parent: parent.map(|p| p.backup_id.clone()),
            chain: parent.map_or(id.to_string(), |p| p.chain.clone()),
            reference_lsn: None,
            start_lsn: "0/2000028".into(),
            start_time_us: None,
            stop_lsn: "0/3000100".into(),
            timeline: 1,
            start_wal: "000000010000000000000002".into(),
            stop_wal: "000000010000000000000003".into(),
            wal_segment_size: crate::wal::SegmentSize::DEFAULT,
            started_at: String::new(),
            finished_at: String::new(),
            started_epoch: epoch,
            finished_epoch: epoch + 1,
            original_bytes: 0,
            stored_bytes: 0,
            files: manifest.files.len(),
            server_version: "17".into(),
            system_identifier: SYSID,
            tablespaces: Vec::new(),
            checksums: false,
            job_id: Some(1),
            created_by: "life".into(),
        };
        physical::finish_backup(&c, &manifest, &info).unwrap();
        drop(lease);
        physical::write_index(&c).unwrap();
        info
    };
    let f1 = take("f1", "full", None, 100);
    write("base/5/16384", &[4u8; 3 * 8192]);
    let i1 = take("i1", "incremental", Some(&f1), 200);
    // Nothing changed: the index gains no generation.
    physical::write_index(&c).unwrap();

    // Drills, each recorded anew; the newest is read.
    for n in 1..=4 {
        physical::save_drill(&c, "i1", &serde_json::json!({"drill": n})).unwrap();
    }
    assert_eq!(physical::load_drill(&c, "i1").unwrap().unwrap()["drill"], 4);

    // Verification and the index.
    for id in ["f1", "i1"] {
        assert_eq!(physical::verify_backup(&c, id).unwrap(), vec![], "{id}");
    }
    let index = physical::read_index_generations(&c).unwrap().unwrap();
    assert_eq!(index.seq, 2);
    assert_eq!(index.backups.len(), 2);
    assert!(index.passed_over.is_empty() && index.broken_links.is_empty());

    // A restore gives the data directory back.
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("restored");
    physical::restore_backup(&c, &i1.backup_id, &target).unwrap();
    for f in physical::walk(src.path()).unwrap().files {
        assert_eq!(
            std::fs::read(target.join(&f.path)).unwrap(),
            std::fs::read(src.path().join(&f.path)).unwrap(),
            "{}",
            f.path
        );
    }

    // Expiry: a newer full leaves the first chain and the WAL before it
    // to go.
    write("base/5/16384", &[5u8; 3 * 8192]);
    take("f2", "full", None, 300);
    let rules = Rules {
        full: 1,
        diff: None,
        days: None,
    };
    let listed = |c: &crate::repo::ClusterRepo| -> Vec<String> {
        physical::list_backups(c)
            .unwrap()
            .into_iter()
            .map(|b| b.backup_id)
            .collect()
    };
    let now = crate::logical::now_epoch();
    if let Some(advance) = advance {
        // Under a lock: nothing can go yet, and nothing is tried.
        let r = expire(&c, rules, now, false).unwrap();
        assert!(r.backups.is_empty() && r.wal.is_empty(), "{:?}", r.backups);
        assert_eq!(r.pending.len(), 2, "{:?}", r.pending);
        assert_eq!(listed(&c), ["f1", "i1", "f2"]);
        advance(10 * 86_400);
    }
    let later = now + advance.map_or(0, |_| 10 * 86_400);
    let r = expire(&c, rules, later, false).unwrap();
    assert_eq!(r.backups.len(), 2, "{:?}", r.pending);
    assert!(r.pending.is_empty());
    assert_eq!(listed(&c), ["f2"]);
    assert!(c.get_wal("000000010000000000000001").unwrap().is_none());
    assert_eq!(c.get_wal(two).unwrap().unwrap(), segment(2));
    let index = physical::read_index_generations(&c).unwrap().unwrap();
    assert_eq!(index.backups.len(), 1);
    assert!(index.broken_links.is_empty(), "{:?}", index.broken_links);
    assert!(physical::verify_backup(&c, "f2").unwrap().is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStorage;
    use std::sync::Arc;

    #[test]
    fn overwrites_second_writes_and_early_deletes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = WriteOnce::locked_for(LocalStorage::open(dir.path()).unwrap(), 100);
        s.put("a", b"1", PutMode::Create).unwrap();
        assert!(s.put("a", b"2", PutMode::Overwrite).is_err());
        assert!(matches!(
            s.put("a", b"2", PutMode::Create),
            Err(StorageError::AlreadyExists { .. })
        ));
        let e = s.delete("a").unwrap_err();
        assert!(e.is_retained(), "{e}");
        s.advance(101);
        s.delete("a").unwrap();
        assert!(s.put("a", b"3", PutMode::Create).is_err());
        assert_eq!(s.refused().len(), 3, "{:?}", s.refused());
        assert!(s.inner().get("a").unwrap_err().is_not_found());
    }

    #[test]
    fn a_whole_repository_life_writes_every_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(WriteOnce::new(LocalStorage::open(dir.path()).unwrap()));
        let inner = Arc::clone(&s);
        run_life(
            s.clone(),
            &|k, b| inner.inner().put(k, b, PutMode::Overwrite).unwrap(),
            None,
        );
        assert_eq!(s.refused(), Vec::<String>::new());
    }

    #[test]
    fn a_whole_repository_life_under_object_lock_never_deletes_early() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(WriteOnce::locked_for(
            LocalStorage::open(dir.path()).unwrap(),
            86_400,
        ));
        let (inner, clock) = (Arc::clone(&s), Arc::clone(&s));
        run_life(
            s.clone(),
            &|k, b| inner.inner().put(k, b, PutMode::Overwrite).unwrap(),
            Some(&|secs| clock.advance(secs)),
        );
        assert_eq!(s.refused(), Vec::<String>::new());
    }
}
