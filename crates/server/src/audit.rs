//! The audit of the artifact API: who (issuer and subject, or a static token's name),
//! what (route, namespace, name, version, path, digest), the decision and its reason,
//! for every request that changes something (upload, complete, label change, delete)
//! and every refusal — in the keyed, hash-chained JSON lines vend writes
//! ([`artifactstore_audit`]), never a token.
//!
//! The log fails closed for changes: a change whose line cannot be written is answered
//! 503 `audit_unavailable`, and while the log cannot be written no change is even
//! begun. A change is written once it is done (its digest is known only then), so a
//! change the log refused may have been applied; every change the API makes is safe
//! to repeat. Refusals change nothing: their lines are coalesced per client and
//! identity ([`Coalescer`]), so a flood costs two lines a window, and a refusal is
//! answered even when its line cannot be written.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use artifactstore_audit::{
    AuditError, AuditLog, ChainKey, Coalescer, DETAIL_MAX, FIELD_MAX, Noted, Record, Summary,
    WindowKey, truncated,
};
use artifactstore_model::Clock;
use artifactstore_model::api::ErrorCode;
use artifactstore_model::secret::SecretRef;
use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::AppState;
use crate::auth::{Granted, TOKEN_PREFIX, Who};
use crate::error::{ApiError, ErrorCodeTag};

/// One line of the artifact server's audit log.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ApiRecord {
    /// `artifact.upload`, `version.complete`, `version.labels`, `version.delete`,
    /// `request.denied`, `refusals.coalesced`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// Why a request was refused: the 401's `reason` (`token_expired`, ...), or the
    /// error code (`forbidden`, `origin_not_allowed`, `host_not_allowed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `open` (no `[auth]`), `anonymous`, `token` or `oidc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A static token's configured name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
    /// False when issuer and subject are what a refused token claimed, unverified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
    /// The route's pattern (`/v1/artifacts/{namespace}/{name}/{version}/{*path}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The status answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The error code answered, when the answer is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// How many refusals a line stands for (a window's first refusal, or its summary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_reason: Option<BTreeMap<&'static str, u64>>,
}

impl Record for ApiRecord {
    fn bounded(&self) -> Self {
        let mut b = self.clone();
        for v in [
            &mut b.request_id,
            &mut b.issuer,
            &mut b.subject,
            &mut b.token_name,
            &mut b.route,
            &mut b.namespace,
            &mut b.name,
            &mut b.version,
            &mut b.digest,
            &mut b.client,
        ]
        .into_iter()
        .flatten()
        {
            *v = truncated(v, FIELD_MAX);
        }
        for v in [&mut b.path, &mut b.detail].into_iter().flatten() {
            *v = truncated(v, DETAIL_MAX);
        }
        b
    }
}

/// What a handler that changed something tells the audit (a response extension).
#[derive(Clone, Debug)]
pub struct Changed {
    pub digest: String,
    pub size: u64,
}

/// Attached by [`ApiError`] to refusals (401, 403, 421): why, for the audit line.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// The artifact server's audit: its log and the windows that coalesce refusals.
pub struct ApiAudit {
    log: AuditLog,
    refusals: Coalescer,
    clock: Arc<dyn Clock>,
}

