//! Leases: a backup in progress, visible to every writer of the
//! repository entry.
//!
//! A cluster restored by `pg_ark restore` has its source's system
//! identifier, so both write into the same `clusters/<sysid>/`. Each
//! physical backup starts by removing what failed backups left (prefixes
//! without a descriptor), and without leases it would remove the backup
//! the other server is writing at that moment.
//!
//! # The contract
//! - A backup writes its first lease, `backup/<id>/lease/<seq>`, before
//!   any other object of its prefix, and a new one (the next `seq`) every
//!   [`RENEW_EVERY`] until its descriptor is written. A lease is a new
//!   object each time, created, never overwritten (the repository is
//!   write-once); the one it replaces is deleted after (under S3 Object
//!   Lock, only once its lock has ended; else it goes with the backup).
//! - A lease says until when it holds (`expires_epoch`, [`TTL`] after it
//!   was written, by the writer's clock). The TTL is many renewal periods
//!   long, so a late renewal, or clocks some minutes apart, never lets it
//!   lapse while its writer lives.
//! - A lease names its holder: the host and the data directory of the
//!   server whose worker writes the backup (and, for people, the worker's
//!   pid). A server runs one physical backup at a time (conflict key
//!   `physical`), so at the start of its own backup every lease it holds
//!   itself belongs to a backup that was killed: abandoned.
//! - A prefix without a descriptor is abandoned, and may be removed, only
//!   when its newest lease is the remover's own, has expired, or it has
//!   none (a backup killed before its first lease, or written by a pg_ark
//!   before leases).
//! - If a writer stalls past its TTL, its prefix may be removed under it:
//!   the writer checks that every object of its manifest still exists just
//!   before it writes the descriptor (`finish_backup`), so such a backup
//!   fails instead of being recorded complete.
use super::backup_prefix;
use crate::repo::ClusterRepo;
use crate::storage::{PutMode, StorageError};
use crate::Error;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// How long a lease holds after it is written.
pub const TTL: Duration = Duration::from_secs(600);
/// How often a running backup writes a new lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(30);
/// The folder of leases in a backup's prefix.
pub const LEASE_DIR: &str = "lease";

/// One lease object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDoc {
    pub format_version: u32,
    pub backup_id: String,
    /// Who writes the backup: the server (host and data directory).
    pub holder: String,
    /// The writing worker's process id, for people.
    #[serde(default)]
    pub pid: u32,
    pub seq: u64,
    pub written_epoch: i64,
    pub expires_epoch: i64,
}

fn lease_key(cluster: &ClusterRepo, id: &str, seq: u64) -> String {
    format!("{}/{LEASE_DIR}/{seq:012}", backup_prefix(cluster, id))
}

fn write(cluster: &ClusterRepo, doc: &LeaseDoc) -> Result<(), Error> {
    let key = lease_key(cluster, &doc.backup_id, doc.seq);
    let body = serde_json::to_vec(doc).map_err(|e| Error::BadMetadata {
        location: cluster.location(),
        key: key.clone(),
        reason: e.to_string(),
    })?;
    cluster.storage().put(&key, &body, PutMode::Create)?;
    Ok(())
}

fn doc(id: &str, holder: &str, seq: u64, now: i64) -> LeaseDoc {
    LeaseDoc {
        format_version: 1,
        backup_id: id.into(),
        holder: holder.into(),
        pid: std::process::id(),
        seq,
        written_epoch: now,
        expires_epoch: now.saturating_add(TTL.as_secs() as i64),
    }
}

/// The lease of a backup this process writes: renewed on a thread of its
/// own (every signal blocked, no PostgreSQL call) until dropped.
pub struct Lease {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// When the newest lease was written (Unix seconds, this host's clock).
    renewed: Arc<AtomicI64>,
}

impl Lease {
    /// Write the first lease of backup `id` (an error if it cannot be
    /// written: nothing of the backup may be written before it), then
    /// renew it every `every` until dropped.
    pub fn take(
        cluster: &ClusterRepo,
        id: &str,
        holder: &str,
        every: Duration,
    ) -> Result<Lease, Error> {
        super::check_backup_id(id)?;
        let now = crate::logical::now_epoch();
        write(cluster, &doc(id, holder, 0, now))?;
        let renewed = Arc::new(AtomicI64::new(now));
        let shared = Arc::clone(&renewed);
        let (tx, rx) = mpsc::channel::<()>();
        let name = id.to_string();
        let (cluster, id, holder) = (cluster.clone(), id.to_string(), holder.to_string());
        let thread = crate::threads::with_signals_blocked(|| {
            std::thread::Builder::new()
                .name("pg_ark lease".into())
                .spawn(move || {
                    let mut seq = 0u64;
                    // Until the sender is dropped (or sends).
                    while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                        let now = crate::logical::now_epoch();
                        let next = doc(&id, &holder, seq + 1, now);
                        // A failed renewal is tried again next period; the
                        // last one written still holds until its expiry. A
                        // key that exists is ours (a retried request whose
                        // first attempt was stored): renewed all the same.
                        let done = match write(&cluster, &next) {
                            Ok(()) => true,
                            Err(Error::Storage(StorageError::AlreadyExists { .. })) => true,
                            Err(_) => false,
                        };
                        if done {
                            shared.store(now, Ordering::SeqCst);
                            // Under Object Lock the old lease stays until
                            // its lock ends, and goes with the backup.
                            let old = lease_key(&cluster, &id, seq);
                            let _ = crate::storage::delete_unless_retained(
                                cluster.storage(),
                                &old,
                                now,
                            );
                            seq += 1;
                        }
                    }
                })
        })
        .map_err(|e| Error::Unsupported {
            what: format!("could not start the lease thread of backup \"{name}\": {e}"),
        })?;
        Ok(Lease {
            stop: Some(tx),
            thread: Some(thread),
            renewed,
        })
    }

    /// How long ago (seconds) the newest lease was written, if that is too
    /// long for the lease to be trusted still: past [`TTL`] less two
    /// renewal periods. A backup checks this just before its descriptor.
    pub fn stale(&self) -> Option<i64> {
        let age = crate::logical::now_epoch() - self.renewed.load(Ordering::SeqCst);
        let limit = TTL.as_secs() as i64 - 2 * RENEW_EVERY.as_secs() as i64;
        (age > limit).then_some(age)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The holder name of the server at `data_directory` on this host.
pub fn holder(data_directory: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("host {host}, data directory {}", data_directory.display())
}

/// Whether backup `id` (a prefix without a descriptor) holds a lease of
/// another holder than `own` that has not expired at `now_epoch`: another
/// writer is taking it.
pub fn held(cluster: &ClusterRepo, id: &str, own: &str, now_epoch: i64) -> Result<bool, Error> {
    let base = format!("{}/{LEASE_DIR}/", backup_prefix(cluster, id));
    // The newest lease decides. One that vanishes between the listing and
    // its read was just renewed: list again.
    for _ in 0..3 {
        let mut keys: Vec<String> = cluster
            .storage()
            .list(&base)?
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        let Some(newest) = keys.last() else {
            return Ok(false);
        };
        match cluster.storage().get(newest) {
            Ok(body) => {
                return Ok(serde_json::from_slice::<LeaseDoc>(&body)
                    .is_ok_and(|d| d.holder != own && d.expires_epoch > now_epoch))
            }
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    // Renewed under us three times running: its writer is alive.
    Ok(true)
}
