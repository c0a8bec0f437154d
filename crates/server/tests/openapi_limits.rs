//! The OpenAPI document states every limit the server enforces: for values near each
//! limit, whenever the schema allows a value the server accepts it (and where the
//! schema refuses one, so does the server). A client generated from the document thus
//! never sends what the server refuses.

mod support;
use support::app;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use artifactstore_model::api::ErrorCode;
use strum::IntoEnumIterator;

fn doc() -> Value {
    serde_json::from_str(artifactstore_server::OPENAPI).unwrap()
}

/// Whether `schema` admits the string `s` (the keywords the document uses for strings).
fn admits(schema: &Value, s: &str) -> bool {
    let chars = s.chars().count() as u64;
    if schema["minLength"].as_u64().is_some_and(|min| chars < min) {
        return false;
    }
    if schema["maxLength"].as_u64().is_some_and(|max| chars > max) {
        return false;
    }
    if let Some(p) = schema["pattern"].as_str() {
        let re = fancy_regex::Regex::new(p).unwrap_or_else(|e| panic!("pattern {p}: {e}"));
        if !re.is_match(s).unwrap() {
            return false;
        }
    }
    true
}

fn param_schema(doc: &Value, name: &str) -> Value {
    doc["components"]["parameters"][name]["schema"].clone()
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Asserts that schema and server agree on `value`.
fn agree(what: &str, value: &str, schema_ok: bool, status: StatusCode, body: &Value) {
    let server_ok = status != StatusCode::BAD_REQUEST;
    assert_eq!(
        schema_ok,
        server_ok,
        "{what} {value:?}: schema {} it, server answered {status} {body}",
        if schema_ok { "allows" } else { "refuses" }
    );
}

#[tokio::test]
async fn the_schema_states_the_limits_the_server_enforces() {
    let doc = doc();
    let (app, _dir) = app().await;

    // File paths (ASCII: the schema counts characters, the server bytes).
    let path_schema = param_schema(&doc, "FilePath");
    let long = "a".repeat(255);
    for path in [
        "a",
        "a/b.txt",
        long.as_str(),
        &format!("{long}/b"),
        &"a".repeat(256),
        &format!("x/{}", "b".repeat(256)),
        "./x",
        "x/.",
        "a/../b",
        "..",
        "a//b",
        "a\\b",
        "x\u{7f}y",
        "x\u{85}y",
        "tab\there",
        "sum\u{202E}mary.md",
        "zero\u{200B}width",
        "\u{FEFF}bom",
        "ünï/cödé",
        "a.",
        ".hidden",
        &"ab/".repeat(300),
    ] {
        let uri = format!("/v1/artifacts/ci/tool/1/{}", encode(path));
        let (status, body) = send(&app, Method::GET, &uri, &[], Body::empty()).await;
        agree("path", path, admits(&path_schema, path), status, &body);
    }

    // Version selectors and exact versions.
    let selector = param_schema(&doc, "VersionSelector");
    let exact = param_schema(&doc, "ExactVersion");
    for v in [
        "latest",
        "LATEST",
        "Latest",
        "1.0",
        "1.0+build",
        "-1",
        "a".repeat(128).as_str(),
        &"a".repeat(129),
    ] {
        let (status, body) = send(
            &app,
            Method::GET,
            &format!("/v1/artifacts/ci/tool/{}", encode(v)),
            &[],
            Body::empty(),
        )
        .await;
        agree("version selector", v, admits(&selector, v), status, &body);
        let (status, body) = send(
            &app,
            Method::PUT,
            &format!("/v1/artifacts/ci/tool/{}/f", encode(v)),
            &[],
            Body::from("x"),
        )
        .await;
        agree("exact version", v, admits(&exact, v), status, &body);
    }

    // The version listing's cursor.
    let cursor = param_schema(&doc, "VersionCursor");
    for c in ["", "12", "abc", "1.5", "99999999999999999999"] {
        let (status, body) = send(
            &app,
            Method::GET,
            &format!("/v1/artifacts/ci/tool?cursor={}", encode(c)),
            &[],
            Body::empty(),
        )
        .await;
        if admits(&cursor, c) {
            agree("cursor", c, true, status, &body);
        } else {
            // Narrower than the server is allowed; the values here are refused by both.
            agree("cursor", c, false, status, &body);
        }
    }

    // The declared digest of an upload.
    let digest = &doc["components"]["parameters"]["XArtifactDigest"]["schema"];
    let good = artifactstore_model::Digest::of(b"x").to_string();
    for d in [
        good.as_str(),
        "sha256:ABC",
        &good.to_uppercase(),
        "md5:abc",
        "",
    ] {
        let (status, body) = send(
            &app,
            Method::PUT,
            "/v1/artifacts/ci/digests/1/f",
            &[("x-artifact-digest", d)],
            Body::from("x"),
        )
        .await;
        agree("digest header", d, admits(digest, d), status, &body);
    }

    // Label keys and values.
    let labels = &doc["components"]["schemas"]["Labels"];
    let keys = &labels["propertyNames"];
    let values = &labels["additionalProperties"];
    for (i, (k, v)) in [
        ("branch", "main"),
        ("git.commit", "3f2a"),
        ("a/b", ""),
        ("a b", "x"),
        ("", "x"),
        (&*"k".repeat(128), "x"),
        (&*"k".repeat(129), "x"),
        ("ok", "line\nbreak"),
        ("ok", "c1\u{85}"),
        ("ünï", "x"),
        ("ok", &*"v".repeat(1024)),
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({ "labels": { k: v } }).to_string();
        let uri = format!("/v1/artifacts/ci/labels/{i}");
        send(&app, Method::PUT, &format!("{uri}/f"), &[], Body::from("x")).await;
        let (status, answer) = send(
            &app,
            Method::PATCH,
            &uri,
            &[("content-type", "application/json")],
            Body::from(body),
        )
        .await;
        agree(
            "label",
            &format!("{k:?}={v:?}"),
            admits(keys, k) && admits(values, v),
            status,
            &answer,
        );
    }

    // Event log bounds (with wait=0: a test must not hold a long poll).
    let after = &doc["components"]["parameters"]["After"]["schema"];
    assert_eq!(after["minimum"], 0);
    let limit = &doc["components"]["parameters"]["EventsLimit"]["schema"];
    for n in [0, 1, 5, 1000, 1001] {
        let schema_ok =
            limit["minimum"].as_i64().unwrap() <= n && n <= limit["maximum"].as_i64().unwrap();
        let (status, body) = send(
            &app,
            Method::GET,
            &format!("/v1/events?limit={n}&wait=0"),
            &[],
            Body::empty(),
        )
        .await;
        agree("events limit", &n.to_string(), schema_ok, status, &body);
    }
    for n in [0, 5, i64::MAX] {
        let (status, body) = send(
            &app,
            Method::GET,
            &format!("/v1/events?after={n}&wait=0"),
            &[],
            Body::empty(),
        )
        .await;
        agree("events after", &n.to_string(), true, status, &body);
    }
}

/// Every error code the server can answer is in the document's table and in
/// docs/API.md, spelled as the server spells it.
#[test]
fn every_error_code_is_documented_as_spelled() {
    let doc = doc();
    let description = doc["info"]["description"].as_str().unwrap();
    let api_md = include_str!("../../../docs/API.md");
    for code in ErrorCode::iter() {
        let word = code.as_str();
        assert!(
            description.contains(&format!("| `{word}` |")),
            "{word} missing from the OpenAPI error table"
        );
        assert!(
            api_md.contains(&format!("`{word}`")),
            "{word} missing from docs/API.md"
        );
    }
}
