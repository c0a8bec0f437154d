//! `serve --tls-cert --tls-key` on the real binary: HTTPS for curl and the CLI, a
//! renewed certificate served to new connections, a broken renewal refused, and the
//! TLS port closed to plain HTTP and to clients that never speak.

#[path = "../common/test_ca.rs"]
mod test_ca;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use test_ca::TestCa;

/// A server on `cert.pem`/`key.pem` in `dir` (given as flags), first holding the pair
/// issued for `cn`.
fn start_tls(dir: &Path, ca: &TestCa, cn: &str) -> Server {
    install(dir, ca, cn);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    Server::start_with(
        &dir.join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
}

/// Puts a new pair for `cn` in place the way a renewal does: each file renamed over the old.
fn install(dir: &Path, ca: &TestCa, cn: &str) {
    let (cert, key) = ca.issue(cn);
    std::fs::rename(cert, dir.join("cert.pem")).unwrap();
    std::fs::rename(key, dir.join("key.pem")).unwrap();
}

fn addr(server: &Server) -> SocketAddr {
    let url = server.url.strip_prefix("https://");
    url.unwrap_or_else(|| panic!("{} is not https", server.url))
        .parse()
        .unwrap()
}

fn curl_health(server: &Server, ca: &TestCa) -> Output {
    Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(&ca.cert)
        .arg(format!("{}/healthz", server.url))
        .output()
        .expect("run curl")
}

/// The subject of the certificate a new connection is served, as `openssl s_client` prints it.
fn served_subject(server: &Server) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr(server).to_string()])
        .args(["-servername", "localhost"])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .unwrap_or_else(|| panic!("no subject in s_client output:\n{text}"))
        .to_owned()
}

fn cli_with(server: &Server, ca: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("ARTIFACTSTORE_URL", &server.url)
        .env_remove("ARTIFACTSTORE_CA_CERT")
        .stdin(Stdio::null());
    if let Some(ca) = ca {
        cmd.env("ARTIFACTSTORE_CA_CERT", ca);
    }
    cmd.output().expect("run artifactstore")
}

#[tokio::test]
async fn https_serves_curl_and_the_cli_and_new_connections_get_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let server = start_tls(dir.path(), &ca, "first");
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );

    let out = curl_health(&server, &ca);
    assert!(out.status.success(), "curl: {}", stderr(&out));

    // The CLI trusts the private CA only when told to.
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, b"over TLS").unwrap();
    let put = ["put", "tls/check@1", file.to_str().unwrap()];
    let refused = cli_with(&server, None, &put);
    assert!(!refused.status.success(), "an unknown CA was trusted");
    let out = cli_with(&server, Some(&ca.cert), &put);
    assert!(out.status.success(), "put: {}", stderr(&out));
    let out = cli_with(&server, Some(&ca.cert), &["get", "tls/check@1/hello.txt"]);
    assert!(out.status.success(), "get: {}", stderr(&out));
    assert_eq!(out.stdout, b"over TLS");

    assert!(served_subject(&server).contains("first"));
    install(dir.path(), &ca, "second");
    let renewed = eventually(5, || served_subject(&server).contains("second")).await;
    assert!(renewed, "still serving {}", served_subject(&server));
    assert!(curl_health(&server, &ca).status.success());

    // A renewal caught half done (a certificate whose key is not there yet): the pair
    // in service stays, with a warning.
    let (third, _) = ca.issue("third");
    std::fs::rename(third, dir.path().join("cert.pem")).unwrap();
    // The files are looked at as connections arrive: each look is a new connection.
    let warned = eventually(5, || {
        assert!(served_subject(&server).contains("second"));
        server.logs().contains("TLS certificate not reloaded")
    })
    .await;
    assert!(warned, "no warning; logs:\n{}", server.logs());
    assert!(curl_health(&server, &ca).status.success());
}

#[tokio::test]
async fn plain_http_is_refused_and_a_silent_client_is_dropped_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    // The pair from the environment this time.
    install(dir.path(), &ca, "limits");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let env = [
        ("ARTIFACTSTORE_TLS_CERT", cert.to_str().unwrap()),
        ("ARTIFACTSTORE_TLS_KEY", key.to_str().unwrap()),
        ("ARTIFACTSTORE_HEADER_READ_TIMEOUT_SECS", "1"),
        ("ARTIFACTSTORE_MAX_CONNECTIONS", "1"),
    ];
    let server = Server::start_with_env(&dir.path().join("data"), &[], &env);
    let addr = addr(&server);

    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "plain HTTP was answered: {answer:?}"
    );

    // Connected, nothing sent: it holds the one connection slot until the header-read
    // timeout closes it; curl waits for the slot, then is served.
    let mut silent = TcpStream::connect(addr).unwrap();
    let began = Instant::now();
    let out = curl_health(&server, &ca);
    let curl_waited = began.elapsed();
    assert!(out.status.success(), "curl: {}", stderr(&out));
    assert!(
        curl_waited >= Duration::from_millis(500),
        "curl was served after {curl_waited:?}: the silent handshake held no slot"
    );
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    let read = silent.read(&mut buf);
    let waited = began.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?} after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "held for {waited:?}");
    assert!(curl_health(&server, &ca).status.success());
}

#[test]
fn a_certificate_without_its_key_or_with_another_key_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let (cert, _) = ca.issue("one");
    let (_, other_key) = ca.issue("two");
    let serve = |args: &[&Path]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"));
        for (flag, path) in ["--tls-cert", "--tls-key"].iter().zip(args) {
            cmd.arg(flag).arg(path);
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    };
    let alone = serve(&[&cert]);
    assert_eq!(alone.status.code(), Some(2), "{}", stderr(&alone));
    assert!(stderr(&alone).contains("tls_cert and tls_key go together"));
    let key_alone = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("ARTIFACTSTORE_TLS_KEY", &other_key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(key_alone.status.code(), Some(2), "{}", stderr(&key_alone));
    assert!(stderr(&key_alone).contains("tls_cert and tls_key go together"));
    let mismatched = serve(&[&cert, &other_key]);
    assert_eq!(mismatched.status.code(), Some(2), "{}", stderr(&mismatched));
    assert!(stderr(&mismatched).contains("does not serve the certificate"));
}

#[test]
fn a_non_loopback_address_without_tls_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--insecure-no-auth",
        "--data-dir",
    ])
    .arg(dir.path().join("data"))
    .env_remove("ARTIFACTSTORE_URL");
    let (mut child, _) = spawn_announcing(cmd, "artifactstore listening on http://", &log);
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("bearer tokens would travel in plain text"),
        "{logs}"
    );
}
