//! `[auth]` beyond OIDC rules, on the real binary: static tokens (hashed, expiring,
//! limited by name), anonymous read, `protect_metrics`, the non-loopback rule, and the
//! CLI publishing with `--token-from github-actions`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::auth::{AUDIENCE, call, github_token, put, start, write_config};
use crate::common::oidc::Issuer;
use crate::common::*;

#[test]
fn static_tokens_expire_and_anonymous_reads_one_namespace_only() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let new_token = |name: &str| {
        let o = std::process::Command::new(BIN)
            .args(["--json", "token", "new", "--name", name])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            v["token"].as_str().unwrap().to_owned(),
            v["sha256"].as_str().unwrap().to_owned(),
        )
    };
    let (bot, bot_hash) = new_token("release-bot");
    let (old, old_hash) = new_token("retired");
    let (ops, ops_hash) = new_token("ops");
    let (apps, apps_hash) = new_token("app-reader");
    assert_eq!(
        sha256_hex(bot.as_bytes()),
        bot_hash,
        "the config holds the token's SHA-256"
    );
    let extra = format!(
        r#"[auth]
anonymous = [{{ namespaces = ["public"], permissions = ["read"] }}]
protect_metrics = true

[[auth.tokens]]
name = "ops"
sha256 = "{ops_hash}"
namespaces = ["*"]
permissions = ["admin"]

[[auth.tokens]]
name = "app-reader"
sha256 = "{apps_hash}"
namespaces = ["releases"]
names = ["app-*"]
permissions = ["read"]

[[auth.tokens]]
name = "release-bot"
sha256 = "{bot_hash}"
namespaces = ["public", "releases"]
permissions = ["read", "write", "complete"]

[[auth.tokens]]
name = "retired"
sha256 = "{old_hash}"
namespaces = ["*"]
permissions = ["read"]
expires = "2020-01-01T00:00:00Z"
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &extra);
    let s = start(dir.path(), &config, &issuer);
    assert!(!std::fs::read_to_string(&config).unwrap().contains(&bot));

    assert_eq!(
        put(&s, Some(&bot), "public/site/1/index.html", "<p>hi</p>").status,
        StatusCode::CREATED
    );
    assert_eq!(
        put(&s, Some(&bot), "releases/app/1/app.tar", "bin").status,
        StatusCode::CREATED
    );
    let a = put(&s, Some(&bot), "acme/app/1/x", "x");
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // A grant limited by name: listings show only those names, reads elsewhere are 403.
    for name in ["app-cli", "app-server", "internal-tool"] {
        let a = put(&s, Some(&bot), &format!("releases/{name}/1/f"), name);
        assert_eq!(a.status, StatusCode::CREATED);
    }
    let names = call("GET", &s.artifacts("releases"), Some(&apps), None);
    assert_eq!(
        names.body["items"],
        json!([{"name": "app-cli"}, {"name": "app-server"}]),
        "{}",
        names.text
    );
    let a = call(
        "GET",
        &s.artifacts("releases/internal-tool/1/f"),
        Some(&apps),
        None,
    );
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = call(
        "GET",
        &s.artifacts("releases/app-cli/1/f"),
        Some(&apps),
        None,
    );
    assert_eq!((a.status, a.text.as_str()), (StatusCode::OK, "app-cli"));

    // protect_metrics: /metrics needs `admin`; the probes stay open.
    let metrics = format!("{}/metrics", s.url);
    assert_eq!(
        call("GET", &metrics, None, None).status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call("GET", &metrics, Some(&bot), None).status,
        StatusCode::FORBIDDEN
    );
    let m = call("GET", &metrics, Some(&ops), None);
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.text.contains("artifactstore_"),
        "{}",
        &m.text[..m.text.len().min(300)]
    );
    assert_eq!(
        call("GET", &format!("{}/healthz", s.url), None, None).status,
        StatusCode::OK
    );

    let a = call("GET", &s.artifacts("public/site/1/index.html"), None, None);
    assert_eq!((a.status, a.text.as_str()), (StatusCode::OK, "<p>hi</p>"));
    let a = call("GET", &s.artifacts("releases/app/1/app.tar"), None, None);
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "anonymous reads public only"
    );
    assert_eq!(
        put(&s, None, "public/site/2/x", "x").status,
        StatusCode::UNAUTHORIZED
    );
    let ns = call("GET", &format!("{}/v1/artifacts", s.url), None, None);
    assert_eq!(ns.body["items"], json!([{"name": "public"}]), "{}", ns.text);

    let a = call(
        "GET",
        &s.artifacts("public/site/1/index.html"),
        Some(&old),
        None,
    );
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.body["error"]["reason"], "token_expired");
    let (unknown, _) = new_token("never-configured");
    let a = call(
        "GET",
        &s.artifacts("public/site/1/index.html"),
        Some(&unknown),
        None,
    );
    assert_eq!(a.body["error"]["reason"], "token_invalid");
    let logs = s.logs();
    for t in [&bot, &old, &unknown, &ops, &apps] {
        assert!(!logs.contains(t.as_str()));
    }
}

