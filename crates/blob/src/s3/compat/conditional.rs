//! Conditional requests and checksum headers on PutObject.

use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::ChecksumAlgorithm;
use aws_smithy_types::body::SdkBody as RawBody;
use bytes::Bytes;

use super::{Outcome, Probe, answer, fail, pass, status_and_code, unsupported};
use crate::conformance::unique_bytes;

pub(super) async fn put_if_none_match(p: &Probe) -> Outcome {
    let key = p.key("conditional/put");
    let first = Bytes::from_static(b"first");
    let put = |body: Bytes| {
        p.client
            .put_object()
            .bucket(&p.bucket)
            .key(&key)
            .if_none_match("*")
            .body(SdkBody::from(body))
            .send()
    };
    if let Err(e) = put(first.clone()).await {
        let (status, _) = status_and_code(&e);
        return if matches!(status, Some(400 | 501)) {
            unsupported(format!("refused on a new key: {}", answer(&e)))
        } else {
            fail(format!("the first write: {}", answer(&e)))
        };
    }
    match put(Bytes::from_static(b"second")).await {
        Err(e) if matches!(status_and_code(&e).0, Some(412 | 409)) => pass(answer(&e)),
        Err(e) => unsupported(format!("the second write: {}", answer(&e))),
        Ok(_) => match p.get(&key, None).await {
            Ok(b) if b == first => unsupported("the second write answered 200 but kept the first"),
            _ => unsupported("the second write replaced the object: the condition is ignored"),
        },
    }
}

/// GetObject with `If-Match` carrying the object's ETag, quoted or not, then a wrong one.
pub(super) async fn get_if_match(p: &Probe, quoted: bool) -> Outcome {
    let key = p.key(if quoted {
        "conditional/if-match-quoted"
    } else {
        "conditional/if-match-unquoted"
    });
    let out = match p
        .client
        .put_object()
        .bucket(&p.bucket)
        .key(&key)
        .body(SdkBody::from_static(b"match me"))
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => return fail(format!("PutObject: {}", answer(&e))),
    };
    let Some(etag) = out.e_tag().map(|t| t.trim_matches('"').to_owned()) else {
        return fail("PutObject answered no ETag");
    };
    let send = |value: String| {
        p.client
            .get_object()
            .bucket(&p.bucket)
            .key(&key)
            .if_match(value)
            .send()
    };
    let value = if quoted {
        format!("\"{etag}\"")
    } else {
        etag.clone()
    };
    if let Err(e) = send(value).await {
        return fail(format!("the object's own ETag: {}", answer(&e)));
    }
    let other = if quoted {
        "\"00000000000000000000000000000000\""
    } else {
        "00000000000000000000000000000000"
    };
    match send(other.into()).await {
        Err(e) if status_and_code(&e).0 == Some(412) => {
            pass(format!("matched; another ETag: {}", answer(&e)))
        }
        Err(e) => fail(format!("matched; another ETag: {}", answer(&e))),
        Ok(_) => unsupported("matched, and so did another ETag: If-Match is ignored"),
    }
}

/// (row id, algorithm) of the checksum header probes.
pub(super) const CHECKSUMS: &[(&str, ChecksumAlgorithm)] = &[
    ("put-checksum-crc32", ChecksumAlgorithm::Crc32),
    ("put-checksum-crc32c", ChecksumAlgorithm::Crc32C),
    ("put-checksum-sha256", ChecksumAlgorithm::Sha256),
];

/// The right checksum (computed by the SDK, sent as a header for a body in memory) must
/// be accepted; a wrong one must be refused, or the store does not check it.
pub(super) async fn put_checksum(p: &Probe, alg: ChecksumAlgorithm) -> Outcome {
    let key = p.key(&format!("checksum/{}", alg.as_str().to_ascii_lowercase()));
    let body = Bytes::from(unique_bytes(4096));
    if let Err(e) = p
        .client
        .put_object()
        .bucket(&p.bucket)
        .key(&key)
        .checksum_algorithm(alg.clone())
        .body(SdkBody::from(body.clone()))
        .send()
        .await
    {
        return unsupported(format!("the right checksum refused: {}", answer(&e)));
    }
    // Base64 of zero bytes of the checksum's size: never the checksum of these bytes.
    let wrong = p
        .client
        .put_object()
        .bucket(&p.bucket)
        .key(&key)
        .body(SdkBody::from(body));
    let wrong = match alg {
        ChecksumAlgorithm::Crc32 => wrong.checksum_crc32("AAAAAA=="),
        ChecksumAlgorithm::Crc32C => wrong.checksum_crc32_c("AAAAAA=="),
        _ => wrong.checksum_sha256("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    };
    match wrong.send().await {
        Err(e) if status_and_code(&e).0 == Some(400) => {
            pass(format!("accepted; a wrong value: {}", answer(&e)))
        }
        Err(e) => fail(format!("accepted; a wrong value: {}", answer(&e))),
        Ok(_) => unsupported("accepted, and so was a wrong value: the header is not checked"),
    }
}

/// A body the SDK cannot see in memory is sent aws-chunked with the checksum in a
/// trailer, as recent SDKs do by default.
pub(super) async fn put_checksum_trailer(p: &Probe) -> Outcome {
    let key = p.key("checksum/trailer");
    let body = Bytes::from(unique_bytes(64 * 1024));
    let streaming = RawBody::from_body_1_x(http_body_util::Full::new(body.clone()));
    let sent = p
        .client
        .put_object()
        .bucket(&p.bucket)
        .key(&key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .content_length(body.len() as i64)
        .body(SdkBody::new(streaming))
        .send()
        .await;
    if let Err(e) = sent {
        return unsupported(format!("refused: {}", answer(&e)));
    }
    match p.get(&key, None).await {
        Ok(got) if got == body => pass("accepted; the object reads back without the chunk framing"),
        Ok(got) => fail(format!(
            "stored {} bytes that are not the body (the framing was kept?)",
            got.len()
        )),
        Err(e) => fail(format!("GetObject: {}", answer(&e))),
    }
}
