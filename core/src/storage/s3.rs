//! The S3 backend (`s3://bucket/prefix`), for AWS and any S3-compatible
//! server, through aws-sdk-s3.
//!
//! How the contract (see `mod.rs`) maps onto S3:
//! - `get`/`head`: GetObject/HeadObject; `NoSuchKey`/404 is NotFound/None.
//! - `put`: PutObject with `x-amz-checksum-sha256`, so the server verifies the
//!   body it received against the checksum computed here and rejects a
//!   mismatch; `put` returns only after the server acknowledged the complete
//!   object (S3 writes are atomic and durable once acknowledged). When the
//!   server echoes a SHA-256, it is compared too.
//!   `PutMode::Create` checks with HeadObject first and sends
//!   `If-None-Match: *`, so servers with conditional writes refuse a racing
//!   second writer with 412 (mapped to AlreadyExists) and never overwrite.
//! - `put_stream`: the body is read in parts of [`PART_SIZE`] (8 MiB; after
//!   every 1000 parts the size doubles, up to 256 MiB, so S3's 10,000 parts
//!   hold about 1.4 TiB). A body of at most one part is one PutObject, as
//!   `put`. A longer one is a multipart upload: CreateMultipartUpload with
//!   checksum algorithm SHA-256, UploadPart with each part's SHA-256 (AWS
//!   rejects a part that does not match it; s3s-fs 0.14 does not check part
//!   checksums), CompleteMultipartUpload listing each part's SHA-256; an
//!   echoed part checksum and the completed object's composite checksum
//!   (SHA-256 of the parts' SHA-256s) are compared when the server reports
//!   them.
//!   Only one part uploads while the next is read, so memory stays at two
//!   parts at most. Any error before completion (the reader's included)
//!   aborts the upload (AbortMultipartUpload), which discards the parts: no
//!   object and no upload remain. An abort that fails is reported in the
//!   error; a bucket lifecycle rule `AbortIncompleteMultipartUpload` is the
//!   backstop for uploads orphaned by a crash.
//!   `PutMode::Create` checks with HeadObject before reading any data, and
//!   the completing request (PutObject or CompleteMultipartUpload) carries
//!   `If-None-Match: *`. AWS S3 (since August 2024) and s3s-fs (0.14, the
//!   test server) honor it on both requests, so an object created by another
//!   writer while the body streamed is never replaced: the upload is aborted
//!   and the call fails with AlreadyExists. A server that ignores the header
//!   leaves only the HeadObject check, so two writers racing on the same new
//!   key could both succeed and the later one win; pg_ark's keys are
//!   chosen so that this never happens in normal operation.
//! - `list`: ListObjectsV2, all pages; S3 returns keys in binary order.
//! - `delete`: DeleteObject, which S3 already treats as idempotent.
//!
//! With an Object Lock set ([`S3Options::object_lock`]):
//! - `open` checks that the bucket has Object Lock and versioning enabled,
//!   and fails with [`StorageError::ObjectLockUnavailable`] otherwise.
//! - Every PutObject and CreateMultipartUpload carries the lock's mode and a
//!   retain-until date of now plus its days, with the checksum algorithm
//!   SHA-256 named (AWS and moto refuse lock headers without
//!   `Content-MD5` or `x-amz-sdk-checksum-algorithm`).
//! - A multipart object whose completed checksum does not match is kept,
//!   not deleted (a delete would only add a delete marker, and the retry
//!   would write a second version of the key): the call fails naming it.
//! - `delete` removes every version of the key by version id (delete
//!   markers included), so no delete marker is ever left in place of an
//!   object. While a version is still locked it removes nothing and fails
//!   with [`StorageError::Retained`].
//!
//! A versioned bucket keeps every version: [`S3Storage::list_versions`],
//! [`S3Storage::get_version`] and the other `*_version` methods read them,
//! for `storage::versioned`, which reads the repository as it was.
//!
//! Threads: the SDK is async, pg_ark's callers are not. Each `S3Storage` owns
//! a small multi-thread tokio runtime whose worker threads are created with
//! every signal blocked (so PostgreSQL's signal handlers only ever run on the
//! backend's own thread), and every request runs as a task on those workers;
//! the caller's thread only waits. The runtime is created when the storage is
//! opened, i.e. lazily in the process that uses it, never in the postmaster.
pub use super::lock::{BucketLock, LockMode, ObjectLock};
use super::versioned::ObjectVersion;
use super::{read_up_to, validate_key, ObjectInfo, PutMode, Storage, StorageError};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart,
    ObjectLockEnabled, ObjectLockLegalHoldStatus, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode,
};
use aws_sdk_s3::Client;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::io::Read;
use std::time::Duration;

/// `put_stream` sends a body of up to this many bytes as one PutObject, and
/// a longer one as a multipart upload whose parts start at this size.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's limit on the parts of one upload.
const MAX_PARTS: i32 = 10_000;

/// Where and how to reach S3. Unset credentials mean the standard AWS chain
/// (environment, profile, web identity/IRSA, container and instance roles).
/// `Debug` never prints the secret key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub force_path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Limit of one whole S3 operation, retries included (`None`: 120 s per
    /// attempt, 3 attempts).
    pub operation_timeout: Option<Duration>,
    /// The Object Lock every stored object gets (`None`: none asked for;
    /// a bucket's default retention still applies). See the module
    /// documentation for what changes with it.
    pub object_lock: Option<ObjectLock>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "(hidden)"),
            )
            .field("operation_timeout", &self.operation_timeout)
            .field("object_lock", &self.object_lock)
            .finish()
    }
}

/// S3 keys from a credentials file, in AWS's shared-credentials format:
///
/// ```text
/// [default]
/// aws_access_key_id = AKIA...
/// aws_secret_access_key = ...
/// ```
///
/// (the `[default]` section, or keys before any section). The file is the
/// recommended place for keys: unlike `ALTER SYSTEM SET
/// ark.s3_secret_access_key`, which writes `postgresql.auto.conf` inside the
/// data directory, it is not copied by a physical backup. So a file inside
/// `data_dir` is refused, and so is one that other OS users can read.
/// Errors are reasons in words; they never contain the file's contents.
pub fn read_credentials_file(
    path: &std::path::Path,
    data_dir: Option<&std::path::Path>,
) -> Result<(String, String), String> {
    let text =
        crate::secret_file::read(path, data_dir, crate::secret_file::Readers::OwnerAndGroup)?;
    let (mut id, mut secret) = (None, None);
    let mut section: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_string());
            continue;
        }
        if section.as_deref().is_some_and(|s| s != "default") {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    match (
        id.filter(|v| !v.is_empty()),
        secret.filter(|v| !v.is_empty()),
    ) {
        (Some(id), Some(secret)) => Ok((id, secret)),
        _ => Err(
            "it has no aws_access_key_id and aws_secret_access_key in its [default] section".into(),
        ),
    }
}

