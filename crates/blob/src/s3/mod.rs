//! The S3 backend: any S3-compatible store (MinIO, Garage, RustFS, SeaweedFS, Ceph RGW,
//! AWS), keys `<prefix>blobs/sha256/<2 hex>/<64 hex>`.
//!
//! One job per file:
//! - `config`: [`S3Config`], [`ChecksumMode`], building the SDK client (CA bundle too);
//! - `credential_retry`: the SDK's view of the [`RefreshingCache`] — the provider every
//!   request is signed from, and one retry with a fresh credential when refused;
//! - `error`: [`BackendErrorKind`] and `classify`, the one place S3 errors get a meaning;
//! - `upload`: the upload strategy below, its drop guard and the part reader;
//! - `read`: GetObject (ranges included), HeadObject, ListObjectsV2;
//! - `maintenance`: the bucket check, the `If-None-Match: *` probe, the stale sweep;
//! - `presign`: presigned GETs of blobs, for the artifact server's download redirects.
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use artifactstore_credentials::RefreshingCache;
use artifactstore_model::Digest;
use artifactstore_model::secret::Secret;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;

use crate::{
    BlobMeta, BlobRead, BlobStore, ByteStream, Capabilities, PresignOptions, PutOutcome, Result,
};

pub mod compat;
mod config;
mod credential_retry;
mod error;
mod maintenance;
mod parallel_read;
mod presign;
mod read;
mod upload;

pub use config::{ChecksumMode, MIN_PART_SIZE, S3Config};
pub use error::BackendErrorKind;

pub struct S3BlobStore {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    /// For messages: the endpoint URL, or `AWS S3 (<region>)`.
    endpoint: String,
    part_size: usize,
    concurrency: usize,
    /// Longest wait for the next chunk of a download body: the SDK's read timeout only
    /// covers the first byte.
    read_timeout: Duration,
    /// Whether the store honours `If-None-Match: *` on writes; probed once.
    conditional_create: AtomicU8,
    /// Reads fetched as parallel ranges at once (`parallel_read`).
    read_permits: Arc<tokio::sync::Semaphore>,
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

impl S3BlobStore {
    /// Builds the client on `credentials`, the one handle to the store's credentials.
    /// Makes no request: see [`probe`](Self::probe) and [`head_bucket`](Self::head_bucket).
    ///
    /// The SDK's own identity cache is off, so every request — each part of a multipart
    /// upload included — is signed with what the cache holds at that moment. A request
    /// refused because of its credential (`ExpiredToken`, `InvalidAccessKeyId`,
    /// `InvalidToken`, or a bodiless 403 to a HEAD) tells the cache which key id was
    /// refused ([`RefreshingCache::reject`]) and is retried once.
    pub fn new(cfg: S3Config, credentials: Arc<RefreshingCache>) -> Result<Self> {
        let client = config::build_client(&cfg, credentials)?;
        Ok(S3BlobStore {
            client,
            endpoint: cfg.endpoint_name(),
            prefix: config::normalized_prefix(&cfg.prefix),
            bucket: cfg.bucket,
            part_size: cfg.part_size,
            concurrency: cfg.concurrency.max(1),
            read_timeout: cfg.read_timeout,
            conditional_create: AtomicU8::new(maintenance::COND_UNKNOWN),
            read_permits: parallel_read::read_permits(),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn key(&self, digest: &Digest) -> String {
        blob_key(&self.prefix, digest)
    }

    fn blobs_prefix(&self) -> String {
        format!("{}blobs/sha256/", self.prefix)
    }

    fn staging_prefix(&self) -> String {
        format!("{}staging/", self.prefix)
    }

    /// A key no other upload uses, in this process or another: time, pid, counter.
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

    /// The size of the object at `key`, or `None` if there is none (HeadObject).
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
}

/// `<prefix>blobs/sha256/<2 hex>/<64 hex>`: the fan-out keeps listings of one
/// directory-like level short on stores that care.
fn blob_key(prefix: &str, digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{prefix}blobs/sha256/{}/{hex}", &hex[..2])
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

    async fn put_gated(
        &self,
        body: ByteStream,
        expected: Option<Digest>,
        gate: &dyn crate::PublishGate,
    ) -> Result<PutOutcome> {
        self.put_blob(body, expected, gate).await
    }

    async fn get(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobRead> {
        self.get_blob(digest, range).await
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
        self.list_blobs(after, limit).await
    }

    async fn presigned_get(
        &self,
        digest: &Digest,
        opts: &PresignOptions,
    ) -> Result<Option<Secret>> {
        self.presign_get(digest, opts).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_fan_out_by_the_first_two_hex_digits() {
        let d = Digest::of(b"abc");
        let hex = d.hex();
        assert_eq!(
            blob_key("p/", &d),
            format!("p/blobs/sha256/{}/{hex}", &hex[..2])
        );
        assert!(blob_key("", &d).starts_with("blobs/sha256/ba/"));
    }
}
