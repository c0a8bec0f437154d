//! What a failed S3 call means, whatever store answered it: the one place S3 errors get
//! a meaning ([`BackendErrorKind`]) and a one-line, secret-free detail.

use std::fmt;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::S3BlobStore;
use crate::Error;

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
            BackendErrorKind::Other => "request failed",
        })
    }
}

impl BackendErrorKind {
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
        SdkError::ResponseError(_) => (K::Other, format!("unreadable answer: {}", source_chain(e))),
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            let message = se.err().message().unwrap_or("");
            let kind = match code {
                "NoSuchBucket" => K::BucketNotFound,
                "AccessDenied" | "AllAccessDisabled" | "Forbidden" => K::AccessDenied,
                "InvalidAccessKeyId" => K::InvalidAccessKeyId,
                "SignatureDoesNotMatch" => K::SignatureMismatch,
                "ExpiredToken" | "TokenRefreshRequired" => K::ExpiredToken,
                "InvalidToken" => K::InvalidToken,
                "SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
                    K::SlowDown
                }
                "PreconditionFailed" => K::PreconditionFailed,
                "NotImplemented" => K::NotImplemented,
                _ => match status {
                    403 => K::AccessDenied,
                    412 => K::PreconditionFailed,
                    429 | 503 => K::SlowDown,
                    501 => K::NotImplemented,
                    500..=599 => K::ServerError,
                    _ => K::Other,
                },
            };
            let code = if code.is_empty() {
                "no error code"
            } else {
                code
            };
            (kind, format!("HTTP {status} {code}: {message}"))
        }
        _ => (K::Other, source_chain(e)),
    }
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
    fn the_detail_names_status_code_and_message() {
        let (_, detail) = classify(&service(403, "AccessDenied", "no way"));
        assert_eq!(detail, "HTTP 403 AccessDenied: no way");
        let (_, detail) = classify(&service(404, "", ""));
        assert_eq!(detail, "HTTP 404 no error code: ");
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
