//! The admin routes: revocations and lease queries, behind `[admin] token_ref` or
//! `[admin] rules` (see [`crate::service::admin`]). Every call is audited with its
//! actor before it is answered.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use artifactstore_model::api::ErrorBody;

use crate::reason::Reason;
use crate::service::admin::{AdminCaller, is_admin_token};
use crate::service::{RevokeTarget, Service};

use super::bearer;

mod query;

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

/// An admin call allowed, and whether its `admin.call` line was written.
pub(super) struct Allowed {
    pub caller: AdminCaller,
    pub audited: bool,
}

/// Decides who may make this call and writes its audit line (an allowed call: one
/// `admin.call` line with its actor; a refusal: through the coalescing windows).
pub(super) async fn admin_allowed(
    service: &Service,
    headers: &HeaderMap,
    peer: SocketAddr,
    call: &str,
) -> Result<Allowed, Box<Response>> {
    let caller = authorized(service, headers, peer, call).await?;
    let audited = audit_call(service, &caller, peer, call).await;
    Ok(Allowed { caller, audited })
}

/// The `admin.call` line of an allowed call. An operator must be able to look and
/// take access away while the audit log is down (that is when incidents happen): the
/// call goes ahead, and the missing line goes to the error log instead of nowhere.
async fn audit_call(
    service: &Service,
    caller: &AdminCaller,
    peer: SocketAddr,
    detail: &str,
) -> bool {
    match service.audit_admin_call(caller, Some(peer), detail).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(
                error = %e,
                actor = %caller.actor(),
                call = detail,
                "audit log unavailable: an admin call's line was not written"
            );
            false
        }
    }
}

/// Who makes this call, or the refusal's answer (audited by the service).
async fn authorized(
    service: &Service,
    headers: &HeaderMap,
    peer: SocketAddr,
    call: &str,
) -> Result<AdminCaller, Box<Response>> {
    let bearer = bearer(headers);
    match service
        .authorize_admin(bearer.as_ref(), Some(peer), call)
        .await
    {
        Ok(caller) => Ok(caller),
        Err(refused) => {
            let status =
                StatusCode::from_u16(refused.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut body = ErrorBody::new(refused.code, refused.message);
            if let Some(id) = refused.request_id {
                body = body.with_request_id(&id);
            }
            Err(Box::new((status, Json(body)).into_response()))
        }
    }
}

/// `METHOD /path?query` of a call, as its audit line names it.
fn call(method: &str, uri: &Uri) -> String {
    format!(
        "{method} {}",
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    )
}

/// Whether the request carries the admin token (never an error: for answers that
/// only say more to the admin, such as `/readyz`). The token only, on purpose:
/// `/readyz` is polled by probes, and verifying OIDC tokens there would put key
/// fetches and audit lines on a route that must stay cheap and unauthenticated.
pub(super) fn is_admin(service: &Service, headers: &HeaderMap) -> bool {
    service
        .admin_token
        .as_ref()
        .zip(bearer(headers))
        .is_some_and(|(expected, given)| is_admin_token(expected, &given))
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

/// Checks who calls, then reads the body (so that callers who may not learn nothing
/// from parse errors), then writes the call's line naming what it targets — the
/// `lease.revoked` lines that follow do not name the actor.
async fn admin_body(
    service: &Service,
    headers: &HeaderMap,
    peer: SocketAddr,
    call: &str,
    body: &[u8],
) -> Result<(Allowed, RevokeBody), Box<Response>> {
    let caller = authorized(service, headers, peer, call).await?;
    match serde_json::from_slice::<RevokeBody>(body) {
        Ok(body) => {
            let detail = format!("{call} {:?}: {}", body.target, body.reason);
            let audited = audit_call(service, &caller, peer, &detail).await;
            Ok((Allowed { caller, audited }, body))
        }
        Err(e) => {
            audit_call(service, &caller, peer, &format!("{call} (body refused)")).await;
            Err(Box::new(admin_error(
                StatusCode::BAD_REQUEST,
                "request_invalid",
                e,
            )))
        }
    }
}

/// `POST /v1/admin/revocations`: revoke a lease, or a subject or role (their live
/// leases now, and future vending until the revocation is lifted).
pub(super) async fn admin_revoke(
    State(service): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = "POST /v1/admin/revocations";
    let (allowed, body) = match admin_body(&service, &headers, peer, call, &body).await {
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
    let actor = allowed.caller.actor();
    match service
        .revoke_as(&body.target, &body.reason, body.force, Some(&actor))
        .await
    {
        Ok(mut outcome) => {
            outcome.audited &= allowed.audited;
            Json(outcome).into_response()
        }
        Err(e) => revoke_error(e),
    }
}

/// `DELETE /v1/admin/revocations` (same body, reason optional): lift a subject or
/// role revocation.
pub(super) async fn admin_unrevoke(
    State(service): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = "DELETE /v1/admin/revocations";
    let (allowed, body) = match admin_body(&service, &headers, peer, call, &body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    // Giving access back waits for its own `revocation.removed` line (with the actor).
    match service
        .unrevoke_as(&body.target, Some(&allowed.caller.actor()))
        .await
    {
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

/// `GET /v1/admin/leases?issuer=&subject=&role=&state=&driver=&expiring_before=
/// &break_glass=&live=&limit=` (see [`query`]).
pub(super) async fn admin_leases(
    State(service): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(r) = admin_allowed(&service, &headers, peer, &call("GET", &uri)).await {
        return *r;
    }
    let (filter, limit) = match query::parse(uri.query()) {
        Ok(q) => q,
        Err(message) => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                Reason::RequestInvalid.as_str(),
                message,
            );
        }
    };
    match service.leases.leases(&filter, limit).await {
        Ok(leases) => Json(json!({ "leases": leases })).into_response(),
        Err(e) => internal(e),
    }
}

pub(super) async fn admin_lease(
    State(service): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = admin_allowed(&service, &headers, peer, &call("GET", &uri)).await {
        return *r;
    }
    match service.leases.lease(&id).await {
        Ok(Some(lease)) => Json(lease).into_response(),
        Ok(None) => admin_error(StatusCode::NOT_FOUND, "not_found", "no such lease"),
        Err(e) => internal(e),
    }
}
