//! Crash reconciliation against Garage: the vend binary is killed (SIGKILL, by its
//! `test-crash-points` hook) at each point of the mint saga, restarted on the same
//! lease database and audit log, and Garage's key list must then agree with the lease
//! table — no key of ours without a live lease.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::block_on;
use crate::helpers::*;
use crate::live::setup;

/// Short enough for a test to watch, far above a mint against a local Garage.
const RECONCILE: &str = "\n[reaper]\ninterval_secs = 1\npending_timeout_secs = 3\n";
const KEY_PREFIX: &str = "artifactstore-vend-";

/// (access key id, name) of every key Garage holds.
fn named_keys(g: &Garage) -> Vec<(String, String)> {
    let url = format!("{}/v2/ListKeys", g.admin_url);
    let token = g.admin_token.clone();
    let body: Value = block_on(async move {
        let r = reqwest::Client::new().get(url).bearer_auth(token);
        r.send().await.unwrap().json().await.unwrap()
    });
    body.as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_owned(),
                k["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Ids of the keys Garage holds for `lease_id`.
fn keys_of(g: &Garage, lease_id: &str) -> Vec<String> {
    let name = format!("{KEY_PREFIX}{lease_id}");
    named_keys(g)
        .into_iter()
        .filter(|(_, n)| *n == name)
        .map(|(id, _)| id)
        .collect()
}

/// `POST /v1/credentials`, without assuming an answer comes.
fn try_credentials(url: &str, token: &str) -> Result<u16, String> {
    let url = format!("{url}/v1/credentials");
    let token = token.to_owned();
    block_on(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .json(&json!({}))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    })
}

fn metric(vend: &Vend, line_start: &str) -> f64 {
    let (_, text) = get_text(&format!("{}/metrics", vend.url));
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `done` holds, for at most 30 s.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What the killed issue left before the restart.
struct Left {
    /// Whether a lease row was written.
    row: bool,
    /// Whether Garage holds a key for the lease.
    key: bool,
}

fn crash_at(point: &str, left: Left) {
    let Some(g) = garage() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    // The database and audit log outlive both processes.
    let state = tempfile::tempdir().unwrap();
    let audit = state.path().join("audit.log");
    let env = vec![
        (
            "ARTIFACTSTORE_VEND_DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                state.path().join("leases.db").display()
            ),
        ),
        ("ARTIFACTSTORE_VEND_AUDIT_LOG", audit.display().to_string()),
    ];
    let mut with_hook = env.clone();
    with_hook.push(("ARTIFACTSTORE_TEST_HOOK_CRASH_AT", point.to_owned()));

    let mut first = Vend::start(
        &issuer,
        Some(&g),
        setup("examples/vend-garage.toml", RECONCILE, &with_hook),
    );
    let token = issuer.token(writer_claims(&format!("crash-{point}")));
    let answer = try_credentials(&first.url, &token);
    assert!(
        answer.is_err(),
        "{point}: the process must die before answering, got {answer:?}"
    );
    let logs = first.logs();
    assert!(
        logs.contains(&format!("test hook: killing the process at {point}")),
        "{point}: {logs}"
    );
    first.stop();

    // The allow line was synced before the crash; it names the lease.
    let allow = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["event"] == "decision" && l["decision"] == "allow")
        .unwrap_or_else(|| panic!("{point}: no allow line"));
    let lease_id = allow["lease_id"].as_str().unwrap().to_owned();
    let keys_left = keys_of(&g, &lease_id);
    assert_eq!(
        !keys_left.is_empty(),
        left.key,
        "{point}: keys left in Garage: {keys_left:?}"
    );

    let vend = Vend::start(
        &issuer,
        Some(&g),
        setup("examples/vend-garage.toml", RECONCILE, &env),
    );
    let row = |vend: &Vend| {
        vend.leases()
            .into_iter()
            .find(|l| l["id"] == lease_id.as_str())
    };
    assert_eq!(
        row(&vend).is_some(),
        left.row,
        "{point}: {:?}",
        vend.leases()
    );
    // Reconciliation fails what stayed pending once it is past the bound.
    wait_for(&format!("{point}: no pending lease"), || {
        vend.leases().iter().all(|l| l["state"] != "pending")
    });

    // Garage and the lease table agree: every key of a lease of ours has that lease
    // live, with that very key.
    let leases = vend.leases();
    for (id, name) in named_keys(&g) {
        let Some(of) = name.strip_prefix(KEY_PREFIX) else {
            continue;
        };
        if of != lease_id && !leases.iter().any(|l| l["id"] == of) {
            continue; // another test's vend service
        }
        let lease = leases
            .iter()
            .find(|l| l["id"] == of)
            .unwrap_or_else(|| panic!("{point}: key {name} has no lease row"));
        assert!(
            lease["state"] == "active" && lease["access_key_id"] == id.as_str(),
            "{point}: key {name} without a live lease: {lease}"
        );
    }

    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let reconciled: Vec<Value> = audit_text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["event"] == "lease.reconciled")
        .collect();
    let pending_failed = metric(
        &vend,
        "artifactstore_vend_reconciled_total{action=\"pending_failed\"}",
    );
    match row(&vend) {
        None => {
            assert!(!left.row);
            assert!(reconciled.is_empty(), "{reconciled:?}");
            assert_eq!(pending_failed, 0.0);
        }
        Some(lease) if lease["state"] == "active" => {
            // Killed after activation: the key has a live lease (it ends at expiry or
            // by revocation), so there is nothing to reconcile.
            assert_eq!(keys_of(&g, &lease_id), [lease["access_key_id"].clone()]);
            assert!(reconciled.is_empty(), "{reconciled:?}");
        }
        Some(lease) => {
            assert_eq!(lease["state"], "failed", "{lease}");
            assert_eq!(lease["end_reason"], "pending past the reconciliation bound");
            assert!(keys_of(&g, &lease_id).is_empty());
            assert_eq!(pending_failed, 1.0);
            assert_eq!(reconciled.len(), 1, "{reconciled:?}");
            let line = &reconciled[0];
            assert_eq!(line["lease_id"], lease_id.as_str());
            let detail = line["detail"].as_str().unwrap();
            assert!(detail.contains("pending_failed"), "{detail}");
            if left.key {
                // The key the row never recorded is named in the line, as its HMAC.
                assert!(detail.starts_with("upstream: deleted;"), "{detail}");
                assert!(line["access_key_hmac"].as_str().is_some(), "{line}");
            }
        }
    }
    for key in &keys_left {
        assert!(
            !audit_text.contains(key.as_str()),
            "{point}: key id in the audit log"
        );
    }
    let out = run_cli(&["vend", "audit", "verify", audit.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{point}: the audit chain across the crash: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn killed_after_the_allow_line_leaves_nothing_to_reconcile() {
    crash_at(
        "after-allow",
        Left {
            row: false,
            key: false,
        },
    );
}

#[test]
fn killed_after_the_lease_row_the_pending_lease_is_failed() {
    crash_at(
        "after-lease-row",
        Left {
            row: true,
            key: false,
        },
    );
}

#[test]
fn killed_after_minting_the_unrecorded_key_is_deleted_and_the_lease_failed() {
    crash_at(
        "after-mint",
        Left {
            row: true,
            key: true,
        },
    );
}

#[test]
fn killed_after_activation_the_key_keeps_its_live_lease() {
    crash_at(
        "after-activate",
        Left {
            row: true,
            key: true,
        },
    );
}

/// A key whose lease has ended — a mint that outlasted the bound, a revocation whose
/// upstream delete failed — is deleted by the next round.
#[test]
fn a_key_that_outlived_its_lease_is_deleted() {
    let Some(g) = garage() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let vend = Vend::start(
        &issuer,
        Some(&g),
        setup("examples/vend-garage.toml", RECONCILE, &[]),
    );
    // A lease issued and revoked; then a key appears under its name, as one would
    // from a mint that outlasted its lease or a delete that never reached Garage.
    let token = issuer.token(writer_claims("crash-orphan"));
    let (status, creds, _) = vend.credentials(&token, json!({}));
    assert_eq!(status, 200, "{creds}");
    let lease_id = creds["lease_id"].as_str().unwrap().to_owned();
    let (status, body) = vend.admin(
        "POST",
        "/v1/admin/revocations",
        Some(json!({"kind": "lease", "id": lease_id, "reason": "test"})),
    );
    assert_eq!(status, 200, "{body}");
    assert!(keys_of(&g, &lease_id).is_empty());
    let late = {
        let url = format!("{}/v2/CreateKey", g.admin_url);
        let token = g.admin_token.clone();
        let name = format!("{KEY_PREFIX}{lease_id}");
        let body: Value = block_on(async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"name": name}));
            r.send().await.unwrap().json().await.unwrap()
        });
        body["accessKeyId"].as_str().unwrap().to_owned()
    };
    wait_for("the orphan key deleted", || {
        keys_of(&g, &lease_id).is_empty()
    });
    assert!(
        metric(
            &vend,
            "artifactstore_vend_reconciled_total{action=\"orphan_key_deleted\"}"
        ) >= 1.0
    );
    let line = vend
        .audit_lines()
        .into_iter()
        .find(|l| l["event"] == "lease.reconciled" && l["lease_id"] == lease_id.as_str())
        .expect("a lease.reconciled line");
    assert!(
        line["detail"]
            .as_str()
            .unwrap()
            .contains("orphan_key_deleted"),
        "{line}"
    );
    assert!(line["access_key_hmac"].as_str().is_some(), "{line}");
    assert!(
        !std::fs::read_to_string(&vend.audit)
            .unwrap()
            .contains(&late)
    );
}
