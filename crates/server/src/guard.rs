//! Requests a browser could be tricked into sending. Two attacks matter on a server
//! that answers on loopback without authentication:
//! - DNS rebinding: a page on `evil.example` whose name now resolves to 127.0.0.1 talks
//!   to the server as its own origin. Every request must name an allowed `Host`
//!   (`allowed_hosts`; by default the loopback names and the listen address), else
//!   421 `host_not_allowed`.
//! - Cross-site writes: a form or `fetch(..., {mode: "no-cors"})` with a
//!   `text/plain` body needs no preflight. State-changing requests from a foreign
//!   `Origin` are refused (403 `origin_not_allowed`) unless `cors_allowed_origins`
//!   lists it, and JSON bodies are taken only as `application/json` (415, in
//!   artifacts.rs).
//!
//! No CORS headers are sent unless origins are configured.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use artifactstore_model::api::ErrorCode;

use crate::AppState;
use crate::error::ApiError;

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

    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        // Same origin: the page was served by this host.
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        same || self.cors_allowed_origins.iter().any(|o| o == origin)
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

pub async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let origins = &st.config.origins;
    // A browser always sends Host; a request without one (HTTP/1.0 tools) cannot be
    // a rebinding attack, and is served.
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{0}"));
    let host = host.map(str::to_owned);
    if let Some(host) = &host
        && !origins.host_allowed(host)
    {
        return ApiError::new(
            axum::http::StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::HostNotAllowed,
            "this server does not answer for that Host; see allowed_hosts",
        )
        .into_response();
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    if let Some(origin) = &origin
        && is_state_changing(req.method())
        && !origins.origin_allowed(origin, host.as_deref().unwrap_or(""))
    {
        return ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            ErrorCode::OriginNotAllowed,
            "cross-origin writes are refused; see cors_allowed_origins",
        )
        .into_response();
    }
    let mut resp = next.run(req).await;
    if let Some(origin) = origin
        && origins.cors_allowed_origins.contains(&origin)
        && let Ok(v) = HeaderValue::from_str(&origin)
    {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_with_and_without_ports() {
        let o = Origins::loopback_and("127.0.0.1:8480".parse().unwrap());
        for ok in [
            "localhost",
            "localhost:8480",
            "127.0.0.1:8480",
            "127.0.0.1:1",
            "[::1]:8480",
            "LOCALHOST",
        ] {
            assert!(o.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8480",
            "127.0.0.1.evil.example",
            "",
            "localhost.evil",
        ] {
            assert!(!o.host_allowed(bad), "{bad}");
        }
        let pinned = Origins {
            allowed_hosts: vec!["artifacts.example:443".into()],
            ..Default::default()
        };
        assert!(pinned.host_allowed("artifacts.example:443"));
        assert!(!pinned.host_allowed("artifacts.example:8080"));
        let any = Origins {
            allowed_hosts: vec!["*".into()],
            ..Default::default()
        };
        assert!(any.host_allowed("whatever.example"));
    }

    #[test]
    fn origins_are_same_origin_or_listed() {
        let o = Origins {
            allowed_hosts: vec!["*".into()],
            cors_allowed_origins: vec!["https://dash.example".into()],
        };
        assert!(o.origin_allowed("http://127.0.0.1:8480", "127.0.0.1:8480"));
        assert!(o.origin_allowed("https://dash.example", "127.0.0.1:8480"));
        assert!(!o.origin_allowed("https://evil.example", "127.0.0.1:8480"));
        assert!(!o.origin_allowed("null", "127.0.0.1:8480"));
    }
}