impl ApiAudit {
    /// Opens (creating, 0600) the log at `path`, sealed under the key `chain_key_ref`
    /// names, or else the key generated beside the log. Refusals are coalesced over
    /// `window`, for at most `max_tracked` clients at once.
    pub fn open(
        path: &Path,
        chain_key_ref: Option<&SecretRef>,
        window: Duration,
        max_tracked: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<ApiAudit, AuditError> {
        let mut warnings = Vec::new();
        let key = match chain_key_ref {
            Some(r) => ChainKey::from_ref(r, &mut warnings)?,
            None => ChainKey::load_or_generate(
                &artifactstore_audit::default_key_path(path),
                &mut warnings,
            )?,
        };
        for w in warnings {
            tracing::warn!("audit: {w}");
        }
        Ok(ApiAudit {
            log: AuditLog::open_keyed(path, key, clock.clone())?,
            refusals: Coalescer::new(window, max_tracked),
            clock,
        })
    }

    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// Whether a change may begin: the last line was written, or the log can be
    /// opened again now.
    fn ready(&self) -> bool {
        self.log.healthy() || self.log.writable()
    }

    /// Writes the summaries of the refusal windows that have passed (every second,
    /// from the server's task), or of every window (`all`, at shutdown).
    pub async fn write_summaries(&self, all: bool) {
        let due = if all {
            self.refusals.drain()
        } else {
            self.refusals.due(self.clock.now())
        };
        for s in due {
            self.write_summary(s).await;
        }
    }

    async fn write_summary(&self, s: Summary) {
        let (issuer, subject) = s.key.subject.clone().unzip();
        // A static token's window is keyed by its name (see `identify`).
        let (issuer, subject, token_name) = match issuer.as_deref() {
            Some(TOKEN_WINDOW) => (None, None, subject),
            _ => (issuer, subject, None),
        };
        let identity_verified = (issuer.is_some() || token_name.is_some()).then_some(true);
        let record = ApiRecord {
            event: "refusals.coalesced",
            request_id: Some(s.request_id.clone()),
            decision: "deny",
            detail: Some(s.detail(self.refusals.window())),
            issuer,
            subject,
            token_name,
            identity_verified,
            client: Some(s.key.client.clone()),
            count: Some(s.count),
            by_reason: Some(s.by_reason.clone()),
            ..Default::default()
        };
        if self.log.append(&record).await.is_err() {
            tracing::error!(client = %s.key.client, count = s.count, "a summary of refusals could not be audited");
        }
    }

    /// Audits a refusal through its client's window.
    async fn refused(&self, mut record: ApiRecord, verified: Option<(String, String)>) {
        let key = WindowKey {
            client: record.client.clone().unwrap_or_default(),
            subject: verified,
        };
        let reason = record.reason.unwrap_or("denied");
        match self
            .refusals
            .note(key, reason, self.clock.now(), new_request_id)
        {
            Noted::Counted { .. } => {}
            Noted::Opened {
                request_id, closed, ..
            } => {
                if let Some(s) = closed {
                    self.write_summary(*s).await;
                }
                record.request_id = Some(request_id);
                record.count = Some(1);
                if self.log.append(&record).await.is_err() {
                    tracing::error!("a refusal could not be audited");
                }
            }
        }
    }
}

/// The `issuer` of a refusal window keyed by a static token's name: no URL, so never
/// an OIDC issuer's.
const TOKEN_WINDOW: &str = "static token";

fn new_request_id() -> String {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    hex::encode(b)
}

/// The event of a request that changes something; `None` for one that does not.
fn change_of(method: &Method, path: &str) -> Option<&'static str> {
    match *method {
        Method::PUT if path.starts_with("/v1/") => Some("artifact.upload"),
        Method::POST if path.ends_with("/complete") => Some("version.complete"),
        Method::PATCH => Some("version.labels"),
        Method::DELETE => Some("version.delete"),
        Method::POST if path == "/v1/admin/gc" => Some("gc.run"),
        // Any other state-changing method on /v1/ (none is routed today) is still a
        // change attempted.
        Method::POST if path.starts_with("/v1/") => Some("request.change"),
        _ => None,
    }
}

/// Whether an error answer is a refusal of who is asking or from where.
fn is_refusal(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::MISDIRECTED_REQUEST
    )
}

