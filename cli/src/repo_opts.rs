//! Options that name the repository, shared by every subcommand that reads
//! one, as flags or from the environment.
use pg_ark_core::repo::config::{EncryptionFiles, RepoConfig, S3Config, FLAGS};
use pg_ark_core::storage;

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
            },
            encryption: EncryptionFiles {
                recipients_file: self.recipients_file.clone(),
                identity_file: self.identity_file.clone(),
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

    /// Open the repository (never creating it).
    pub fn open(
        &self,
    ) -> Result<std::sync::Arc<pg_ark_core::repo::Repository>, pg_ark_core::Error> {
        self.config().open(&FLAGS, None, false)
    }

    pub fn s3(&self) -> Result<storage::s3::S3Options, pg_ark_core::Error> {
        self.config().s3.options(&FLAGS, None)
    }
}
