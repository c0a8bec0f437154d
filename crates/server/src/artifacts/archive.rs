//! A whole version in one answer: `GET …/{version}?format=tar` (or `zip`) streams
//! every file of the version, in path order, as one archive.
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

use super::*;
use super::{tar, zip};

/// Files read from the index per query while an archive streams.
const ARCHIVE_PAGE: u32 = 1000;
/// Chunks queued between the blob store and the connection.
const QUEUED_CHUNKS: usize = 4;

/// The archive formats `?format=` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    Tar,
    Zip,
}

impl ArchiveFormat {
    pub fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "tar" => Ok(ArchiveFormat::Tar),
            "zip" => Ok(ArchiveFormat::Zip),
            _ => Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("format {s:?}: the archive formats are \"tar\" and \"zip\""),
            )),
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            ArchiveFormat::Tar => "application/x-tar",
            ArchiveFormat::Zip => "application/zip",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            ArchiveFormat::Tar => "tar",
            ArchiveFormat::Zip => "zip",
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
    caller: &Caller,
) -> ApiResult<Response> {
    let first = st.index.files_page(&id, None, ARCHIVE_PAGE).await?;
    let file_name = format!("{}-{}.{}", id.name, id.version, format.extension());
    // Only a complete version's archive is fixed forever under its URL.
    let cache = if !is_alias && record.state == VersionState::Complete {
        caller.immutable_cache_control()
    } else {
        "no-cache"
    };
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.media_type())
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
        let mut out = Out {
            st: &st,
            tx: &tx,
            sent: 0,
        };
        let mut files = Pages {
            st: &st,
            id: &id,
            done: first.len() < ARCHIVE_PAGE as usize,
            page: first.into_iter(),
            after: None,
        };
        let result = match format {
            ArchiveFormat::Tar => write_tar(&mut files, &mut out).await,
            ArchiveFormat::Zip => write_zip(&mut files, &mut out).await,
        };
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

/// The connection's end of the queue, counting what was sent (a zip's offsets).
struct Out<'a> {
    st: &'a AppState,
    tx: &'a mpsc::Sender<io::Result<Bytes>>,
    sent: u64,
}

impl Out<'_> {
    async fn send(&mut self, b: Bytes) -> Result<(), ArchiveAbort> {
        self.st.metrics.add_bytes_out(b.len() as u64);
        self.sent += b.len() as u64;
        self.tx
            .send(Ok(b))
            .await
            .map_err(|_| ArchiveAbort::ClientGone)
    }

    /// Copies a file's blob from the store, chunk by chunk, checking its size and
    /// showing each chunk to `inspect` (a zip's CRC).
    async fn send_blob(
        &mut self,
        file: &FileEntry,
        mut inspect: impl FnMut(&[u8]),
    ) -> Result<(), ArchiveAbort> {
        let mut sent = 0u64;
        if file.size > 0 {
            let read = self
                .st
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
                inspect(&chunk);
                self.send(chunk).await?;
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
        Ok(())
    }
}

/// The version's files in path order, read from the index a page at a time.
struct Pages<'a> {
    st: &'a AppState,
    id: &'a VersionId,
    page: std::vec::IntoIter<FileEntry>,
    /// The last path handed out.
    after: Option<String>,
    done: bool,
}

impl Pages<'_> {
    async fn next(&mut self) -> Result<Option<FileEntry>, ArchiveAbort> {
        loop {
            if let Some(f) = self.page.next() {
                self.after = Some(f.path.clone());
                return Ok(Some(f));
            }
            if self.done {
                return Ok(None);
            }
            let page = self
                .st
                .index
                .files_page(self.id, self.after.as_deref(), ARCHIVE_PAGE)
                .await?;
            self.done = page.len() < ARCHIVE_PAGE as usize;
            self.page = page.into_iter();
        }
    }
}

async fn write_tar(files: &mut Pages<'_>, out: &mut Out<'_>) -> Result<(), ArchiveAbort> {
    while let Some(file) = files.next().await? {
        let header = tar::file_header(&file.path, file.size, file.created_at.unix_secs());
        out.send(header.into()).await?;
        out.send_blob(&file, |_| {}).await?;
        let pad = tar::padding(file.size);
        if pad > 0 {
            out.send(Bytes::from_static(&tar::END_OF_ARCHIVE[..pad]))
                .await?;
        }
    }
    out.send(Bytes::from_static(&tar::END_OF_ARCHIVE)).await
}

/// A zip keeps one small record per file (name, CRC, size, offset) for the central
/// directory at its end: memory grows with the file count, never with the sizes.
async fn write_zip(files: &mut Pages<'_>, out: &mut Out<'_>) -> Result<(), ArchiveAbort> {
    let mut entries = Vec::new();
    while let Some(file) = files.next().await? {
        let (dos_time, dos_date) = zip::dos_date_time(file.created_at.unix_secs());
        let zip64 = zip::size_needs_zip64(file.size);
        let offset = out.sent;
        out.send(zip::local_header(&file.path, dos_time, dos_date, zip64).into())
            .await?;
        let mut crc = crc32fast::Hasher::new();
        out.send_blob(&file, |chunk| crc.update(chunk)).await?;
        let crc = crc.finalize();
        out.send(zip::data_descriptor(crc, file.size, zip64).into())
            .await?;
        entries.push(zip::Entry {
            name: file.path,
            dos_time,
            dos_date,
            crc,
            size: file.size,
            offset,
        });
    }
    let cd_start = out.sent;
    for e in &entries {
        let record = zip::central_record(
            e,
            zip::size_needs_zip64(e.size),
            e.offset >= zip::CLASSIC_MAX,
        );
        out.send(record.into()).await?;
    }
    let count = entries.len() as u64;
    let cd_size = out.sent - cd_start;
    let zip64 = zip::end_needs_zip64(count, cd_size, cd_start);
    out.send(zip::end_records(count, cd_size, cd_start, zip64).into())
        .await
}