pub struct S3Storage {
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    object_lock: Option<ObjectLock>,
    client: Client,
    runtime: tokio::runtime::Runtime,
}

/// What HeadObject says of one version of an object (see
/// [`S3Storage::head_version`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionHead {
    /// The version's id (`None` from a server without versions).
    pub version_id: Option<String>,
    pub size: u64,
    /// The lock's mode as the server names it (`COMPLIANCE`, `GOVERNANCE`).
    pub lock_mode: Option<String>,
    /// The retain-until date, in seconds since the epoch.
    pub retain_until: Option<i64>,
    /// A legal hold keeps the version, whatever its retain-until date.
    pub legal_hold: bool,
}

impl VersionHead {
    /// Whether Object Lock keeps this version from deletion at `now`
    /// (epoch seconds).
    pub fn is_retained(&self, now: i64) -> bool {
        self.legal_hold || self.retain_until.is_some_and(|t| t > now)
    }
}

impl S3Storage {
    pub fn open(bucket: &str, prefix: &str, opts: &S3Options) -> Result<S3Storage, StorageError> {
        let location = format!("s3://{bucket}/{prefix}");
        let runtime = crate::threads::with_signals_blocked(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("pg_ark-s3")
                .enable_all()
                .build()
        })
        .map_err(|e| StorageError::Backend {
            location: location.clone(),
            message: format!("cannot start I/O threads: {e}"),
        })?;

        let opts_c = opts.clone();
        let client = block_on_workers(&runtime, async move {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(
                aws_config::Region::new(
                    opts_c
                        .region
                        .clone()
                        .unwrap_or_else(|| "us-east-1".to_string()),
                ),
            );
            if let (Some(ak), Some(sk)) = (&opts_c.access_key_id, &opts_c.secret_access_key) {
                loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                    ak.clone(),
                    sk.clone(),
                    None,
                    None,
                    "pg_ark settings",
                ));
            }
            let shared = loader.load().await;
            let mut conf = aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(opts_c.force_path_style)
                .timeout_config({
                    let attempt = Duration::from_secs(120);
                    let mut t = aws_config::timeout::TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(5));
                    t = match opts_c.operation_timeout {
                        // One whole operation, its retries included.
                        Some(total) => t
                            .operation_timeout(total)
                            .operation_attempt_timeout(attempt.min(total)),
                        None => t.operation_attempt_timeout(attempt),
                    };
                    t.build()
                })
                .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
            if let Some(ep) = &opts_c.endpoint {
                conf = conf.endpoint_url(ep);
            }
            Client::from_conf(conf.build())
        })
        .map_err(|message| StorageError::Backend {
            location: location.clone(),
            message,
        })?;
        let storage = S3Storage {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: opts.endpoint.clone(),
            object_lock: opts.object_lock,
            client,
            runtime,
        };
        storage.probe()?;
        if storage.object_lock.is_some() {
            storage.check_lock()?;
        }
        Ok(storage)
    }

    /// The Object Lock this storage puts on every object it stores.
    pub fn object_lock(&self) -> Option<ObjectLock> {
        self.object_lock
    }

    /// With an Object Lock set, the bucket must have Object Lock and
    /// versioning enabled; anything else, including a configuration that
    /// cannot be read, is [`StorageError::ObjectLockUnavailable`] (a server
    /// that cannot be reached stays [`StorageError::Unavailable`]).
    fn check_lock(&self) -> Result<(), StorageError> {
        let unavailable = |reason: String| StorageError::ObjectLockUnavailable {
            location: self.location(),
            bucket: self.bucket.clone(),
            reason,
        };
        // Object Lock first: a bucket without it needs no second question.
        let checked = self.lock_configuration().and_then(|b| match b.enabled {
            true => self.versioning().map(|v| (true, v)),
            false => Ok((false, false)),
        });
        match checked {
            Ok((false, _)) => Err(unavailable("has no Object Lock".into())),
            Ok((true, false)) => Err(unavailable("does not have versioning enabled".into())),
            Ok((true, true)) => Ok(()),
            Err(e) if e.is_transient() => Err(e),
            Err(StorageError::Backend { message, .. }) => Err(unavailable(format!(
                "cannot be checked for Object Lock: {message}"
            ))),
            Err(e) => Err(unavailable(format!(
                "cannot be checked for Object Lock: {e}"
            ))),
        }
    }

    /// The bucket's Object Lock configuration (GetObjectLockConfiguration)
    /// and versioning (GetBucketVersioning). A bucket without Object Lock
    /// (`ObjectLockConfigurationNotFoundError`), or a server that does not
    /// implement it (`NotImplemented`), has `enabled: false`; a server that
    /// does not implement versioning has `versioning: false`; other failures
    /// are errors. Feed it to [`super::lock::lock_warnings`].
    pub fn bucket_lock(&self) -> Result<BucketLock, StorageError> {
        let mut out = self.lock_configuration()?;
        out.versioning = self.versioning()?;
        Ok(out)
    }

    /// Whether GetBucketVersioning says `Enabled`.
    fn versioning(&self) -> Result<bool, StorageError> {
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        match self
            .run(async move { client.get_bucket_versioning().bucket(&bucket).send().await })?
        {
            Ok(o) => Ok(o.status() == Some(&BucketVersioningStatus::Enabled)),
            Err(e) if not_implemented(&e) => Ok(false),
            Err(e) => Err(self.describe("read the versioning of bucket", &self.bucket, &e)),
        }
    }

    /// GetObjectLockConfiguration, as a [`BucketLock`] without versioning
    /// (see `bucket_lock`).
    fn lock_configuration(&self) -> Result<BucketLock, StorageError> {
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        let lock = self.run(async move {
            client
                .get_object_lock_configuration()
                .bucket(&bucket)
                .send()
                .await
        })?;
        let mut out = BucketLock {
            enabled: false,
            versioning: false,
            default_mode: None,
            default_days: None,
        };
        match lock {
            Ok(o) => {
                let conf = o.object_lock_configuration();
                out.enabled =
                    conf.and_then(|c| c.object_lock_enabled()) == Some(&ObjectLockEnabled::Enabled);
                if let Some(d) = conf
                    .and_then(|c| c.rule())
                    .and_then(|r| r.default_retention())
                {
                    out.default_mode = d.mode().and_then(|m| LockMode::parse(m.as_str()));
                    out.default_days = match (d.days(), d.years()) {
                        (None, None) => None,
                        (days, years) => {
                            let days = u32::try_from(days.unwrap_or(0)).unwrap_or(0);
                            let years = u32::try_from(years.unwrap_or(0)).unwrap_or(0);
                            Some(days.saturating_add(years.saturating_mul(365)))
                        }
                    };
                }
            }
            // Before any 404-means-missing logic: this 404 is an answer.
            Err(e) if error_code(&e) == Some("ObjectLockConfigurationNotFoundError") => {}
            Err(e) if not_implemented(&e) => {}
            Err(e) => {
                return Err(self.describe(
                    "read the Object Lock configuration of bucket",
                    &self.bucket,
                    &e,
                ))
            }
        }
        Ok(out)
    }

    /// Check that the bucket exists and the credentials work, with a
    /// one-key listing: every server answers it with the real problem
    /// (NoSuchBucket, SignatureDoesNotMatch, AccessDenied, unreachable),
    /// where a missing object's GET or a PUT can hide it.
    fn probe(&self) -> Result<(), StorageError> {
        let (client, bucket, prefix) = (
            self.client.clone(),
            self.bucket.clone(),
            self.prefix.clone(),
        );
        match self.run(async move {
            client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .max_keys(1)
                .send()
                .await
        })? {
            Ok(_) => Ok(()),
            Err(e) => Err(self.describe("open bucket", &self.bucket, &e)),
        }
    }

    fn full_key(&self, key: &str) -> Result<String, StorageError> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StorageError> {
        block_on_workers(&self.runtime, fut).map_err(|message| self.backend(message))
    }

    fn backend(&self, message: String) -> StorageError {
        StorageError::Backend {
            location: self.location(),
            message,
        }
    }

    /// A readable message for an SDK error: the service's code and message,
    /// or the connection problem, naming the endpoint.
    fn describe<E>(&self, op: &str, key: &str, err: &SdkError<E, Response>) -> StorageError
    where
        E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + 'static,
    {
        let mut transient = matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
        );
        let what = match err {
            SdkError::ServiceError(se) => {
                let e = se.err();
                let code = e.code().unwrap_or("error");
                let status = se.raw().status().as_u16();
                transient = status >= 500
                    || status == 429
                    || matches!(
                        code,
                        "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                    );
                let words = match (e.message(), code) {
                    (Some(m), _) if !m.is_empty() => m,
                    (_, "NoSuchBucket") => "the bucket does not exist",
                    (_, "AccessDenied") => "access denied",
                    (_, "InvalidAccessKeyId") => "the access key ID is not known to the server",
                    (_, "SignatureDoesNotMatch") => "the secret access key does not match",
                    // No code: an answer the SDK could not read (an
                    // unexpected body); its own words say what was wrong.
                    _ if e.code().is_none() && !transient => {
                        return self.backend(format!(
                            "could not {op} \"{key}\": the server's answer (HTTP {status}) \
                             could not be read: {}",
                            error_chain(err)
                        ))
                    }
                    _ => "no message from the server",
                };
                format!("{code}: {words}")
            }
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => format!(
                "cannot reach {}: {}",
                self.endpoint.as_deref().unwrap_or("the S3 endpoint"),
                DisplayErrorContext(err)
            ),
            _ => DisplayErrorContext(err).to_string(),
        };
        let message = format!("could not {op} \"{key}\": {what}");
        if transient {
            StorageError::Unavailable {
                location: self.location(),
                message,
            }
        } else {
            self.backend(message)
        }
    }
}

