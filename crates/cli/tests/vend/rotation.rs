//! The S3 backend on short-lived credentials, live: `artifactstore serve` whose only
//! way into Garage is a credential source — web identity at the vend service, the
//! container endpoint, a credential_process, a sidecar file — or AssumeRole at moto.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{BIN, block_on, spawn_announcing};
use crate::helpers::*;
use crate::live::{setup, write_token};

mod load;
mod sources;

/// A role whose leases live 10 s, for watching rotations: below the 900 s floor, which
/// only test builds (feature `test-lease-floor` of artifactstore-vend) let the
/// hook variable lower.
const ROTATING: &str = r#"
[[roles]]
name = "rotating"
driver = "garage"
bucket = "${env:ARTIFACTSTORE_VEND_BUCKET}"
actions = ["read", "write", "list", "delete"]
min_duration_secs = 5
max_duration_secs = 300
default_duration_secs = 10
rules = [{ groups = { contains = "rotating" } }]

[[roles]]
name = "rotating-b"
driver = "garage"
bucket = "${env:ARTIFACTSTORE_VEND_BUCKET}"
actions = ["read", "write", "list", "delete"]
min_duration_secs = 5
max_duration_secs = 300
default_duration_secs = 10
rules = [{ groups = { contains = "rotating-b" } }]

[reaper]
interval_secs = 1
"#;

fn rotating_vend(issuer: &Issuer, g: &Garage, listen: Option<String>) -> Vend {
    let mut s = setup(
        "examples/vend-garage.toml",
        ROTATING,
        &[("ARTIFACTSTORE_TEST_HOOK_LEASE_FLOOR_SECS", "5".into())],
    );
    s.listen = listen;
    Vend::start(issuer, Some(g), s)
}

/// Garage, the issuer, the vend service with the rotating roles, and a token file for
/// `sub` in the role `rotating`; the web-identity settings a server needs for it.
struct Rotating {
    issuer: Issuer,
    vend: Vend,
    token_file: std::path::PathBuf,
    env: Vec<(&'static str, String)>,
}

fn rotating(g: &Garage, sub: &str) -> Option<Rotating> {
    let issuer = Issuer::start()?;
    let vend = rotating_vend(&issuer, g, None);
    let token_file = write_token(
        vend.dir.path(),
        "t.jwt",
        &token_for(&issuer, sub, "rotating"),
    );
    let env = web_identity(&vend, &token_file, "rotating");
    Some(Rotating {
        issuer,
        vend,
        token_file,
        env,
    })
}

/// `artifactstore serve --backend s3` with exactly these credential settings.
struct Serve {
    child: Child,
    url: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(env: &[(&str, String)]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "s3",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env(
            "ARTIFACTSTORE_S3_PREFIX",
            format!("rotation-{}-{}/", std::process::id(), now()),
        )
        .env("ARTIFACTSTORE_S3_PART_SIZE", (5 << 20).to_string())
        .env("ARTIFACTSTORE_MAX_UPLOAD_SIZE", (10u64 << 30).to_string())
        .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, url) = spawn_announcing(cmd, "artifactstore listening on ", &log);
        Serve {
            child,
            url,
            log,
            _dir: dir,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// PUT then GET one small file; true when both worked and the bytes match.
    fn round_trip(&self, name: &str) -> bool {
        let url = format!("{}/v1/artifacts/rot/n/v1/{name}", self.url);
        let body = format!("content of {name}").into_bytes();
        block_on(async move {
            let c = reqwest::Client::new();
            let Ok(put) = c.put(&url).body(body.clone()).send().await else {
                return false;
            };
            if !put.status().is_success() {
                eprintln!(
                    "PUT {url}: {} {}",
                    put.status(),
                    put.text().await.unwrap_or_default()
                );
                return false;
            }
            let Ok(get) = c.get(&url).send().await else {
                return false;
            };
            get.status().is_success() && get.bytes().await.map(|b| b == body).unwrap_or(false)
        })
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, m) = get_text(&format!("{}/metrics", self.url));
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {m}"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn web_identity(
    vend: &Vend,
    token_file: &std::path::Path,
    role: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE", "web-identity".into()),
        (
            "ARTIFACTSTORE_S3_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("ARTIFACTSTORE_S3_STS_ENDPOINT_URL", vend.url.clone()),
        (
            "ARTIFACTSTORE_S3_ROLE_ARN",
            format!("arn:aws:iam::000000000000:role/{role}"),
        ),
        (
            "ARTIFACTSTORE_S3_CREDENTIALS_REFRESH_WINDOW_SECS",
            "5".into(),
        ),
    ]
}

fn token_for(issuer: &Issuer, sub: &str, group: &str) -> String {
    issuer.token(json!({"sub": sub, "aud": AUDIENCE, "groups": [group]}))
}

fn assert_no_secret_in(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "a secret or token appears in {what}");
    }
}

