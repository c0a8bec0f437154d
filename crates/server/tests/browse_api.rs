//! What a browser showing the store asks beyond plain listings: the end of the event
//! feed (`tail`), so it follows from now, and versions by label.

mod support;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.starts_with('{') {
        req = req.header("content-type", "application/json");
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn publish(app: &Router, token: Option<&str>, version: &str, labels: Value) {
    let (s, _) = send(
        app,
        Method::PUT,
        &format!("/v1/artifacts/{version}/f.txt"),
        token,
        "x",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{version}");
    let body = json!({ "labels": labels }).to_string();
    let (s, b) = send(
        app,
        Method::POST,
        &format!("/v1/artifacts/{version}/complete"),
        token,
        &body,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{version}: {b}");
}

fn versions(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn tail_answers_the_end_of_the_log_and_where_to_follow_from() {
    let (app, _dir) = support::app().await;
    let (s, empty) = send(&app, Method::GET, "/v1/events?tail=5", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(empty, json!({"events": [], "next_after": 0}));

    for v in ["1", "2", "3"] {
        publish(&app, None, &format!("ci/tool/{v}"), json!({})).await;
    }
    // Each version: created, file added, completed.
    let (_, all) = send(&app, Method::GET, "/v1/events?after=0&limit=1000", None, "").await;
    let newest = all["next_after"].as_i64().unwrap();
    assert_eq!(all["events"].as_array().unwrap().len(), 9);

    let (s, tail) = send(&app, Method::GET, "/v1/events?tail=2", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tail["next_after"], newest);
    let seqs: Vec<i64> = tail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [newest - 1, newest], "the last two, oldest first");
    assert_eq!(tail["events"][1]["type"], "version.completed");
    assert_eq!(tail["events"][1]["version"], "3");

    // Following from there waits for what comes next (nothing yet).
    let (_, next) = send(
        &app,
        Method::GET,
        &format!("/v1/events?after={newest}"),
        None,
        "",
    )
    .await;
    assert_eq!(next["events"], json!([]));

    for bad in [
        "tail=0",
        "tail=1001",
        "tail=2&after=3",
        "tail=2&wait=5",
        "tail=2&limit=5",
    ] {
        let (s, b) = send(&app, Method::GET, &format!("/v1/events?{bad}"), None, "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(b["error"]["code"], "invalid_query", "{bad}");
    }
}

#[tokio::test]
async fn tail_shows_only_what_the_caller_may_read_but_follows_the_whole_log() {
    let (state, _dir) = support::state().await;
    let token = format!("ast_{}", "ab".repeat(32));
    let config = format!(
        r#"
[[tokens]]
name = "writer"
sha256 = "{writer}"
namespaces = ["*"]
permissions = ["read", "write", "complete"]

[[tokens]]
name = "team-a"
sha256 = "{reader}"
namespaces = ["team-a"]
permissions = ["read"]
"#,
        writer = hex::encode(artifactstore_server::auth::token_hash("ast_writer")),
        reader = hex::encode(artifactstore_server::auth::token_hash(&token)),
    );
    let config: artifactstore_server::auth::AuthConfig = toml::from_str(&config).unwrap();
    let auth = artifactstore_server::auth::Auth::new(
        &config,
        reqwest::Client::new(),
        Arc::new(artifactstore_model::SystemClock),
    )
    .unwrap();
    let app = artifactstore_server::app(state.with_auth(auth));
    publish(&app, Some("ast_writer"), "team-a/app/1", json!({})).await;
    publish(&app, Some("ast_writer"), "team-b/app/1", json!({})).await;

    let (_, all) = send(
        &app,
        Method::GET,
        "/v1/events?tail=100",
        Some("ast_writer"),
        "",
    )
    .await;
    let newest = all["next_after"].as_i64().unwrap();
    assert_eq!(all["events"].as_array().unwrap().len(), 6);

    let (s, mine) = send(&app, Method::GET, "/v1/events?tail=100", Some(&token), "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        mine["next_after"], newest,
        "follows from the end of the whole log"
    );
    let namespaces: Vec<&str> = mine["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["team-a", "team-a", "team-a"]);

    let (s, _) = send(&app, Method::GET, "/v1/events?tail=5", None, "").await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "anonymous may read nothing here"
    );
}

#[tokio::test]
async fn versions_are_listed_by_label_page_by_page() {
    let (app, _dir) = support::app().await;
    for (v, branch) in [
        ("1", "main"),
        ("2", "dev"),
        ("3", "main"),
        ("4", "main"),
        ("5", "dev"),
    ] {
        publish(
            &app,
            None,
            &format!("ci/tool/{v}"),
            json!({ "branch": branch }),
        )
        .await;
    }
    publish(&app, None, "ci/tool/6", json!({})).await;

    let (s, p1) = send(
        &app,
        Method::GET,
        "/v1/artifacts/ci/tool?label=branch=main&limit=2",
        None,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(versions(&p1), ["4", "3"], "newest first");
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = send(
        &app,
        Method::GET,
        &format!("/v1/artifacts/ci/tool?label=branch=main&limit=2&cursor={cursor}"),
        None,
        "",
    )
    .await;
    assert_eq!(versions(&p2), ["1"]);
    assert_eq!(p2["next_cursor"], Value::Null);

    let (_, any) = send(
        &app,
        Method::GET,
        "/v1/artifacts/ci/tool?label=branch",
        None,
        "",
    )
    .await;
    assert_eq!(
        versions(&any),
        ["5", "4", "3", "2", "1"],
        "label=KEY: any value"
    );
    let (_, none) = send(
        &app,
        Method::GET,
        "/v1/artifacts/ci/tool?label=branch=nope",
        None,
        "",
    )
    .await;
    assert_eq!(versions(&none), Vec::<&str>::new());
    let (_, all) = send(&app, Method::GET, "/v1/artifacts/ci/tool?label=", None, "").await;
    assert_eq!(versions(&all).len(), 6, "an empty label filters nothing");

    let (s, _) = send(
        &app,
        Method::GET,
        "/v1/artifacts/ci?label=branch=main",
        None,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "names are not labelled");
}