impl S3Storage {
    /// The lock mode and retain-until date for an upload starting now.
    fn lock_headers(&self) -> Option<(ObjectLockMode, DateTime)> {
        self.object_lock.map(|l| {
            let mode = match l.mode {
                LockMode::Governance => ObjectLockMode::Governance,
                LockMode::Compliance => ObjectLockMode::Compliance,
            };
            (mode, DateTime::from_secs(l.retain_until(now_secs())))
        })
    }

    fn already_exists(&self, key: &str) -> StorageError {
        StorageError::AlreadyExists {
            key: key.into(),
            location: self.location(),
        }
    }

    /// `PutMode::Create`'s early check: fail before sending any data.
    fn refuse_existing(&self, key: &str) -> Result<(), StorageError> {
        match self.head(key)? {
            Some(_) => Err(self.already_exists(key)),
            None => Ok(()),
        }
    }

    fn read_failed(&self, key: &str, source: std::io::Error) -> StorageError {
        StorageError::Io {
            op: "read the data for",
            key: key.into(),
            location: self.location(),
            source,
        }
    }

    /// One PutObject of `data`, with its SHA-256 for the server to verify.
    fn put_object(
        &self,
        key: &str,
        full: String,
        data: Vec<u8>,
        mode: PutMode,
    ) -> Result<(), StorageError> {
        let sha = b64(&crate::repo::envelope::sha256(&data));
        let (client, bucket, sha_c) = (self.client.clone(), self.bucket.clone(), sha.clone());
        let lock = self.lock_headers();
        let r = self.run(async move {
            let len = data.len() as i64;
            let mut req = client
                .put_object()
                .bucket(bucket)
                .key(full)
                .checksum_sha256(sha_c)
                .content_length(len)
                .body(ByteStream::from(data));
            if mode == PutMode::Create {
                req = req.if_none_match("*");
            }
            if let Some((mode, until)) = lock {
                // With only the preset checksum the SDK names no algorithm,
                // and lock headers need one named (moto insists; some
                // S3-compatible servers refuse the header, so it goes only
                // with a lock).
                req = req
                    .object_lock_mode(mode)
                    .object_lock_retain_until_date(until)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256);
            }
            req.send().await
        })?;
        match r {
            Ok(out) => match out.checksum_sha256() {
                Some(echo) if echo != sha => Err(self.backend(format!(
                    "could not store \"{key}\": the server acknowledged SHA-256 {echo}, expected {sha}"
                ))),
                _ => Ok(()),
            },
            Err(e) if status_of(&e) == Some(412) => Err(self.already_exists(key)),
            Err(e) => Err(self.describe("store", key, &e)),
        }
    }

    /// A body longer than one part: a multipart upload, aborted on any error
    /// before completion so that neither an object nor parts stay behind.
    fn put_multipart(
        &self,
        key: &str,
        full: String,
        first: Vec<u8>,
        body: &mut dyn Read,
        mode: PutMode,
    ) -> Result<u64, StorageError> {
        let (client, bucket, full_c) = (self.client.clone(), self.bucket.clone(), full.clone());
        let lock = self.lock_headers();
        let created = self.run(async move {
            let mut req = client
                .create_multipart_upload()
                .bucket(bucket)
                .key(full_c)
                .checksum_algorithm(ChecksumAlgorithm::Sha256);
            if let Some((mode, until)) = lock {
                req = req
                    .object_lock_mode(mode)
                    .object_lock_retain_until_date(until);
            }
            req.send().await
        })?;
        let upload_id = match created {
            Ok(out) => match out.upload_id() {
                Some(id) => id.to_string(),
                None => {
                    return Err(self.backend(format!(
                        "could not store \"{key}\": the server started a multipart upload without an upload ID"
                    )))
                }
            },
            Err(e) => return Err(self.describe("start a multipart upload of", key, &e)),
        };
        let upload = Upload {
            key,
            full: &full,
            upload_id: &upload_id,
        };
        match self.upload_and_complete(&upload, first, body, mode) {
            Ok(n) => Ok(n),
            Err(Failed::BeforeCompletion(e)) => Err(self.abort(&upload, e)),
            Err(Failed::Stored(e)) if self.object_lock.is_some() => {
                // Locked: a delete would only hide the object behind a
                // delete marker, and a retry would write the key twice.
                let detail = match e {
                    StorageError::Backend { message, .. } => message,
                    other => other.to_string(),
                };
                Err(self.backend(format!(
                    "{detail}; the object \"{key}\" was kept under Object Lock, not deleted: \
                     do not trust its content"
                )))
            }
            Err(Failed::Stored(e)) => {
                // The server completed an object we cannot vouch for.
                let _ = self.delete(key);
                Err(e)
            }
        }
    }

    fn upload_and_complete(
        &self,
        up: &Upload<'_>,
        first: Vec<u8>,
        body: &mut dyn Read,
        mode: PutMode,
    ) -> Result<u64, Failed> {
        let mut parts: Vec<CompletedPart> = Vec::new();
        let mut part_shas: Vec<u8> = Vec::new();
        let mut whole = Sha256::new();
        let mut total = 0u64;
        let mut carry = first;
        let mut number: i32 = 1;
        let mut in_flight: Option<PartTask> = None;
        let result = loop {
            let size = part_size(number);
            let mut buf = std::mem::take(&mut carry);
            if buf.len() > size {
                carry = buf.split_off(size);
            } else if let Err(e) = read_up_to(body, &mut buf, size) {
                break Err(self.read_failed(up.key, e));
            }
            // One part uploads while the next one is read: at most two
            // parts are in memory.
            if let Some(task) = in_flight.take() {
                match self.finish_part(up, task) {
                    Ok(p) => parts.push(p),
                    Err(e) => break Err(e),
                }
            }
            if buf.is_empty() {
                break Ok(());
            }
            if number > MAX_PARTS {
                break Err(self.backend(format!(
                    "could not store \"{}\": the object is larger than S3's {MAX_PARTS} parts allow",
                    up.key
                )));
            }
            let sha = crate::repo::envelope::sha256(&buf);
            part_shas.extend_from_slice(&sha);
            whole.update(&buf);
            total += buf.len() as u64;
            in_flight = Some(self.start_part(up, number, buf, b64(&sha)));
            number += 1;
        };
        if let Err(e) = result {
            if let Some(task) = in_flight.take() {
                // Let it end before the abort, so no part outlives the upload.
                let _ = self.runtime.block_on(task.handle);
            }
            return Err(Failed::BeforeCompletion(e));
        }

        let (client, bucket, full, id) = (
            self.client.clone(),
            self.bucket.clone(),
            up.full.to_string(),
            up.upload_id.to_string(),
        );
        let count = parts.len();
        let done = self
            .run(async move {
                let mut req = client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(full)
                    .upload_id(id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    );
                if mode == PutMode::Create {
                    req = req.if_none_match("*");
                }
                req.send().await
            })
            .map_err(Failed::BeforeCompletion)?;
        match done {
            Ok(out) => {
                // For SHA-256 multipart uploads S3 reports a composite
                // checksum: the SHA-256 of the parts' SHA-256s, "-<parts>".
                let composite = b64(&crate::repo::envelope::sha256(&part_shas));
                let whole = b64(&whole.finalize());
                match out.checksum_sha256() {
                    Some(echo) => {
                        let base = echo.split_once('-').map_or(echo, |(b, _)| b);
                        if base == composite || base == whole {
                            Ok(total)
                        } else {
                            Err(Failed::Stored(self.backend(format!(
                                "could not store \"{}\": the server acknowledged SHA-256 {echo}, expected {composite}-{count}",
                                up.key
                            ))))
                        }
                    }
                    None => Ok(total),
                }
            }
            Err(e) if status_of(&e) == Some(412) => {
                Err(Failed::BeforeCompletion(self.already_exists(up.key)))
            }
            Err(e) => Err(Failed::BeforeCompletion(self.describe(
                "complete the multipart upload of",
                up.key,
                &e,
            ))),
        }
    }

    fn start_part(&self, up: &Upload<'_>, number: i32, data: Vec<u8>, sha: String) -> PartTask {
        let (client, bucket, full, id, sha_c) = (
            self.client.clone(),
            self.bucket.clone(),
            up.full.to_string(),
            up.upload_id.to_string(),
            sha.clone(),
        );
        let handle = self.runtime.spawn(async move {
            let len = data.len() as i64;
            client
                .upload_part()
                .bucket(bucket)
                .key(full)
                .upload_id(id)
                .part_number(number)
                .checksum_sha256(sha_c)
                .content_length(len)
                .body(ByteStream::from(data))
                .send()
                .await
        });
        PartTask {
            number,
            sha,
            handle,
        }
    }

    fn finish_part(&self, up: &Upload<'_>, task: PartTask) -> Result<CompletedPart, StorageError> {
        let what = format!("upload part {} of", task.number);
        let out = self
            .runtime
            .block_on(task.handle)
            .map_err(|e| self.backend(format!("I/O task failed: {e}")))?
            .map_err(|e| self.describe(&what, up.key, &e))?;
        if let Some(echo) = out.checksum_sha256() {
            if echo != task.sha {
                return Err(self.backend(format!(
                    "could not {what} \"{}\": the server acknowledged SHA-256 {echo}, expected {}",
                    up.key, task.sha
                )));
            }
        }
        Ok(CompletedPart::builder()
            .part_number(task.number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .checksum_sha256(task.sha)
            .build())
    }

    /// Abort the upload after `err`. An abort that fails too is reported
    /// with it: the parts then stay until a lifecycle rule removes them.
    fn abort(&self, up: &Upload<'_>, err: StorageError) -> StorageError {
        let (client, bucket, full, id) = (
            self.client.clone(),
            self.bucket.clone(),
            up.full.to_string(),
            up.upload_id.to_string(),
        );
        let aborted = self.run(async move {
            client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(full)
                .upload_id(id)
                .send()
                .await
        });
        let problem = match aborted {
            Ok(Ok(_)) => return err,
            Ok(Err(e)) if is_not_found(&e) => return err,
            Ok(Err(e)) => self
                .describe("abort the multipart upload of", up.key, &e)
                .to_string(),
            Err(e) => e.to_string(),
        };
        self.backend(format!(
            "{err}; the incomplete multipart upload {} could not be aborted either ({problem}); \
             a bucket lifecycle rule with AbortIncompleteMultipartUpload removes such uploads",
            up.upload_id
        ))
    }
}

