//! `/openapi.json` describes exactly the routes the router serves.
//!
//! The document is read from the running router, every operation in it is exercised
//! against a freshly seeded store, the documented set of (method, path) pairs is
//! compared with [`ROUTES`], and a series of requests checks that the statuses, headers
//! and JSON bodies that really occur are the documented ones. Every error answer seen
//! by these tests must have the `{"error":{"code","message"}}` shape.

mod support;

use std::collections::BTreeSet;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

use artifactstore_server::error::ErrorCodeTag;

/// Every (method, path) the router in `artifactstore_server::app` serves, in OpenAPI
/// path syntax. A route or method added to the router must be added here and to
/// `openapi.json`. Axum also answers HEAD on every GET route; HEAD is listed (and
/// documented) only where it is part of the API: file and blob downloads.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/admin/gc"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/artifacts"),
    ("GET", "/v1/artifacts/{namespace}"),
    ("GET", "/v1/artifacts/{namespace}/{name}"),
    ("GET", "/v1/artifacts/{namespace}/{name}/{version}"),
    ("PATCH", "/v1/artifacts/{namespace}/{name}/{version}"),
    ("DELETE", "/v1/artifacts/{namespace}/{name}/{version}"),
    (
        "POST",
        "/v1/artifacts/{namespace}/{name}/{version}/complete",
    ),
    ("GET", "/v1/artifacts/{namespace}/{name}/{version}/complete"),
    (
        "HEAD",
        "/v1/artifacts/{namespace}/{name}/{version}/complete",
    ),
    ("PUT", "/v1/artifacts/{namespace}/{name}/{version}/complete"),
    ("GET", "/v1/artifacts/{namespace}/{name}/{version}/{path}"),
    ("HEAD", "/v1/artifacts/{namespace}/{name}/{version}/{path}"),
    ("PUT", "/v1/artifacts/{namespace}/{name}/{version}/{path}"),
    ("GET", "/v1/blobs/{digest}"),
    ("HEAD", "/v1/blobs/{digest}"),
    ("GET", "/v1/events"),
];

const METHODS: &[&str] = &["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"];

const NS: &str = "ci";
const NAME: &str = "tool";
const VERSION: &str = "1.0";
const FILE: &str = "dir/a.txt";
const CONTENT: &[u8] = b"hello";
const COMPLETE_CONTENT: &[u8] = b"a file named complete";
const LABELS: &str = r#"{"labels":{"team":"qa"}}"#;

const FILE_T: &str = "/v1/artifacts/{namespace}/{name}/{version}/{path}";
const COMPLETE_T: &str = "/v1/artifacts/{namespace}/{name}/{version}/complete";
const VERSION_T: &str = "/v1/artifacts/{namespace}/{name}/{version}";
const BLOB_T: &str = "/v1/blobs/{digest}";

// ------------------------------------------------------------------ the service

struct Server {
    app: Router,
    _dir: TempDir,
    /// Digest of `CONTENT`, as the seeding upload reported it.
    digest: String,
}

struct Answer {
    method: Method,
    uri: String,
    status: StatusCode,
    headers: HeaderMap,
    code: Option<&'static str>,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {:?}",
                self.method, self.uri, self.body
            )
        })
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("{} {}: no {name} header", self.method, self.uri))
            .to_str()
            .unwrap()
    }
}

impl Server {
    async fn empty() -> Self {
        let (state, dir) = support::state().await;
        Server {
            app: artifactstore_server::app(state),
            _dir: dir,
            digest: String::new(),
        }
    }

    /// An open version `ci/tool/1.0` holding `dir/a.txt` and a file named `complete`.
    async fn seeded() -> Self {
        let mut s = Self::empty().await;
        let a = s.send(req("PUT", &file_uri(VERSION, FILE), CONTENT)).await;
        assert_eq!(a.status, StatusCode::CREATED);
        s.digest = a.json()["digest"].as_str().unwrap().to_owned();
        let a = s
            .send(req("PUT", &file_uri(VERSION, "complete"), COMPLETE_CONTENT))
            .await;
        assert_eq!(a.status, StatusCode::CREATED);
        s
    }

    /// Sends a request and checks that an error answer has the documented shape.
    async fn send(&self, req: Request<Body>) -> Answer {
        let method = req.method().clone();
        let uri = req.uri().to_string();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let answer = Answer {
            code: parts.extensions.get::<ErrorCodeTag>().map(|c| c.0.as_str()),
            method,
            uri,
            status: parts.status,
            headers: parts.headers,
            body,
        };
        if answer.status.is_client_error() || answer.status.is_server_error() {
            assert_error_shape(&answer);
        } else {
            assert_eq!(
                answer.code, None,
                "{} {}: success with an error code",
                answer.method, answer.uri
            );
        }
        answer
    }
}

