//! Reading: GetObject (whole or a byte range), ListObjectsV2, and the body adapter that
//! bounds a store which stops sending.

use std::ops::Range;
use std::time::Duration;

use artifactstore_model::Digest;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use futures::StreamExt;

use super::S3BlobStore;
use super::error::source_chain;
use crate::{BlobMeta, BlobRead, ByteStream, Error, Result};

impl S3BlobStore {
    pub(super) async fn get_blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead> {
        let key = self.key(digest);
        let not_found = |e: &SdkError<GetObjectError>| matches!(e, SdkError::ServiceError(se) if se.err().is_no_such_key());
        if let Some(r) = &range
            && (r.start >= r.end)
        {
            // S3 cannot express an empty range: check the size and send nothing.
            let size = self
                .exists(&key)
                .await?
                .ok_or(Error::NotFound { digest: *digest })?;
            if r.start > r.end || r.end > size {
                return Err(Error::InvalidRange {
                    start: r.start,
                    end: r.end,
                    size,
                });
            }
            return Ok(BlobRead {
                size,
                range: r.clone(),
                body: futures::stream::empty().boxed(),
            });
        }
        let mut req = self.client.get_object().bucket(&self.bucket).key(&key);
        if let Some(r) = &range {
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) if not_found(&e) => return Err(Error::NotFound { digest: *digest }),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                let size = self.exists(&key).await?.unwrap_or(0);
                let r = range.unwrap_or(0..0);
                return Err(Error::InvalidRange {
                    start: r.start,
                    end: r.end,
                    size,
                });
            }
            Err(e) => return Err(self.err("GetObject", Some(&key), e)),
        };
        let len = out.content_length().unwrap_or(0).max(0) as u64;
        let (size, range) = match (&range, out.content_range()) {
            (None, _) => (len, 0..len),
            (Some(r), Some(cr)) => {
                let total = cr
                    .rsplit('/')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(len);
                if r.end > total {
                    return Err(Error::InvalidRange {
                        start: r.start,
                        end: r.end,
                        size: total,
                    });
                }
                (total, r.clone())
            }
            // A store that ignored the range sent everything.
            (Some(r), None) => {
                if r.end > len {
                    return Err(Error::InvalidRange {
                        start: r.start,
                        end: r.end,
                        size: len,
                    });
                }
                let skip = r.start as usize;
                let want = (r.end - r.start) as usize;
                let body = skip_take(
                    body_stream(out.body, self.endpoint.clone(), self.read_timeout),
                    skip,
                    want,
                );
                return Ok(BlobRead {
                    size: len,
                    range: r.clone(),
                    body,
                });
            }
        };
        let body = self.read_body(&key, out.body, range.clone());
        Ok(BlobRead { size, range, body })
    }

    pub(super) async fn list_blobs(
        &self,
        after: Option<Digest>,
        limit: usize,
    ) -> Result<Vec<BlobMeta>> {
        let prefix = self.blobs_prefix();
        let mut out = Vec::new();
        let mut start_after = after.map(|d| self.key(&d));
        let mut token: Option<String> = None;
        while out.len() < limit {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_start_after(if token.is_none() {
                    start_after.take()
                } else {
                    None
                })
                .set_continuation_token(token.clone())
                .max_keys((limit - out.len()).min(1000) as i32)
                .send()
                .await
                .map_err(|e| self.err("ListObjectsV2", None, e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                let Some(hex) = key.rsplit('/').next() else {
                    continue;
                };
                let Ok(digest) = Digest::from_hex(hex) else {
                    continue;
                };
                if after.is_some_and(|a| digest <= a) {
                    continue;
                }
                out.push(BlobMeta {
                    digest,
                    size: obj.size().unwrap_or(0).max(0) as u64,
                });
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() || page.contents().is_empty() {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// Adapts the SDK's body to our stream type; fails a read that waits longer than `idle`
/// for its next chunk.
pub(super) fn body_stream(body: SdkBody, endpoint: String, idle: Duration) -> ByteStream {
    futures::stream::unfold(Some(body), move |body| {
        let endpoint = endpoint.clone();
        async move {
            let mut body = body?;
            let Ok(next) = tokio::time::timeout(idle, body.try_next()).await else {
                let msg = format!("reading from {endpoint}: no data for {} s", idle.as_secs());
                return Some((
                    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, msg)),
                    None,
                ));
            };
            match next {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                Ok(None) => None,
                Err(e) => Some((
                    Err(std::io::Error::other(format!(
                        "reading from {endpoint}: {}",
                        source_chain(&e)
                    ))),
                    None,
                )),
            }
        }
    })
    .boxed()
}

/// Drops `skip` bytes, then yields `want` bytes, of a stream; the stream is then
/// dropped, not read to its end.
pub(super) fn skip_take(body: ByteStream, skip: usize, want: usize) -> ByteStream {
    futures::stream::unfold(
        (body, skip, want),
        |(mut body, mut skip, want)| async move {
            if want == 0 {
                return None;
            }
            loop {
                match body.next().await? {
                    Ok(mut chunk) => {
                        let drop = skip.min(chunk.len());
                        skip -= drop;
                        let _ = chunk.split_to(drop);
                        chunk.truncate(want);
                        if !chunk.is_empty() {
                            let want = want - chunk.len();
                            return Some((Ok(chunk), (body, skip, want)));
                        }
                    }
                    Err(e) => return Some((Err(e), (body, skip, 0))),
                }
            }
        },
    )
    .boxed()
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::TryStreamExt;

    use super::*;

    pub(in crate::s3) fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
        .boxed()
    }

    async fn collect(s: ByteStream) -> (Vec<u8>, usize) {
        let chunks: Vec<Bytes> = s.try_collect().await.unwrap();
        (chunks.concat(), chunks.len())
    }

    #[tokio::test]
    async fn skip_take_cuts_across_chunk_boundaries() {
        let (bytes, _) = collect(skip_take(chunks(&[b"abc", b"defg", b"hij"]), 2, 6)).await;
        assert_eq!(bytes, b"cdefgh");
        let (bytes, _) = collect(skip_take(chunks(&[b"abc", b"def"]), 0, 6)).await;
        assert_eq!(bytes, b"abcdef");
        let (bytes, _) = collect(skip_take(chunks(&[b"abc", b"def"]), 3, 3)).await;
        assert_eq!(bytes, b"def");
    }

    #[tokio::test]
    async fn skip_take_yields_no_empty_chunks() {
        let (bytes, n) = collect(skip_take(chunks(&[b"ab", b"cd", b"ef", b"gh"]), 4, 1)).await;
        assert_eq!(bytes, b"e");
        assert_eq!(
            n, 1,
            "skipped and exhausted chunks are dropped, not yielded empty"
        );
        let (bytes, n) = collect(skip_take(chunks(&[b"ab"]), 0, 0)).await;
        assert!(bytes.is_empty());
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn skip_take_stops_reading_once_it_has_its_bytes() {
        let polled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = polled.clone();
        let body = futures::stream::iter(0..100)
            .map(move |_| {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(Bytes::from_static(b"abcd"))
            })
            .boxed();
        let (bytes, _) = collect(skip_take(body, 0, 10)).await;
        assert_eq!(bytes, b"abcdabcdab");
        assert_eq!(polled.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn skip_take_passes_errors_through() {
        let body = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("cut")),
        ])
        .boxed();
        let all: Vec<std::io::Result<Bytes>> = skip_take(body, 1, 10).collect().await;
        assert_eq!(all[0].as_ref().unwrap().as_ref(), b"b");
        assert!(all[1].is_err());
    }

    #[tokio::test]
    async fn the_sdk_body_is_passed_through_to_its_end() {
        let body = SdkBody::from(Bytes::from_static(b"hello"));
        let (bytes, _) = collect(body_stream(
            body,
            "http://store".into(),
            Duration::from_secs(5),
        ))
        .await;
        assert_eq!(bytes, b"hello");
    }
}
