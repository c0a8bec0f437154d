//! Vending against real upstreams: Garage (the fixture of the S3 tests) and moto's
//! STS in auth mode.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::live_or_skip;
use crate::helpers::*;

pub fn setup(example: &'static str, extra: &str, env: &[(&str, String)]) -> VendSetup<'static> {
    VendSetup {
        example,
        extra: extra.to_owned(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        listen: None,
    }
}

pub fn write_token(dir: &std::path::Path, name: &str, token: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, token).unwrap();
    p
}

fn web_identity_env(
    g: &Garage,
    vend: &Vend,
    token_file: &std::path::Path,
    role: &str,
) -> Vec<(&'static str, String)> {
    with_web_identity(s3_env(g), vend, token_file, role)
}

fn static_env(g: &Garage, creds: &Value) -> Vec<(&'static str, String)> {
    with_keys(s3_env(g), creds, true)
}

/// Garage, the issuer, and the vend service on `examples/vend-garage.toml` exactly
/// as shipped (only the quickstart's environment differs).
fn garage_example() -> Option<(Garage, Issuer, Vend)> {
    let g = garage()?;
    let issuer = Issuer::start()?;
    let vend = Vend::start(
        &issuer,
        Some(&g),
        setup("examples/vend-garage.toml", "", &[]),
    );
    Some((g, issuer, vend))
}

fn key(name: &str) -> String {
    format!("vend-e2e/{}/{name}", std::process::id())
}

#[test]
fn unmodified_boto3_writes_and_reads_garage_with_web_identity_credentials() {
    let Some(g) = garage() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let vend = Vend::start(
        &issuer,
        Some(&g),
        setup("examples/vend-garage.toml", "", &[]),
    );
    let writer = write_token(
        vend.dir.path(),
        "writer.jwt",
        &issuer.token(writer_claims("repo:acme/app:ref:main")),
    );
    let reader = write_token(
        vend.dir.path(),
        "reader.jwt",
        &issuer.token(json!({"sub": "dashboard", "aud": AUDIENCE, "groups": ["artifact-readers"]})),
    );

    let k = key("boto3");
    let put = boto3(
        "put",
        &k,
        &web_identity_env(&g, &vend, &writer, "ci-writer"),
    );
    assert_eq!(put["ok"], true, "{put}");
    assert_eq!(put["method"], "assume-role-with-web-identity", "{put}");
    let writer_key = put["access_key_id"].as_str().unwrap().to_owned();
    assert!(writer_key.starts_with("GK"), "a Garage key: {put}");
    let got = boto3(
        "get",
        &k,
        &web_identity_env(&g, &vend, &writer, "ci-writer"),
    );
    assert_eq!(
        (&got["ok"], &got["same"]),
        (&json!(true), &json!(true)),
        "{got}"
    );

    // The reader role reads, and Garage refuses its writes.
    let got = boto3("get", &k, &web_identity_env(&g, &vend, &reader, "reader"));
    assert_eq!(got["same"], true, "{got}");
    let denied = boto3(
        "put",
        &key("reader-write"),
        &web_identity_env(&g, &vend, &reader, "reader"),
    );
    assert_eq!(denied["ok"], false, "{denied}");
    assert_eq!(denied["status"], 403, "{denied}");

    // Leases record who got what; the audit log has the decision and the issued key
    // (as an HMAC only).
    let leases = vend.leases();
    let lease = leases
        .iter()
        .find(|l| l["access_key_id"] == writer_key.as_str())
        .unwrap_or_else(|| panic!("{leases:?}"));
    assert_eq!(lease["role"], "ci-writer");
    assert_eq!(lease["state"], "active");
    assert_eq!(lease["subject"], "repo:acme/app:ref:main");
    assert_eq!(lease["issuer"], issuer.url.as_str());
    let lines = vend.audit_lines();
    let issued: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "lease.issued" && l["lease_id"] == lease["id"])
        .collect();
    assert_eq!(issued.len(), 1, "{lines:?}");
    assert_eq!(issued[0]["format"], "sts");
    assert_eq!(issued[0]["role"], "ci-writer");
    assert!(issued[0]["access_key_hmac"].as_str().unwrap().len() == 64);
    assert!(lines.iter().any(|l| l["event"] == "decision"
        && l["lease_id"] == lease["id"]
        && l["decision"] == "allow"));

    // Canaries: the admin token, every secret handed out and every token stay out of
    // logs and the audit log.
    let (status, creds, _) =
        vend.credentials(&std::fs::read_to_string(&writer).unwrap(), json!({}));
    assert_eq!(status, 200, "{creds}");
    // A client is told to come back before expiry: by the window (5 min of a 1 h
    // lease), less up to a fifth of it.
    let at = |k: &str| {
        time::OffsetDateTime::parse(
            creds[k].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp()
    };
    let early = at("expiration") - at("refresh_after");
    assert!(
        (300..=360).contains(&early),
        "refresh_after is {early} s before expiry"
    );
    let secret = creds["secret_access_key"].as_str().unwrap();
    let audit = std::fs::read_to_string(&vend.audit).unwrap();
    let logs = vend.logs();
    for (what, canary) in [
        ("admin token", g.admin_token.as_str()),
        ("vend admin token", vend.admin_token.as_str()),
        ("secret key", secret),
        (
            "writer token",
            std::fs::read_to_string(&writer).unwrap().trim(),
        ),
        (
            "reader token",
            std::fs::read_to_string(&reader).unwrap().trim(),
        ),
        ("access key id", writer_key.as_str()),
    ] {
        assert!(!audit.contains(canary), "{what} in the audit log");
        assert!(
            !logs.contains(canary) || what == "access key id",
            "{what} in the logs"
        );
    }
    let (_, metrics) = get_text(&format!("{}/metrics", vend.url));
    assert!(!metrics.contains(secret));
    assert!(metrics.contains("artifactstore_vend_decisions_total{reason=\"allow\"} "));
    let (status, text) = get_text(&format!("{}/readyz", vend.url));
    assert_eq!(status, 200, "{text}");
    boto3("delete", &k, &static_env(&g, &creds));
}

#[test]
fn leases_expire_on_garage_and_revoked_keys_stop_working() {
    let Some(g) = garage() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let extra = r#"
[[roles]]
name = "short"
driver = "garage"
bucket = "${env:ARTIFACTSTORE_VEND_BUCKET}"
actions = ["read", "write", "list", "delete"]
min_duration_secs = 5
max_duration_secs = 300
default_duration_secs = 120
rules = [{ groups = { contains = "short-lived" } }]

[reaper]
interval_secs = 2
"#;
    let vend = Vend::start(
        &issuer,
        Some(&g),
        setup(
            "examples/vend-garage.toml",
            extra,
            &[("ARTIFACTSTORE_TEST_HOOK_LEASE_FLOOR_SECS", "5".into())],
        ),
    );
    let token = issuer.token(json!({"sub": "job-7", "aud": AUDIENCE, "groups": ["short-lived"]}));

    // Expiry: Garage refuses the key once the lease is over; the reaper deletes it.
    let (status, creds, _) = vend.credentials(&token, json!({"duration_seconds": 6}));
    assert_eq!(status, 200, "{creds}");
    let started = Instant::now();
    let k = key("expiring");
    assert_eq!(boto3("put", &k, &static_env(&g, &creds))["ok"], true);
    std::thread::sleep(Duration::from_secs(7).saturating_sub(started.elapsed()));
    let refused = boto3("get", &k, &static_env(&g, &creds));
    assert_eq!(
        refused["ok"], false,
        "an expired lease still works: {refused}"
    );
    assert_eq!(refused["status"], 403, "{refused}");
    let id = creds["access_key_id"].as_str().unwrap().to_owned();
    let lease_id = creds["lease_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, lease) = vend.admin("GET", &format!("/v1/admin/leases/{lease_id}"), None);
        if lease["state"] == "expired" && !g.key_ids().contains(&id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reaper did not end the lease: {lease}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Revoking a lease deletes its key upstream at once.
    let (_, creds, _) = vend.credentials(&token, json!({}));
    assert_eq!(boto3("get", &k, &static_env(&g, &creds))["ok"], true);
    let (status, outcome) = vend.admin(
        "POST",
        "/v1/admin/revocations",
        Some(json!({"kind": "lease", "id": creds["lease_id"], "reason": "leaked in a build log"})),
    );
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["leases"][0]["upstream"], "deleted", "{outcome}");
    assert!(
        !g.key_ids()
            .contains(&creds["access_key_id"].as_str().unwrap().to_owned())
    );
    let refused = boto3("get", &k, &static_env(&g, &creds));
    assert_eq!(
        (&refused["ok"], &refused["status"]),
        (&json!(false), &json!(403)),
        "{refused}"
    );

    // Revoking a subject (with the CLI) ends its leases and refuses it from then on.
    let (_, creds, _) = vend.credentials(&token, json!({}));
    let out = run_cli(&[
        "vend",
        "revoke",
        "--vend-url",
        &vend.url,
        "--admin-token-file",
        vend.admin_token_file.to_str().unwrap(),
        "--issuer",
        &issuer.url,
        "--subject",
        "job-7",
        "--reason",
        "job compromised",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("revoked 1 lease(s)"), "{stdout}");
    assert!(stdout.contains("upstream: deleted"), "{stdout}");
    assert_eq!(boto3("get", &k, &static_env(&g, &creds))["ok"], false);
    assert_eq!(vend.credentials(&token, json!({})).2, "subject_revoked");
    let lines = vend.audit_lines();
    assert!(lines.iter().any(|l| l["event"] == "lease.expired"));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["event"] == "lease.revoked")
            .count(),
        2
    );
    let out = run_cli(&["vend", "audit", "verify", vend.audit.to_str().unwrap()]);
    assert!(out.status.success());
}

#[test]
fn an_unwritable_audit_log_issues_nothing_and_an_edited_line_is_detected() {
    // It checks that Garage gained no key at all.
    let _alone = garage_alone();
    let Some((g, issuer, vend)) = garage_example() else {
        return;
    };
    let token = issuer.token(writer_claims("audited"));
    assert_eq!(vend.credentials(&token, json!({})).0, 200);
    let leases_before = vend.leases().len();
    let keys_before = g.key_ids();

    let saved = vend.audit.with_extension("saved");
    std::fs::rename(&vend.audit, &saved).unwrap();
    std::fs::create_dir(&vend.audit).unwrap();
    let (status, body, reason) = vend.credentials(&token, json!({}));
    assert_eq!(
        (status, reason.as_str()),
        (503, "audit_unavailable"),
        "{body}"
    );
    assert!(body.get("secret_access_key").is_none());
    let (status, xml) = vend.sts(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("WebIdentityToken", &token),
    ]);
    assert_eq!(status, 503, "{xml}");
    assert!(
        xml.contains("<Code>ServiceUnavailable</Code>") && xml.contains("audit_unavailable"),
        "{xml}"
    );
    assert_eq!(
        vend.leases().len(),
        leases_before,
        "no lease without an audit record"
    );
    assert_eq!(g.key_ids(), keys_before, "no key created upstream");
    let (status, text) = get_text(&format!("{}/readyz", vend.url));
    assert_eq!(status, 503);
    assert!(text.contains(r#""audit":"failing""#), "{text}");

    std::fs::remove_dir(&vend.audit).unwrap();
    std::fs::rename(&saved, &vend.audit).unwrap();
    assert_eq!(vend.credentials(&token, json!({})).0, 200);
    let out = run_cli(&["vend", "audit", "verify", vend.audit.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // An edited line fails its own MAC under the chain key (generated beside the log).
    let text = std::fs::read_to_string(&vend.audit).unwrap();
    let edited = vend.dir.path().join("edited.log");
    std::fs::write(
        &edited,
        text.replacen("\"subject\":\"audited\"", "\"subject\":\"someone-else\"", 1),
    )
    .unwrap();
    let key_ref = format!(
        "file:{}",
        vend.dir.path().join("audit.log.chain-key").display()
    );
    let out = run_cli(&[
        "vend",
        "audit",
        "verify",
        edited.to_str().unwrap(),
        "--key-ref",
        &key_ref,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{stdout}");
    assert!(stdout.contains("BROKEN at line 2"), "{stdout}");
}

#[test]
fn credential_process_and_container_credentials_work_with_unmodified_boto3() {
    let Some((g, issuer, vend)) = garage_example() else {
        return;
    };
    let dir = vend.dir.path();
    let writer = write_token(dir, "w.jwt", &issuer.token(writer_claims("ctr")));
    let reader = write_token(
        dir,
        "r.jwt",
        &issuer.token(json!({"sub": "proc", "aud": AUDIENCE, "groups": ["artifact-readers"]})),
    );

    // Container credentials, the way ECS/EKS-style providers fetch them.
    let mut env = s3_env(&g);
    env.push((
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        format!("{}/v1/container-credentials", vend.url),
    ));
    env.push((
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        writer.display().to_string(),
    ));
    let k = key("container");
    let put = boto3("put", &k, &env);
    assert_eq!(put["ok"], true, "{put}");
    assert_eq!(put["method"], "container-role", "{put}");

    // credential_process, straight from the CLI.
    let out = run_cli(&[
        "creds",
        "process",
        "--vend-url",
        &vend.url,
        "--token-file",
        reader.to_str().unwrap(),
        "--role",
        "reader",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["Version"], 1);
    for field in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(
            printed[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}"
        );
    }
    // ... and through boto3's credential_process setting.
    let config = dir.join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[default]\ncredential_process = {} creds process --vend-url {} --token-file {} --role reader\n",
            common_bin(),
            vend.url,
            reader.display()
        ),
    )
    .unwrap();
    let mut env = s3_env(&g);
    env.push(("AWS_CONFIG_FILE", config.display().to_string()));
    let got = boto3("get", &k, &env);
    assert_eq!(
        (&got["ok"], &got["same"]),
        (&json!(true), &json!(true)),
        "{got}"
    );
    assert_eq!(got["method"], "custom-process", "{got}");

    // A refused token: a clear message on stderr, nothing secret, exit 1.
    let bad = write_token(
        dir,
        "bad.jwt",
        &issuer.token(json!({"sub": "x", "aud": "wrong"})),
    );
    let out = run_cli(&[
        "creds",
        "process",
        "--vend-url",
        &vend.url,
        "--token-file",
        bad.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("audience_mismatch"), "{stderr}");
    assert!(!stderr.contains(std::fs::read_to_string(&bad).unwrap().trim()));
    assert!(out.stdout.is_empty());
}

fn common_bin() -> &'static str {
    crate::common::BIN
}

pub struct Moto {
    child: Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates the IAM user (whose keys sign AssumeRole), the role and the bucket.
pub fn bootstrap_moto(moto: &Moto) -> Value {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vend/moto_bootstrap.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&moto.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(out.stdout.lines().last().unwrap().unwrap().as_bytes()).unwrap()
}

/// The environment of a vend config whose `sts` driver assumes moto's bootstrapped
/// role with the key in the files `ak` and `sk`.
pub fn moto_sts_env(
    moto: &Moto,
    boot: &Value,
    ak: &std::path::Path,
    sk: &std::path::Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("ARTIFACTSTORE_VEND_BUCKET", "artifacts".to_owned()),
        ("ARTIFACTSTORE_VEND_STS_ENDPOINT_URL", moto.url.clone()),
        (
            "ARTIFACTSTORE_VEND_STS_ACCESS_KEY_ID_REF",
            format!("file:{}", ak.display()),
        ),
        (
            "ARTIFACTSTORE_VEND_STS_SECRET_ACCESS_KEY_REF",
            format!("file:{}", sk.display()),
        ),
        (
            "ARTIFACTSTORE_VEND_STS_ROLE_ARN",
            boot["role_arn"].as_str().unwrap().to_owned(),
        ),
    ]
}

pub fn start_moto() -> Option<Moto> {
    let have = Command::new("python3")
        .args(["-c", "import moto.server, flask"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !live_or_skip(
        have,
        "moto[server] (pip install 'moto[server]')",
        REQUIRE_VEND_DEPS,
    ) {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "6")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let moto = Moto { child, url };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(moto)
}

#[test]
fn the_sts_driver_assumes_a_role_at_moto_with_a_scoped_session_policy() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let Some(moto) = start_moto() else { return };
    let boot = bootstrap_moto(&moto);
    let dir = tempfile::tempdir().unwrap();
    let ak = dir.path().join("ak");
    let sk = dir.path().join("sk");
    std::fs::write(&ak, boot["access_key_id"].as_str().unwrap()).unwrap();
    std::fs::write(&sk, boot["secret_access_key"].as_str().unwrap()).unwrap();
    let sts_env = |secret: &std::path::Path| moto_sts_env(&moto, &boot, &ak, secret);
    let extra = r#"
[[roles]]
name = "team"
driver = "sts"
bucket = "${env:ARTIFACTSTORE_VEND_BUCKET}"
prefixes = ["teams/${team}/"]
actions = ["read", "list"]
rules = [{ groups = { contains = "team-readers" } }]
"#;
    let vend = Vend::start(
        &issuer,
        None,
        setup("examples/vend-sts.toml", extra, &sts_env(&sk)),
    );
    let (status, text) = get_text(&format!("{}/readyz", vend.url));
    assert_eq!(status, 200, "{text}");

    // Unmodified boto3 through web identity; S3 at moto with the session it got.
    let token = write_token(
        dir.path(),
        "w.jwt",
        &issuer.token(writer_claims("repo:acme/app")),
    );
    let env = vec![
        ("T_S3_ENDPOINT", moto.url.clone()),
        ("T_REGION", "us-east-1".to_owned()),
        ("T_BUCKET", "artifacts".to_owned()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::000000000000:role/ci-writer".to_owned(),
        ),
        ("AWS_ENDPOINT_URL_STS", vend.url.clone()),
    ];
    let put = boto3("put", "ci/report.md", &env);
    assert_eq!(put["ok"], true, "{put}");
    let session_key = put["access_key_id"].as_str().unwrap().to_owned();

    // What moto recorded for that AssumeRole: our upstream role, the session policy
    // generated from the role, the lease's duration.
    let (_, data) = get_json(&format!("{}/moto-api/data.json", moto.url));
    let assumed = find_assumed_role(&data, &session_key).unwrap_or_else(|| panic!("{data}"));
    assert_eq!(assumed["role_arn"], boot["role_arn"]);
    let policy: Value = serde_json::from_str(
        assumed["policy"]
            .as_str()
            .unwrap_or_else(|| panic!("{assumed}")),
    )
    .unwrap();
    let text = policy.to_string();
    assert!(text.contains("arn:aws:s3:::artifacts/*"), "{text}");
    for action in [
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:ListBucket",
    ] {
        assert!(text.contains(action), "{action} missing: {text}");
    }

    // A prefix-scoped role: object actions on its prefix only, listing conditioned.
    let team = issuer.token(
        json!({"sub": "dash", "aud": AUDIENCE, "groups": ["team-readers"], "team": "payments"}),
    );
    let (status, creds, _) =
        vend.credentials(&team, json!({"role": "team", "duration_seconds": 900}));
    assert_eq!(status, 200, "{creds}");
    assert_eq!(creds["prefixes"], json!(["teams/payments/"]));
    let (_, data) = get_json(&format!("{}/moto-api/data.json", moto.url));
    let assumed = find_assumed_role(&data, creds["access_key_id"].as_str().unwrap()).unwrap();
    let policy: Value = serde_json::from_str(assumed["policy"].as_str().unwrap()).unwrap();
    assert_eq!(
        policy["Statement"][0]["Resource"],
        json!(["arn:aws:s3:::artifacts/teams/payments/*"])
    );
    assert_eq!(
        policy["Statement"][0]["Action"],
        json!(["s3:GetObject", "s3:GetObjectVersion"])
    );
    assert_eq!(policy["Statement"][1]["Action"], json!(["s3:ListBucket"]));
    assert_eq!(
        policy["Statement"][1]["Condition"]["StringLike"]["s3:prefix"],
        json!(["teams/payments/*"])
    );
    let lifetime = seconds_left(&creds);
    assert!((880..=905).contains(&lifetime), "lifetime {lifetime}");
    // The session needs its token: moto refuses the key without it.
    let mut no_token = vec![
        ("T_S3_ENDPOINT", moto.url.clone()),
        ("T_REGION", "us-east-1".to_owned()),
        ("T_BUCKET", "artifacts".to_owned()),
        ("T_AK", creds["access_key_id"].as_str().unwrap().to_owned()),
        (
            "T_SK",
            creds["secret_access_key"].as_str().unwrap().to_owned(),
        ),
    ];
    assert_eq!(boto3("get", "ci/report.md", &no_token)["ok"], false);
    no_token.push(("T_ST", creds["session_token"].as_str().unwrap().to_owned()));
    assert_eq!(boto3("get", "ci/report.md", &no_token)["ok"], true);

    // STS sessions cannot be revoked upstream, and the answer says so.
    let (_, outcome) = vend.admin(
        "POST",
        "/v1/admin/revocations",
        Some(json!({"kind": "lease", "id": creds["lease_id"], "reason": "test"})),
    );
    assert_eq!(outcome["leases"][0]["upstream"], "unsupported", "{outcome}");

    // Signed with a wrong secret: moto refuses, the vend service says upstream and
    // records a failed lease.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-secret").unwrap();
    let bad = Vend::start(
        &issuer,
        None,
        setup("examples/vend-sts.toml", "", &sts_env(&wrong)),
    );
    let (status, body, reason) =
        bad.credentials(&std::fs::read_to_string(&token).unwrap(), json!({}));
    assert_eq!(
        (status, reason.as_str()),
        (503, "upstream_unavailable"),
        "{body}"
    );
    // The upstream's words and endpoint are for the service's log, not the caller.
    assert!(
        !body.to_string().contains("SignatureDoesNotMatch"),
        "{body}"
    );
    assert!(!body.to_string().contains(&moto.url), "{body}");
    assert!(
        bad.logs().contains("SignatureDoesNotMatch"),
        "{}",
        bad.logs()
    );
    assert!(!body.to_string().contains("not-the-secret"));
    assert_eq!(bad.leases()[0]["state"], "failed");
    let (status, text) = get_text(&format!("{}/readyz", bad.url));
    assert_eq!(status, 503);
    assert!(text.contains(r#""drivers.sts":"failing""#), "{text}");
    assert!(
        !bad.logs().contains("not-the-secret")
            && !vend
                .logs()
                .contains(boot["secret_access_key"].as_str().unwrap())
    );
}

fn find_assumed_role<'a>(data: &'a Value, access_key_id: &str) -> Option<&'a Value> {
    match data {
        Value::Object(map) => {
            // The STS record of the session (the IAM key record has no session name).
            if map.get("access_key_id").and_then(Value::as_str) == Some(access_key_id)
                && map.contains_key("session_name")
            {
                return Some(data);
            }
            map.values()
                .find_map(|v| find_assumed_role(v, access_key_id))
        }
        Value::Array(items) => items
            .iter()
            .find_map(|v| find_assumed_role(v, access_key_id)),
        _ => None,
    }
}
