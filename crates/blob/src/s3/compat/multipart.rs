//! Multipart uploads: parts, completion, abort, listing, part copy, conditional
//! completion and per-part checksums.

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::complete_multipart_upload::{
    CompleteMultipartUploadError, CompleteMultipartUploadOutput,
};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::{Outcome, Probe, answer, fail, pass, status_and_code, unsupported};
use crate::conformance::unique_bytes;
use crate::s3::MIN_PART_SIZE;

/// Starts an upload; `Err` is the evidence.
async fn create(
    p: &Probe,
    key: &str,
    checksum: Option<ChecksumAlgorithm>,
) -> Result<String, String> {
    let out = p
        .client
        .create_multipart_upload()
        .bucket(&p.bucket)
        .key(key)
        .set_checksum_algorithm(checksum)
        .send()
        .await
        .map_err(|e| format!("CreateMultipartUpload: {}", answer(&e)))?;
    out.upload_id()
        .map(str::to_owned)
        .ok_or_else(|| "CreateMultipartUpload answered no upload id".to_owned())
}

/// Uploads part `number`; returns it as the completion lists it.
async fn part(
    p: &Probe,
    key: &str,
    id: &str,
    number: i32,
    body: Bytes,
    checksum: Option<ChecksumAlgorithm>,
) -> Result<CompletedPart, String> {
    let out = p
        .client
        .upload_part()
        .bucket(&p.bucket)
        .key(key)
        .upload_id(id)
        .part_number(number)
        .set_checksum_algorithm(checksum)
        .body(SdkBody::from(body))
        .send()
        .await
        .map_err(|e| format!("UploadPart {number}: {}", answer(&e)))?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .set_e_tag(out.e_tag().map(str::to_owned))
        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
        .build())
}

/// Completes an upload, with `If-None-Match: *` when `if_absent`.
async fn complete(
    p: &Probe,
    key: &str,
    id: &str,
    parts: Vec<CompletedPart>,
    if_absent: bool,
) -> Result<CompleteMultipartUploadOutput, SdkError<CompleteMultipartUploadError>> {
    let parts = CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build();
    p.client
        .complete_multipart_upload()
        .bucket(&p.bucket)
        .key(key)
        .upload_id(id)
        .set_if_none_match(if_absent.then(|| "*".to_owned()))
        .multipart_upload(parts)
        .send()
        .await
}

pub(super) async fn abort_upload(p: &Probe, key: &str, id: &str) -> Result<(), String> {
    p.client
        .abort_multipart_upload()
        .bucket(&p.bucket)
        .key(key)
        .upload_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| answer(&e))
}

/// Runs `f` on a new upload and aborts the upload afterwards unless `f` completed it.
async fn with_upload<F, Fut>(
    p: &Probe,
    key: &str,
    checksum: Option<ChecksumAlgorithm>,
    f: F,
) -> Outcome
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = (Outcome, bool)>,
{
    let id = match create(p, key, checksum).await {
        Ok(id) => id,
        Err(e) => return fail(e),
    };
    let (outcome, completed) = f(id.clone()).await;
    if !completed {
        let _ = abort_upload(p, key, &id).await;
    }
    outcome
}

/// A 5 MiB part and a 1 KiB last part: (the upload's row, the completion ETag's row).
pub(super) async fn upload(p: &Probe) -> (Outcome, Outcome) {
    let key = p.key("multipart/whole");
    let body = Bytes::from(unique_bytes(MIN_PART_SIZE + 1024));
    let mut etag = fail("no completion");
    let (key, body, etag_slot) = (&key, &body, &mut etag);
    let upload = with_upload(p, key, None, move |id| async move {
        let mut parts = Vec::new();
        for (n, chunk) in [
            (1, body.slice(..MIN_PART_SIZE)),
            (2, body.slice(MIN_PART_SIZE..)),
        ] {
            match part(p, key, &id, n, chunk, None).await {
                Ok(part) => parts.push(part),
                Err(e) => return (fail(e), false),
            }
        }
        let done = match complete(p, key, &id, parts, false).await {
            Ok(done) => done,
            Err(e) => {
                return (
                    fail(format!("CompleteMultipartUpload: {}", answer(&e))),
                    false,
                );
            }
        };
        *etag_slot = match done.e_tag().map(|t| t.trim_matches('"')) {
            Some(t) if t.ends_with("-2") => pass("an ETag of the form \"<hex>-2\""),
            Some(t) if !t.is_empty() => pass("an ETag not of the form \"<hex>-<parts>\""),
            _ => fail("an empty ETag: clients that compare it with a later HEAD fail"),
        };
        let outcome = match p.get(key, None).await {
            Ok(got) if got == *body => pass("2 parts completed; the object reads back whole"),
            Ok(got) => fail(format!(
                "the object reads back as {} other bytes",
                got.len()
            )),
            Err(e) => fail(format!("GetObject: {}", answer(&e))),
        };
        (outcome, true)
    })
    .await;
    (upload, etag)
}

