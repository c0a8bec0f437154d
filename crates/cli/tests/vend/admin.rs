//! The admin API by identity, end to end: the real binary with `[admin] rules`, tokens
//! of a real OIDC issuer, the audit file as an operator reads it, and the CLI's
//! `vend leases` / `vend revoke` / `vend unrevoke` — on Garage where leases are minted.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::garage_setup;
use crate::helpers::*;

/// `[admin] rules` letting in tokens of the `vend-admins` group. `Vend::spawn` writes
/// `[admin] token_ref` just before the extra text, so these keys, coming first, belong
/// to that table.
const ADMIN_RULES: &str = "rules = [{ groups = { contains = \"vend-admins\" } }]\n";

fn operator_claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": AUDIENCE, "groups": ["vend-admins"]})
}

fn reader_claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": AUDIENCE, "groups": ["artifact-readers"]})
}

/// `METHOD path` on the admin API with `bearer`: status and JSON answer.
fn admin_as(
    vend: &Vend,
    bearer: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", vend.url);
    let bearer = bearer.to_owned();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    crate::common::block_on(async move {
        let mut req = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    })
}

fn token_file(vend: &Vend, name: &str, token: &str) -> PathBuf {
    let path = vend.dir.path().join(name);
    std::fs::write(&path, token).unwrap();
    path
}

