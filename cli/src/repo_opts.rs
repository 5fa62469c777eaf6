//! Options that name the repository, shared by every subcommand that reads
//! one, as flags or from the environment.
use pg_ark_core::repo::config::{EncryptionFiles, RepoConfig, S3Config, FLAGS};
use pg_ark_core::storage::versioned::{AsOf, Tamper, TamperKind};
use pg_ark_core::storage::{self, ReadView};
use std::sync::{Arc, Mutex};

/// The versioned readers this process opened (`--first-versions`,
/// `--as-of`), so that what they found tampered is reported at exit.
static VIEWS: Mutex<Vec<Arc<AsOf>>> = Mutex::new(Vec::new());

/// Keep `view` for [`report_tampering`].
pub fn remember(view: Option<Arc<AsOf>>) {
    if let (Some(v), Ok(mut views)) = (view, VIEWS.lock()) {
        views.push(v);
    }
}

/// What the versioned readers found so far, one line each: the tampering
/// (versions put over pg_ark's, delete markers, ambiguous keys), then the
/// keys first stored after the `--as-of` time, which were ignored (a
/// repository still written to has many: not tampering by themselves).
pub fn tampering() -> (Vec<String>, Vec<String>) {
    let views = VIEWS.lock().map(|v| v.clone()).unwrap_or_default();
    let mut found: Vec<Tamper> = views.iter().flat_map(|v| v.tampering()).collect();
    found.sort_by_key(|t| (t.key.clone(), t.to_string()));
    found.dedup();
    let (later, tampered): (Vec<Tamper>, Vec<Tamper>) = found
        .into_iter()
        .partition(|t| matches!(t.kind, TamperKind::AfterAsOf { .. }));
    let lines = |v: Vec<Tamper>| v.iter().map(ToString::to_string).collect();
    (lines(tampered), lines(later))
}

/// Every versioned reader opened, to scan a whole repository with.
pub fn views() -> Vec<Arc<AsOf>> {
    VIEWS.lock().map(|v| v.clone()).unwrap_or_default()
}

/// S3 credentials come from `--s3-credentials-file` (AWS's credentials
/// format, the same file `ark.s3_credentials_file` names) or the standard
/// AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile, web identity,
/// instance role), never from the command line.
#[derive(clap::Args, Debug)]
pub struct RepoOpts {
    /// Repository URL: file:///path or s3://bucket/prefix
    #[arg(long = "repo", env = "PG_ARK_REPOSITORY", value_name = "URL")]
    pub repository: String,
    /// S3 endpoint URL, for S3-compatible servers
    #[arg(long, env = "PG_ARK_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: us-east-1]
    #[arg(long, env = "PG_ARK_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Address buckets as endpoint/bucket (most S3-compatible servers need it)
    #[arg(long, env = "PG_ARK_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// File with the S3 keys ([default] aws_access_key_id and aws_secret_access_key)
    #[arg(long, env = "PG_ARK_S3_CREDENTIALS_FILE", value_name = "FILE")]
    pub s3_credentials_file: Option<std::path::PathBuf>,
    /// Identity file (age private keys, mode 0600) that opens an encrypted repository; a passphrase-protected one reads PG_ARK_IDENTITY_PASSPHRASE
    #[arg(long, env = "PG_ARK_IDENTITY_FILE", value_name = "FILE")]
    pub identity_file: Option<std::path::PathBuf>,
    /// Recipients file (age public keys) that new data keys are wrapped to (pg_ark rekey)
    #[arg(long, env = "PG_ARK_RECIPIENTS_FILE", value_name = "FILE")]
    pub recipients_file: Option<std::path::PathBuf>,
    /// S3 Object Lock mode of what this command stores (pg_ark rekey's key objects), as the server's ark.s3_object_lock_mode: governance or compliance
    #[arg(long, env = "PG_ARK_S3_OBJECT_LOCK_MODE", value_name = "MODE", value_parser = parse_lock_mode)]
    pub s3_object_lock_mode: Option<storage::lock::LockMode>,
    /// Days each object this command stores stays locked, as the server's ark.s3_object_lock_days
    #[arg(long, env = "PG_ARK_S3_OBJECT_LOCK_DAYS", value_name = "DAYS", default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub s3_object_lock_days: u32,
    /// Read a versioned S3 bucket's first version of every key, whatever was put over it or hid it since, and report that tampering
    #[arg(long, env = "PG_ARK_FIRST_VERSIONS")]
    pub first_versions: bool,
    /// Read a versioned S3 bucket as it was at TIME (for example 2026-12-06 03:00:00+00): the first versions, ignoring every object stored after TIME
    #[arg(long, env = "PG_ARK_AS_OF", value_name = "TIME", value_parser = parse_as_of)]
    pub as_of: Option<i64>,
}

/// `--s3-object-lock-mode`.
fn parse_lock_mode(text: &str) -> Result<storage::lock::LockMode, String> {
    storage::lock::LockMode::parse(text)
        .ok_or_else(|| format!("\"{text}\" is not a lock mode: governance or compliance"))
}

/// `--as-of`: a time with its zone, to the second (S3 stamps versions to
/// the second or finer).
fn parse_as_of(text: &str) -> Result<i64, String> {
    pg_ark_core::restore::plan::parse_time(text)
        .map(|micros| micros.div_euclid(1_000_000))
        .map_err(|e| e.to_string())
}

impl RepoOpts {
    /// The repository configuration these options give (the one the
    /// extension builds from its settings; keys only from the file or the
    /// environment).
    pub fn config(&self) -> RepoConfig {
        RepoConfig {
            url: self.repository.clone(),
            s3: S3Config {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                path_style: self.s3_path_style,
                access_key_id: None,
                secret_access_key: None,
                credentials_file: self.s3_credentials_file.clone(),
                operation_timeout: None,
                object_lock: storage::lock::ObjectLock::of_settings(
                    self.s3_object_lock_mode,
                    self.s3_object_lock_days,
                    0,
                ),
            },
            encryption: EncryptionFiles {
                recipients_file: self.recipients_file.clone(),
                identity_file: self.identity_file.clone(),
            },
            view: match (self.as_of, self.first_versions) {
                (Some(t), _) => ReadView::AsOf(t),
                (None, true) => ReadView::FirstVersions,
                (None, false) => ReadView::Current,
            },
        }
    }

    /// The encryption keys the options name, read now; neither file may
    /// lie inside `data_dir`.
    pub fn keys(
        &self,
        data_dir: Option<&std::path::Path>,
    ) -> Result<pg_ark_core::crypto::layer::Keys, pg_ark_core::Error> {
        self.config().encryption.keys(&FLAGS, data_dir)
    }

    /// Open the repository (never creating it), through the versioned
    /// reader of `--first-versions` or `--as-of` when one is given.
    pub fn open(
        &self,
    ) -> Result<std::sync::Arc<pg_ark_core::repo::Repository>, pg_ark_core::Error> {
        let (repo, view) = self.config().open_viewed(&FLAGS, None, false)?;
        remember(view);
        Ok(repo)
    }

    pub fn s3(&self) -> Result<storage::s3::S3Options, pg_ark_core::Error> {
        self.config().s3.options(&FLAGS, None)
    }
}
