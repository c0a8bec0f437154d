//! The admin routes by identity: `[admin] rules` let verified tokens in, everyone else
//! is refused with the right status, and every call — allowed or not — is audited
//! with who made it, refusals through the coalescing windows.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

const OPERATOR: ([u8; 4], u16) = ([192, 0, 2, 20], 41000);
const WORKLOAD: ([u8; 4], u16) = ([192, 0, 2, 30], 41001);

/// A token of the harness's issuer with these groups.
fn token_with_groups(h: &Harness, sub: &str, groups: &[&str], ttl: Duration) -> String {
    let now = h.clock.now().unix_secs();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "groups": groups,
        "iat": now, "exp": now + ttl.as_secs() as i64,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(&header, &claims, &h.signer).unwrap()
}

fn admin_token(h: &Harness, sub: &str) -> String {
    token_with_groups(h, sub, &["vend-admins"], Duration::from_secs(3600))
}

async fn call(
    app: &Router,
    peer: impl Into<SocketAddr>,
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let mut req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    req.extensions_mut().insert(ConnectInfo(peer.into()));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn admin_calls(h: &Harness) -> Vec<Value> {
    h.audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "admin.call")
        .collect()
}

#[tokio::test]
async fn a_token_of_the_admin_group_may_call_and_is_audited_by_name() {
    let h = harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    h.service.vend(h.request("alice")).await.unwrap();
    let operator = admin_token(&h, "ops-anna");
    let (status, body) = call(
        &app,
        OPERATOR,
        "GET",
        "/v1/admin/leases?subject=alice",
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["leases"].as_array().unwrap().len(), 1);
    let lines = admin_calls(&h);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["actor"], format!("{ISSUER} ops-anna"));
    assert_eq!(lines[0]["identity_verified"], true);
    assert_eq!(lines[0]["detail"], "GET /v1/admin/leases?subject=alice");
    assert_eq!(lines[0]["client"], "192.0.2.20:41000");
    assert!(
        !std::fs::read_to_string(&h.audit_path)
            .unwrap()
            .contains(&operator),
        "the token itself is never written"
    );

    // The admin token is an actor of its own.
    let (status, _) = call(
        &app,
        OPERATOR,
        "GET",
        "/v1/admin/leases",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(admin_calls(&h)[1]["actor"], "admin-token");
}

