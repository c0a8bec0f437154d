//! The audit of the artifact API on the real binary with the real test OIDC issuer:
//! every change and every refusal written as a keyed, chained line naming who and
//! what (`artifactstore audit verify` checks it), never a token; a flood of refusals
//! costs two lines that count it; a log that cannot be written stops changes.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::auth::{AUDIENCE, call, github_token, put, start, write_config};
use crate::common::oidc::{Issuer, craft, hs256, now};
use crate::common::*;

/// The audit lines of a log, genesis included.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The one line of `event` whose `field` is `value`.
fn line<'a>(lines: &'a [Value], event: &str, field: &str, value: &str) -> &'a Value {
    let found: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == event && l[field] == value)
        .collect();
    assert_eq!(found.len(), 1, "{event} with {field}={value}: {lines:#?}");
    found[0]
}

/// A static token for `[[auth.tokens]]`: (token, its configuration).
fn static_token(name: &str, permissions: &str) -> (String, String) {
    let o = std::process::Command::new(BIN)
        .args(["--json", "token", "new", "--name", name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let config = format!(
        "[[auth.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nnamespaces = [\"acme\"]\npermissions = {permissions}\n",
        v["sha256"].as_str().unwrap()
    );
    (v["token"].as_str().unwrap().to_owned(), config)
}

/// `audit verify --config` as an operator runs it: the configuration the server ran
/// with, and the `--data-dir` it was started with (the tests' servers take theirs as a
/// flag).
fn verify(config: &Path, log: &Path) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(log.parent().unwrap())
        .arg(log)
        .output()
        .unwrap()
}

#[test]
fn every_change_and_refusal_is_audited_with_who_and_what_and_never_a_token() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ops, ops_config) = static_token("ops", r#"["delete"]"#);
    // [auth] is on, [audit] is not written: auditing is on, in the data directory.
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n{ops_config}")).unwrap();
    let mut s = start(dir.path(), &config, &issuer);
    let log = dir.path().join("data/audit.log");

    let main = github_token(&issuer, "acme/app", "refs/heads/main");
    let pr = github_token(&issuer, "acme/app", "refs/pull/7/merge");
    let main_sub = "repo:acme/app:ref:refs/heads/main";
    let pr_sub = "repo:acme/app:ref:refs/pull/7/merge";
    // A token of the trusted issuer's name, signed by someone else.
    let forged = craft(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"iss": issuer.url, "sub": "mallory", "aud": AUDIENCE, "exp": now() + 600}),
        hs256(b"not the issuer's key"),
    );

    assert_eq!(
        put(&s, Some(&main), "acme/app/1/report.txt", "main").status,
        StatusCode::CREATED
    );
    let complete = |token: &str| {
        call(
            "POST",
            &s.artifacts("acme/app/1/complete"),
            Some(token),
            Some(json!({"labels": {"branch": "main"}})),
        )
    };
    assert_eq!(complete(&main).status, StatusCode::OK);
    assert_eq!(
        call("DELETE", &s.artifacts("acme/app/1"), Some(&ops), None).status,
        StatusCode::OK
    );
    // Refusals: a pull request writing to main's namespace, a forged token, no token.
    assert_eq!(
        put(&s, Some(&pr), "acme/app/2/report.txt", "poisoned").status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call("GET", &s.artifacts("acme/app"), Some(&forged), None).status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call("DELETE", &s.artifacts("acme/app/1"), None, None).status,
        StatusCode::UNAUTHORIZED
    );
    // A change allowed but refused by the store is audited with what was answered.
    let labels = call(
        "PATCH",
        &s.artifacts("acme/app/1"),
        Some(&main),
        Some(json!({"labels": {"x": "y"}})),
    );
    assert_eq!(labels.status, StatusCode::CONFLICT, "{}", labels.text);
    // Reads are not changes: nothing is written for them.
    let before = lines(&log).len();
    assert_eq!(
        call("GET", &s.artifacts("acme/app"), Some(&main), None).status,
        StatusCode::OK
    );
    assert_eq!(lines(&log).len(), before, "a read allowed writes no line");

    assert!(s.stop().success());
    let all = lines(&log);
    assert_eq!(all[0]["event"], "audit.genesis");

    let upload = line(&all, "artifact.upload", "subject", main_sub);
    assert_eq!(upload["decision"], "allow");
    assert_eq!(upload["caller"], "oidc");
    assert_eq!(upload["issuer"], issuer.url.as_str());
    assert_eq!(upload["identity_verified"], true);
    assert_eq!(
        (
            &upload["namespace"],
            &upload["name"],
            &upload["version"],
            &upload["path"]
        ),
        (
            &json!("acme"),
            &json!("app"),
            &json!("1"),
            &json!("report.txt")
        )
    );
    assert_eq!(upload["digest"], digest(b"main"));
    assert_eq!(upload["size"], 4);
    assert_eq!(upload["status"], 201);
    assert_eq!(upload["client"], "127.0.0.1");

    let done = line(&all, "version.complete", "subject", main_sub);
    assert_eq!(
        (&done["decision"], &done["status"]),
        (&json!("allow"), &json!(200))
    );
    let deleted = line(&all, "version.delete", "token_name", "ops");
    assert_eq!(
        (&deleted["caller"], &deleted["version"], &deleted["status"]),
        (&json!("token"), &json!("1"), &json!(200))
    );
    let relabel = line(&all, "version.labels", "subject", main_sub);
    assert_eq!(
        (&relabel["status"], &relabel["code"]),
        (&json!(409), &json!("version_deleted"))
    );

    let poisoned = line(&all, "request.denied", "subject", pr_sub);
    assert_eq!(poisoned["decision"], "deny");
    assert_eq!(poisoned["reason"], "forbidden");
    assert_eq!(poisoned["identity_verified"], true);
    assert_eq!(poisoned["path"], "report.txt");
    assert!(
        poisoned["detail"].as_str().unwrap().contains("`write`"),
        "{poisoned}"
    );
    // The forged token and the anonymous delete come from one client before any
    // verified identity: one window, its first line and a summary counting the other.
    let claimed = line(&all, "request.denied", "subject", "mallory");
    assert_eq!(claimed["identity_verified"], false, "claimed, not verified");
    assert_eq!(claimed["reason"], "token_invalid");
    assert_eq!(claimed["status"], 401);
    let summary = line(&all, "refusals.coalesced", "client", "127.0.0.1");
    assert_eq!(summary["count"], 1);
    assert_eq!(summary["request_id"], claimed["request_id"]);

    // The chain verifies under the key the configuration names, and no token is in
    // the log or the server's output.
    let o = verify(&config, &log);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("authenticated"), "{}", stdout(&o));
    let written = std::fs::read_to_string(&log).unwrap() + &s.logs();
    for token in [&main, &pr, &forged, &ops] {
        assert!(!written.contains(token.as_str()), "a token was written");
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !written.contains(signature),
            "a token's signature was written"
        );
    }

    // An edited line fails the check.
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"acme\"", "\"acmf\"", 1)).unwrap();
    let o = verify(&config, &log);
    assert_eq!(o.status.code(), Some(5), "{}{}", stdout(&o), stderr(&o));
}

