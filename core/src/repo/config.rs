//! One repository configuration, for the extension (its `ark.repository`
//! and `ark.s3_*` settings) and the CLI (its `--repo` and `--s3-*` flags):
//! where the repository is, how to reach S3 and with which keys, how to
//! open it, and the words a `pg_ark` command needs to reach it again (the
//! `restore_command` a restore writes, the commands a plan prints). Keys
//! given as values are never among those words: a command finds them in a
//! credentials file, or in the environment.
use crate::crypto::layer::Keys;
use crate::repo::Repository;
use crate::secret_file::Readers;
use crate::storage::s3::{read_credentials_file, S3Options};
use crate::storage::versioned::AsOf;
use crate::storage::ReadView;
use crate::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How to reach S3 (ignored for a local repository).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Keys given as values (the extension's settings): never written into
    /// a command.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// A file with the keys, in AWS's credentials format.
    pub credentials_file: Option<PathBuf>,
    /// Limit of one whole S3 operation (`None`: the default).
    pub operation_timeout: Option<Duration>,
    /// The Object Lock every stored object gets (`None`: none asked for).
    pub object_lock: Option<crate::storage::lock::ObjectLock>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "(hidden)"),
            )
            .field("credentials_file", &self.credentials_file)
            .field("operation_timeout", &self.operation_timeout)
            .field("object_lock", &self.object_lock)
            .finish()
    }
}

/// What the configuration's parts are called where they came from, for
/// messages.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub credentials_file: &'static str,
    pub keys: &'static str,
    pub recipients_file: &'static str,
    pub identity_file: &'static str,
}

/// The extension's settings.
pub const SETTINGS: Names = Names {
    credentials_file: "ark.s3_credentials_file",
    keys: "ark.s3_access_key_id or ark.s3_secret_access_key",
    recipients_file: "ark.encryption_recipients_file",
    identity_file: "ark.encryption_identity_file",
};

/// The CLI's flags (keys come from a file or the environment only).
pub const FLAGS: Names = Names {
    credentials_file: "--s3-credentials-file",
    keys: "the keys",
    recipients_file: "--recipients-file",
    identity_file: "--identity-file",
};

/// The environment variable that holds an identity file's passphrase.
pub const PASSPHRASE_ENV: &str = "PG_ARK_IDENTITY_PASSPHRASE";

/// An encrypted repository's key files (see `crypto::layer`): never keys
/// themselves, only where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionFiles {
    /// The recipients (public keys) new data keys are wrapped to.
    pub recipients_file: Option<PathBuf>,
    /// The identities (private keys) that open key objects.
    pub identity_file: Option<PathBuf>,
}

impl EncryptionFiles {
    /// The keys, read from the files now. Both must lie outside
    /// `data_dir`; the identity file must be readable by its owner alone,
    /// the recipients file writable by its owner alone. A passphrase comes
    /// from [`PASSPHRASE_ENV`].
    pub fn keys(&self, names: &Names, data_dir: Option<&Path>) -> Result<Keys, Error> {
        let mut keys = Keys::default();
        if let Some(f) = &self.recipients_file {
            let invalid = |reason: String| Error::InvalidSetting {
                name: names.recipients_file,
                value: f.display().to_string(),
                reason,
            };
            let text = crate::secret_file::read_public(f, data_dir).map_err(invalid)?;
            keys.recipients =
                Some(crate::crypto::Recipients::parse(&text).map_err(|e| invalid(e.to_string()))?);
        }
        if let Some(f) = &self.identity_file {
            let invalid = |reason: String| Error::InvalidSetting {
                name: names.identity_file,
                value: f.display().to_string(),
                reason,
            };
            let bytes =
                crate::secret_file::read_bytes(f, data_dir, Readers::Owner).map_err(invalid)?;
            let pass = std::env::var(PASSPHRASE_ENV).ok();
            let ids = crate::crypto::Identities::parse(&bytes, pass.as_deref())
                .map_err(|e| invalid(e.to_string()))?;
            keys.identities = Some(Arc::new(ids));
        }
        Ok(keys)
    }
}

impl S3Config {
    /// The options S3 storage opens with. With a credentials file, the keys
    /// are read from it now (so a rotated key is picked up at the next
    /// open); a file inside `data_dir` or readable by other users is
    /// refused, and so are keys given both ways. Without either, the
    /// standard AWS chain applies.
    pub fn options(&self, names: &Names, data_dir: Option<&Path>) -> Result<S3Options, Error> {
        let mut o = S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            force_path_style: self.path_style,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            operation_timeout: self.operation_timeout,
            object_lock: self.object_lock,
        };
        if let Some(file) = &self.credentials_file {
            let invalid = |reason: String| Error::InvalidSetting {
                name: names.credentials_file,
                value: file.display().to_string(),
                reason,
            };
            if self.access_key_id.is_some() || self.secret_access_key.is_some() {
                return Err(invalid(format!(
                    "{} is set as well; keep the keys in one place",
                    names.keys
                )));
            }
            let (id, secret) = read_credentials_file(file, data_dir).map_err(invalid)?;
            o.access_key_id = Some(id);
            o.secret_access_key = Some(secret);
        }
        Ok(o)
    }
}