/// Reading object versions, and deleting them (see the module
/// documentation). Every method takes keys relative to the storage's prefix,
/// like the [`Storage`] methods.
impl S3Storage {
    /// Every version and delete marker whose key starts with `prefix` (a
    /// plain string prefix, as in `list`), by ListObjectVersions, all
    /// pages. Ordered by key, and within a key oldest first: the reverse
    /// of the order S3 lists them in, never sorted by `last_modified`,
    /// whose one-second granularity makes ties. S3 lists delete markers
    /// apart from versions, so a marker is placed among its key's versions
    /// by `last_modified`; in a tie it goes after the versions of its
    /// second unless one of them is the latest.
    pub fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, StorageError> {
        let full_prefix = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        Ok(self
            .fetch_versions(prefix, full_prefix, false)?
            .into_iter()
            .filter_map(|mut v| {
                v.key = v.key.get(strip..)?.to_string();
                Some(v)
            })
            .collect())
    }

    /// The versions of `key` alone, in the order of `list_versions`; the
    /// listing stops at the first page past the key.
    pub fn key_versions(&self, key: &str) -> Result<Vec<ObjectVersion>, StorageError> {
        let full = self.full_key(key)?;
        Ok(self
            .fetch_versions(key, full, true)?
            .into_iter()
            .map(|mut v| {
                v.key = key.to_string();
                v
            })
            .collect())
    }