fn assert_error_shape(a: &Answer) {
    let code = a.code.unwrap_or_else(|| {
        panic!(
            "{} {}: error {} not made by ApiError: {:?}",
            a.method, a.uri, a.status, a.body
        )
    });
    if a.method == Method::HEAD {
        assert!(
            a.body.is_empty(),
            "{} {}: HEAD answer with a body",
            a.method,
            a.uri
        );
        return;
    }
    assert!(
        a.header(header::CONTENT_TYPE.as_str())
            .starts_with("application/json"),
        "{} {}: error is not JSON",
        a.method,
        a.uri
    );
    let v = a.json();
    let obj = v.as_object().expect("error body is an object");
    assert_eq!(obj.len(), 1, "{} {}: error body {v}", a.method, a.uri);
    let err = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{} {}: error body {v}", a.method, a.uri));
    assert_eq!(err.len(), 2, "{} {}: error body {v}", a.method, a.uri);
    assert_eq!(
        err["code"].as_str(),
        Some(code),
        "{} {}: error body {v}",
        a.method,
        a.uri
    );
    let message = err["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{} {}: error body {v}", a.method, a.uri));
    assert!(!message.is_empty());
}

/// A request as the CLI sends it: POST and PATCH bodies are JSON, and say so.
fn req(method: &str, uri: &str, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if matches!(method, "POST" | "PATCH") {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    b.body(body.into()).unwrap()
}

fn req_with(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.into()).unwrap()
}

fn version_uri(version: &str) -> String {
    format!("/v1/artifacts/{NS}/{NAME}/{version}")
}

fn file_uri(version: &str, path: &str) -> String {
    format!("/v1/artifacts/{NS}/{NAME}/{version}/{path}")
}

// ------------------------------------------------------------------ the document

async fn served_doc() -> Value {
    let s = Server::empty().await;
    let a = s.send(req("GET", "/openapi.json", Body::empty())).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.header("content-type").starts_with("application/json"));
    a.json()
}

/// Follows a local `$ref`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("non-local $ref {r}"));
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}")),
            )
        }
        None => v,
    }
}

/// Every documented (METHOD, path) pair.
fn doc_ops(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (key, _) in item.as_object().unwrap() {
            if matches!(
                key.as_str(),
                "get" | "head" | "put" | "post" | "patch" | "delete" | "options" | "trace"
            ) {
                out.insert((key.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    doc["paths"][path]
        .get(method.to_lowercase())
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
}

/// Parameters of an operation, path-item level ones included, resolved.
fn parameters<'a>(doc: &'a Value, method: &str, path: &str) -> Vec<&'a Value> {
    let item = &doc["paths"][path];
    let op = operation(doc, method, path);
    let mut out: Vec<&Value> = Vec::new();
    for list in [item.get("parameters"), op.get("parameters")]
        .into_iter()
        .flatten()
    {
        for p in list.as_array().unwrap() {
            out.push(resolve(doc, p));
        }
    }
    out
}

/// Checks a real answer against what the document says for its operation: the status
/// is documented, the documented headers are present (and within their enum, if any),
/// and a JSON body matches its schema.
fn check_documented(doc: &Value, path: &str, a: &Answer) {
    let what = format!("{} {} ({path})", a.method, a.uri);
    let op = operation(doc, a.method.as_str(), path);
    let status = a.status.as_u16().to_string();
    let response = op["responses"]
        .get(&status)
        .map(|r| resolve(doc, r))
        .unwrap_or_else(|| panic!("{what}: status {status} is not documented"));
    if let Some(headers) = response.get("headers").and_then(Value::as_object) {
        for (name, h) in headers {
            let h = resolve(doc, h);
            if h["required"] == json!(false) && !a.headers.contains_key(name.as_str()) {
                continue; // documented as conditional
            }
            let value = a
                .headers
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{what}: documented header {name} is missing"))
                .to_str()
                .unwrap();
            if let Some(allowed) = h["schema"].get("enum").and_then(Value::as_array) {
                assert!(
                    allowed.iter().any(|e| e == value),
                    "{what}: {name}: {value:?} not in {allowed:?}"
                );
            }
        }
    }
    match response.get("content").and_then(Value::as_object) {
        None => assert!(a.body.is_empty(), "{what}: undocumented body"),
        Some(content) => {
            assert!(
                a.method != Method::HEAD,
                "{what}: a HEAD answer is documented with a body"
            );
            if let Some(media) = content.get("application/json") {
                assert!(
                    a.header("content-type").starts_with("application/json"),
                    "{what}: not JSON"
                );
                check_schema(doc, &media["schema"], &a.json(), &what, true);
            } else if content.contains_key("text/plain") {
                assert!(
                    a.header("content-type").starts_with("text/plain"),
                    "{what}: not text"
                );
            }
        }
    }
}

/// A small JSON Schema check: types, enums, required and (for `closed`) unknown fields.
/// An object schema that declares `properties` is taken to list every field.
fn check_schema(doc: &Value, schema: &Value, v: &Value, at: &str, closed: bool) {
    let schema = resolve(doc, schema);
    if v.is_null() {
        assert_eq!(
            schema.get("nullable"),
            Some(&json!(true)),
            "{at}: null where the schema does not allow it"
        );
        return;
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for p in parts {
            check_schema(doc, p, v, at, false);
        }
        if closed && v.is_object() {
            let known = all_properties(doc, schema);
            for k in v.as_object().unwrap().keys() {
                assert!(known.contains(k), "{at}: field {k:?} is not documented");
            }
        }
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            other => panic!("{at}: unknown type {other}"),
        };
        assert!(ok, "{at}: {v} is not of type {t}");
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        assert!(allowed.contains(v), "{at}: {v} not in {allowed:?}");
    }
    if let Some(obj) = v.as_object() {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            assert!(
                obj.contains_key(r),
                "{at}: required field {r:?} missing in {v}"
            );
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, field) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check_schema(doc, s, field, &format!("{at}.{k}"), true),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => panic!("{at}: field {k:?} is not documented"),
                    Some(s @ Value::Object(_)) => {
                        check_schema(doc, s, field, &format!("{at}.{k}"), true)
                    }
                    _ => assert!(
                        !(closed && props.is_some()),
                        "{at}: field {k:?} is not documented"
                    ),
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            check_schema(doc, items, item, &format!("{at}[{i}]"), true);
        }
    }
}