/// A flood of refused tokens, and of changes rejected before any permission check (a
/// bad name, an unknown route, sent without a token), from one client costs two lines
/// whose counts add up to it, however many requests it makes.
#[test]
fn a_flood_of_refusals_costs_two_lines_that_count_it() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &write_config(dir.path(), ""), &issuer);
    let log = dir.path().join("data/audit.log");
    let n = 300;
    block_on({
        let url = s.artifacts("acme/app/1/x");
        async move {
            let client = http();
            for i in 0..n {
                let r = match i % 3 {
                    0 => {
                        let token = format!("not-a-token-{i}-{}", "x".repeat(2000));
                        let r = client.put(&url).bearer_auth(token).body("x");
                        let r = r.send().await.unwrap();
                        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
                        r
                    }
                    1 => {
                        let bad = url.replace("/acme/", "/%21/") + &"p".repeat(900);
                        let r = client.put(bad).body("x").send().await.unwrap();
                        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
                        r
                    }
                    _ => {
                        let unrouted = url.replace("/artifacts/acme/app/1/x", "/nothing");
                        let r = client.delete(unrouted).send().await.unwrap();
                        assert_eq!(r.status(), StatusCode::NOT_FOUND);
                        r
                    }
                };
                drop(r);
            }
        }
    });
    assert!(s.stop().success());
    let all = lines(&log);
    assert_eq!(
        all.len(),
        3,
        "genesis, the window's first refusal, its summary"
    );
    let counted: u64 = all[1..].iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, n);
    assert_eq!(all[1]["caller"], "bearer");
    assert!(
        all.iter().all(|l| l["decision"] != "allow"),
        "nothing was allowed: {all:#?}"
    );
    let by_reason = &all[2]["by_reason"];
    assert_eq!(by_reason["invalid_name"], n / 3, "{by_reason}");
    assert_eq!(by_reason["route_not_found"], n / 3, "{by_reason}");
    assert!(std::fs::metadata(&log).unwrap().len() < 4096);
}

