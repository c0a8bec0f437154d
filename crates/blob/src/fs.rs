//! The local-disk backend: `<root>/blobs/sha256/<2 hex>/<64 hex>`.
//!
//! Writes go to `<root>/tmp/` first, are fsynced, renamed into place and the directory is
//! fsynced, so a crash at any point leaves either the whole blob or nothing under its name.
//! Temp files left by a crash are removed by [`FsBlobStore::recover`] at start-up.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use artifactstore_model::{Digest, Hasher};
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::{
    BlobMeta, BlobRead, BlobStore, ByteStream, Capabilities, Error, PublishGate, PutOutcome,
    Result, verify_only,
};

/// Bytes gathered from the network before they are hashed and written in one blocking
/// task. One batch fills while the previous one is written, so an upload holds at most
/// about two of them in memory whatever its size.
const WRITE_BUFFER: usize = 1 << 20;

mod read;

#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`. Does not touch temp files:
    /// call [`recover`](Self::recover) from the one process that owns the directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let blobs = root.join("blobs").join("sha256");
        let tmp = root.join("tmp");
        for dir in [&blobs, &tmp] {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        // All 256 fan-out directories exist (and are durable) before the first upload, so
        // that publishing a blob only ever needs the fsync of its own directory.
        let mut created = false;
        for i in 0..=255u8 {
            let sub = blobs.join(format!("{i:02x}"));
            if !sub.is_dir() {
                fs::create_dir_all(&sub).map_err(io_err("create directory", &sub))?;
                created = true;
            }
        }
        if created {
            sync_dir(&blobs)?;
        }
        Ok(FsBlobStore { root, blobs, tmp })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob with this digest lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs.join(&hex[..2]).join(hex)
    }

    /// Removes temp files that a crashed or killed process left behind; returns how many.
    pub fn recover(&self) -> Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp).map_err(io_err("read directory", &self.tmp))? {
            let entry = entry.map_err(io_err("read directory", &self.tmp))?;
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err("remove temp file", &path))?;
            removed += 1;
        }
        if removed > 0 {
            tracing::info!(removed, dir = %self.tmp.display(), "removed leftover temp files");
        }
        Ok(removed)
    }

    /// Moves a blob out of the store into `<root>/quarantine/`, where an operator can
    /// inspect it; returns its new path.
    pub fn quarantine(&self, digest: &Digest) -> Result<PathBuf> {
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let from = self.blob_path(digest);
        let to = dir.join(digest.hex());
        fs::rename(&from, &to).map_err(io_err("move to quarantine", &from))?;
        sync_dir(from.parent().expect("blob paths have a parent"))?;
        sync_dir(&dir)?;
        Ok(to)
    }

    /// Temp files currently present (uploads in flight, or leftovers of a crash).
    pub fn temp_files(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.tmp).map_err(io_err("read directory", &self.tmp))? {
            out.push(entry.map_err(io_err("read directory", &self.tmp))?.path());
        }
        Ok(out)
    }

    fn new_temp(&self) -> Result<TempFile> {
        let name = format!(
            "{}-{}-{}.part",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let path = self.tmp.join(name);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create temp file", &path))?;
        Ok(TempFile {
            path: Some(path),
            file,
        })
    }

    /// Moves a fully written, fsynced temp file to its content address.
    fn publish(&self, temp: TempFile, digest: &Digest) -> Result<bool> {
        let dest = self.blob_path(digest);
        let parent = dest.parent().expect("blob paths have a parent");
        if dest.exists() {
            // Same content is already there; make sure its directory entry is durable
            // before we report success (it may be another upload that has not synced yet).
            drop(temp);
            sync_dir(parent)?;
            return Ok(false);
        }
        let tmp_path = temp.path.clone().expect("live temp file has a path");
        fs::rename(&tmp_path, &dest).map_err(io_err("rename into place", &dest))?;
        temp.disarm();
        sync_dir(parent)?;
        Ok(true)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// A temp file that deletes itself unless published, so that every failure path, a
/// cancelled request included, leaves nothing behind.
struct TempFile {
    path: Option<PathBuf>,
    file: File,
}

impl TempFile {
    fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// The file side of an upload: the temp file, the hash and the size so far. It moves into
/// a blocking task for each batch and back out of it, so a thread is held only while
/// bytes are hashed and written, never while the client is silent: thousands of stalled
/// uploads hold no thread at all, and reads and health checks keep theirs.
struct Writer {
    temp: TempFile,
    hasher: Hasher,
    size: u64,
}

impl Writer {
    /// Hashes and writes a full batch, and starts its writeback: more is coming.
    fn write_and_flush_later(&mut self, batch: &[u8]) -> Result<()> {
        let at = self.size;
        self.write(batch)?;
        start_writeback(&self.temp.file, at, batch.len());
        Ok(())
    }

    /// Hashes and writes the last batch; the fsync that follows writes it back (starting
    /// the writeback of a few KiB first would only add a wait for a small file).
    fn write(&mut self, batch: &[u8]) -> Result<()> {
        self.hasher.update(batch);
        self.size += batch.len() as u64;
        let path = self
            .temp
            .path
            .as_deref()
            .expect("live temp file has a path");
        (&self.temp.file)
            .write_all(batch)
            .map_err(io_err("write temp file", path))
    }
}

/// Asks the kernel to start writing a batch to the disk now, without waiting for it.
/// Otherwise every byte of a large upload sits in the page cache until the final fsync,
/// which then waits for all of them; started early, the disk writes while the rest of
/// the body is still arriving and the fsync finds little left to do. Only a hint: the
/// fsync before publishing is what makes the blob durable, so an error is ignored.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, at: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor this file owns; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            at as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: usize) {}

/// The writer with an empty buffer, the next batch to fill.
type WriterAndSpare = (Writer, Vec<u8>);

/// Gathers body chunks into batches and writes each in a blocking task while the next
/// one is received, so that hashing and disk writes overlap with the network.
struct WritePipeline {
    /// The writer and an empty spare buffer, when no write is in flight.
    idle: Option<WriterAndSpare>,
    /// The write in flight; it hands the writer and its emptied buffer back.
    in_flight: Option<JoinHandle<Result<WriterAndSpare>>>,
    batch: Vec<u8>,
}

impl WritePipeline {
    fn new(temp: TempFile) -> Self {
        let writer = Writer {
            temp,
            hasher: Hasher::new(),
            size: 0,
        };
        WritePipeline {
            idle: Some((writer, Vec::new())),
            in_flight: None,
            batch: Vec::new(),
        }
    }

    async fn push(&mut self, chunk: &[u8]) -> Result<()> {
        if self.batch.capacity() == 0 {
            self.batch.reserve_exact(WRITE_BUFFER.max(chunk.len()));
        }
        self.batch.extend_from_slice(chunk);
        if self.batch.len() >= WRITE_BUFFER {
            let (mut writer, spare) = self.writer().await?;
            let mut full = std::mem::replace(&mut self.batch, spare);
            self.in_flight = Some(tokio::task::spawn_blocking(move || {
                // On an error the writer is dropped here, which deletes the temp file.
                writer.write_and_flush_later(&full)?;
                full.clear();
                Ok((writer, full))
            }));
        }
        Ok(())
    }

    /// The writer with a spare buffer, once the write in flight (if any) is done.
    async fn writer(&mut self) -> Result<WriterAndSpare> {
        match self.in_flight.take() {
            Some(write) => write.await.map_err(|e| Error::Task(e.to_string()))?,
            None => Ok(self.idle.take().expect("the writer is idle or in flight")),
        }
    }

    /// Writes what is left and returns the writer with every byte written (not yet
    /// fsynced).
    async fn finish(mut self) -> Result<(Writer, Vec<u8>)> {
        let (writer, _) = self.writer().await?;
        Ok((writer, std::mem::take(&mut self.batch)))
    }

    /// Ends a failed upload: waits for the write in flight so that the temp file is gone
    /// when this returns.
    async fn discard(mut self) {
        let _ = self.writer().await;
    }
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "fs",
            ranged_reads: true,
            atomic_publish: true,
            ordered_list: true,
        }
    }

    async fn put_gated(
        &self,
        mut body: ByteStream,
        expected: Option<Digest>,
        gate: &dyn PublishGate,
    ) -> Result<PutOutcome> {
        if let Some(expected) = expected {
            gate.before_publish(&expected).await?;
            if self.head(&expected).await?.is_some() {
                return verify_only(body, expected).await;
            }
        }
        let mut pipeline = WritePipeline::new(self.new_temp()?);
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    // A failed write has dropped the writer and so its temp file.
                    pipeline.push(&chunk).await?;
                }
                Err(e) => {
                    pipeline.discard().await;
                    return Err(Error::Body(e));
                }
            }
        }
        let (mut writer, rest) = pipeline.finish().await?;
        let store = FsBlobStore {
            root: self.root.clone(),
            blobs: self.blobs.clone(),
            tmp: self.tmp.clone(),
        };
        // The last batch, the digest check, fsync and — when the digest was declared, so
        // the gate has passed already — the rename into place, in one blocking task;
        // every error drops the writer, which deletes the temp file.
        let (temp, digest, size, created) = blocking(move || {
            writer.write(&rest)?;
            let Writer { temp, hasher, size } = writer;
            let digest = hasher.finish();
            if let Some(expected) = expected
                && expected != digest
            {
                return Err(Error::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
            let path = temp.path.clone().expect("live temp file has a path");
            temp.file
                .sync_all()
                .map_err(io_err("fsync temp file", &path))?;
            if expected.is_some() {
                let created = store.publish(temp, &digest)?;
                return Ok((None, digest, size, created));
            }
            Ok((Some((temp, store)), digest, size, false))
        })
        .await?;
        let created = match temp {
            None => created,
            Some((temp, store)) => {
                gate.before_publish(&digest).await?;
                blocking(move || store.publish(temp, &digest)).await?
            }
        };
        Ok(PutOutcome {
            digest,
            size,
            created,
        })
    }

    async fn get(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobRead> {
        let path = self.blob_path(digest);
        let digest = *digest;
        let (file, size, range, path) = blocking(move || {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::NotFound { digest });
                }
                Err(e) => return Err(io_err("open blob", &path)(e)),
            };
            let size = file.metadata().map_err(io_err("stat blob", &path))?.len();
            let range = range.unwrap_or(0..size);
            if range.start > range.end || range.end > size {
                return Err(Error::InvalidRange {
                    start: range.start,
                    end: range.end,
                    size,
                });
            }
            Ok((file, size, range, path))
        })
        .await?;
        let body = read::ChunkStream::new(file, path, range.clone());
        Ok(BlobRead {
            size,
            range,
            body: body.boxed(),
        })
    }

    async fn head(&self, digest: &Digest) -> Result<Option<BlobMeta>> {
        let path = self.blob_path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(BlobMeta {
                digest: *digest,
                size: m.len(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat blob", &path)(e)),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove blob", &path)(e)),
        }
    }

    async fn list(&self, after: Option<Digest>, limit: usize) -> Result<Vec<BlobMeta>> {
        let blobs = self.blobs.clone();
        blocking(move || list_dir(&blobs, after, limit)).await
    }
}

