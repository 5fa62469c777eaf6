//! This server's repository: where it is (`ark.repository`, the S3
//! settings), which cluster entry is ours, and the words `pg_ark` commands
//! need to reach it (never keys). Read on the backend's thread; opened on
//! any.
use crate::error::ArkError;
use crate::settings;
use pg_ark_core::repo::config::{EncryptionFiles, RepoConfig};
use pg_ark_core::repo::{ClusterRepo, Repository};
use pg_ark_core::storage::s3::S3Options;
use pg_ark_core::wal::SegmentSize;
use pg_ark_core::{storage, RepoUrl};
use pgrx::prelude::*;
use std::sync::Arc;

/// Where the repository is and which cluster entry is ours.
#[derive(Clone)]
pub struct RepoTarget {
    url: String,
    s3: S3Options,
    encryption: EncryptionFiles,
    data_dir: Option<std::path::PathBuf>,
    sysid: u64,
    major: u32,
    segment_size: SegmentSize,
}

impl RepoTarget {
    /// Read on the backend's thread.
    pub fn current() -> Result<RepoTarget, ArkError> {
        let url = settings::repository().ok_or(ArkError::NoRepository)?;
        RepoUrl::parse(&url)?;
        // SAFETY: reads the control file's identifier, loaded at start.
        let sysid = unsafe { pg_sys::GetSystemIdentifier() };
        Ok(RepoTarget {
            url,
            s3: settings::s3_options()?,
            encryption: settings::encryption_files(),
            data_dir: settings::data_directory(),
            sysid,
            major: pg_sys::PG_VERSION_NUM / 10000,
            segment_size: settings::wal_segment_size()?,
        })
    }

    /// Open our cluster entry to read it (any thread: no PostgreSQL
    /// calls), never creating anything; each storage call is limited to
    /// `limit`.
    pub fn open_to_read(
        &self,
        limit: std::time::Duration,
    ) -> Result<ClusterRepo, pg_ark_core::Error> {
        let mut s3 = self.s3.clone();
        s3.operation_timeout = Some(limit);
        let storage = storage::open(&RepoUrl::parse(&self.url)?, &s3)?;
        let repo = Arc::new(Repository::open_with(storage, false, &self.keys()?)?);
        repo.cluster(self.sysid, self.major, false)
    }

    /// The repository to read backups back from (drills): on a bucket
    /// under Object Lock, the first version of every key, whatever was put
    /// over it or hid it since (`ReadView::FirstVersions`); else as
    /// [`RepoTarget::open`] opens it.
    pub fn open_reading(&self) -> Result<ClusterRepo, pg_ark_core::Error> {
        let url = RepoUrl::parse(&self.url)?;
        let view = read_view(&url, self.s3.object_lock.is_some());
        if view == storage::ReadView::Current {
            return self.open();
        }
        let (storage, _) = storage::open_view(&url, &self.s3, view)?;
        let repo = Arc::new(Repository::open_with(storage, false, &self.keys()?)?);
        repo.cluster(self.sysid, self.major, false)
    }

    /// The repository's versions scanned for tampering, when it is an S3
    /// bucket with an Object Lock set (see `storage::find_tampering`).
    pub fn tampering(&self) -> Result<Option<Vec<String>>, pg_ark_core::Error> {
        storage::find_tampering(&RepoUrl::parse(&self.url)?, &self.s3)
    }

    /// The encryption keys the settings name, read now.
    fn keys(&self) -> Result<pg_ark_core::crypto::layer::Keys, pg_ark_core::Error> {
        let keys = self.encryption.keys(
            &pg_ark_core::repo::config::SETTINGS,
            self.data_dir.as_deref(),
        )?;
        // A writing server's own keys, in its state folder.
        let Some(dir) = &self.data_dir else {
            return Ok(keys);
        };
        let state = dir.join("pg_ark");
        keys.with_server_state(&state)
            .map_err(|source| pg_ark_core::Error::LocalIo {
                op: "read or create the keys in",
                path: state.display().to_string(),
                source,
            })
    }

    /// Open our cluster entry (any thread: no PostgreSQL calls), creating
    /// it on first use; an entry of another WAL segment size is refused.
    pub fn open(&self) -> Result<ClusterRepo, pg_ark_core::Error> {
        let storage = storage::open(&RepoUrl::parse(&self.url)?, &self.s3)?;
        let repo = Arc::new(Repository::open_with(storage, true, &self.keys()?)?);
        repo.attach(self.sysid, self.major, self.segment_size)
    }
}

/// This server's repository configuration (`ark.repository` is `url`),
/// whose words reach it from a `pg_ark` command (never keys).
pub fn config(url: String) -> RepoConfig {
    let s3 = settings::s3_config();
    let view = RepoUrl::parse(&url).map_or(storage::ReadView::Current, |u| {
        read_view(&u, s3.object_lock.is_some())
    });
    RepoConfig {
        url,
        s3,
        encryption: settings::encryption_files(),
        view,
    }
}

/// How this server reads its repository back: under Object Lock (an S3
/// bucket, where pg_ark never writes a key twice) the first version of
/// every key, whatever was put over it or hid it since; else as it is.
fn read_view(url: &RepoUrl, locked: bool) -> storage::ReadView {
    match (url, locked) {
        (RepoUrl::S3 { .. }, true) => storage::ReadView::FirstVersions,
        _ => storage::ReadView::Current,
    }
}
