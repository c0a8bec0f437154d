//! The artifact server's side of the shared request guard
//! ([`artifactstore_http::guard`]): its CORS vocabulary and its error envelope.
//! JSON bodies are taken only as `application/json` (415, in artifacts/), so a
//! cross-site form cannot send one without a preflight.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

pub use artifactstore_http::guard::Origins;
use artifactstore_http::guard::{Cors, Guard, Refusal};

use crate::error::ApiError;

/// What a listed origin may send and read across origins.
const CORS: Cors = Cors {
    allow_methods: "GET, HEAD, PUT, POST, PATCH, DELETE",
    allow_headers: "authorization, content-type, x-artifact-digest, range",
    expose_headers: "x-artifact-digest, x-artifact-version, content-range, content-disposition, retry-after, www-authenticate",
};

/// The guard of the artifact server for these origins.
pub fn of(origins: &Origins) -> Guard {
    Guard::new(origins.clone(), CORS, refuse)
}

fn refuse(refusal: Refusal, _req: &Request) -> Response {
    ApiError::new(refusal.status(), refusal.code(), refusal.message()).into_response()
}

#[cfg(test)]
#[test]
fn the_cors_vocabulary_names_the_headers_the_api_uses() {
    use crate::{DIGEST_HEADER, VERSION_HEADER};
    assert!(CORS.allow_headers.contains(DIGEST_HEADER));
    assert!(CORS.expose_headers.contains(VERSION_HEADER));
    // A dashboard on a listed origin sends its bearer token and reads the challenge.
    assert!(CORS.allow_headers.contains("authorization"));
    assert!(CORS.expose_headers.contains("www-authenticate"));
}
