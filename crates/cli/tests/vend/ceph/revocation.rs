//! Revocation on Ceph RGW's STS: with `revoke_sessions = "auto"` a revoked lease's
//! session, already handed out, is refused by Ceph from then on (a deny in the assumed
//! role's policy names its session); sessions of other leases on the same upstream
//! role keep working. With the default (`off`) the answer says `unsupported` and when
//! the session stops by itself, and the session indeed still works.

use serde_json::{Value, json};

use super::driver::{assert_denied, assert_ok, keys, sts_env};
use super::*;
use crate::helpers::*;
use crate::live::setup;

fn revoke(vend: &Vend, target: Value) -> Value {
    let (status, outcome) = vend.admin("POST", "/v1/admin/revocations", Some(target));
    assert_eq!(status, 200, "{outcome}");
    outcome
}

/// The `upstream` of the only lease a revocation ended.
fn only_upstream(outcome: &Value) -> &Value {
    assert_eq!(outcome["ended"], 1, "{outcome}");
    &outcome["leases"][0]["upstream"]
}

/// Our revocation policies on the upstream role.
fn revocation_policies(role_name: &str) -> Vec<String> {
    iam("policies", &[role_name])["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .filter(|n| n.starts_with("artifactstore-vend-revoked-"))
        .collect()
}

#[test]
fn ceph_refuses_a_revoked_session_and_only_that_one() {
    let Some(c) = ceph() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let role_name = unique("revoke");
    let role_arn = role(&role_name, trusts_user(&c));
    let mut env = sts_env(&c, &role_arn, &c.secret_access_key_ref);
    env.push(("ARTIFACTSTORE_VEND_STS_REVOKE_SESSIONS", "auto".into()));
    let vend = Vend::start(&issuer, None, setup("examples/vend-sts.toml", "", &env));
    let writer = issuer.token(writer_claims("repo:acme/app"));
    let reader =
        issuer.token(json!({"sub": "dash", "aud": AUDIENCE, "groups": ["artifact-readers"]}));
    let base = unique("revoked-sessions");
    let key = format!("{base}/a.bin");
    let mint = |token: &str| {
        let (status, creds, _) = vend.credentials(token, json!({"duration_seconds": 900}));
        assert_eq!(status, 200, "{creds}");
        creds
    };
    let put = |creds: &Value, k: &str| boto3("put", k, &keys(&c, creds, None, true));
    let get = |creds: &Value| boto3("get", &key, &keys(&c, creds, None, true));

    // Two vend roles on one upstream role: a writer's session and a reader's.
    let w1 = mint(&writer);
    assert_ok("writer PUT", &put(&w1, &key));
    let r1 = mint(&reader);
    assert_eq!(get(&r1)["same"], true);

    // A revocation policy of ours whose session expired long ago, left on the role:
    // the first revocation prunes it (and only it: the role's own policy stays).
    let stale = "artifactstore-vend-revoked-1000000000-0123456789abcdef01234567";
    let deny_nothing = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::no-such-bucket"]
    }]});
    iam(
        "put-policy",
        &[&role_name, stale, &deny_nothing.to_string()],
    );

    // Revoking the role ci-writer: Ceph refuses the writer's session at once...
    let outcome = revoke(
        &vend,
        json!({"kind": "role", "role": "ci-writer", "reason": "leaked in a build log"}),
    );
    assert_eq!(only_upstream(&outcome), "denied", "{outcome}");
    assert!(outcome["leases"][0].get("usable_until").is_none());
    assert_denied(
        "the revoked session's PUT",
        &put(&w1, &format!("{base}/after.bin")),
    );
    assert_denied("the revoked session's GET", &get(&w1));
    // ...the reader's session, of another vend role on the same upstream role, works...
    assert_eq!(
        get(&r1)["same"],
        true,
        "a session nobody revoked was cut off"
    );
    // ...and the role gets nothing new.
    let (status, body, reason) = vend.credentials(&writer, json!({}));
    assert_eq!((status, reason.as_str()), (403, "role_revoked"), "{body}");
    let left = revocation_policies(&role_name);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_ne!(left[0], stale, "the expired policy was not pruned");

    // Lifted: vending works again and the new session writes; the old one stays
    // refused (it was denied by its own name, which no new session carries).
    let (status, body) = vend.admin(
        "DELETE",
        "/v1/admin/revocations",
        Some(json!({"kind": "role", "role": "ci-writer"})),
    );
    assert_eq!((status, &body["removed"]), (200, &json!(true)), "{body}");
    let w2 = mint(&writer);
    assert_ok(
        "a session vended after the lifting",
        &put(&w2, &format!("{base}/b.bin")),
    );
    assert_denied("the revoked session, later", &get(&w1));

    // A subject: the reader's session goes, the writer's new one stays.
    let outcome = revoke(
        &vend,
        json!({"kind": "subject", "issuer": issuer.url, "subject": "dash", "reason": "left"}),
    );
    assert_eq!(only_upstream(&outcome), "denied", "{outcome}");
    assert_denied("the revoked subject's GET", &get(&r1));
    assert_ok("another subject's PUT", &put(&w2, &format!("{base}/c.bin")));

    // One lease.
    let outcome = revoke(
        &vend,
        json!({"kind": "lease", "id": w2["lease_id"], "reason": "done with it"}),
    );
    assert_eq!(only_upstream(&outcome), "denied", "{outcome}");
    assert_denied("the revoked lease's GET", &get(&w2));
    assert_eq!(revocation_policies(&role_name).len(), 3);

    // The audit trail says what happened upstream.
    let revoked: Vec<Value> = vend
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "lease.revoked")
        .collect();
    assert_eq!(revoked.len(), 3, "{revoked:?}");
    for line in &revoked {
        assert!(
            line["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("upstream: denied")),
            "{line}"
        );
    }
    let logs = vend.logs();
    assert!(!logs.contains(&c.secret), "the driver's secret in the logs");
}

