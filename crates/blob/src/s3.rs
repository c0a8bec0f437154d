//! The S3 backend: any S3-compatible store (MinIO, Garage, RustFS, SeaweedFS, Ceph RGW,
//! AWS), keys `<prefix>blobs/sha256/<2 hex>/<64 hex>`.
//!
//! Upload strategy (nothing unverified ever becomes visible under a blob key):
//! - body of at most one part: buffered, hashed, checked, then one PutObject;
//! - larger body with a declared digest: a multipart upload straight to the final key,
//!   hashed while streaming, completed only if the digest matches, aborted otherwise;
//! - larger body without a digest: a multipart upload to `<prefix>staging/…`, then a
//!   server-side copy to the final key (UploadPartCopy above 5 GiB) and a delete.
//!
//! Every failure path aborts its multipart upload (a drop guard covers cancellation);
//! [`S3BlobStore::sweep_stale`] aborts uploads and removes staging objects that a killed
//! process left behind, but only those older than a given age, so that replicas sharing
//! a bucket never abort each other's uploads in flight.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use artifactstore_model::secret::Secret;
use artifactstore_model::{Digest, Hasher};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};

use crate::{
    BlobMeta, BlobRead, BlobStore, ByteStream, Capabilities, Error, PutOutcome, Result, verify_only,
};

/// S3 refuses parts smaller than this (except the last).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// Largest object CopyObject can copy in one request.
const MAX_SINGLE_COPY: u64 = 5 << 30;
const COPY_PART: u64 = 1 << 30;

/// When the SDK adds checksum headers and validates checksums of responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    /// Only where the S3 API requires one. Works with older MinIO and most stores.
    #[default]
    WhenRequired,
    /// Whenever the operation supports one (the SDK's own default); some stores reject it.
    WhenSupported,
}

