//! What runs at start-up and for `storage verify`: the bucket check, the probe for
//! `If-None-Match: *`, the sweep of stale uploads, and counts for tests.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::S3BlobStore;
use super::error::{BackendErrorKind, classify, is_precondition_failed, status};
use crate::{Error, Result};

// What `probe` found of `If-None-Match: *`, as one atomic byte.
pub(super) const COND_UNKNOWN: u8 = 0;
/// Honoured on PutObject only.
const COND_PUT: u8 = 1;
const COND_NO: u8 = 2;
/// Honoured on PutObject and on CompleteMultipartUpload.
const COND_PUT_AND_COMPLETE: u8 = 3;

impl S3BlobStore {
    /// Proves the bucket exists and the credentials may use it.
    pub async fn head_bucket(&self) -> Result<()> {
        let Err(e) = self.client.head_bucket().bucket(&self.bucket).send().await else {
            return Ok(());
        };
        let head_error = self.err("HeadBucket", None, e);
        if !matches!(
            &head_error,
            Error::Backend {
                kind: BackendErrorKind::AccessDenied | BackendErrorKind::Other,
                ..
            }
        ) {
            return Err(head_error);
        }
        // Answers to HEAD carry no error body, so a 403 or 404 does not say why. Ask again
        // with a GET, whose answer names the cause (signature, key id, bucket).
        match self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .max_keys(1)
            .send()
            .await
        {
            Err(e) => Err(self.err("ListObjectsV2", None, e)),
            Ok(_) => Err(head_error),
        }
    }

    /// Probes once whether the store honours `If-None-Match: *` on PutObject (it must
    /// refuse the second of two conditional writes of one key) and, if so, on
    /// CompleteMultipartUpload, and remembers both: writes follow these facts, not
    /// per-request guesses. Stores that answer 501 or 400, or silently overwrite, get
    /// HEAD-then-PUT instead.
    pub async fn probe(&self) -> Result<bool> {
        // Under the staging prefix, so that the stale sweep removes what a killed probe
        // left; random, so that replicas starting together never share a key.
        let key = format!(
            "{}-probe-{:016x}",
            self.staging_key(),
            artifactstore_model::random_below(u64::MAX)
        );
        let fresh = format!("{key}-complete");
        let put = || {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .if_none_match("*")
                .body(SdkBody::from_static(b"artifactstore probe"))
                .send()
        };
        let supported = match put().await {
            Err(e) => {
                let (kind, _) = classify(&e);
                if kind == BackendErrorKind::NotImplemented || matches!(status(&e), Some(400 | 501))
                {
                    Ok(false)
                } else {
                    Err(self.err("PutObject (probe)", Some(&key), e))
                }
            }
            Ok(_) => match put().await {
                Err(e) if is_precondition_failed(&e) => Ok(true),
                Ok(_) => Ok(false),
                Err(e) => Err(self.err("PutObject (probe)", Some(&key), e)),
            },
        };
        // Completion is asked only where PUT honours the condition (the key exists now).
        // A store that cannot say is completed without it: the parts are verified, so
        // that is safe (same bytes, same key); only `created` may then be wrong.
        let on_complete = match &supported {
            Ok(true) => match self.probe_conditional_complete(&fresh, &key).await {
                Ok(honoured) => honoured,
                Err(e) => {
                    tracing::warn!(error = %e, "probing If-None-Match on CompleteMultipartUpload failed; not using it");
                    false
                }
            },
            _ => false,
        };
        // The probe objects are removed whatever the result.
        let _ = self.delete_key(&key).await;
        let _ = self.delete_key(&fresh).await;
        let supported = supported?;
        self.conditional_create.store(
            match (supported, on_complete) {
                (true, true) => COND_PUT_AND_COMPLETE,
                (true, false) => COND_PUT,
                (false, _) => COND_NO,
            },
            Ordering::Relaxed,
        );
        tracing::info!(
            bucket = %self.bucket,
            endpoint = %self.endpoint,
            conditional_create = supported,
            conditional_complete = on_complete,
            "probed the S3 store"
        );
        Ok(supported)
    }

    /// Whether conditional create is in use on PutObject (`None` before
    /// [`probe`](Self::probe)).
    pub fn conditional_create(&self) -> Option<bool> {
        match self.conditional_create.load(Ordering::Relaxed) {
            COND_PUT | COND_PUT_AND_COMPLETE => Some(true),
            COND_NO => Some(false),
            _ => None,
        }
    }