#[test]
fn without_revoke_sessions_the_answer_says_the_session_lives_on() {
    let Some(c) = ceph() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let role_name = unique("norevoke");
    let role_arn = role(&role_name, trusts_user(&c));
    let vend = Vend::start(
        &issuer,
        None,
        setup(
            "examples/vend-sts.toml",
            "",
            &sts_env(&c, &role_arn, &c.secret_access_key_ref),
        ),
    );
    let (status, creds, _) = vend.credentials(
        &issuer.token(writer_claims("repo:acme/app")),
        json!({"duration_seconds": 900}),
    );
    assert_eq!(status, 200, "{creds}");
    let outcome = revoke(
        &vend,
        json!({"kind": "lease", "id": creds["lease_id"], "reason": "test"}),
    );
    assert_eq!(only_upstream(&outcome), "unsupported", "{outcome}");
    assert_eq!(
        outcome["leases"][0]["usable_until"], creds["expiration"],
        "{outcome}"
    );
    // Honest: the session still works, and the role was not touched.
    let k = format!("{}/still.bin", unique("unrevoked"));
    assert_ok(
        "the unrevokable session's PUT",
        &boto3("put", &k, &keys(&c, &creds, None, true)),
    );
    assert!(revocation_policies(&role_name).is_empty());
}

/// A Ceph user with no IAM caps: it may assume a role that trusts it, but not read or
/// change the role's policies. Its key id and secret, as `file:` references in `dir`.
fn user_without_iam(dir: &std::path::Path, uid: &str) -> (String, String) {
    ceph_user(dir, uid, None)
}

/// A Ceph user with these caps (`roles=read`, ...), else none; its key id and secret,
/// as `file:` references in `dir`.
fn ceph_user(dir: &std::path::Path, uid: &str, caps: Option<&str>) -> (String, String) {
    let conf = std::env::var("ARTIFACTSTORE_FIXTURE_CEPH_CONF").unwrap();
    let radosgw_admin = |args: &[&str]| {
        let out = std::process::Command::new("radosgw-admin")
            .args(["-c", &conf])
            .args(args)
            .output()
            .expect("run radosgw-admin");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let out = radosgw_admin(&["user", "create", "--uid", uid, "--display-name", uid]);
    if let Some(caps) = caps {
        radosgw_admin(&["caps", "add", "--uid", uid, "--caps", caps]);
    }
    let user: Value = serde_json::from_slice(&out).unwrap();
    let key = &user["keys"][0];
    let write = |name: &str, value: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, value.as_str().unwrap()).unwrap();
        format!("file:{}", path.display())
    };
    (
        write("iamless-key-id", &key["access_key"]),
        write("iamless-secret", &key["secret_key"]),
    )
}

