//! Uploads: the checks before a byte is read, streaming into the blob store, the row.

use super::*;

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

/// Seconds a client refused at the upload cap is asked to wait before trying again.
const UPLOADS_RETRY_AFTER_SECS: u64 = 1;

/// 503 `too_many_uploads`, with `Retry-After`: the server holds `max_concurrent_uploads`.
fn too_many_uploads(max: usize) -> ApiError {
    ApiError {
        retry_after_secs: Some(UPLOADS_RETRY_AFTER_SECS),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyUploads,
            format!(
                "the server is receiving its maximum of {max} uploads at once \
                 (max_concurrent_uploads); try again shortly"
            ),
        )
    }
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
    caller: Caller,
    params: Result<Path<FileParams>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let p = path_params(params)?;
    put_file_at(
        st,
        &caller,
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
/// The same for a caller refused by `[auth]`: enough for the answer of a small upload
/// to arrive, not enough to make a stranger's body worth sending, and never longer
/// than REFUSED_CALLER_DRAIN_TIME, so a refused body that stalls does not hold its
/// answer until the body idle timeout.
const REFUSED_CALLER_DRAIN: u64 = 1 << 20;
const REFUSED_CALLER_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

async fn put_file_at(
    st: AppState,
    caller: &Caller,
    id: VersionId,
    path: &str,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let mut body = Some(body);
    // Refused before a byte of the body is read: a caller without `write` here (the
    // body then drained a little, so a small upload's client reads its 401/403), or
    // one upload too many. The permit is held until the upload ends, however it ends:
    // answered, failed, timed out or dropped with its client.
    let (result, drain, drain_time) =
        match caller.require(Permission::Write, id.namespace.as_str(), id.name.as_str()) {
            Err(refused) => (
                Err(refused),
                REFUSED_CALLER_DRAIN,
                Some(REFUSED_CALLER_DRAIN_TIME),
            ),
            Ok(()) => match st.upload_permits.try_acquire() {
                // Answered at once, the body left unread: draining it would hold the
                // answer for as long as the client takes to send it.
                Err(_) => return Err(too_many_uploads(st.config.max_concurrent_uploads)),
                Ok(_permit) => (
                    receive_file(&st, id, path, &headers, &mut body).await,
                    EARLY_ANSWER_DRAIN,
                    None,
                ),
            },
        };
    if let Some(unread) = body {
        // Answered without reading the body. A client that sent `Expect: 100-continue`
        // has not sent it (no 100 went out); a too-large body is not worth reading.
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let too_large = matches!(&result, Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE);
        if !expects_continue && !too_large {
            let drain_all = async {
                let mut stream = unread.into_data_stream();
                let mut drained = 0u64;
                while drained <= drain {
                    match stream.next().await {
                        Some(Ok(chunk)) => drained += chunk.len() as u64,
                        _ => break,
                    }
                }
            };
            match drain_time {
                Some(limit) => {
                    let _ = tokio::time::timeout(limit, drain_all).await;
                }
                None => drain_all.await,
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
    let existing_version = st.index.version(&id).await?;
    let new_version = existing_version.is_none();
    // A path already taken adds no bytes: the upload is the same file again, or a conflict.
    let mut path_taken = false;
    if let Some(v) = existing_version {
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
            // Refused before a byte is stored; add_file checks again under the lock.
            None if v.file_count >= st.index.max_files_per_version() => {
                return Err(artifactstore_index::Error::VersionFull {
                    max: st.index.max_files_per_version(),
                }
                .into());
            }
            Some(_) => path_taken = true,
            None => {}
        }
    }

    // After the answers above: an identical re-upload, a conflict or a complete version
    // is answered as such, whatever the quota.
    let quota = st.config.quotas.for_namespace(id.namespace.as_str());
    if let Some(quota) = quota.as_ref().filter(|_| !path_taken) {
        let usage = st.index.usage(id.namespace.as_str()).await?;
        if let Some(what) = quota.refusal(usage, content_length.unwrap_or(0), new_version) {
            return Err(artifactstore_index::Error::QuotaExceeded { what }.into());
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

    // Held from when the digest is known until the file row is written, so that
    // garbage collection cannot delete the blob in between (see `gc`).
    let hold = crate::gc::UploadHold::new(st.index.clone());
    let stored = match st.blobs.put_gated(stream, declared, &hold).await {
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
    if hold.lost() {
        // The hold lapsed during a very slow upload: the blob found may have been
        // collected since, so nothing is recorded.
        return Err(ApiError::store_fault(
            "garbage collection",
            artifactstore_model::StoreFault::Unavailable,
            &"the upload outlasted its hold on the blob",
        ));
    }
    let added = st
        .index
        .add_file_within(&id, new, quota.as_ref(), Some(hold.holder()))
        .await;
    if added.as_ref().is_ok_and(|a| a.created) {
        hold.released_with_row();
    }
    hold.release().await;
    let added = added?;
    Ok(put_response(&id, added.record, added.created))
}

fn put_response(id: &VersionId, file: FileEntry, created: bool) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let etag = etag(&file.digest);
    let changed = crate::audit::Changed {
        digest: file.digest.to_string(),
        size: file.size,
    };
    let view = PutResult {
        namespace: id.namespace.to_string(),
        name: id.name.to_string(),
        version: id.version.to_string(),
        file,
        created,
    };
    let mut resp = (status, Json(view)).into_response();
    resp.headers_mut().insert(header::ETAG, etag);
    resp.extensions_mut().insert(changed);
    resp
}

pub async fn put_file_named_complete(
    State(st): State<AppState>,
    caller: Caller,
    params: Result<Path<VersionParams>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let p = path_params(params)?;
    put_file_at(
        st,
        &caller,
        exact_id(&p.namespace, &p.name, &p.version)?,
        "complete",
        headers,
        body,
    )
    .await
}