pub(super) async fn min_part_size(p: &Probe) -> Outcome {
    let key = &p.key("multipart/small-parts");
    with_upload(p, key, None, move |id| async move {
        let mut parts = Vec::new();
        for n in 1..=2 {
            match part(p, key, &id, n, Bytes::from(unique_bytes(1024)), None).await {
                Ok(part) => parts.push(part),
                Err(e) => return (fail(e), false),
            }
        }
        match complete(p, key, &id, parts, false).await {
            Ok(_) => (
                unsupported("two 1 KiB parts completed: the minimum is not enforced"),
                true,
            ),
            Err(e) if status_and_code(&e).1 == "EntityTooSmall" => (pass(answer(&e)), false),
            Err(e) => (fail(answer(&e)), false),
        }
    })
    .await
}

pub(super) async fn abort(p: &Probe) -> Outcome {
    let key = p.key("multipart/aborted");
    let id = match create(p, &key, None).await {
        Ok(id) => id,
        Err(e) => return fail(e),
    };
    if let Err(e) = part(p, &key, &id, 1, Bytes::from(unique_bytes(1024)), None).await {
        let _ = abort_upload(p, &key, &id).await;
        return fail(e);
    }
    if let Err(e) = abort_upload(p, &key, &id).await {
        return fail(format!("AbortMultipartUpload: {e}"));
    }
    match p
        .client
        .list_parts()
        .bucket(&p.bucket)
        .key(&key)
        .upload_id(&id)
        .send()
        .await
    {
        Ok(out) if out.parts().is_empty() => pass("aborted; ListParts finds no part"),
        Ok(out) => fail(format!(
            "ListParts still lists {} part(s) after the abort",
            out.parts().len()
        )),
        Err(e) if status_and_code(&e).0 == Some(404) => {
            pass(format!("aborted; ListParts: {}", answer(&e)))
        }
        Err(e) => fail(format!("aborted; then ListParts: {}", answer(&e))),
    }
}

pub(super) async fn list_uploads(p: &Probe) -> Outcome {
    let key = &p.key("multipart/listed");
    with_upload(p, key, None, move |id| async move {
        let outcome = match p
            .client
            .list_multipart_uploads()
            .bucket(&p.bucket)
            .prefix(key)
            .send()
            .await
        {
            Ok(out)
                if out
                    .uploads()
                    .iter()
                    .any(|u| u.upload_id() == Some(id.as_str())) =>
            {
                pass("the upload is listed")
            }
            Ok(out) => fail(format!(
                "{} uploads listed, not this one",
                out.uploads().len()
            )),
            Err(e) => unsupported(answer(&e)),
        };
        (outcome, false)
    })
    .await
}

