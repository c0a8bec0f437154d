//! `[s3] download = "redirect"` on the real binary: a file GET is answered 307 to a
//! presigned GET of the blob, which curl, boto3's parser, reqwest and the CLI follow to
//! the exact bytes; the URL expires; nothing is redirected that the caller could not
//! read, nor a HEAD, an `If-None-Match` hit, `?redirect=0` or an inline active document;
//! and the bearer token never reaches the store. The store is the in-process s3s-fs
//! server, or with `ARTIFACTSTORE_TEST_BACKEND=s3` the live one, behind a recording
//! proxy that keeps the first bytes of every connection to it.
//!
//! The signed query is compared with what the proxy path sends, and where the store
//! honours `response-content-type` and `response-content-disposition` (s3s, Garage,
//! Ceph RGW) so are the headers of its answer.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// The first bytes of each connection the recording proxy keeps: every request head of
/// a download, not the bodies of large uploads.
const RECORD_PER_CONNECTION: usize = 64 << 10;

/// A loopback TCP proxy in front of the store that keeps what clients sent it.
struct RecordingProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl RecordingProxy {
    async fn start(upstream: SocketAddr) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, record.clone()));
            }
        });
        RecordingProxy { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What clients have sent through so far, as text.
    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, seen: Arc<Mutex<Vec<u8>>>) {
    let Ok(store) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_store, mut to_store) = store.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut kept = 0;
        while let Ok(n) = from_client.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if kept < RECORD_PER_CONNECTION {
                let take = n.min(RECORD_PER_CONNECTION - kept);
                seen.lock().unwrap().extend_from_slice(&buf[..take]);
                kept += take;
            }
            if to_store.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_store.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut from_store, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::join!(up, down);
}

/// How the server of a rig answers downloads.
#[derive(Default)]
struct Setup<'a> {
    /// `ARTIFACTSTORE_S3_DOWNLOAD`; unset: the default.
    download: Option<&'a str>,
    expiry_secs: Option<u64>,
    /// The config file's text (`[auth]`).
    config: &'a str,
}

struct Rig {
    server: Server,
    proxy: RecordingProxy,
    /// The in-process store's files (`<root>/<bucket>/<key>`); `None` on a live store.
    s3s: Option<crate::common::s3s::InProcessS3>,
    prefix: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(setup: Setup<'_>) -> Rig {
        let prefix = format!(
            "redirect-{}/",
            &artifactstore_model::Digest::of(
                format!("{}:{:?}", std::process::id(), std::time::Instant::now()).as_bytes()
            )
            .hex()[..16]
        );
        let s3s = if on_s3() {
            None
        } else {
            Some(crate::common::s3s::InProcessS3::start("redirect", &prefix).await)
        };
        let upstream = match &s3s {
            Some(s) => s.addr,
            None => {
                let endpoint = std::env::var("ARTIFACTSTORE_S3_ENDPOINT_URL").unwrap();
                let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
                std::net::ToSocketAddrs::to_socket_addrs(host)
                    .expect("the live endpoint is host:port over http")
                    .next()
                    .unwrap()
            }
        };
        let proxy = RecordingProxy::start(upstream).await;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let stderr_log = dir.path().join("server.stderr.log");
        let config = dir.path().join("server.toml");
        std::fs::write(&config, setup.config).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--backend", "s3"])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(&config)
            .env_remove("ARTIFACTSTORE_URL");
        if let Some(s) = &s3s {
            for (k, _) in std::env::vars() {
                if k.starts_with("ARTIFACTSTORE_S3_") {
                    cmd.env_remove(k);
                }
            }
            cmd.env("ARTIFACTSTORE_S3_BUCKET", &s.bucket)
                .env("REDIRECT_TEST_KEY_ID", &s.key_id)
                .env("REDIRECT_TEST_SECRET", &s.secret)
                .env(
                    "ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF",
                    "env:REDIRECT_TEST_KEY_ID",
                )
                .env(
                    "ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF",
                    "env:REDIRECT_TEST_SECRET",
                );
        }
        cmd.env("ARTIFACTSTORE_S3_ENDPOINT_URL", proxy.url())
            .env("ARTIFACTSTORE_S3_PREFIX", &prefix)
            .env("ARTIFACTSTORE_S3_STALE_UPLOAD_AGE_SECS", "0");
        if let Some(d) = setup.download {
            cmd.env("ARTIFACTSTORE_S3_DOWNLOAD", d);
        }
        if let Some(e) = setup.expiry_secs {
            cmd.env("ARTIFACTSTORE_S3_REDIRECT_EXPIRY_SECS", e.to_string());
        }
        let (child, url) = spawn_announcing(cmd, "artifactstore listening on ", &stderr_log);
        Rig {
            server: Server {
                child,
                url,
                data_dir,
                stderr_log,
                s3_prefix: on_s3().then(|| prefix.clone()),
            },
            proxy,
            s3s,
            prefix,
            _dir: dir,
        }
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/v1/{rest}", self.server.url)
    }

    async fn put(&self, token: Option<&str>, path: &str, media_type: &str, body: &[u8]) {
        let resp = with_token(client().put(self.url(&format!("artifacts/{path}"))), token)
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "PUT {path}");
    }

    async fn redirects_counted(&self) -> u64 {
        counter(
            &self.server.metrics().await,
            "artifactstore_download_redirects_total",
        )
    }
}

