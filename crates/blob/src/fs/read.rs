//! A blob's bytes as a stream: large positional reads, each in a short blocking task,
//! with the next read already running while the previous chunk goes out on the socket.
//!
//! Why not `tokio::fs::File` behind a `ReaderStream`: it reads into a buffer of its own
//! and copies into the stream's, in steps of the stream's capacity, so a download paid a
//! blocking-task round trip per 256 KiB plus a copy of every byte, and nothing overlapped
//! the disk read with the socket write. Here each read fills a fresh buffer that becomes
//! the chunk itself (no copy), and one read is always ahead of the consumer.
//!
//! A blocking thread is held only while a read runs, never while the client is slow to
//! take the bytes: a thousand stalled downloads hold at most one finished chunk each.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use tokio::task::JoinHandle;

/// Bytes per read: large enough that the per-read costs (a task, a syscall) vanish next
/// to the copy, small enough that a download holds little memory (two chunks at most).
pub(super) const READ_CHUNK: usize = 1 << 20;

type Chunk = std::io::Result<Bytes>;

/// The bytes `range` of an open file.
pub(super) struct ChunkStream {
    file: Arc<File>,
    path: Arc<PathBuf>,
    /// Where the next read starts, and where the range ends.
    next: u64,
    end: u64,
    in_flight: Option<JoinHandle<Chunk>>,
}

impl ChunkStream {
    pub(super) fn new(file: File, path: PathBuf, range: std::ops::Range<u64>) -> Self {
        let mut stream = ChunkStream {
            file: Arc::new(file),
            path: Arc::new(path),
            next: range.start,
            end: range.end,
            in_flight: None,
        };
        stream.start_read();
        stream
    }

    /// Starts reading the next chunk, if any is left.
    fn start_read(&mut self) {
        if self.next >= self.end {
            return;
        }
        let len = (self.end - self.next).min(READ_CHUNK as u64) as usize;
        let (file, path, at) = (self.file.clone(), self.path.clone(), self.next);
        self.next += len as u64;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, at).map_err(|e| {
                // A blob shorter than its recorded size was changed behind the store's back.
                std::io::Error::new(e.kind(), format!("read blob {}: {e}", path.display()))
            })?;
            Ok(Bytes::from(buf))
        }));
    }
}

impl Stream for ChunkStream {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        let Some(read) = self.in_flight.as_mut() else {
            return Poll::Ready(None);
        };
        let done = ready!(Pin::new(read).poll(cx));
        self.in_flight = None;
        let chunk = match done {
            Ok(chunk) => chunk,
            Err(e) => Err(std::io::Error::other(format!("blob read task: {e}"))),
        };
        if chunk.is_ok() {
            self.start_read();
        } else {
            self.next = self.end;
        }
        Poll::Ready(Some(chunk))
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        // A read already running finishes by itself; its chunk is simply dropped.
        if let Some(read) = self.in_flight.take() {
            read.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Write;

    async fn collect(file: File, range: std::ops::Range<u64>) -> (Vec<u8>, usize) {
        let mut stream = ChunkStream::new(file, PathBuf::from("t"), range);
        let (mut out, mut chunks) = (Vec::new(), 0);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
            chunks += 1;
        }
        (out, chunks)
    }

    #[tokio::test]
    async fn ranges_read_exactly_their_bytes_in_large_chunks() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(3 * READ_CHUNK + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        f.write_all(&data).unwrap();
        for range in [
            0..data.len() as u64,
            0..0,
            5..6,
            (READ_CHUNK as u64 - 1)..(2 * READ_CHUNK as u64 + 1),
        ] {
            let (got, chunks) = collect(f.try_clone().unwrap(), range.clone()).await;
            assert_eq!(got, &data[range.start as usize..range.end as usize]);
            let expected = (range.end - range.start).div_ceil(READ_CHUNK as u64) as usize;
            assert_eq!(chunks, expected, "{range:?}");
        }
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_is_an_error_not_a_short_body() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"short").unwrap();
        let mut stream = ChunkStream::new(f, PathBuf::from("t"), 0..10);
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(stream.next().await.is_none());
    }
}