fn sorted_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

fn list_dir(blobs: &Path, after: Option<Digest>, limit: usize) -> Result<Vec<BlobMeta>> {
    let after_hex = after.map(|d| d.hex()).unwrap_or_default();
    let mut out = Vec::new();
    for prefix in sorted_names(blobs)? {
        if prefix.len() != 2 || (!after_hex.is_empty() && prefix.as_str() < &after_hex[..2]) {
            continue;
        }
        let dir = blobs.join(&prefix);
        for name in sorted_names(&dir)? {
            if name.as_str() <= after_hex.as_str() || !name.starts_with(&prefix) {
                continue;
            }
            let Ok(digest) = Digest::from_hex(&name) else {
                continue;
            };
            let path = dir.join(&name);
            let size = match fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("stat blob", &path)(e)),
            };
            out.push(BlobMeta { digest, size });
            if out.len() >= limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Re-reads a blob from disk and returns the SHA-256 of what is there (for fsck).
pub fn rehash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; WRITE_BUFFER];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finish(), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    #[tokio::test]
    async fn fs_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsBlobStore::open(dir.path()).unwrap());
        crate::conformance::run_all(store.clone()).await;
        assert!(
            store.temp_files().unwrap().is_empty(),
            "temp files left behind"
        );
    }

    /// A stalled upload holds no blocking thread: with a pool of two, uploads that wait
    /// for their client forever leave reads working.
    #[test]
    fn stalled_uploads_hold_no_blocking_thread() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(FsBlobStore::open(dir.path()).unwrap());
            let stored = store
                .put(
                    futures::stream::iter([Ok(Bytes::from_static(b"kept"))]).boxed(),
                    None,
                )
                .await
                .unwrap();
            let mut stalled = Vec::new();
            for _ in 0..8 {
                let store = store.clone();
                let body = futures::stream::iter([Ok(Bytes::from_static(b"abc"))])
                    .chain(futures::stream::pending())
                    .boxed();
                stalled.push(tokio::spawn(async move { store.put(body, None).await }));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                let blob = store.get(&stored.digest, None).await.unwrap();
                blob.body
                    .map(|c| c.unwrap().len())
                    .collect::<Vec<_>>()
                    .await
            })
            .await
            .expect("a read answers while uploads stall");
            assert_eq!(read.iter().sum::<usize>(), 4);
            assert_eq!(
                store.temp_files().unwrap().len(),
                8,
                "the stalled uploads are open"
            );
            for upload in &stalled {
                upload.abort();
            }
            for upload in stalled {
                let _ = upload.await;
            }
            assert!(
                store.temp_files().unwrap().is_empty(),
                "a cancelled upload leaves no temp file"
            );
        });
    }

    #[tokio::test]
    async fn recover_removes_leftover_temp_files_and_blobs_are_where_documented() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let temp = store.new_temp().unwrap();
        temp.disarm(); // as if the process had died mid-upload
        assert_eq!(store.temp_files().unwrap().len(), 1);
        assert_eq!(store.recover().unwrap(), 1);
        assert!(store.temp_files().unwrap().is_empty());

        let out = store
            .put(
                futures::stream::iter([Ok(Bytes::from_static(b"abc"))]).boxed(),
                None,
            )
            .await
            .unwrap();
        let hex = out.digest.hex();
        let expected = dir.path().join("blobs/sha256").join(&hex[..2]).join(&hex);
        assert_eq!(fs::read(expected).unwrap(), b"abc");
        assert_eq!(
            rehash_file(&store.blob_path(&out.digest)).unwrap(),
            (out.digest, 3)
        );
    }
}