/// A log that cannot be written stops every change: the one under way when it broke is
/// not acknowledged, the next is not even begun; reads go on, `/readyz` says why, and
/// changes resume, still chained, once the log can be written again.
#[test]
fn changes_stop_while_the_audit_log_cannot_be_written() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &write_config(dir.path(), ""), &issuer);
    let log = dir.path().join("data/audit.log");
    let main = github_token(&issuer, "acme/app", "refs/heads/main");
    assert_eq!(
        put(&s, Some(&main), "acme/app/1/a.txt", "a").status,
        StatusCode::CREATED
    );

    // The log is taken away and something unwritable put in its place.
    let saved = dir.path().join("audit.log.saved");
    std::fs::rename(&log, &saved).unwrap();
    std::fs::create_dir(&log).unwrap();
    let broke = put(&s, Some(&main), "acme/app/1/b.txt", "b");
    assert_eq!(
        broke.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        broke.text
    );
    assert_eq!(broke.body["error"]["code"], "audit_unavailable");
    let refused = put(&s, Some(&main), "acme/app/1/c.txt", "c");
    assert_eq!(refused.body["error"]["code"], "audit_unavailable");
    let c = call("GET", &s.artifacts("acme/app/1/c.txt"), Some(&main), None);
    assert_eq!(
        c.status,
        StatusCode::NOT_FOUND,
        "nothing is begun: {}",
        c.text
    );
    assert!(
        !s.holds_blob(b"c"),
        "the refused upload's content was stored"
    );
    let complete = call(
        "POST",
        &s.artifacts("acme/app/1/complete"),
        Some(&main),
        None,
    );
    assert_eq!(complete.body["error"]["code"], "audit_unavailable");
    assert_eq!(
        call("GET", &s.artifacts("acme/app/1/a.txt"), Some(&main), None).status,
        StatusCode::OK,
        "reads go on"
    );
    let ready = call("GET", &format!("{}/readyz", s.url), None, None);
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["checks"]["audit"], "failing", "{}", ready.text);

    // Writable again: the next change is audited in a new file chained to the old.
    std::fs::remove_dir(&log).unwrap();
    assert_eq!(
        put(&s, Some(&main), "acme/app/1/c.txt", "c").status,
        StatusCode::CREATED
    );
    let after = lines(&log);
    assert_eq!(after[0]["event"], "audit.genesis");
    assert_eq!(after[1]["path"], "c.txt");
    let old = lines(&saved);
    assert_eq!(
        after[0]["prev"],
        old.last().unwrap()["mac"],
        "the chain goes on"
    );
    let o = std::process::Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&saved)
        .arg(&log)
        .output()
        .unwrap();
    // The key file is beside the log, not beside the saved copy: found by the last.
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
