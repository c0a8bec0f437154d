//! Floods through the router: rate limits per client and per subject, the coalesced
//! audit of refusals, the guards, and what `/readyz` tells whom.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::config::RateLimits;

const FLOODER: ([u8; 4], u16) = ([192, 0, 2, 66], 40000);
const LEGIT: ([u8; 4], u16) = ([192, 0, 2, 10], 40001);

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

async fn send(
    app: &Router,
    peer: impl Into<SocketAddr>,
    req: axum::http::request::Builder,
    body: impl Into<Body>,
) -> Answer {
    let mut req = req.body(body.into()).unwrap();
    req.extensions_mut().insert(ConnectInfo(peer.into()));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn json_vend(token: &str) -> axum::http::request::Builder {
    axum::http::Request::post("/v1/credentials")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
}

fn limits(per_client: (f64, u32), per_subject: (f64, u32)) -> RateLimits {
    RateLimits {
        per_client_per_sec: per_client.0,
        per_client_burst: per_client.1,
        per_subject_per_sec: per_subject.0,
        per_subject_burst: per_subject.1,
        ..RateLimits::default()
    }
}

/// The `count`s of the lines that coalesce refusals (a window's opening `decision`
/// line and its `refusals.coalesced` summary).
fn coalesced(lines: &[Value]) -> (usize, u64) {
    let ours: Vec<&Value> = lines.iter().filter(|l| l["count"].is_u64()).collect();
    (
        ours.len(),
        ours.iter().map(|l| l["count"].as_u64().unwrap()).sum(),
    )
}

/// N refusals from one address in one window: a bounded number of audit lines whose
/// counts add up to N; a client at another address is served all along.
#[tokio::test]
async fn a_flood_from_one_address_costs_two_audit_lines_per_window() {
    let h = harness_with(
        crate::config::LeaseLimits::default(),
        limits((10.0, 20), (0.0, 0)),
    )
    .await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let legit = h.token("alice", Duration::from_secs(3600));
    let n = 600u64;
    let mut limited = 0;
    for i in 0..n {
        // Junk tokens, bodies too large and malformed ones: every kind of early refusal.
        let a = match i % 3 {
            0 => send(&app, FLOODER, json_vend("not.a.jwt"), "").await,
            1 => send(&app, FLOODER, json_vend("x"), "a".repeat(100 * 1024)).await,
            _ => {
                let sts = axum::http::Request::post("/")
                    .header("content-type", "application/x-www-form-urlencoded");
                send(&app, FLOODER, sts, "Action=Nope").await
            }
        };
        assert!(a.status.is_client_error(), "{} {}", a.status, a.text);
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            assert!(a.headers.contains_key("retry-after"));
        }
        if i % 100 == 0 {
            let ok = send(&app, LEGIT, json_vend(&legit), "").await;
            assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
        }
    }
    assert_eq!(
        limited,
        n - 20,
        "the burst passes, the rest is rate limited"
    );
    // Only the burst got as far as the token checks.
    let m = crate::metrics::render(&h.service).await;
    assert!(
        m.contains("artifactstore_vend_decisions_total{reason=\"rate_limited\"} 580"),
        "{m}"
    );

    let (lines, counted) = coalesced(&h.audit_lines());
    assert_eq!(lines, 1, "only the window's first line so far");
    assert_eq!(counted, 1);
    // The window passes: its summary carries the rest.
    h.clock.advance(Duration::from_secs(61));
    h.service.close_refusal_windows().await;
    let audit = h.audit_lines();
    let (lines, counted) = coalesced(&audit);
    assert_eq!((lines, counted), (2, n));
    let summary = audit
        .iter()
        .find(|l| l["event"] == "refusals.coalesced")
        .unwrap();
    assert_eq!(summary["client"], "192.0.2.66");
    assert_eq!(summary["by_reason"]["rate_limited"], n - 20);
    // The legitimate client's lines are untouched: an allow and an issue each time.
    let allows = |event: &str| {
        audit
            .iter()
            .filter(|l| l["event"] == event && l["reason"] == "allow")
            .count()
    };
    assert_eq!((allows("decision"), allows("lease.issued")), (6, 6));
}

