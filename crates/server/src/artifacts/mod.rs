//! The artifact routes: upload, download, manifests, completion, listing, deletion.

use std::collections::BTreeMap;
use std::io;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;

use artifactstore_index::{NewFile, VersionId, VersionRecord};
use artifactstore_model::api::{
    FileEntry, Manifest, NameItem, NamesPage, NamespaceUsage, Page, PutResult, VersionInfo,
};
use artifactstore_model::{Digest, FilePath, Name, Namespace, Version, VersionRef, VersionState};

use crate::AppState;
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::http_range::{self, RangeRequest};
use artifactstore_model::api::ErrorCode;

mod archive;
mod listing;
mod read;
mod tar;
mod upload;
mod zip;

pub use listing::{list_names, list_namespaces, list_versions};
pub use read::{get_blob, get_file, get_file_named_complete};
pub use upload::{put_file, put_file_named_complete};

pub const DIGEST_HEADER: &str = "x-artifact-digest";
pub const VERSION_HEADER: &str = "x-artifact-version";
const MAX_LABELS: usize = 64;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Deserialize)]
pub struct NsParams {
    namespace: String,
}

#[derive(Deserialize)]
pub struct NameParams {
    namespace: String,
    name: String,
}

#[derive(Deserialize)]
pub struct VersionParams {
    namespace: String,
    name: String,
    version: String,
}

#[derive(Deserialize)]
pub struct FileParams {
    namespace: String,
    name: String,
    version: String,
    path: String,
}

fn path_params<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPath, e.body_text()))
}

fn exact_id(namespace: &str, name: &str, version: &str) -> ApiResult<VersionId> {
    Ok(VersionId {
        namespace: Namespace::parse(namespace)?,
        name: Name::parse(name)?,
        version: Version::parse(version)?,
    })
}

/// Resolves a version selector (`latest` or a name) to a live version.
async fn resolve(
    st: &AppState,
    namespace: &str,
    name: &str,
    version: &str,
) -> ApiResult<(VersionId, VersionRecord)> {
    let namespace = Namespace::parse(namespace)?;
    let name = Name::parse(name)?;
    let version = match VersionRef::parse(version)? {
        VersionRef::Exact(v) => v,
        VersionRef::Latest => st.index.latest(&namespace, &name).await?.ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::NoCompleteVersion,
                format!("{namespace}/{name} has no complete version"),
            )
        })?,
    };
    let id = VersionId {
        namespace,
        name,
        version,
    };
    let record = st
        .index
        .version(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::VersionNotFound, "version not found"))?;
    if record.state == VersionState::Deleted {
        return Err(ApiError::not_found(
            ErrorCode::VersionDeleted,
            "version has been deleted",
        ));
    }
    Ok((id, record))
}

/// Files per manifest answer unless `limit` asks fewer: most versions fit in one
/// answer, and none makes an answer larger than a few MiB.
const MANIFEST_PAGE: u32 = 10_000;
/// Longest accepted manifest cursor (a file path, whose segments are at most 255 bytes).
const MAX_CURSOR_BYTES: usize = 4096;

/// `?cursor=&limit=` of a manifest: which page of the version's files to answer; or
/// `?format=tar`: every file of the version as one archive (then without paging).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ManifestQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    format: Option<String>,
}

impl ManifestQuery {
    fn checked(mut self) -> ApiResult<Self> {
        // An empty value is an absent one, as for `cursor`.
        self.format = self.format.filter(|f| !f.is_empty());
        let paged = self.limit.is_some() || self.cursor.as_ref().is_some_and(|c| !c.is_empty());
        if self.format.is_some() && paged {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "format answers the whole version: it takes no cursor or limit",
            ));
        }
        if let Some(n) = self.limit
            && !(1..=MANIFEST_PAGE).contains(&n)
        {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("limit must be 1..={MANIFEST_PAGE}"),
            ));
        }
        if self
            .cursor
            .as_ref()
            .is_some_and(|c| c.len() > MAX_CURSOR_BYTES)
        {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("cursor must be at most {MAX_CURSOR_BYTES} bytes"),
            ));
        }
        // A cursor is a path, which holds no control character; PostgreSQL would
        // refuse a NUL in the comparison.
        if self
            .cursor
            .as_ref()
            .is_some_and(|c| c.chars().any(char::is_control))
        {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "cursor must not contain control characters",
            ));
        }
        Ok(self)
    }
}

/// A version and one page of its files; the counts are the whole version's.
async fn manifest(
    st: &AppState,
    id: &VersionId,
    record: VersionRecord,
    page: ManifestQuery,
) -> ApiResult<Json<Manifest>> {
    let limit = page.limit.unwrap_or(MANIFEST_PAGE);
    let mut files = st
        .index
        .files_page(id, page.cursor.as_deref(), limit + 1)
        .await?;
    let next_cursor = if files.len() > limit as usize {
        files.truncate(limit as usize);
        files.last().map(|f| f.path.clone())
    } else {
        None
    };
    // A first page that is the whole version needs no second query.
    let (file_count, total_size) = if page.cursor.is_none() && next_cursor.is_none() {
        (files.len() as u64, files.iter().map(|f| f.size).sum())
    } else {
        st.index.file_totals(id).await?
    };
    Ok(Json(Manifest {
        version: record.into(),
        file_count: file_count as usize,
        total_size,
        files,
        next_cursor,
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LabelsBody {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

fn check_labels(labels: &BTreeMap<String, String>) -> ApiResult<()> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidLabels,
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 128
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !key_ok {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidLabels,
                format!("label key {k:?}: 1-128 of ASCII letters, digits, '.', '_', '-', '/'"),
            ));
        }
        if v.len() > 1024 || v.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidLabels,
                format!("label {k:?}: value must be at most 1024 bytes without control characters"),
            ));
        }
    }
    Ok(())
}

