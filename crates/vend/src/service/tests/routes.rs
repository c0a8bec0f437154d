//! The wire-level refusals and the revocation rules, on the same in-process harness.

use super::*;

/// The STS endpoint refuses a token in the URL (it would reach access logs) and
/// answers one in the body with a document the shared STS model reads back.
#[tokio::test]
async fn sts_takes_the_token_only_from_the_body() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let h = harness().await;
    let token = h.token("alice", Duration::from_secs(3600));
    let app = crate::http::app(h.service.clone(), LISTEN);
    let send = |uri: String, body: String| {
        let app = app.clone();
        async move {
            let mut req = axum::http::Request::post(uri)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap();
            req.extensions_mut()
                .insert(ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 9))));
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let reason = resp.headers().get("x-artifactstore-reason").cloned();
            let text = String::from_utf8(
                resp.into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .to_vec(),
            )
            .unwrap();
            (status, reason, text)
        }
    };
    let form = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15";
    let (status, reason, text) =
        send(format!("/?{form}&WebIdentityToken={token}"), String::new()).await;
    assert_eq!(status, 400);
    assert_eq!(reason.unwrap(), "request_invalid");
    let error = artifactstore_credentials::sts_xml::parse_error(&text).unwrap();
    assert_eq!(error.code, "InvalidParameterValue");
    assert!(!text.contains(&token));
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 0, "nothing minted");

    let (status, _, text) = send("/".into(), format!("{form}&WebIdentityToken={token}")).await;
    assert_eq!(status, 200, "{text}");
    let doc = artifactstore_credentials::sts_xml::parse_web_identity_response(&text).unwrap();
    assert!(!doc.result.credentials.access_key_id.is_empty());
    assert_eq!(doc.result.subject.as_deref(), Some("alice"));
}

/// A live lease written straight into the store, as if minted by `driver`.
async fn live_lease(h: &Harness, id: &str, subject: &str, driver: &str) {
    let lease = Lease {
        id: id.into(),
        issuer: ISSUER.into(),
        subject: subject.into(),
        role: "ci-writer".into(),
        driver: driver.into(),
        access_key_id: None,
        issued_at: START,
        expires_at: START.saturating_add(Duration::from_secs(3600)),
        state: LeaseState::Pending,
        ended_at: None,
        end_reason: None,
        break_glass: false,
        break_glass_reason: None,
        break_glass_ticket: None,
    };
    h.service.leases.insert_lease(&lease).await.unwrap();
    assert!(
        h.service
            .leases
            .activate_lease(id, &format!("GK{id}"), lease.expires_at)
            .await
            .unwrap()
    );
}

/// Revoking a subject ends every live lease, page after page, and says how many.
#[tokio::test]
async fn revoking_a_subject_ends_leases_past_any_page_size() {
    let h = harness().await;
    let n = super::revoke::REVOKE_PAGE as usize * 2 + 37;
    for i in 0..n {
        live_lease(&h, &format!("l{i:05}"), "bulk", "fake").await;
    }
    live_lease(&h, "other", "someone-else", "fake").await;
    let outcome = h
        .service
        .revoke(
            &RevokeTarget::Subject {
                issuer: ISSUER.into(),
                subject: "bulk".into(),
            },
            "incident",
            false,
        )
        .await
        .unwrap();
    assert_eq!((outcome.ended, outcome.failed), (n, 0));
    assert_eq!(h.driver.revokes.lock().unwrap().len(), n);
    assert_eq!(
        h.service.leases.live_lease_count().await.unwrap(),
        1,
        "only the other subject's"
    );
}

/// Revocations must name something the service knows, unless forced; a lease whose
/// driver is gone says so instead of trying another cluster.
#[tokio::test]
async fn unknown_targets_are_refused_and_a_gone_driver_is_named() {
    let h = harness().await;
    let unknown_role = RevokeTarget::Role {
        role: "no-such-role".into(),
    };
    let e = h
        .service
        .revoke(&unknown_role, "typo", false)
        .await
        .unwrap_err();
    assert!(matches!(e, RevokeError::UnknownTarget(_)), "{e}");
    assert!(e.to_string().contains("force"), "{e}");
    let unknown_issuer = RevokeTarget::Subject {
        issuer: "https://other.example".into(),
        subject: "alice".into(),
    };
    assert!(matches!(
        h.service.revoke(&unknown_issuer, "typo", false).await,
        Err(RevokeError::UnknownTarget(_))
    ));
    assert!(
        h.service
            .revoke(&unknown_role, "ahead of time", true)
            .await
            .unwrap()
            .standing
    );

    live_lease(&h, "orphan", "bob", "decommissioned-cluster").await;
    let outcome = h
        .service
        .revoke(
            &RevokeTarget::Lease {
                id: "orphan".into(),
            },
            "cleanup",
            false,
        )
        .await
        .unwrap();
    assert_eq!(outcome.failed, 1);
    assert_eq!(outcome.leases[0].upstream, "driver_gone");
    assert!(
        h.driver.revokes.lock().unwrap().is_empty(),
        "no other driver was asked"
    );
}

