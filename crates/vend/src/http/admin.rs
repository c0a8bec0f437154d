//! The admin routes: revocations and lease queries, behind `[admin] token_ref`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use artifactstore_model::api::ErrorBody;
use artifactstore_model::secret::Secret;

use crate::reason::Reason;
use crate::service::{RevokeTarget, Service};

use super::bearer;

/// The answer of an admin route that failed: `{"error": {"code", "message"}}`.
pub(super) fn admin_error(
    status: StatusCode,
    code: &str,
    message: impl std::fmt::Display,
) -> Response {
    (status, Json(ErrorBody::new(code, message.to_string()))).into_response()
}

pub(super) fn internal(e: impl std::fmt::Display) -> Response {
    admin_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        Reason::Internal.as_str(),
        e,
    )
}

pub(super) fn admin_allowed(service: &Service, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(expected) = &service.admin_token else {
        return Err(Box::new(admin_error(
            StatusCode::NOT_FOUND,
            "admin_disabled",
            "the admin API is off: set [admin] token_ref",
        )));
    };
    if token_matches(expected, headers) {
        Ok(())
    } else {
        Err(Box::new(admin_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin token missing or wrong",
        )))
    }
}

/// Whether the request's bearer token is the admin token (compared in constant time).
fn token_matches(expected: &Secret, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|given| {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            given.expose().as_bytes(),
            expected.expose().as_bytes(),
        )
        .is_ok()
    })
}

/// Whether the request carries the admin token (never an error: for answers that
/// only say more to the admin, such as `/readyz`).
pub(super) fn is_admin(service: &Service, headers: &HeaderMap) -> bool {
    service
        .admin_token
        .as_ref()
        .is_some_and(|expected| token_matches(expected, headers))
}

/// The body of both revocation routes; `reason` is required to revoke only.
#[derive(Deserialize)]
struct RevokeBody {
    #[serde(flatten)]
    target: RevokeTarget,
    #[serde(default)]
    reason: String,
    /// Record a revocation of a role or issuer that is not configured (it blocks
    /// nothing today, but would if one of that name were added).
    #[serde(default)]
    force: bool,
}

/// Checks the admin token, then reads the body (so that callers without the token
/// learn nothing from parse errors).
fn admin_body(
    service: &Service,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<RevokeBody, Box<Response>> {
    admin_allowed(service, headers)?;
    serde_json::from_slice(body)
        .map_err(|e| Box::new(admin_error(StatusCode::BAD_REQUEST, "request_invalid", e)))
}

/// `POST /v1/admin/revocations`: revoke a lease, or a subject or role (their live
/// leases now, and future vending until the revocation is lifted).
pub(super) async fn admin_revoke(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match admin_body(&service, &headers, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if body.reason.trim().is_empty() {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "request_invalid",
            "a reason is required",
        );
    }
    match service.revoke(&body.target, &body.reason, body.force).await {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => revoke_error(e),
    }
}

/// `DELETE /v1/admin/revocations` (same body, reason optional): lift a subject or
/// role revocation.
pub(super) async fn admin_unrevoke(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match admin_body(&service, &headers, &body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match service.unrevoke(&body.target).await {
        Ok(removed) => Json(json!({ "removed": removed })).into_response(),
        Err(e) => revoke_error(e),
    }
}

fn revoke_error(e: crate::service::RevokeError) -> Response {
    use crate::service::RevokeError;
    match e {
        RevokeError::UnknownTarget(_) => {
            admin_error(StatusCode::BAD_REQUEST, Reason::RequestInvalid.as_str(), e)
        }
        RevokeError::AuditUnavailable(_) => admin_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::AuditUnavailable.as_str(),
            e,
        ),
        RevokeError::Store(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub(super) struct LeaseQuery {
    issuer: Option<String>,
    subject: Option<String>,
    role: Option<String>,
    #[serde(default)]
    live: bool,
    limit: Option<u32>,
}

pub(super) async fn admin_leases(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    Query(q): Query<LeaseQuery>,
) -> Response {
    if let Err(r) = admin_allowed(&service, &headers) {
        return *r;
    }
    let filter = crate::leases::LeaseFilter {
        issuer: q.issuer,
        subject: q.subject,
        role: q.role,
        live_only: q.live,
    };
    match service
        .leases
        .leases(&filter, q.limit.unwrap_or(1000).min(10_000))
        .await
    {
        Ok(leases) => Json(json!({ "leases": leases })).into_response(),
        Err(e) => internal(e),
    }
}

pub(super) async fn admin_lease(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = admin_allowed(&service, &headers) {
        return *r;
    }
    match service.leases.lease(&id).await {
        Ok(Some(lease)) => Json(lease).into_response(),
        Ok(None) => admin_error(StatusCode::NOT_FOUND, "not_found", "no such lease"),
        Err(e) => internal(e),
    }
}
