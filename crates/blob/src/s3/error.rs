//! What a failed S3 call means, whatever store answered it: the one place S3 errors get
//! a meaning ([`BackendErrorKind`]) and a one-line, secret-free detail.

use std::fmt;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::S3BlobStore;
use crate::{Error, StoreFault};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendErrorKind {
    BucketNotFound,
    AccessDenied,
    InvalidAccessKeyId,
    SignatureMismatch,
    ExpiredToken,
    InvalidToken,
    SlowDown,
    Unreachable,
    Timeout,
    PreconditionFailed,
    NotImplemented,
    ServerError,
    /// Out of capacity or over a quota: `XMinioStorageFull` (MinIO, 507),
    /// `QuotaExceeded` (Ceph RGW, 403), Garage's quota refusal (403 `AccessDenied`
    /// "… quota is reached"), any 507.
    InsufficientStorage,
    Other,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendErrorKind::BucketNotFound => "the bucket does not exist",
            BackendErrorKind::AccessDenied => "access denied",
            BackendErrorKind::InvalidAccessKeyId => "the store does not know this access key id",
            BackendErrorKind::SignatureMismatch => {
                "signature mismatch: the secret key does not belong to this access key id"
            }
            BackendErrorKind::ExpiredToken => "the credentials have expired",
            BackendErrorKind::InvalidToken => "the session token is invalid",
            BackendErrorKind::SlowDown => "the store asked to slow down",
            BackendErrorKind::Unreachable => "cannot connect to the endpoint",
            BackendErrorKind::Timeout => "the request timed out",
            BackendErrorKind::PreconditionFailed => "precondition failed",
            BackendErrorKind::NotImplemented => "not implemented by this store",
            BackendErrorKind::ServerError => "the store failed (5xx)",
            BackendErrorKind::InsufficientStorage => "the store is full or over its quota",
            BackendErrorKind::Other => "request failed",
        })
    }
}

impl BackendErrorKind {
    /// Which of these are faults of the store itself rather than of our request or
    /// configuration (a refused credential, a missing bucket).
    pub fn fault(self) -> Option<StoreFault> {
        match self {
            BackendErrorKind::SlowDown
            | BackendErrorKind::Unreachable
            | BackendErrorKind::Timeout
            | BackendErrorKind::ServerError => Some(StoreFault::Unavailable),
            BackendErrorKind::InsufficientStorage => Some(StoreFault::Full),
            _ => None,
        }
    }

    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            BackendErrorKind::SlowDown
                | BackendErrorKind::Unreachable
                | BackendErrorKind::Timeout
                | BackendErrorKind::ServerError
        )
    }
}

impl S3BlobStore {
    /// The crate's error for a failed call `op`, naming the bucket, the key and the
    /// endpoint.
    pub(super) fn err<E>(&self, op: &'static str, key: Option<&str>, e: SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (kind, detail) = classify(&e);
        Error::Backend {
            op,
            target: self.target(key),
            kind,
            detail,
        }
    }

    /// `s3://bucket[/key] at endpoint`, as errors name what they were about.
    pub(super) fn target(&self, key: Option<&str>) -> String {
        match key {
            Some(k) => format!("s3://{}/{} at {}", self.bucket, k, self.endpoint),
            None => format!("s3://{} at {}", self.bucket, self.endpoint),
        }
    }
}

/// 412, or 409 (AWS: a conditional write that raced another one for the same key).
pub(super) fn is_precondition_failed<E>(e: &SdkError<E>) -> bool {
    status(e).is_some_and(|s| matches!(s, 409 | 412))
}