/// Where and how to reach the bucket. Credentials are passed separately.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:9000`; `None` means AWS.
    pub endpoint_url: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Key prefix for everything this store writes, e.g. `artifacts/` (may be empty).
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`); virtual-host style otherwise.
    pub path_style: bool,
    /// PEM bundle of extra CA certificates to trust, for a private endpoint.
    pub ca_bundle: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub checksum: ChecksumMode,
    pub part_size: usize,
    /// Parts uploaded at once; memory per upload ≈ part_size × (concurrency + 1).
    pub concurrency: usize,
    /// Attempts per request (first try included) for throttling, 5xx and network errors.
    pub max_attempts: u32,
}

impl S3Config {
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            endpoint_url: None,
            region: "us-east-1".into(),
            bucket: bucket.into(),
            prefix: String::new(),
            path_style: true,
            ca_bundle: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            checksum: ChecksumMode::WhenRequired,
            part_size: 8 << 20,
            concurrency: 4,
            max_attempts: 5,
        }
    }
}

/// Static credentials: an access key id and its secret, and a session token for
/// temporary credentials.
#[derive(Clone, Debug)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// What a failed S3 call means, whatever store answered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendErrorKind {
    BucketNotFound,
    AccessDenied,
    InvalidAccessKeyId,
    SignatureMismatch,
    ExpiredToken,
    InvalidToken,
    SlowDown,
    Unreachable,
    Timeout,
    PreconditionFailed,
    NotImplemented,
    ServerError,
    Other,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendErrorKind::BucketNotFound => "the bucket does not exist",
            BackendErrorKind::AccessDenied => "access denied",
            BackendErrorKind::InvalidAccessKeyId => "the store does not know this access key id",
            BackendErrorKind::SignatureMismatch => {
                "signature mismatch: the secret key does not belong to this access key id"
            }
            BackendErrorKind::ExpiredToken => "the credentials have expired",
            BackendErrorKind::InvalidToken => "the session token is invalid",
            BackendErrorKind::SlowDown => "the store asked to slow down",
            BackendErrorKind::Unreachable => "cannot connect to the endpoint",
            BackendErrorKind::Timeout => "the request timed out",
            BackendErrorKind::PreconditionFailed => "precondition failed",
            BackendErrorKind::NotImplemented => "not implemented by this store",
            BackendErrorKind::ServerError => "the store failed (5xx)",
            BackendErrorKind::Other => "request failed",
        })
    }
}

impl BackendErrorKind {
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            BackendErrorKind::SlowDown
                | BackendErrorKind::Unreachable
                | BackendErrorKind::Timeout
                | BackendErrorKind::ServerError
        )
    }
}

const COND_UNKNOWN: u8 = 0;
const COND_YES: u8 = 1;
const COND_NO: u8 = 2;

pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
    part_size: usize,
    concurrency: usize,
    /// Longest wait for the next chunk of a download body: the SDK's read timeout only
    /// covers the first byte.
    read_timeout: Duration,
    /// Whether the store honours `If-None-Match: *` on writes; probed once.
    conditional_create: AtomicU8,
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Told the key id of a request the store refused because of its credential, so that
/// the provider fetches a new one; answers whether it did.
pub type OnRejected = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Error codes that mean "this credential", not "this request": a fresh credential
/// may succeed.
const CREDENTIAL_CODES: [&str; 5] = [
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "InvalidToken",
    "TokenRefreshRequired",
];

/// One [`CredentialRejected`] serves as interceptor and classifier.
#[derive(Debug, Clone)]
struct SharedCredentialRejected(Arc<CredentialRejected>);

impl aws_sdk_s3::config::Intercept for SharedCredentialRejected {
    fn name(&self) -> &'static str {
        "credential rejected"
    }

    fn read_after_signing(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        rc: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        self.0.read_after_signing(context, rc, cfg)
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::FinalizerInterceptorContextMut<'_>,
        rc: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        self.0.modify_before_attempt_completion(context, rc, cfg)
    }
}

impl aws_sdk_s3::config::retry::ClassifyRetry for SharedCredentialRejected {
    fn classify_retry(
        &self,
        ctx: &aws_sdk_s3::config::interceptors::InterceptorContext,
    ) -> aws_sdk_s3::config::retry::RetryAction {
        self.0.classify_retry(ctx)
    }

    fn name(&self) -> &'static str {
        "credential rejected"
    }
}

/// Marks a response that should be retried with a fresh credential.
const RETRY_MARK: &str = "x-artifactstore-retry-with-fresh-credential";

/// Whether a response refuses the request's credential. A refused HEAD has no body to
/// say why: it counts too.
fn refuses_credential(resp: &aws_sdk_s3::config::http::HttpResponse) -> bool {
    let status = resp.status().as_u16();
    if !matches!(status, 400 | 403) {
        return false;
    }
    let body = resp
        .body()
        .bytes()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    if body.is_empty() {
        return status == 403;
    }
    let code = body
        .find("<Code>")
        .and_then(|i| body[i + 6..].split('<').next())
        .unwrap_or("");
    CREDENTIAL_CODES.contains(&code)
}

/// The key id a request was signed with, kept for the attempt's end.
#[derive(Debug, Clone)]
struct SignedWith(String);

impl aws_smithy_types::config_bag::Storable for SignedWith {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// Set once a request has been retried for its credential: never twice.
#[derive(Debug, Clone)]
struct RetriedForCredential;

impl aws_smithy_types::config_bag::Storable for RetriedForCredential {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// Remembers which key signed each attempt; when the store refuses it, has the
/// provider fetch a new credential and marks the response for one retry (per request,
/// whatever the SDK's attempt budget). The classifier below only reads the mark, since
/// the SDK runs classifiers more than once per attempt.
struct CredentialRejected {
    on_rejected: OnRejected,
}

impl fmt::Debug for CredentialRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialRejected")
    }
}

impl aws_sdk_s3::config::Intercept for CredentialRejected {
    fn name(&self) -> &'static str {
        "credential rejected"
    }

    fn read_after_signing(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        // `Credential=<key id>/<date>/<region>/s3/aws4_request`
        if let Some(key) = context
            .request()
            .headers()
            .get("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').next())
        {
            cfg.interceptor_state()
                .store_put(SignedWith(key.to_owned()));
        }
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::FinalizerInterceptorContextMut<'_>,
        _rc: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        let Some(resp) = context.response_mut() else {
            return Ok(());
        };
        if !refuses_credential(resp) || cfg.load::<RetriedForCredential>().is_some() {
            return Ok(());
        }
        let key = cfg
            .load::<SignedWith>()
            .map(|k| k.0.clone())
            .unwrap_or_default();
        (self.on_rejected)(&key);
        cfg.interceptor_state().store_put(RetriedForCredential);
        resp.headers_mut().insert(RETRY_MARK, "1");
        tracing::info!("the store refused the credential; retrying once with a fresh one");
        Ok(())
    }
}

impl aws_sdk_s3::config::retry::ClassifyRetry for CredentialRejected {
    fn classify_retry(
        &self,
        ctx: &aws_sdk_s3::config::interceptors::InterceptorContext,
    ) -> aws_sdk_s3::config::retry::RetryAction {
        use aws_sdk_s3::config::retry::RetryAction;
        match ctx.response() {
            Some(resp) if resp.headers().contains_key(RETRY_MARK) => RetryAction::transient_error(),
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "credential rejected"
    }
}

impl S3BlobStore {
    /// Builds the client. Makes no request: see [`probe`](Self::probe) and
    /// [`head_bucket`](Self::head_bucket).
    pub fn new(cfg: S3Config, creds: S3Credentials) -> Result<Self> {
        let credentials = Credentials::new(
            creds.access_key_id,
            creds.secret_access_key.expose(),
            creds.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "artifactstore-static",
        );
        Self::build(cfg, SharedCredentialsProvider::new(credentials), None)
    }

    /// Builds the client on a credentials provider that refreshes (temporary
    /// credentials). The SDK's own identity cache is off, so every request — each part
    /// of a multipart upload included — is signed with what `provider` holds now. A
    /// request refused because of its credential (`ExpiredToken`, `InvalidAccessKeyId`,
    /// `InvalidToken`, or a bodiless 403 to a HEAD) calls `on_rejected` with the key id
    /// it was signed with; when that returns true the request is retried (by then the
    /// provider holds, or will fetch, another credential).
    pub fn with_provider(
        cfg: S3Config,
        provider: SharedCredentialsProvider,
        on_rejected: OnRejected,
    ) -> Result<Self> {
        Self::build(cfg, provider, Some(on_rejected))
    }

    fn build(
        cfg: S3Config,
        provider: SharedCredentialsProvider,
        on_rejected: Option<OnRejected>,
    ) -> Result<Self> {
        if cfg.part_size < MIN_PART_SIZE {
            return Err(Error::Config(format!(
                "part size {} is below the S3 minimum of {MIN_PART_SIZE} bytes",
                cfg.part_size
            )));
        }
        if cfg.bucket.is_empty() {
            return Err(Error::Config("the bucket name is empty".into()));
        }
        let (request, response) = match cfg.checksum {
            ChecksumMode::WhenRequired => (
                RequestChecksumCalculation::WhenRequired,
                ResponseChecksumValidation::WhenRequired,
            ),
            ChecksumMode::WhenSupported => (
                RequestChecksumCalculation::WhenSupported,
                ResponseChecksumValidation::WhenSupported,
            ),
        };
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(provider)
            .force_path_style(cfg.path_style)
            .request_checksum_calculation(request)
            .response_checksum_validation(response)
            .retry_config(RetryConfig::standard().with_max_attempts(cfg.max_attempts.max(1)))
            // Downloads are paced by our client's reader, so the SDK's throughput check
            // would misfire; `body_stream` bounds a store that stops sending instead.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(cfg.connect_timeout)
                    .read_timeout(cfg.read_timeout)
                    .build(),
            );
        if let Some(endpoint) = &cfg.endpoint_url {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(ca) = &cfg.ca_bundle {
            builder = builder.http_client(http_client_with_ca(ca)?);
        }
        if let Some(on_rejected) = on_rejected {
            let rejected = Arc::new(CredentialRejected { on_rejected });
            builder = builder
                .identity_cache(aws_sdk_s3::config::IdentityCache::no_cache())
                .interceptor(SharedCredentialRejected(rejected.clone()))
                .retry_classifier(SharedCredentialRejected(rejected));
        }
        let mut prefix = cfg.prefix.trim_start_matches('/').to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(S3BlobStore {
            client: Client::from_conf(builder.build()),
            endpoint: cfg
                .endpoint_url
                .clone()
                .unwrap_or_else(|| format!("AWS S3 ({})", cfg.region)),
            bucket: cfg.bucket,
            prefix,
            part_size: cfg.part_size,
            concurrency: cfg.concurrency.max(1),
            read_timeout: cfg.read_timeout,
            conditional_create: AtomicU8::new(COND_UNKNOWN),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn key(&self, digest: &Digest) -> String {
        let hex = digest.hex();
        format!("{}blobs/sha256/{}/{}", self.prefix, &hex[..2], hex)
    }

    fn blobs_prefix(&self) -> String {
        format!("{}blobs/sha256/", self.prefix)
    }

    fn staging_prefix(&self) -> String {
        format!("{}staging/", self.prefix)
    }

    fn staging_key(&self) -> String {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "{}{}-{}-{}",
            self.staging_prefix(),
            nanos,
            std::process::id(),
            STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn err<E>(&self, op: &'static str, key: Option<&str>, e: SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let target = match key {
            Some(k) => format!("s3://{}/{} at {}", self.bucket, k, self.endpoint),
            None => format!("s3://{} at {}", self.bucket, self.endpoint),
        };
        let (kind, detail) = classify(&e);
        Error::Backend {
            op,
            target,
            kind,
            detail,
        }
    }

    /// Proves the bucket exists and the credentials may use it.
    pub async fn head_bucket(&self) -> Result<()> {
        let Err(e) = self.client.head_bucket().bucket(&self.bucket).send().await else {
            return Ok(());
        };
        let head_error = self.err("HeadBucket", None, e);
        if !matches!(
            &head_error,
            Error::Backend {
                kind: BackendErrorKind::AccessDenied | BackendErrorKind::Other,
                ..
            }
        ) {
            return Err(head_error);
        }
        // Answers to HEAD carry no error body, so a 403 or 404 does not say why. Ask again
        // with a GET, whose answer names the cause (signature, key id, bucket).
        match self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .max_keys(1)
            .send()
            .await
        {
            Err(e) => Err(self.err("ListObjectsV2", None, e)),
            Ok(_) => Err(head_error),
        }
    }

    /// Probes once whether the store honours `If-None-Match: *` on PutObject (it must
    /// refuse the second of two conditional writes of one key), and remembers it.
    /// Stores that answer 501 or 400, or silently overwrite, get HEAD-then-PUT instead.
    pub async fn probe(&self) -> Result<bool> {
        let key = format!(
            "{}probe/conditional-{}",
            self.prefix,
            self.staging_key().rsplit('/').next().unwrap_or("x")
        );
        let put = || {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .if_none_match("*")
                .body(SdkBody::from_static(b"artifactstore probe"))
                .send()
        };
        let supported = match put().await {
            Err(e) => {
                let (kind, _) = classify(&e);
                let status = e.raw_response().map(|r| r.status().as_u16());
                if kind == BackendErrorKind::NotImplemented || matches!(status, Some(400 | 501)) {
                    Ok(false)
                } else {
                    Err(self.err("PutObject (probe)", Some(&key), e))
                }
            }
            Ok(_) => match put().await {
                Err(e) if is_precondition_failed(&e) => Ok(true),
                Ok(_) => Ok(false),
                Err(e) => Err(self.err("PutObject (probe)", Some(&key), e)),
            },
        };
        let _ = self.delete_key(&key).await;
        let supported = supported?;
        self.conditional_create.store(
            if supported { COND_YES } else { COND_NO },
            Ordering::Relaxed,
        );
        tracing::info!(
            bucket = %self.bucket,
            endpoint = %self.endpoint,
            conditional_create = supported,
            "probed the S3 store"
        );
        Ok(supported)
    }

    /// Whether conditional create is in use (`None` before [`probe`](Self::probe)).
    pub fn conditional_create(&self) -> Option<bool> {
        match self.conditional_create.load(Ordering::Relaxed) {
            COND_YES => Some(true),
            COND_NO => Some(false),
            _ => None,
        }
    }

    /// Aborts multipart uploads and deletes staging objects under our prefix that are
    /// older than `older_than`. Returns (uploads aborted, staging objects deleted).
    pub async fn sweep_stale(&self, older_than: Duration) -> Result<(usize, usize)> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let is_stale = |t: Option<&aws_smithy_types::DateTime>| {
            t.and_then(|t| SystemTime::try_from(*t).ok())
                .is_some_and(|t| t <= cutoff)
        };
        let mut aborted = 0;
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = match self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.err("ListMultipartUploads", None, e))
            {
                Ok(page) => page,
                Err(Error::Backend {
                    kind: BackendErrorKind::NotImplemented,
                    ..
                }) => {
                    tracing::warn!(bucket = %self.bucket, "the store cannot list multipart uploads; abandoned uploads cannot be swept");
                    break;
                }
                Err(e) => return Err(e),
            };
            for upload in page.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id())
                    && (key.starts_with(&self.blobs_prefix())
                        || key.starts_with(&self.staging_prefix()))
                    && is_stale(upload.initiated())
                {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                        .map_err(|e| self.err("AbortMultipartUpload", Some(key), e))?;
                    aborted += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        let mut deleted = 0;
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.staging_prefix())
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.err("ListObjectsV2", None, e))?;
            for obj in page.contents() {
                if let Some(key) = obj.key()
                    && is_stale(obj.last_modified())
                {
                    self.delete_key(key).await?;
                    deleted += 1;
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        if aborted + deleted > 0 {
            tracing::info!(aborted, deleted, bucket = %self.bucket, "swept stale uploads");
        }
        Ok((aborted, deleted))
    }

    /// Multipart uploads in progress under our prefix (for tests and `storage verify`).
    pub async fn multipart_uploads_in_progress(&self) -> Result<usize> {
        let page = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .send()
            .await
            .map_err(|e| self.err("ListMultipartUploads", None, e))?;
        Ok(page.uploads().len())
    }

    /// Keys of staging objects under our prefix (for tests and diagnostics).
    pub async fn staging_objects(&self) -> Result<Vec<String>> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.staging_prefix())
            .send()
            .await
            .map_err(|e| self.err("ListObjectsV2", None, e))?;
        Ok(page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect())
    }

    async fn delete_key(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteObject", Some(key), e))
    }

    async fn exists(&self, key: &str) -> Result<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(None),
            Err(e) => Err(self.err("HeadObject", Some(key), e)),
        }
    }

    /// Writes a small, already verified blob. False if it was already there.
    async fn put_whole(&self, key: &str, data: Bytes) -> Result<bool> {
        let conditional = self.conditional_create() == Some(true);
        if !conditional && self.exists(key).await?.is_some() {
            return Ok(false);
        }
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(data.len() as i64)
            .body(SdkBody::from(data));
        if conditional {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_precondition_failed(&e) => Ok(false),
            Err(e) => Err(self.err("PutObject", Some(key), e)),
        }
    }

    async fn create_multipart(&self, key: &str) -> Result<MultipartGuard> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", Some(key), e))?;
        let upload_id = out.upload_id().ok_or_else(|| Error::Backend {
            op: "CreateMultipartUpload",
            target: format!("s3://{}/{} at {}", self.bucket, key, self.endpoint),
            kind: BackendErrorKind::Other,
            detail: "the store returned no upload id".into(),
        })?;
        Ok(MultipartGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            armed: true,
        })
    }

    /// Streams the rest of the body as parts (the first part is already read).
    async fn upload_parts(
        &self,
        guard: &MultipartGuard,
        first: Bytes,
        reader: &mut PartReader,
    ) -> Result<Vec<CompletedPart>> {
        // A JoinSet aborts its tasks when dropped: on any error below (and on cancellation)
        // no part upload keeps running while the multipart upload is being aborted.
        let mut in_flight = tokio::task::JoinSet::new();
        let mut parts = Vec::new();
        let mut number = 1i32;
        let mut buf = first;
        loop {
            let (client, bucket, key, id) = (
                self.client.clone(),
                guard.bucket.clone(),
                guard.key.clone(),
                guard.upload_id.clone(),
            );
            let part_number = number;
            let len = buf.len();
            let body = buf;
            in_flight.spawn(async move {
                client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(part_number)
                    .content_length(len as i64)
                    .body(SdkBody::from(body))
                    .send()
                    .await
                    .map(|out| {
                        CompletedPart::builder()
                            .part_number(part_number)
                            .set_e_tag(out.e_tag().map(str::to_owned))
                            .build()
                    })
            });
            number += 1;
            while in_flight.len() >= self.concurrency {
                parts.push(
                    self.joined_part(&guard.key, in_flight.join_next().await)
                        .await?,
                );
            }
            buf = reader.next_part(self.part_size).await?;
            if buf.is_empty() {
                break;
            }
        }
        while let Some(done) = in_flight.join_next().await {
            parts.push(self.joined_part(&guard.key, Some(done)).await?);
        }
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    async fn joined_part<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        key: &str,
        done: Option<
            std::result::Result<
                std::result::Result<CompletedPart, SdkError<E>>,
                tokio::task::JoinError,
            >,
        >,
    ) -> Result<CompletedPart> {
        match done {
            Some(Ok(Ok(part))) => Ok(part),
            Some(Ok(Err(e))) => Err(self.err("UploadPart", Some(key), e)),
            Some(Err(e)) => Err(Error::Task(e.to_string())),
            None => Err(Error::Task("no part upload in flight".into())),
        }
    }

    /// Completes a multipart upload; false if a conditional completion found the key taken.
    async fn complete(
        &self,
        guard: &mut MultipartGuard,
        parts: Vec<CompletedPart>,
        conditional: bool,
    ) -> Result<bool> {
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&guard.key)
            .upload_id(&guard.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts.clone()))
                    .build(),
            );
        if conditional {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => {
                guard.armed = false;
                Ok(true)
            }
            Err(e) if conditional && is_precondition_failed(&e) => Ok(false), // guard aborts
            Err(e)
                if conditional
                    && e.raw_response()
                        .is_some_and(|r| matches!(r.status().as_u16(), 400 | 501)) =>
            {
                // Some stores honour the condition on PutObject only. The parts are
                // verified, so completing without it is safe (same bytes, same key).
                Box::pin(self.complete(guard, parts, false)).await
            }
            Err(e) => Err(self.err("CompleteMultipartUpload", Some(&guard.key), e)),
        }
    }

    /// Server-side copy of a staged object to its content address.
    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let source = format!("{}/{}", self.bucket, encode_key(from));
        if size <= MAX_SINGLE_COPY {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(&source)
                .send()
                .await
                .map_err(|e| self.err("CopyObject", Some(to), e))?;
            return Ok(());
        }
        let mut guard = self.create_multipart(to).await?;
        let mut parts = Vec::new();
        let mut start = 0u64;
        let mut number = 1;
        while start < size {
            let end = (start + COPY_PART).min(size) - 1;
            let out = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(to)
                .upload_id(&guard.upload_id)
                .part_number(number)
                .copy_source(&source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await
                .map_err(|e| self.err("UploadPartCopy", Some(to), e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(
                        out.copy_part_result()
                            .and_then(|r| r.e_tag())
                            .map(str::to_owned),
                    )
                    .build(),
            );
            start = end + 1;
            number += 1;
        }
        self.complete(&mut guard, parts, false).await?;
        Ok(())
    }
}

/// 412, or 409 (AWS: a conditional write that raced another one for the same key).
fn is_precondition_failed<E>(e: &SdkError<E>) -> bool {
    e.raw_response()
        .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412))
}

/// Maps an SDK error to a kind and a one-line, secret-free detail.
fn classify<E>(e: &SdkError<E>) -> (BackendErrorKind, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use BackendErrorKind as K;
    match e {
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                K::Timeout
            } else {
                K::Unreachable
            };
            (kind, source_chain(e))
        }
        SdkError::TimeoutError(_) => (K::Timeout, "no answer in time".into()),
        SdkError::ResponseError(_) => (K::Other, format!("unreadable answer: {}", source_chain(e))),
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            let message = se.err().message().unwrap_or("");
            let kind = match code {
                "NoSuchBucket" => K::BucketNotFound,
                "AccessDenied" | "AllAccessDisabled" | "Forbidden" => K::AccessDenied,
                "InvalidAccessKeyId" => K::InvalidAccessKeyId,
                "SignatureDoesNotMatch" => K::SignatureMismatch,
                "ExpiredToken" | "TokenRefreshRequired" => K::ExpiredToken,
                "InvalidToken" => K::InvalidToken,
                "SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
                    K::SlowDown
                }
                "PreconditionFailed" => K::PreconditionFailed,
                "NotImplemented" => K::NotImplemented,
                _ => match status {
                    403 => K::AccessDenied,
                    412 => K::PreconditionFailed,
                    429 | 503 => K::SlowDown,
                    501 => K::NotImplemented,
                    500..=599 => K::ServerError,
                    _ => K::Other,
                },
            };
            let code = if code.is_empty() {
                "no error code"
            } else {
                code
            };
            (kind, format!("HTTP {status} {code}: {message}"))
        }
        _ => (K::Other, source_chain(e)),
    }
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/` and unreserved characters.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn http_client_with_ca(path: &std::path::Path) -> Result<aws_sdk_s3::config::SharedHttpClient> {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let pem = std::fs::read(path).map_err(|source| Error::Io {
        op: "read CA bundle",
        path: path.to_owned(),
        source,
    })?;
    let ctx = TlsContext::builder()
        .with_trust_store(TrustStore::default().with_pem_certificate(pem))
        .build()
        .map_err(|e| Error::Config(format!("CA bundle {}: {e}", path.display())))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(ctx)
        .build_https())
}

