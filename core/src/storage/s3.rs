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
//! - `list`: ListObjectsV2, all pages; S3 returns keys in binary order.
//! - `delete`: DeleteObject, which S3 already treats as idempotent.
//!
//! Threads: the SDK is async, pg_ark's callers are not. Each `S3Storage` owns
//! a small multi-thread tokio runtime whose worker threads are created with
//! every signal blocked (so PostgreSQL's signal handlers only ever run on the
//! backend's own thread), and every request runs as a task on those workers;
//! the caller's thread only waits. The runtime is created when the storage is
//! opened, i.e. lazily in the process that uses it, never in the postmaster.
use super::{validate_key, ObjectInfo, PutMode, Storage, StorageError};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use base64::Engine;
use std::future::Future;
use std::time::Duration;

/// Where and how to reach S3. Unset credentials mean the standard AWS chain
/// (environment, profile, web identity/IRSA, container and instance roles).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub force_path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
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
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(5))
                        .operation_attempt_timeout(Duration::from_secs(120))
                        .build(),
                )
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
        let what = match err {
            SdkError::ServiceError(se) => {
                let e = se.err();
                let code = e.code().unwrap_or("error");
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
        self.backend(format!("could not {op} \"{key}\": {what}"))
    }
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
                    .map_err(|e| Err(e.to_string())),
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
            Err(Err(msg)) => Err(self.backend(format!("could not read \"{key}\": {msg}"))),
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
        if mode == PutMode::Create && self.head(key)?.is_some() {
            return Err(StorageError::AlreadyExists {
                key: key.into(),
                location: self.location(),
            });
        }
        let sha =
            base64::engine::general_purpose::STANDARD.encode(crate::repo::envelope::sha256(data));
        let (client, bucket, body, sha_c) = (
            self.client.clone(),
            self.bucket.clone(),
            data.to_vec(),
            sha.clone(),
        );
        let r = self.run(async move {
            let mut req = client
                .put_object()
                .bucket(bucket)
                .key(full)
                .checksum_sha256(sha_c)
                .content_length(body.len() as i64)
                .body(ByteStream::from(body));
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
            Err(e) if status_of(&e) == Some(412) => {
                Err(StorageError::AlreadyExists { key: key.into(), location: self.location() })
            }
            Err(e) => Err(self.describe("store", key, &e)),
        }
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
