//! The wire formats: STS `AssumeRoleWithWebIdentity` (XML), JSON, AWS container
//! credentials; plus health, readiness, metrics and the admin routes. Every format
//! goes through [`Service::vend`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use artifactstore_model::secret::Secret;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use artifactstore_credentials::sts_xml;
use artifactstore_model::api::ErrorBody;

use crate::reason::{Denial, Reason};
use crate::service::{Format, Issued, Refused, Service, VendRequest};

/// Requests larger than this are refused before they are read: a token is at most
/// `token.max_bytes` (16 KiB by default) and a session policy 2048 characters.
const MAX_BODY: usize = 64 * 1024;

/// Every route. `listen` is the address served, which `allowed_hosts` defaults to.
pub fn app(service: Arc<Service>, listen: SocketAddr) -> Router {
    let limited = |format| {
        axum::middleware::from_fn_with_state((service.clone(), format), edge::client_limit)
    };
    Router::new()
        .route("/", post(sts).layer(limited(Format::Sts)))
        .route(
            "/v1/credentials",
            post(credentials_json).layer(limited(Format::Json)),
        )
        .route(
            "/v1/container-credentials",
            get(container_credentials).layer(limited(Format::Container)),
        )
        .route(
            "/v1/admin/revocations",
            post(admin_revoke).delete(admin_unrevoke),
        )
        .route("/v1/break-glass", post(break_glass::break_glass))
        .route("/v1/admin/leases", get(admin_leases))
        .route("/v1/admin/leases/{id}", get(admin_lease))
        .route("/healthz", get(healthz))
        .route(
            "/readyz",
            get(ready::readyz).layer(axum::Extension(Arc::new(ready::ReadyCache::new(
                artifactstore_http::recent::READINESS_FRESH_FOR,
            )))),
        )
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            service.edge.body_deadline,
            edge::body_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            edge::guard(&service.edge, listen),
            artifactstore_http::guard::guard,
        ))
        .with_state(service)
}

