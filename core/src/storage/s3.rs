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
//! Threads: the SDK is async, pg_ark's callers are not. Each `S3Storage` owns
//! a small multi-thread tokio runtime whose worker threads are created with
//! every signal blocked (so PostgreSQL's signal handlers only ever run on the
//! backend's own thread), and every request runs as a task on those workers;
//! the caller's thread only waits. The runtime is created when the storage is
//! opened, i.e. lazily in the process that uses it, never in the postmaster.
use super::{read_up_to, validate_key, ObjectInfo, PutMode, Storage, StorageError};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
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
    client: Client,
    runtime: tokio::runtime::Runtime,
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
            client,
            runtime,
        };
        storage.probe()?;
        Ok(storage)
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
        let created = self.run(async move {
            client
                .create_multipart_upload()
                .bucket(bucket)
                .key(full_c)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .send()
                .await
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
/// upload) or after the server completed it (remove the object).
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
        let full = self.full_key(key)?;
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        let r = self.run(async move {
            match client.get_object().bucket(bucket).key(full).send().await {
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
            Err(Ok(e)) if is_not_found(&e) => Err(StorageError::NotFound {
                key: key.into(),
                location: self.location(),
            }),
            Err(Ok(e)) => Err(self.describe("read", key, &e)),
            // The body broke off mid-transfer (a reset, a timeout): the
            // network, so trying again may succeed.
            Err(Err(msg)) => Err(StorageError::Unavailable {
                location: self.location(),
                message: format!("could not read \"{key}\": {msg}"),
            }),
        }
    }

    fn get_reader<'a>(
        &'a self,
        key: &str,
    ) -> Result<Box<dyn std::io::Read + Send + 'a>, StorageError> {
        let full = self.full_key(key)?;
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        let r =
            self.run(async move { client.get_object().bucket(bucket).key(full).send().await })?;
        match r {
            Ok(out) => Ok(Box::new(S3Body {
                storage: self,
                key: key.to_string(),
                body: Some(out.body),
                chunk: Vec::new(),
                at: 0,
            })),
            Err(e) if is_not_found(&e) => Err(StorageError::NotFound {
                key: key.into(),
                location: self.location(),
            }),
            Err(e) => Err(self.describe("read", key, &e)),
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let full = self.full_key(key)?;
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        match self.run(async move { client.head_object().bucket(bucket).key(full).send().await })? {
            Ok(out) => Ok(Some(ObjectInfo {
                key: key.into(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.describe("stat", key, &e)),
        }
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
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        match self
            .run(async move { client.delete_object().bucket(bucket).key(full).send().await })?
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.describe("delete", key, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{read_credentials_file, S3Options};
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
    fn debug_never_prints_the_secret_key() {
        let o = S3Options {
            access_key_id: Some("AKIAEXAMPLE".into()),
            secret_access_key: Some("wJalr-very-secret".into()),
            ..S3Options::default()
        };
        let shown = format!("{o:?} {o:#?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(
            shown.contains("AKIAEXAMPLE") && shown.contains("(hidden)"),
            "{shown}"
        );
        let none = format!("{:?}", S3Options::default());
        assert!(none.contains("secret_access_key: None"), "{none}");
    }
}
