//! The browser at `/ui/`: one shell for every page path, under its own strict CSP; its
//! files served from the binary with their types; nothing of it when `ui` is off.

mod support;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use artifactstore_server::ServiceConfig;

async fn get(app: &Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The `/ui/_/…` files a text refers to: the shell's `href`/`src`, and the modules'
/// relative imports (`from "./x.js"`).
fn referenced(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for start in ["\"/ui/_/", "from \"./", "import(\"./"] {
        let mut rest = text;
        while let Some(i) = rest.find(start) {
            rest = &rest[i + start.len()..];
            let end = rest.find('"').unwrap();
            found.push(rest[..end].to_owned());
        }
    }
    found
}

#[tokio::test]
async fn every_page_path_answers_the_shell_under_a_strict_policy() {
    let (app, _dir) = support::app().await;
    for path in [
        "/ui/",
        "/ui/ci",
        "/ui/ci/tool/1.0/reports/summary.md",
        "/ui/ci/tool/-/compare?from=1&to=2",
        "/ui/-/signin",
    ] {
        let (status, h, body) = get(&app, path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-cache");
        assert!(
            body.contains("<script type=\"module\" src=\"/ui/_/app.js\">"),
            "{body}"
        );
        // No inline script: every script element has a src.
        assert_eq!(
            body.matches("<script").count(),
            body.matches("<script type=\"module\" src=").count()
        );
    }
    // `/` and `/ui` lead to the browser.
    for path in ["/", "/ui"] {
        let (status, h, _) = get(&app, path, &[]).await;
        assert!(status.is_redirection(), "{path}: {status}");
        assert_eq!(h["location"], "/ui/");
    }
}

#[tokio::test]
async fn every_file_the_browser_refers_to_is_served_with_its_type_and_revalidated() {
    let (app, _dir) = support::app().await;
    let (_, _, shell) = get(&app, "/ui/", &[]).await;
    let mut queue = referenced(&shell);
    assert!(queue.contains(&"app.js".to_owned()) && queue.contains(&"app.css".to_owned()));
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let uri = format!("/ui/_/{name}");
        let (status, h, body) = get(&app, &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let want = match name.rsplit('.').next().unwrap() {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("{uri}: unexpected kind {other}"),
        };
        assert_eq!(h["content-type"], want, "{uri}");
        assert_eq!(h["cache-control"], "no-cache", "{uri}");
        let etag = h["etag"].to_str().unwrap().to_owned();
        let (status, _, body304) = get(&app, &uri, &[("if-none-match", &etag)]).await;
        assert_eq!(
            (status, body304.as_str()),
            (StatusCode::NOT_MODIFIED, ""),
            "{uri}"
        );
        // Nothing fetched from elsewhere: no absolute URL in code or styles.
        assert!(
            !body.contains("url(http") && !body.contains("import \"http"),
            "{uri}"
        );
        queue.extend(referenced(&body));
    }
    assert!(seen.len() >= 5, "{seen:?}");

    for missing in ["/ui/_/nope.js", "/ui/_/app.js/x", "/ui/_/"] {
        let (status, h, body) = get(&app, missing, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(h["content-type"], "application/json", "{missing}");
        assert!(body.contains("route_not_found"), "{missing}: {body}");
    }
}

#[tokio::test]
async fn the_browser_keeps_the_hosts_the_server_answers_for() {
    let (app, _dir) = support::app().await;
    let (status, _, _) = get(&app, "/ui/", &[("host", "evil.example")]).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    let (status, _, _) = get(&app, "/ui/", &[("host", "127.0.0.1:8480")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn with_ui_off_nothing_of_it_is_served() {
    let (mut state, _dir) = support::state().await;
    state.config = Arc::new(ServiceConfig {
        ui: false,
        ..ServiceConfig::default()
    });
    let app = artifactstore_server::app(state);
    for path in ["/", "/ui", "/ui/", "/ui/ci/tool", "/ui/_/app.js"] {
        let (status, _, body) = get(&app, path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(body.contains("route_not_found"), "{path}: {body}");
    }
    let (status, _, _) = get(&app, "/v1/artifacts", &[]).await;
    assert_eq!(status, StatusCode::OK, "the API stays");
}