#[test]
fn a_non_loopback_listen_address_needs_auth() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("[auth]"), "{}", stderr(&o));
    // With [auth] it starts (and is reached here on loopback only).
    let hash = "ab".repeat(32);
    let config = dir.path().join("auth.toml");
    std::fs::write(
        &config,
        format!("[[auth.tokens]]\nname = \"x\"\nsha256 = \"{hash}\"\nnamespaces = [\"x\"]\npermissions = [\"read\"]\n"),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
    ])
    .arg(dir.path().join("data2"));
    let (mut child, url) = spawn_announcing(
        cmd,
        "artifactstore listening on ",
        &dir.path().join("s.log"),
    );
    let port = url.rsplit(':').next().unwrap();
    let a = call(
        "GET",
        &format!("http://127.0.0.1:{port}/v1/artifacts"),
        None,
        None,
    );
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let _ = child.kill();
    let _ = child.wait();
}

/// A stand-in for the GitHub runner's ID-token endpoint: it hands `token` (minted by the
/// real test issuer) to a request with the right request token and audience, and
/// refuses anything else. Returns the URL to put in `ACTIONS_ID_TOKEN_REQUEST_URL`.
fn runner_stand_in(request_token: &'static str, token: String) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/idtoken?api-version=2.0",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut authorized = false;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if h.to_ascii_lowercase().starts_with("authorization:") {
                    authorized = h.trim_end().ends_with(&format!("Bearer {request_token}"));
                }
            }
            let right_audience = line.contains(&format!("audience={AUDIENCE}"));
            let (status, body) = if authorized && right_audience {
                (200, json!({ "value": token }).to_string())
            } else {
                (403, "{}".to_owned())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn the_cli_publishes_a_directory_with_a_github_actions_token() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &write_config(dir.path(), ""), &issuer);
    let reports = dir.path().join("reports");
    std::fs::create_dir_all(reports.join("junit")).unwrap();
    std::fs::write(reports.join("summary.md"), "# all green\n").unwrap();
    std::fs::write(reports.join("junit/a.xml"), "<testsuite/>").unwrap();

    let run = |git_ref: &str, target: &str| {
        let token = github_token(&issuer, "acme/app", git_ref);
        let url = runner_stand_in("runner-request-token", token.clone());
        let out = std::process::Command::new(BIN)
            .args(["put", target, reports.to_str().unwrap(), "--complete"])
            .args(["--token-from", "github-actions"])
            .env("ARTIFACTSTORE_URL", &s.url)
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", url)
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-request-token")
            .env_remove("ARTIFACTSTORE_TOKEN")
            .output()
            .unwrap();
        for secret in [token.as_str(), "runner-request-token"] {
            assert!(!stdout(&out).contains(secret) && !stderr(&out).contains(secret));
        }
        out
    };
    let out = run("refs/heads/main", "acme/app@run-1");
    assert!(out.status.success(), "{}", stderr(&out));
    let reader =
        issuer.token(json!({"sub": "dash", "aud": AUDIENCE, "groups": ["artifact-readers"]}));
    let latest = call("GET", &s.artifacts("acme/app/latest"), Some(&reader), None);
    assert_eq!(latest.body["version"], "run-1", "{}", latest.text);
    assert_eq!(latest.body["state"], "complete");
    let paths: Vec<&str> = latest.body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["junit/a.xml", "summary.md"]);

    // The same workflow on a pull request is refused in acme: exit 8 (forbidden).
    let out = run("refs/pull/3/merge", "acme/app@run-2");
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));
    let out = run("refs/pull/3/merge", "acme-pr/app@run-2");
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A refused upload whose body then stalls is answered at once: the server reads a
/// little of a refused body (so a small upload's client gets its answer rather than a
/// reset), but does not wait for the rest until the body idle timeout.
#[test]
fn a_refused_upload_that_stalls_is_answered_at_once() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let token = "ast_".to_owned() + &"ab".repeat(32);
    let config = dir.path().join("auth.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nnamespaces = [\"ci\"]\npermissions = [\"write\"]\n",
            sha256_hex(token.as_bytes())
        ),
    )
    .unwrap();
    let s = Server::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let addr = s.url.trim_start_matches("http://").to_owned();
    for (path, auth, want) in [
        (
            "other/app/1/f",
            format!("Authorization: Bearer {token}\r\n"),
            "403",
        ),
        ("ci/app/1/f", String::new(), "401"),
    ] {
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let started = std::time::Instant::now();
        write!(
            conn,
            "PUT /v1/artifacts/{path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 10000000\r\n\r\nabc"
        )
        .unwrap();
        let mut answer = [0u8; 64];
        let n = conn
            .read(&mut answer)
            .expect("an answer before the body idle timeout");
        let head = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(
            head.starts_with(&format!("HTTP/1.1 {want}")),
            "{path}: {head}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    assert!(!s.logs().contains(&token));
}
