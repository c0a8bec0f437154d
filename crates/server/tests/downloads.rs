//! Uploaded bodies never run as part of the server's origin: an HTML report comes back
//! sandboxed and as an attachment (inline only when asked, still sandboxed), and no
//! answer lets a browser sniff a type.

mod support;
use support::app;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use tower::ServiceExt;

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    ct: Option<&str>,
    body: &'static str,
) -> (StatusCode, HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ct) = ct {
        req = req.header("content-type", ct);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    (resp.status(), resp.headers().clone())
}

const PAGE: &str = "<html><script>fetch('/v1/artifacts')</script></html>";

#[tokio::test]
async fn html_is_a_sandboxed_attachment_unless_inline_and_nothing_is_sniffed() {
    let (app, _dir) = app().await;
    let (status, headers) = send(
        &app,
        Method::PUT,
        "/v1/artifacts/ci/site/1/reports/index.html",
        Some("text/html"),
        PAGE,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        headers["x-content-type-options"], "nosniff",
        "JSON answers too"
    );
    send(
        &app,
        Method::PUT,
        "/v1/artifacts/ci/site/1/logo.svg",
        Some("image/svg+xml"),
        "<svg/>",
    )
    .await;
    send(
        &app,
        Method::PUT,
        "/v1/artifacts/ci/site/1/log.txt",
        Some("text/plain"),
        "ok",
    )
    .await;

    for method in [Method::GET, Method::HEAD] {
        let (status, h) = send(
            &app,
            method.clone(),
            "/v1/artifacts/ci/site/1/reports/index.html",
            None,
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["content-type"], "text/html");
        assert_eq!(h["content-security-policy"], "sandbox");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(
            h["content-disposition"], "attachment; filename*=UTF-8''index.html",
            "{method}"
        );
    }
    let (_, h) = send(
        &app,
        Method::GET,
        "/v1/artifacts/ci/site/1/logo.svg",
        None,
        "",
    )
    .await;
    assert_eq!(
        h["content-disposition"],
        "attachment; filename*=UTF-8''logo.svg"
    );

    // Asked inline: shown, but still sandboxed.
    let (status, h) = send(
        &app,
        Method::GET,
        "/v1/artifacts/ci/site/1/reports/index.html?inline=1",
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["content-security-policy"], "sandbox");
    assert!(h.get("content-disposition").is_none());

    // Plain text is shown inline as it always was, sandboxed too.
    let (_, h) = send(
        &app,
        Method::GET,
        "/v1/artifacts/ci/site/1/log.txt",
        None,
        "",
    )
    .await;
    assert!(h.get("content-disposition").is_none());
    assert_eq!(h["content-security-policy"], "sandbox");

    // By digest: the same rules.
    let digest = artifactstore_model::Digest::of(PAGE.as_bytes());
    let (status, h) = send(&app, Method::GET, &format!("/v1/blobs/{digest}"), None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["content-security-policy"], "sandbox");
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );

    // Errors and operational answers carry nosniff as well.
    let (status, h) = send(&app, Method::GET, "/v1/nothing-here", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h["x-content-type-options"], "nosniff");
    let (_, h) = send(&app, Method::GET, "/metrics", None, "").await;
    assert_eq!(h["x-content-type-options"], "nosniff");
}