/// Audits every change and every refusal (see the module's documentation). Outermost
/// but for the request metrics, so the Host/Origin guard's refusals are audited too.
pub async fn layer(
    State(st): State<AppState>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    let Some(audit) = st.audit.clone() else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    let change = req
        .uri()
        .path()
        .starts_with("/v1/")
        .then(|| change_of(&method, req.uri().path()))
        .flatten();
    if change.is_some() && !audit.ready() {
        return ApiError::audit_unavailable().into_response();
    }
    // Kept as they are (cheap clones); a line is built only for a request that needs one,
    // so reads pay nothing more.
    let facts = Facts {
        method,
        route: req.extensions().get::<MatchedPath>().cloned(),
        params: params.ok(),
        uri: req.uri().clone(),
        client: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
        // Kept only to name what a refused token claimed; never written.
        authorization: req.headers().get(header::AUTHORIZATION).cloned(),
    };
    let Some(event) = change else {
        let resp = next.run(req).await;
        return finish(&audit, facts, None, resp).await;
    };
    // A change and its line run as a task of their own: a client that hangs up (or a
    // shutdown's drain deadline) drops the connection, not a change half recorded.
    let task = tokio::spawn(async move {
        let resp = next.run(req).await;
        finish(&audit, facts, Some(event), resp).await
    });
    task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a change's handler failed");
        ApiError::internal("the request failed").into_response()
    })
}

/// What a request's line is made of, taken before its handler runs.
struct Facts {
    method: Method,
    route: Option<MatchedPath>,
    params: Option<RawPathParams>,
    uri: axum::http::Uri,
    client: Option<IpAddr>,
    authorization: Option<axum::http::HeaderValue>,
}

impl Facts {
    /// The line's who-independent part: method, route, coordinates, client.
    fn record(&self) -> ApiRecord {
        let route = self.route.as_ref().map_or("unmatched", |r| r.as_str());
        let mut record = ApiRecord {
            method: Some(crate::metrics::method_label(&self.method)),
            route: Some(route.to_owned()),
            client: self.client.map(client_of),
            ..Default::default()
        };
        match &self.params {
            Some(params) => {
                for (k, v) in params.iter() {
                    let slot = match k {
                        "namespace" => &mut record.namespace,
                        "name" => &mut record.name,
                        "version" => &mut record.version,
                        "path" => &mut record.path,
                        "digest" => &mut record.digest,
                        _ => continue,
                    };
                    *slot = Some(v.to_owned());
                }
            }
            None => params_from_uri(self.uri.path(), &mut record),
        }
        if record.path.is_none() && route.ends_with("/complete") && self.method == Method::PUT {
            record.path = Some("complete".into());
        }
        record
    }
}

/// Writes the line of an answered request, if it needs one: a change that passed its
/// permission check (synced; 503 `audit_unavailable` when that fails), a refusal, or a
/// change rejected before any permission check (both through the coalescer).
async fn finish(
    audit: &ApiAudit,
    facts: Facts,
    change: Option<&'static str>,
    mut resp: Response,
) -> Response {
    let status = resp.status();
    let refusal = resp
        .extensions_mut()
        .remove::<Refusal>()
        .filter(|_| is_refusal(status));
    if refusal.is_none() && change.is_none() {
        return resp;
    }
    let mut record = facts.record();
    record.status = Some(status.as_u16());
    record.code = resp
        .extensions()
        .get::<ErrorCodeTag>()
        .map(|c| c.0.as_str());
    let who = resp.extensions_mut().remove::<Who>();
    let granted = resp.extensions_mut().remove::<Granted>().is_some();
    let verified = match &who {
        Some(who) => identify(&mut record, who),
        None => {
            claimed(&mut record, facts.authorization.as_ref());
            None
        }
    };
    if let Some(refusal) = refusal {
        record.event = "request.denied";
        record.decision = "deny";
        record.reason = Some(refusal.reason);
        record.detail = Some(refusal.message);
        audit.refused(record, verified).await;
        return resp;
    }
    let Some(event) = change else {
        return resp;
    };
    if !granted {
        // Answered before any permission check (a malformed name, an unknown route):
        // nothing was changed or allowed, and such requests cost no more than
        // refusals.
        record.event = "request.rejected";
        record.decision = "deny";
        record.reason = record.code;
        audit.refused(record, verified).await;
        return resp;
    }
    record.event = event;
    record.decision = "allow";
    if let Some(changed) = resp.extensions_mut().remove::<Changed>() {
        record.digest = Some(changed.digest);
        record.size = Some(changed.size);
    }
    record.request_id = Some(new_request_id());
    match audit.log.append(&record).await {
        Ok(()) => resp,
        Err(_) => ApiError::audit_unavailable().into_response(),
    }
}