/// Serves until `shutdown` resolves, within `limits` (connection cap, timeouts).
/// Handlers read the peer from `ConnectInfo<SocketAddr>`, which the listener provides.
pub async fn run(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    limits: artifactstore_http::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listen = listener.local_addr()?;
    artifactstore_http::serve(listener, app(service, listen), limits, shutdown).await;
    Ok(())
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn sts_error(request_id: &str, denial: &Denial) -> Response {
    let code = denial.sts_code.unwrap_or(denial.reason.sts_code());
    let status = match code {
        "AccessDenied" => StatusCode::FORBIDDEN,
        "ServiceUnavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "InternalError" => StatusCode::INTERNAL_SERVER_ERROR,
        "Throttling" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    };
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let body = sts_xml::to_xml(&sts_xml::ErrorResponse {
        xmlns: Some(sts_xml::STS_NS.to_owned()),
        error: sts_xml::StsError {
            kind: kind.to_owned(),
            code: code.to_owned(),
            message: format!("{}: {}", denial.reason.as_str(), denial.message),
        },
        request_id: request_id.to_owned(),
    });
    let mut resp = (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    reason_header(&mut resp, denial);
    resp
}

/// A body that could not be read, in the endpoint's own vocabulary (axum's plain-text
/// 413 is parsed by no SDK). Too large: the token is what makes a body large.
fn body_refused(e: &BytesRejection) -> Denial {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Denial::new(
            Reason::TokenTooLarge,
            format!("the request body is larger than {MAX_BODY} bytes"),
        )
    } else {
        Denial::new(Reason::RequestInvalid, "the request body could not be read")
            .with_sts_code("InvalidParameterValue")
    }
}

/// The reason of a refusal, and when to come back if it says.
fn reason_header(resp: &mut Response, denial: &Denial) {
    resp.headers_mut().insert(
        "x-artifactstore-reason",
        HeaderValue::from_static(denial.reason.as_str()),
    );
    if let Some(secs) = denial.retry_after_secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// A refusal in the wire format of the route it came in on.
fn refusal(format: Format, refused: &Refused) -> Response {
    match format {
        Format::Sts => sts_error(&refused.request_id, &refused.denial),
        Format::Json => json_error(&refused.request_id, &refused.denial),
        Format::Container => container_error(&refused.request_id, &refused.denial),
    }
}

fn sts_success(issued: &Issued) -> Response {
    let session = format!("lease-{}", issued.lease_id);
    let body = sts_xml::to_xml(&sts_xml::AssumeRoleWithWebIdentityResponse {
        xmlns: Some(sts_xml::STS_NS.to_owned()),
        result: sts_xml::AssumeRoleWithWebIdentityResult {
            assumed_role_user: Some(sts_xml::AssumedRoleUser {
                arn: format!(
                    "arn:aws:sts::000000000000:assumed-role/{}/{session}",
                    issued.role
                ),
                assume_role_id: format!("{}:{session}", issued.lease_id),
            }),
            credentials: sts_xml::Credentials {
                access_key_id: issued.access_key_id.clone(),
                secret_access_key: issued.secret_access_key.expose().to_owned(),
                session_token: issued.session_token.expose().to_owned(),
                expiration: issued.expires_at.rfc3339(),
            },
            subject: Some(issued.subject.clone()),
            audience: Some(issued.audience.clone()),
            provider: Some(issued.issuer.clone()),
        },
        metadata: sts_xml::ResponseMetadata {
            request_id: issued.request_id.clone(),
        },
    });
    no_store((StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], body).into_response())
}

/// `POST /`: the STS query protocol. Parameters come in the form body (what SDKs
/// send) or the query string; the token only in the body.
async fn sts(
    State(service): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let outcome = match sts_request(query, body, peer) {
        Ok(request) => service.vend(request).await,
        Err(denial) => Err(service.refuse_early(Some(peer), Format::Sts, denial).await),
    };
    match outcome {
        Ok(issued) => sts_success(&issued),
        Err(refused) => refusal(Format::Sts, &refused),
    }
}

/// The request an STS call makes, or why it is malformed.
fn sts_request(
    query: HashMap<String, String>,
    body: Result<Bytes, BytesRejection>,
    peer: SocketAddr,
) -> Result<VendRequest, Denial> {
    let invalid = |message: &str, code: &'static str| {
        Denial::new(Reason::RequestInvalid, message).with_sts_code(code)
    };
    let body = body.map_err(|e| body_refused(&e))?;
    // A token in the URL ends up in access logs and proxies' histories: refuse it
    // before anything else looks at it.
    if query.contains_key("WebIdentityToken") {
        return Err(invalid(
            "WebIdentityToken must be sent in the POST body, never in the URL",
            "InvalidParameterValue",
        ));
    }
    let mut params: HashMap<String, String> = query;
    let pairs = serde_urlencoded_pairs(&body)
        .ok_or_else(|| invalid("the body is not a form", "InvalidParameterValue"))?;
    params.extend(pairs);
    match params.get("Action").map(String::as_str) {
        Some("AssumeRoleWithWebIdentity") => {}
        Some(other) => {
            return Err(Denial::new(
                Reason::RequestInvalid,
                format!(
                    "action {:?} is not supported here",
                    other.chars().take(64).collect::<String>()
                ),
            )
            .with_sts_code("InvalidAction"));
        }
        None => return Err(invalid("Action is missing", "MissingParameter")),
    }
    if let Some(v) = params.get("Version")
        && v != "2011-06-15"
    {
        return Err(invalid(
            "Version must be 2011-06-15",
            "InvalidParameterValue",
        ));
    }
    if params.keys().any(|k| k.starts_with("PolicyArns")) {
        return Err(Denial::new(
            Reason::PolicyInvalid,
            "PolicyArns is not supported; send an inline Policy to narrow the role",
        ));
    }
    let token = params
        .remove("WebIdentityToken")
        .ok_or_else(|| invalid("WebIdentityToken is missing", "MissingParameter"))?;
    let duration_secs = match params.get("DurationSeconds").map(|d| d.parse::<u64>()) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => {
            return Err(invalid(
                "DurationSeconds is not a number",
                "InvalidParameterValue",
            ));
        }
    };
    if let Some(name) = params.get("RoleSessionName")
        && (name.len() < 2
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)))
    {
        return Err(invalid(
            "RoleSessionName must be 2 to 64 of letters, digits and _+=,.@-",
            "ValidationError",
        ));
    }
    Ok(VendRequest {
        token: Secret::new(token),
        role: params.get("RoleArn").cloned().filter(|r| !r.is_empty()),
        duration_secs,
        policy: params.get("Policy").cloned().filter(|p| !p.is_empty()),
        client: Some(peer),
        format: Format::Sts,
    })
}

fn serde_urlencoded_pairs(body: &[u8]) -> Option<Vec<(String, String)>> {
    if body.is_empty() {
        return Some(Vec::new());
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).ok()
}

fn json_error(request_id: &str, denial: &Denial) -> Response {
    let status =
        StatusCode::from_u16(denial.reason.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        status,
        Json(
            ErrorBody::new(denial.reason.as_str(), denial.message.clone())
                .with_request_id(request_id),
        ),
    )
        .into_response();
    reason_header(&mut resp, denial);
    resp
}

