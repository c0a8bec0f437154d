//! The JSON shapes of the artifact API, in one place: the server writes them, the CLI
//! client and the tests read them. A field added here is added to all three.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Digest, Timestamp, VersionState};

/// A file of a version, as manifests, listings and upload answers show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub created_at: Timestamp,
}

/// A version without its files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub state: VersionState,
    pub labels: BTreeMap<String, String>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Timestamp>,
    /// When it expires, as its producer asked (capped by the retention rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// `GET /v1/artifacts/{ns}/{name}/{version}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(flatten)]
    pub version: VersionInfo,
    pub file_count: usize,
    pub total_size: u64,
    /// The files of this page, by path; `file_count` and `total_size` are the
    /// whole version's.
    pub files: Vec<FileEntry>,
    /// Set when the version holds more files than this answer: pass it as
    /// `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The answer to a file upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    pub namespace: String,
    pub name: String,
    pub version: String,
    #[serde(flatten)]
    pub file: FileEntry,
    /// False when the same file was already stored at this path.
    pub created: bool,
}

/// The body of `POST /v1/admin/gc`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Expire versions by the retention rules first.
    #[serde(default)]
    pub expire: bool,
    /// Find what would expire and what is unreferenced; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What one garbage collection found and freed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Whether retention ran first.
    pub expire: bool,
    /// Versions expired (or, in a dry run, that would be).
    pub expired_versions: u64,
    /// True when another collector was running: this one did nothing.
    pub busy: bool,
    pub grace_secs: u64,
    /// Blobs in the store.
    pub scanned_blobs: u64,
    /// Blobs no file of a live version references, and their bytes.
    pub unreferenced_blobs: u64,
    pub unreferenced_bytes: u64,
    /// Blobs deleted (unreferenced for longer than the grace period), and their bytes.
    pub collected_blobs: u64,
    pub freed_bytes: u64,
}

/// One page of a listing; pass `next_cursor` as `cursor` for the next one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/artifacts/{ns}`: a page of the namespace's names, and what the namespace
/// holds against its quota.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamesPage {
    #[serde(flatten)]
    pub page: Page<NameItem>,
    pub usage: NamespaceUsage,
}

/// What a namespace holds in live versions, and its quota's limits when one applies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceUsage {
    /// Logical bytes: every file of every live version (shared content counted each time).
    pub bytes: u64,
    pub versions: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_versions: Option<u64>,
}

/// An item of the namespace and name listings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameItem {
    pub name: String,
}

/// What happened, in the event log.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
)]
pub enum EventKind {
    #[serde(rename = "version.created")]
    #[strum(serialize = "version.created")]
    VersionCreated,
    #[serde(rename = "file.added")]
    #[strum(serialize = "file.added")]
    FileAdded,
    #[serde(rename = "version.completed")]
    #[strum(serialize = "version.completed")]
    VersionCompleted,
    #[serde(rename = "version.deleted")]
    #[strum(serialize = "version.deleted")]
    VersionDeleted,
    /// Deleted by retention: `reason` says which rule, or the producer's expiry.
    #[serde(rename = "version.expired")]
    #[strum(serialize = "version.expired")]
    VersionExpired,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One entry of the append-only event log. Carries names, digests and sizes only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub namespace: String,
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Why it happened: the retention rule of a `version.expired` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the event was recorded.
    pub at: Timestamp,
}

/// `GET /v1/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsPage {
    pub events: Vec<Event>,
    /// Pass as `after` to get the next events.
    pub next_after: i64,
}

/// The machine-readable word of an artifact API error. The string forms are derived
/// from the variant names, so the answer, the metric label and the docs cannot drift.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
    strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    /// 503: the audit log cannot be written, so no change is made or acknowledged
    /// (`Retry-After`).
    AuditUnavailable,
    BlobNotFound,
    BodyIncomplete,
    DigestMismatch,
    FileConflict,
    FileNotFound,
    /// 403: the caller is known but holds no grant for this action on this resource.
    Forbidden,
    HostNotAllowed,
    /// 507: the blob store or the metadata database is full or over its quota.
    InsufficientStorage,
    InternalError,
    InvalidBody,
    InvalidDigest,
    InvalidLabels,
    InvalidMediaType,
    InvalidName,
    InvalidPath,
    InvalidQuery,
    MethodNotAllowed,
    NoCompleteVersion,
    OriginNotAllowed,
    PayloadTooLarge,
    /// 507: the upload would pass its namespace's `[[quota]]`; nothing was stored.
    QuotaExceeded,
    RangeNotSatisfiable,
    /// 408: no byte of the request body arrived for `body_idle_timeout_secs`.
    RequestTimeout,
    RouteNotFound,
    /// 503: the blob store or the metadata database does not answer, or fails; try again
    /// later (`Retry-After`).
    StorageUnavailable,
    /// 503: `max_concurrent_uploads` uploads are being received (`Retry-After`).
    TooManyUploads,
    /// 401: no token where one is needed, or one that was refused (`reason` says why).
    Unauthenticated,
    UnsupportedMediaType,
    VersionComplete,
    VersionDeleted,
    VersionFull,
    VersionNotFound,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The one error envelope of both servers: `{"error": {"code", "message"}}`. The code is
/// a string here so that readers keep working when a server learns a new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// The vend service's request id, which its audit lines carry too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Why a token was refused (401 `unauthenticated`), in the vend service's words
    /// (`token_expired`, `audience_mismatch`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                reason: None,
            },
            request_id: None,
        }
    }

    pub fn with_request_id(mut self, request_id: &str) -> Self {
        self.request_id = Some(request_id.to_owned());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn event_kinds_spell_the_same_in_json_and_in_the_database() {
        for kind in EventKind::iter() {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(kind.as_str().parse::<EventKind>().unwrap(), kind);
        }
    }

    #[test]
    fn error_codes_are_snake_case_and_parse_back() {
        assert_eq!(ErrorCode::InternalError.as_str(), "internal_error");
        for code in ErrorCode::iter() {
            let s = code.as_str();
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert_eq!(s.parse::<ErrorCode>().unwrap(), code);
        }
    }

    #[test]
    fn manifest_round_trips() {
        let m = Manifest {
            version: VersionInfo {
                namespace: "ci".into(),
                name: "tck".into(),
                version: "1".into(),
                state: VersionState::Complete,
                labels: BTreeMap::from([("branch".into(), "main".into())]),
                created_at: Timestamp::from_unix_secs(1),
                completed_at: Some(Timestamp::from_unix_secs(2)),
                deleted_at: None,
                expires_at: None,
            },
            file_count: 1,
            total_size: 0,
            files: vec![FileEntry {
                path: "a".into(),
                digest: Digest::of(b""),
                size: 0,
                media_type: "text/plain".into(),
                created_at: Timestamp::from_unix_secs(1),
            }],
            next_cursor: None,
        };
        let json = serde_json::to_value(&m).unwrap();
        assert!(
            json.get("next_cursor").is_none(),
            "a whole manifest has no cursor"
        );
        assert_eq!(json["completed_at"], "1970-01-01T00:00:02Z");
        assert!(json.get("deleted_at").is_none());
        assert_eq!(serde_json::from_value::<Manifest>(json).unwrap(), m);
    }
}
