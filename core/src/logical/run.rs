//! Taking a logical backup: pg_dump into the repository, metadata last.
use super::*;
use crate::process::Program;
use crate::repo::{info, ClusterRepo};
use crate::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Live progress and cancellation of one backup, shared with the caller.
#[derive(Debug, Clone, Default)]
pub struct DumpControl {
    /// Bytes handed to the repository so far: added to as the dump streams
    /// (never reset here; for the directory format it grows during the
    /// upload that follows pg_dump).
    pub bytes: Arc<AtomicU64>,
    /// Set to stop: pg_dump is terminated and nothing is stored.
    pub cancel: Arc<AtomicBool>,
}

impl DumpControl {
    pub fn new() -> DumpControl {
        DumpControl::default()
    }

    pub fn request_cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Dump `req.database` with pg_dump into the repository entry `cluster`,
/// as backup `meta.label`. See the module documentation for the layout and
/// the guarantees; on any error nothing that looks like a backup is left.
pub fn run_logical_backup(
    cluster: &ClusterRepo,
    req: &DumpRequest,
    meta: &DumpMeta,
    control: &DumpControl,
) -> Result<LogicalBackupInfo, Error> {
    req.validate()?;
    check_label(&meta.label)?;
    let mut meta = meta.clone();
    if meta.pg_dump_version.is_none() {
        meta.pg_dump_version = Some(pg_dump_version(&req.pg_dump)?);
    }
    backup_with_command(cluster, req, req.command(), &meta, control)
}

/// [`run_logical_backup`] with a prepared program in pg_dump's place: it
/// must write the dump to its standard output (custom, plain) or into
/// `req.work_dir` (directory).
pub fn backup_with_command(
    cluster: &ClusterRepo,
    req: &DumpRequest,
    program: Program,
    meta: &DumpMeta,
    control: &DumpControl,
) -> Result<LogicalBackupInfo, Error> {
    req.validate()?;
    check_label(&meta.label)?;
    let storage = cluster.storage();
    let prefix = backup_prefix(cluster, &req.database, &meta.label);
    if !storage.list(&format!("{prefix}/"))?.is_empty() {
        return Err(Error::LogicalBackupExists {
            location: cluster.location(),
            database: req.database.clone(),
            label: meta.label.clone(),
        });
    }
    let started = now_epoch();
    let data_key = format!("{prefix}/{}", req.format.data_name());
    let data = match req.format {
        DumpFormat::Custom | DumpFormat::Plain => {
            stream_command_output(storage, &data_key, program, &req.database, control).map(|s| {
                let file = LogicalFile {
                    key: data_key.clone(),
                    bytes: s.bytes,
                    sha256: s.sha256.clone(),
                };
                (s.bytes, Some(s.sha256), vec![file])
            })
        }
        DumpFormat::Directory => dump_directory(storage, &data_key, program, req, control)
            .map(|files| (files.iter().map(|f| f.bytes).sum(), None, files)),
    };
    let (bytes, sha256, files) = match data {
        Ok(d) if !control.is_cancelled() => d,
        Ok(_) => {
            let _ = delete_prefix(storage, &prefix);
            return Err(cancelled(&req.database));
        }
        Err(e) => {
            // The prefix was empty when we started: whatever is there is ours.
            let _ = delete_prefix(storage, &prefix);
            return Err(e);
        }
    };
    // In an encrypted repository the clear descriptor records no digest
    // of the plaintext (it would let anyone confirm a guessed dump): the
    // encryption authenticates every object instead.
    let (sha256, files) = if cluster.encryption().is_some() {
        let files = files
            .into_iter()
            .map(|f| LogicalFile {
                sha256: String::new(),
                ..f
            })
            .collect();
        (None, files)
    } else {
        (sha256, files)
    };
    let finished = now_epoch();
    let info = LogicalBackupInfo {
        format_version: LOGICAL_INFO_VERSION,
        kind: "logical".into(),
        label: meta.label.clone(),
        database: req.database.clone(),
        format: req.format,
        started_at: rfc3339_utc(started),
        finished_at: rfc3339_utc(finished),
        started_epoch: started,
        finished_epoch: finished,
        bytes,
        sha256,
        files,
        data_key,
        schemas: req.schemas.clone(),
        compression: req.compression.clone(),
        server_version: meta.server_version.clone(),
        pg_dump_version: meta
            .pg_dump_version
            .clone()
            .unwrap_or_else(|| "unknown".into()),
        system_identifier: cluster.system_identifier,
        job_id: meta.job_id,
        created_by: format!("pg_ark {}", crate::VERSION),
        series: meta.series.clone(),
    };
    let info_key = format!("{prefix}/{INFO_NAME}");
    let saved = serde_json::to_value(&info)
        .map_err(|e| Error::BadMetadata {
            location: cluster.location(),
            key: info_key.clone(),
            reason: e.to_string(),
        })
        .and_then(|v| info::save(storage, &info_key, &v).map_err(Error::from));
    if let Err(e) = saved {
        let _ = delete_prefix(storage, &prefix);
        return Err(e);
    }
    Ok(info)
}