/// Fills in who the caller is; returns the verified (issuer, subject) of a token.
fn identify(record: &mut ApiRecord, who: &Who) -> Option<(String, String)> {
    match who {
        Who::Open => record.caller = Some("open"),
        Who::Anonymous => record.caller = Some("anonymous"),
        Who::Token(name) => {
            record.caller = Some("token");
            record.token_name = Some(name.clone());
            return Some((TOKEN_WINDOW.into(), name.clone()));
        }
        Who::Oidc { issuer, subject } => {
            record.caller = Some("oidc");
            record.issuer = Some(issuer.clone());
            record.subject = Some(subject.clone());
            record.identity_verified = Some(true);
            return Some((issuer.clone(), subject.clone()));
        }
    }
    None
}

/// Names what a refused bearer token claimed to be, marked unverified: the issuer and
/// subject of a JWT, or that a static token was not known. Never the token.
fn claimed(record: &mut ApiRecord, authorization: Option<&axum::http::HeaderValue>) {
    let token = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, t)| t.trim());
    let Some(token) = token else {
        record.caller = Some("anonymous");
        return;
    };
    if token.starts_with(TOKEN_PREFIX) {
        record.caller = Some("token");
        return;
    }
    // Not even a JWT: a bearer of something this server cannot read.
    record.caller = Some("bearer");
    if let Some(claims) = artifactstore_oidc::verify::unverified_claims(token) {
        let text = |k: &str| claims.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        record.caller = Some("oidc");
        record.issuer = text("iss");
        record.subject = text("sub");
        record.identity_verified = Some(false);
    }
}

/// A client as its refusals are counted: an IPv4 address, or an IPv6 address's /64
/// (one host holds a whole /64).
fn client_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The artifact's coordinates from a URL path that no route matched (a refusal before
/// routing): the segments after `/v1/artifacts/`, as sent.
fn params_from_uri(path: &str, record: &mut ApiRecord) {
    let Some(rest) = path.strip_prefix("/v1/artifacts/") else {
        return;
    };
    let mut parts = rest.splitn(4, '/');
    record.namespace = parts.next().map(str::to_owned);
    record.name = parts.next().map(str::to_owned);
    record.version = parts.next().map(str::to_owned);
    record.path = parts.next().map(str::to_owned);
}

impl crate::Probe for ApiAudit {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn check(&self) -> Result<(), String> {
        if self.log.writable() {
            Ok(())
        } else {
            Err("the audit log cannot be written".into())
        }
    }

    fn encode_metrics(
        &self,
        encoder: &mut artifactstore_model::metrics::prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use artifactstore_model::metrics::{const_counter, const_gauge};
        const_counter(
            encoder,
            "artifactstore_audit_failures",
            "Audit lines that could not be written.",
            &[],
            self.log.failures.load(std::sync::atomic::Ordering::Relaxed),
        )?;
        const_counter(
            encoder,
            "artifactstore_audit_syncs",
            "Batches of audit lines written and synced.",
            &[],
            self.log.syncs(),
        )?;
        const_gauge(
            encoder,
            "artifactstore_audit_writable",
            "1 when the last audit line was written.",
            &[],
            f64::from(u8::from(self.log.healthy())),
        )
    }
}

impl ApiError {
    /// 503 `audit_unavailable`: the audit log cannot be written, so nothing is changed
    /// (or, for a change already made, it is not acknowledged).
    pub fn audit_unavailable() -> ApiError {
        ApiError {
            retry_after_secs: Some(crate::error::STORAGE_RETRY_AFTER_SECS),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::AuditUnavailable,
                "the audit log cannot be written, so this change is not acknowledged; it is safe to repeat once the server is ready again",
            )
        }
    }
}