/// A buffered body that could not be read (too large, or the stream failed).
fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            e.body_text(),
        )
    } else {
        ApiError::bad_request(ErrorCode::BodyIncomplete, e.body_text())
    }
}

/// A small JSON body: `None` when empty, 415 unless it says it is JSON, 400
/// `invalid_body` (naming `expected`) when it does not parse as `T`.
pub(crate) fn parse_json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    expected: &str,
) -> ApiResult<Option<T>> {
    let body = body.map_err(body_error)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // A browser sends text/plain across origins without asking first: JSON is taken
    // only when it says it is JSON.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "a JSON body needs Content-Type: application/json",
        ));
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        ApiError::bad_request(ErrorCode::InvalidBody, format!("expected {expected}: {e}"))
    })
}

fn parse_labels_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Option<BTreeMap<String, String>>> {
    let Some(parsed) = parse_json_body::<LabelsBody>(headers, body, "{\"labels\": {...}}")? else {
        return Ok(None);
    };
    if let Some(labels) = &parsed.labels {
        check_labels(labels)?;
    }
    Ok(parsed.labels)
}

pub async fn complete(
    State(st): State<AppState>,
    caller: Caller,
    params: Result<Path<VersionParams>, PathRejection>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> ApiResult<Json<Manifest>> {
    let p = path_params(params)?;
    caller.require(Permission::Complete, &p.namespace, &p.name)?;
    // Read only once the caller may: a stranger's body is never taken in.
    let body = Bytes::from_request(req, &()).await;
    let id = exact_id(&p.namespace, &p.name, &p.version)?;
    let parsed = parse_json_body::<CompleteBody>(
        &headers,
        body,
        "{\"labels\": {...}, \"expires_in_days\": N}",
    )?
    .unwrap_or_default();
    if let Some(labels) = &parsed.labels {
        check_labels(labels)?;
    }
    let expires_at = match parsed.expires_in_days {
        None => None,
        Some(days @ 1..=36_500) => Some(st.config.retention.producer_expiry(
            &p.namespace,
            &p.name,
            days,
            st.index.clock().now(),
        )),
        Some(_) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "expires_in_days must be 1 to 36500",
            ));
        }
    };
    let record = st
        .index
        .complete_with(&id, parsed.labels, expires_at)
        .await?;
    manifest(&st, &id, record, ManifestQuery::default()).await
}

/// The body of a completion: labels, and the producer's expiry.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    expires_in_days: Option<u64>,
}

pub async fn patch_version(
    State(st): State<AppState>,
    caller: Caller,
    params: Result<Path<VersionParams>, PathRejection>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> ApiResult<Json<Manifest>> {
    let p = path_params(params)?;
    // Labels are what a version is published under (e.g. `branch`): changing them is
    // part of publishing, not of uploading.
    caller.require(Permission::Complete, &p.namespace, &p.name)?;
    let body = Bytes::from_request(req, &()).await;
    let id = exact_id(&p.namespace, &p.name, &p.version)?;
    let labels = parse_labels_body(&headers, body)?.ok_or_else(|| {
        ApiError::bad_request(ErrorCode::InvalidBody, "expected {\"labels\": {...}}")
    })?;
    let record = st.index.set_labels(&id, labels).await?;
    manifest(&st, &id, record, ManifestQuery::default()).await
}

pub async fn get_version(
    State(st): State<AppState>,
    caller: Caller,
    method: Method,
    params: Result<Path<VersionParams>, PathRejection>,
    q: Result<Query<ManifestQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let p = path_params(params)?;
    caller.require(Permission::Read, &p.namespace, &p.name)?;
    let mut page = query(q)?.checked()?;
    let format = page
        .format
        .take()
        .map(|f| archive::ArchiveFormat::parse(&f))
        .transpose()?;
    let (id, record) = resolve(&st, &p.namespace, &p.name, &p.version).await?;
    let version = HeaderValue::from_str(id.version.as_str());
    let mut resp = match format {
        Some(format) => {
            let is_alias = p.version == artifactstore_model::LATEST;
            archive::respond(st, &method, id, &record, format, is_alias, &caller).await?
        }
        None => manifest(&st, &id, record, page).await?.into_response(),
    };
    if let Ok(v) = version {
        resp.headers_mut().insert(VERSION_HEADER, v);
    }
    Ok(resp)
}

pub async fn delete_version(
    State(st): State<AppState>,
    caller: Caller,
    params: Result<Path<VersionParams>, PathRejection>,
) -> ApiResult<Json<VersionInfo>> {
    let p = path_params(params)?;
    caller.require(Permission::Delete, &p.namespace, &p.name)?;
    let id = exact_id(&p.namespace, &p.name, &p.version)?;
    Ok(Json(st.index.delete_version(&id).await?.into()))
}

pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))
}

fn etag(digest: &Digest) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{digest}\"")).expect("digests are header-safe")
}