    /// One version's whole content. A missing version, or a delete
    /// marker's (which has no content), is NotFound.
    pub fn get_version(&self, key: &str, version_id: &str) -> Result<Vec<u8>, StorageError> {
        self.get_object(key, Some(version_id))
    }

    /// One version's content as a stream (see `get_version`).
    pub fn get_reader_version<'a>(
        &'a self,
        key: &str,
        version_id: &str,
    ) -> Result<Box<dyn std::io::Read + Send + 'a>, StorageError> {
        self.get_object_reader(key, Some(version_id))
    }

    /// One version's size and lock (HeadObject with its version id);
    /// `None` for a missing version or a delete marker.
    pub fn head_version(
        &self,
        key: &str,
        version_id: &str,
    ) -> Result<Option<VersionHead>, StorageError> {
        self.head_object(key, Some(version_id))
    }

    /// The current version's size and lock: how `verify` and `info` show an
    /// object's lock. `None` for a missing object.
    pub fn head_lock(&self, key: &str) -> Result<Option<VersionHead>, StorageError> {
        self.head_object(key, None)
    }

    fn get_object(&self, key: &str, version: Option<&str>) -> Result<Vec<u8>, StorageError> {
        let full = self.full_key(key)?;
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        let version_c = version.map(str::to_string);
        let r = self.run(async move {
            let req = client
                .get_object()
                .bucket(bucket)
                .key(full)
                .set_version_id(version_c);
            match req.send().await {
                Ok(out) => out
                    .body
                    .collect()
                    .await
                    .map(|b| b.into_bytes().to_vec())
                    .map_err(|e| Err(DisplayErrorContext(&e).to_string())),
                Err(e) => Err(Ok(e)),
            }
        })?;
        match r {
            Ok(bytes) => Ok(bytes),
            Err(Ok(e)) if is_not_found(&e) || is_marker(&e, version) => Err(self.not_found(key)),
            Err(Ok(e)) => Err(self.describe("read", key, &e)),
            // The body broke off mid-transfer (a reset, a timeout): the
            // network, so trying again may succeed.
            Err(Err(msg)) => Err(StorageError::Unavailable {
                location: self.location(),
                message: format!("could not read \"{key}\": {msg}"),
            }),
        }
    }

    fn get_object_reader<'a>(
        &'a self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Box<dyn std::io::Read + Send + 'a>, StorageError> {
        let full = self.full_key(key)?;
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        let version_c = version.map(str::to_string);
        let r = self.run(async move {
            client
                .get_object()
                .bucket(bucket)
                .key(full)
                .set_version_id(version_c)
                .send()
                .await
        })?;
        match r {
            Ok(out) => Ok(Box::new(S3Body {
                storage: self,
                key: key.to_string(),
                body: Some(out.body),
                chunk: Vec::new(),
                at: 0,
            })),
            Err(e) if is_not_found(&e) || is_marker(&e, version) => Err(self.not_found(key)),
            Err(e) => Err(self.describe("read", key, &e)),
        }
    }

    fn head_object(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<VersionHead>, StorageError> {
        let full = self.full_key(key)?;
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        let version_c = version.map(str::to_string);
        let r = self.run(async move {
            client
                .head_object()
                .bucket(bucket)
                .key(full)
                .set_version_id(version_c)
                .send()
                .await
        })?;
        match r {
            Ok(out) => Ok(Some(VersionHead {
                version_id: out.version_id().map(str::to_string),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                lock_mode: out.object_lock_mode().map(|m| m.as_str().to_string()),
                retain_until: out.object_lock_retain_until_date().map(|d| d.secs()),
                legal_hold: out.object_lock_legal_hold_status()
                    == Some(&ObjectLockLegalHoldStatus::On),
            })),
            Err(e) if is_not_found(&e) || is_marker(&e, version) => Ok(None),
            Err(e) => Err(self.describe("stat", key, &e)),
        }
    }

    fn not_found(&self, key: &str) -> StorageError {
        StorageError::NotFound {
            key: key.into(),
            location: self.location(),
        }
    }

    /// ListObjectVersions under `full_prefix`, all pages (keys stay full).
    /// With `exact`, only the key `full_prefix` itself, and the listing
    /// stops at the first page that reaches past it.
    fn fetch_versions(
        &self,
        what: &str,
        full_prefix: String,
        exact: bool,
    ) -> Result<Vec<ObjectVersion>, StorageError> {
        /// One listed entry: key, version id, last modified, latest,
        /// size, and whether it is a delete marker.
        type Entry = (String, String, i64, bool, u64, bool);
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        let r = self.run(async move {
            let mut out: Vec<Entry> = Vec::new();
            let (mut key_marker, mut version_marker): (Option<String>, Option<String>) =
                (None, None);
            loop {
                let page = client
                    .list_object_versions()
                    .bucket(&bucket)
                    .prefix(&full_prefix)
                    .set_key_marker(key_marker.clone())
                    .set_version_id_marker(version_marker.clone())
                    .send()
                    .await?;
                let mut past = false;
                let mut keep = |k: &str| {
                    let same = !exact || k == full_prefix;
                    past |= !same;
                    same
                };
                for v in page.versions() {
                    match v.key() {
                        Some(k) if keep(k) => out.push((
                            k.to_string(),
                            v.version_id().unwrap_or("null").to_string(),
                            v.last_modified().map_or(0, |d| d.secs()),
                            v.is_latest().unwrap_or(false),
                            v.size().unwrap_or(0).max(0) as u64,
                            false,
                        )),
                        _ => {}
                    }
                }
                for m in page.delete_markers() {
                    match m.key() {
                        Some(k) if keep(k) => out.push((
                            k.to_string(),
                            m.version_id().unwrap_or("null").to_string(),
                            m.last_modified().map_or(0, |d| d.secs()),
                            m.is_latest().unwrap_or(false),
                            0,
                            true,
                        )),
                        _ => {}
                    }
                }
                // Keys come in order, and `full_prefix` sorts before every
                // longer key: past it, nothing of it follows.
                if past {
                    break;
                }
                let next = (
                    page.next_key_marker().map(str::to_string),
                    page.next_version_id_marker().map(str::to_string),
                );
                match next {
                    (Some(k), v) if page.is_truncated() == Some(true) => {
                        if (Some(&k), v.as_ref()) == (key_marker.as_ref(), version_marker.as_ref())
                        {
                            // A server that repeats its position would
                            // loop forever: the listing is incomplete.
                            return Ok((out, true));
                        }
                        key_marker = Some(k);
                        version_marker = v;
                    }
                    // Truncated, and no position to go on from.
                    _ if page.is_truncated() == Some(true) => return Ok((out, true)),
                    _ => break,
                }
            }
            Ok((out, false))
        })?;
        let (entries, incomplete) =
            r.map_err(|e| self.describe("list the versions of", what, &e))?;
        if incomplete {
            // A view built on part of the versions would miss keys and
            // tampering without saying so.
            return Err(self.backend(format!(
                "could not list the versions of \"{what}\": the server cut the listing short without saying where it goes on"
            )));
        }
        Ok(order_versions(entries.into_iter().map(
            |(key, version_id, last_modified, is_latest, size, delete_marker)| ObjectVersion {
                key,
                version_id,
                last_modified,
                is_latest,
                delete_marker,
                size,
            },
        )))
    }

    /// `delete` with an Object Lock set: remove every version of the key
    /// and every delete marker, by version id, so no delete marker takes
    /// the object's place. First each version's lock is read (HeadObject):
    /// while one is retained nothing is removed, and the call fails with
    /// [`StorageError::Retained`]. Then the entries are removed newest
    /// first, so an interrupted delete leaves the first version, the
    /// genuine one. A version created by someone else meanwhile stays.
    fn delete_versions(&self, key: &str, full: String) -> Result<(), StorageError> {
        let all = self.fetch_versions(key, full.clone(), true)?;
        let retained = |until: Option<i64>| StorageError::Retained {
            key: key.into(),
            location: self.location(),
            until,
        };
        let now = now_secs();
        for v in all.iter().filter(|v| !v.delete_marker) {
            if let Some(h) = self.head_version(key, &v.version_id)? {
                if h.is_retained(now) {
                    return Err(retained(h.retain_until.filter(|_| !h.legal_hold)));
                }
            }
        }
        for v in all.iter().rev() {
            let (client, bucket, full_c, id) = (
                self.client.clone(),
                self.bucket.clone(),
                full.clone(),
                v.version_id.clone(),
            );
            let r = self.run(async move {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(full_c)
                    .version_id(id)
                    .send()
                    .await
            })?;
            match r {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                // The server keeps a lock our clock thinks has passed
                // (clocks differ) or a legal hold came meanwhile; a 403 on a
                // version without any lock is a missing permission.
                Err(e) if status_of(&e) == Some(403) && !v.delete_marker => {
                    match self.head_version(key, &v.version_id)? {
                        Some(h) if h.legal_hold || h.retain_until.is_some() => {
                            return Err(retained(h.retain_until.filter(|_| !h.legal_hold)))
                        }
                        _ => return Err(self.describe("delete a version of", key, &e)),
                    }
                }
                Err(e) => return Err(self.describe("delete a version of", key, &e)),
            }
        }
        Ok(())
    }
}