/// The client limit is taken before the token is looked at: beyond the burst, even
/// valid tokens reach neither the token checks nor the driver.
#[tokio::test]
async fn the_client_limit_comes_before_the_token_checks() {
    let h = harness_with(
        crate::config::LeaseLimits::default(),
        limits((1.0, 3), (0.0, 0)),
    )
    .await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let token = h.token("alice", Duration::from_secs(3600));
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(send(&app, FLOODER, json_vend(&token), "").await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 3);
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 3);
    // Another address has its own bucket.
    assert_eq!(
        send(&app, LEGIT, json_vend(&token), "").await.status,
        StatusCode::OK
    );
}

/// One subject past its burst is refused 429 `rate_limited` with `Retry-After`, in
/// every format (STS: `Throttling`), from any address; another subject is not.
#[tokio::test]
async fn one_subject_is_refused_past_its_burst() {
    let h = harness_with(
        crate::config::LeaseLimits::default(),
        limits((0.0, 0), (0.1, 3)),
    )
    .await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let alice = h.token("alice", Duration::from_secs(3600));
    for _ in 0..3 {
        assert_eq!(
            send(&app, FLOODER, json_vend(&alice), "").await.status,
            StatusCode::OK
        );
    }
    let a = send(&app, LEGIT, json_vend(&alice), "").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
    assert_eq!(a.headers["x-artifactstore-reason"], "rate_limited");
    assert_eq!(a.headers["retry-after"], "10");
    let body: Value = serde_json::from_str(&a.text).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");

    let sts =
        axum::http::Request::post("/").header("content-type", "application/x-www-form-urlencoded");
    let form =
        format!("Action=AssumeRoleWithWebIdentity&Version=2011-06-15&WebIdentityToken={alice}");
    let a = send(&app, LEGIT, sts, form).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text);
    assert!(a.headers.contains_key("retry-after"));
    let error = artifactstore_credentials::sts_xml::parse_error(&a.text).unwrap();
    assert_eq!(error.code, "Throttling");

    let bob = h.token("bob", Duration::from_secs(3600));
    assert_eq!(
        send(&app, LEGIT, json_vend(&bob), "").await.status,
        StatusCode::OK
    );
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 4);
    // The subject's refusals are audited with its verified identity, coalesced.
    let audit = h.audit_lines();
    let limited: Vec<&Value> = audit
        .iter()
        .filter(|l| l["reason"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 1, "{audit:?}");
    assert_eq!(limited[0]["subject"], "alice");
    assert_eq!(limited[0]["identity_verified"], true);
    h.service.close_all_refusal_windows().await;
    assert_eq!(coalesced(&h.audit_lines()).1, 2);
}

/// `/readyz` names each check and says ok or failing to anyone; what failed (an
/// internal URL, an upstream's words, a path) only with the admin token.
#[tokio::test]
async fn readiness_details_are_for_the_admin_only() {
    let h = harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let get = || axum::http::Request::get("/readyz");
    let a = send(&app, LEGIT, get(), "").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    h.driver.fail_check.store(true, Ordering::SeqCst);
    let broken = h.break_audit();
    broken();
    // Past the round of checks the first probe made.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = send(&app, LEGIT, get(), "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_str(&a.text).unwrap();
    assert_eq!(
        body,
        json!({"status": "unready", "checks": {
            "issuers.0": "ok", "drivers.fake": "failing", "audit": "failing", "lease_store": "ok"
        }})
    );
    let path = h.audit_path.display().to_string();
    assert!(
        !a.text.contains("10.9.8.7") && !a.text.contains(&path),
        "{}",
        a.text
    );

    let wrong = send(
        &app,
        LEGIT,
        get().header("authorization", "Bearer nope"),
        "",
    )
    .await;
    assert_eq!(wrong.text, a.text, "a wrong token learns nothing more");
    let admin = send(
        &app,
        LEGIT,
        get().header("authorization", format!("Bearer {ADMIN_TOKEN}")),
        "",
    )
    .await;
    let body: Value = serde_json::from_str(&admin.text).unwrap();
    assert!(
        body["details"]["drivers.fake"]
            .as_str()
            .unwrap()
            .contains("10.9.8.7")
    );
    assert!(body["details"]["audit"].as_str().unwrap().contains(&path));
    h.mend_audit();
}

