//! The artifact server's own credential sources straight at Ceph RGW's STS, no vend in
//! the path: `web-identity` (a token of the test issuer, whose keys carry `x5c`, for a
//! role whose trust policy names the issuer's OIDC provider) and `assume-role` (the
//! fixture's key as base). `storage verify` and a `serve --backend s3` round trip on
//! each; refusals name the STS and the reason and carry no secret.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use super::*;
use crate::common::{BIN, Server, stderr, stdout};
use crate::helpers::*;
use crate::live::write_token;

/// `storage verify --backend s3 --json` with these settings over the fixture's.
fn verify(env: &[(&str, String)]) -> Output {
    Command::new(BIN)
        .args(["storage", "verify", "--backend", "s3", "--json"])
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .unwrap()
}

fn both(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// Passes, on credentials of `source` that expire.
fn assert_verified(env: &[(&str, String)], source: &str) {
    let out = verify(env);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["credentials"]["source"], source, "{report}");
    assert!(
        report["credentials"]["expires"].as_str().is_some(),
        "{report}"
    );
}

/// Refused: exit 1 or more, the output naming the STS and holding every `expect`.
fn assert_refused(env: &[(&str, String)], expect: &[&str], canaries: &[&str]) -> String {
    let out = verify(env);
    let text = both(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    for part in expect {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
    for canary in canaries {
        assert!(!text.contains(canary), "a secret in the output:\n{text}");
    }
    text
}

/// `serve --backend s3` on these settings: a file goes up and comes back whole.
fn round_trip(dir: &Path, env: &[(&str, String)], canaries: &[&str]) {
    let mut env: Vec<(&str, String)> = env.to_vec();
    env.push(("ARTIFACTSTORE_S3_PREFIX", unique("serve-round-trip") + "/"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = Server::start_with_env(&dir.join("data"), &["--backend", "s3"], &env);
    let url = server.artifacts("ceph/sts/1/report.md");
    let body = crate::common::bytes(300_000, 7);
    let (put, got, ready) = crate::common::block_on({
        let body = body.clone();
        let ready = format!("{}/readyz", server.url);
        async move {
            let client = crate::common::http();
            let put = client.put(&url).body(body).send().await.unwrap();
            let put = (put.status().as_u16(), put.text().await.unwrap());
            let got = client.get(&url).send().await.unwrap();
            let got = (got.status().as_u16(), got.bytes().await.unwrap().to_vec());
            let ready = client.get(&ready).send().await.unwrap();
            (put, got, ready.status().as_u16())
        }
    });
    assert_eq!(put.0, 201, "{}", put.1);
    assert_eq!(got.0, 200);
    assert!(got.1 == body, "the file came back different");
    assert_eq!(ready, 200);
    server.stop();
    let logs = server.logs();
    for canary in canaries {
        assert!(!logs.contains(canary), "a secret in the server's log");
    }
}

#[test]
fn the_server_runs_on_web_identity_at_cephs_sts() {
    let Some(c) = ceph() else { return };
    let Some(issuer) = Issuer::start_x5c() else {
        return;
    };
    let host = issuer.url.strip_prefix("http://").unwrap().to_owned();
    iam("oidc-provider", &[&issuer.url, AUDIENCE]);
    let subject = "artifactstore-server";
    let trust = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": [format!("arn:aws:iam:::oidc-provider/{host}")]},
        "Action": ["sts:AssumeRoleWithWebIdentity"],
        "Condition": {"StringEquals": {format!("{host}:sub"): subject}}
    }]});
    let role_arn = role(&unique("web-identity"), trust);
    let dir = tempfile::tempdir().unwrap();
    let token = issuer.token(json!({"sub": subject, "aud": AUDIENCE}));
    let token_file = write_token(dir.path(), "token.jwt", &token);
    let settings = |file: &Path, role: &str| {
        vec![
            ("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE", "web-identity".into()),
            (
                "ARTIFACTSTORE_S3_WEB_IDENTITY_TOKEN_FILE",
                file.display().to_string(),
            ),
            ("ARTIFACTSTORE_S3_ROLE_ARN", role.to_owned()),
            ("ARTIFACTSTORE_S3_STS_ENDPOINT_URL", c.sts_url.clone()),
            (
                "ARTIFACTSTORE_S3_PREFIX",
                unique("verify-web-identity") + "/",
            ),
        ]
    };
    let signature = token.rsplit('.').next().unwrap().to_owned();
    let canaries = [signature.as_str(), c.secret.as_str()];

    assert_verified(&settings(&token_file, &role_arn), "web-identity");
    round_trip(dir.path(), &settings(&token_file, &role_arn), &canaries);

    let sts = format!("STS at {}", c.sts_url);
    // A token with these claims is refused with all of `expect`, its signature unshown.
    let refused = |name: &str, claims: Value, expect: &[&str]| {
        let token = issuer.token(claims);
        let file = write_token(dir.path(), name, &token);
        let signature = token.rsplit('.').next().unwrap();
        let mut expect = expect.to_vec();
        expect.extend([
            sts.as_str(),
            "AssumeRoleWithWebIdentity",
            "403 AccessDenied",
        ]);
        assert_refused(
            &settings(&file, &role_arn),
            &expect,
            &[signature, &c.secret],
        );
    };
    // An expired token: the STS refuses it, and the message says it expired.
    refused(
        "expired.jwt",
        json!({
            "sub": subject, "aud": AUDIENCE,
            "iat": now() - 7200, "nbf": now() - 7200, "exp": now() - 3600
        }),
        &["expired at"],
    );
    // A token for another audience: the message shows the token's audience and says
    // what the STS checks it against.
    refused(
        "wrong-aud.jwt",
        json!({"sub": subject, "aud": "not-artifactstore"}),
        &[r#"aud is ["not-artifactstore"]"#, "client IDs"],
    );
    // Another subject: the trust policy's condition on HOST:PORT:sub refuses it.
    refused(
        "stranger.jwt",
        json!({"sub": "someone-else", "aud": AUDIENCE}),
        &[r#"sub is "someone-else""#, "trust policy"],
    );
    // A role that does not exist: named, and among what the message lists.
    let missing = "arn:aws:iam:::role/no-such-role";
    assert_refused(
        &settings(&token_file, missing),
        &[&sts, missing, "the role does not exist"],
        &canaries,
    );
}

#[test]
fn the_server_runs_on_assume_role_at_cephs_sts() {
    let Some(c) = ceph() else { return };
    let role_arn = role(&unique("assume-role"), trusts_user(&c));
    let dir = tempfile::tempdir().unwrap();
    let settings = |role: &str, secret_ref: &str| {
        vec![
            ("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE", "assume-role".into()),
            ("ARTIFACTSTORE_S3_ROLE_ARN", role.to_owned()),
            ("ARTIFACTSTORE_S3_STS_ENDPOINT_URL", c.sts_url.clone()),
            (
                "ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF",
                secret_ref.to_owned(),
            ),
            (
                "ARTIFACTSTORE_S3_PREFIX",
                unique("verify-assume-role") + "/",
            ),
        ]
    };
    let good = settings(&role_arn, &c.secret_access_key_ref);
    assert_verified(&good, "assume-role");
    round_trip(dir.path(), &good, &[&c.secret]);

    let sts = format!("STS at {}", c.sts_url);
    let missing = "arn:aws:iam:::role/no-such-role";
    assert_refused(
        &settings(missing, &c.secret_access_key_ref),
        &[
            &sts,
            "AssumeRole of role",
            missing,
            "404 NoSuchEntity",
            "no role of that name",
        ],
        &[&c.secret],
    );
    let wrong_secret = format!("wrong-secret-canary-{}", std::process::id());
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, &wrong_secret).unwrap();
    assert_refused(
        &settings(&role_arn, &format!("file:{}", wrong.display())),
        &[&sts, "403 AccessDenied", "wrong secret key"],
        &[&c.secret, &wrong_secret],
    );
}