/// Lifting a revocation gives access back, so it is audited first: with the audit
/// log unwritable the revocation stays.
#[tokio::test]
async fn lifting_a_revocation_fails_closed_without_its_audit_line() {
    let h = harness().await;
    let target = RevokeTarget::Subject {
        issuer: ISSUER.into(),
        subject: "alice".into(),
    };
    h.service.revoke(&target, "incident", false).await.unwrap();
    (h.break_audit())();
    let e = h.service.unrevoke(&target).await.unwrap_err();
    assert!(matches!(e, RevokeError::AuditUnavailable(_)), "{e}");
    assert!(
        h.service
            .leases
            .is_revoked(crate::leases::RevocationKind::Subject, ISSUER, "alice")
            .await
            .unwrap(),
        "still revoked"
    );
    h.mend_audit();
    assert!(h.service.unrevoke(&target).await.unwrap());
    assert!(
        !h.service.unrevoke(&target).await.unwrap(),
        "nothing left to lift"
    );
    assert!(h.events().contains(&"revocation.removed".to_owned()));
}

/// A body over the size limit is refused in the endpoint's own wire format (STS XML,
/// the JSON envelope), never as a plain-text answer no SDK can parse.
#[tokio::test]
async fn oversized_bodies_are_refused_in_the_endpoints_format() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let h = harness().await;
    let app = crate::http::app(h.service.clone(), LISTEN);
    let huge = format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&WebIdentityToken={}",
        "a".repeat(200 * 1024)
    );
    for (uri, ct) in [
        ("/", "application/x-www-form-urlencoded"),
        ("/v1/credentials", "application/json"),
    ] {
        let mut req = axum::http::Request::post(uri)
            .header("content-type", ct)
            .header("authorization", "Bearer x")
            .body(Body::from(huge.clone()))
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 9))));
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        assert_eq!(
            resp.headers()["x-artifactstore-reason"],
            "token_too_large",
            "{uri}"
        );
        let text = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        if uri == "/" {
            assert_eq!(status, 400);
            let e = artifactstore_credentials::sts_xml::parse_error(&text).unwrap();
            assert_eq!(e.code, "InvalidIdentityToken");
            assert!(e.message.starts_with("token_too_large"), "{text}");
        } else {
            assert_eq!(status, 413);
            let e: artifactstore_model::api::ErrorBody = serde_json::from_str(&text).unwrap();
            assert_eq!(e.error.code, "token_too_large");
        }
    }
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 0);
    // Both are audited, through the refusal window of their client: the first STS one
    // as its own line, the JSON one counted on the window's summary.
    h.service.close_all_refusal_windows().await;
    let lines = h.audit_lines();
    let first = lines
        .iter()
        .find(|l| l["event"] == "decision")
        .expect("the oversized STS body is audited");
    assert_eq!(
        (&first["reason"], &first["format"], &first["count"]),
        (&json!("token_too_large"), &json!("sts"), &json!(1))
    );
    let summary = lines
        .iter()
        .find(|l| l["event"] == "refusals.coalesced")
        .unwrap();
    assert_eq!(summary["by_reason"], json!({"token_too_large": 1}));
}

/// One token replayed in a loop cannot mint without end: the subject, and the role,
/// are capped at their live leases; others are not affected, and nothing is minted.
#[tokio::test]
async fn live_leases_are_capped_per_subject_and_per_role() {
    let h = harness_with_limits(crate::config::LeaseLimits {
        per_subject: 3,
        per_role: 5,
    })
    .await;
    for _ in 0..3 {
        h.service.vend(h.request("alice")).await.unwrap();
    }
    let refused = h.service.vend(h.request("alice")).await.unwrap_err();
    assert_eq!(refused.denial.reason, Reason::LeaseLimit);
    assert_eq!(refused.denial.reason.status(), 429);
    assert!(
        refused.denial.message.contains("per_subject = 3"),
        "{}",
        refused.denial.message
    );
    assert_eq!(
        h.driver.mints.load(Ordering::SeqCst),
        3,
        "the refused request minted nothing"
    );

    // Other subjects go on until the role is full.
    h.service.vend(h.request("bob")).await.unwrap();
    h.service.vend(h.request("carol")).await.unwrap();
    let refused = h.service.vend(h.request("dave")).await.unwrap_err();
    assert_eq!(refused.denial.reason, Reason::LeaseLimit);
    assert!(
        refused.denial.message.contains("per_role = 5"),
        "{}",
        refused.denial.message
    );

    // A lease that ends makes room again.
    let alice = h
        .service
        .leases
        .leases(
            &LeaseFilter {
                subject: Some("alice".into()),
                live_only: true,
                ..Default::default()
            },
            1,
        )
        .await
        .unwrap();
    h.service
        .revoke(
            &RevokeTarget::Lease {
                id: alice[0].id.clone(),
            },
            "done",
            false,
        )
        .await
        .unwrap();
    h.service.vend(h.request("dave")).await.unwrap();
    assert!(h.events().iter().any(|e| e == "decision"));
}
