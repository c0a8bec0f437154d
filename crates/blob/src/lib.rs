//! Content-addressed, immutable blob stores.
//!
//! A blob is named by the SHA-256 of its bytes and written once. [`BlobStore`] is the
//! small seam between the artifact service and where bytes live; the `fs` backend is
//! here, and [`conformance`] is the suite that every backend must pass.
//!
//! Invariant: a blob is visible under its digest only once all of its bytes are durable
//! and their SHA-256 equals the digest. A failed, cancelled or mismatching upload leaves
//! nothing visible.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use artifactstore_model::Digest;
use artifactstore_model::secret::Secret;
use bytes::Bytes;
use futures::stream::BoxStream;

pub mod conformance;
mod fs;
#[cfg(feature = "s3")]
pub mod s3;

pub use fs::{FsBlobStore, rehash_file};

/// A stream of body chunks, as the HTTP layer hands them over.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// What a backend can do, so that callers and `storage verify` can say it plainly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Short backend name, e.g. `fs`.
    pub backend: &'static str,
    /// Byte ranges are served without reading the blob from its start.
    pub ranged_reads: bool,
    /// A blob becomes visible atomically, all bytes at once.
    pub atomic_publish: bool,
    /// `list` returns digests in ascending order, so a cursor can resume it.
    pub ordered_list: bool,
}

/// The result of a successful [`BlobStore::put`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    pub digest: Digest,
    pub size: u64,
    /// False when a blob with this digest already existed (the upload was deduplicated).
    pub created: bool,
}

/// A blob's identity and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobMeta {
    pub digest: Digest,
    pub size: u64,
}

/// An open read of a blob, or of a byte range of it.
pub struct BlobRead {
    /// Size of the whole blob.
    pub size: u64,
    /// The bytes `body` yields, as a half-open range of the blob.
    pub range: Range<u64>,
    pub body: ByteStream,
}

impl fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobRead")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// What a presigned GET of a blob asks of the store: how long the URL works, and the
/// headers the store is to answer with in place of the object's own (S3's
/// `response-content-type` and `response-content-disposition`), so that a client
/// fetching the blob from the store sees what the artifact server would have sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresignOptions {
    pub expires_in: Duration,
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
}

/// Errors of every blob store, named by what they mean to a caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("blob {digest} not found")]
    NotFound { digest: Digest },
    #[error("content digest {actual} does not match the declared {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("range {start}..{end} is not satisfiable for a blob of {size} bytes")]
    InvalidRange { start: u64, end: u64, size: u64 },
    /// The body being uploaded failed (client went away, size limit hit, ...).
    #[error("reading the upload body failed: {0}")]
    Body(#[source] io::Error),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob store task failed: {0}")]
    Task(String),
    #[error("blob store configuration: {0}")]
    Config(String),
    /// The put's [`PublishGate`] refused; `fault` when that is a fault of a store.
    #[error("{message}")]
    Gate {
        fault: Option<StoreFault>,
        message: String,
    },
    /// A remote store refused or failed a request. `target` names the endpoint, bucket
    /// and key; `detail` is the store's error code and message — never a secret.
    #[cfg(feature = "s3")]
    #[error("{op} {target}: {kind} ({detail})")]
    Backend {
        op: &'static str,
        target: String,
        kind: s3::BackendErrorKind,
        detail: String,
    },
}

pub use artifactstore_model::StoreFault;

/// `EIO` is 5 on every Unix; std gives it no `ErrorKind` of its own.
const EIO: i32 = 5;
/// `ENFILE` and `EMFILE` (23, 24 on Linux and the BSDs): no file descriptor to spare,
/// in the system or in this process — connections hold them all for now.
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;

