//! The one place where failures become HTTP answers: `{"error":{"code","message"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use artifactstore_model::NameError;
use artifactstore_model::api::{ErrorBody, ErrorCode};

/// An error as the API reports it. `code` is a stable machine-readable word; `message`
/// is for people and never carries a secret or a request body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// For 416: the size to report in `Content-Range: bytes */size`.
    pub unsatisfiable_size: Option<u64>,
    /// For 503: the seconds to send in `Retry-After`.
    pub retry_after_secs: Option<u64>,
    /// For 401: why the token was refused, in the vend service's vocabulary.
    pub reason: Option<&'static str>,
}

/// How long a client is asked to wait before trying a store that failed again.
pub const STORAGE_RETRY_AFTER_SECS: u64 = 5;

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            unsatisfiable_size: None,
            retry_after_secs: None,
            reason: None,
        }
    }
    /// 401 `unauthenticated`: no token where the anonymous grants do not reach, or a
    /// token that was refused. The answer carries `WWW-Authenticate`.
    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            reason: Some(reason),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                message,
            )
        }
    }
    /// 403 `forbidden`, naming the permission and the resource it was needed on.
    pub fn forbidden(permission: &str, resource: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("this caller is not granted `{permission}` on {resource}"),
        )
    }
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn internal(message: impl std::fmt::Display) -> Self {
        // Logged in full here; the client gets a generic message.
        tracing::error!(error = %message, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "internal error; see the server log",
        )
    }
}

impl ApiError {
    /// A fault of a store (`what`: the blob store or the metadata database), answered
    /// as what it is: 503 `storage_unavailable` with `Retry-After`, or 507
    /// `insufficient_storage`. The error, with the endpoint, path or upstream text it
    /// names, goes to the log only.
    pub(crate) fn store_fault(
        what: &'static str,
        fault: artifactstore_model::StoreFault,
        e: &dyn std::fmt::Display,
    ) -> Self {
        use artifactstore_model::StoreFault;
        match fault {
            StoreFault::Unavailable => {
                tracing::warn!(error = %e, "{what} unavailable");
                ApiError {
                    retry_after_secs: Some(STORAGE_RETRY_AFTER_SECS),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::StorageUnavailable,
                        format!("the {what} is unavailable; try again later"),
                    )
                }
            }
            StoreFault::Full => {
                tracing::error!(error = %e, "{what} full");
                Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    ErrorCode::InsufficientStorage,
                    format!("the {what} is full"),
                )
            }
        }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        let code = match e {
            NameError::BadPath(_)
            | NameError::Empty { kind: "path" }
            | NameError::TooLong { kind: "path", .. } => ErrorCode::InvalidPath,
            NameError::BadDigest => ErrorCode::InvalidDigest,
            _ => ErrorCode::InvalidName,
        };
        ApiError::bad_request(code, e.to_string())
    }
}

impl From<artifactstore_index::Error> for ApiError {
    fn from(e: artifactstore_index::Error) -> Self {
        use artifactstore_index::Error as E;
        match e {
            E::VersionNotFound => {
                ApiError::not_found(ErrorCode::VersionNotFound, "version not found")
            }
            E::VersionDeleted => {
                ApiError::conflict(ErrorCode::VersionDeleted, "version has been deleted")
            }
            E::VersionComplete => ApiError::conflict(
                ErrorCode::VersionComplete,
                "version is complete; its file set and labels can no longer change",
            ),
            E::FileConflict { existing } => ApiError::conflict(
                ErrorCode::FileConflict,
                format!("a different file is already stored at this path (digest {existing})"),
            ),
            E::QuotaExceeded { what } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorCode::QuotaExceeded,
                format!("{what}; no file was recorded"),
            ),
            E::VersionFull { max } => ApiError::conflict(
                ErrorCode::VersionFull,
                format!("the version holds its maximum of {max} files (max_files_per_version)"),
            ),
            other => match other.fault() {
                Some(fault) => ApiError::store_fault("metadata database", fault, &other),
                None => ApiError::internal(other),
            },
        }
    }
}