/// Listed entries (S3's order: by key, newest first within a key, versions
/// and delete markers apart) in the order of [`S3Storage::list_versions`].
fn order_versions(entries: impl IntoIterator<Item = ObjectVersion>) -> Vec<ObjectVersion> {
    let mut by_key: std::collections::BTreeMap<String, (Vec<ObjectVersion>, Vec<ObjectVersion>)> =
        std::collections::BTreeMap::new();
    for e in entries {
        let slot = by_key.entry(e.key.clone()).or_default();
        if e.delete_marker {
            slot.1.push(e);
        } else {
            slot.0.push(e);
        }
    }
    let mut out = Vec::new();
    for (_, (mut versions, mut markers)) in by_key {
        versions.reverse();
        markers.reverse();
        let (mut v, mut m) = (
            versions.into_iter().peekable(),
            markers.into_iter().peekable(),
        );
        loop {
            let marker_first = match (v.peek(), m.peek()) {
                (Some(a), Some(b)) => {
                    b.last_modified < a.last_modified
                        || (b.last_modified == a.last_modified && a.is_latest)
                }
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (None, None) => break,
            };
            let next = if marker_first { m.next() } else { v.next() };
            out.extend(next);
        }
    }
    out
}

/// A multipart upload in progress.
struct Upload<'a> {
    key: &'a str,
    full: &'a str,
    upload_id: &'a str,
}

