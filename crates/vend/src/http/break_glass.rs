//! `POST /v1/break-glass`: the break-glass credential as `Authorization: Bearer`, a
//! JSON body `{"role", "reason", "ticket", "duration_secs"}`; the answer is the JSON of
//! `/v1/credentials` with `"break_glass": true`. See [`crate::service::break_glass`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use artifactstore_model::api::ErrorBody;

use crate::service::Service;
use crate::service::break_glass::{BreakGlassRefused, BreakGlassRequest};

use super::{bearer, issued_json, no_store};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    role: Option<String>,
    reason: Option<String>,
    ticket: Option<String>,
    /// `duration_seconds`, as `/v1/credentials` spells it, is accepted too.
    #[serde(alias = "duration_seconds")]
    duration_secs: Option<u64>,
}

pub(super) async fn break_glass(
    State(service): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut request = BreakGlassRequest {
        credential: bearer(&headers),
        client: Some(peer),
        ..Default::default()
    };
    // A malformed body is refused by the service, after the rate limit, like any
    // other attempt.
    match body
        .map_err(|e| e.body_text())
        .and_then(|b| serde_json::from_slice::<Body>(&b).map_err(|e| format!("body: {e}")))
    {
        Ok(b) => {
            request.role = b.role;
            request.reason = b.reason;
            request.ticket = b.ticket;
            request.duration_secs = b.duration_secs;
        }
        Err(why) => request.malformed = Some(why),
    }
    match service.break_glass(request).await {
        Ok(issued) => {
            let mut answer = issued_json(&issued);
            answer["break_glass"] = serde_json::Value::Bool(true);
            no_store(Json(answer).into_response())
        }
        Err(refused) => refusal(&refused),
    }
}

fn refusal(r: &BreakGlassRefused) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        status,
        Json(ErrorBody::new(r.code, r.message.clone()).with_request_id(&r.request_id)),
    )
        .into_response();
    if let Ok(code) = HeaderValue::from_str(r.code) {
        resp.headers_mut().insert("x-artifactstore-reason", code);
    }
    if let Some(secs) = r.retry_after_secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
