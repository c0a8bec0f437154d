//! Large reads as ranged GETs in parallel: one GET stream is bounded by one connection's
//! window, so a large body is fetched `concurrency` chunks at a time (as S3 clients do)
//! and yielded in order. Memory is bounded twice: per read by `concurrency + 2` chunks
//! of `part_size` (those in flight, one queued, one being sent), and per store by
//! [`PARALLEL_READS`] such reads at once — others stream one GET as before. The body is
//! exactly the span or ends in an error: never short, never spliced.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{Semaphore, mpsc};

use super::S3BlobStore;
use super::error::classify;
use super::read::{body_stream, skip_take};
use crate::ByteStream;

/// Reads fetched in parallel at once, per store; the rest stream a single GET.
pub(super) const PARALLEL_READS: usize = 2;

pub(super) fn read_permits() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(PARALLEL_READS))
}

/// Where a chunk comes from.
#[derive(Clone)]
struct Source {
    client: Client,
    bucket: String,
    key: String,
    endpoint: String,
    idle: Duration,
}

impl S3BlobStore {
    /// The body of bytes `span` of `key`, which `first` (an answered GET of that span)
    /// is already sending. A span of at least two chunks, while a permit is free, keeps
    /// only the first chunk of `first` and fetches the rest as ranged GETs.
    pub(super) fn read_body(&self, key: &str, first: SdkBody, span: Range<u64>) -> ByteStream {
        let head = body_stream(first, self.endpoint.clone(), self.read_timeout);
        let chunk = self.part_size as u64;
        if span.end - span.start < 2 * chunk {
            return head;
        }
        let Ok(permit) = self.read_permits.clone().try_acquire_owned() else {
            return head;
        };
        let source = Source {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            endpoint: self.endpoint.clone(),
            idle: self.read_timeout,
        };
        let ranges: Vec<Range<u64>> = (span.start + chunk..span.end)
            .step_by(chunk as usize)
            .map(|start| start..(start + chunk).min(span.end))
            .collect();
        let concurrency = self.concurrency;
        // The fetches run beside the first chunk's stream; a reader that goes away
        // closes the channel, which ends them.
        let (tx, rx) = mpsc::channel::<std::io::Result<Vec<Bytes>>>(1);
        tokio::spawn(async move {
            let _permit = permit;
            let mut fetched = futures::stream::iter(ranges)
                .map(|r| fetch(source.clone(), r))
                .buffered(concurrency);
            loop {
                // A reader that went away (or stalls with the queue full while gone)
                // ends the fetches at once, not at the next send.
                let chunk = tokio::select! {
                    chunk = fetched.next() => chunk,
                    () = tx.closed() => break,
                };
                let Some(chunk) = chunk else { break };
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        let rest = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })
        .map_ok(|parts| futures::stream::iter(parts.into_iter().map(Ok)))
        .try_flatten();
        exactly(
            skip_take(head, 0, chunk as usize).chain(rest).boxed(),
            span.end - span.start,
        )
    }
}

/// `body`, which must carry exactly `len` bytes: a shortfall or an excess ends it with
/// an error, and nothing follows an error.
fn exactly(body: ByteStream, len: u64) -> ByteStream {
    futures::stream::unfold(Some((body, 0u64)), move |state| async move {
        let (mut body, seen) = state?;
        match body.next().await {
            Some(Ok(chunk)) => {
                let seen = seen + chunk.len() as u64;
                if seen > len {
                    let e =
                        std::io::Error::other(format!("{seen} bytes where {len} were expected"));
                    return Some((Err(e), None));
                }
                Some((Ok(chunk), Some((body, seen))))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None if seen == len => None,
            None => {
                let e =
                    std::io::Error::other(format!("the body ended after {seen} of {len} bytes"));
                Some((Err(e), None))
            }
        }
    })
    .boxed()
}

/// One ranged GET, whole, as the pieces it arrived in.
async fn fetch(s: Source, r: Range<u64>) -> std::io::Result<Vec<Bytes>> {
    let what = format!("GetObject {} bytes {}-{}", s.key, r.start, r.end - 1);
    let out = s
        .client
        .get_object()
        .bucket(&s.bucket)
        .key(&s.key)
        .range(format!("bytes={}-{}", r.start, r.end - 1))
        .send()
        .await
        .map_err(|e| {
            std::io::Error::other(format!("{what} at {}: {}", s.endpoint, classify(&e).1))
        })?;
    let asked = format!("bytes {}-{}/", r.start, r.end - 1);
    if !out.content_range().is_some_and(|cr| cr.starts_with(&asked)) {
        return Err(std::io::Error::other(format!(
            "{what} at {}: answered {:?}, not that range",
            s.endpoint,
            out.content_range()
        )));
    }
    let want = r.end - r.start;
    let mut parts = Vec::new();
    let mut got = 0u64;
    let mut body = body_stream(out.body, s.endpoint.clone(), s.idle);
    while let Some(part) = body.try_next().await? {
        got += part.len() as u64;
        // Never hold more than was asked for.
        if got > want {
            break;
        }
        parts.push(part);
    }
    if got != want {
        return Err(std::io::Error::other(format!(
            "{what} at {}: {got} bytes instead of {want}",
            s.endpoint
        )));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::read::tests::chunks as of;

    #[tokio::test]
    async fn a_body_is_exactly_its_length_or_ends_in_an_error() {
        let whole: Vec<_> = exactly(of(&[b"ab", b"cd"]), 4).collect().await;
        assert!(whole.iter().all(Result::is_ok) && whole.len() == 2);
        let short: Vec<_> = exactly(of(&[b"ab"]), 4).collect().await;
        assert!(
            short.last().unwrap().is_err(),
            "a short body ends in an error"
        );
        let long: Vec<_> = exactly(of(&[b"ab", b"cde"]), 4).collect().await;
        assert!(long.last().unwrap().is_err(), "an excess ends in an error");
        let spliced = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("cut")),
            Ok(Bytes::from_static(b"cd")),
        ])
        .boxed();
        let after: Vec<_> = exactly(spliced, 4).collect().await;
        assert_eq!(after.len(), 2, "nothing follows an error");
    }
}
