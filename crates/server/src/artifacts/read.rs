//! Downloads of files and blobs: conditional and ranged reads, how a browser may
//! present the body, and redirects to the blob store.

use super::*;

/// Names holding a digest that `GET /v1/blobs/{digest}` reads at a time, and how many
/// such pages it looks through for one the caller may read.
const BLOB_HOLDERS_PAGE: u32 = 1000;
const BLOB_HOLDER_PAGES: usize = 10;

/// Size and media type of `digest` as a live version the caller may read holds it.
async fn readable_blob(
    st: &AppState,
    caller: &Caller,
    digest: &Digest,
) -> ApiResult<Option<artifactstore_index::BlobHolder>> {
    if caller.reads_everything() {
        return Ok(st.index.live_blob_holders(digest, None, 1).await?.pop());
    }
    let mut after: Option<(String, String)> = None;
    for _ in 0..BLOB_HOLDER_PAGES {
        let page = st
            .index
            .live_blob_holders(
                digest,
                after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                BLOB_HOLDERS_PAGE,
            )
            .await?;
        let full = page.len() == BLOB_HOLDERS_PAGE as usize;
        after = page.last().map(|h| (h.namespace.clone(), h.name.clone()));
        if let Some(h) = page
            .into_iter()
            .find(|h| caller.allows(Permission::Read, &h.namespace, &h.name))
        {
            return Ok(Some(h));
        }
        if !full {
            break;
        }
    }
    Ok(None)
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
    /// `?inline=1` and `?redirect=0`, as the URL asked.
    query: DownloadQuery,
}

/// What the query of a download asks for.
#[derive(Clone, Copy)]
struct DownloadQuery {
    /// `?inline=1`: shown in the browser (still sandboxed) rather than saved.
    inline: bool,
    /// `?redirect=0`: sent by this server even where downloads are redirected.
    redirect_refused: bool,
}

impl DownloadQuery {
    fn of(uri: &Uri) -> Self {
        DownloadQuery {
            inline: crate::download::inline_requested(uri),
            redirect_refused: crate::download::redirect_refused(uri),
        }
    }
}

/// Streams a blob (or a range of it) with the headers every download carries, or
/// redirects a GET to the store (`[s3] download = "redirect"`). Every check of the
/// caller, the name and the version has been made by then; a matching `If-None-Match`
/// and an unsatisfiable range are answered here either way.
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
        query,
    } = d;
    let mut resp = Response::builder()
        .header(header::ETAG, etag(&digest))
        .header(DIGEST_HEADER, digest.to_string());
    if if_none_match_hits(headers, &digest) {
        return Ok(resp
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CACHE_CONTROL, cache_control)
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response"));
    }
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
    let asked = crate::download::DownloadRequest {
        method,
        media_type,
        file_name,
        inline: query.inline,
        redirect_refused: query.redirect_refused,
    };
    if let Some(opts) = crate::download::redirect_options(st.config.downloads, &asked)
        && let Some(url) = st.blobs.presigned_get(&digest, &opts).await?
    {
        // The client sends its `Range` again to the store, which answers it. The URL
        // expires, so neither the redirect nor its target may be kept.
        let location = HeaderValue::from_str(url.expose()).map_err(|_| {
            ApiError::internal("the blob store signed a URL that is not a header value")
        })?;
        st.metrics.download_redirected();
        return Ok(resp
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::LOCATION, location)
            .status(StatusCode::TEMPORARY_REDIRECT)
            .body(Body::empty())
            .expect("valid response"));
    }
    resp = resp
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::CONTENT_TYPE, media_type);
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
        let in_frame = crate::download::for_a_frame(headers);
        crate::download::protect(h, media_type, file_name, query.inline, in_frame);
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
    caller: Caller,
    method: Method,
    uri: Uri,
    params: Result<Path<FileParams>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = path_params(params)?;
    caller.require(Permission::Read, &p.namespace, &p.name)?;
    let url = FileUrl {
        namespace: &p.namespace,
        name: &p.name,
        version: &p.version,
        path: &p.path,
    };
    get_file_at(st, &caller, method, url, headers, DownloadQuery::of(&uri)).await
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
    caller: &Caller,
    method: Method,
    url: FileUrl<'_>,
    headers: HeaderMap,
    query: DownloadQuery,
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
        caller.immutable_cache_control()
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
            query,
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
    caller: Caller,
    method: Method,
    uri: Uri,
    params: Result<Path<VersionParams>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = path_params(params)?;
    caller.require(Permission::Read, &p.namespace, &p.name)?;
    let url = FileUrl {
        namespace: &p.namespace,
        name: &p.name,
        version: &p.version,
        path: "complete",
    };
    get_file_at(st, &caller, method, url, headers, DownloadQuery::of(&uri)).await
}

pub async fn get_blob(
    State(st): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    params: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let digest: Digest = path_params(params)?.parse()?;
    // A blob is served only through a live version the caller may read; otherwise it
    // does not exist for this caller (404, the same as for a digest nobody holds).
    let holder = readable_blob(&st, &caller, &digest).await?;
    let (size, media_type) = holder.map(|h| (h.size, h.media_type)).ok_or_else(|| {
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
            cache_control: caller.immutable_cache_control(),
            file_name: &file_name,
            query: DownloadQuery::of(&uri),
        },
    )
    .await
}