/// Aborts its multipart upload when dropped armed: on every error path and when the
/// upload future is cancelled.
struct MultipartGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl MultipartGuard {
    async fn abort(mut self) {
        self.armed = false;
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
    }
}

impl Drop for MultipartGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (client, bucket, key, id) = (
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await;
            });
        }
    }
}

/// Cuts a body stream into parts of a fixed size, hashing everything it reads.
struct PartReader {
    body: ByteStream,
    carry: Bytes,
    hasher: Hasher,
    size: u64,
    done: bool,
}

impl PartReader {
    fn new(body: ByteStream) -> Self {
        PartReader {
            body,
            carry: Bytes::new(),
            hasher: Hasher::new(),
            size: 0,
            done: false,
        }
    }

    /// The next `part_size` bytes, fewer at the end, empty when the body is exhausted.
    async fn next_part(&mut self, part_size: usize) -> Result<Bytes> {
        let mut buf = BytesMut::with_capacity(part_size.min(self.carry.len().max(64 << 10)).max(1));
        loop {
            if !self.carry.is_empty() {
                let take = (part_size - buf.len()).min(self.carry.len());
                buf.extend_from_slice(&self.carry.split_to(take));
                if buf.len() == part_size {
                    return Ok(buf.freeze());
                }
            }
            if self.done {
                return Ok(buf.freeze());
            }
            match self.body.next().await {
                None => self.done = true,
                Some(Err(e)) => return Err(Error::Body(e)),
                Some(Ok(chunk)) => {
                    self.hasher.update(&chunk);
                    self.size += chunk.len() as u64;
                    if buf.capacity() < part_size {
                        buf.reserve(part_size - buf.len());
                    }
                    self.carry = chunk;
                }
            }
        }
    }

    fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.size)
    }
}

#[async_trait::async_trait]
impl BlobStore for S3BlobStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "s3",
            ranged_reads: true,
            atomic_publish: true,
            ordered_list: true,
        }
    }

    async fn put(&self, body: ByteStream, expected: Option<Digest>) -> Result<PutOutcome> {
        if let Some(d) = expected
            && self.exists(&self.key(&d)).await?.is_some()
        {
            return verify_only(body, d).await;
        }
        let mut reader = PartReader::new(body);
        let first = reader.next_part(self.part_size).await?;
        if first.len() < self.part_size {
            // The whole body is in memory: verify, then write it in one request.
            let (digest, size) = reader.finish();
            if let Some(expected) = expected
                && expected != digest
            {
                return Err(Error::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
            let created = self.put_whole(&self.key(&digest), first).await?;
            return Ok(PutOutcome {
                digest,
                size,
                created,
            });
        }

        let target = match &expected {
            Some(d) => self.key(d),
            None => self.staging_key(),
        };
        let mut guard = self.create_multipart(&target).await?;
        let parts = match self.upload_parts(&guard, first, &mut reader).await {
            Ok(parts) => parts,
            Err(e) => {
                guard.abort().await;
                return Err(e);
            }
        };
        let (digest, size) = reader.finish();
        if let Some(expected) = expected {
            if expected != digest {
                guard.abort().await;
                return Err(Error::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
            let conditional = self.conditional_create() == Some(true);
            let created = self.complete(&mut guard, parts, conditional).await?;
            if !created {
                guard.abort().await;
            }
            return Ok(PutOutcome {
                digest,
                size,
                created,
            });
        }

        // Staged: now that the digest is known, copy into place unless it is there.
        self.complete(&mut guard, parts, false).await?;
        let final_key = self.key(&digest);
        let result = match self.exists(&final_key).await {
            Ok(Some(_)) => Ok(false),
            Ok(None) => self.copy(&target, &final_key, size).await.map(|()| true),
            Err(e) => Err(e),
        };
        if let Err(e) = self.delete_key(&target).await {
            tracing::warn!(error = %e, "could not delete a staging object; the start-up sweep will");
        }
        Ok(PutOutcome {
            digest,
            size,
            created: result?,
        })
    }

    async fn get(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobRead> {
        let key = self.key(digest);
        let not_found = |e: &SdkError<aws_sdk_s3::operation::get_object::GetObjectError>| matches!(e, SdkError::ServiceError(se) if se.err().is_no_such_key());
        if let Some(r) = &range
            && (r.start >= r.end)
        {
            // S3 cannot express an empty range: check the size and send nothing.
            let size = self
                .exists(&key)
                .await?
                .ok_or(Error::NotFound { digest: *digest })?;
            if r.start > r.end || r.end > size {
                return Err(Error::InvalidRange {
                    start: r.start,
                    end: r.end,
                    size,
                });
            }
            return Ok(BlobRead {
                size,
                range: r.clone(),
                body: futures::stream::empty().boxed(),
            });
        }
        let mut req = self.client.get_object().bucket(&self.bucket).key(&key);
        if let Some(r) = &range {
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) if not_found(&e) => return Err(Error::NotFound { digest: *digest }),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                let size = self.exists(&key).await?.unwrap_or(0);
                let r = range.unwrap_or(0..0);
                return Err(Error::InvalidRange {
                    start: r.start,
                    end: r.end,
                    size,
                });
            }
            Err(e) => return Err(self.err("GetObject", Some(&key), e)),
        };
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        let (size, range) = match (&range, out.content_range()) {
            (None, _) => (len, 0..len),
            (Some(r), Some(cr)) => {
                let total = cr
                    .rsplit('/')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(len);
                if r.end > total {
                    return Err(Error::InvalidRange {
                        start: r.start,
                        end: r.end,
                        size: total,
                    });
                }
                (total, r.clone())
            }
            // A store that ignored the range sent everything.
            (Some(r), None) => {
                if r.end > len {
                    return Err(Error::InvalidRange {
                        start: r.start,
                        end: r.end,
                        size: len,
                    });
                }
                let skip = r.start as usize;
                let want = (r.end - r.start) as usize;
                let body = skip_take(
                    body_stream(out.body, self.endpoint.clone(), self.read_timeout),
                    skip,
                    want,
                );
                return Ok(BlobRead {
                    size: len,
                    range: r.clone(),
                    body,
                });
            }
        };
        Ok(BlobRead {
            size,
            range,
            body: body_stream(out.body, self.endpoint.clone(), self.read_timeout),
        })
    }

    async fn head(&self, digest: &Digest) -> Result<Option<BlobMeta>> {
        Ok(self.exists(&self.key(digest)).await?.map(|size| BlobMeta {
            digest: *digest,
            size,
        }))
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        let key = self.key(digest);
        if self.exists(&key).await?.is_none() {
            return Ok(false);
        }
        self.delete_key(&key).await?;
        Ok(true)
    }

    async fn list(&self, after: Option<Digest>, limit: usize) -> Result<Vec<BlobMeta>> {
        let prefix = self.blobs_prefix();
        let mut out = Vec::new();
        let mut start_after = after.map(|d| self.key(&d));
        let mut token: Option<String> = None;
        while out.len() < limit {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_start_after(if token.is_none() {
                    start_after.take()
                } else {
                    None
                })
                .set_continuation_token(token.clone())
                .max_keys((limit - out.len()).min(1000) as i32)
                .send()
                .await
                .map_err(|e| self.err("ListObjectsV2", None, e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                let Some(hex) = key.rsplit('/').next() else {
                    continue;
                };
                let Ok(digest) = Digest::from_hex(hex) else {
                    continue;
                };
                if after.is_some_and(|a| digest <= a) {
                    continue;
                }
                out.push(BlobMeta {
                    digest,
                    size: obj.size().unwrap_or(0).max(0) as u64,
                });
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() || page.contents().is_empty() {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// Adapts the SDK's body to our stream type.
fn body_stream(body: SdkBody, endpoint: String, idle: Duration) -> ByteStream {
    futures::stream::unfold(Some(body), move |body| {
        let endpoint = endpoint.clone();
        async move {
            let mut body = body?;
            let Ok(next) = tokio::time::timeout(idle, body.try_next()).await else {
                let msg = format!("reading from {endpoint}: no data for {} s", idle.as_secs());
                return Some((
                    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, msg)),
                    None,
                ));
            };
            match next {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                Ok(None) => None,
                Err(e) => Some((
                    Err(std::io::Error::other(format!(
                        "reading from {endpoint}: {}",
                        source_chain(&e)
                    ))),
                    None,
                )),
            }
        }
    })
    .boxed()
}

/// Drops `skip` bytes, then yields `want` bytes, of a stream.
fn skip_take(body: ByteStream, skip: usize, want: usize) -> ByteStream {
    let state = Arc::new(std::sync::Mutex::new((skip, want)));
    body.try_filter_map(move |mut chunk| {
        let mut s = state.lock().unwrap();
        let (skip, want) = &mut *s;
        let drop = (*skip).min(chunk.len());
        *skip -= drop;
        let _ = chunk.split_to(drop);
        chunk.truncate(*want);
        *want -= chunk.len();
        futures::future::ready(Ok(if chunk.is_empty() { None } else { Some(chunk) }))
    })
    .boxed()
}
