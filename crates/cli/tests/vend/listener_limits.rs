//! Slowloris and the other listener limits on the real `artifactstore vend serve`. The
//! issuer and Garage it names are closed ports: the service starts and answers
//! `/healthz` without them, which is all the listener checks ask.

#[path = "../common/listener_checks.rs"]
mod listener_checks;

use std::path::Path;
use std::process::Command;

use crate::common::{BIN, block_on, spawn_announcing};

/// A vend config whose every dependency is a closed loopback port, with `top` (top-level
/// keys) first.
fn config_in(dir: &Path, top: &str) -> std::path::PathBuf {
    let token = dir.join("garage-token");
    std::fs::write(&token, "unused").unwrap();
    let text = format!(
        r#"{top}
database_url = "sqlite://{dir}/leases.db?mode=rwc"

[audit]
path = "{dir}/audit.log"

[[issuers]]
issuer = "http://127.0.0.1:9/issuer"
audience = "artifactstore-test"

[drivers.garage]
kind = "garage"
admin_url = "http://127.0.0.1:9"
admin_token_ref = "file:{token}"

[[roles]]
name = "reader"
driver = "garage"
bucket = "artifacts"
actions = ["read", "list"]
rules = [{{ groups = {{ contains = "artifact-readers" }} }}]
"#,
        dir = dir.display(),
        token = token.display(),
    );
    let path = dir.join("vend.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `vend serve` in `dir` with the listener limits of the checks.
fn start(dir: &Path) -> (std::process::Child, String) {
    let config = config_in(dir, listener_checks::LIMITS_TOML);
    let mut cmd = Command::new(BIN);
    cmd.args(["vend", "serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config);
    spawn_announcing(
        cmd,
        "artifactstore vend listening on ",
        &dir.join("vend.stderr.log"),
    )
}

#[test]
fn half_sent_heads_idle_connections_and_connections_beyond_the_cap_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = start(dir.path());
    listener_checks::check_all(&url);

    // The vending routes take the peer from the listener's ConnectInfo: a refused token
    // is answered as such (not 500 for a missing extension), its client in the audit.
    let credentials = format!("{url}/v1/credentials");
    let status = block_on(async move {
        reqwest::Client::new()
            .post(credentials)
            .bearer_auth("not-a-token")
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert!((400..500).contains(&status), "{status}");
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let clients: Vec<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|l| l["client"].as_str().map(str::to_owned))
        .collect();
    assert!(
        clients.iter().any(|c| c.starts_with("127.0.0.1")),
        "{audit}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_zero_limit_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for key in listener_checks::KEYS {
        let config = config_in(dir.path(), &format!("{key} = 0"));
        let out = Command::new(BIN)
            .args(["vend", "serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        listener_checks::assert_refused(&out, key);
    }
}

#[test]
fn a_trickled_body_is_cut_off_by_the_header_read_timeout_and_audited() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = start(dir.path());
    let addr = url.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // A whole head at once, then a 2,000-byte form body a byte every 100 ms: 200 s
    // if nothing cut it off.
    write!(
        tcp,
        "POST / HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         content-length: 2000\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(30) {
        if tcp.write_all(b"A").is_err() {
            break;
        }
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        elapsed < Duration::from_secs(20),
        "the trickled body held the request for {elapsed:?}: {answer}"
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("<Error>") || answer.contains("Error"),
        "{answer}"
    );
    // Audited like any early refusal (through the client's refusal window).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap_or_default();
        if audit.contains("request_invalid") {
            break;
        }
        assert!(Instant::now() < deadline, "not audited: {audit}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `vend serve` with `tls_cert`/`tls_key` in its file answers HTTPS; `--tls-cert`
/// without `--tls-key`, or a file with only `tls_cert`, is refused.
#[test]
fn vend_serves_https_with_the_files_certificate() {
    #[path = "../common/test_ca.rs"]
    mod test_ca;

    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca::TestCa::new(dir.path());
    let (cert, key) = ca.issue("vend");
    let top = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let config = config_in(dir.path(), &top);
    let mut cmd = Command::new(BIN);
    cmd.args(["vend", "serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config);
    let log = dir.path().join("vend.stderr.log");
    let (mut child, url) = spawn_announcing(cmd, "artifactstore vend listening on https://", &log);
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(&ca.cert)
        .arg(format!("https://{url}/healthz"))
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(BIN)
        .args(["vend", "serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--tls-cert")
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let half = config_in(dir.path(), &format!("tls_cert = \"{}\"", cert.display()));
    let out = Command::new(BIN)
        .args(["vend", "serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&half)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls_cert and tls_key go together"), "{err}");
}
