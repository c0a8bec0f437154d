//! CORS on the artifact server: a listed origin's preflight is answered with what the
//! API takes, any other origin's is refused, and without `cors_allowed_origins` no
//! CORS header is ever sent.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use tower::ServiceExt;

use artifactstore_server::ServiceConfig;
use artifactstore_server::guard::Origins;

async fn app_with(cors_allowed_origins: &[&str]) -> (axum::Router, tempfile::TempDir) {
    let (mut state, dir) = support::state().await;
    let mut origins = Origins::loopback_and("127.0.0.1:8480".parse().unwrap());
    origins.cors_allowed_origins = cors_allowed_origins.iter().map(|o| o.to_string()).collect();
    state.config = Arc::new(ServiceConfig {
        origins,
        ..ServiceConfig::default()
    });
    (artifactstore_server::app(state), dir)
}

async fn send(app: &axum::Router, method: &str, origin: &str, preflight: bool) -> Response<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri("/v1/artifacts/ci/x/1/report.txt")
        .header("host", "127.0.0.1:8480")
        .header("origin", origin);
    if preflight {
        req = req
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "x-artifact-digest");
    }
    app.clone()
        .oneshot(req.body(Body::from("report")).unwrap())
        .await
        .unwrap()
}

fn cors_headers(resp: &Response<Body>) -> Vec<String> {
    resp.headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn a_listed_origin_is_answered_and_may_upload() {
    let (app, _dir) = app_with(&["https://dash.example"]).await;
    let resp = send(&app, "OPTIONS", "https://dash.example", true).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://dash.example");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("PUT") && methods.contains("PATCH"),
        "{methods}"
    );
    let headers = h["access-control-allow-headers"].to_str().unwrap();
    assert!(headers.contains("x-artifact-digest"), "{headers}");
    assert_eq!(h["vary"], "Origin");

    let resp = send(&app, "PUT", "https://dash.example", false).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://dash.example"
    );
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("x-artifact-version"), "{exposed}");
}

#[tokio::test]
async fn other_origins_get_no_cors_and_cannot_write() {
    let (app, _dir) = app_with(&["https://dash.example"]).await;
    let resp = send(&app, "OPTIONS", "https://evil.example", true).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(cors_headers(&resp).is_empty());
    let resp = send(&app, "PUT", "https://evil.example", false).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(cors_headers(&resp).is_empty());

    // The default: no origin is listed, and no CORS header is ever sent.
    let (app, _dir) = app_with(&[]).await;
    let resp = send(&app, "OPTIONS", "https://dash.example", true).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(cors_headers(&resp).is_empty());
    assert!(!resp.headers().contains_key("vary"));
}

/// A dashboard on a listed origin, with `[auth]` on: its preflight (which carries no
/// token) asks to send `Authorization` and is answered; the request itself carries the
/// token and may read the challenge of a 401.
#[tokio::test]
async fn a_listed_origin_may_send_a_bearer_token_when_auth_is_on() {
    let (mut state, _dir) = support::state().await;
    let mut origins = Origins::loopback_and("127.0.0.1:8480".parse().unwrap());
    origins.cors_allowed_origins = vec!["https://dash.example".into()];
    state.config = Arc::new(ServiceConfig {
        origins,
        ..ServiceConfig::default()
    });
    let (token, hash) = artifactstore_server::auth::new_token();
    let config: artifactstore_server::auth::AuthConfig = toml::from_str(&format!(
        "[[tokens]]\nname = \"dash\"\nsha256 = \"{hash}\"\nnamespaces = [\"ci\"]\npermissions = [\"read\", \"write\"]\n"
    ))
    .unwrap();
    let auth = artifactstore_server::auth::Auth::new(
        &config,
        reqwest::Client::new(),
        artifactstore_model::clock::system_clock(),
    )
    .unwrap();
    let app = artifactstore_server::app(state.with_auth(auth));

    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/v1/artifacts/ci/x/1/report.txt")
        .header("host", "127.0.0.1:8480")
        .header("origin", "https://dash.example")
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization, x-artifact-digest",
        )
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(preflight).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "a preflight needs no token"
    );
    let allowed = resp.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");

    let put = |bearer: Option<&str>| {
        let mut req = Request::builder()
            .method("PUT")
            .uri("/v1/artifacts/ci/x/1/report.txt")
            .header("host", "127.0.0.1:8480")
            .header("origin", "https://dash.example");
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(Body::from("report")).unwrap()
    };
    let resp = app
        .clone()
        .oneshot(put(Some(token.expose())))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = app.clone().oneshot(put(None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("www-authenticate"), "{exposed}");
}