/// The HTTP status of the answer, when there was one.
pub(super) fn status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Maps an SDK error to a kind and a one-line, secret-free detail.
pub(super) fn classify<E>(e: &SdkError<E>) -> (BackendErrorKind, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use BackendErrorKind as K;
    match e {
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                K::Timeout
            } else {
                K::Unreachable
            };
            (kind, source_chain(e))
        }
        SdkError::TimeoutError(_) => (K::Timeout, "no answer in time".into()),
        // An answer cut off (the connection dropped while it was read) is the store
        // failing, as is a 5xx whose body could not be parsed.
        SdkError::ResponseError(r) => {
            let kind = if r.raw().status().is_server_error() {
                K::ServerError
            } else if has_io_source(e) {
                K::Unreachable
            } else {
                K::Other
            };
            (kind, format!("unreadable answer: {}", source_chain(e)))
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            let message = se.err().message().unwrap_or("");
            let kind = match code {
                "NoSuchBucket" => K::BucketNotFound,
                "InvalidAccessKeyId" => K::InvalidAccessKeyId,
                "SignatureDoesNotMatch" => K::SignatureMismatch,
                "ExpiredToken" | "TokenRefreshRequired" => K::ExpiredToken,
                "InvalidToken" => K::InvalidToken,
                "SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
                    K::SlowDown
                }
                "PreconditionFailed" => K::PreconditionFailed,
                "NotImplemented" => K::NotImplemented,
                "XMinioStorageFull"
                | "XMinioAdminBucketQuotaExceeded"
                | "QuotaExceeded"
                | "InsufficientStorage"
                | "InsufficientCapacity"
                | "StorageFull" => K::InsufficientStorage,
                // Garage refuses a write beyond a bucket quota as 403 AccessDenied, and
                // says so only in the message.
                "AccessDenied" if message.contains("quota is reached") => K::InsufficientStorage,
                "AccessDenied" | "AllAccessDisabled" | "Forbidden" => K::AccessDenied,
                // A store that passes its disk's error through (Garage, gateways on a
                // POSIX file system) says it in the message of a 5xx.
                _ if status >= 500 && message.contains("No space left on device") => {
                    K::InsufficientStorage
                }
                "ServiceUnavailable" | "InternalError" => K::ServerError,
                _ => match status {
                    403 => K::AccessDenied,
                    412 => K::PreconditionFailed,
                    429 | 503 => K::SlowDown,
                    501 => K::NotImplemented,
                    507 => K::InsufficientStorage,
                    500..=599 => K::ServerError,
                    _ => K::Other,
                },
            };
            let code = if code.is_empty() {
                "no error code"
            } else {
                code
            };
            let detail = match (message.trim(), kind) {
                // Some stores (Ceph RGW) answer a wrong secret, an unknown key, a missing
                // grant and an expired session all with a bare AccessDenied: say what
                // the user can check, since the store does not.
                ("", K::AccessDenied) => format!(
                    "HTTP {status} {code}, with no reason given: check the access key id \
                     and its secret, the key's grants on this bucket, that a session \
                     credential has not expired, and this machine's clock"
                ),
                ("", _) => format!("HTTP {status} {code}"),
                (m, _) => format!("HTTP {status} {code}: {m}"),
            };
            (kind, detail)
        }
        _ => (K::Other, source_chain(e)),
    }
}

/// Whether an I/O error is among the sources of `e`: the transport failed.
fn has_io_source(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = e.source();
    while let Some(s) = cur {
        if s.is::<std::io::Error>() {
            return true;
        }
        cur = s.source();
    }
    false
}

