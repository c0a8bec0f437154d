//! The artifact routes: upload, download, manifests, completion, listing, deletion.

use std::collections::BTreeMap;
use std::io;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;

use artifactstore_index::{NewFile, VersionId, VersionRecord};
use artifactstore_model::api::{FileEntry, Manifest, NameItem, Page, PutResult, VersionInfo};
use artifactstore_model::{Digest, FilePath, Name, Namespace, Version, VersionRef, VersionState};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::http_range::{self, RangeRequest};
use artifactstore_model::api::ErrorCode;

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

async fn manifest(
    st: &AppState,
    id: &VersionId,
    record: VersionRecord,
) -> ApiResult<Json<Manifest>> {
    let files = st.index.files(id).await?;
    Ok(Json(Manifest {
        version: record.into(),
        file_count: files.len(),
        total_size: files.iter().map(|f| f.size).sum(),
        files,
    }))
}

/// Marks an upload body that went past the configured maximum.
#[derive(Debug)]
struct BodyTooLarge;
impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body exceeds the maximum upload size")
    }
}
impl std::error::Error for BodyTooLarge {}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("upload exceeds the maximum of {max} bytes; nothing was stored"),
    )
}

fn declared_digest(headers: &HeaderMap) -> ApiResult<Option<Digest>> {
    match headers.get(DIGEST_HEADER) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                ApiError::bad_request(ErrorCode::InvalidDigest, "X-Artifact-Digest is not text")
            })?;
            Ok(Some(s.trim().parse().map_err(|_| {
                ApiError::bad_request(
                    ErrorCode::InvalidDigest,
                    "X-Artifact-Digest must be sha256:<64 lowercase hex digits>",
                )
            })?))
        }
    }
}

fn media_type(headers: &HeaderMap) -> ApiResult<String> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok("application/octet-stream".to_owned()),
        Some(v) => {
            let s = v
                .to_str()
                .ok()
                .filter(|s| !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        ErrorCode::InvalidMediaType,
                        "Content-Type must be printable text of at most 255 bytes",
                    )
                })?;
            Ok(s.to_owned())
        }
    }
}

pub async fn put_file(
    State(st): State<AppState>,
    params: Result<Path<FileParams>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let p = path_params(params)?;
    put_file_at(
        st,
        exact_id(&p.namespace, &p.name, &p.version)?,
        &p.path,
        headers,
        body,
    )
    .await
}

/// Bytes of an unread upload body that are read and dropped before an early answer.
/// Closing a connection with unread data makes the kernel send a reset, and a client
/// still writing its body may then lose the answer; reading the rest avoids that.
const EARLY_ANSWER_DRAIN: u64 = 64 << 20;

async fn put_file_at(
    st: AppState,
    id: VersionId,
    path: &str,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let mut body = Some(body);
    let result = receive_file(&st, id, path, &headers, &mut body).await;
    if let Some(unread) = body {
        // Answered without reading the body. A client that sent `Expect: 100-continue`
        // has not sent it (no 100 went out); a too-large body is not worth reading.
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let too_large = matches!(&result, Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE);
        if !expects_continue && !too_large {
            let mut stream = unread.into_data_stream();
            let mut drained = 0u64;
            while drained <= EARLY_ANSWER_DRAIN {
                match stream.next().await {
                    Some(Ok(chunk)) => drained += chunk.len() as u64,
                    _ => break,
                }
            }
        }
    }
    result
}

