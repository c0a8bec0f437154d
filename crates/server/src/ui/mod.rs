//! The artifact browser at `/ui/`: a handful of committed static files (HTML, CSS, ES
//! modules) embedded in the binary, so a server on an air-gapped site serves it with
//! nothing fetched from anywhere and nothing built at run time. The pages read the
//! public API (`/v1/…`) with the visitor's own token; this module only hands out the
//! files.
//!
//! Every `/ui/…` path that is not an asset answers the same shell: the browser routes
//! by the path (history API), so any page is a plain URL that survives a reload. Assets
//! live under `/ui/_/`, a segment no namespace can be (names start with a letter or a
//! digit).
//!
//! The shell carries a strict CSP of its own — scripts, styles and connections from
//! this origin only, no inline script, frames only of this origin (the sandboxed
//! preview of an HTML report), no framing of the browser itself. Uploaded files keep
//! the sandbox they are served with (`download.rs`): the browser never puts their
//! bytes into its own document except as text.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;
use artifactstore_model::api::ErrorCode;

/// The policy of the shell. `blob:` images are previews fetched with the visitor's
/// token; `frame-src 'self'` admits the sandboxed report frame and nothing else.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob:; connect-src 'self'; frame-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $media_type:expr) => {
        Asset {
            name: $name,
            media_type: $media_type,
            body: include_bytes!(concat!("../../ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `/ui/_/`. A file added to `crates/server/ui/` is served once
/// listed here.
static ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("browse.js", JS),
    asset!("version.js", JS),
    asset!("compare.js", JS),
    asset!("file.js", JS),
    asset!("markdown.js", JS),
    asset!("live.js", JS),
];

const SHELL: &[u8] = include_bytes!("../../ui/index.html");

/// Entity tags, computed once: the first 128 bits of each body's SHA-256. Assets are
/// revalidated on every use (`no-cache`), so a new binary's files are seen at once and
/// an unchanged file costs a 304.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| a.body)
        .chain([SHELL])
        .map(|body| {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
            format!("\"{}\"", hex::encode(&d.as_ref()[..16]))
        })
        .collect()
});

/// The browser's routes, or none when it is off (`ui = false`): `/ui/…` then answers
/// 404 like any unknown route.
pub fn routes(on: bool) -> Router<AppState> {
    if !on {
        return Router::new();
    }
    Router::new()
        .route("/", get(to_ui))
        .route("/ui", get(to_ui))
        .route("/ui/", get(shell))
        .route("/ui/{*path}", get(page_or_asset))
}

async fn to_ui() -> Redirect {
    Redirect::to("/ui/")
}

async fn shell(headers: HeaderMap) -> Response {
    let mut resp = body(&headers, "text/html; charset=utf-8", SHELL, ETAGS.len() - 1);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    // For browsers that predate `frame-ancestors`.
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    resp
}

async fn page_or_asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(name) = path.strip_prefix("_/") else {
        return shell(headers).await;
    };
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => {
            let a = &ASSETS[i];
            let mut resp = body(&headers, a.media_type, a.body, i);
            resp.headers_mut().insert(
                "cross-origin-resource-policy",
                HeaderValue::from_static("same-origin"),
            );
            resp
        }
        None => ApiError::not_found(ErrorCode::RouteNotFound, "no such file of the browser")
            .into_response(),
    }
}

/// A static body with its entity tag, or 304 when the client holds it already.
fn body(headers: &HeaderMap, media_type: &'static str, body: &'static [u8], i: usize) -> Response {
    let etag = &ETAGS[i];
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*");
    let tag = HeaderValue::from_str(etag).expect("hex in quotes");
    let cache = HeaderValue::from_static("no-cache");
    if fresh {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, tag), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
            (header::ETAG, tag),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}
