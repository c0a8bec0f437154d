//! What vend answers before a route does: the shared Host/Origin guard
//! ([`artifactstore_http::guard`]) in vend's wire formats, and the rate limit per
//! client address, checked before the body is read or the token looked at.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use artifactstore_credentials::sts_xml;
use artifactstore_http::guard::{Cors, Guard, Origins, Refusal};
use artifactstore_model::api::ErrorBody;

use crate::service::limits::client_key;
use crate::service::{EdgeConfig, Format, Service};

/// What a listed origin's browser may send to vend, and read of its answers.
const CORS: Cors = Cors {
    allow_methods: "GET, POST, DELETE",
    allow_headers: "authorization, content-type",
    expose_headers: "x-artifactstore-reason, retry-after",
};

/// The guard for `listen` and the configured hosts and origins.
pub(super) fn guard(edge: &EdgeConfig, listen: SocketAddr) -> Guard {
    Guard::new(
        Origins::configured(
            listen,
            edge.allowed_hosts.as_deref(),
            &edge.cors_allowed_origins,
        ),
        CORS,
        refuse,
    )
}

/// A guard's refusal: STS XML to an STS call, the JSON envelope to anything else.
fn refuse(refusal: Refusal, req: &Request) -> Response {
    let code = refusal.code();
    if req.method() == Method::POST && req.uri().path() == "/" {
        let body = sts_xml::to_xml(&sts_xml::ErrorResponse {
            xmlns: Some(sts_xml::STS_NS.to_owned()),
            error: sts_xml::StsError {
                kind: "Sender".to_owned(),
                code: "AccessDenied".to_owned(),
                message: format!("{}: {}", code.as_str(), refusal.message()),
            },
            request_id: String::new(),
        });
        return (refusal.status(), [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    }
    (
        refusal.status(),
        Json(ErrorBody::new(code.as_str(), refusal.message())),
    )
        .into_response()
}

/// The rate limit per client address of a vending route (`format` says which).
/// A request without a peer address (a listener that does not provide
/// `ConnectInfo`) shares one bucket with every other such request rather than going
/// unlimited.
pub(super) async fn client_limit(
    State((service, format)): State<(Arc<Service>, Format)>,
    req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
    match service
        .limiter
        .clients
        .take(&client_key(ip), service.clock.now())
    {
        Ok(()) => next.run(req).await,
        Err(limited) => {
            let denial = limited.denial("this client address", "rate_limits.per_client_per_sec");
            let refused = service.refuse_early(peer, format, denial).await;
            super::refusal(format, &refused)
        }
    }
}

/// The configured deadline for a whole request body, where there is one.
pub(super) async fn body_deadline(
    State(limit): State<Option<std::time::Duration>>,
    req: Request,
    next: Next,
) -> Response {
    match limit {
        Some(limit) => artifactstore_http::body::body_deadline(State(limit), req, next).await,
        None => next.run(req).await,
    }
}