type UploadPartResult = Result<
    aws_sdk_s3::operation::upload_part::UploadPartOutput,
    SdkError<aws_sdk_s3::operation::upload_part::UploadPartError, Response>,
>;

/// An UploadPart running on the workers.
struct PartTask {
    number: i32,
    sha: String,
    handle: tokio::task::JoinHandle<UploadPartResult>,
}

/// How a multipart upload failed: before the object existed (abort the
/// upload) or after the server completed it (remove the object, unless it
/// is locked).
enum Failed {
    BeforeCompletion(StorageError),
    Stored(StorageError),
}

/// The size of part `number` (1-based): [`PART_SIZE`] for the first 1000
/// parts, then doubling every 1000 parts up to 256 MiB, so that S3's 10,000
/// parts still hold about 1.4 TiB while most bodies use small parts.
fn part_size(number: i32) -> usize {
    let doublings = ((number.max(1) - 1) / 1000).min(5) as u32;
    PART_SIZE << doublings
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Run `fut` as a task on the runtime's workers and wait for it here.
fn block_on_workers<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    let handle = rt.spawn(fut);
    rt.block_on(handle)
        .map_err(|e| format!("I/O task failed: {e}"))
}

type Response = aws_sdk_s3::config::http::HttpResponse;

/// Now, in seconds since the epoch.
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An error and its sources, each by its `Display`, joined by ": ".
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

/// The service's error code, if the server answered with one.
fn error_code<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    err: &SdkError<E, Response>,
) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// A server that does not implement the request (s3s-fs, for Object Lock).
fn not_implemented<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    err: &SdkError<E, Response>,
) -> bool {
    status_of(err) == Some(501) || error_code(err) == Some("NotImplemented")
}

/// A GET or HEAD of a delete marker's version id: S3 answers 405, as the
/// marker has no content.
fn is_marker<E>(err: &SdkError<E, Response>, version: Option<&str>) -> bool {
    version.is_some() && status_of(err) == Some(405)
}

/// The HTTP status of a service error, if the server answered at all.
fn status_of<E>(err: &SdkError<E, Response>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn is_not_found<E: aws_sdk_s3::error::ProvideErrorMetadata>(err: &SdkError<E, Response>) -> bool {
    status_of(err) == Some(404)
        || matches!(
            err.as_service_error().and_then(|e| e.code()),
            Some("NoSuchKey" | "NotFound")
        )
}

/// An object's body from S3, read chunk by chunk on the storage's runtime.
struct S3Body<'a> {
    storage: &'a S3Storage,
    key: String,
    body: Option<aws_sdk_s3::primitives::ByteStream>,
    chunk: Vec<u8>,
    at: usize,
}

impl std::io::Read for S3Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.chunk.len() {
            let Some(mut body) = self.body.take() else {
                return Ok(0);
            };
            let next = self
                .storage
                .run(async move {
                    let n = body.next().await;
                    (body, n)
                })
                .map_err(std::io::Error::other)?;
            match next {
                (_, None) => return Ok(0),
                (body, Some(Ok(bytes))) => {
                    self.body = Some(body);
                    self.chunk = bytes.to_vec();
                    self.at = 0;
                }
                // The body broke off mid-transfer: the network. The
                // StorageError rides in the io::Error, so readers can tell
                // it from damaged content (see `StorageError::of_io`).
                (_, Some(Err(e))) => {
                    return Err(std::io::Error::other(StorageError::Unavailable {
                        location: self.storage.location(),
                        message: format!(
                            "could not read \"{}\": {}",
                            self.key,
                            DisplayErrorContext(&e)
                        ),
                    }))
                }
            }
        }
        let n = (self.chunk.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Storage for S3Storage {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        self.get_object(key, None)
    }

    fn get_reader<'a>(
        &'a self,
        key: &str,
    ) -> Result<Box<dyn std::io::Read + Send + 'a>, StorageError> {
        self.get_object_reader(key, None)
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        Ok(self.head_object(key, None)?.map(|h| ObjectInfo {
            key: key.into(),
            size: h.size,
        }))
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StorageError> {
        let full = self.full_key(key)?;
        if mode == PutMode::Create {
            self.refuse_existing(key)?;
        }
        self.put_object(key, full, data.to_vec(), mode)
    }

    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn Read,
        mode: PutMode,
    ) -> Result<u64, StorageError> {
        let full = self.full_key(key)?;
        if mode == PutMode::Create {
            self.refuse_existing(key)?;
        }
        // One byte more than a part tells a one-part body from a longer one.
        let mut first = Vec::new();
        read_up_to(body, &mut first, PART_SIZE + 1).map_err(|e| self.read_failed(key, e))?;
        if first.len() <= PART_SIZE {
            let n = first.len() as u64;
            self.put_object(key, full, first, mode)?;
            return Ok(n);
        }
        self.put_multipart(key, full, first, body, mode)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let full_prefix = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        let r = self.run(async move {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = client
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(&full_prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await?;
                for o in page.contents() {
                    if let Some(k) = o.key() {
                        out.push((k.to_string(), o.size().unwrap_or(0).max(0) as u64));
                    }
                }
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            Ok(out)
        })?;
        let mut objs: Vec<ObjectInfo> = r
            .map_err(|e| self.describe("list", prefix, &e))?
            .into_iter()
            .filter_map(|(k, size)| {
                k.get(strip..).map(|rel| ObjectInfo {
                    key: rel.to_string(),
                    size,
                })
            })
            .collect();
        objs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objs)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let full = self.full_key(key)?;
        if self.object_lock.is_some() {
            return self.delete_versions(key, full);
        }
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        match self
            .run(async move { client.delete_object().bucket(bucket).key(full).send().await })?
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.describe("delete", key, &e)),
        }
    }

    /// The current version's lock: one HEAD, which any S3-compatible
    /// server answers (listing versions needs more permissions, and not
    /// every server has it); `pg_ark verify` reads the versions when asked
    /// to (`--first-versions`, `--as-of`).
    fn lock_state(&self, key: &str) -> Result<Option<(String, Option<i64>)>, StorageError> {
        Ok(self
            .head_lock(key)?
            .and_then(|h| h.lock_mode.map(|m| (m.to_lowercase(), h.retain_until))))
    }

    fn lock_period(&self) -> Option<i64> {
        self.object_lock.map(|l| i64::from(l.days) * 86_400)
    }

    /// With an Object Lock set: PutObjectRetention on the key's first
    /// version, in the lock's mode, when its retain-until is earlier than
    /// `until` (S3 lets a lock be extended, never shortened in compliance
    /// mode).
    fn extend_lock(&self, key: &str, until: i64) -> Result<bool, StorageError> {
        let Some(lock) = self.object_lock else {
            return Ok(false);
        };
        let Some(first) = self
            .key_versions(key)?
            .into_iter()
            .find(|v| !v.delete_marker)
        else {
            return Ok(false);
        };
        let head = self.head_version(key, &first.version_id)?;
        if head
            .as_ref()
            .and_then(|h| h.retain_until)
            .is_some_and(|t| t >= until)
        {
            return Ok(false);
        }
        // A compliance lock stays one (S3 refuses to make it governance).
        let compliance = lock.mode == LockMode::Compliance
            || head
                .as_ref()
                .and_then(|h| h.lock_mode.as_deref())
                .is_some_and(|m| m.eq_ignore_ascii_case("compliance"));
        let full = self.full_key(key)?;
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        let version = first.version_id.clone();
        let retention = ObjectLockRetention::builder()
            .mode(match compliance {
                false => ObjectLockRetentionMode::Governance,
                true => ObjectLockRetentionMode::Compliance,
            })
            .retain_until_date(DateTime::from_secs(until))
            .build();
        let r = self.run(async move {
            client
                .put_object_retention()
                .bucket(bucket)
                .key(full)
                .version_id(version)
                .retention(retention)
                .send()
                .await
        })?;
        r.map(|_| true)
            .map_err(|e| self.describe("extend the lock of", key, &e))
    }

    /// With an Object Lock set, a missing key whose object versions are
    /// still there, under a delete marker: pg_ark, which deletes by
    /// version id under a lock, did not remove it.
    fn hidden(&self, key: &str) -> Result<bool, StorageError> {
        if self.object_lock.is_none() {
            return Ok(false);
        }
        let versions = self.key_versions(key)?;
        Ok(versions.iter().any(|v| !v.delete_marker)
            && versions.iter().any(|v| v.is_latest && v.delete_marker))
    }

    /// With an Object Lock set: the latest retain-until among the key's
    /// versions (a delete removes them all, so the longest lock decides;
    /// a legal hold holds for good), not only the current version's, which
    /// anyone with write access can put unlocked over a locked one.
    fn retained_until(&self, key: &str) -> Result<Option<i64>, StorageError> {
        if self.object_lock.is_none() {
            return Ok(None);
        }
        let mut until = None;
        for v in self.key_versions(key)?.iter().filter(|v| !v.delete_marker) {
            if let Some(h) = self.head_version(key, &v.version_id)? {
                if h.legal_hold {
                    return Ok(Some(i64::MAX));
                }
                until = until.max(h.retain_until);
            }
        }
        Ok(until)
    }
}

