//! Break-glass on the in-process harness: every refusal, the rate limits, the capped
//! lease and what its row and audit lines say.

use std::net::SocketAddr;

use super::*;
use crate::service::break_glass::{BreakGlass, BreakGlassRefused, BreakGlassRequest, credential};

const CREDENTIAL: &str = "break-glass-test-credential-0123456789";

/// The harness's service with `[break_glass]` on for `ci-writer` (max 900 s), burst 3
/// per client, 6 globally, one attempt back per second.
async fn break_glass_harness() -> Harness {
    let Harness {
        service,
        driver,
        clock,
        signer,
        audit_path,
        db_url,
        _dir,
    } = harness().await;
    let mut service = Arc::try_unwrap(service).unwrap_or_else(|_| panic!("shared service"));
    let config = crate::config::break_glass::BreakGlassConfig {
        credential_hash_ref: artifactstore_model::secret::SecretRef::parse("env:UNUSED").unwrap(),
        roles: vec!["ci-writer".into()],
        max_duration_secs: 900,
        webhook_url: None,
        webhook_url_ref: None,
        attempts_burst: 3,
        attempts_per_minute: 60.0,
        global_attempts_burst: 6,
        global_attempts_per_minute: 60.0,
    };
    let phc = credential::hash(&Secret::new(CREDENTIAL)).unwrap();
    let hash = credential::CredentialHash::parse(&Secret::new(phc)).unwrap();
    service.break_glass = Some(BreakGlass::new(&config, hash, None).unwrap());
    Harness {
        service: Arc::new(service),
        driver,
        clock,
        signer,
        audit_path,
        db_url,
        _dir,
    }
}

fn attempt(credential: &str, from: u8) -> BreakGlassRequest {
    BreakGlassRequest {
        credential: Some(Secret::new(credential)),
        role: Some("ci-writer".into()),
        reason: Some("issuer down, release blocked".into()),
        ticket: Some("INC-42".into()),
        duration_secs: Some(3600),
        client: Some(SocketAddr::from(([192, 0, 2, from], 5000))),
        malformed: None,
    }
}

fn refusal(r: Result<Issued, BreakGlassRefused>) -> BreakGlassRefused {
    match r {
        Ok(i) => panic!("issued break-glass lease {}", i.lease_id),
        Err(r) => r,
    }
}

fn refused_count(h: &Harness) -> u64 {
    let bg = h.service.break_glass.as_ref().unwrap();
    bg.counters.refused.load(Ordering::Relaxed)
}

#[tokio::test]
async fn break_glass_is_refused_while_off_and_the_attempt_is_critical() {
    let h = harness().await;
    let r = refusal(h.service.break_glass(attempt(CREDENTIAL, 1)).await);
    assert_eq!((r.status, r.code), (404, "break_glass_disabled"));
    let lines = h.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "break_glass.refused");
    assert_eq!(lines[0]["severity"], "critical");
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_missing_empty_or_oversized_reason_is_refused_and_audited() {
    let h = break_glass_harness().await;
    let mut cases = Vec::new();
    for (i, reason) in [
        None,
        Some("   ".to_owned()),
        Some("x".repeat(1025)),
        Some("bell\u{7}".to_owned()),
    ]
    .into_iter()
    .enumerate()
    {
        // Different clients: the per-client bucket is not what is tested here.
        let mut a = attempt(CREDENTIAL, 10 + i as u8);
        a.reason = reason;
        cases.push(refusal(h.service.break_glass(a).await));
    }
    let mut long_ticket = attempt(CREDENTIAL, 20);
    long_ticket.ticket = Some("T".repeat(257));
    cases.push(refusal(h.service.break_glass(long_ticket).await));
    for r in &cases {
        assert_eq!((r.status, r.code), (400, "request_invalid"), "{r:?}");
    }
    assert!(cases[0].message.contains("reason is required"), "{cases:?}");
    let lines = h.audit_lines();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l["event"] == "break_glass.refused"
        && l["severity"] == "critical"
        && l["decision"] == "deny"));
    assert_eq!(refused_count(&h), 5);
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 0);
    assert!(h.leases().await.is_empty());
}

