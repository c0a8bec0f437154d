//! Requests a browser could be tricked into sending, refused the same way by both
//! servers. Two attacks matter on a server that answers on loopback:
//! - DNS rebinding: a page on `evil.example` whose name now resolves to 127.0.0.1 talks
//!   to the server as its own origin. Every request must name an allowed `Host`
//!   (`allowed_hosts`; by default the loopback names and the listen address), else
//!   421 `host_not_allowed`.
//! - Cross-site writes: a form or `fetch(..., {mode: "no-cors"})` with a
//!   `text/plain` body needs no preflight. State-changing requests from a foreign
//!   `Origin` are refused (403 `origin_not_allowed`) unless `cors_allowed_origins`
//!   lists it.
//!
//! A CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered for a
//! listed origin with the methods and headers the server takes, and refused
//! (403 `origin_not_allowed`) for any other. No CORS header is sent unless origins
//! are configured.
//!
//! The guard knows neither server's state: each hands it a [`Guard`] holding its
//! [`Origins`], its [`Cors`] vocabulary and how it words a [`Refusal`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use artifactstore_model::api::ErrorCode;

/// Which `Host` and `Origin` values are served.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    /// `host` or `host:port` values; `*` serves any host.
    pub allowed_hosts: Vec<String>,
    /// Exact origins (`https://dash.example`) whose state-changing requests and
    /// reads are allowed across origins; empty: none.
    pub cors_allowed_origins: Vec<String>,
}

impl Origins {
    /// The defaults for a server listening on `listen`: the loopback names and the
    /// listen address itself.
    pub fn loopback_and(listen: std::net::SocketAddr) -> Self {
        let mut allowed_hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        allowed_hosts.push(listen.ip().to_string());
        allowed_hosts.push(listen.to_string());
        Origins {
            allowed_hosts,
            cors_allowed_origins: Vec::new(),
        }
    }

    /// The defaults for `listen`, replaced by what the configuration names. Warns when
    /// the configuration serves any host, or when the defaults cannot name the host
    /// a client on another machine would use (listening on every address).
    pub fn configured(
        listen: std::net::SocketAddr,
        allowed_hosts: Option<&[String]>,
        cors_allowed_origins: &[String],
    ) -> Self {
        let mut origins = Origins::loopback_and(listen);
        match allowed_hosts {
            Some(hosts) => {
                if hosts.iter().any(|h| h == "*") {
                    tracing::warn!(
                        "allowed_hosts = [\"*\"]: any Host is served, so a page on any site that rebinds its name to this address can use the API"
                    );
                }
                origins.allowed_hosts = hosts.to_vec();
            }
            None if listen.ip().is_unspecified() => {
                tracing::warn!(addr = %listen, "listening on every address: only loopback names are served until allowed_hosts names this machine's host names");
            }
            None => {}
        }
        origins.cors_allowed_origins = cors_allowed_origins.to_vec();
        origins
    }

    /// Whether `host` (the `Host` header, with or without a port) is served: an entry
    /// without a port allows the name on any port, one with a port only that one.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = strip_port(&host);
        self.allowed_hosts.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            a == "*" || a == host || (strip_port(&a) == a && a == name)
        })
    }

    /// Whether a state-changing request from `origin` is served on `host`: same
    /// origin, or listed.
    pub fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        same || self.listed(origin)
    }

    /// Whether `origin` is one of `cors_allowed_origins`.
    pub fn listed(&self, origin: &str) -> bool {
        self.cors_allowed_origins.iter().any(|o| o == origin)
    }
}

/// `host` without a trailing `:port` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

fn is_state_changing(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What a preflight answer allows: the methods and request headers a server takes.
#[derive(Clone, Copy, Debug)]
pub struct Cors {
    /// `Access-Control-Allow-Methods`, e.g. `GET, HEAD, PUT, POST`.
    pub allow_methods: &'static str,
    /// `Access-Control-Allow-Headers`, e.g. `authorization, content-type`.
    pub allow_headers: &'static str,
    /// `Access-Control-Expose-Headers` on answers to listed origins; empty: none.
    pub expose_headers: &'static str,
}

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

/// What the guard refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 421: the `Host` is not one of `allowed_hosts`.
    HostNotAllowed,
    /// 403: a state-changing request or a preflight from an origin not allowed.
    OriginNotAllowed,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::HostNotAllowed => StatusCode::MISDIRECTED_REQUEST,
            Refusal::OriginNotAllowed => StatusCode::FORBIDDEN,
        }
    }

    pub fn code(self) -> ErrorCode {
        match self {
            Refusal::HostNotAllowed => ErrorCode::HostNotAllowed,
            Refusal::OriginNotAllowed => ErrorCode::OriginNotAllowed,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::HostNotAllowed => {
                "this server does not answer for that Host; see allowed_hosts"
            }
            Refusal::OriginNotAllowed => {
                "cross-origin requests from this origin are refused; see cors_allowed_origins"
            }
        }
    }
}

/// One server's guard: its origins, its CORS vocabulary and how it answers a refusal
/// (in its own envelope; `req` lets it pick the wire format of the route).
#[derive(Clone)]
pub struct Guard {
    origins: Arc<Origins>,
    cors: Cors,
    refuse: fn(Refusal, &Request) -> Response,
}

impl Guard {
    pub fn new(origins: Origins, cors: Cors, refuse: fn(Refusal, &Request) -> Response) -> Self {
        Guard {
            origins: Arc::new(origins),
            cors,
            refuse,
        }
    }

    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    fn preflight(&self, origin: &str) -> Response {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(self.cors.allow_methods),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(self.cors.allow_headers),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS),
        );
        resp
    }
}

/// The `Host` a request names: its header, else (HTTP/2) the URI's authority.
fn host_of(req: &Request) -> Option<String> {
    match req.headers().get(header::HOST) {
        // A header that is not text can match no allowed name.
        Some(h) => Some(h.to_str().unwrap_or("\u{0}").to_owned()),
        None => req.uri().authority().map(|a| a.as_str().to_owned()),
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The middleware: `axum::middleware::from_fn_with_state(guard, artifactstore_http::guard::guard)`.
pub async fn guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let origins = &guard.origins;
    // A browser always sends Host; a request without one (HTTP/1.0 tools) cannot be
    // a rebinding attack, and is served.
    let host = host_of(&req);
    if let Some(host) = &host
        && !origins.host_allowed(host)
    {
        return (guard.refuse)(Refusal::HostNotAllowed, &req);
    }
    let origin = header_text(req.headers(), header::ORIGIN).map(str::to_owned);
    let cors_on = !origins.cors_allowed_origins.is_empty();
    let mut resp = match &origin {
        Some(origin)
            if req.method() == Method::OPTIONS
                && req
                    .headers()
                    .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) =>
        {
            if origins.listed(origin) {
                guard.preflight(origin)
            } else {
                (guard.refuse)(Refusal::OriginNotAllowed, &req)
            }
        }
        Some(origin)
            if is_state_changing(req.method())
                && !origins.origin_allowed(origin, host.as_deref().unwrap_or("")) =>
        {
            (guard.refuse)(Refusal::OriginNotAllowed, &req)
        }
        _ => next.run(req).await,
    };
    if !cors_on {
        return resp;
    }
    // Answers differ by Origin once origins are configured: caches must keep them apart.
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin
        && origins.listed(&origin)
        && let Ok(v) = HeaderValue::from_str(&origin)
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        if !guard.cors.expose_headers.is_empty() {
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(guard.cors.expose_headers),
            );
        }
    }
    resp
}

#[cfg(test)]
mod tests;
