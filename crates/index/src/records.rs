//! What the index stores, and how a row becomes a record.

use std::collections::BTreeMap;

use artifactstore_model::{Digest, FilePath, Name, Namespace, Timestamp, Version, VersionState};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use artifactstore_model::api::{FileEntry, VersionInfo};

use crate::{Error, Event, Result};

/// The full name of a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionId {
    pub namespace: Namespace,
    pub name: Name,
    pub version: Version,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct VersionRecord {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub state: VersionState,
    pub labels: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    pub deleted_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(skip)]
    pub created_seq: i64,
    /// Files the version holds.
    #[serde(skip)]
    pub file_count: u64,
}

/// A file to record, once its blob is durable.
#[derive(Clone, Debug)]
pub struct NewFile {
    pub path: FilePath,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

impl NewFile {
    /// The answer for this file once its row is written at `now`.
    pub(crate) fn added(&self, now: artifactstore_model::Timestamp) -> AddedFile {
        AddedFile {
            record: FileEntry {
                path: self.path.as_str().to_owned(),
                digest: self.digest,
                size: self.size,
                media_type: self.media_type.clone(),
                created_at: now,
            },
            created: true,
        }
    }
}

impl From<VersionRecord> for VersionInfo {
    fn from(v: VersionRecord) -> Self {
        VersionInfo {
            namespace: v.namespace,
            name: v.name,
            version: v.version,
            state: v.state,
            labels: v.labels,
            created_at: v.created_at,
            completed_at: v.completed_at,
            deleted_at: v.deleted_at,
            expires_at: v.expires_at,
        }
    }
}

/// Result of [`Index::add_file`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedFile {
    pub record: FileEntry,
    /// False when the same file (same path, same digest) was already recorded.
    pub created: bool,
}

/// A blob digest and how many file rows reference it (for fsck).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
    pub files: u64,
}

pub(crate) fn version_from_row(row: &AnyRow) -> Result<VersionRecord> {
    let state: String = row.try_get("state")?;
    let labels: String = row.try_get("labels")?;
    Ok(VersionRecord {
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        state: state.parse().map_err(Error::Corrupt)?,
        labels: serde_json::from_str(&labels)
            .map_err(|e| Error::Corrupt(format!("labels: {e}")))?,
        created_at: millis(row, "created_at")?,
        completed_at: optional_millis(row, "completed_at")?,
        deleted_at: optional_millis(row, "deleted_at")?,
        expires_at: optional_millis(row, "expires_at")?,
        created_seq: row.try_get("created_seq")?,
        file_count: row.try_get::<i64, _>("file_count")?.max(0) as u64,
    })
}

/// Times are stored as BIGINT Unix milliseconds.
fn millis(row: &AnyRow, column: &str) -> Result<Timestamp> {
    Ok(Timestamp::from_unix_millis(row.try_get(column)?))
}

fn optional_millis(row: &AnyRow, column: &str) -> Result<Option<Timestamp>> {
    let v: Option<i64> = row.try_get(column)?;
    Ok(v.map(Timestamp::from_unix_millis))
}

pub(crate) fn digest_from(s: &str) -> Result<Digest> {
    s.parse()
        .map_err(|_| Error::Corrupt(format!("digest {s:?}")))
}

pub(crate) fn file_from_row(row: &AnyRow) -> Result<FileEntry> {
    let digest: String = row.try_get("digest")?;
    let size: i64 = row.try_get("size")?;
    Ok(FileEntry {
        path: row.try_get("path")?,
        digest: digest_from(&digest)?,
        size: size as u64,
        media_type: row.try_get("media_type")?,
        created_at: millis(row, "created_at")?,
    })
}

pub(crate) fn event_from_row(row: &AnyRow) -> Result<Event> {
    let kind: String = row.try_get("kind")?;
    let digest: Option<String> = row.try_get("digest")?;
    let size: Option<i64> = row.try_get("size")?;
    Ok(Event {
        seq: row.try_get("seq")?,
        kind: kind
            .parse()
            .map_err(|_| Error::Corrupt(format!("event kind {kind:?}")))?,
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        path: row.try_get("path")?,
        digest: digest.as_deref().map(digest_from).transpose()?,
        size: size.map(|s| s as u64),
        media_type: row.try_get("media_type")?,
        reason: row.try_get("detail")?,
        at: millis(row, "at")?,
    })
}

/// A live file holding some blob: where it is, and what it says the blob is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobHolder {
    pub namespace: String,
    pub name: String,
    pub size: u64,
    pub media_type: String,
}