impl From<artifactstore_blob::Error> for ApiError {
    fn from(e: artifactstore_blob::Error) -> Self {
        use artifactstore_blob::Error as E;
        match e {
            E::DigestMismatch { expected, actual } => ApiError::bad_request(
                ErrorCode::DigestMismatch,
                format!(
                    "content digest {actual} does not match the declared {expected}; nothing was stored"
                ),
            ),
            E::NotFound { digest } => {
                ApiError::not_found(ErrorCode::BlobNotFound, format!("blob {digest} not found"))
            }
            E::InvalidRange { size, .. } => ApiError {
                unsatisfiable_size: Some(size),
                ..ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    ErrorCode::RangeNotSatisfiable,
                    "range not satisfiable",
                )
            },
            E::Body(e) => ApiError::bad_request(
                ErrorCode::BodyIncomplete,
                format!("upload body failed: {e}; nothing was stored"),
            ),
            other => match other.fault() {
                Some(fault) => ApiError::store_fault("blob store", fault, &other),
                None => ApiError::internal(other),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let refusal = matches!(
            self.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::MISDIRECTED_REQUEST
        )
        .then(|| crate::audit::Refusal {
            reason: self.reason.unwrap_or(self.code.as_str()),
            message: self.message.clone(),
        });
        let mut body = ErrorBody::new(self.code.as_str(), self.message);
        body.error.reason = self.reason.map(str::to_owned);
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="artifactstore", error="invalid_token""#),
            );
        }
        if let Some(size) = self.unsatisfiable_size
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.extensions_mut().insert(ErrorCodeTag(self.code));
        if let Some(refusal) = refusal {
            resp.extensions_mut().insert(refusal);
        }
        resp
    }
}

/// Attached to error responses so that metrics can count errors by code.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCodeTag(pub ErrorCode);

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod store_fault_tests {
    use std::io;

    use super::*;

    fn io_error(source: io::Error) -> artifactstore_blob::Error {
        artifactstore_blob::Error::Io {
            op: "write temp file",
            path: "/srv/artifacts/tmp/1.part".into(),
            source,
        }
    }

    fn answer(e: artifactstore_blob::Error) -> (StatusCode, ErrorCode, Option<String>, String) {
        let api = ApiError::from(e);
        let (status, code, message) = (api.status, api.code, api.message.clone());
        let resp = api.into_response();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        (status, code, retry, message)
    }

    #[test]
    fn a_full_disk_is_507_and_a_failing_one_503_with_retry_after() {
        for errno in [28 /* ENOSPC */, 122 /* EDQUOT */] {
            let (status, code, retry, message) =
                answer(io_error(io::Error::from_raw_os_error(errno)));
            assert_eq!(
                (status, code),
                (
                    StatusCode::INSUFFICIENT_STORAGE,
                    ErrorCode::InsufficientStorage
                )
            );
            assert_eq!(retry, None);
            assert!(!message.contains("/srv"), "{message}");
        }
        for errno in [5 /* EIO */, 30 /* EROFS */] {
            let (status, code, retry, message) =
                answer(io_error(io::Error::from_raw_os_error(errno)));
            assert_eq!(
                (status, code),
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::StorageUnavailable
                )
            );
            assert_eq!(retry.as_deref(), Some("5"));
            assert!(!message.contains("/srv"), "{message}");
        }
        let (status, code, _, _) =
            answer(io_error(io::Error::from_raw_os_error(13 /* EACCES */)));
        assert_eq!(
            (status, code),
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError),
            "a permission error is ours to fix, not the store's"
        );
    }

    #[test]
    fn an_object_store_that_fails_or_is_full_is_answered_as_such() {
        use artifactstore_blob::s3::BackendErrorKind as K;
        let backend = |kind| artifactstore_blob::Error::Backend {
            op: "PutObject",
            target: "s3://b/k at http://10.0.0.7:9000".into(),
            kind,
            detail: "HTTP 503 SlowDown: upstream words".into(),
        };
        for kind in [K::Timeout, K::Unreachable, K::SlowDown, K::ServerError] {
            let (status, code, retry, message) = answer(backend(kind));
            assert_eq!(
                (status, code),
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::StorageUnavailable
                ),
                "{kind:?}"
            );
            assert_eq!(retry.as_deref(), Some("5"));
            assert!(
                !message.contains("10.0.0.7") && !message.contains("upstream"),
                "{message}"
            );
        }
        let (status, code, _, _) = answer(backend(K::InsufficientStorage));
        assert_eq!(
            (status, code),
            (
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorCode::InsufficientStorage
            )
        );
        let (status, _, _, _) = answer(backend(K::AccessDenied));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