fn all_properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = resolve(doc, schema);
    let mut out: BTreeSet<String> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for p in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.extend(all_properties(doc, p));
    }
    out
}

/// Sends `request`, checks the status and error code, and checks the answer against the
/// document's entry for (`request`'s method, `path`).
async fn expect(
    doc: &Value,
    s: &Server,
    path: &str,
    request: Request<Body>,
    status: u16,
    code: Option<&str>,
) -> Answer {
    let a = s.send(request).await;
    assert_eq!(
        a.status.as_u16(),
        status,
        "{} {}: {:?}",
        a.method,
        a.uri,
        a.body
    );
    assert_eq!(a.code, code, "{} {}", a.method, a.uri);
    check_documented(doc, path, &a);
    a
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn served_document_is_openapi_3() {
    let doc = served_doc().await;
    let version = doc["openapi"].as_str().expect("openapi field");
    assert!(version.starts_with("3."), "openapi {version}");
    assert!(doc["info"]["title"].is_string());
    assert!(doc["info"]["version"].is_string());

    // Every $ref resolves.
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(m) => {
                if m.contains_key("$ref") {
                    resolve(doc, v);
                }
                m.values().for_each(|x| walk(doc, x));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(doc, x)),
            _ => {}
        }
    }
    walk(&doc, &doc);

    // Operation ids are unique, and every template variable is a declared path parameter.
    let mut ids = BTreeSet::new();
    for (method, path) in doc_ops(&doc) {
        let op = operation(&doc, &method, &path);
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}: no responses"
        );
        let declared: BTreeSet<&str> = parameters(&doc, &method, &path)
            .into_iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        assert_eq!(declared, in_template, "{method} {path}: path parameters");
    }
}

#[tokio::test]
async fn documented_operations_are_exactly_the_routes() {
    let doc = served_doc().await;
    let documented = doc_ops(&doc);
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routed.len(), ROUTES.len(), "ROUTES has duplicates");
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let not_routed: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        not_routed.is_empty(),
        "documented operations missing from ROUTES: {not_routed:?}"
    );
}

