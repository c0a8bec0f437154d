//! `artifactstore storage verify` and the secret hygiene of the S3 configuration.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

/// These tests are about static keys, whatever source the environment chose.
fn static_keys() -> (&'static str, String) {
    ("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE", "static".into())
}

fn verify(envs: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["storage", "verify"]).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn canary(tag: &str) -> String {
    format!(
        "canary-{tag}-{}",
        &sha256_hex(format!("{tag}{:?}", std::time::SystemTime::now()).as_bytes())[..20]
    )
}

fn secret_file(dir: &Path, name: &str, value: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    format!("file:{}", p.display())
}

fn assert_no_leak(out: &Output, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !stdout(out).contains(s),
            "stdout leaks a secret:\n{}",
            stdout(out)
        );
        assert!(
            !stderr(out).contains(s),
            "stderr leaks a secret:\n{}",
            stderr(out)
        );
    }
}

#[test]
fn verify_passes_on_fs() {
    let dir = tempfile::tempdir().unwrap();
    let out = verify(
        &[],
        &[
            "--backend",
            "fs",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["ok"], true);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "health",
            "round trip",
            "ranged read",
            "multipart",
            "delete and cleanup"
        ]
    );
    // It cleans up after itself.
    let blobs = walk_files(&dir.path().join("blobs"));
    assert!(blobs.is_empty(), "verify left {blobs:?}");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk_files(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn unreachable_endpoint_fails_clearly_and_secret_free() {
    let dir = tempfile::tempdir().unwrap();
    let secret = canary("unreachable");
    let envs = [
        (
            "ARTIFACTSTORE_S3_ENDPOINT_URL",
            "http://127.0.0.1:1".to_string(),
        ),
        ("ARTIFACTSTORE_S3_BUCKET", "artifacts".to_string()),
        static_keys(),
        ("ARTIFACTSTORE_S3_MAX_ATTEMPTS", "1".to_string()),
        (
            "ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF",
            secret_file(dir.path(), "ak", "AKIDTEST"),
        ),
        (
            "ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF",
            secret_file(dir.path(), "sk", &secret),
        ),
    ];
    let out = verify(&envs, &["--backend", "s3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("cannot connect to the endpoint"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("127.0.0.1:1"));
    assert!(stdout(&out).contains("static (access_key_id from file, secret_access_key from file)"));
    assert_no_leak(&out, &[&secret]);

    // serve refuses to start on it, with the same clarity.
    let serve = Command::new(BIN)
        .args([
            "serve",
            "--backend",
            "s3",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .envs(envs.iter().map(|(k, v)| (*k, v.clone())))
        .output()
        .unwrap();
    assert_ne!(serve.status.code(), Some(0));
    assert!(
        stderr(&serve).contains("cannot connect to the endpoint"),
        "{}",
        stderr(&serve)
    );
    assert_no_leak(&serve, &[&secret]);
}

#[test]
fn secrets_as_plain_config_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = canary("plain");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("backend = \"s3\"\n[s3]\nbucket = \"b\"\nsecret_access_key = \"{secret}\"\n"),
    )
    .unwrap();
    let out = verify(&[static_keys()], &["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("secret_access_key_ref"),
        "{}",
        stderr(&out)
    );
    assert_no_leak(&out, &[&secret]);

    let out = verify(
        &[
            ("ARTIFACTSTORE_S3_BUCKET", "b".into()),
            (
                "ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF",
                "plainvalue".into(),
            ),
            ("ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF", "env:HOME".into()),
            static_keys(),
        ],
        &["--backend", "s3"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("env:NAME or file:/path"),
        "{}",
        stderr(&out)
    );
    // A value put where its reference belongs may be the secret itself: not echoed.
    assert_no_leak(&out, &["plainvalue"]);
}

/// Live, against the fixture's store (required in CI): verify passes; a wrong secret and
/// a missing bucket fail with clear messages; no secret shows anywhere, including the
/// server's logs, answers and events.
#[tokio::test]
async fn live_s3_verify_and_secret_hygiene() {
    let endpoint = std::env::var("ARTIFACTSTORE_S3_ENDPOINT_URL");
    let what =
        "a live S3 store (ARTIFACTSTORE_S3_ENDPOINT_URL; scripts/s3-fixture.sh garage -- ...)";
    if !live_or_skip(endpoint.is_ok(), what, REQUIRE_LIVE_S3) {
        return;
    }
    let endpoint = endpoint.unwrap();
    let real_secret = {
        let r = std::env::var("ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF").unwrap();
        artifactstore_model::secret::SecretRef::parse(&r)
            .unwrap()
            .resolve(&mut Vec::new())
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("verify-{}/", &canary("p")[..20]);
    let ok = verify(
        &[("ARTIFACTSTORE_S3_PREFIX", prefix.clone())],
        &["--backend", "s3", "--json"],
    );
    assert_eq!(ok.status.code(), Some(0), "{}{}", stdout(&ok), stderr(&ok));
    let report: serde_json::Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "pass"),
        "{report}"
    );
    // The source the environment chose: static keys, or (scripts/vend-fixture.sh)
    // web-identity credentials vended for a token, which expire.
    let source =
        std::env::var("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE").unwrap_or_else(|_| "static".into());
    assert_eq!(report["credentials"]["source"], source.as_str(), "{report}");
    assert_no_leak(&ok, &[real_secret.expose()]);
    let human = verify(
        &[("ARTIFACTSTORE_S3_PREFIX", prefix.clone())],
        &["--backend", "s3"],
    );
    if source == "static" {
        assert!(
            stdout(&human).contains("expires      never"),
            "{}",
            stdout(&human)
        );
    } else {
        let expires = report["credentials"]["expires"]
            .as_str()
            .unwrap_or_default();
        let t =
            time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| panic!("expiry {expires:?}"));
        assert!(t > time::OffsetDateTime::now_utc(), "{expires}");
        assert!(
            stdout(&human).contains(&format!("credentials  {source} (")),
            "{}",
            stdout(&human)
        );
    }
    assert!(stdout(&human).contains(&endpoint));

    let wrong = canary("wrong-secret");
    let out = verify(
        &[
            (
                "ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF",
                secret_file(dir.path(), "wrong", &wrong),
            ),
            ("ARTIFACTSTORE_S3_CREDENTIALS_SOURCE", "static".into()),
        ],
        &["--backend", "s3"],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("signature mismatch")
            || text.contains("access denied")
            || text.contains("does not know this access key"),
        "{text}"
    );
    assert_no_leak(&out, &[&wrong, real_secret.expose()]);

    let out = verify(
        &[(
            "ARTIFACTSTORE_S3_BUCKET",
            "no-such-bucket-artifactstore".into(),
        )],
        &["--backend", "s3"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("bucket does not exist") || stdout(&out).contains("access denied"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("no-such-bucket-artifactstore"));

    // A server on the live store: its logs, answers and events never carry the secret.
    let backend: &[&str] = if on_s3() { &[] } else { &["--backend", "s3"] };
    let s = Server::start_with(&dir.path().join("data"), backend);
    let client = http();
    let put = client
        .put(s.artifacts("ns/n/1/f.txt"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let mut seen = put.text().await.unwrap();
    for url in [
        s.artifacts("ns/n/1"),
        format!("{}/v1/events", s.url),
        format!("{}/metrics", s.url),
        format!("{}/readyz", s.url),
    ] {
        seen.push_str(&client.get(url).send().await.unwrap().text().await.unwrap());
    }
    assert!(seen.contains("file.added"));
    assert!(!seen.contains(real_secret.expose()));
    assert!(!s.logs().contains(real_secret.expose()));
}