#[cfg(test)]
mod tests {
    use super::{order_versions, read_credentials_file, LockMode, ObjectLock, S3Options};
    use crate::storage::versioned::ObjectVersion;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credentials_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s3.credentials");
        let write = |text: &str, mode: u32| {
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(
            "# keys\n[other]\naws_access_key_id = NOPE\n[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s3cr3t/key\n",
            0o600,
        );
        assert_eq!(
            read_credentials_file(&file, None).unwrap(),
            ("AKIA1".to_string(), "s3cr3t/key".to_string())
        );
        // Inside the data directory: a physical backup would copy it.
        let e = read_credentials_file(&file, Some(dir.path())).unwrap_err();
        assert!(e.starts_with("it is inside the data directory"), "{e}");
        // Readable by everyone.
        write(
            "aws_access_key_id = A\naws_secret_access_key = s3cr3t\n",
            0o644,
        );
        let e = read_credentials_file(&file, None).unwrap_err();
        assert!(
            e.starts_with("other OS users can access it (mode 0644)"),
            "{e}"
        );
        // Incomplete, and errors never show the contents.
        write("aws_access_key_id = A-s3cr3t\n", 0o600);
        let e = read_credentials_file(&file, None).unwrap_err();
        assert!(
            e.contains("no aws_access_key_id and aws_secret_access_key"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = read_credentials_file(std::path::Path::new("relative"), None).unwrap_err();
        assert_eq!(e, "it must be an absolute path");
        let e = read_credentials_file(&dir.path().join("missing"), None).unwrap_err();
        assert!(e.starts_with("could not open it: "), "{e}");
    }

    #[test]
    fn versions_are_ordered_oldest_first_with_markers_by_time() {
        let e = |key: &str, id: &str, t: i64, latest: bool, marker: bool| ObjectVersion {
            key: key.into(),
            version_id: id.into(),
            last_modified: t,
            is_latest: latest,
            delete_marker: marker,
            size: 0,
        };
        // S3's order: per page the versions (by key, newest first), then
        // the delete markers apart.
        let listed = [
            e("a", "v3", 30, true, false),
            e("a", "v2", 20, false, false),
            e("a", "v1", 20, false, false),
            e("b", "v1", 5, true, false),
            e("a", "m2", 30, false, true),
            e("a", "m1", 20, false, true),
            e("c", "m1", 7, true, true),
        ];
        let ids: Vec<(String, String)> = order_versions(listed)
            .into_iter()
            .map(|v| (v.key, v.version_id))
            .collect();
        let want = [
            ("a", "v1"),
            ("a", "v2"),
            ("a", "m1"),
            ("a", "m2"),
            ("a", "v3"),
            ("b", "v1"),
            ("c", "m1"),
        ];
        assert_eq!(ids, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn debug_never_prints_the_secret_key() {
        let o = S3Options {
            access_key_id: Some("AKIAEXAMPLE".into()),
            secret_access_key: Some("wJalr-very-secret".into()),
            ..S3Options::default()
        };
        let shown = format!("{o:?} {o:#?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("object_lock: None"), "{shown}");
        let locked = S3Options {
            object_lock: Some(ObjectLock {
                mode: LockMode::Compliance,
                days: 30,
            }),
            ..o
        };
        let shown = format!("{locked:?}");
        assert!(shown.contains("mode: Compliance, days: 30"), "{shown}");
        assert!(
            shown.contains("AKIAEXAMPLE") && shown.contains("(hidden)"),
            "{shown}"
        );
        let none = format!("{:?}", S3Options::default());
        assert!(none.contains("secret_access_key: None"), "{none}");
    }
}