/// The shared guard on vend: a rebound Host is misdirected (STS XML on the STS
/// route), a foreign Origin's write refused, a listed origin's preflight answered.
#[tokio::test]
async fn vend_refuses_rebound_hosts_and_foreign_origins() {
    let h = harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let token = h.token("alice", Duration::from_secs(3600));
    let a = send(
        &app,
        LEGIT,
        json_vend(&token).header("host", "evil.example:8090"),
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST);
    let body: Value = serde_json::from_str(&a.text).unwrap();
    assert_eq!(body["error"]["code"], "host_not_allowed");
    let sts = axum::http::Request::post("/")
        .header("host", "evil.example")
        .header("content-type", "application/x-www-form-urlencoded");
    let a = send(&app, LEGIT, sts, "").await;
    assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST);
    let error = artifactstore_credentials::sts_xml::parse_error(&a.text).unwrap();
    assert!(
        error.message.starts_with("host_not_allowed"),
        "{}",
        error.message
    );

    let a = send(
        &app,
        LEGIT,
        json_vend(&token)
            .header("host", "127.0.0.1:8090")
            .header("origin", "https://evil.example"),
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(!a.headers.contains_key("access-control-allow-origin"));
    let preflight = || {
        axum::http::Request::options("/v1/credentials")
            .header("host", "127.0.0.1:8090")
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
    };
    let a = send(&app, LEGIT, preflight(), "").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 0);
    // The same origin (a page this host served) and the CLI (no Origin) are served.
    let a = send(
        &app,
        LEGIT,
        json_vend(&token)
            .header("host", "127.0.0.1:8090")
            .header("origin", "http://127.0.0.1:8090"),
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

/// A container-credentials query that does not parse is refused in that endpoint's
/// JSON, not axum's plain text, and audited like every early refusal.
#[tokio::test]
async fn a_malformed_container_query_is_refused_in_json_and_audited() {
    let h = harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let req = axum::http::Request::get("/v1/container-credentials?duration_seconds=soon")
        .header("authorization", "Bearer x");
    let a = send(&app, FLOODER, req, "").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    let body: Value = serde_json::from_str(&a.text).expect("a JSON answer");
    assert!(
        body.get("code").is_some() || body.get("error").is_some(),
        "{body}"
    );
    let audit = h.audit_lines();
    assert!(
        audit
            .iter()
            .any(|l| l["reason"] == "request_invalid" && l["client"] == "192.0.2.66"),
        "{audit:?}"
    );
}

/// A flood of `/readyz` costs the upstreams one round of checks per second, however
/// many probes arrive at once, and a change shows within that second.
#[tokio::test]
async fn a_flood_of_readiness_probes_checks_the_upstream_once_a_second() {
    let h = harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let probes: Vec<_> = (0..200)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                send(&app, FLOODER, axum::http::Request::get("/readyz"), "").await
            })
        })
        .collect();
    for probe in probes {
        let a = probe.await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    }
    assert_eq!(
        h.driver.checks.load(Ordering::SeqCst),
        1,
        "one round for 200 probes"
    );
    h.driver.fail_check.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = send(&app, FLOODER, axum::http::Request::get("/readyz"), "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
    assert_eq!(h.driver.checks.load(Ordering::SeqCst), 2);
}