impl Error {
    /// Whether this is a fault of the store ([`StoreFault`]) rather than a refused
    /// request or a bug. Other I/O errors (permissions, a missing directory) are
    /// configuration faults and stay `None`.
    pub fn fault(&self) -> Option<StoreFault> {
        match self {
            Error::Io { source, .. } => match source.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Some(StoreFault::Full),
                io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::TimedOut => {
                    Some(StoreFault::Unavailable)
                }
                _ if matches!(source.raw_os_error(), Some(EIO | ENFILE | EMFILE)) => {
                    Some(StoreFault::Unavailable)
                }
                _ => None,
            },
            #[cfg(feature = "s3")]
            Error::Backend { kind, .. } => kind.fault(),
            Error::Gate { fault, .. } => *fault,
            _ => None,
        }
    }

    /// Whether the same call may succeed if simply tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            #[cfg(feature = "s3")]
            Error::Backend { kind, .. } => kind.is_retryable(),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where blobs live. Implementations must keep the invariant in the crate docs.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    fn capabilities(&self) -> Capabilities;

    /// Streams `body` into the store, hashing it on the way. With `expected`, the blob is
    /// published only if the content hashes to it; otherwise [`Error::DigestMismatch`].
    async fn put(&self, body: ByteStream, expected: Option<Digest>) -> Result<PutOutcome> {
        self.put_gated(body, expected, &Ungated).await
    }

    /// [`put`](Self::put), calling `gate` once the digest is known (at once when it is
    /// `expected`) and before the store looks whether the blob exists or publishes it;
    /// an error from the gate ends the put with nothing published.
    async fn put_gated(
        &self,
        body: ByteStream,
        expected: Option<Digest>,
        gate: &dyn PublishGate,
    ) -> Result<PutOutcome>;

    /// Reads a blob, or the half-open byte `range` of it (`range.end` at most the size).
    async fn get(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobRead>;

    /// The blob's size, or `None` if it is absent.
    async fn head(&self, digest: &Digest) -> Result<Option<BlobMeta>>;

    /// Removes a blob; true if it existed.
    async fn delete(&self, digest: &Digest) -> Result<bool>;

    /// Up to `limit` blobs with digests greater than `after`, in ascending digest order.
    async fn list(&self, after: Option<Digest>, limit: usize) -> Result<Vec<BlobMeta>>;

    /// A URL with which anyone may GET the blob from the store itself, without other
    /// credentials, until `opts.expires_in` has passed; `None` where the store cannot
    /// hand out such URLs (the fs store). The URL is a credential while it lasts, hence
    /// a [`Secret`]: never log it or put it in an error. Whether the blob exists is not
    /// checked (the caller has its index for that).
    async fn presigned_get(
        &self,
        digest: &Digest,
        opts: &PresignOptions,
    ) -> Result<Option<Secret>> {
        let _ = (digest, opts);
        Ok(None)
    }
}

/// What a put calls between learning its digest and publishing: the artifact server
/// holds the digest there, so that garbage collection cannot delete a blob an upload
/// has found and is about to reference.
#[async_trait::async_trait]
pub trait PublishGate: Send + Sync {
    async fn before_publish(&self, digest: &Digest) -> Result<()>;
}

/// The gate of a plain [`BlobStore::put`]: none.
pub struct Ungated;

#[async_trait::async_trait]
impl PublishGate for Ungated {
    async fn before_publish(&self, _: &Digest) -> Result<()> {
        Ok(())
    }
}

/// For a put whose declared blob is already stored: hash the body to hold the client to
/// its claim, but write nothing.
pub(crate) async fn verify_only(mut body: ByteStream, expected: Digest) -> Result<PutOutcome> {
    use futures::StreamExt;
    let mut hasher = artifactstore_model::Hasher::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(Error::Body)?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    let actual = hasher.finish();
    if actual != expected {
        return Err(Error::DigestMismatch { expected, actual });
    }
    Ok(PutOutcome {
        digest: actual,
        size,
        created: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(errno: i32) -> Error {
        Error::Io {
            op: "write temp file",
            path: "/data/tmp/1.part".into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn disk_errors_that_are_not_ours_are_store_faults() {
        // ENOSPC, EDQUOT: no room; EIO, EROFS: the disk fails.
        assert_eq!(io(28).fault(), Some(StoreFault::Full));
        assert_eq!(io(122).fault(), Some(StoreFault::Full));
        assert_eq!(io(5).fault(), Some(StoreFault::Unavailable));
        assert_eq!(io(30).fault(), Some(StoreFault::Unavailable));
        // ENFILE, EMFILE: out of descriptors for now.
        assert_eq!(io(23).fault(), Some(StoreFault::Unavailable));
        assert_eq!(io(24).fault(), Some(StoreFault::Unavailable));
        // EACCES, ENOENT: a configuration fault, not the store's.
        assert_eq!(io(13).fault(), None);
        assert_eq!(io(2).fault(), None);
        assert_eq!(Error::Task("panicked".into()).fault(), None);
        assert_eq!(Error::Body(io::Error::other("client gone")).fault(), None);
    }
}
