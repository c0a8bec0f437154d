use axum::Router;
use axum::body::Body;
use axum::http::Request as HttpRequest;
use axum::routing::get;
use tower::ServiceExt;

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
    let any = Origins::configured("127.0.0.1:1".parse().unwrap(), Some(&["*".to_owned()]), &[]);
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

const CORS: Cors = Cors {
    allow_methods: "GET, POST",
    allow_headers: "authorization, content-type",
    expose_headers: "x-request-id",
};

fn refuse(r: Refusal, _req: &Request) -> Response {
    (r.status(), r.code().as_str()).into_response()
}

fn app(cors_allowed_origins: &[&str]) -> Router {
    let mut origins = Origins::loopback_and("127.0.0.1:8480".parse().unwrap());
    origins.cors_allowed_origins = cors_allowed_origins.iter().map(|o| o.to_string()).collect();
    Router::new()
        .route(
            "/thing",
            get(|| async { "read" }).post(|| async { "written" }),
        )
        .layer(axum::middleware::from_fn_with_state(
            Guard::new(origins, CORS, refuse),
            guard,
        ))
}

async fn send(app: &Router, method: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = HttpRequest::builder().method(method).uri("/thing");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn cors_headers(resp: &Response) -> Vec<String> {
    resp.headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

const PREFLIGHT: [(&str, &str); 3] = [
    ("host", "127.0.0.1:8480"),
    ("origin", "https://dash.example"),
    ("access-control-request-method", "POST"),
];

#[tokio::test]
async fn a_listed_origin_gets_its_preflight_answered() {
    let app = app(&["https://dash.example"]);
    let resp = send(&app, "OPTIONS", &PREFLIGHT).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://dash.example");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, content-type"
    );
    assert!(h.contains_key("access-control-max-age"));
    assert_eq!(h["vary"], "Origin");

    // Its requests themselves carry the origin back, and what it may read.
    let resp = send(
        &app,
        "POST",
        &[
            ("host", "127.0.0.1:8480"),
            ("origin", "https://dash.example"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://dash.example"
    );
    assert_eq!(
        resp.headers()["access-control-expose-headers"],
        "x-request-id"
    );
}

#[tokio::test]
async fn other_origins_are_refused_without_cors_headers() {
    let app = app(&["https://dash.example"]);
    let mut foreign = PREFLIGHT;
    foreign[1] = ("origin", "https://evil.example");
    let resp = send(&app, "OPTIONS", &foreign).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(cors_headers(&resp), Vec::<String>::new());
    assert_eq!(resp.headers()["vary"], "Origin");
    let resp = send(
        &app,
        "POST",
        &[
            ("host", "127.0.0.1:8480"),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(cors_headers(&resp), Vec::<String>::new());
    // Reads from anywhere are served, but without the headers that let a page read them.
    let resp = send(
        &app,
        "GET",
        &[
            ("host", "127.0.0.1:8480"),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(cors_headers(&resp), Vec::<String>::new());
}

#[tokio::test]
async fn without_configured_origins_no_cors_header_is_ever_sent() {
    let app = app(&[]);
    let resp = send(&app, "OPTIONS", &PREFLIGHT).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(cors_headers(&resp).is_empty());
    assert!(!resp.headers().contains_key("vary"));
    // Same-origin writes (the CLI, a page served by this host) keep working.
    let resp = send(
        &app,
        "POST",
        &[
            ("host", "127.0.0.1:8480"),
            ("origin", "http://127.0.0.1:8480"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(cors_headers(&resp).is_empty());
    let resp = send(&app, "POST", &[("host", "127.0.0.1:8480")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_foreign_host_is_misdirected_even_for_a_listed_origin() {
    let app = app(&["https://dash.example"]);
    let mut rebound = PREFLIGHT;
    rebound[0] = ("host", "evil.example:8480");
    let resp = send(&app, "OPTIONS", &rebound).await;
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    let resp = send(&app, "GET", &[("host", "evil.example")]).await;
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
}