async fn receive_file(
    st: &AppState,
    id: VersionId,
    path: &str,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> ApiResult<Response> {
    let path = FilePath::parse(path)?;
    let declared = declared_digest(headers)?;
    let media_type = media_type(headers)?;
    let max = st.config.max_upload_size;
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if content_length.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }

    // Answer what can be answered without reading the body.
    if let Some(v) = st.index.version(&id).await? {
        if v.state == VersionState::Deleted {
            return Err(artifactstore_index::Error::VersionDeleted.into());
        }
        match st.index.file(&id, &path).await? {
            Some(existing) if declared == Some(existing.digest) => {
                return Ok(put_response(&id, existing, false));
            }
            Some(existing) if declared.is_some() => {
                return Err(artifactstore_index::Error::FileConflict {
                    existing: existing.digest,
                }
                .into());
            }
            None if v.state == VersionState::Complete => {
                return Err(artifactstore_index::Error::VersionComplete.into());
            }
            _ => {}
        }
    }

    let _gauge = st.metrics.upload_started();
    let metrics = st.metrics.clone();
    let mut received = 0u64;
    let stream = body
        .take()
        .expect("the body is read once")
        .into_data_stream()
        .map_err(io::Error::other)
        .and_then(move |chunk| {
            received += chunk.len() as u64;
            metrics.add_bytes_in(chunk.len() as u64);
            let result = if received > max {
                Err(io::Error::other(BodyTooLarge))
            } else {
                Ok(chunk)
            };
            futures::future::ready(result)
        })
        .boxed();

    let stored = match st.blobs.put(stream, declared).await {
        Ok(stored) => stored,
        Err(e) => {
            if let artifactstore_blob::Error::Body(io) = &e
                && io.get_ref().is_some_and(|inner| inner.is::<BodyTooLarge>())
            {
                return Err(too_large(max));
            }
            if let artifactstore_blob::Error::Body(io) = &e {
                tracing::info!(version = %id.version, %path, error = %io, "upload aborted by the client; nothing stored");
            }
            return Err(e.into());
        }
    };
    let new = NewFile {
        path,
        digest: stored.digest,
        size: stored.size,
        media_type,
    };
    let added = st.index.add_file(&id, new).await?;
    Ok(put_response(&id, added.record, added.created))
}

fn put_response(id: &VersionId, file: FileEntry, created: bool) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let etag = etag(&file.digest);
    let view = PutResult {
        namespace: id.namespace.to_string(),
        name: id.name.to_string(),
        version: id.version.to_string(),
        file,
        created,
    };
    let mut resp = (status, Json(view)).into_response();
    resp.headers_mut().insert(header::ETAG, etag);
    resp
}

fn etag(digest: &Digest) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{digest}\"")).expect("digests are header-safe")
}

fn if_none_match_hits(headers: &HeaderMap, digest: &Digest) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let ours = digest.to_string();
    v.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == ours)
}

/// What a download sends, and how a browser may present it.
struct Download<'a> {
    digest: Digest,
    size: u64,
    media_type: &'a str,
    cache_control: &'static str,
    /// The name an attachment is saved under.
    file_name: &'a str,
    /// `?inline=1`: shown in the browser (still sandboxed) rather than saved.
    inline: bool,
}