/// A repository: its URL, how to reach S3, and where its keys are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoConfig {
    pub url: String,
    pub s3: S3Config,
    pub encryption: EncryptionFiles,
    /// Which versions a reader sees (a versioned bucket read as it was).
    pub view: ReadView,
}

impl RepoConfig {
    /// Open the repository (`create`: make its descriptor if it has none).
    pub fn open(
        &self,
        names: &Names,
        data_dir: Option<&Path>,
        create: bool,
    ) -> Result<Arc<Repository>, Error> {
        Ok(self.open_viewed(names, data_dir, create)?.0)
    }

    /// [`RepoConfig::open`], with the versioned reader of a [`ReadView`]
    /// other than the current one, which reports what it found tampered.
    pub fn open_viewed(
        &self,
        names: &Names,
        data_dir: Option<&Path>,
        create: bool,
    ) -> Result<(Arc<Repository>, Option<Arc<AsOf>>), Error> {
        let (storage, view) = crate::storage::open_view(
            &crate::RepoUrl::parse(&self.url)?,
            &self.s3.options(names, data_dir)?,
            self.view,
        )?;
        let keys = self.encryption.keys(names, data_dir)?;
        Ok((
            Arc::new(Repository::open_with(storage, create, &keys)?),
            view,
        ))
    }

    /// The options of a `pg_ark` command that reach this repository again:
    /// `--repo` and the `--s3-*` flags, never keys.
    pub fn words(&self) -> Vec<String> {
        let mut w = vec!["--repo".to_string(), self.url.clone()];
        if let Some(e) = &self.s3.endpoint {
            w.extend(["--s3-endpoint".into(), e.clone()]);
        }
        if let Some(e) = &self.s3.region {
            w.extend(["--s3-region".into(), e.clone()]);
        }
        if self.s3.path_style {
            w.push("--s3-path-style".into());
        }
        if let Some(f) = &self.s3.credentials_file {
            w.extend(["--s3-credentials-file".into(), f.display().to_string()]);
        }
        // The identity's file, never a key; a reader needs no recipients.
        if let Some(f) = &self.encryption.identity_file {
            w.extend(["--identity-file".into(), f.display().to_string()]);
        }
        match self.view {
            ReadView::Current => {}
            ReadView::FirstVersions => w.push("--first-versions".into()),
            ReadView::AsOf(t) => w.extend(["--as-of".into(), crate::logical::rfc3339_utc(t)]),
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_reach_the_repository_and_never_carry_keys() {
        let c = RepoConfig {
            url: "s3://bucket/prefix".into(),
            encryption: EncryptionFiles::default(),
            s3: S3Config {
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("eu-west-1".into()),
                path_style: true,
                access_key_id: Some("AKIDEXAMPLE".into()),
                secret_access_key: Some("s3cr3t".into()),
                credentials_file: None,
                operation_timeout: None,
                object_lock: None,
            },
            view: ReadView::AsOf(1_765_000_000),
        };
        let w = c.words();
        assert_eq!(
            w,
            [
                "--repo",
                "s3://bucket/prefix",
                "--s3-endpoint",
                "http://127.0.0.1:9000",
                "--s3-region",
                "eu-west-1",
                "--s3-path-style",
                "--as-of",
                "2025-12-06T05:46:40Z"
            ]
        );
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let o = c.s3.options(&SETTINGS, None).unwrap();
        assert_eq!(o.secret_access_key.as_deref(), Some("s3cr3t"));
        assert!(o.force_path_style);
    }

    #[test]
    fn keys_come_from_one_place_named_as_the_caller_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = fromfile\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut s3 = S3Config {
            credentials_file: Some(file.clone()),
            ..S3Config::default()
        };
        let o = s3.options(&FLAGS, None).unwrap();
        assert_eq!(o.access_key_id.as_deref(), Some("AKIDFILE"));
        let c = RepoConfig {
            url: "s3://b/p".into(),
            s3: s3.clone(),
            ..RepoConfig::default()
        };
        assert_eq!(
            c.words()[2..],
            [
                "--s3-credentials-file".to_string(),
                file.display().to_string()
            ]
        );
        s3.access_key_id = Some("a".into());
        let e = s3.options(&SETTINGS, None).unwrap_err().to_string();
        assert!(
            e.contains("ark.s3_credentials_file") && e.contains("ark.s3_access_key_id"),
            "{e}"
        );
        // A file inside the data directory is refused (a physical backup
        // would copy it).
        s3.access_key_id = None;
        let e = s3
            .options(&FLAGS, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--s3-credentials-file"), "{e}");
    }
}