#[test]
fn uploads_and_downloads_keep_working_across_five_rotations() {
    let Some(g) = garage() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let vend = rotating_vend(&issuer, &g, None);
    let token = token_for(&issuer, "rotation", "rotating");
    let token_file = write_token(vend.dir.path(), "t.jwt", &token);
    let serve = Serve::start(&web_identity(&vend, &token_file, "rotating"));

    let started = Instant::now();
    let mut n = 0;
    while vend
        .leases()
        .iter()
        .filter(|l| l["subject"] == "rotation")
        .count()
        < 6
    {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no rotation after 90 s"
        );
        assert!(serve.round_trip(&format!("f{n}")), "request {n} failed");
        n += 1;
    }
    let leases: Vec<Value> = vend
        .leases()
        .into_iter()
        .filter(|l| l["subject"] == "rotation")
        .collect();
    assert!(leases.len() >= 6, "at least five rotations: {leases:?}");
    assert!(serve.metric("artifactstore_s3_credentials_refreshes_total") >= 6.0);
    assert_eq!(
        serve.metric("artifactstore_s3_credentials_refresh_failures_total"),
        0.0
    );
    assert!(serve.metric("artifactstore_s3_credentials_expiry_seconds") > 0.0);
    eprintln!("{n} round trips across {} credentials", leases.len());

    // The first keys have expired: the reaper ended their leases and Garage no longer
    // has them, so they fail on their own whatever artifact-store does.
    std::thread::sleep(Duration::from_secs(3));
    let keys = g.key_ids();
    let oldest = &leases[leases.len() - 1];
    let (_, lease) = vend.admin(
        "GET",
        &format!("/v1/admin/leases/{}", oldest["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(lease["state"], "expired", "{lease}");
    assert!(!keys.contains(&oldest["access_key_id"].as_str().unwrap().to_owned()));

    let (status, ready) = get_text(&format!("{}/readyz", serve.url));
    assert_eq!(status, 200, "{ready}");
    assert_no_secret_in("the server's logs", &serve.logs(), &[&token]);
}

#[test]
fn a_multipart_upload_spanning_rotations_completes_with_its_digest() {
    let Some(g) = garage() else { return };
    let Some(Rotating {
        issuer: _issuer,
        vend: _vend,
        token_file: _token_file,
        env,
    }) = rotating(&g, "multipart")
    else {
        return;
    };
    let serve = Serve::start(&env);
    assert!(serve.round_trip("warm-up"));
    let before = serve.metric("artifactstore_s3_credentials_refreshes_total");

    // 256 MiB, paced to take about 20 s: at least two 10-second credentials.
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 256;
    let chunk_of = |i: usize| -> Vec<u8> {
        let seed = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (0..CHUNK)
            .map(|j| (seed.wrapping_add(j as u64 * 31) >> 7) as u8)
            .collect()
    };
    let digest = {
        let mut h = artifactstore_model::Hasher::new();
        for i in 0..CHUNKS {
            h.update(&chunk_of(i));
        }
        h.finish()
    };
    let url = format!("{}/v1/artifacts/rot/big/v1/blob.bin", serve.url);
    let started = Instant::now();
    let (status, text) = block_on({
        let url = url.clone();
        let digest = digest.to_string();
        async move {
            let stream = futures::stream::iter(0..CHUNKS).then(move |i| async move {
                tokio::time::sleep(Duration::from_millis(80)).await;
                Ok::<_, std::io::Error>(bytes::Bytes::from(chunk_of(i)))
            });
            let r = reqwest::Client::new()
                .put(url)
                .header("X-Artifact-Digest", digest)
                .header("Content-Length", (CHUNK * CHUNKS).to_string())
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    let took = started.elapsed();
    assert_eq!(status, 201, "{text}");
    let during = serve.metric("artifactstore_s3_credentials_refreshes_total") - before;
    assert!(
        during >= 2.0,
        "the upload spanned {during} refreshes in {took:?}"
    );
    // Read it back through the server and check the digest.
    let got = block_on(async move {
        let r = reqwest::get(url).await.unwrap();
        assert_eq!(r.status(), 200);
        let mut h = artifactstore_model::Hasher::new();
        let mut s = r.bytes_stream();
        while let Some(chunk) = futures::StreamExt::next(&mut s).await {
            h.update(&chunk.unwrap());
        }
        h.finish()
    });
    assert_eq!(got, digest);
}

use futures::StreamExt as _;

#[test]
fn a_credential_deleted_upstream_is_replaced_and_the_request_retried_once() {
    let Some(g) = garage() else { return };
    let Some(Rotating {
        issuer,
        vend,
        token_file: _token_file,
        env,
    }) = rotating(&g, "revoked-under-us")
    else {
        return;
    };
    let mut env = env;
    env.push(("ARTIFACTSTORE_S3_CREDENTIALS_DURATION_SECS", "300".into()));
    let serve = Serve::start(&env);
    assert!(serve.round_trip("before"));
    // Delete the server's key upstream behind its back: the next requests are refused
    // with InvalidAccessKeyId (or a bodiless 403 for HEAD), which forces one refresh and
    // one retry each time — no request fails.
    for round in 0..2 {
        let (status, out) = vend.admin(
            "POST",
            "/v1/admin/revocations",
            Some(json!({"kind": "subject", "issuer": issuer.url, "subject": "revoked-under-us", "reason": "test"})),
        );
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["leases"][0]["upstream"], "deleted", "{out}");
        let (status, _) = vend.admin(
            "DELETE",
            "/v1/admin/revocations",
            Some(json!({"kind": "subject", "issuer": issuer.url, "subject": "revoked-under-us"})),
        );
        assert_eq!(status, 200);
        assert!(
            serve.round_trip(&format!("after-{round}")),
            "round {round}: {}",
            serve.logs()
        );
    }
    assert!(serve.metric("artifactstore_s3_credentials_forced_refreshes_total") >= 2.0);
}

#[test]
fn a_replaced_token_file_takes_effect_at_the_next_refresh() {
    let Some(g) = garage() else { return };
    let Some(Rotating {
        issuer,
        vend,
        token_file,
        env,
    }) = rotating(&g, "subject-a")
    else {
        return;
    };
    let mut env = env;
    // No RoleArn: the first role matching the token (MinIO's claim-based style).
    env.retain(|(k, _)| *k != "ARTIFACTSTORE_S3_ROLE_ARN");
    let serve = Serve::start(&env);
    assert!(serve.round_trip("a"));
    std::fs::write(&token_file, token_for(&issuer, "subject-b", "rotating-b")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        assert!(
            serve.round_trip(&format!("b{i}")),
            "request failed after the token changed"
        );
        i += 1;
        let leases = vend.leases();
        if let Some(b) = leases.iter().find(|l| l["subject"] == "subject-b") {
            assert_eq!(b["role"], "rotating-b");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new token was never used: {leases:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn serving_outlives_the_vend_service_until_the_credential_nears_expiry() {
    let Some(g) = garage() else { return };
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut vend = rotating_vend(&issuer, &g, Some(listen.clone()));
    let token_file = write_token(
        vend.dir.path(),
        "t.jwt",
        &token_for(&issuer, "outage", "rotating"),
    );
    let mut env = web_identity(&vend, &token_file, "rotating");
    env.push(("ARTIFACTSTORE_S3_CREDENTIALS_DURATION_SECS", "20".into()));
    env.retain(|(k, _)| *k != "ARTIFACTSTORE_S3_CREDENTIALS_REFRESH_WINDOW_SECS");
    env.push((
        "ARTIFACTSTORE_S3_CREDENTIALS_REFRESH_WINDOW_SECS",
        "8".into(),
    ));
    let serve = Serve::start(&env);
    assert!(serve.round_trip("before"));
    let expiry = serve.metric("artifactstore_s3_credentials_expiry_seconds");
    vend.stop();
    let stopped = Instant::now();
    // While the credential is valid (it is handed out until 2 s before expiry),
    // requests keep working even though every refresh fails.
    let mut n = 0;
    while stopped.elapsed().as_secs_f64() < expiry - 4.0 {
        assert!(
            serve.round_trip(&format!("during-{n}")),
            "request {n} failed while a valid credential existed"
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(serve.metric("artifactstore_s3_credentials_refresh_failures_total") >= 1.0);
    // Past it, the server says why it is not ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = get_text(&format!("{}/readyz", serve.url));
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "never unready: {body}");
        std::thread::sleep(Duration::from_millis(300));
    };
    // The answer says which check fails, the log says why; the endpoint and the
    // source's words stay out of the answer.
    assert!(body.contains("\"credentials\":\"failing\""), "{body}");
    assert!(!body.contains("cannot connect"), "{body}");
    assert!(!body.contains(listen.as_str()), "{body}");
    let logs = serve.logs();
    assert!(
        logs.contains("no valid credential from source web-identity"),
        "{logs}"
    );
    assert!(logs.contains("cannot connect"), "{logs}");
    // The vend service returns (same address): the server recovers on its own.
    let vend = rotating_vend(&issuer, &g, Some(listen));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = get_text(&format!("{}/readyz", serve.url));
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {body}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(serve.round_trip("after"));
    drop(vend);
}
