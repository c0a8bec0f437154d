//! Every feature `storage compat` probes, in report order: the one list of ids, groups
//! and what S3 does.

/// One probed feature.
pub struct Feature {
    /// Stable name for scripts, e.g. `put-if-none-match`.
    pub id: &'static str,
    pub group: &'static str,
    /// What S3 does, in a few words.
    pub feature: &'static str,
}

const fn f(id: &'static str, group: &'static str, feature: &'static str) -> Feature {
    Feature { id, group, feature }
}

const ADDR: &str = "addressing";
const LIST: &str = "listing";
const RANGE: &str = "ranged reads";
const MP: &str = "multipart";
const COND: &str = "conditional requests";
const SUM: &str = "checksums";
const PRESIGN: &str = "presigned URLs";
const OBJ: &str = "objects";
const AUTH: &str = "authentication";
const STS: &str = "STS";

pub const FEATURES: &[Feature] = &[
    f(
        "path-style",
        ADDR,
        "path-style requests (endpoint/bucket/key)",
    ),
    f(
        "virtual-host",
        ADDR,
        "virtual-host requests (bucket.endpoint/key)",
    ),
    f(
        "list-v2-pagination",
        LIST,
        "ListObjectsV2 pages with continuation tokens",
    ),
    f(
        "list-v2-delimiter",
        LIST,
        "ListObjectsV2 with delimiter `/` groups common prefixes",
    ),
    f(
        "range-first-byte",
        RANGE,
        "Range: bytes=0-0 answers the first byte",
    ),
    f(
        "range-last-byte",
        RANGE,
        "Range: bytes=N-1-N-1 answers the last byte",
    ),
    f(
        "range-suffix",
        RANGE,
        "Range: bytes=-10 answers the last ten bytes",
    ),
    f(
        "range-unsatisfiable",
        RANGE,
        "a range past the end is refused 416",
    ),
    f(
        "multipart-upload",
        MP,
        "a 5 MiB part and a last small part read back whole",
    ),
    f(
        "multipart-completion-etag",
        MP,
        "CompleteMultipartUpload answers the object's ETag",
    ),
    f(
        "multipart-min-part-size",
        MP,
        "a part under 5 MiB that is not the last is refused",
    ),
    f(
        "multipart-abort",
        MP,
        "AbortMultipartUpload discards the upload and its parts",
    ),
    f(
        "multipart-list-uploads",
        MP,
        "ListMultipartUploads lists an upload in progress",
    ),
    f(
        "upload-part-copy",
        MP,
        "UploadPartCopy makes a part from a range of an object",
    ),
    f(
        "put-if-none-match",
        COND,
        "PutObject with If-None-Match: * refuses an existing key (412)",
    ),
    f(
        "complete-if-none-match",
        COND,
        "CompleteMultipartUpload with If-None-Match: * refuses an existing key (412)",
    ),
    f(
        "get-if-match-quoted",
        COND,
        "GetObject with If-Match: \"etag\" (quoted) matches; another ETag is 412",
    ),
    f(
        "get-if-match-unquoted",
        COND,
        "GetObject with If-Match: etag (unquoted) matches; another ETag is 412",
    ),
    f(
        "put-checksum-crc32",
        SUM,
        "PutObject with x-amz-checksum-crc32 checked",
    ),
    f(
        "put-checksum-crc32c",
        SUM,
        "PutObject with x-amz-checksum-crc32c checked",
    ),
    f(
        "put-checksum-sha256",
        SUM,
        "PutObject with x-amz-checksum-sha256 checked",
    ),
    f(
        "put-checksum-trailer",
        SUM,
        "PutObject streamed aws-chunked with a trailing CRC32 (recent SDKs' default)",
    ),
    f(
        "multipart-checksum",
        SUM,
        "multipart upload with a CRC32 checksum of every part",
    ),
    f(
        "presigned-get",
        PRESIGN,
        "presigned GET works; tampered or expired is refused",
    ),
    f(
        "presigned-put",
        PRESIGN,
        "presigned PUT works; tampered is refused",
    ),
    f(
        "delete-objects",
        OBJ,
        "DeleteObjects removes several keys in one request",
    ),
    f("copy-object", OBJ, "CopyObject copies server-side"),
    f(
        "session-token-enforced",
        AUTH,
        "temporary credentials are refused without their session token",
    ),
    f(
        "bogus-session-token",
        AUTH,
        "long-lived keys with a made-up session token are refused",
    ),
    f(
        "error-codes-distinct",
        AUTH,
        "a wrong secret and an unknown key get different error codes",
    ),
    f(
        "clock-skew-refused",
        AUTH,
        "a request dated 20 minutes ago is refused",
    ),
    f(
        "minio-health",
        "health",
        "MinIO health endpoints /minio/health/{live,ready,cluster}",
    ),
    f("sts-assume-role", STS, "AssumeRole"),
    f(
        "sts-assume-role-with-web-identity",
        STS,
        "AssumeRoleWithWebIdentity",
    ),
    f("sts-get-caller-identity", STS, "GetCallerIdentity"),
];

pub(crate) fn feature(id: &str) -> &'static Feature {
    FEATURES
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("compat feature {id} is not in the catalog"))
}

#[cfg(test)]
mod tests {
    use super::FEATURES;

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<_> = FEATURES.iter().map(|f| f.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), FEATURES.len());
    }
}