#[tokio::test]
async fn a_workload_token_is_forbidden_and_a_bad_one_unauthorized_both_audited() {
    let h = harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let workload = h.token("build-42", Duration::from_secs(3600));
    let (status, body) = call(
        &app,
        WORKLOAD,
        "GET",
        "/v1/admin/leases",
        Some(&workload),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no [admin] rules entry matches"),
        "{message}"
    );
    assert!(body["request_id"].is_string(), "{body}");
    let lines = admin_calls(&h);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["decision"], "deny");
    assert_eq!(lines[0]["reason"], "forbidden");
    assert_eq!(lines[0]["actor"], format!("{ISSUER} build-42"));
    assert_eq!(lines[0]["identity_verified"], true);

    // Expired (beyond the leeway): 401, audited under the token's own reason, with
    // the identity it claimed marked unverified.
    let expired = admin_token(&h, "ops-old");
    h.clock.advance(Duration::from_secs(3600 + 120));
    let (status, body) = call(
        &app,
        OPERATOR,
        "POST",
        "/v1/admin/revocations",
        Some(&expired),
        Some(json!({"kind": "role", "role": "ci-writer", "reason": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token_expired"),
        "{body}"
    );
    let lines = admin_calls(&h);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["reason"], "token_expired");
    assert_eq!(lines[1]["identity_verified"], false);
    assert_eq!(lines[1]["subject"], "ops-old");
    assert!(lines[1].get("actor").is_none(), "no verified actor");
    assert!(
        !h.service
            .leases
            .is_revoked(crate::leases::RevocationKind::Role, "", "ci-writer")
            .await
            .unwrap(),
        "nothing was revoked"
    );

    // Neither a bearer nor a JWT: 401.
    for bearer in [None, Some("not-a-token")] {
        let (status, body) = call(&app, WORKLOAD, "GET", "/v1/admin/leases", bearer, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

/// A flood of refused admin calls from one client costs two lines per window (the
/// first and a summary whose count adds up), whatever the number of calls.
#[tokio::test]
async fn refused_admin_calls_are_coalesced_per_window() {
    let h = harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let workload = h.token("build-42", Duration::from_secs(3600));
    for i in 0..60 {
        let bearer = if i % 2 == 0 {
            workload.clone()
        } else {
            format!("guess-{i}")
        };
        let (status, _) = call(
            &app,
            WORKLOAD,
            "GET",
            "/v1/admin/leases",
            Some(&bearer),
            None,
        )
        .await;
        assert!(status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED);
    }
    h.service.close_all_refusal_windows().await;
    let lines = h.audit_lines();
    assert!(
        lines.len() <= 4,
        "two windows (the client, the verified subject): {lines:?}"
    );
    let counted: u64 = lines.iter().filter_map(|l| l["count"].as_u64()).sum();
    assert_eq!(counted, 60, "{lines:?}");
}

#[tokio::test]
async fn revocations_by_an_admin_identity_name_it_and_revoked_subjects_lose_admin_access() {
    let h = harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let operator = admin_token(&h, "ops-anna");
    let (status, body) = call(
        &app,
        OPERATOR,
        "POST",
        "/v1/admin/revocations",
        Some(&operator),
        Some(json!({"kind": "subject", "issuer": ISSUER, "subject": "ops-ben", "reason": "left the team"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["audited"], true);
    let added = h
        .audit_lines()
        .into_iter()
        .find(|l| l["event"] == "revocation.added")
        .unwrap();
    assert_eq!(added["actor"], format!("{ISSUER} ops-anna"));
    let calls = admin_calls(&h);
    assert_eq!(
        calls[0]["detail"],
        format!(
            "POST /v1/admin/revocations Subject {{ issuer: \"{ISSUER}\", subject: \"ops-ben\" }}: left the team"
        )
    );

    // ops-ben still holds the group, but his subject is revoked.
    let ben = admin_token(&h, "ops-ben");
    let (status, body) = call(&app, OPERATOR, "GET", "/v1/admin/leases", Some(&ben), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );

    let (status, body) = call(
        &app,
        OPERATOR,
        "DELETE",
        "/v1/admin/revocations",
        Some(&operator),
        Some(json!({"kind": "subject", "issuer": ISSUER, "subject": "ops-ben"})),
    )
    .await;
    assert_eq!((status, &body["removed"]), (StatusCode::OK, &json!(true)));
    let removed = h
        .audit_lines()
        .into_iter()
        .find(|l| l["event"] == "revocation.removed")
        .unwrap();
    assert_eq!(removed["actor"], format!("{ISSUER} ops-anna"));
    let (status, _) = call(&app, OPERATOR, "GET", "/v1/admin/leases", Some(&ben), None).await;
    assert_eq!(status, StatusCode::OK);
}

/// While the audit log cannot be written an operator can still look (incidents are
/// when it matters); the missing line is counted as an audit failure.
#[tokio::test]
async fn lease_reads_are_answered_while_the_audit_log_cannot_be_written() {
    let h = harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    (h.break_audit())();
    let failures = || {
        h.service
            .audit
            .failures
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = failures();
    let (status, body) = call(
        &app,
        OPERATOR,
        "GET",
        "/v1/admin/leases",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(failures(), before + 1, "the unwritten line is counted");
    h.mend_audit();
}

#[tokio::test]
async fn lease_queries_filter_and_refuse_bad_values() {
    let h = harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let alice = h.service.vend(h.request("alice")).await.unwrap();
    h.service.vend(h.request("bob")).await.unwrap();
    h.service
        .revoke(
            &RevokeTarget::Lease {
                id: alice.lease_id.clone(),
            },
            "test",
            false,
        )
        .await
        .unwrap();
    let ids = |body: &Value| -> Vec<String> {
        body["leases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    let operator = admin_token(&h, "ops-anna");
    for (query, want) in [
        ("state=revoked", vec!["alice"]),
        ("state=active", vec!["bob"]),
        ("live=true", vec!["bob"]),
        ("driver=fake&break_glass=false&subject=bob", vec!["bob"]),
        ("break_glass=true", vec![]),
        ("expiring_before=2026-12-02T00%3A14%3A00Z", vec![]),
        (
            "expiring_before=2026-12-02T00%3A16%3A00Z",
            vec!["alice", "bob"],
        ),
        (
            "role=ci-writer&issuer=https%3A%2F%2Fissuer.test&subject=alice",
            vec!["alice"],
        ),
    ] {
        let (status, body) = call(
            &app,
            OPERATOR,
            "GET",
            &format!("/v1/admin/leases?{query}"),
            Some(&operator),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        let mut got = ids(&body);
        got.sort();
        assert_eq!(got, want, "{query}");
    }
    let (_, body) = call(
        &app,
        OPERATOR,
        "GET",
        "/v1/admin/leases?limit=1",
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(body["leases"].as_array().unwrap().len(), 1);
    let (status, body) = call(
        &app,
        OPERATOR,
        "GET",
        "/v1/admin/leases?state=alive",
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "request_invalid");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("state must be one of"),
        "{body}"
    );
    // A caller who may not learns nothing from the query's errors.
    let workload = h.token("build-42", Duration::from_secs(3600));
    let (status, _) = call(
        &app,
        WORKLOAD,
        "GET",
        "/v1/admin/leases?state=alive",
        Some(&workload),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// With the token alone, a valid OIDC token is not even verified; with neither, the
/// admin API is off.
#[tokio::test]
async fn rules_are_the_only_way_in_for_tokens_and_neither_means_off() {
    let mut h = harness().await;
    Arc::get_mut(&mut h.service).unwrap().admin_rules.clear();
    let app = crate::http::app(h.service.clone(), LISTEN);
    let operator = admin_token(&h, "ops-anna");
    let (status, body) = call(
        &app,
        OPERATOR,
        "GET",
        "/v1/admin/leases",
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["message"], "the admin token is wrong");
    drop(app);

    let service = Arc::get_mut(&mut h.service).unwrap();
    service.admin_token = None;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let (status, body) = call(
        &app,
        OPERATOR,
        "GET",
        "/v1/admin/leases",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "admin_disabled");
}