/// Streams a blob (or a range of it) with the headers every download carries.
async fn send_blob(
    st: &AppState,
    method: &Method,
    headers: &HeaderMap,
    d: Download<'_>,
) -> ApiResult<Response> {
    let Download {
        digest,
        size,
        media_type,
        cache_control,
        file_name,
        inline,
    } = d;
    let mut resp = Response::builder()
        .header(header::ETAG, etag(&digest))
        .header(DIGEST_HEADER, digest.to_string())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, cache_control);
    if if_none_match_hits(headers, &digest) {
        return Ok(resp
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response"));
    }
    resp = resp.header(header::CONTENT_TYPE, media_type);
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match http_range::parse(range_header, size) {
        RangeRequest::Full => None,
        RangeRequest::Partial(r) => Some(r),
        RangeRequest::Unsatisfiable => {
            return Err(artifactstore_blob::Error::InvalidRange {
                start: 0,
                end: 0,
                size,
            }
            .into());
        }
    };
    let (status, len) = match &range {
        None => (StatusCode::OK, size),
        Some(r) => {
            resp = resp.header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", r.start, r.end - 1, size),
            );
            (StatusCode::PARTIAL_CONTENT, r.end - r.start)
        }
    };
    resp = resp.status(status).header(header::CONTENT_LENGTH, len);
    if let Some(h) = resp.headers_mut() {
        crate::download::protect(h, media_type, file_name, inline);
    }
    if method == Method::HEAD {
        return Ok(resp.body(Body::empty()).expect("valid response"));
    }
    let read = match st.blobs.get(&digest, range).await {
        Ok(read) => read,
        Err(artifactstore_blob::Error::NotFound { digest }) => {
            // A file row without its blob: the index and the store disagree.
            return Err(ApiError::internal(format!(
                "blob {digest} is referenced but missing; run fsck"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let metrics = st.metrics.clone();
    let body = read
        .body
        .inspect_ok(move |chunk| metrics.add_bytes_out(chunk.len() as u64));
    Ok(resp.body(Body::from_stream(body)).expect("valid response"))
}

pub async fn get_file(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    params: Result<Path<FileParams>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = path_params(params)?;
    let inline = crate::download::inline_requested(&uri);
    let url = FileUrl {
        namespace: &p.namespace,
        name: &p.name,
        version: &p.version,
        path: &p.path,
    };
    get_file_at(st, method, url, headers, inline).await
}

/// A file as a URL names it, before validation.
struct FileUrl<'a> {
    namespace: &'a str,
    name: &'a str,
    version: &'a str,
    path: &'a str,
}

async fn get_file_at(
    st: AppState,
    method: Method,
    url: FileUrl<'_>,
    headers: HeaderMap,
    inline: bool,
) -> ApiResult<Response> {
    let FileUrl {
        namespace,
        name,
        version,
        path,
    } = url;
    let path = FilePath::parse(path)?;
    let is_alias = version == artifactstore_model::LATEST;
    let (id, record) = resolve(&st, namespace, name, version).await?;
    let file = st.index.file(&id, &path).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::FileNotFound,
            format!("{path} not found in {}", id.version),
        )
    })?;
    // Only a complete version's files are fixed forever under their URL.
    let cache = if !is_alias && record.state == VersionState::Complete {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut resp = send_blob(
        &st,
        &method,
        &headers,
        Download {
            digest: file.digest,
            size: file.size,
            media_type: &file.media_type,
            cache_control: cache,
            file_name: path.as_str().rsplit('/').next().unwrap_or(path.as_str()),
            inline,
        },
    )
    .await?;
    if let Ok(v) = HeaderValue::from_str(id.version.as_str()) {
        resp.headers_mut().insert(VERSION_HEADER, v);
    }
    Ok(resp)
}

/// `/{version}/complete` is a route of its own for POST; a file that happens to be named
/// `complete` must still be reachable with GET, HEAD and PUT.
pub async fn get_file_named_complete(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    params: Result<Path<VersionParams>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = path_params(params)?;
    let url = FileUrl {
        namespace: &p.namespace,
        name: &p.name,
        version: &p.version,
        path: "complete",
    };
    get_file_at(
        st,
        method,
        url,
        headers,
        crate::download::inline_requested(&uri),
    )
    .await
}

pub async fn put_file_named_complete(
    State(st): State<AppState>,
    params: Result<Path<VersionParams>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let p = path_params(params)?;
    put_file_at(
        st,
        exact_id(&p.namespace, &p.name, &p.version)?,
        "complete",
        headers,
        body,
    )
    .await
}

pub async fn get_blob(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    params: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let digest: Digest = path_params(params)?.parse()?;
    let (size, media_type) = st.index.live_blob(&digest).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::BlobNotFound,
            format!("no artifact holds blob {digest}"),
        )
    })?;
    let file_name = digest.to_string().replace(':', "-");
    send_blob(
        &st,
        &method,
        &headers,
        Download {
            digest,
            size,
            media_type: &media_type,
            cache_control: "public, max-age=31536000, immutable",
            file_name: &file_name,
            inline: crate::download::inline_requested(&uri),
        },
    )
    .await
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