/// An error and its sources, `: `-separated, on one line.
pub(super) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::head_bucket::HeadBucketError;
    use aws_smithy_types::body::SdkBody;

    use super::*;
    use BackendErrorKind as K;

    fn service(status: u16, code: &str, message: &str) -> SdkError<HeadBucketError, HttpResponse> {
        let mut meta = ErrorMetadata::builder();
        if !code.is_empty() {
            meta = meta.code(code);
        }
        let err = HeadBucketError::generic(meta.message(message).build());
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(err, raw)
    }

    #[test]
    fn error_codes_decide_over_statuses() {
        for (status, code, want) in [
            (404, "NoSuchBucket", K::BucketNotFound),
            (403, "AccessDenied", K::AccessDenied),
            (403, "InvalidAccessKeyId", K::InvalidAccessKeyId),
            (403, "SignatureDoesNotMatch", K::SignatureMismatch),
            (400, "ExpiredToken", K::ExpiredToken),
            (400, "TokenRefreshRequired", K::ExpiredToken),
            (400, "InvalidToken", K::InvalidToken),
            (503, "SlowDown", K::SlowDown),
            (400, "ThrottlingException", K::SlowDown),
            (412, "PreconditionFailed", K::PreconditionFailed),
            (501, "NotImplemented", K::NotImplemented),
        ] {
            assert_eq!(classify(&service(status, code, "m")).0, want, "{code}");
        }
    }

    #[test]
    fn without_a_known_code_the_status_decides() {
        for (status, want) in [
            (403, K::AccessDenied),
            (412, K::PreconditionFailed),
            (429, K::SlowDown),
            (503, K::SlowDown),
            (501, K::NotImplemented),
            (500, K::ServerError),
            (502, K::ServerError),
            (404, K::Other),
            (400, K::Other),
        ] {
            assert_eq!(classify(&service(status, "", "")).0, want, "{status}");
            assert_eq!(classify(&service(status, "Odd", "")).0, want, "{status}");
        }
    }

    #[test]
    fn stores_that_are_full_or_over_quota_say_insufficient_storage() {
        for (status, code, message) in [
            // MinIO below its free-space threshold (older releases answered 500).
            (
                507,
                "XMinioStorageFull",
                "Storage backend has reached its minimum free drive threshold.",
            ),
            (500, "XMinioStorageFull", ""),
            (
                400,
                "XMinioAdminBucketQuotaExceeded",
                "Bucket quota exceeded",
            ),
            // Ceph RGW over a user or bucket quota.
            (403, "QuotaExceeded", ""),
            // Garage over a bucket quota.
            (
                403,
                "AccessDenied",
                "Forbidden: Bucket size quota is reached, maximum total size of objects for this bucket: 1024.",
            ),
            (
                403,
                "AccessDenied",
                "Forbidden: Object quota is reached, maximum objects for this bucket: 10",
            ),
            // A store passing its disk's ENOSPC through.
            (
                500,
                "InternalError",
                "Internal error: No space left on device (os error 28)",
            ),
            (507, "InsufficientStorage", ""),
            (507, "InsufficientCapacity", ""),
            (507, "", ""),
        ] {
            let kind = classify(&service(status, code, message)).0;
            assert_eq!(kind, K::InsufficientStorage, "{status} {code} {message}");
            assert_eq!(kind.fault(), Some(StoreFault::Full));
        }
        assert_eq!(
            classify(&service(
                403,
                "AccessDenied",
                "Operation is not allowed for this key"
            ))
            .0,
            K::AccessDenied,
            "a plain refusal is not a full store"
        );
    }

    #[test]
    fn unavailable_stores_are_faults_and_refusals_are_not() {
        for (status, code) in [
            (503, "SlowDown"),
            (503, "ServiceUnavailable"),
            (500, "InternalError"),
            (502, ""),
            (504, ""),
        ] {
            let kind = classify(&service(status, code, "m")).0;
            assert_eq!(
                kind.fault(),
                Some(StoreFault::Unavailable),
                "{status} {code}"
            );
        }
        for k in [K::Unreachable, K::Timeout] {
            assert_eq!(k.fault(), Some(StoreFault::Unavailable), "{k:?}");
        }
        for k in [
            K::BucketNotFound,
            K::AccessDenied,
            K::InvalidAccessKeyId,
            K::SignatureMismatch,
            K::ExpiredToken,
            K::InvalidToken,
            K::PreconditionFailed,
            K::NotImplemented,
            K::Other,
        ] {
            assert_eq!(k.fault(), None, "{k:?}");
        }
    }

    #[test]
    fn an_answer_cut_off_is_the_store_failing() {
        let cut: SdkError<HeadBucketError, HttpResponse> = SdkError::response_error(
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer"),
            HttpResponse::new(200.try_into().unwrap(), SdkBody::empty()),
        );
        assert_eq!(classify(&cut).0, K::Unreachable);
        let garbled_5xx: SdkError<HeadBucketError, HttpResponse> = SdkError::response_error(
            "not xml",
            HttpResponse::new(502.try_into().unwrap(), SdkBody::empty()),
        );
        assert_eq!(classify(&garbled_5xx).0, K::ServerError);
        let garbled: SdkError<HeadBucketError, HttpResponse> = SdkError::response_error(
            "not xml",
            HttpResponse::new(200.try_into().unwrap(), SdkBody::empty()),
        );
        assert_eq!(classify(&garbled).0, K::Other);
    }

    #[test]
    fn the_detail_names_status_code_and_message() {
        let (_, detail) = classify(&service(403, "AccessDenied", "no way"));
        assert_eq!(detail, "HTTP 403 AccessDenied: no way");
        let (_, detail) = classify(&service(404, "", ""));
        assert_eq!(detail, "HTTP 404 no error code");
    }

    #[test]
    fn a_bare_access_denied_says_what_to_check() {
        // Ceph RGW's answer to a wrong secret and to an unknown access key alike.
        let (kind, detail) = classify(&service(403, "AccessDenied", ""));
        assert_eq!(kind, K::AccessDenied);
        assert!(
            detail.starts_with("HTTP 403 AccessDenied, with no reason given"),
            "{detail}"
        );
        for hint in ["access key id", "secret", "grants", "expired", "clock"] {
            assert!(detail.contains(hint), "{hint} missing from {detail}");
        }
    }

    #[test]
    fn transport_failures_are_unreachable_or_timeouts_and_retryable() {
        let refused: SdkError<HeadBucketError, HttpResponse> = SdkError::dispatch_failure(
            ConnectorError::io(Box::new(std::io::Error::other("connection refused"))),
        );
        let (kind, detail) = classify(&refused);
        assert_eq!(kind, K::Unreachable);
        assert!(detail.contains("connection refused"), "{detail}");
        let slow: SdkError<HeadBucketError, HttpResponse> = SdkError::dispatch_failure(
            ConnectorError::timeout(Box::new(std::io::Error::other("slow"))),
        );
        assert_eq!(classify(&slow).0, K::Timeout);
        let late: SdkError<HeadBucketError, HttpResponse> =
            SdkError::timeout_error(Box::new(std::io::Error::other("late")));
        assert_eq!(classify(&late).0, K::Timeout);
        for k in [K::Unreachable, K::Timeout, K::SlowDown, K::ServerError] {
            assert!(k.is_retryable(), "{k:?}");
        }
        for k in [
            K::AccessDenied,
            K::ExpiredToken,
            K::PreconditionFailed,
            K::Other,
        ] {
            assert!(!k.is_retryable(), "{k:?}");
        }
    }

    #[test]
    fn conflicts_and_failed_preconditions_are_precondition_failures() {
        assert!(is_precondition_failed(&service(
            412,
            "PreconditionFailed",
            ""
        )));
        assert!(is_precondition_failed(&service(
            409,
            "ConditionalRequestConflict",
            ""
        )));
        assert!(!is_precondition_failed(&service(403, "AccessDenied", "")));
        let refused: SdkError<HeadBucketError, HttpResponse> = SdkError::dispatch_failure(
            ConnectorError::io(Box::new(std::io::Error::other("refused"))),
        );
        assert!(!is_precondition_failed(&refused));
    }
}
