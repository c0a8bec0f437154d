//! A real OIDC issuer (npm oauth2-mock-server, `tests/oidc/issuer.mjs`) and crafted
//! tokens: shared by the vending tests and the artifact server's auth tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use serde_json::Value;

use super::{block_on, live_or_skip, spawn_announcing};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The variable that makes the vending tests' helpers (node issuer, moto) required:
/// scripts/test.sh sets it, so CI cannot skip them silently.
pub const REQUIRE_VEND_DEPS: &str = "ARTIFACTSTORE_REQUIRE_VEND_DEPS";

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A real OIDC issuer process.
pub struct Issuer {
    child: Child,
    pub url: String,
    /// Holds its stderr log.
    _dir: tempfile::TempDir,
}

impl Issuer {
    pub fn start() -> Option<Issuer> {
        Self::start_with(&[])
    }

    /// An issuer whose key set holds only its RS256 key, with a self-signed `x5c`
    /// certificate (Ceph RGW refuses a key set with any key without one).
    pub fn start_x5c() -> Option<Issuer> {
        Self::start_with(&["--x5c"])
    }

    fn start_with(args: &[&str]) -> Option<Issuer> {
        let dir = repo_root().join("tests/oidc");
        let installed = dir.join("node_modules/oauth2-mock-server").is_dir();
        if !live_or_skip(
            installed,
            "the OIDC issuer (npm ci --prefix tests/oidc)",
            REQUIRE_VEND_DEPS,
        ) {
            return None;
        }
        let logs = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("issuer.mjs")).arg("0").args(args);
        let (child, url) = spawn_announcing(cmd, "issuer ", &logs.path().join("issuer.log"));
        Some(Issuer {
            child,
            url,
            _dir: logs,
        })
    }

    /// A token with these claims (merged over the issuer's defaults; `null` removes).
    pub fn token_with(&self, claims: Value, alg: &str, header: Option<Value>) -> String {
        let url = format!("{}/token", self.url);
        let mut form = vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            ("claims".to_owned(), claims.to_string()),
            ("alg".to_owned(), alg.to_owned()),
        ];
        if let Some(h) = header {
            form.push(("header".to_owned(), h.to_string()));
        }
        let body: Value = block_on(async move {
            reqwest::Client::new()
                .post(url)
                .form(&form)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {body}"))
            .to_owned()
    }

    pub fn token(&self, claims: Value) -> String {
        self.token_with(claims, "RS256", None)
    }

    pub fn jwks(&self) -> Value {
        let url = format!("{}/jwks", self.url);
        block_on(async move { reqwest::get(url).await.unwrap().json().await.unwrap() })
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A JWT with this header and payload and a signature made by `sign`.
pub fn craft(header: &Value, payload: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let sig = sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&sig))
}

pub fn hs256(key: &[u8]) -> impl Fn(&[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    move |msg| aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
}

/// The payload of a JWT.
pub fn payload_of(token: &str) -> Value {
    use base64::Engine as _;
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

/// Serves one fixed JSON document on 127.0.0.1 (a key set an issuer would never
/// publish); returns its URL.
pub fn serve_static_json(doc: Value) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = doc.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(1000) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/jwks")
}
