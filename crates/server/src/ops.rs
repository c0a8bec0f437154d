//! Operational routes: health, readiness, metrics, the OpenAPI document, and the JSON
//! answers for unknown routes and methods.

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

/// Ready when the index answers a query, the blob store answers a lookup and every
/// probe (the S3 backend's credentials) passes; the lookup runs first, so it can fetch
/// a credential that was due.
pub async fn readyz(State(st): State<AppState>) -> Response {
    let index = st.index.ping().await.map_err(|e| e.to_string());
    let probe = Digest::of(b"artifactstore readiness probe");
    let blobs = st
        .blobs
        .head(&probe)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let probes: Vec<(&str, Result<(), String>)> =
        st.probes.iter().map(|p| (p.name(), p.check())).collect();
    let ready = index.is_ok() && blobs.is_ok() && probes.iter().all(|(_, r)| r.is_ok());
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.clone(),
    };
    let mut checks = json!({
        "index": show(&index),
        "blobs": show(&blobs),
    });
    for (name, result) in &probes {
        checks[*name] = json!(show(result));
    }
    let body = json!({
        "status": if ready { "ready" } else { "unready" },
        "checks": checks,
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
