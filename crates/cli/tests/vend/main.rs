//! The vending service end to end: a real OIDC issuer, the real binary, Garage from
//! the S3 fixture, Ceph RGW's STS, unmodified boto3, moto's STS in auth mode.

mod admin;
mod audit_chain;
mod break_glass;
mod ceph;
#[path = "../common/mod.rs"]
mod common;
mod crash;
mod flood;
mod helpers;
mod listener_limits;
mod live;
mod rotation;

use std::time::Duration;

use helpers::*;
use serde_json::{Value, json};

fn garage_setup(extra: &str, env: &[(&str, &str)]) -> VendSetup<'static> {
    VendSetup {
        example: "examples/vend-garage.toml",
        extra: extra.to_owned(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        listen: None,
    }
}

/// A role whose prefix is templated from `sub`, for the prefix-widening attacks.
const SCOPED_ROLE: &str = r#"
[[roles]]
name = "scoped"
driver = "garage"
bucket = "${env:ARTIFACTSTORE_VEND_BUCKET}"
prefixes = ["ci/${sub}/"]
bucket_wide = true
actions = ["read", "list"]
rules = [{ groups = { contains = "scoped" } }]
"#;

#[test]
fn token_attacks_are_refused_with_their_reason_an_audit_line_and_no_lease() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let Some(mut impostor) = Issuer::start() else {
        return;
    };
    // An issuer configured by JWKS URL whose key set holds a symmetric key, which
    // must never verify anything.
    let oct_secret = b"a-shared-secret-that-must-not-work";
    let oct_issuer = "http://127.0.0.1:1/oct-issuer";
    let oct_jwks = serve_static_json(json!({"keys": [
        {"kty": "oct", "kid": "hmac-key", "alg": "HS256", "k": base64_url(oct_secret)}
    ]}));
    let extra = format!(
        "{SCOPED_ROLE}\n[[issuers]]\nissuer = \"{oct_issuer}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"{oct_jwks}\"\n"
    );
    // The [[issuers]] table appended after [[roles]] is still a top-level array. A
    // short audit window, so that the refusals' summary is written within the test.
    let extra = format!("{extra}\n[rate_limits]\naudit_window_secs = 1\n");
    let vend = Vend::start(&issuer, None, garage_setup(&extra, &[]));

    let good = issuer.token(writer_claims("attack-victim"));
    let good_payload = payload_of(&good);
    let now = now();
    let jwks = issuer.jwks();
    let rsa_public = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "rs256-key")
        .unwrap()
        .to_string();

    let mut tampered_payload = good_payload.clone();
    tampered_payload["groups"] = json!(["artifact-writers", "admins"]);
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let forged = craft(&json!({}), &tampered_payload, |_| Vec::new());
        let forged_payload = forged.split('.').nth(1).unwrap().to_owned();
        format!("{}.{forged_payload}.{}", parts[0], parts[2])
    };

    let attacks: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            craft(
                &json!({"alg": "none", "typ": "JWT", "kid": "rs256-key"}),
                &good_payload,
                |_| Vec::new(),
            ),
            "token_invalid",
        ),
        (
            "HS256 signed with the issuer's public key",
            craft(
                &json!({"alg": "HS256", "typ": "JWT", "kid": "rs256-key"}),
                &good_payload,
                hs256(rsa_public.as_bytes()),
            ),
            "token_invalid",
        ),
        (
            "unknown kid",
            issuer.token_with(
                writer_claims("attack-victim"),
                "RS256",
                Some(json!({"kid": "not-a-published-key"})),
            ),
            "token_invalid",
        ),
        (
            "HS256 with the JWKS oct key",
            craft(
                &json!({"alg": "HS256", "typ": "JWT", "kid": "hmac-key"}),
                &json!({"iss": oct_issuer, "aud": AUDIENCE, "sub": "x", "exp": now + 600, "groups": ["artifact-writers"]}),
                hs256(oct_secret),
            ),
            "token_invalid",
        ),
        (
            "RS256 header naming the JWKS oct key",
            craft(
                &json!({"alg": "RS256", "typ": "JWT", "kid": "hmac-key"}),
                &json!({"iss": oct_issuer, "aud": AUDIENCE, "sub": "x", "exp": now + 600, "groups": ["artifact-writers"]}),
                hs256(oct_secret),
            ),
            "token_invalid",
        ),
        ("tampered payload", tampered, "token_invalid"),
        (
            "expired",
            issuer.token(json!({"sub": "s", "aud": AUDIENCE, "groups": ["artifact-writers"], "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600})),
            "token_expired",
        ),
        (
            "nbf beyond the leeway",
            issuer.token(json!({"sub": "s", "aud": AUDIENCE, "groups": ["artifact-writers"], "nbf": now + 600})),
            "token_not_yet_valid",
        ),
        (
            "wrong iss",
            issuer.token(json!({"sub": "s", "aud": AUDIENCE, "groups": ["artifact-writers"], "iss": "https://evil.example"})),
            "issuer_untrusted",
        ),
        (
            "wrong aud",
            issuer.token(json!({"sub": "s", "aud": "some-other-service", "groups": ["artifact-writers"]})),
            "audience_mismatch",
        ),
        (
            "missing aud",
            issuer.token(json!({"sub": "s", "aud": null, "groups": ["artifact-writers"]})),
            "audience_mismatch",
        ),
        (
            "untrusted issuer copying the trusted iss",
            impostor.token(json!({"sub": "s", "aud": AUDIENCE, "groups": ["artifact-writers"], "iss": issuer.url})),
            "token_invalid",
        ),
        ("oversized token", format!("{good}{}", "A".repeat(20_000)), "token_too_large"),
        (
            "prefix claim with ../",
            issuer.token(json!({"sub": "../other-team", "aud": AUDIENCE, "groups": ["scoped"]})),
            "claim_invalid",
        ),
        (
            "prefix claim with *",
            issuer.token(json!({"sub": "*", "aud": AUDIENCE, "groups": ["scoped"]})),
            "claim_invalid",
        ),
    ];
    impostor.stop();

    for (name, token, want) in &attacks {
        let (status, body, reason) = vend.credentials(token, json!({}));
        assert_eq!(reason, *want, "{name}: {status} {body}");
        assert_eq!(body["error"]["code"], *want, "{name}: {body}");
        assert!((400..500).contains(&status), "{name}: {status}");
        assert!(
            !body.to_string().contains(token.as_str()),
            "{name}: token echoed"
        );
        // The STS wire format refuses it the same way.
        let (status, xml) = vend.sts(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("WebIdentityToken", token),
        ]);
        assert!((400..500).contains(&status), "{name}: {status} {xml}");
        assert!(xml.contains("<ErrorResponse"), "{xml}");
        assert!(xml.contains(&format!("<Message>{want}:")), "{name}: {xml}");
        let code = if *want == "token_expired" {
            "ExpiredTokenException"
        } else {
            "InvalidIdentityToken"
        };
        assert!(
            xml.contains(&format!("<Code>{code}</Code>")),
            "{name}: {xml}"
        );
    }

    assert!(vend.leases().is_empty(), "a refused token left a lease");
    // Tokens that do not verify are audited per window and client (docs/VEND.md,
    // "Coalesced audit of refusals"): the first as its own line, the rest counted by
    // reason on the window's summary once it has passed. Refusals of a verified
    // identity keep a line each.
    let unverified: Vec<&str> = attacks
        .iter()
        .map(|(_, _, want)| *want)
        .filter(|want| *want != "claim_invalid")
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    // The test's own admin calls (`vend.leases()`) have lines of their own.
    let lines: Vec<Value> = vend
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] != "audit.genesis" && l["event"] != "admin.call")
        .collect();
    assert_eq!(lines[0]["reason"], unverified[0], "{}", lines[0]);
    let counted: u64 = lines.iter().filter_map(|l| l["count"].as_u64()).sum();
    assert_eq!(counted, unverified.len() as u64 * 2, "{lines:?}");
    let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
    for line in &lines {
        assert_eq!(line["decision"], "deny", "{line}");
        assert!(line.get("lease_id").is_none());
        assert!(line["request_id"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1"));
        if line["event"] == "decision" && line["count"] == 1 {
            *by_reason
                .entry(line["reason"].as_str().unwrap().into())
                .or_default() += 1;
        }
        for (reason, n) in line["by_reason"].as_object().into_iter().flatten() {
            *by_reason.entry(reason.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    for want in &unverified {
        let n = unverified.iter().filter(|w| *w == want).count() as u64 * 2;
        assert_eq!(by_reason[*want], n, "{want}: {by_reason:?}");
    }
    let verified: Vec<&Value> = lines
        .iter()
        .filter(|l| l["identity_verified"] == true)
        .collect();
    assert_eq!(
        verified.len(),
        4,
        "two claim_invalid attacks, two formats each"
    );
    assert!(verified.iter().all(|l| l["reason"] == "claim_invalid"));
    let audit_text = std::fs::read_to_string(&vend.audit).unwrap();
    let logs = vend.logs();
    for (name, token, _) in &attacks {
        let signature = token.rsplit('.').next().unwrap();
        for (what, text) in [("audit", &audit_text), ("logs", &logs)] {
            assert!(!text.contains(token.as_str()), "{name}: token in {what}");
            if signature.len() > 16 {
                assert!(!text.contains(signature), "{name}: signature in {what}");
            }
        }
    }
    let out = run_cli(&["vend", "audit", "verify", vend.audit.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[test]
fn roles_durations_policies_and_revocations_are_decided_before_anything_is_minted() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let vend = Vend::start(&issuer, None, garage_setup("", &[]));
    let writer = issuer.token(writer_claims("repo:acme/app"));
    let reader =
        issuer.token(json!({"sub": "dash", "aud": AUDIENCE, "groups": ["artifact-readers"]}));
    let nobody = issuer.token(json!({"sub": "x", "aud": AUDIENCE, "groups": ["other"]}));

    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("no role matches", &nobody, json!({}), "no_matching_role"),
        (
            "reader asks for ci-writer",
            &reader,
            json!({"role": "ci-writer"}),
            "role_not_permitted",
        ),
        (
            "ARN of a role the token does not match",
            &reader,
            json!({"role": "arn:aws:iam::000000000000:role/ci-writer"}),
            "role_not_permitted",
        ),
        (
            "unknown role",
            &writer,
            json!({"role": "admin"}),
            "role_not_permitted",
        ),
        (
            "too short",
            &writer,
            json!({"duration_seconds": 899}),
            "duration_out_of_bounds",
        ),
        (
            "too long",
            &writer,
            json!({"duration_seconds": 3601}),
            "duration_out_of_bounds",
        ),
        (
            "a policy that narrows prefixes Garage cannot enforce",
            &writer,
            json!({"policy": "{\"Statement\":{\"Effect\":\"Allow\",\"Action\":\"s3:GetObject\",\"Resource\":\"arn:aws:s3:::artifacts/ci/*\"}}"}),
            "policy_invalid",
        ),
        (
            "a policy splitting the read/list pair Garage grants together",
            &writer,
            json!({"policy": "{\"Statement\":{\"Effect\":\"Allow\",\"Action\":\"s3:GetObject\",\"Resource\":\"*\"}}"}),
            "policy_invalid",
        ),
        (
            "a malformed policy",
            &writer,
            json!({"policy": "{"}),
            "policy_invalid",
        ),
        // Everything checks out; only the upstream (a closed port here) fails.
        (
            "upstream down",
            &writer,
            json!({"role": "ci-writer"}),
            "upstream_unavailable",
        ),
    ];
    for (name, token, body, want) in &cases {
        let (status, answer, reason) = vend.credentials(token, body.clone());
        assert_eq!(reason, *want, "{name}: {status} {answer}");
    }
    // The STS shape of a duration refusal.
    let (status, xml) = vend.sts(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("WebIdentityToken", &writer),
        ("DurationSeconds", "100"),
        ("RoleArn", "arn:aws:iam::000000000000:role/ci-writer"),
    ]);
    assert_eq!(status, 400, "{xml}");
    assert!(xml.contains("<Code>InvalidParameterValue</Code>"), "{xml}");
    let (status, xml) = vend.sts(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
    ]);
    assert_eq!(status, 400);
    assert!(xml.contains("<Code>MissingParameter</Code>"), "{xml}");

    // The upstream failure left a failed lease, never an active one.
    let leases = vend.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0]["state"], "failed");

    // Revoking a subject refuses it at once; lifting the revocation restores it.
    let target = json!({"kind": "subject", "issuer": issuer.url, "subject": "repo:acme/app", "reason": "incident 42"});
    let (status, body) = vend.admin("POST", "/v1/admin/revocations", Some(target.clone()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["standing"], true);
    let (_, _, reason) = vend.credentials(&writer, json!({}));
    assert_eq!(reason, "subject_revoked");
    let (status, body) = vend.admin("DELETE", "/v1/admin/revocations", Some(target));
    assert_eq!((status, &body["removed"]), (200, &json!(true)), "{body}");
    let (_, _, reason) = vend.credentials(&writer, json!({}));
    assert_eq!(reason, "upstream_unavailable");

    // The admin API wants its token, before it looks at a body.
    let url = format!("{}/v1/admin/leases", vend.url);
    let (status, _) = get_text(&url);
    assert_eq!(status, 401);
    let url = format!("{}/v1/admin/revocations", vend.url);
    let status = common::block_on(async move {
        reqwest::Client::new()
            .delete(url)
            .body("not json")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 401);

    // PolicyArns cannot narrow here: refused, not ignored.
    let (status, xml) = vend.sts(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("WebIdentityToken", &writer),
        (
            "PolicyArns.member.1.arn",
            "arn:aws:iam::aws:policy/ReadOnly",
        ),
    ]);
    assert_eq!(status, 400, "{xml}");
    assert!(
        xml.contains("<Code>MalformedPolicyDocument</Code>"),
        "{xml}"
    );

    let out = run_cli(&["vend", "audit", "verify", vend.audit.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn keys_are_cached_refreshed_at_most_every_30_s_and_kept_when_the_issuer_is_down() {
    let Some(mut issuer) = Issuer::start() else {
        return;
    };
    let vend = Vend::start(&issuer, None, garage_setup("", &[]));
    let refreshes = |vend: &Vend| -> u64 {
        let (_, m) = get_text(&format!("{}/metrics", vend.url));
        m.lines()
            .filter(|l| l.starts_with("artifactstore_vend_jwks_refreshes_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    };
    let before = refreshes(&vend);
    for i in 0..5 {
        let t = issuer.token_with(
            writer_claims("k"),
            "RS256",
            Some(json!({"kid": format!("rotated-{i}")})),
        );
        assert_eq!(vend.credentials(&t, json!({})).2, "token_invalid");
    }
    assert!(
        refreshes(&vend) - before <= 1,
        "unknown kids must not make the service hammer the issuer"
    );
    // Every algorithm the issuer publishes verifies.
    for alg in ["RS256", "ES256", "EdDSA"] {
        let t = issuer.token_with(writer_claims("k"), alg, None);
        assert_eq!(
            vend.credentials(&t, json!({})).2,
            "upstream_unavailable",
            "{alg}"
        );
    }
    let valid = issuer.token(writer_claims("k"));
    issuer.stop();
    std::thread::sleep(Duration::from_millis(200));
    // The issuer is gone: the cached keys still verify its tokens.
    let (_, body, reason) = vend.credentials(&valid, json!({}));
    assert_eq!(reason, "upstream_unavailable", "{body}");
    let (status, text) = get_text(&format!("{}/readyz", vend.url));
    assert_eq!(status, 503);
    assert!(text.contains(r#""drivers.garage":"failing""#), "{text}");
}

#[test]
fn readiness_names_an_issuer_whose_keys_cannot_be_loaded() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let extra = format!(
        "\n[[issuers]]\nissuer = \"http://127.0.0.1:9/nobody\"\naudience = \"{AUDIENCE}\"\n"
    );
    let vend = Vend::spawn(&issuer, None, garage_setup(&extra, &[]));
    std::thread::sleep(Duration::from_millis(500));
    let (status, text) = get_text(&format!("{}/readyz", vend.url));
    assert_eq!(status, 503);
    // To anyone: which check fails; what failed only to the admin, and in the log.
    assert!(text.contains(r#""issuers.1":"failing""#), "{text}");
    assert!(!text.contains("127.0.0.1:9"), "{text}");
    let url = format!("{}/readyz", vend.url);
    let admin = vend.admin_token.clone();
    let details: Value = crate::common::block_on(async move {
        let r = reqwest::Client::new().get(url).bearer_auth(admin);
        r.send().await.unwrap().json().await.unwrap()
    });
    let detail = details["details"]["issuers.1"].as_str().unwrap_or_default();
    assert!(
        detail.contains("issuer http://127.0.0.1:9/nobody: keys not loaded"),
        "{details}"
    );
    assert!(vend.logs().contains("keys not loaded"));
    // The issuer that answers is served all the same.
    let t = issuer.token(writer_claims("k"));
    assert_eq!(vend.credentials(&t, json!({})).2, "upstream_unavailable");
}

#[test]
fn a_role_bound_to_its_token_never_outlives_it() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let extra = r#"
[[roles]]
name = "bounded"
driver = "garage"
bucket = "${env:ARTIFACTSTORE_VEND_BUCKET}"
actions = ["read", "list"]
bound_to_token = true
rules = [{ groups = { contains = "bounded" } }]
"#;
    let vend = Vend::start(&issuer, None, garage_setup(extra, &[]));
    let token = |left: i64| {
        issuer.token(json!({"sub": "bounded-job", "aud": AUDIENCE, "groups": ["bounded"], "exp": now() + left}))
    };
    // Asking for longer than the token lives is refused, not silently shortened.
    let (_, body, reason) = vend.credentials(&token(1200), json!({"duration_seconds": 3600}));
    assert_eq!(reason, "duration_out_of_bounds", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may not outlive its token"),
        "{body}"
    );
    // Asking for nothing gets what the token has left (then minting fails here: the
    // driver points at a closed port, and the failed lease shows the duration).
    assert_eq!(
        vend.credentials(&token(1200), json!({})).2,
        "upstream_unavailable"
    );
    let lease = &vend.leases()[0];
    // Lease times are RFC 3339 on the wire.
    let at = |field: &str| {
        let text = lease[field].as_str().unwrap();
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let lifetime = (at("expires_at") - at("issued_at")).whole_milliseconds();
    assert!((1_190_000..=1_200_000).contains(&lifetime), "{lease}");
    // Less left than the role's minimum: refused.
    assert_eq!(
        vend.credentials(&token(600), json!({})).2,
        "duration_out_of_bounds"
    );
    // Within both bounds: fine.
    let (_, body, reason) = vend.credentials(&token(1200), json!({"duration_seconds": 1000}));
    assert_eq!(reason, "upstream_unavailable", "{body}");
}