/// A client that follows no redirect, so that tests see the server's answer itself.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn with_token(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

/// The query parameters of a URL.
fn query(url: &str) -> std::collections::HashMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Whether the store answers with the `response-content-*` it was asked for: s3s,
/// Garage and Ceph RGW do; moto does not.
fn store_honours_overrides() -> bool {
    !on_s3()
        || matches!(
            std::env::var("ARTIFACTSTORE_FIXTURE_SERVER").as_deref(),
            Ok("garage" | "ceph")
        )
}

/// `curl` with `args`: its exit status, the body it wrote and the headers of the last
/// answer it got.
fn curl(args: &[&str]) -> (bool, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (body, heads) = (dir.path().join("body"), dir.path().join("headers"));
    let o = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "30", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&heads)
        .args(args)
        .output()
        .expect("curl is installed");
    let heads = std::fs::read_to_string(&heads).unwrap_or_default();
    // With -L, -D writes every answer's head: keep the last.
    let last = heads
        .rsplit("HTTP/")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    (
        o.status.success(),
        std::fs::read(&body).unwrap_or_default(),
        last,
    )
}

/// What a file's download looks like over the proxy path: the answer to `?redirect=0`.
async fn proxied(url: &str, token: Option<&str>) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let resp = with_token(client().get(format!("{url}?redirect=0")), token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{url}?redirect=0");
    let headers = resp.headers().clone();
    (headers, resp.bytes().await.unwrap().to_vec())
}

/// A 307 from the server, checked for the headers every redirect carries; its Location.
async fn redirected(url: &str, token: Option<&str>, digest: &str) -> String {
    let resp = with_token(client().get(url), token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT, "GET {url}");
    assert_eq!(header(&resp, "cache-control"), Some("no-store"), "{url}");
    assert_eq!(header(&resp, "x-artifact-digest"), Some(digest), "{url}");
    assert_eq!(
        header(&resp, "etag").map(|e| e.trim_matches('"').to_owned()),
        Some(digest.to_owned())
    );
    let location = header(&resp, "location").expect("a Location").to_owned();
    assert!(
        resp.bytes().await.unwrap().is_empty(),
        "a redirect has no body"
    );
    location
}

/// boto3's view of a presigned URL: botocore presigns a GET of the same bucket and key
/// with the same answer headers and expiry, and both URLs must carry the same SigV4
/// query parameters (the SDK adds `x-id`); then the URL is fetched with urllib and its
/// body's SHA-256 printed.
const BOTO3_CHECK: &str = r#"
import hashlib, sys, urllib.parse, urllib.request
import boto3
from botocore.config import Config
url, expires = sys.argv[1], int(sys.argv[2])
u = urllib.parse.urlsplit(url)
q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256", q
assert int(q["X-Amz-Expires"]) == expires, q
assert "host" in q["X-Amz-SignedHeaders"].split(";"), q
assert len(q["X-Amz-Signature"]) == 64 and int(q["X-Amz-Signature"], 16) >= 0, q
key_id, date, region, service, term = q["X-Amz-Credential"].split("/")
assert (service, term) == ("s3", "aws4_request") and len(date) == 8, q
bucket, key = urllib.parse.unquote(u.path).lstrip("/").split("/", 1)
params = {"Bucket": bucket, "Key": key}
# Temporary credentials (a live run on vended ones) sign their session token too.
token = q.get("X-Amz-Security-Token")
if "response-content-type" in q:
    params["ResponseContentType"] = q["response-content-type"]
if "response-content-disposition" in q:
    params["ResponseContentDisposition"] = q["response-content-disposition"]
ours = boto3.client("s3", endpoint_url=f"{u.scheme}://{u.netloc}", region_name=region,
                    aws_access_key_id=key_id, aws_secret_access_key="unused", aws_session_token=token,
                    config=Config(signature_version="s3v4", s3={"addressing_style": "path"})
                    ).generate_presigned_url("get_object", Params=params, ExpiresIn=expires)
theirs = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ours).query, keep_blank_values=True))
assert set(q) - {"x-id"} == set(theirs), (sorted(q), sorted(theirs))
for k in ("response-content-type", "response-content-disposition", "X-Amz-Credential"):
    assert q.get(k) == theirs.get(k), (k, q.get(k), theirs.get(k))
with urllib.request.urlopen(url, timeout=30) as r:
    print(hashlib.sha256(r.read()).hexdigest())
"#;

const WRITER: &str = "ast_57a1e0000000000000000000000000000000000000000000000000000000000a";
const STRANGER: &str = "ast_57a1e0000000000000000000000000000000000000000000000000000000000b";

fn auth_config() -> String {
    format!(
        "[[auth.tokens]]\nname = \"writer\"\nsha256 = \"{}\"\nnamespaces = [\"redir\"]\n\
         permissions = [\"read\", \"write\", \"complete\", \"delete\"]\n\n\
         [[auth.tokens]]\nname = \"stranger\"\nsha256 = \"{}\"\nnamespaces = [\"elsewhere\"]\n\
         permissions = [\"read\", \"write\"]\n",
        sha256_hex(WRITER.as_bytes()),
        sha256_hex(STRANGER.as_bytes())
    )
}

mod access;
mod follow;
