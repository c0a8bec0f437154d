//! Break-glass against Garage: refused while off, without a reason, with a wrong
//! credential (audited critical, then rate-limited); allowed with the right one —
//! capped, audited critical, the webhook called, listed apart — and revoked, after
//! which Garage refuses the key. The credential's hash is made by `vend
//! hash-credential`, and one lease is taken through `vend break-glass`.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{BIN, block_on};
use crate::helpers::*;
use crate::live::setup;

const CREDENTIAL: &str = "bg-live-credential-6f1d0c2a9e4b";
/// One attempt back per 10 s: far longer than the test needs for the attempts that must
/// find the client's bucket empty, on however slow a machine.
const REFILL_SECS: u64 = 10;

/// A webhook receiver on 127.0.0.1: every POST body it gets, answered 204. It serves
/// at most `max` requests, each read within 5 s.
fn webhook_receiver(max: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_ok() {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// `POST /v1/break-glass` with `credential` (if any) and `body`: status, JSON, the
/// `Retry-After` header.
fn attempt(vend: &Vend, credential: Option<&str>, body: Value) -> (u16, Value, Option<u64>) {
    let url = format!("{}/v1/break-glass", vend.url);
    let credential = credential.map(str::to_owned);
    block_on(async move {
        let mut req = reqwest::Client::new().post(url).json(&body);
        if let Some(c) = credential {
            req = req.bearer_auth(c);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        (status, r.json().await.unwrap_or(Value::Null), retry)
    })
}

fn critical_lines(vend: &Vend, event: &str) -> Vec<Value> {
    vend.audit_lines()
        .into_iter()
        .filter(|l| l["event"] == event && l["severity"] == "critical")
        .collect()
}

fn metric(vend: &Vend, line_start: &str) -> f64 {
    let (_, text) = get_text(&format!("{}/metrics", vend.url));
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in {text}"))
}

/// `vend hash-credential` with `input` on stdin.
fn run_hash_credential(input: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["vend", "hash-credential"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `vend hash-credential` with the credential on stdin.
fn hash_credential(credential: &str) -> String {
    let out = run_hash_credential(&format!("{credential}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    assert!(!phc.contains(credential));
    phc
}

#[test]
fn break_glass_on_garage_is_refused_limited_allowed_listed_and_revoked() {
    let Some(g) = garage() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };

    // Off by default: 404, and the attempt is still a critical line.
    {
        let off = Vend::start(
            &issuer,
            Some(&g),
            setup("examples/vend-garage.toml", "", &[]),
        );
        let (status, body, _) = attempt(
            &off,
            Some(CREDENTIAL),
            json!({"role": "ci-writer", "reason": "drill"}),
        );
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "break_glass_disabled", "{body}");
        assert_eq!(critical_lines(&off, "break_glass.refused").len(), 1);
    }

    let dir = tempfile::tempdir().unwrap();
    let hash_file = dir.path().join("break-glass.hash");
    std::fs::write(&hash_file, hash_credential(CREDENTIAL)).unwrap();
    let (hook_url, hooks) = webhook_receiver(16);
    let extra = format!(
        r#"
[[roles]]
name = "incident"
driver = "garage"
bucket = "${{env:ARTIFACTSTORE_VEND_BUCKET}}"
actions = ["read", "write", "list", "delete"]
min_duration_secs = 5
max_duration_secs = 300
rules = [{{ groups = {{ contains = "nobody-has-this-group" }} }}]

[break_glass]
credential_hash_ref = "file:{}"
roles = ["incident"]
max_duration_secs = 30
webhook_url = "{hook_url}"
attempts_burst = 3
attempts_per_minute = {per_minute}
# The global bucket holds every attempt this test makes that passes the client's (5).
global_attempts_burst = 20
global_attempts_per_minute = 20
"#,
        hash_file.display(),
        per_minute = 60 / REFILL_SECS,
    );
    let vend = Vend::start(
        &issuer,
        Some(&g),
        setup(
            "examples/vend-garage.toml",
            &extra,
            &[("ARTIFACTSTORE_TEST_HOOK_LEASE_FLOOR_SECS", "5".into())],
        ),
    );

    // Without a reason: 400, audited critical, nothing minted.
    // Other tests mint on the same Garage meanwhile, so "nothing minted" is told by this
    // service's lease table: a key is only ever created after its lease row.
    let leases_before = vend.leases().len();
    let (status, body, _) = attempt(&vend, Some(CREDENTIAL), json!({"role": "incident"}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reason is required"),
        "{body}"
    );
    // A wrong credential: 401, audited critical, the webhook told.
    for _ in 0..2 {
        let (status, body, _) = attempt(
            &vend,
            Some("not-the-credential"),
            json!({"role": "incident", "reason": "guessing"}),
        );
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "break_glass_credential_invalid");
    }
    let refused = critical_lines(&vend, "break_glass.refused");
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused.iter().all(|l| l["decision"] == "deny"));
    // The bucket of 127.0.0.1 is empty now: 429, even for the right credential, and
    // twenty more attempts add one audit line (the window's), not twenty. Its next
    // attempt is REFILL_SECS after the first of the three above.
    let lines_before = vend.audit_lines().len();
    let mut retry_after = None;
    for _ in 0..20 {
        let (status, body, retry) = attempt(
            &vend,
            Some(CREDENTIAL),
            json!({"role": "incident", "reason": "locked out"}),
        );
        assert_eq!(status, 429, "{body}");
        assert!(
            retry.is_some_and(|s| (1..=REFILL_SECS).contains(&s)),
            "{retry:?}"
        );
        retry_after = retry;
    }
    // One line opens the window; under a slow machine the window may also close, and
    // its summary is the second.
    let added = vend.audit_lines().len() - lines_before;
    assert!(
        (1..=2).contains(&added),
        "{added} audit lines for 20 refusals"
    );
    assert_eq!(
        vend.leases().len(),
        leases_before,
        "nothing minted while refused"
    );
    assert_eq!(
        metric(
            &vend,
            "artifactstore_vend_break_glass_attempts_total{result=\"refused\"}"
        ),
        23.0
    );

    // The bucket refills: the right credential gets a lease, capped at 30 s.
    std::thread::sleep(Duration::from_secs(retry_after.expect("Retry-After")));
    let (status, creds, _) = attempt(
        &vend,
        Some(CREDENTIAL),
        json!({"role": "incident", "reason": "issuer outage, hotfix release", "ticket": "INC-4711", "duration_secs": 3600}),
    );
    assert_eq!(status, 200, "{creds}");
    assert_eq!(creds["break_glass"], true);
    let left = seconds_left(&creds);
    assert!((20..=31).contains(&left), "capped at 30 s: {left} s left");
    let lease_id = creds["lease_id"].as_str().unwrap().to_owned();
    let allowed = critical_lines(&vend, "break_glass.allowed");
    assert_eq!(allowed.len(), 1, "{allowed:?}");
    assert_eq!(allowed[0]["lease_id"], lease_id.as_str());
    assert!(allowed[0]["detail"].as_str().unwrap().contains("INC-4711"));
    let issued = critical_lines(&vend, "lease.issued");
    assert_eq!(issued.len(), 1);
    let k = format!("vend-e2e/{}/break-glass", std::process::id());
    let env = with_keys(s3_env(&g), &creds, true);
    assert_eq!(boto3("put", &k, &env)["ok"], true);
    assert_eq!(boto3("get", &k, &env)["same"], true);

    // The webhook heard of the refusals and the use, without any secret.
    let deadline = Instant::now() + Duration::from_secs(10);
    let hooks = loop {
        let got = hooks.lock().unwrap().clone();
        if got.iter().any(|h| h["event"] == "break_glass.allowed") {
            break got;
        }
        assert!(Instant::now() < deadline, "webhook never called: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let used = hooks
        .iter()
        .find(|h| h["event"] == "break_glass.allowed")
        .unwrap();
    assert_eq!(used["lease_id"], lease_id.as_str());
    assert_eq!(used["role"], "incident");
    assert_eq!(used["ticket"], "INC-4711");
    assert_eq!(used["reason"], "issuer outage, hotfix release");
    assert!(used["expires_at"].is_string());
    // The refused lines keep the attempt's reason after the refusal's message.
    let wrong: Vec<Value> = critical_lines(&vend, "break_glass.refused")
        .into_iter()
        .filter(|l| l["reason"] == "token_invalid")
        .collect();
    assert_eq!(wrong.len(), 2, "{wrong:?}");
    assert!(
        wrong.iter().all(|l| l["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("the break-glass credential is wrong;")
                && d.contains("reason: guessing"))),
        "{wrong:?}"
    );
    assert_eq!(
        hooks
            .iter()
            .filter(|h| h["event"] == "break_glass.refused")
            .count(),
        2
    );
    let all = serde_json::to_string(&hooks).unwrap();
    assert!(!all.contains(CREDENTIAL));
    assert!(!all.contains(creds["secret_access_key"].as_str().unwrap()));
    assert!(!all.contains(creds["access_key_id"].as_str().unwrap()));

    // Through the CLI once, the credential from a file, once the attempt the lease took
    // is back.
    std::thread::sleep(Duration::from_secs(REFILL_SECS));
    let credential_file = dir.path().join("credential");
    std::fs::write(&credential_file, format!("{CREDENTIAL}\n")).unwrap();
    let out = run_cli(&[
        "--json",
        "vend",
        "break-glass",
        "--vend-url",
        &vend.url,
        "--role",
        "incident",
        "--reason",
        "cli drill",
        "--credential-file",
        credential_file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("WARNING: break-glass lease"), "{stderr}");
    let cli_creds: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli_creds["break_glass"], true);
    assert_eq!(
        boto3("get", &k, &with_keys(s3_env(&g), &cli_creds, true))["same"],
        true
    );
    // Without a file and without a terminal, the CLI refuses rather than block.
    let out = run_cli(&[
        "vend",
        "break-glass",
        "--vend-url",
        &vend.url,
        "--role",
        "incident",
        "--reason",
        "x",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Listed apart from ordinary leases.
    let (status, normal, _) =
        vend.credentials(&issuer.token(writer_claims("bg-neighbour")), json!({}));
    assert_eq!(status, 200, "{normal}");
    let (status, listed) = vend.admin("GET", "/v1/admin/leases?break_glass=true", None);
    assert_eq!(status, 200, "{listed}");
    let listed = listed["leases"].as_array().unwrap().clone();
    let ids: Vec<&str> = listed.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{listed:?}");
    assert!(ids.contains(&lease_id.as_str()));
    assert!(ids.contains(&cli_creds["lease_id"].as_str().unwrap()));
    assert!(listed.iter().all(|l| l["break_glass"] == true
        && l["subject"] == "break-glass"
        && l["break_glass_reason"].is_string()));
    let (_, ordinary) = vend.admin("GET", "/v1/admin/leases?break_glass=false", None);
    let ordinary = ordinary["leases"].as_array().unwrap().clone();
    assert_eq!(ordinary.len(), 1, "{ordinary:?}");
    assert_eq!(ordinary[0]["id"], normal["lease_id"]);

    // Revoked: Garage refuses the key at once.
    let (status, outcome) = vend.admin(
        "POST",
        "/v1/admin/revocations",
        Some(json!({"kind": "lease", "id": lease_id, "reason": "incident closed"})),
    );
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["leases"][0]["upstream"], "deleted", "{outcome}");
    let gone = boto3("get", &k, &env);
    assert_eq!(
        gone["ok"], false,
        "a revoked break-glass key still works: {gone}"
    );
    assert_eq!(gone["status"], 403, "{gone}");
    assert_eq!(
        metric(
            &vend,
            "artifactstore_vend_break_glass_attempts_total{result=\"allowed\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &vend,
            "artifactstore_vend_break_glass_webhook_failures_total"
        ),
        0.0
    );
    boto3("delete", &k, &with_keys(s3_env(&g), &cli_creds, true));
}

/// A webhook URL carries a token more often than not: given as `webhook_url_ref`, a
/// failed delivery (here to a closed port) is logged and counted without it.
#[test]
fn a_failing_webhook_never_logs_its_url() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    const CANARY: &str = "hook-canary-token-93b1e7";
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let hash_file = dir.path().join("break-glass.hash");
    std::fs::write(&hash_file, hash_credential(CREDENTIAL)).unwrap();
    let extra = format!(
        r#"
[break_glass]
credential_hash_ref = "file:{}"
roles = ["ci-writer"]
webhook_url_ref = "env:ARTIFACTSTORE_TEST_BREAK_GLASS_HOOK"
"#,
        hash_file.display()
    );
    let vend = Vend::start(
        &issuer,
        None,
        setup(
            "examples/vend-garage.toml",
            &extra,
            &[(
                "ARTIFACTSTORE_TEST_BREAK_GLASS_HOOK",
                format!("http://127.0.0.1:{closed}/services/{CANARY}?token={CANARY}"),
            )],
        ),
    );
    let (status, body, _) = attempt(
        &vend,
        Some("not-the-credential"),
        json!({"role": "ci-writer", "reason": "drill"}),
    );
    assert_eq!(status, 401, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(
        &vend,
        "artifactstore_vend_break_glass_webhook_failures_total",
    ) < 1.0
    {
        assert!(Instant::now() < deadline, "the delivery never failed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = vend.logs();
    assert!(
        logs.contains("break-glass webhook delivery failed"),
        "{logs}"
    );
    assert!(
        !logs.contains(CANARY),
        "the webhook URL is in the log: {logs}"
    );
    assert!(!logs.contains("/services/"), "{logs}");
}

/// A credential that starts or ends with whitespace could never be used (the service
/// and --credential-file trim it): hash-credential refuses it, saying why.
#[test]
fn hash_credential_refuses_surrounding_whitespace() {
    for input in [format!(" {CREDENTIAL}\n"), format!("{CREDENTIAL} \n")] {
        let out = run_hash_credential(&input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input:?}: {stderr}");
        assert!(stderr.contains("whitespace"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}
