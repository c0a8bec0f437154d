//! The `sts` driver on Ceph RGW: unmodified boto3 → `vend serve` on
//! `examples/vend-sts.toml` → Ceph's AssumeRole with a session policy → S3 on Ceph,
//! which enforces that policy.

use serde_json::{Value, json};

use super::*;
use crate::helpers::*;
use crate::live::{setup, write_token};

/// A prefix-scoped role beside the example's `ci-writer` and `reader`.
const TEAM_ROLE: &str = r#"
[[roles]]
name = "team"
driver = "sts"
bucket = "${env:ARTIFACTSTORE_VEND_BUCKET}"
prefixes = ["teams/${team}/"]
actions = ["read", "write", "list"]
rules = [{ groups = { contains = "team-writers" } }]
"#;

/// The quickstart's environment for `examples/vend-sts.toml` on this Ceph, signing
/// AssumeRole with the fixture's key (its secret from `secret_ref`).
pub(super) fn sts_env(c: &Ceph, role_arn: &str, secret_ref: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ARTIFACTSTORE_VEND_BUCKET", c.bucket.clone()),
        ("ARTIFACTSTORE_VEND_STS_ENDPOINT_URL", c.sts_url.clone()),
        ("ARTIFACTSTORE_VEND_STS_REGION", c.region.clone()),
        ("ARTIFACTSTORE_VEND_STS_ROLE_ARN", role_arn.to_owned()),
        (
            "ARTIFACTSTORE_VEND_STS_ACCESS_KEY_ID_REF",
            c.access_key_id_ref.clone(),
        ),
        (
            "ARTIFACTSTORE_VEND_STS_SECRET_ACCESS_KEY_REF",
            secret_ref.to_owned(),
        ),
    ]
}

/// boto3 on web identity at the vend service, against `bucket` or the fixture's.
fn web_identity(
    c: &Ceph,
    vend: &Vend,
    token_file: &std::path::Path,
    role: &str,
    bucket: Option<&str>,
) -> Vec<(&'static str, String)> {
    with_web_identity(ceph_s3_env(c, bucket), vend, token_file, role)
}

/// boto3 with these temporary credentials (`with_token`: their session token too).
pub(super) fn keys(
    c: &Ceph,
    creds: &Value,
    bucket: Option<&str>,
    with_token: bool,
) -> Vec<(&'static str, String)> {
    with_keys(ceph_s3_env(c, bucket), creds, with_token)
}

pub(super) fn assert_ok(what: &str, answer: &Value) {
    assert_eq!(answer["ok"], true, "{what}: {answer}");
}

pub(super) fn assert_denied(what: &str, answer: &Value) {
    assert_eq!(
        (&answer["ok"], &answer["status"]),
        (&json!(false), &json!(403)),
        "{what} was not refused: {answer}"
    );
}