#[test]
fn where_the_probe_is_refused_the_answer_stays_unsupported() {
    // revoke_sessions = "auto" with credentials Ceph refuses IAM to: the probe finds
    // out, the answer says `unsupported` with the session's expiry, and says so in the
    // log with what is missing.
    let Some(c) = ceph() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let uid = unique("vend-iamless");
    let (key_ref, secret_ref) = user_without_iam(dir.path(), &uid);
    let role_name = unique("iamless");
    let role_arn = role(
        &role_name,
        json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": [format!("arn:aws:iam:::user/{uid}")]},
            "Action": ["sts:AssumeRole"]
        }]}),
    );
    let mut env = sts_env(&c, &role_arn, &secret_ref);
    for (k, v) in env.iter_mut() {
        if *k == "ARTIFACTSTORE_VEND_STS_ACCESS_KEY_ID_REF" {
            *v = key_ref.clone();
        }
    }
    env.push(("ARTIFACTSTORE_VEND_STS_REVOKE_SESSIONS", "auto".into()));
    let vend = Vend::start(&issuer, None, setup("examples/vend-sts.toml", "", &env));
    let (status, creds, _) = vend.credentials(
        &issuer.token(writer_claims("repo:acme/app")),
        json!({"duration_seconds": 900}),
    );
    assert_eq!(status, 200, "{creds}");
    let outcome = revoke(
        &vend,
        json!({"kind": "lease", "id": creds["lease_id"], "reason": "test"}),
    );
    assert_eq!(only_upstream(&outcome), "unsupported", "{outcome}");
    assert_eq!(
        outcome["leases"][0]["usable_until"], creds["expiration"],
        "{outcome}"
    );
    let k = format!("{}/still.bin", unique("iamless"));
    assert_ok(
        "the session Ceph was not asked to deny",
        &boto3("put", &k, &keys(&c, &creds, None, true)),
    );
    let logs = vend.logs();
    assert!(
        logs.contains("does not take role policies") && logs.contains("ListRolePolicies: 403"),
        "{logs}"
    );
    assert!(revocation_policies(&role_name).is_empty());
}

#[test]
fn credentials_that_may_list_but_not_write_role_policies_give_unsupported() {
    // A user with `roles=read`: the probe (ListRolePolicies) passes, the write of the
    // deny is refused. The answer is the honest `unsupported` with the session's expiry
    // (not an error that leaves the lease live), the log names the missing permission,
    // and the next revocation does not ask again.
    let Some(c) = ceph() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let uid = unique("vend-readonly-iam");
    let (key_ref, secret_ref) = ceph_user(dir.path(), &uid, Some("roles=read"));
    let role_name = unique("readonly-iam");
    let role_arn = role(
        &role_name,
        json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": [format!("arn:aws:iam:::user/{uid}")]},
            "Action": ["sts:AssumeRole"]
        }]}),
    );
    let mut env = sts_env(&c, &role_arn, &secret_ref);
    for (k, v) in env.iter_mut() {
        if *k == "ARTIFACTSTORE_VEND_STS_ACCESS_KEY_ID_REF" {
            *v = key_ref.clone();
        }
    }
    env.push(("ARTIFACTSTORE_VEND_STS_REVOKE_SESSIONS", "auto".into()));
    let vend = Vend::start(&issuer, None, setup("examples/vend-sts.toml", "", &env));
    let token = issuer.token(writer_claims("repo:acme/app"));
    for attempt in ["first", "second"] {
        let (status, creds, _) = vend.credentials(&token, json!({"duration_seconds": 900}));
        assert_eq!(status, 200, "{creds}");
        let outcome = revoke(
            &vend,
            json!({"kind": "lease", "id": creds["lease_id"], "reason": "test"}),
        );
        assert_eq!(
            only_upstream(&outcome),
            "unsupported",
            "{attempt}: {outcome}"
        );
        assert_eq!(
            outcome["leases"][0]["usable_until"], creds["expiration"],
            "{attempt}: {outcome}"
        );
    }
    let logs = vend.logs();
    assert!(
        logs.contains("iam:PutRolePolicy on the role is missing")
            && logs.contains("PutRolePolicy: 403"),
        "{logs}"
    );
    assert_eq!(
        logs.matches("iam:PutRolePolicy on the role is missing")
            .count(),
        1,
        "the refused write was not remembered: {logs}"
    );
    assert!(revocation_policies(&role_name).is_empty());
}
