//! The in-process server the route tests talk to: a real fs blob store and a real
//! SQLite index in a temporary directory, the default configuration.

use std::sync::Arc;

use artifactstore_server::{AppState, ServiceConfig};

/// A fresh blob store and index in a new temporary directory, which must outlive them.
async fn stores() -> (
    artifactstore_blob::FsBlobStore,
    artifactstore_index::Index,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = artifactstore_blob::FsBlobStore::open(dir.path().join("blobs")).unwrap();
    let index = artifactstore_index::Index::open(&artifactstore_index::sqlite_url(
        &dir.path().join("index.db"),
    ))
    .await
    .unwrap();
    (blobs, index, dir)
}

/// The state of a fresh, empty server; the directory must outlive it.
pub async fn state() -> (AppState, tempfile::TempDir) {
    let (blobs, index, dir) = stores().await;
    let state = AppState::new(Arc::new(blobs), Arc::new(index), ServiceConfig::default());
    (state, dir)
}

/// The router of a fresh, empty server.
#[allow(dead_code)] // each test binary compiles this module; not all use every helper
pub async fn app() -> (axum::Router, tempfile::TempDir) {
    let (state, dir) = state().await;
    (artifactstore_server::app(state), dir)
}

/// The fs store, handing out stand-in presigned URLs that spell out what was asked of
/// the store: `http://store.test/<hex>?expires=<secs>&type=<t>&disposition=<d>`
/// (values percent-encoded), for route tests of redirected downloads.
#[allow(dead_code)]
#[derive(Debug)]
pub struct Presigning(pub artifactstore_blob::FsBlobStore);

#[allow(dead_code)]
fn encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[async_trait::async_trait]
impl artifactstore_blob::BlobStore for Presigning {
    fn capabilities(&self) -> artifactstore_blob::Capabilities {
        self.0.capabilities()
    }

    async fn put_gated(
        &self,
        body: artifactstore_blob::ByteStream,
        expected: Option<artifactstore_model::Digest>,
        gate: &dyn artifactstore_blob::PublishGate,
    ) -> artifactstore_blob::Result<artifactstore_blob::PutOutcome> {
        self.0.put_gated(body, expected, gate).await
    }

    async fn get(
        &self,
        digest: &artifactstore_model::Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> artifactstore_blob::Result<artifactstore_blob::BlobRead> {
        self.0.get(digest, range).await
    }

    async fn head(
        &self,
        digest: &artifactstore_model::Digest,
    ) -> artifactstore_blob::Result<Option<artifactstore_blob::BlobMeta>> {
        self.0.head(digest).await
    }

    async fn delete(
        &self,
        digest: &artifactstore_model::Digest,
    ) -> artifactstore_blob::Result<bool> {
        self.0.delete(digest).await
    }

    async fn list(
        &self,
        after: Option<artifactstore_model::Digest>,
        limit: usize,
    ) -> artifactstore_blob::Result<Vec<artifactstore_blob::BlobMeta>> {
        self.0.list(after, limit).await
    }

    async fn presigned_get(
        &self,
        digest: &artifactstore_model::Digest,
        opts: &artifactstore_blob::PresignOptions,
    ) -> artifactstore_blob::Result<Option<artifactstore_model::secret::Secret>> {
        Ok(Some(artifactstore_model::secret::Secret::new(format!(
            "http://store.test/{}?expires={}&type={}&disposition={}",
            digest.hex(),
            opts.expires_in.as_secs(),
            encoded(opts.content_type.as_deref().unwrap_or("")),
            encoded(opts.content_disposition.as_deref().unwrap_or(""))
        ))))
    }
}

/// The state of a fresh server whose downloads are redirected to [`Presigning`]'s URLs.
#[allow(dead_code)]
pub async fn redirecting_state() -> (AppState, tempfile::TempDir) {
    let (blobs, index, dir) = stores().await;
    let config = ServiceConfig {
        downloads: artifactstore_server::Downloads::Redirect {
            expires_in: std::time::Duration::from_secs(60),
        },
        ..ServiceConfig::default()
    };
    let state = AppState::new(Arc::new(Presigning(blobs)), Arc::new(index), config);
    (state, dir)
}