/// Each path of `ROUTES` answers 405 to every method not listed for it (HEAD excepted
/// where GET is served, since axum answers HEAD there), so a method added to the router
/// but not to `ROUTES` fails here.
#[tokio::test]
async fn unlisted_methods_are_not_allowed() {
    let s = Server::seeded().await;
    let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    for path in paths {
        let uri = sample_uri(path, &s.digest);
        let listed: BTreeSet<&str> = ROUTES
            .iter()
            .filter(|(_, p)| *p == path)
            .map(|(m, _)| *m)
            .collect();
        for method in METHODS {
            if listed.contains(method) {
                continue;
            }
            let a = s.send(req(method, &uri, Body::empty())).await;
            if *method == "HEAD" && listed.contains("GET") {
                assert_ne!(a.code, Some("method_not_allowed"), "HEAD {uri}");
                assert_ne!(a.code, Some("route_not_found"), "HEAD {uri}");
                continue;
            }
            assert_eq!(
                a.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri} is served but not in ROUTES"
            );
            assert_eq!(a.code, Some("method_not_allowed"), "{method} {uri}");
            assert!(
                a.headers.contains_key(header::ALLOW),
                "{method} {uri}: no Allow header"
            );
        }
    }
}

fn sample_path_value(name: &str, digest: &str) -> String {
    match name {
        "namespace" => NS.to_owned(),
        "name" => NAME.to_owned(),
        "version" => VERSION.to_owned(),
        "path" => FILE.to_owned(),
        "digest" => digest.to_owned(),
        other => panic!("no sample value for path parameter {other}"),
    }
}

