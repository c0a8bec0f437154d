//! `fsck`: re-hashes every blob of an `fs` store and checks that every file row has its
//! blob. With repair, corrupt blobs are moved to quarantine so that they are never
//! served again; nothing is ever deleted. [`fsck_store`] does the same through the
//! [`BlobStore`] interface for any backend (the S3 bucket), re-hashing with `deep`.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use artifactstore_blob::{BlobStore, FsBlobStore, rehash_file};
use artifactstore_index::Index;
use artifactstore_model::Digest;

#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub referenced_blobs: u64,
    pub unreferenced_blobs: u64,
    /// Temp files of uploads in flight, or left by a crash (removed at the next start).
    pub temp_files: u64,
    pub problems: Vec<Problem>,
    pub repaired: u64,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, Serialize)]
pub struct Problem {
    /// `corrupt_blob`, `missing_blob` or `size_mismatch`.
    pub kind: &'static str,
    pub digest: Digest,
    pub detail: String,
    /// Files (`namespace/name@version/path`) that reference the blob.
    pub files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(transparent)]
    Blob(#[from] artifactstore_blob::Error),
    #[error(transparent)]
    Index(#[from] artifactstore_index::Error),
}

const PAGE: usize = 1000;

/// Checks that every file row's blob is in `store` with its size; returns the
/// referenced digests.
async fn check_referenced(
    store: &dyn BlobStore,
    index: &Index,
    report: &mut FsckReport,
) -> Result<HashSet<Digest>, FsckError> {
    let mut referenced = HashSet::new();
    let mut after = None;
    loop {
        let page = index.referenced_blobs(after.as_ref(), PAGE as u32).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest);
        for blob in page {
            referenced.insert(blob.digest);
            report.referenced_blobs += 1;
            match store.head(&blob.digest).await? {
                None => report.problems.push(Problem {
                    kind: "missing_blob",
                    digest: blob.digest,
                    detail: format!(
                        "{} file(s) reference a blob that is not in the store",
                        blob.files
                    ),
                    files: index.files_with_digest(&blob.digest).await?,
                    action: None,
                }),
                Some(meta) if meta.size != blob.size => report.problems.push(Problem {
                    kind: "size_mismatch",
                    digest: blob.digest,
                    detail: format!("index says {} bytes, store holds {}", blob.size, meta.size),
                    files: index.files_with_digest(&blob.digest).await?,
                    action: None,
                }),
                Some(_) => {}
            }
        }
    }
    Ok(referenced)
}

pub async fn fsck(
    store: &Arc<FsBlobStore>,
    index: &Index,
    repair: bool,
) -> Result<FsckReport, FsckError> {
    let mut report = FsckReport::default();
    let referenced = check_referenced(&**store, index, &mut report).await?;

    let mut after = None;
    loop {
        let page = store.list(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest);
        for blob in page {
            let path = store.blob_path(&blob.digest);
            let rehash = tokio::task::spawn_blocking(move || rehash_file(&path))
                .await
                .map_err(|e| artifactstore_blob::Error::Task(e.to_string()))?;
            report.blobs_checked += 1;
            let (actual, size) = match rehash {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // deleted meanwhile
                Err(source) => {
                    return Err(artifactstore_blob::Error::Io {
                        op: "read blob",
                        path: store.blob_path(&blob.digest),
                        source,
                    }
                    .into());
                }
            };
            report.bytes_checked += size;
            if !referenced.contains(&blob.digest) {
                report.unreferenced_blobs += 1;
            }
            if actual != blob.digest {
                let action = if repair {
                    let to = store.quarantine(&blob.digest)?;
                    report.repaired += 1;
                    Some(format!("moved to {}", to.display()))
                } else {
                    Some("run fsck --repair to quarantine it".to_owned())
                };
                report.problems.push(Problem {
                    kind: "corrupt_blob",
                    digest: blob.digest,
                    detail: format!("content hashes to {actual}"),
                    files: index.files_with_digest(&blob.digest).await?,
                    action,
                });
            }
        }
    }
    report.temp_files = store.temp_files()?.len() as u64;
    Ok(report)
}

/// `fsck` of any store (the S3 backend's bucket, or the data directory read through the
/// store): every file row's blob is there with its size; every blob is counted as
/// referenced or not (what garbage collection would collect); with `deep`, every blob
/// is read back and re-hashed. Nothing is changed.
pub async fn fsck_store(
    store: &dyn BlobStore,
    index: &Index,
    deep: bool,
) -> Result<FsckReport, FsckError> {
    use futures::StreamExt;
    let mut report = FsckReport::default();
    let referenced = check_referenced(store, index, &mut report).await?;
    let mut after = None;
    loop {
        let page = store.list(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest);
        for blob in page {
            report.blobs_checked += 1;
            report.bytes_checked += blob.size;
            if !referenced.contains(&blob.digest) {
                report.unreferenced_blobs += 1;
            }
            if !deep {
                continue;
            }
            let mut read = match store.get(&blob.digest, None).await {
                Ok(r) => r,
                Err(artifactstore_blob::Error::NotFound { .. }) => continue, // deleted meanwhile
                Err(e) => return Err(e.into()),
            };
            let mut hasher = artifactstore_model::Hasher::new();
            while let Some(chunk) = read.body.next().await {
                hasher.update(&chunk.map_err(artifactstore_blob::Error::Body)?);
            }
            let actual = hasher.finish();
            if actual != blob.digest {
                report.problems.push(Problem {
                    kind: "corrupt_blob",
                    digest: blob.digest,
                    detail: format!("content hashes to {actual}"),
                    files: index.files_with_digest(&blob.digest).await?,
                    action: Some("delete the object; the files that reference it are lost".into()),
                });
            }
        }
    }
    Ok(report)
}
