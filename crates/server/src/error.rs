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
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            unsatisfiable_size: None,
        }
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
            E::VersionFull { max } => ApiError::conflict(
                ErrorCode::VersionFull,
                format!("the version holds its maximum of {max} files (max_files_per_version)"),
            ),
            other => ApiError::internal(other),
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
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody::new(self.code.as_str(), self.message));
        let mut resp = (self.status, body).into_response();
        if let Some(size) = self.unsatisfiable_size
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        resp.extensions_mut().insert(ErrorCodeTag(self.code));
        resp
    }
}

/// Attached to error responses so that metrics can count errors by code.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCodeTag(pub ErrorCode);

pub type ApiResult<T> = Result<T, ApiError>;