/// Wrong credentials are refused and audited one by one until the client's bucket is
/// empty; then 429, coalesced into one `critical` window line; the bucket refills.
#[tokio::test]
async fn wrong_credentials_are_refused_then_rate_limited() {
    let h = break_glass_harness().await;
    for _ in 0..3 {
        let r = refusal(h.service.break_glass(attempt("wrong-credential", 1)).await);
        assert_eq!((r.status, r.code), (401, "break_glass_credential_invalid"));
    }
    let mut missing = attempt(CREDENTIAL, 2);
    missing.credential = None;
    let r = refusal(h.service.break_glass(missing).await);
    assert_eq!(r.status, 401, "{r:?}");
    let before = h.audit_lines().len();
    assert_eq!(before, 4);
    // The bucket of 192.0.2.1 is empty: even the right credential waits.
    for _ in 0..50 {
        let r = refusal(h.service.break_glass(attempt(CREDENTIAL, 1)).await);
        assert_eq!((r.status, r.code), (429, "rate_limited"));
        assert_eq!(r.retry_after_secs, Some(1));
    }
    let lines = h.audit_lines();
    assert_eq!(lines.len(), before + 1, "50 refusals, one window line");
    let window = &lines[before];
    assert_eq!(window["event"], "break_glass.refused");
    assert_eq!(window["severity"], "critical");
    assert_eq!(window["reason"], "rate_limited");
    // Closing the window writes its summary, critical as well.
    h.service.close_all_refusal_windows().await;
    let summary = h.audit_lines().pop().unwrap();
    assert_eq!(summary["event"], "refusals.coalesced");
    assert_eq!(summary["severity"], "critical");
    assert_eq!(summary["count"], 49);
    assert_eq!(refused_count(&h), 54);
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 0);
    let bg = h.service.break_glass.as_ref().unwrap();
    assert_eq!(
        bg.checks_seen[2].load(Ordering::SeqCst),
        3,
        "no hash check for a missing credential or beyond the bucket"
    );
    // A second later one attempt is back.
    h.clock.advance(Duration::from_secs(1));
    h.service
        .break_glass(attempt(CREDENTIAL, 1))
        .await
        .expect("allowed once the bucket refilled");
}

/// Many addresses share one global bucket.
#[tokio::test]
async fn the_global_bucket_limits_guessing_from_many_addresses() {
    let h = break_glass_harness().await;
    for from in 0..6 {
        let r = refusal(h.service.break_glass(attempt("wrong", 100 + from)).await);
        assert_eq!(r.status, 401);
    }
    let r = refusal(h.service.break_glass(attempt(CREDENTIAL, 200)).await);
    assert_eq!(
        r.status, 429,
        "a fresh address, but the global bucket is empty"
    );
}

