//! A whole version in one answer: `GET …/{version}?format=tar` streams every file of
//! the version, in path order, as a tar archive.
//!
//! The archive is produced by a task that pages through the index and copies each blob
//! from the store chunk by chunk into a small queue that the connection drains, so an
//! archive of any size holds only a few chunks in memory. Once the head is sent a
//! failure (a blob missing from the store, an index fault) cannot become an error
//! answer: the body then ends with an error, which makes the connection close before
//! the archive's end, so the client sees a truncated body rather than a well-formed
//! archive without a file.

use tokio::sync::mpsc;

use artifactstore_model::api::FileEntry;

use super::tar;
use super::*;

/// Files read from the index per query while an archive streams.
const ARCHIVE_PAGE: u32 = 1000;
/// Chunks queued between the blob store and the connection.
const QUEUED_CHUNKS: usize = 4;

/// The archive formats `?format=` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    Tar,
}

impl ArchiveFormat {
    pub fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "tar" => Ok(ArchiveFormat::Tar),
            _ => Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("format {s:?}: the only archive format is \"tar\""),
            )),
        }
    }
}

/// Why an archive stopped before its end.
#[derive(Debug, thiserror::Error)]
enum ArchiveAbort {
    /// The connection went away; nothing to report.
    #[error("the client stopped reading")]
    ClientGone,
    #[error("reading the file list: {0}")]
    Index(#[from] artifactstore_index::Error),
    #[error("reading blob {digest} of {path}: {source}")]
    Blob {
        path: String,
        digest: Digest,
        source: artifactstore_blob::Error,
    },
    #[error("reading blob {digest} of {path}: {source}")]
    BlobBody {
        path: String,
        digest: Digest,
        source: io::Error,
    },
    #[error("blob {digest} of {path} is {got} bytes, the manifest says {want}")]
    SizeMismatch {
        path: String,
        digest: Digest,
        got: u64,
        want: u64,
    },
}

/// Answers the archive of a resolved version. The first page of files is read before
/// the head is sent, so that an index fault is still an error answer.
pub async fn respond(
    st: AppState,
    method: &Method,
    id: VersionId,
    record: &VersionRecord,
    format: ArchiveFormat,
    is_alias: bool,
) -> ApiResult<Response> {
    let ArchiveFormat::Tar = format;
    let first = st.index.files_page(&id, None, ARCHIVE_PAGE).await?;
    let file_name = format!("{}-{}.tar", id.name, id.version);
    // Only a complete version's archive is fixed forever under its URL.
    let cache = if !is_alias && record.state == VersionState::Complete {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header(
            header::CONTENT_DISPOSITION,
            crate::download::attachment(&file_name),
        )
        .header(header::CONTENT_SECURITY_POLICY, crate::download::SANDBOX)
        .header(header::CACHE_CONTROL, cache);
    if method == Method::HEAD {
        return Ok(resp.body(Body::empty()).expect("valid response"));
    }
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(QUEUED_CHUNKS);
    tokio::spawn(async move {
        let result = write_tar(&st, &id, first, &tx).await;
        match result {
            Ok(()) | Err(ArchiveAbort::ClientGone) => {}
            Err(error) => {
                tracing::error!(
                    namespace = %id.namespace,
                    name = %id.name,
                    version = %id.version,
                    %error,
                    "archive aborted midway; the connection is closed so the client sees it truncated"
                );
                let _ = tx.send(Err(io::Error::other(error.to_string()))).await;
            }
        }
    });
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(resp.body(Body::from_stream(body)).expect("valid response"))
}

async fn send(
    tx: &mpsc::Sender<io::Result<Bytes>>,
    st: &AppState,
    b: Bytes,
) -> Result<(), ArchiveAbort> {
    st.metrics.add_bytes_out(b.len() as u64);
    tx.send(Ok(b)).await.map_err(|_| ArchiveAbort::ClientGone)
}

async fn write_tar(
    st: &AppState,
    id: &VersionId,
    mut page: Vec<FileEntry>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<(), ArchiveAbort> {
    loop {
        let full_page = page.len() == ARCHIVE_PAGE as usize;
        let after = page.last().map(|f| f.path.clone());
        for file in page {
            write_file(st, &file, tx).await?;
        }
        match after {
            Some(after) if full_page => {
                page = st.index.files_page(id, Some(&after), ARCHIVE_PAGE).await?;
            }
            _ => break,
        }
    }
    send(tx, st, Bytes::from_static(&tar::END_OF_ARCHIVE)).await
}

async fn write_file(
    st: &AppState,
    file: &FileEntry,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<(), ArchiveAbort> {
    let header = tar::file_header(&file.path, file.size, file.created_at.unix_secs());
    send(tx, st, header.into()).await?;
    let mut sent = 0u64;
    if file.size > 0 {
        let read = st
            .blobs
            .get(&file.digest, None)
            .await
            .map_err(|source| ArchiveAbort::Blob {
                path: file.path.clone(),
                digest: file.digest,
                source,
            })?;
        let mut body = read.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| ArchiveAbort::BlobBody {
                path: file.path.clone(),
                digest: file.digest,
                source,
            })?;
            sent += chunk.len() as u64;
            if sent > file.size {
                break;
            }
            send(tx, st, chunk).await?;
        }
    }
    if sent != file.size {
        return Err(ArchiveAbort::SizeMismatch {
            path: file.path.clone(),
            digest: file.digest,
            got: sent,
            want: file.size,
        });
    }
    let pad = tar::padding(file.size);
    if pad > 0 {
        send(tx, st, Bytes::from_static(&tar::END_OF_ARCHIVE[..pad])).await?;
    }
    Ok(())
}