fn sample_uri(path: &str, digest: &str) -> String {
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => sample_path_value(name, digest),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Every documented operation, with every documented query parameter set to a sample
/// value, reaches its handler and succeeds on a seeded store.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let doc = served_doc().await;
    for (method, path) in doc_ops(&doc) {
        let s = Server::seeded().await;
        let mut query = Vec::new();
        for p in parameters(&doc, &method, &path) {
            let name = p["name"].as_str().unwrap();
            match p["in"].as_str().unwrap() {
                "path" => {}
                "query" => query.push(match name {
                    "prefix" | "cursor" => format!("{name}="),
                    "limit" => "limit=10".to_owned(),
                    "after" | "wait" => format!("{name}=0"),
                    // Empty is no filter: labelled listings are checked in browse_api.rs.
                    "label" => "label=".to_owned(),
                    // It takes none of the others: checked in browse_api.rs.
                    "tail" => continue,
                    "inline" => "inline=1".to_owned(),
                    "redirect" => "redirect=0".to_owned(),
                    // Empty is the manifest: the archive is checked in archive.rs.
                    "format" => "format=".to_owned(),
                    other => panic!("{method} {path}: no sample value for query parameter {other}"),
                }),
                "header" => assert_ne!(
                    p["required"],
                    json!(true),
                    "{method} {path}: required header {name}"
                ),
                other => panic!("{method} {path}: parameter in {other}"),
            }
        }
        let mut uri = sample_uri(&path, &s.digest);
        if !query.is_empty() {
            uri = format!("{uri}?{}", query.join("&"));
        }
        let op = operation(&doc, &method, &path);
        let body: Body = match op.get("requestBody").map(|b| resolve(&doc, b)) {
            None => Body::empty(),
            Some(_) if path == "/v1/admin/gc" => Body::from(r#"{"dry_run": true}"#),
            Some(b) if b["content"].get("application/json").is_some() => Body::from(LABELS),
            Some(_) if path.ends_with("/complete") => Body::from(COMPLETE_CONTENT),
            Some(_) => Body::from(CONTENT),
        };
        let a = s.send(req(&method, &uri, body)).await;
        assert_ne!(a.code, Some("route_not_found"), "{method} {uri}");
        assert_ne!(a.code, Some("method_not_allowed"), "{method} {uri}");
        assert!(
            a.status.is_success(),
            "{method} {uri}: {} {:?}",
            a.status,
            a.body
        );
        check_documented(&doc, &path, &a);
    }
}

/// A server that redirects downloads to its blob store answers file and blob GETs 307,
/// as documented.
#[tokio::test]
async fn redirects_to_the_blob_store_are_documented() {
    let doc = served_doc().await;
    let (state, dir) = support::redirecting_state().await;
    let s = Server {
        app: artifactstore_server::app(state),
        _dir: dir,
        digest: artifactstore_model::Digest::of(CONTENT).to_string(),
    };
    for path in [FILE, "complete"] {
        let a = s.send(req("PUT", &file_uri(VERSION, path), CONTENT)).await;
        assert_eq!(a.status, StatusCode::CREATED);
    }
    for (template, uri) in [
        (FILE_T, file_uri(VERSION, FILE)),
        (COMPLETE_T, file_uri(VERSION, "complete")),
        (BLOB_T, format!("/v1/blobs/{}", s.digest)),
    ] {
        let a = s.send(req("GET", &uri, Body::empty())).await;
        assert_eq!(a.status, StatusCode::TEMPORARY_REDIRECT, "{uri}");
        check_documented(&doc, template, &a);
    }
}

#[tokio::test]
async fn errors_and_edge_cases_are_documented() {
    let doc = served_doc().await;
    let d = &doc;
    let s = Server::seeded().await;
    let digest = s.digest.clone();
    let etag = format!("\"{digest}\"");
    let file = file_uri(VERSION, FILE);
    let complete_file = file_uri(VERSION, "complete");
    let blob = format!("/v1/blobs/{digest}");
    let e = Body::empty;

    // Unknown routes and methods.
    let a = s.send(req("GET", "/nope", e())).await;
    assert_eq!(
        (a.status, a.code),
        (StatusCode::NOT_FOUND, Some("route_not_found"))
    );
    let a = s.send(req("GET", "/v1/artifacts/ci/tool/1.0/", e())).await;
    assert_eq!(a.code, Some("route_not_found"));
    let a = s.send(req("DELETE", "/healthz", e())).await;
    assert_eq!(
        (a.status, a.code),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );

    // Operations.
    expect(d, &s, "/healthz", req("GET", "/healthz", e()), 200, None).await;
    expect(d, &s, "/readyz", req("GET", "/readyz", e()), 200, None).await;
    expect(d, &s, "/metrics", req("GET", "/metrics", e()), 200, None).await;

    // Names and queries.
    let ns_t = "/v1/artifacts/{namespace}";
    let name_t = "/v1/artifacts/{namespace}/{name}";
    expect(
        d,
        &s,
        ns_t,
        req("GET", "/v1/artifacts/-bad", e()),
        400,
        Some("invalid_name"),
    )
    .await;
    expect(
        d,
        &s,
        ns_t,
        req("GET", "/v1/artifacts/%FF", e()),
        400,
        Some("invalid_path"),
    )
    .await;
    expect(
        d,
        &s,
        "/v1/artifacts",
        req("GET", "/v1/artifacts?limit=0", e()),
        400,
        Some("invalid_query"),
    )
    .await;
    expect(
        d,
        &s,
        "/v1/artifacts",
        req("GET", "/v1/artifacts?limit=x", e()),
        400,
        Some("invalid_query"),
    )
    .await;
    expect(
        d,
        &s,
        "/v1/artifacts",
        req("GET", "/v1/artifacts?bogus=1", e()),
        400,
        Some("invalid_query"),
    )
    .await;
    expect(
        d,
        &s,
        name_t,
        req("GET", "/v1/artifacts/ci/tool?cursor=zz", e()),
        400,
        Some("invalid_query"),
    )
    .await;
    expect(
        d,
        &s,
        "/v1/events",
        req("GET", "/v1/events?limit=1001", e()),
        400,
        Some("invalid_query"),
    )
    .await;
    expect(
        d,
        &s,
        "/v1/events",
        req("GET", "/v1/events?wait=-1", e()),
        400,
        Some("invalid_query"),
    )
    .await;

    // Reads before any version is complete.
    expect(
        d,
        &s,
        VERSION_T,
        req("GET", &version_uri("latest"), e()),
        404,
        Some("no_complete_version"),
    )
    .await;
    expect(
        d,
        &s,
        VERSION_T,
        req("GET", &version_uri("LATEST"), e()),
        400,
        Some("invalid_name"),
    )
    .await;
    expect(
        d,
        &s,
        VERSION_T,
        req("GET", &version_uri("9.9"), e()),
        404,
        Some("version_not_found"),
    )
    .await;
    let a = expect(
        d,
        &s,
        VERSION_T,
        req("GET", &version_uri(VERSION), e()),
        200,
        None,
    )
    .await;
    assert_eq!(a.header("x-artifact-version"), VERSION);
    assert_eq!(a.json()["state"], "open");
    assert_eq!(a.json()["file_count"], 2);
    expect(
        d,
        &s,
        FILE_T,
        req("GET", &file_uri("latest", FILE), e()),
        404,
        Some("no_complete_version"),
    )
    .await;
    expect(
        d,
        &s,
        FILE_T,
        req("GET", &file_uri(VERSION, "missing"), e()),
        404,
        Some("file_not_found"),
    )
    .await;
    expect(
        d,
        &s,
        FILE_T,
        req("HEAD", &file_uri(VERSION, "missing"), e()),
        404,
        Some("file_not_found"),
    )
    .await;
    expect(
        d,
        &s,
        FILE_T,
        req("GET", &file_uri(VERSION, "a//b"), e()),
        400,
        Some("invalid_path"),
    )
    .await;
    expect(
        d,
        &s,
        FILE_T,
        req("GET", &file_uri(VERSION, &"a".repeat(1025)), e()),
        400,
        Some("invalid_path"),
    )
    .await;
    expect(
        d,
        &s,
        BLOB_T,
        req("GET", "/v1/blobs/sha256:abc", e()),
        400,
        Some("invalid_digest"),
    )
    .await;
    expect(
        d,
        &s,
        BLOB_T,
        req("GET", "/v1/blobs/%FF", e()),
        400,
        Some("invalid_path"),
    )
    .await;
    let unknown = format!("/v1/blobs/sha256:{}", "0".repeat(64));
    expect(
        d,
        &s,
        BLOB_T,
        req("GET", &unknown, e()),
        404,
        Some("blob_not_found"),
    )
    .await;
    expect(
        d,
        &s,
        BLOB_T,
        req("HEAD", &unknown, e()),
        404,
        Some("blob_not_found"),
    )
    .await;

    // Downloads: whole, `/` percent-encoded, ranges, conditional requests.
    let a = expect(d, &s, FILE_T, req("GET", &file, e()), 200, None).await;
    assert_eq!(&a.body[..], CONTENT);
    assert_eq!(a.header("etag"), etag);
    assert_eq!(a.header("cache-control"), "no-cache");
    let a = expect(
        d,
        &s,
        FILE_T,
        req("GET", &file_uri(VERSION, "dir%2Fa.txt"), e()),
        200,
        None,
    )
    .await;
    assert_eq!(&a.body[..], CONTENT);
    let a = expect(d, &s, FILE_T, req("HEAD", &file, e()), 200, None).await;
    assert_eq!(a.header("content-length"), "5");
    let range = [("range", "bytes=1-2")];
    for (t, uri) in [(FILE_T, file.as_str()), (BLOB_T, blob.as_str())] {
        let a = expect(d, &s, t, req_with("GET", uri, &range, e()), 206, None).await;
        assert_eq!(&a.body[..], b"el");
        assert_eq!(a.header("content-range"), "bytes 1-2/5");
        expect(d, &s, t, req_with("HEAD", uri, &range, e()), 206, None).await;
        let a = expect(
            d,
            &s,
            t,
            req_with("GET", uri, &[("range", "bytes=5-")], e()),
            416,
            Some("range_not_satisfiable"),
        )
        .await;
        assert_eq!(a.header("content-range"), "bytes */5");
        expect(
            d,
            &s,
            t,
            req_with("HEAD", uri, &[("range", "bytes=9-")], e()),
            416,
            Some("range_not_satisfiable"),
        )
        .await;
        let a = expect(
            d,
            &s,
            t,
            req_with("GET", uri, &[("range", "bytes=0-1,3-4")], e()),
            200,
            None,
        )
        .await;
        assert_eq!(&a.body[..], CONTENT);
        expect(
            d,
            &s,
            t,
            req_with("GET", uri, &[("if-none-match", &etag)], e()),
            304,
            None,
        )
        .await;
        expect(
            d,
            &s,
            t,
            req_with("HEAD", uri, &[("if-none-match", "*")], e()),
            304,
            None,
        )
        .await;
        expect(
            d,
            &s,
            t,
            req_with("GET", uri, &[("if-none-match", "\"other\"")], e()),
            200,
            None,
        )
        .await;
    }
    let a = expect(
        d,
        &s,
        COMPLETE_T,
        req_with("GET", &complete_file, &range, e()),
        206,
        None,
    )
    .await;
    assert_eq!(&a.body[..], &COMPLETE_CONTENT[1..3]);
    expect(
        d,
        &s,
        COMPLETE_T,
        req("HEAD", &complete_file, e()),
        200,
        None,
    )
    .await;

    // Uploads.
    let bad_digest = [("x-artifact-digest", "sha256:ABC")];
    expect(
        d,
        &s,
        FILE_T,
        req_with("PUT", &file_uri(VERSION, "b"), &bad_digest, "x"),
        400,
        Some("invalid_digest"),
    )
    .await;
    let wrong = format!("sha256:{}", "1".repeat(64));
    let declared = [("x-artifact-digest", wrong.as_str())];
    expect(
        d,
        &s,
        FILE_T,
        req_with("PUT", &file_uri(VERSION, "b"), &declared, "x"),
        400,
        Some("digest_mismatch"),
    )
    .await;
    expect(
        d,
        &s,
        FILE_T,
        req_with("PUT", &file, &declared, "x"),
        409,
        Some("file_conflict"),
    )
    .await;
    expect(
        d,
        &s,
        FILE_T,
        req("PUT", &file, "other content"),
        409,
        Some("file_conflict"),
    )
    .await;
    expect(
        d,
        &s,
        COMPLETE_T,
        req("PUT", &complete_file, "other content"),
        409,
        Some("file_conflict"),
    )
    .await;
    let same = [("x-artifact-digest", digest.as_str())];
    let a = expect(
        d,
        &s,
        FILE_T,
        req_with("PUT", &file, &same, Body::empty()),
        200,
        None,
    )
    .await;
    assert_eq!(a.json()["created"], false);
    let ctype = [("content-type", "")];
    expect(
        d,
        &s,
        FILE_T,
        req_with("PUT", &file_uri(VERSION, "b"), &ctype, "x"),
        400,
        Some("invalid_media_type"),
    )
    .await;
    expect(
        d,
        &s,
        FILE_T,
        req("PUT", &file_uri("latest", "b"), "x"),
        400,
        Some("invalid_name"),
    )
    .await;
    let huge = [("content-length", "100000000000000")];
    expect(
        d,
        &s,
        FILE_T,
        req_with("PUT", &file_uri(VERSION, "b"), &huge, "x"),
        413,
        Some("payload_too_large"),
    )
    .await;
    let typed = [("content-type", "text/markdown")];
    let a = expect(
        d,
        &s,
        FILE_T,
        req_with("PUT", &file_uri(VERSION, "docs/readme.md"), &typed, "# hi"),
        201,
        None,
    )
    .await;
    assert_eq!(a.json()["media_type"], "text/markdown");
    let a = expect(
        d,
        &s,
        FILE_T,
        req("GET", &file_uri(VERSION, "docs/readme.md"), e()),
        200,
        None,
    )
    .await;
    assert_eq!(a.header("content-type"), "text/markdown");
    expect(
        d,
        &s,
        FILE_T,
        req("PUT", &file_uri("0.9", "old.txt"), "old"),
        201,
        None,
    )
    .await;

    // Listings and paging.
    let a = expect(
        d,
        &s,
        name_t,
        req("GET", "/v1/artifacts/ci/tool?limit=1", e()),
        200,
        None,
    )
    .await;
    let page = a.json();
    assert_eq!(page["items"][0]["version"], "0.9");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let a = expect(
        d,
        &s,
        name_t,
        req(
            "GET",
            &format!("/v1/artifacts/ci/tool?limit=1&cursor={cursor}"),
            e(),
        ),
        200,
        None,
    )
    .await;
    assert_eq!(a.json()["items"][0]["version"], VERSION);
    let a = expect(
        d,
        &s,
        "/v1/artifacts",
        req("GET", "/v1/artifacts?prefix=c", e()),
        200,
        None,
    )
    .await;
    assert_eq!(
        a.json(),
        json!({"items": [{"name": "ci"}], "next_cursor": null})
    );
    let a = expect(
        d,
        &s,
        ns_t,
        req("GET", "/v1/artifacts/ci?limit=1", e()),
        200,
        None,
    )
    .await;
    assert_eq!(
        a.json(),
        json!({"items": [{"name": "tool"}], "next_cursor": null,
               "usage": {"bytes": 33, "versions": 2}})
    );

    // Labels.
    let v = version_uri(VERSION);
    expect(
        d,
        &s,
        VERSION_T,
        req("PATCH", &v, e()),
        400,
        Some("invalid_body"),
    )
    .await;
    expect(
        d,
        &s,
        VERSION_T,
        req("PATCH", &v, "{}"),
        400,
        Some("invalid_body"),
    )
    .await;
    expect(
        d,
        &s,
        VERSION_T,
        req("PATCH", &v, r#"{"labels":{},"x":1}"#),
        400,
        Some("invalid_body"),
    )
    .await;
    expect(
        d,
        &s,
        VERSION_T,
        req("PATCH", &v, r#"{"labels":{"bad key":"v"}}"#),
        400,
        Some("invalid_labels"),
    )
    .await;
    expect(
        d,
        &s,
        VERSION_T,
        req("PATCH", &v, vec![b' '; 3 << 20]),
        413,
        Some("payload_too_large"),
    )
    .await;
    expect(
        d,
        &s,
        VERSION_T,
        req("PATCH", &version_uri("2.0"), LABELS),
        404,
        Some("version_not_found"),
    )
    .await;
    expect(
        d,
        &s,
        VERSION_T,
        req("PATCH", &version_uri("latest"), LABELS),
        400,
        Some("invalid_name"),
    )
    .await;
    let a = expect(
        d,
        &s,
        VERSION_T,
        req("PATCH", &v, r#"{"labels":{"a":"1"}}"#),
        200,
        None,
    )
    .await;
    assert_eq!(a.json()["labels"], json!({"a": "1"}));

    // Completion.
    let c = format!("{v}/complete");
    expect(
        d,
        &s,
        COMPLETE_T,
        req("POST", &(version_uri("2.0") + "/complete"), e()),
        404,
        Some("version_not_found"),
    )
    .await;
    expect(
        d,
        &s,
        COMPLETE_T,
        req("POST", &c, "[1]"),
        400,
        Some("invalid_body"),
    )
    .await;
    let a = expect(d, &s, COMPLETE_T, req("POST", &c, LABELS), 200, None).await;
    assert_eq!(a.json()["state"], "complete");
    assert_eq!(a.json()["labels"], json!({"team": "qa"}));
    assert!(a.json()["completed_at"].is_string());
    expect(d, &s, COMPLETE_T, req("POST", &c, e()), 200, None).await;
    expect(
        d,
        &s,
        COMPLETE_T,
        req("POST", &c, r#"{"labels":{"team":"dev"}}"#),
        409,
        Some("version_complete"),
    )
    .await;
    expect(
        d,
        &s,
        VERSION_T,
        req("PATCH", &v, r#"{"labels":{"team":"dev"}}"#),
        409,
        Some("version_complete"),
    )
    .await;
    expect(d, &s, VERSION_T, req("PATCH", &v, LABELS), 200, None).await;
    expect(
        d,
        &s,
        FILE_T,
        req("PUT", &file_uri(VERSION, "late.txt"), "x"),
        409,
        Some("version_complete"),
    )
    .await;
    expect(d, &s, FILE_T, req("PUT", &file, CONTENT), 200, None).await;
    let a = expect(d, &s, FILE_T, req("GET", &file, e()), 200, None).await;
    assert_eq!(
        a.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    let a = expect(
        d,
        &s,
        FILE_T,
        req("GET", &file_uri("latest", FILE), e()),
        200,
        None,
    )
    .await;
    assert_eq!(a.header("cache-control"), "no-cache");
    assert_eq!(a.header("x-artifact-version"), VERSION);
    let a = expect(
        d,
        &s,
        VERSION_T,
        req("GET", &version_uri("latest"), e()),
        200,
        None,
    )
    .await;
    assert_eq!(a.header("x-artifact-version"), VERSION);

    // Deletion.
    expect(
        d,
        &s,
        VERSION_T,
        req("DELETE", &version_uri("3.0"), e()),
        404,
        Some("version_not_found"),
    )
    .await;
    let a = expect(d, &s, VERSION_T, req("DELETE", &v, e()), 200, None).await;
    assert_eq!(a.json()["state"], "deleted");
    assert!(a.json()["deleted_at"].is_string());
    expect(d, &s, VERSION_T, req("DELETE", &v, e()), 200, None).await;
    expect(
        d,
        &s,
        VERSION_T,
        req("GET", &v, e()),
        404,
        Some("version_deleted"),
    )
    .await;
    expect(
        d,
        &s,
        VERSION_T,
        req("GET", &version_uri("latest"), e()),
        404,
        Some("no_complete_version"),
    )
    .await;
    expect(
        d,
        &s,
        FILE_T,
        req("GET", &file, e()),
        404,
        Some("version_deleted"),
    )
    .await;
    expect(
        d,
        &s,
        FILE_T,
        req("PUT", &file, CONTENT),
        409,
        Some("version_deleted"),
    )
    .await;
    expect(
        d,
        &s,
        COMPLETE_T,
        req("PUT", &complete_file, COMPLETE_CONTENT),
        409,
        Some("version_deleted"),
    )
    .await;
    expect(
        d,
        &s,
        COMPLETE_T,
        req("POST", &c, e()),
        409,
        Some("version_deleted"),
    )
    .await;
    expect(
        d,
        &s,
        VERSION_T,
        req("PATCH", &v, LABELS),
        409,
        Some("version_deleted"),
    )
    .await;
    expect(
        d,
        &s,
        BLOB_T,
        req("GET", &blob, e()),
        404,
        Some("blob_not_found"),
    )
    .await;

    // The event log.
    let a = expect(
        d,
        &s,
        "/v1/events",
        req("GET", "/v1/events", e()),
        200,
        None,
    )
    .await;
    let page = a.json();
    let kinds: BTreeSet<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "version.created",
            "file.added",
            "version.completed",
            "version.deleted"
        ])
    );
    let last = page["next_after"].as_i64().unwrap();
    let a = expect(
        d,
        &s,
        "/v1/events",
        req("GET", &format!("/v1/events?after={last}&limit=5"), e()),
        200,
        None,
    )
    .await;
    assert_eq!(a.json(), json!({"events": [], "next_after": last}));
}