#[tokio::test]
async fn the_right_credential_gets_a_capped_break_glass_lease_audited_critical() {
    let h = break_glass_harness().await;
    let issued = h.service.break_glass(attempt(CREDENTIAL, 1)).await.unwrap();
    // 3600 s asked, 900 s (the maximum) given.
    assert_eq!(
        issued.expires_at,
        START.saturating_add(Duration::from_secs(900))
    );
    assert_eq!(issued.role, "ci-writer");
    let lease = h
        .service
        .leases
        .lease(&issued.lease_id)
        .await
        .unwrap()
        .unwrap();
    assert!(lease.break_glass);
    assert_eq!(lease.state, LeaseState::Active);
    assert_eq!(
        lease.break_glass_reason.as_deref(),
        Some("issuer down, release blocked")
    );
    assert_eq!(lease.break_glass_ticket.as_deref(), Some("INC-42"));
    assert_eq!(
        (lease.issuer.as_str(), lease.subject.as_str()),
        ("break-glass", "break-glass")
    );
    assert_eq!(h.events(), ["break_glass.allowed", "lease.issued"]);
    for line in h.audit_lines() {
        assert_eq!(line["severity"], "critical", "{line}");
        assert_eq!(line["lease_id"], issued.lease_id.as_str());
        assert!(
            line["detail"].as_str().unwrap().contains("INC-42"),
            "{line}"
        );
    }
    let text = std::fs::read_to_string(&h.audit_path).unwrap();
    assert!(!text.contains(CREDENTIAL));
    assert!(!text.contains(issued.secret_access_key.expose()));
    let bg = h.service.break_glass.as_ref().unwrap();
    assert_eq!(bg.counters.allowed.load(Ordering::Relaxed), 1);
    // Listed apart.
    let listed = h
        .service
        .leases
        .leases(
            &LeaseFilter {
                break_glass: Some(true),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let normal = h.service.vend(h.request("alice")).await.unwrap();
    let apart = h
        .service
        .leases
        .leases(
            &LeaseFilter {
                break_glass: Some(false),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(apart.len(), 1);
    assert_eq!(apart[0].id, normal.lease_id);
    // And shorter than the role allows is refused, not stretched.
    let mut short = attempt(CREDENTIAL, 2);
    short.duration_secs = Some(60);
    let r = refusal(h.service.break_glass(short).await);
    assert_eq!((r.status, r.code), (400, "duration_out_of_bounds"));
}

#[tokio::test]
async fn roles_outside_the_list_are_refused_even_with_the_credential() {
    let h = break_glass_harness().await;
    for role in [Some("reader".to_owned()), None] {
        let mut a = attempt(CREDENTIAL, 1);
        a.role = role;
        let r = refusal(h.service.break_glass(a).await);
        assert_eq!((r.status, r.code), (403, "role_not_permitted"), "{r:?}");
    }
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 0);
}

/// A standing revocation of the break-glass identity turns the path off.
#[tokio::test]
async fn revoking_the_break_glass_subject_stops_break_glass() {
    let h = break_glass_harness().await;
    h.service
        .revoke(
            &RevokeTarget::Subject {
                issuer: "break-glass".into(),
                subject: "break-glass".into(),
            },
            "drill over",
            true,
        )
        .await
        .unwrap();
    let r = refusal(h.service.break_glass(attempt(CREDENTIAL, 1)).await);
    assert_eq!((r.status, r.code), (403, "subject_revoked"), "{r:?}");
    assert!(h.driver.live_keys().is_empty());
    assert!(h.leases().await.is_empty(), "refused before any lease row");
    let last = h.audit_lines().pop().unwrap();
    assert_eq!(last["event"], "break_glass.refused");
    assert_eq!(last["severity"], "critical");
    assert_eq!(last["reason"], "subject_revoked");
}

/// Every later line about a break-glass lease (here its revocation) is critical too.
#[tokio::test]
async fn a_revoked_break_glass_lease_is_a_critical_line() {
    let h = break_glass_harness().await;
    let issued = h.service.break_glass(attempt(CREDENTIAL, 1)).await.unwrap();
    h.service
        .revoke(
            &RevokeTarget::Lease {
                id: issued.lease_id.clone(),
            },
            "incident closed",
            false,
        )
        .await
        .unwrap();
    assert!(h.driver.live_keys().is_empty(), "the key is gone upstream");
    let revoked: Vec<Value> = h
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "lease.revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["severity"], "critical");
}

/// The route answers the `/v1/credentials` JSON, marked `break_glass`.
#[tokio::test]
async fn the_route_answers_credentials_marked_break_glass() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let h = break_glass_harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let send = |auth: Option<&'static str>, body: &'static str| {
        let app = app.clone();
        async move {
            let mut req = axum::http::Request::post("/v1/break-glass")
                .header("content-type", "application/json");
            if let Some(a) = auth {
                req = req.header("authorization", format!("Bearer {a}"));
            }
            let mut req = req.body(Body::from(body)).unwrap();
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let reason = resp
                .headers()
                .get("x-artifactstore-reason")
                .map(|v| v.to_str().unwrap().to_owned());
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                reason,
                serde_json::from_slice::<Value>(&bytes).unwrap(),
            )
        }
    };
    let (status, reason, body) = send(Some(CREDENTIAL), r#"{"role":"ci-writer"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(reason.as_deref(), Some("request_invalid"));
    let (status, _, body) = send(Some(CREDENTIAL), "not json").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = send(
        Some(CREDENTIAL),
        r#"{"role":"ci-writer","reason":"drill","ticket":"T-1","duration_secs":60000}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["break_glass"], true);
    assert_eq!(body["role"], "ci-writer");
    assert!(
        body["secret_access_key"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(body["expiration"], "2026-12-02T00:15:00Z");
}

/// However many attempts arrive together, at most two hash checks run at once.
#[tokio::test]
async fn hash_checks_run_at_most_two_at_a_time() {
    let h = break_glass_harness().await;
    let attempts = (0..6).map(|from| {
        let service = h.service.clone();
        tokio::spawn(async move { service.break_glass(attempt("wrong", 50 + from)).await })
    });
    for a in attempts.collect::<Vec<_>>() {
        assert_eq!(refusal(a.await.unwrap()).status, 401);
    }
    let bg = h.service.break_glass.as_ref().unwrap();
    let peak = bg.checks_seen[1].load(Ordering::SeqCst);
    assert!(
        (1..=crate::service::break_glass::CONCURRENT_CHECKS).contains(&peak),
        "{peak} checks at once"
    );
}

/// A refused attempt's line says why it was refused and keeps the reason and ticket;
/// the ticket comes first, so a reason long enough to be cut does not take it along.
#[tokio::test]
async fn a_refused_attempt_keeps_its_reason_and_ticket() {
    let h = break_glass_harness().await;
    refusal(h.service.break_glass(attempt("wrong-credential", 1)).await);
    let mut long = attempt("wrong-credential", 2);
    long.reason = Some("r".repeat(crate::service::break_glass::MAX_REASON_CHARS));
    long.ticket = Some("INC-LONG-REASON".into());
    refusal(h.service.break_glass(long).await);
    let mut other_role = attempt(CREDENTIAL, 3);
    other_role.role = Some("reader".into());
    refusal(h.service.break_glass(other_role).await);
    let lines = h.audit_lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let detail = |i: usize| lines[i]["detail"].as_str().unwrap().to_owned();
    assert_eq!(
        detail(0),
        "the break-glass credential is wrong; break-glass ticket: INC-42; reason: issuer down, release blocked"
    );
    assert!(
        detail(1).contains("ticket: INC-LONG-REASON"),
        "{}",
        detail(1)
    );
    assert!(
        detail(2).contains("is not one of break_glass.roles"),
        "{}",
        detail(2)
    );
    assert!(
        detail(2).contains("ticket: INC-42; reason: issuer down"),
        "{}",
        detail(2)
    );
    assert!(lines.iter().all(|l| l["severity"] == "critical"));
}

/// Requests whose clients hang up mid-check do not free their check's place: the
/// check still runs, and at most two run at once whatever comes after.
#[tokio::test]
async fn hang_ups_do_not_lift_the_bound_on_hash_checks() {
    let h = break_glass_harness().await;
    let bg = h.service.break_glass.as_ref().unwrap();
    let start = |from: u8| {
        let service = h.service.clone();
        tokio::spawn(async move { service.break_glass(attempt("wrong", from)).await })
    };
    let hung_up = [start(60), start(61)];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while bg.checks_seen[0].load(Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the checks never started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for request in &hung_up {
        request.abort();
    }
    for request in hung_up {
        assert!(request.await.unwrap_err().is_cancelled());
    }
    let later: Vec<_> = (62..66).map(start).collect();
    for request in later {
        assert_eq!(refusal(request.await.unwrap()).status, 401);
    }
    let peak = bg.checks_seen[1].load(Ordering::SeqCst);
    assert!(
        peak <= crate::service::break_glass::CONCURRENT_CHECKS,
        "{peak} checks at once"
    );
}