/// The container-credentials refusal: the flat `{code, message}` that AWS SDKs'
/// container providers read.
fn container_error(request_id: &str, d: &Denial) -> Response {
    let status =
        StatusCode::from_u16(d.reason.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        status,
        Json(json!({"code": d.reason.as_str(), "message": d.message, "request_id": request_id})),
    )
        .into_response();
    reason_header(&mut resp, d);
    resp
}

/// The token of `Authorization: Bearer <jwt>`, or (for AWS SDK container
/// providers, which send the header value as configured) the bare value.
fn bearer(headers: &HeaderMap) -> Option<Secret> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value)
        .trim();
    (!token.is_empty()).then(|| Secret::new(token))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    role: Option<String>,
    duration_seconds: Option<u64>,
    policy: Option<String>,
}

/// `POST /v1/credentials` with `Authorization: Bearer <jwt>`.
async fn credentials_json(
    State(service): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let outcome = match json_request(&headers, body, peer) {
        Ok(request) => service.vend(request).await,
        Err(denial) => Err(service.refuse_early(Some(peer), Format::Json, denial).await),
    };
    match outcome {
        Ok(i) => no_store(Json(issued_json(&i)).into_response()),
        Err(refused) => refusal(Format::Json, &refused),
    }
}

/// The JSON answer of issued credentials (`/v1/credentials`, `/v1/break-glass`).
fn issued_json(i: &Issued) -> serde_json::Value {
    json!({
        "lease_id": i.lease_id,
        "role": i.role,
        "driver": i.driver,
        "access_key_id": i.access_key_id,
        "secret_access_key": i.secret_access_key.expose(),
        "session_token": i.session_token.expose(),
        "expiration": i.expires_at,
        "refresh_after": i.refresh_after,
        "bucket": i.scope.bucket,
        "prefixes": i.scope.prefixes,
        "actions": i.scope.actions,
        "request_id": i.request_id,
    })
}

fn json_request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    peer: SocketAddr,
) -> Result<VendRequest, Denial> {
    let body = body.map_err(|e| body_refused(&e))?;
    let token = bearer(headers).ok_or_else(|| {
        Denial::new(
            Reason::RequestInvalid,
            "Authorization: Bearer <token> is missing",
        )
    })?;
    let parsed: CredentialsBody = if body.iter().all(u8::is_ascii_whitespace) {
        CredentialsBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Denial::new(Reason::RequestInvalid, format!("body: {e}")))?
    };
    Ok(VendRequest {
        token,
        role: parsed.role,
        duration_secs: parsed.duration_seconds,
        policy: parsed.policy,
        client: Some(peer),
        format: Format::Json,
    })
}

#[derive(Debug, Default, Deserialize)]
struct ContainerQuery {
    role: Option<String>,
    duration_seconds: Option<u64>,
}

/// `GET /v1/container-credentials`: the AWS container-credentials JSON, for
/// `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
async fn container_credentials(
    State(service): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<ContainerQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    // A malformed query is refused in the endpoint's own format and audited, like
    // every other refusal (axum's own rejection is plain text).
    let query = match query {
        Ok(Query(q)) => q,
        Err(_) => {
            let denial = Denial::new(
                Reason::RequestInvalid,
                "the query string is not role=NAME&duration_seconds=N",
            );
            let refused = service
                .refuse_early(Some(peer), Format::Container, denial)
                .await;
            return refusal(Format::Container, &refused);
        }
    };
    let outcome = match bearer(&headers) {
        Some(token) => {
            service
                .vend(VendRequest {
                    token,
                    role: query.role,
                    duration_secs: query.duration_seconds,
                    policy: None,
                    client: Some(peer),
                    format: Format::Container,
                })
                .await
        }
        None => {
            let denial = Denial::new(
                Reason::RequestInvalid,
                "the Authorization header is missing",
            );
            Err(service
                .refuse_early(Some(peer), Format::Container, denial)
                .await)
        }
    };
    match outcome {
        Ok(i) => no_store(
            Json(json!({
                "AccessKeyId": i.access_key_id,
                "SecretAccessKey": i.secret_access_key.expose(),
                "Token": i.session_token.expose(),
                "Expiration": i.expires_at,
                "RoleArn": format!("arn:aws:iam::000000000000:role/{}", i.role),
            }))
            .into_response(),
        ),
        Err(refused) => refusal(Format::Container, &refused),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    let text = crate::metrics::render(&service).await;
    (
        [(
            header::CONTENT_TYPE,
            artifactstore_model::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

mod admin;
mod break_glass;
mod edge;
mod ready;
use admin::{admin_lease, admin_leases, admin_revoke, admin_unrevoke};
