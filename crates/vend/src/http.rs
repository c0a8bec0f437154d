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

pub fn app(service: Arc<Service>) -> Router {
    Router::new()
        .route("/", post(sts))
        .route("/v1/credentials", post(credentials_json))
        .route("/v1/container-credentials", get(container_credentials))
        .route(
            "/v1/admin/revocations",
            post(admin_revoke).delete(admin_unrevoke),
        )
        .route("/v1/admin/leases", get(admin_leases))
        .route("/v1/admin/leases/{id}", get(admin_lease))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(service)
}

/// Serves until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(service).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
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
    reason_header(&mut resp, denial.reason);
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

fn reason_header(resp: &mut Response, reason: Reason) {
    resp.headers_mut().insert(
        "x-artifactstore-reason",
        HeaderValue::from_static(reason.as_str()),
    );
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
    let body = match body {
        Ok(b) => b,
        Err(e) => return sts_error("", &body_refused(&e)),
    };
    // A token in the URL ends up in access logs and proxies' histories: refuse it
    // before anything else looks at it.
    if query.contains_key("WebIdentityToken") {
        return sts_error(
            "",
            &Denial::new(
                Reason::RequestInvalid,
                "WebIdentityToken must be sent in the POST body, never in the URL",
            )
            .with_sts_code("InvalidParameterValue"),
        );
    }
    let mut params: HashMap<String, String> = query;
    match serde_urlencoded_pairs(&body) {
        Some(pairs) => params.extend(pairs),
        None => {
            return sts_error(
                "",
                &Denial::new(Reason::RequestInvalid, "the body is not a form")
                    .with_sts_code("InvalidParameterValue"),
            );
        }
    }
    match params.get("Action").map(String::as_str) {
        Some("AssumeRoleWithWebIdentity") => {}
        Some(other) => {
            return sts_error(
                "",
                &Denial::new(
                    Reason::RequestInvalid,
                    format!(
                        "action {:?} is not supported here",
                        other.chars().take(64).collect::<String>()
                    ),
                )
                .with_sts_code("InvalidAction"),
            );
        }
        None => {
            return sts_error(
                "",
                &Denial::new(Reason::RequestInvalid, "Action is missing")
                    .with_sts_code("MissingParameter"),
            );
        }
    }
    if let Some(v) = params.get("Version")
        && v != "2011-06-15"
    {
        return sts_error(
            "",
            &Denial::new(Reason::RequestInvalid, "Version must be 2011-06-15")
                .with_sts_code("InvalidParameterValue"),
        );
    }
    if params.keys().any(|k| k.starts_with("PolicyArns")) {
        return sts_error(
            "",
            &Denial::new(
                Reason::PolicyInvalid,
                "PolicyArns is not supported; send an inline Policy to narrow the role",
            ),
        );
    }
    let Some(token) = params.remove("WebIdentityToken") else {
        return sts_error(
            "",
            &Denial::new(Reason::RequestInvalid, "WebIdentityToken is missing")
                .with_sts_code("MissingParameter"),
        );
    };
    let duration_secs = match params.get("DurationSeconds").map(|d| d.parse::<u64>()) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => {
            return sts_error(
                "",
                &Denial::new(Reason::RequestInvalid, "DurationSeconds is not a number")
                    .with_sts_code("InvalidParameterValue"),
            );
        }
    };
    if let Some(name) = params.get("RoleSessionName")
        && (name.len() < 2
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)))
    {
        return sts_error(
            "",
            &Denial::new(
                Reason::RequestInvalid,
                "RoleSessionName must be 2 to 64 of letters, digits and _+=,.@-",
            )
            .with_sts_code("ValidationError"),
        );
    }
    let request = VendRequest {
        token: Secret::new(token),
        role: params.get("RoleArn").cloned().filter(|r| !r.is_empty()),
        duration_secs,
        policy: params.get("Policy").cloned().filter(|p| !p.is_empty()),
        client: Some(peer.to_string()),
        format: Format::Sts,
    };
    match service.vend(request).await {
        Ok(issued) => sts_success(&issued),
        Err(Refused { request_id, denial }) => sts_error(&request_id, &denial),
    }
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
    reason_header(&mut resp, denial.reason);
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
    let body = match body {
        Ok(b) => b,
        Err(e) => return json_error("", &body_refused(&e)),
    };
    let Some(token) = bearer(&headers) else {
        return json_error(
            "",
            &Denial::new(
                Reason::RequestInvalid,
                "Authorization: Bearer <token> is missing",
            ),
        );
    };
    let parsed: CredentialsBody = if body.iter().all(u8::is_ascii_whitespace) {
        CredentialsBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return json_error(
                    "",
                    &Denial::new(Reason::RequestInvalid, format!("body: {e}")),
                );
            }
        }
    };
    let request = VendRequest {
        token,
        role: parsed.role,
        duration_secs: parsed.duration_seconds,
        policy: parsed.policy,
        client: Some(peer.to_string()),
        format: Format::Json,
    };
    match service.vend(request).await {
        Ok(i) => no_store(
            Json(json!({
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
            }))
            .into_response(),
        ),
        Err(Refused { request_id, denial }) => json_error(&request_id, &denial),
    }
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
    Query(query): Query<ContainerQuery>,
    headers: HeaderMap,
) -> Response {
    let error = |request_id: &str, d: &Denial| {
        let status =
            StatusCode::from_u16(d.reason.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            Json(
                json!({"code": d.reason.as_str(), "message": d.message, "request_id": request_id}),
            ),
        )
            .into_response();
        reason_header(&mut resp, d.reason);
        resp
    };
    let Some(token) = bearer(&headers) else {
        return error(
            "",
            &Denial::new(
                Reason::RequestInvalid,
                "the Authorization header is missing",
            ),
        );
    };
    let request = VendRequest {
        token,
        role: query.role,
        duration_secs: query.duration_seconds,
        policy: None,
        client: Some(peer.to_string()),
        format: Format::Container,
    };
    match service.vend(request).await {
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
        Err(Refused { request_id, denial }) => error(&request_id, &denial),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when every issuer's keys are loaded, every driver answers and the audit log
/// can be written. The body names what is not.
async fn readyz(State(service): State<Arc<Service>>) -> Response {
    let mut problems = Vec::new();
    for issuer in &service.verifier.issuers {
        if !issuer.loaded() {
            problems.push(format!(
                "issuer {}: keys not loaded{}",
                issuer.issuer,
                issuer
                    .last_error()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
    }
    for (name, driver) in &service.drivers {
        if let Err(e) = driver.check().await {
            problems.push(format!("driver {name}: {e}"));
        }
    }
    if !service.audit.writable() {
        problems.push(format!(
            "audit log {}: not writable",
            service.audit.path().display()
        ));
    }
    if let Err(e) = service.leases.ping().await {
        problems.push(format!("lease store: {e}"));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        )
            .into_response()
    }
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
use admin::{admin_lease, admin_leases, admin_revoke, admin_unrevoke};