    /// Stops using the condition on completions (the store refused it after the probe).
    pub(super) fn forget_conditional_complete(&self) {
        let _ = self.conditional_create.compare_exchange(
            COND_PUT_AND_COMPLETE,
            COND_PUT,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Whether it is in use on CompleteMultipartUpload too.
    pub fn conditional_complete(&self) -> Option<bool> {
        match self.conditional_create.load(Ordering::Relaxed) {
            COND_PUT_AND_COMPLETE => Some(true),
            COND_PUT | COND_NO => Some(false),
            _ => None,
        }
    }

    /// Aborts multipart uploads and deletes staging objects under our prefix that are
    /// older than `older_than`. Returns (uploads aborted, staging objects deleted).
    pub async fn sweep_stale(&self, older_than: Duration) -> Result<(usize, usize)> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let is_stale = |t: Option<&aws_smithy_types::DateTime>| {
            t.and_then(|t| SystemTime::try_from(*t).ok())
                .is_some_and(|t| t <= cutoff)
        };
        let mut aborted = 0;
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = match self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.err("ListMultipartUploads", None, e))
            {
                Ok(page) => page,
                Err(Error::Backend {
                    kind: BackendErrorKind::NotImplemented,
                    ..
                }) => {
                    tracing::warn!(bucket = %self.bucket, "the store cannot list multipart uploads; abandoned uploads cannot be swept");
                    break;
                }
                Err(e) => return Err(e),
            };
            for upload in page.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id())
                    && (key.starts_with(&self.blobs_prefix())
                        || key.starts_with(&self.staging_prefix()))
                    && is_stale(upload.initiated())
                {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                        .map_err(|e| self.err("AbortMultipartUpload", Some(key), e))?;
                    aborted += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        let mut deleted = 0;
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.staging_prefix())
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.err("ListObjectsV2", None, e))?;
            for obj in page.contents() {
                if let Some(key) = obj.key()
                    && is_stale(obj.last_modified())
                {
                    self.delete_key(key).await?;
                    deleted += 1;
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        if aborted + deleted > 0 {
            tracing::info!(aborted, deleted, bucket = %self.bucket, "swept stale uploads");
        }
        Ok((aborted, deleted))
    }

    /// Multipart uploads in progress under our prefix (for tests and `storage verify`).
    pub async fn multipart_uploads_in_progress(&self) -> Result<usize> {
        let page = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .send()
            .await
            .map_err(|e| self.err("ListMultipartUploads", None, e))?;
        Ok(page.uploads().len())
    }

    /// Keys of staging objects under our prefix (for tests and diagnostics).
    pub async fn staging_objects(&self) -> Result<Vec<String>> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.staging_prefix())
            .send()
            .await
            .map_err(|e| self.err("ListObjectsV2", None, e))?;
        Ok(page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect())
    }
}

/// The probe of conditional completion (see [`S3BlobStore::probe`]).
impl S3BlobStore {
    /// Whether CompleteMultipartUpload honours `If-None-Match: *`: a conditional
    /// completion of `fresh` (absent) must succeed and one of `existing` must be refused
    /// 412. False when the store refuses the header (400, 501), ignores it (the upload
    /// completes over the object, as on Ceph RGW) or refuses even the fresh key.
    pub(super) async fn probe_conditional_complete(
        &self,
        fresh: &str,
        existing: &str,
    ) -> Result<bool> {
        let refuses_header = |e: &CompletionError| {
            classify(e).0 == BackendErrorKind::NotImplemented
                || matches!(status(e), Some(400 | 409 | 412 | 501))
        };
        match self.probe_completion(fresh).await? {
            Ok(()) => {}
            Err(e) if refuses_header(&e) => return Ok(false),
            Err(e) => return Err(self.err("CompleteMultipartUpload (probe)", Some(fresh), e)),
        }
        match self.probe_completion(existing).await? {
            Ok(()) => Ok(false),
            Err(e) if status(&e) == Some(412) => Ok(true),
            Err(e) if refuses_header(&e) => Ok(false),
            Err(e) => Err(self.err("CompleteMultipartUpload (probe)", Some(existing), e)),
        }
    }

    /// One part to `key`, then a completion with `If-None-Match: *`: the store's answer.
    /// The upload is aborted (and awaited) unless it completed.
    async fn probe_completion(
        &self,
        key: &str,
    ) -> Result<std::result::Result<(), CompletionError>> {
        let mut guard = self.create_multipart(key).await?;
        let part = match self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&guard.upload_id)
            .part_number(1)
            .body(SdkBody::from_static(b"artifactstore probe"))
            .send()
            .await
        {
            Ok(part) => part,
            Err(e) => {
                guard.abort().await;
                return Err(self.err("UploadPart (probe)", Some(key), e));
            }
        };
        let parts = CompletedMultipartUpload::builder()
            .parts(
                CompletedPart::builder()
                    .part_number(1)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            )
            .build();
        let answer = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&guard.upload_id)
            .if_none_match("*")
            .multipart_upload(parts)
            .send()
            .await;
        if answer.is_ok() {
            guard.armed = false;
        } else {
            guard.abort().await;
        }
        Ok(answer.map(|_| ()))
    }
}

type CompletionError =
    SdkError<aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError>;