async fn send_with(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> StatusCode {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app.clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap()
        .status()
}

/// DNS rebinding and cross-site writes on the loopback default: a foreign Host is
/// 421, a foreign Origin cannot write, and a text/plain JSON body (which a browser
/// sends without a preflight) completes nothing; same-origin and plain clients work.
#[tokio::test]
async fn foreign_hosts_and_origins_are_refused() {
    let (app, _dir) = app().await;
    let local = [("host", "127.0.0.1:8480")];
    assert_eq!(
        send_with(&app, Method::PUT, "/v1/artifacts/ci/x/1/f", &local, "x").await,
        StatusCode::CREATED
    );

    let rebound = [("host", "evil.example:8480")];
    assert_eq!(
        send_with(&app, Method::GET, "/v1/artifacts", &rebound, "").await,
        StatusCode::MISDIRECTED_REQUEST
    );
    assert_eq!(
        send_with(&app, Method::PUT, "/v1/artifacts/ci/x/1/g", &rebound, "x").await,
        StatusCode::MISDIRECTED_REQUEST
    );

    let cross = [
        ("host", "127.0.0.1:8480"),
        ("origin", "https://evil.example"),
        ("content-type", "text/plain"),
    ];
    let labels = r#"{"labels": {"owned": "yes"}}"#;
    assert_eq!(
        send_with(
            &app,
            Method::POST,
            "/v1/artifacts/ci/x/1/complete",
            &cross,
            labels
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send_with(&app, Method::PUT, "/v1/artifacts/ci/x/1/h", &cross, "x").await,
        StatusCode::FORBIDDEN
    );
    // Without an Origin (curl, the CLI) a text/plain JSON body is still not JSON.
    let plain = [("host", "127.0.0.1:8480"), ("content-type", "text/plain")];
    assert_eq!(
        send_with(
            &app,
            Method::POST,
            "/v1/artifacts/ci/x/1/complete",
            &plain,
            labels
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let (_, headers) = send(&app, Method::GET, "/v1/artifacts/ci/x/1", None, "").await;
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "no CORS unless configured"
    );

    // Same origin, as JSON: completes.
    let same = [
        ("host", "127.0.0.1:8480"),
        ("origin", "http://127.0.0.1:8480"),
        ("content-type", "application/json"),
    ];
    assert_eq!(
        send_with(
            &app,
            Method::POST,
            "/v1/artifacts/ci/x/1/complete",
            &same,
            labels
        )
        .await,
        StatusCode::OK
    );
    // Reads from another origin are answered, without CORS headers the browser would need.
    let read = [
        ("host", "localhost:8480"),
        ("origin", "https://evil.example"),
    ];
    assert_eq!(
        send_with(&app, Method::GET, "/v1/artifacts/ci/x/latest/f", &read, "").await,
        StatusCode::OK
    );
}

/// A version holds at most `max_files_per_version` files: the next new path is
/// refused before a byte is stored; what is there stays readable and re-sending a
/// file already held still answers 200.
#[tokio::test]
async fn a_full_version_refuses_new_files_and_stores_nothing() {
    let (state, dir) = support::state().await;
    state.index.set_max_files_per_version(2);
    let app = artifactstore_server::app(state);
    for p in ["a", "b"] {
        assert_eq!(
            send_with(
                &app,
                Method::PUT,
                &format!("/v1/artifacts/ci/full/1/{p}"),
                &[],
                "x"
            )
            .await,
            StatusCode::CREATED
        );
    }
    let digest = artifactstore_model::Digest::of(b"a new file").to_string();
    let (status, _) = send(
        &app,
        Method::PUT,
        "/v1/artifacts/ci/full/1/c",
        None,
        "a new file",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let hex = &digest["sha256:".len()..];
    assert!(
        !holds_file_named(dir.path(), hex),
        "the refused body was not stored"
    );
    let (status, _) = send(&app, Method::GET, &format!("/v1/blobs/{digest}"), None, "").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing of the refused file is visible"
    );
    assert_eq!(
        send_with(
            &app,
            Method::PUT,
            "/v1/artifacts/ci/full/1/a",
            &[(
                "x-artifact-digest",
                &artifactstore_model::Digest::of(b"x").to_string()
            )],
            "x"
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        send_with(
            &app,
            Method::POST,
            "/v1/artifacts/ci/full/1/complete",
            &[],
            ""
        )
        .await,
        StatusCode::OK
    );
}

fn holds_file_named(dir: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            holds_file_named(&p, name)
        } else {
            p.file_name().is_some_and(|n| n == name)
        }
    })
}

/// With `Downloads::Redirect`, a GET is answered 307 to the store's URL, which asks for
/// the headers this server would send; what must be sandboxed, HEAD, an `If-None-Match`
/// hit and `?redirect=0` are answered here; a file that is not there is not redirected.
#[tokio::test]
async fn redirected_downloads_ask_the_store_for_what_the_proxy_sends() {
    let (state, _dir) = support::redirecting_state().await;
    let app = artifactstore_server::app(state);
    for (path, ct, body) in [
        ("reports/index.html", "text/html", PAGE),
        ("log.txt", "text/plain", "ok"),
    ] {
        let (status, _) = send(
            &app,
            Method::PUT,
            &format!("/v1/artifacts/ci/site/1/{path}"),
            Some(ct),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let html = "/v1/artifacts/ci/site/1/reports/index.html";
    let digest = artifactstore_model::Digest::of(PAGE.as_bytes());
    let (status, h) = send(&app, Method::GET, html, None, "").await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        h["location"],
        format!(
            "http://store.test/{}?expires=60&type=text%2Fhtml&disposition=attachment%3B%20filename%2A%3DUTF-8%27%27index.html",
            digest.hex()
        )
    );
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-artifact-digest"], digest.to_string());
    assert_eq!(h["x-artifact-version"], "1");
    assert_eq!(h["etag"], format!("\"{digest}\""));
    let (status, h) = send(
        &app,
        Method::GET,
        "/v1/artifacts/ci/site/1/log.txt?inline=1",
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert!(
        h["location"]
            .to_str()
            .unwrap()
            .ends_with("&type=text%2Fplain&disposition="),
        "no disposition for what is not active: {:?}",
        h["location"]
    );
    let (status, h) = send(&app, Method::GET, &format!("/v1/blobs/{digest}"), None, "").await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert!(
        h["location"]
            .to_str()
            .unwrap()
            .contains("disposition=attachment")
    );

    for (method, uri) in [
        (Method::GET, format!("{html}?inline=1")),
        (Method::GET, format!("{html}?redirect=0")),
        (Method::HEAD, html.to_owned()),
        (Method::GET, format!("/v1/blobs/{digest}?inline=1")),
    ] {
        let (status, h) = send(&app, method.clone(), &uri, None, "").await;
        assert_eq!(status, StatusCode::OK, "{method} {uri}");
        assert!(h.get("location").is_none(), "{method} {uri}");
        assert_eq!(h["content-security-policy"], "sandbox", "{method} {uri}");
    }
    let req = Request::builder()
        .uri(html)
        .header("if-none-match", format!("\"{digest}\""))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert!(resp.headers().get("location").is_none());
    for uri in [
        "/v1/artifacts/ci/site/1/missing.txt",
        "/v1/artifacts/ci/site/2/log.txt",
        "/v1/artifacts/ci/other/1/log.txt",
    ] {
        let (status, h) = send(&app, Method::GET, uri, None, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(h.get("location").is_none(), "{uri}");
    }
}
