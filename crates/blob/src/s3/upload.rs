//! Writing a blob: one PutObject for a body of at most one part; otherwise a multipart
//! upload, straight to the blob key when the digest is declared, else to a staging key
//! and then copied into place. See the module docs of `s3` for why nothing unverified
//! becomes visible.

use artifactstore_model::{Digest, Hasher};
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::S3BlobStore;
use super::error::{BackendErrorKind, classify, is_precondition_failed, status};
use crate::{ByteStream, Error, PublishGate, PutOutcome, Result, verify_only};

/// Largest object CopyObject can copy in one request.
const MAX_SINGLE_COPY: u64 = 5 << 30;
/// Part size of a copy above [`MAX_SINGLE_COPY`].
const COPY_PART: u64 = 1 << 30;

impl S3BlobStore {
    pub(super) async fn put_blob(
        &self,
        body: ByteStream,
        expected: Option<Digest>,
        gate: &dyn PublishGate,
    ) -> Result<PutOutcome> {
        if let Some(d) = expected {
            gate.before_publish(&d).await?;
            if self.exists(&self.key(&d)).await?.is_some() {
                return verify_only(body, d).await;
            }
        }
        let mut reader = PartReader::new(body);
        let first = reader.next_part(self.part_size).await?;
        if first.len() < self.part_size {
            // The whole body is in memory: verify, then write it in one request.
            let (digest, size) = reader.finish();
            if let Some(expected) = expected
                && expected != digest
            {
                return Err(Error::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
            if expected.is_none() {
                gate.before_publish(&digest).await?;
            }
            let created = self.put_whole(&self.key(&digest), first).await?;
            return Ok(PutOutcome {
                digest,
                size,
                created,
            });
        }

        let target = match &expected {
            Some(d) => self.key(d),
            None => self.staging_key(),
        };
        let mut guard = self.create_multipart(&target).await?;
        let parts = match self.upload_parts(&guard, first, &mut reader).await {
            Ok(parts) => parts,
            Err(e) => {
                guard.abort().await;
                return Err(e);
            }
        };
        let (digest, size) = reader.finish();
        if let Some(expected) = expected {
            if expected != digest {
                guard.abort().await;
                return Err(Error::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
            let conditional = self.conditional_complete() == Some(true);
            let created = self.complete(&mut guard, parts, conditional).await?;
            if !created {
                guard.abort().await;
            }
            return Ok(PutOutcome {
                digest,
                size,
                created,
            });
        }

        // Staged: now that the digest is known, copy into place unless it is there.
        self.complete(&mut guard, parts, false).await?;
        let final_key = self.key(&digest);
        let result = match gate.before_publish(&digest).await {
            Err(e) => Err(e),
            Ok(()) => match self.exists(&final_key).await {
                Ok(Some(_)) => Ok(false),
                Ok(None) => self.copy(&target, &final_key, size).await.map(|()| true),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = self.delete_key(&target).await {
            tracing::warn!(error = %e, "could not delete a staging object; the start-up sweep will");
        }
        Ok(PutOutcome {
            digest,
            size,
            created: result?,
        })
    }

    /// Writes a small, already verified blob. False if it was already there.
    async fn put_whole(&self, key: &str, data: Bytes) -> Result<bool> {
        let conditional = self.conditional_create() == Some(true);
        if !conditional && self.exists(key).await?.is_some() {
            return Ok(false);
        }
        let len = data.len() as u64;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(len as i64)
            .body(SdkBody::from(data));
        if conditional {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_precondition_failed(&e) => self.taken(key, e, "PutObject").await,
            // A store that refuses a conditional PUT early (412 before the body is read)
            // may close the connection while the body is still being sent: the client
            // sees a broken pipe, not the 412. Keys are content addresses, so a key
            // that is there with this size holds these bytes: the blob is stored.
            Err(e @ SdkError::DispatchFailure(_)) => match self.exists(key).await {
                Ok(Some(size)) if size == len => Ok(false),
                _ => Err(self.err("PutObject", Some(key), e)),
            },
            Err(e) => Err(self.err("PutObject", Some(key), e)),
        }
    }

    pub(super) async fn create_multipart(&self, key: &str) -> Result<MultipartGuard> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", Some(key), e))?;
        let upload_id = out.upload_id().ok_or_else(|| Error::Backend {
            op: "CreateMultipartUpload",
            target: self.target(Some(key)),
            kind: BackendErrorKind::Other,
            detail: "the store returned no upload id".into(),
        })?;
        Ok(MultipartGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            armed: true,
        })
    }

    /// Streams the rest of the body as parts (the first part is already read).
    async fn upload_parts(
        &self,
        guard: &MultipartGuard,
        first: Bytes,
        reader: &mut PartReader,
    ) -> Result<Vec<CompletedPart>> {
        // A JoinSet aborts its tasks when dropped: on any error below (and on cancellation)
        // no part upload keeps running while the multipart upload is being aborted.
        let mut in_flight = tokio::task::JoinSet::new();
        let mut parts = Vec::new();
        let mut number = 1i32;
        let mut buf = first;
        loop {
            let (client, bucket, key, id) = (
                self.client.clone(),
                guard.bucket.clone(),
                guard.key.clone(),
                guard.upload_id.clone(),
            );
            let part_number = number;
            let len = buf.len();
            let body = buf;
            in_flight.spawn(async move {
                client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(part_number)
                    .content_length(len as i64)
                    .body(SdkBody::from(body))
                    .send()
                    .await
                    .map(|out| {
                        CompletedPart::builder()
                            .part_number(part_number)
                            .set_e_tag(out.e_tag().map(str::to_owned))
                            .build()
                    })
            });
            number += 1;
            while in_flight.len() >= self.concurrency {
                parts.push(self.joined_part(&guard.key, in_flight.join_next().await)?);
            }
            buf = reader.next_part(self.part_size).await?;
            if buf.is_empty() {
                break;
            }
        }
        while let Some(done) = in_flight.join_next().await {
            parts.push(self.joined_part(&guard.key, Some(done))?);
        }
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    fn joined_part<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        key: &str,
        done: Option<
            std::result::Result<
                std::result::Result<CompletedPart, SdkError<E>>,
                tokio::task::JoinError,
            >,
        >,
    ) -> Result<CompletedPart> {
        match done {
            Some(Ok(Ok(part))) => Ok(part),
            Some(Ok(Err(e))) => Err(self.err("UploadPart", Some(key), e)),
            Some(Err(e)) => Err(Error::Task(e.to_string())),
            None => Err(Error::Task("no part upload in flight".into())),
        }
    }

    /// Completes a multipart upload; false if a conditional completion found the key taken.
    async fn complete(
        &self,
        guard: &mut MultipartGuard,
        parts: Vec<CompletedPart>,
        conditional: bool,
    ) -> Result<bool> {
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&guard.key)
            .upload_id(&guard.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts.clone()))
                    .build(),
            );
        if conditional {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => {
                guard.armed = false;
                Ok(true)
            }
            // The guard aborts the upload when the key is taken.
            Err(e) if conditional && is_precondition_failed(&e) => {
                self.taken(&guard.key, e, "CompleteMultipartUpload").await
            }
            Err(e)
                if conditional
                    && (classify(&e).0 == BackendErrorKind::NotImplemented
                        || status(&e) == Some(501)) =>
            {
                // The store stopped honouring what the probe found (an upgrade, a mixed
                // fleet): learn it, and complete without the condition — the parts are
                // verified, so that is the same bytes at the same key.
                tracing::warn!(key = %guard.key, "the store no longer takes If-None-Match on CompleteMultipartUpload; completing without it");
                self.forget_conditional_complete();
                Box::pin(self.complete(guard, parts, false)).await
            }
            Err(e) => Err(self.err("CompleteMultipartUpload", Some(&guard.key), e)),
        }
    }

    /// After a 412 (or AWS's 409 for a conflicting conditional write) to `op` on `key`:
    /// the blob is stored only if the key is there now — a 409 also answers a write that
    /// raced one which may yet fail. Keys are content addresses, so what is there holds
    /// these bytes.
    async fn taken<E>(&self, key: &str, e: SdkError<E>, op: &'static str) -> Result<bool>
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match self.exists(key).await? {
            Some(_) => Ok(false),
            None => Err(self.err(op, Some(key), e)),
        }
    }

    /// Server-side copy of a staged object to its content address.
    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let source = format!("{}/{}", self.bucket, encode_key(from));
        if size <= MAX_SINGLE_COPY {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(&source)
                .send()
                .await
                .map_err(|e| self.err("CopyObject", Some(to), e))?;
            return Ok(());
        }
        let mut guard = self.create_multipart(to).await?;
        let mut parts = Vec::new();
        for (number, (start, end)) in (1..).zip(copy_ranges(size)) {
            let out = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(to)
                .upload_id(&guard.upload_id)
                .part_number(number)
                .copy_source(&source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .customize()
                .mutate_request(empty_body_length)
                .send()
                .await
                .map_err(|e| self.err("UploadPartCopy", Some(to), e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(
                        out.copy_part_result()
                            .and_then(|r| r.e_tag())
                            .map(str::to_owned),
                    )
                    .build(),
            );
        }
        self.complete(&mut guard, parts, false).await?;
        Ok(())
    }
}

/// Says `Content-Length: 0` on a request without a body. The SDK sends UploadPartCopy
/// without the header, and Ceph RGW refuses it so (411 MissingContentLength; measured
/// by `storage compat`).
pub(super) fn empty_body_length(request: &mut aws_smithy_runtime_api::http::Request) {
    request.headers_mut().insert("content-length", "0");
}

/// Inclusive byte ranges of [`COPY_PART`] (the last one shorter) covering `size` bytes.
fn copy_ranges(size: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..size)
        .step_by(COPY_PART as usize)
        .map(move |start| (start, (start + COPY_PART).min(size) - 1))
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/` and unreserved characters.
pub(super) fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Aborts its multipart upload when dropped armed: on every error path and when the
/// upload future is cancelled.
pub(super) struct MultipartGuard {
    client: Client,
    bucket: String,
    key: String,
    pub(super) upload_id: String,
    pub(super) armed: bool,
}

impl MultipartGuard {
    pub(super) async fn abort(mut self) {
        self.armed = false;
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
    }
}

impl Drop for MultipartGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (client, bucket, key, id) = (
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
        );
        // Drop cannot wait: the abort runs on its own, if a runtime is there to run it.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await;
            });
        }
    }
}

/// Cuts a body stream into parts of a fixed size, hashing everything it reads.
struct PartReader {
    body: ByteStream,
    /// Read from the body but not yet handed out in a part.
    carry: Bytes,
    hasher: Hasher,
    size: u64,
    done: bool,
}

impl PartReader {
    fn new(body: ByteStream) -> Self {
        PartReader {
            body,
            carry: Bytes::new(),
            hasher: Hasher::new(),
            size: 0,
            done: false,
        }
    }

    /// The next `part_size` bytes, fewer at the end, empty when the body is exhausted.
    async fn next_part(&mut self, part_size: usize) -> Result<Bytes> {
        let mut buf = BytesMut::with_capacity(part_size.min(self.carry.len().max(64 << 10)).max(1));
        loop {
            if !self.carry.is_empty() {
                let take = (part_size - buf.len()).min(self.carry.len());
                buf.extend_from_slice(&self.carry.split_to(take));
                if buf.len() == part_size {
                    return Ok(buf.freeze());
                }
            }
            if self.done {
                return Ok(buf.freeze());
            }
            match self.body.next().await {
                None => self.done = true,
                Some(Err(e)) => return Err(Error::Body(e)),
                Some(Ok(chunk)) => {
                    self.hasher.update(&chunk);
                    self.size += chunk.len() as u64;
                    if buf.capacity() < part_size {
                        buf.reserve(part_size - buf.len());
                    }
                    self.carry = chunk;
                }
            }
        }
    }

    /// The digest and size of everything read.
    fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(chunks: Vec<Vec<u8>>) -> ByteStream {
        futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))).boxed()
    }

    async fn parts_of(chunks: Vec<Vec<u8>>, part_size: usize) -> (Vec<Bytes>, Digest, u64) {
        let mut reader = PartReader::new(body_of(chunks));
        let mut parts = Vec::new();
        loop {
            let part = reader.next_part(part_size).await.unwrap();
            if part.is_empty() {
                break;
            }
            parts.push(part);
        }
        let (digest, size) = reader.finish();
        (parts, digest, size)
    }

    #[tokio::test]
    async fn parts_are_full_but_the_last_whatever_the_chunks() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        for chunk in [1, 7, 1000, 4096, 10_000] {
            let chunks: Vec<Vec<u8>> = data.chunks(chunk).map(<[u8]>::to_vec).collect();
            let (parts, digest, size) = parts_of(chunks, 3000).await;
            let lens: Vec<usize> = parts.iter().map(Bytes::len).collect();
            assert_eq!(lens, [3000, 3000, 3000, 1000], "chunks of {chunk}");
            assert_eq!(parts.concat(), data, "chunks of {chunk}");
            assert_eq!(digest, Digest::of(&data));
            assert_eq!(size, 10_000);
        }
    }

    #[tokio::test]
    async fn an_exact_multiple_has_no_short_last_part() {
        let (parts, _, size) = parts_of(vec![vec![1; 4000], vec![2; 2000]], 3000).await;
        assert_eq!(
            parts.iter().map(Bytes::len).collect::<Vec<_>>(),
            [3000, 3000]
        );
        assert_eq!(size, 6000);
    }

    #[tokio::test]
    async fn an_empty_body_gives_one_empty_part_and_the_empty_digest() {
        let mut reader = PartReader::new(body_of(vec![vec![], vec![]]));
        assert!(reader.next_part(5).await.unwrap().is_empty());
        assert_eq!(reader.finish(), (Digest::of(b""), 0));
    }

    #[tokio::test]
    async fn a_failing_body_fails_the_part() {
        let body = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("client went away")),
        ])
        .boxed();
        let mut reader = PartReader::new(body);
        assert!(matches!(reader.next_part(10).await, Err(Error::Body(_))));
    }

    #[test]
    fn copy_sources_are_percent_encoded_but_slashes() {
        assert_eq!(encode_key("p/staging/1-2-3"), "p/staging/1-2-3");
        assert_eq!(encode_key("a b+c/é~_."), "a%20b%2Bc/%C3%A9~_.");
        assert_eq!(encode_key("?&=%"), "%3F%26%3D%25");
    }

    #[test]
    fn copy_ranges_cover_the_object_in_parts_of_one_gib() {
        let g = COPY_PART;
        assert_eq!(
            copy_ranges(2 * g + 5).collect::<Vec<_>>(),
            [(0, g - 1), (g, 2 * g - 1), (2 * g, 2 * g + 4)]
        );
        assert_eq!(
            copy_ranges(3 * g).last(),
            Some((2 * g, 3 * g - 1)),
            "an exact multiple ends on the last byte"
        );
        assert_eq!(copy_ranges(0).count(), 0);
    }
}
