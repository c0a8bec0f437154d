//! Operational routes: health, readiness, metrics, the OpenAPI document, and the JSON
//! answers for unknown routes and methods.

use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use artifactstore_model::Digest;

use crate::AppState;
use crate::error::ApiError;
use artifactstore_model::api::ErrorCode;

pub const OPENAPI: &str = include_str!("openapi.json");

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Longest a readiness check may take: past it the check fails, so that `/readyz` of a
/// server whose store hangs answers 503 quickly instead of hanging with it.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Each check's name and its outcome (why it failed).
type Checks = Vec<(String, Result<(), String>)>;

/// The last round of `/readyz` checks, reused for a second.
pub type ReadyCache = artifactstore_http::recent::Recent<Checks>;

/// Ready when the index answers a query, the blob store answers a lookup and every
/// probe (the S3 backend's credentials) passes; the lookup runs first, so it can fetch
/// a credential that was due. A round of checks answers for a second at most, so the
/// answer turns 200 again by itself once the store answers.
///
/// The answer names each check and says `ok` or `failing`, and the kinds of backend and
/// database, nothing more: it is public
/// (there is no admin token yet), and why a check fails — endpoints, paths, upstream
/// messages — goes to the log.
pub async fn readyz(State(st): State<AppState>) -> Response {
    let results = st.ready.get(|| run_checks(&st)).await;
    let mut checks = serde_json::Map::new();
    for (name, result) in &results {
        let state = if result.is_ok() { "ok" } else { "failing" };
        checks.insert(name.clone(), json!(state));
    }
    let ready = results.iter().all(|(_, r)| r.is_ok());
    let body = json!({
        "status": if ready { "ready" } else { "unready" },
        "checks": checks,
        // Kinds only (`fs`/`s3`, `sqlite`/`postgres`), never where they are.
        "backend": st.blobs.capabilities().backend,
        "database": st.index.backend(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// One round of checks; what fails is logged once per round.
async fn run_checks(st: &AppState) -> Checks {
    let probe = Digest::of(b"artifactstore readiness probe");
    let (index, blobs) = tokio::join!(
        bounded(async { st.index.ping().await.map_err(|e| e.to_string()) }),
        bounded(async {
            st.blobs
                .head(&probe)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    );
    let mut results: Checks = vec![("index".into(), index), ("blobs".into(), blobs)];
    results.extend(st.probes.iter().map(|p| (p.name().to_owned(), p.check())));
    for (name, result) in &results {
        if let Err(reason) = result {
            tracing::warn!(check = %name, reason = %reason, "readiness check failing");
        }
    }
    results
}

/// A check that takes longer than [`READY_CHECK_TIMEOUT`] fails.
async fn bounded(check: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(READY_CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {} s",
                READY_CHECK_TIMEOUT.as_secs()
            ))
        })
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            artifactstore_model::metrics::CONTENT_TYPE,
        )],
        st.metrics.render(),
    )
        .into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn route_not_found() -> ApiError {
    ApiError::not_found(ErrorCode::RouteNotFound, "no such route; see /openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route; see /openapi.json",
    )
}
