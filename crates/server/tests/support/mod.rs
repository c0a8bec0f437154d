//! The in-process server the route tests talk to: a real fs blob store and a real
//! SQLite index in a temporary directory, the default configuration.

use std::sync::Arc;

use artifactstore_server::{AppState, ServiceConfig};

/// The state of a fresh, empty server; the directory must outlive it.
pub async fn state() -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = artifactstore_blob::FsBlobStore::open(dir.path().join("blobs")).unwrap();
    let index = artifactstore_index::Index::open(&artifactstore_index::sqlite_url(
        &dir.path().join("index.db"),
    ))
    .await
    .unwrap();
    let state = AppState::new(Arc::new(blobs), Arc::new(index), ServiceConfig::default());
    (state, dir)
}

/// The router of a fresh, empty server.
#[allow(dead_code)] // each test binary compiles this module; not all use every helper
pub async fn app() -> (axum::Router, tempfile::TempDir) {
    let (state, dir) = state().await;
    (artifactstore_server::app(state), dir)
}