#[test]
fn ceph_enforces_the_session_policies_the_sts_driver_sends() {
    let Some(c) = ceph() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let role_arn = role(&unique("vend"), trusts_user(&c));
    let other_bucket = unique("vend-other");
    iam("bucket", &[&other_bucket]);
    let vend = Vend::start(
        &issuer,
        None,
        setup(
            "examples/vend-sts.toml",
            TEAM_ROLE,
            &sts_env(&c, &role_arn, &c.secret_access_key_ref),
        ),
    );
    // Ready although Ceph answers GetCallerIdentity 405: the driver probed AssumeRole.
    let (status, text) = get_text(&format!("{}/readyz", vend.url));
    assert_eq!(status, 200, "{text}");

    let dir = vend.dir.path();
    let writer = write_token(
        dir,
        "writer.jwt",
        &issuer.token(writer_claims("repo:acme/app")),
    );
    let reader = write_token(
        dir,
        "reader.jwt",
        &issuer.token(json!({"sub": "dash", "aud": AUDIENCE, "groups": ["artifact-readers"]})),
    );
    let team = write_token(
        dir,
        "team.jwt",
        &issuer.token(
            json!({"sub": "pay", "aud": AUDIENCE, "groups": ["team-writers"], "team": "payments"}),
        ),
    );
    let base = unique("vend-ceph");

    // ci-writer: the whole bucket, through unmodified boto3.
    let k = format!("{base}/writer.bin");
    let put = boto3(
        "put",
        &k,
        &web_identity(&c, &vend, &writer, "ci-writer", None),
    );
    assert_ok("ci-writer PUT", &put);
    assert_eq!(put["method"], "assume-role-with-web-identity", "{put}");
    let got = boto3(
        "get",
        &k,
        &web_identity(&c, &vend, &writer, "ci-writer", None),
    );
    assert_eq!(got["same"], true, "{got}");

    // reader: reads, and Ceph refuses its writes.
    let got = boto3("get", &k, &web_identity(&c, &vend, &reader, "reader", None));
    assert_eq!(got["same"], true, "{got}");
    assert_denied(
        "reader PUT",
        &boto3(
            "put",
            &format!("{base}/by-reader.bin"),
            &web_identity(&c, &vend, &reader, "reader", None),
        ),
    );

    // team: writes under teams/payments/ only; not beside it, not in another bucket.
    let inside = format!("teams/payments/{base}/a.bin");
    let outside = format!("teams/other/{base}/a.bin");
    assert_ok(
        "team PUT under its prefix",
        &boto3(
            "put",
            &inside,
            &web_identity(&c, &vend, &team, "team", None),
        ),
    );
    assert_denied(
        "team PUT outside its prefix",
        &boto3(
            "put",
            &outside,
            &web_identity(&c, &vend, &team, "team", None),
        ),
    );
    assert_denied(
        "team PUT in another bucket",
        &boto3(
            "put",
            &inside,
            &web_identity(&c, &vend, &team, "team", Some(&other_bucket)),
        ),
    );

    // Durations: outside the role's bounds refused by vend; inside, Ceph's expiry.
    let writer_jwt = std::fs::read_to_string(&writer).unwrap();
    for d in [899, 3601] {
        let (status, body, reason) = vend.credentials(&writer_jwt, json!({"duration_seconds": d}));
        assert_eq!(
            (status, reason.as_str()),
            (400, "duration_out_of_bounds"),
            "{d}: {body}"
        );
    }
    let (status, xml) = vend.sts(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("WebIdentityToken", &writer_jwt),
        ("RoleArn", "arn:aws:iam::000000000000:role/ci-writer"),
        ("DurationSeconds", "3601"),
    ]);
    assert_eq!(status, 400, "{xml}");
    assert!(xml.contains("<Code>InvalidParameterValue</Code>"), "{xml}");
    let (status, creds, _) = vend.credentials(
        &std::fs::read_to_string(&team).unwrap(),
        json!({"duration_seconds": 900}),
    );
    assert_eq!(status, 200, "{creds}");
    let lifetime = seconds_left(&creds);
    assert!((880..=905).contains(&lifetime), "lifetime {lifetime}");
    // Ceph refuses the session's keys without their token.
    assert_denied(
        "GET without the session token",
        &boto3("get", &inside, &keys(&c, &creds, None, false)),
    );
    let got = boto3("get", &inside, &keys(&c, &creds, None, true));
    assert_eq!(got["same"], true, "{got}");

    // Canaries: the fixture's secret, the tokens and the secrets handed out stay out of
    // the service's log and audit log.
    let audit = std::fs::read_to_string(&vend.audit).unwrap();
    let logs = vend.logs();
    for (what, canary) in [
        ("the fixture's secret", c.secret.as_str()),
        (
            "a vended secret",
            creds["secret_access_key"].as_str().unwrap(),
        ),
        ("a session token", creds["session_token"].as_str().unwrap()),
        ("the writer's token", writer_jwt.trim()),
    ] {
        assert!(!audit.contains(canary), "{what} in the audit log");
        assert!(!logs.contains(canary), "{what} in the logs");
    }
}

#[test]
fn without_a_session_policy_the_same_role_writes_everywhere() {
    // The refusals above come from the session policy, not from the role: the role
    // assumed directly, with no policy, writes outside the prefix and in another bucket.
    let Some(c) = ceph() else { return };
    let role_arn = role(&unique("bare"), trusts_user(&c));
    let other_bucket = unique("bare-other");
    iam("bucket", &[&other_bucket]);
    let creds = iam("assume", &[&role_arn]);
    let base = unique("bare");
    let outside = format!("teams/other/{base}/a.bin");
    assert_ok(
        "PUT outside the prefix with no session policy",
        &boto3("put", &outside, &keys(&c, &creds, None, true)),
    );
    assert_ok(
        "PUT in another bucket with no session policy",
        &boto3(
            "put",
            &outside,
            &keys(&c, &creds, Some(&other_bucket), true),
        ),
    );
}

#[test]
fn the_sts_driver_is_unready_when_ceph_refuses_its_key() {
    let Some(c) = ceph() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let role_arn = role(&unique("unready"), trusts_user(&c));
    let dir = tempfile::tempdir().unwrap();
    let wrong_secret = format!("wrong-secret-canary-{}", std::process::id());
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, &wrong_secret).unwrap();
    let vend = Vend::start(
        &issuer,
        None,
        setup(
            "examples/vend-sts.toml",
            "",
            &sts_env(&c, &role_arn, &format!("file:{}", wrong.display())),
        ),
    );
    let (status, text) = get_text(&format!("{}/readyz", vend.url));
    assert_eq!(status, 503, "{text}");
    assert!(text.contains(r#""drivers.sts":"failing""#), "{text}");
    let token = issuer.token(writer_claims("repo:acme/app"));
    let (status, body, reason) = vend.credentials(&token, json!({}));
    assert_eq!(
        (status, reason.as_str()),
        (503, "upstream_unavailable"),
        "{body}"
    );
    let logs = vend.logs();
    // Ceph says no more than AccessDenied; the log says what to check.
    assert!(logs.contains("AccessDenied"), "{logs}");
    assert!(logs.contains("wrong secret key"), "{logs}");
    assert!(!logs.contains(&wrong_secret) && !logs.contains(&c.secret));
    assert!(!body.to_string().contains(&c.sts_url), "{body}");
}