/// `artifactstore vend ARGS --vend-url URL --token-file FILE`: exit code, stdout, stderr.
fn cli(vend: &Vend, credential: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["vend"];
    all.extend_from_slice(args);
    let file = credential.display().to_string();
    all.extend_from_slice(&["--vend-url", &vend.url, "--token-file", &file]);
    let out = run_cli(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn admin_calls(vend: &Vend) -> Vec<Value> {
    vend.audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "admin.call")
        .collect()
}

/// An operator in the admin group may list and revoke; a workload token without the
/// group is refused 403; both calls are in the audit log with who made them. Needs no
/// upstream: nothing is minted.
#[test]
fn admin_by_an_oidc_group_is_allowed_a_workload_is_forbidden_and_both_are_audited() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let vend = Vend::start(&issuer, None, garage_setup(ADMIN_RULES, &[]));
    let operator = issuer.token(operator_claims("ops-anna"));
    let workload = issuer.token(writer_claims("repo:acme/app"));
    let anna = format!("{} ops-anna", issuer.url);

    let (status, body) = admin_as(&vend, &operator, "GET", "/v1/admin/leases?live=true", None);
    assert_eq!(status, 200, "{body}");
    let (status, outcome) = admin_as(
        &vend,
        &operator,
        "POST",
        "/v1/admin/revocations",
        Some(json!({"kind": "role", "role": "reader", "reason": "incident 7"})),
    );
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["standing"], true);
    // The revocation holds: a reader token is refused from now on.
    let (status, _, reason) = vend.credentials(&issuer.token(reader_claims("r1")), json!({}));
    assert_eq!((status, reason.as_str()), (403, "role_revoked"));

    let (status, body) = admin_as(&vend, &workload, "GET", "/v1/admin/leases", None);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no [admin] rules entry matches"),
        "{body}"
    );
    let (status, body) = admin_as(
        &vend,
        &workload,
        "DELETE",
        "/v1/admin/revocations",
        Some(json!({"kind": "role", "role": "reader"})),
    );
    assert_eq!(status, 403, "a workload cannot lift the revocation: {body}");

    let calls = admin_calls(&vend);
    let allowed: Vec<&Value> = calls.iter().filter(|l| l["decision"] == "allow").collect();
    assert_eq!(allowed.len(), 2, "{calls:?}");
    assert!(
        allowed.iter().all(|l| l["actor"] == anna.as_str()),
        "{allowed:?}"
    );
    assert_eq!(allowed[0]["detail"], "GET /v1/admin/leases?live=true");
    assert_eq!(
        allowed[1]["detail"],
        "POST /v1/admin/revocations Role { role: \"reader\" }: incident 7"
    );
    let denied: Vec<&Value> = calls.iter().filter(|l| l["decision"] == "deny").collect();
    assert_eq!(
        denied.len(),
        1,
        "the second refusal is counted in the window: {calls:?}"
    );
    assert_eq!(denied[0]["reason"], "forbidden");
    assert_eq!(denied[0]["actor"], format!("{} repo:acme/app", issuer.url));
    let added = vend
        .audit_lines()
        .into_iter()
        .find(|l| l["event"] == "revocation.added")
        .expect("a revocation.added line");
    assert_eq!(added["actor"], anna.as_str());
    let text = std::fs::read_to_string(&vend.audit).unwrap();
    assert!(
        !text.contains(&operator) && !text.contains(&workload),
        "tokens are never written"
    );

    // The CLI with each token in a file: the workload's exits 8 (forbidden), the
    // operator's lifts the revocation.
    let workload_file = token_file(&vend, "workload.jwt", &workload);
    let (code, _, stderr) = cli(&vend, &workload_file, &["leases"]);
    assert_eq!(code, 8, "{stderr}");
    assert!(stderr.contains("forbidden"), "{stderr}");
    let operator_file = token_file(&vend, "operator.jwt", &operator);
    let (code, stdout, stderr) = cli(&vend, &operator_file, &["unrevoke", "--role", "reader"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("revocation lifted"), "{stdout}");
    let removed = vend
        .audit_lines()
        .into_iter()
        .find(|l| l["event"] == "revocation.removed")
        .expect("a revocation.removed line");
    assert_eq!(removed["actor"], anna.as_str());
    // A bad filter is a usage error with the service's words.
    let (code, _, stderr) = cli(
        &vend,
        &operator_file,
        &["leases", "--expiring-before", "tomorrow"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("expiring_before must be an RFC 3339 time"),
        "{stderr}"
    );
}

/// Leases of different subjects and roles minted on Garage; the query filters return
/// exactly the right ones through the API and the CLI, and the CLI's revocations (by
/// an operator's OIDC token) take the keys back from Garage.
#[test]
fn lease_filters_and_the_cli_find_and_revoke_the_right_leases_on_garage() {
    let Some(g) = garage() else {
        return;
    };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let vend = Vend::start(&issuer, Some(&g), garage_setup(ADMIN_RULES, &[]));
    let mint = |claims: Value, body: Value| {
        let (status, creds, reason) = vend.credentials(&issuer.token(claims), body);
        assert_eq!(status, 200, "{reason}: {creds}");
        creds
    };
    let alice = mint(writer_claims("alice"), json!({"duration_seconds": 900}));
    let bob = mint(reader_claims("bob"), json!({"duration_seconds": 3600}));
    let carol = mint(writer_claims("carol"), json!({"duration_seconds": 3600}));
    let key = |c: &Value| c["access_key_id"].as_str().unwrap().to_owned();
    let lease = |c: &Value| c["lease_id"].as_str().unwrap().to_owned();
    for c in [&alice, &bob, &carol] {
        assert!(g.key_ids().contains(&key(c)));
    }
    let operator = issuer.token(operator_claims("ops-anna"));
    let operator_file = token_file(&vend, "operator.jwt", &operator);

    // Revoke carol's lease with the CLI: Garage no longer holds her key.
    let (code, stdout, stderr) = cli(
        &vend,
        &operator_file,
        &[
            "revoke",
            "--lease",
            &lease(&carol),
            "--reason",
            "leaked in a log",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("upstream: deleted"), "{stdout}");
    assert!(!g.key_ids().contains(&key(&carol)));

    let subjects = |path: &str| -> Vec<String> {
        let (status, body) = admin_as(&vend, &operator, "GET", path, None);
        assert_eq!(status, 200, "{path}: {body}");
        let mut s: Vec<String> = body["leases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["subject"].as_str().unwrap().to_owned())
            .collect();
        s.sort();
        s
    };
    let half_hour = time::OffsetDateTime::from_unix_timestamp(now() + 1800)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(subjects("/v1/admin/leases?role=reader"), ["bob"]);
    assert_eq!(subjects("/v1/admin/leases?subject=alice"), ["alice"]);
    assert_eq!(subjects("/v1/admin/leases?state=revoked"), ["carol"]);
    assert_eq!(subjects("/v1/admin/leases?live=true"), ["alice", "bob"]);
    assert_eq!(
        subjects("/v1/admin/leases?driver=garage&break_glass=false"),
        ["alice", "bob", "carol"]
    );
    assert!(subjects("/v1/admin/leases?break_glass=true").is_empty());
    assert_eq!(
        subjects(&format!(
            "/v1/admin/leases?expiring_before={}&role=ci-writer&live=true",
            half_hour.replace(':', "%3A")
        )),
        ["alice"]
    );
    let (status, body) = admin_as(&vend, &operator, "GET", "/v1/admin/leases?state=gone", None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "request_invalid");

    // The same through the CLI: a table, and JSON.
    let (code, table, stderr) = cli(&vend, &operator_file, &["leases", "--live"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].starts_with("ID") && rows[0].ends_with("BREAK-GLASS"),
        "{table}"
    );
    assert!(
        table.contains(&lease(&alice)) && table.contains(&lease(&bob)),
        "{table}"
    );
    assert!(!table.contains(&lease(&carol)), "{table}");
    let (code, out, stderr) = cli(
        &vend,
        &operator_file,
        &[
            "--json",
            "leases",
            "--state",
            "active",
            "--expiring-before",
            &half_hour,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let answer: Value = serde_json::from_str(out.trim()).unwrap();
    let ids: Vec<&str> = answer["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [lease(&alice).as_str()]);

    // Revoking a role with the CLI ends bob's lease upstream and refuses readers.
    let (code, stdout, stderr) = cli(
        &vend,
        &operator_file,
        &["revoke", "--role", "reader", "--reason", "rotate readers"],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("revoked 1 lease(s)"), "{stdout}");
    assert!(!g.key_ids().contains(&key(&bob)));
    let (status, _, reason) = vend.credentials(&issuer.token(reader_claims("bob")), json!({}));
    assert_eq!((status, reason.as_str()), (403, "role_revoked"));
    assert!(
        g.key_ids().contains(&key(&alice)),
        "alice's key is untouched"
    );
    assert_eq!(subjects("/v1/admin/leases?live=true"), ["alice"]);

    let anna = format!("{} ops-anna", issuer.url);
    let revocations: Vec<Value> = vend
        .audit_lines()
        .into_iter()
        .filter(|l| {
            l["event"] == "admin.call"
                && l["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("POST /v1/admin/revocations "))
        })
        .collect();
    assert_eq!(revocations.len(), 2, "{revocations:?}");
    // The line names what was revoked: the lease.revoked line that follows does not
    // name who.
    assert!(
        revocations[0]["detail"]
            .as_str()
            .unwrap()
            .contains(&lease(&carol)),
        "{revocations:?}"
    );
    assert!(revocations.iter().all(|l| l["actor"] == anna.as_str()));
}