fn parse_labels_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Option<BTreeMap<String, String>>> {
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
    let parsed: LabelsBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("expected {{\"labels\": {{...}}}}: {e}"),
        )
    })?;
    if let Some(labels) = &parsed.labels {
        check_labels(labels)?;
    }
    Ok(parsed.labels)
}

pub async fn complete(
    State(st): State<AppState>,
    params: Result<Path<VersionParams>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Manifest>> {
    let p = path_params(params)?;
    let id = exact_id(&p.namespace, &p.name, &p.version)?;
    let labels = parse_labels_body(&headers, body)?;
    let record = st.index.complete(&id, labels).await?;
    manifest(&st, &id, record).await
}

pub async fn patch_version(
    State(st): State<AppState>,
    params: Result<Path<VersionParams>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Manifest>> {
    let p = path_params(params)?;
    let id = exact_id(&p.namespace, &p.name, &p.version)?;
    let labels = parse_labels_body(&headers, body)?.ok_or_else(|| {
        ApiError::bad_request(ErrorCode::InvalidBody, "expected {\"labels\": {...}}")
    })?;
    let record = st.index.set_labels(&id, labels).await?;
    manifest(&st, &id, record).await
}

pub async fn get_version(
    State(st): State<AppState>,
    params: Result<Path<VersionParams>, PathRejection>,
) -> ApiResult<Response> {
    let p = path_params(params)?;
    let (id, record) = resolve(&st, &p.namespace, &p.name, &p.version).await?;
    let mut resp = manifest(&st, &id, record).await?.into_response();
    if let Ok(v) = HeaderValue::from_str(id.version.as_str()) {
        resp.headers_mut().insert(VERSION_HEADER, v);
    }
    Ok(resp)
}

pub async fn delete_version(
    State(st): State<AppState>,
    params: Result<Path<VersionParams>, PathRejection>,
) -> ApiResult<Json<VersionInfo>> {
    let p = path_params(params)?;
    let id = exact_id(&p.namespace, &p.name, &p.version)?;
    Ok(Json(st.index.delete_version(&id).await?.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

impl ListQuery {
    fn limit(&self) -> ApiResult<u32> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("limit must be 1..={MAX_PAGE}"),
            )),
        }
    }
}

pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))
}

fn page<T>(mut items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_cursor }
}

pub async fn list_namespaces(
    State(st): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page<NameItem>>> {
    let q = query(q)?;
    let limit = q.limit()?;
    let items = st
        .index
        .namespaces(&q.prefix, q.cursor.as_deref().unwrap_or(""), limit + 1)
        .await?;
    let items = items.into_iter().map(|name| NameItem { name }).collect();
    Ok(Json(page(items, limit, |i| i.name.clone())))
}

pub async fn list_names(
    State(st): State<AppState>,
    params: Result<Path<NsParams>, PathRejection>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page<NameItem>>> {
    let p = path_params(params)?;
    let q = query(q)?;
    let limit = q.limit()?;
    let namespace = Namespace::parse(&p.namespace)?;
    let items = st
        .index
        .names(
            &namespace,
            &q.prefix,
            q.cursor.as_deref().unwrap_or(""),
            limit + 1,
        )
        .await?;
    let items = items.into_iter().map(|name| NameItem { name }).collect();
    Ok(Json(page(items, limit, |i| i.name.clone())))
}

pub async fn list_versions(
    State(st): State<AppState>,
    params: Result<Path<NameParams>, PathRejection>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page<VersionInfo>>> {
    let p = path_params(params)?;
    let q = query(q)?;
    let limit = q.limit()?;
    let namespace = Namespace::parse(&p.namespace)?;
    let name = Name::parse(&p.name)?;
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "cursor is not one this server issued",
            )
        })?),
    };
    let records = st
        .index
        .versions(&namespace, &name, &q.prefix, before, limit + 1)
        .await?;
    let Page { items, next_cursor } = page(records, limit, |v| v.created_seq.to_string());
    Ok(Json(Page {
        items: items.into_iter().map(VersionInfo::from).collect(),
        next_cursor,
    }))
}