pub(super) async fn upload_part_copy(p: &Probe) -> Outcome {
    let (source, key) = (&p.key("multipart/copy-source"), &p.key("multipart/copied"));
    let body = &Bytes::from(unique_bytes(MIN_PART_SIZE + 512));
    if let Err(e) = p.put(source, body.clone()).await {
        return fail(e);
    }
    with_upload(p, key, None, move |id| async move {
        let copy = |length: bool| {
            let request = p
                .client
                .upload_part_copy()
                .bucket(&p.bucket)
                .key(key)
                .upload_id(&id)
                .part_number(1)
                .copy_source(super::objects::copy_source(&p.bucket, source))
                .copy_source_range(format!("bytes=0-{}", MIN_PART_SIZE - 1))
                .customize();
            if length {
                request
                    .mutate_request(crate::s3::upload::empty_body_length)
                    .send()
            } else {
                request.send()
            }
        };
        // As the SDK sends it, then (where that is refused 411) with Content-Length: 0.
        let (copied, note) = match copy(false).await {
            Ok(out) => (out, String::new()),
            Err(e) if status_and_code(&e).0 == Some(411) => match copy(true).await {
                Ok(out) => (
                    out,
                    format!(" (with Content-Length: 0; without: {})", answer(&e)),
                ),
                Err(e) => {
                    return (
                        unsupported(format!("UploadPartCopy: {}", answer(&e))),
                        false,
                    );
                }
            },
            Err(e) => {
                return (
                    unsupported(format!("UploadPartCopy: {}", answer(&e))),
                    false,
                );
            }
        };
        let first = CompletedPart::builder()
            .part_number(1)
            .set_e_tag(
                copied
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .map(str::to_owned),
            )
            .build();
        let second = match part(p, key, &id, 2, body.slice(MIN_PART_SIZE..), None).await {
            Ok(part) => part,
            Err(e) => return (fail(e), false),
        };
        if let Err(e) = complete(p, key, &id, vec![first, second], false).await {
            return (
                fail(format!("CompleteMultipartUpload: {}", answer(&e))),
                false,
            );
        }
        let outcome = match p.get(key, None).await {
            Ok(got) if got == *body => pass(format!(
                "a copied 5 MiB part and an uploaded part read back whole{note}"
            )),
            Ok(_) => fail("the object reads back as other bytes"),
            Err(e) => fail(format!("GetObject: {}", answer(&e))),
        };
        (outcome, true)
    })
    .await
}

pub(super) async fn complete_if_none_match(p: &Probe) -> Outcome {
    let key = &p.key("multipart/conditional");
    let first = &Bytes::from_static(b"already here");
    if let Err(e) = p.put(key, first.clone()).await {
        return fail(e);
    }
    with_upload(p, key, None, move |id| async move {
        let only = match part(p, key, &id, 1, Bytes::from(unique_bytes(1024)), None).await {
            Ok(part) => part,
            Err(e) => return (fail(e), false),
        };
        match complete(p, key, &id, vec![only], true).await {
            Err(e) if status_and_code(&e).0 == Some(412) => (pass(answer(&e)), false),
            Err(e) => (unsupported(answer(&e)), false),
            Ok(_) => {
                let replaced = p.get(key, None).await.map(|b| b != *first).unwrap_or(true);
                let evidence = if replaced {
                    "completed over the existing object: the condition is ignored"
                } else {
                    "answered success but kept the existing object"
                };
                (unsupported(evidence), true)
            }
        }
    })
    .await
}

pub(super) async fn checksums(p: &Probe) -> Outcome {
    let key = &p.key("multipart/checksums");
    let body = &Bytes::from(unique_bytes(MIN_PART_SIZE + 100));
    let crc = Some(ChecksumAlgorithm::Crc32);
    let crc_ref = &crc;
    with_upload(p, key, crc.clone(), move |id| async move {
        let mut parts = Vec::new();
        for (n, chunk) in [
            (1, body.slice(..MIN_PART_SIZE)),
            (2, body.slice(MIN_PART_SIZE..)),
        ] {
            match part(p, key, &id, n, chunk, crc_ref.clone()).await {
                Ok(part) => parts.push(part),
                Err(e) => return (unsupported(e), false),
            }
        }
        if let Err(e) = complete(p, key, &id, parts, false).await {
            return (
                unsupported(format!("CompleteMultipartUpload: {}", answer(&e))),
                false,
            );
        }
        let outcome = match p.get(key, None).await {
            Ok(got) if got == *body => {
                pass("2 parts with x-amz-checksum-crc32 completed and read back whole")
            }
            Ok(_) => fail("the object reads back as other bytes"),
            Err(e) => fail(format!("GetObject: {}", answer(&e))),
        };
        (outcome, true)
    })
    .await
}
