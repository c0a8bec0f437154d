//! What the end-to-end tests (`tests/e2e`) and the vending tests (`tests/vend`) share:
//! starting a process that announces its URL, skipping or requiring a live dependency,
//! and the real `artifactstore` server on port 0 in a temp dir.
#![allow(dead_code)]

pub mod oidc;
pub mod s3s;

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_artifactstore");

/// Spawns `cmd`, whose first line on stdout is `{prefix}{URL}` (`artifactstore
/// listening on `, `artifactstore vend listening on `, …), with its stderr appended to
/// `log`. Returns the child and the URL; on any other first line (or none: the process
/// exited) kills the child and panics with what it wrote to `log`.
pub fn spawn_announcing(mut cmd: Command, prefix: &str, log: &Path) -> (Child, String) {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    match line.trim().strip_prefix(prefix) {
        Some(url) if read.is_ok() => {
            let url = url.to_owned();
            (child, url)
        }
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{:?} {:?}: first line {line:?} ({read:?}), expected {prefix:?}URL; its stderr ({}):\n{}",
                cmd.get_program(),
                cmd.get_args().collect::<Vec<_>>(),
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            )
        }
    }
}

/// Whether a test that needs a live dependency (`what`: a store, an issuer, a tool) runs.
/// `present` says whether the dependency is there. When it is not: with `require_var`
/// set (to anything but empty or `0`; scripts/test.sh sets it to 1) the test fails;
/// otherwise it prints a `NOT run` line, past the test harness's capture, and the test
/// returns.
pub fn live_or_skip(present: bool, what: &str, require_var: &str) -> bool {
    if present {
        return true;
    }
    let required = std::env::var_os(require_var).is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{what} is required ({require_var} is set) but missing"
    );
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "{test}: NOT run: {what} is missing (set {require_var}=1 to make that a failure)"
    );
    false
}

/// With `ARTIFACTSTORE_TEST_AUTH=1` (scripts/test.sh runs the end-to-end suite once so)
/// every server the tests start has `[auth]` with one static token that grants
/// everything, and every client they make sends it: the whole API behaves the same
/// with authentication on.
pub fn suite_token() -> Option<&'static str> {
    (std::env::var("ARTIFACTSTORE_TEST_AUTH").as_deref() == Ok("1"))
        .then_some("ast_5e1f7e575e1f7e575e1f7e575e1f7e575e1f7e575e1f7e575e1f7e575e1f7e57")
}

/// `Authorization: Bearer …\r\n` for a hand-written request, when [`suite_token`] is on.
pub fn auth_header_line() -> String {
    suite_token()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default()
}

/// The `--config` of a server under [`suite_token`].
fn suite_auth_config(data_dir: &Path, token: &str) -> PathBuf {
    let path = data_dir.with_extension("suite-auth.toml");
    std::fs::write(
        &path,
        format!(
            "[[auth.tokens]]\nname = \"test-suite\"\nsha256 = \"{}\"\nnamespaces = [\"*\"]\n\
             permissions = [\"read\", \"write\", \"complete\", \"delete\", \"admin\"]\n",
            sha256_hex(token.as_bytes())
        ),
    )
    .unwrap();
    path
}

/// The variable that makes a missing live S3 store a failure instead of a skip.
pub const REQUIRE_LIVE_S3: &str = "ARTIFACTSTORE_REQUIRE_LIVE_S3";

pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub stderr_log: PathBuf,
    /// With `ARTIFACTSTORE_TEST_BACKEND=s3`: the key prefix of this server in the bucket.
    pub s3_prefix: Option<String>,
}

/// Whether the end-to-end tests run the server on the S3 backend: set
/// `ARTIFACTSTORE_TEST_BACKEND=s3` inside `scripts/s3-fixture.sh`, which exports the
/// `ARTIFACTSTORE_S3_*` settings of a live store.
pub fn on_s3() -> bool {
    std::env::var("ARTIFACTSTORE_TEST_BACKEND").as_deref() == Ok("s3")
}

/// A prefix of its own for each data directory, the same across restarts.
fn s3_prefix_for(data_dir: &Path) -> String {
    let d = artifactstore_model::Digest::of(
        format!("{}:{}", std::process::id(), data_dir.display()).as_bytes(),
    );
    format!("e2e-{}/", &d.hex()[..16])
}

/// Runs a future to completion on a private runtime (for sync helpers in async tests).
pub fn block_on<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap()
}

/// A direct client of the live bucket under `prefix`, to look behind the server.
pub fn s3_store(prefix: &str) -> artifactstore_blob::s3::S3BlobStore {
    use artifactstore_blob::s3::{S3BlobStore, S3Config};
    use artifactstore_credentials::sources::StaticSource;
    use artifactstore_credentials::{RefreshPolicy, RefreshingCache};
    use artifactstore_model::secret::SecretRef;
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let mut w = Vec::new();
    let mut secret = |k: &str| SecretRef::parse(&var(k)).unwrap().resolve(&mut w).unwrap();
    let ak = secret("ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF");
    let sk = secret("ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF");
    let mut cfg = S3Config::new(var("ARTIFACTSTORE_S3_BUCKET"));
    cfg.endpoint_url = Some(var("ARTIFACTSTORE_S3_ENDPOINT_URL"));
    cfg.region = std::env::var("ARTIFACTSTORE_S3_REGION").unwrap_or_else(|_| "us-east-1".into());
    cfg.prefix = prefix.to_owned();
    let source = StaticSource {
        access_key_id: ak,
        secret_access_key: sk,
        session_token: None,
    };
    let cache = RefreshingCache::new(std::sync::Arc::new(source), RefreshPolicy::default());
    S3BlobStore::new(cfg, std::sync::Arc::new(cache)).unwrap()
}

impl Server {
    /// The server's `/metrics` page.
    pub async fn metrics(&self) -> String {
        http()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_replica(data_dir, data_dir, extra)
    }

    /// A server whose S3 prefix is that of `shared`: replicas started with the same
    /// `shared` path (and the same `--database-url`) serve one store.
    pub fn start_replica(data_dir: &Path, shared: &Path, extra: &[&str]) -> Server {
        Self::start_full(data_dir, shared, extra, &[])
    }

    /// A server with `env` set in its environment on top of the test's own.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_full(data_dir, data_dir, extra, env)
    }

    fn start_full(data_dir: &Path, shared: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let stderr_log = data_dir.with_extension(format!("stderr.{}.log", std::process::id()));
        let s3_prefix = on_s3().then(|| s3_prefix_for(shared));
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("ARTIFACTSTORE_URL")
            .envs(env.iter().copied());
        if let Some(token) = suite_token()
            && !extra.contains(&"--config")
        {
            cmd.arg("--config").arg(suite_auth_config(data_dir, token));
        }
        if let Some(prefix) = &s3_prefix {
            // Each server has its own prefix, so sweeping everything stale at start-up
            // (age 0) touches only its own uploads.
            cmd.args(["--backend", "s3"])
                .env("ARTIFACTSTORE_S3_PREFIX", prefix)
                .env("ARTIFACTSTORE_S3_STALE_UPLOAD_AGE_SECS", "0")
                .env("ARTIFACTSTORE_S3_PART_SIZE", (5 * 1024 * 1024).to_string())
                .env("ARTIFACTSTORE_MAX_UPLOAD_SIZE", (10u64 << 30).to_string());
        }
        let (child, url) = spawn_announcing(cmd, "artifactstore listening on ", &stderr_log);
        Server {
            child,
            url,
            data_dir: data_dir.to_owned(),
            stderr_log,
            s3_prefix,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe_sigterm(self.child.id());
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                if !status.success() {
                    eprintln!("server exited with {status}; its stderr:\n{}", self.logs());
                }
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
        panic!("server did not stop on SIGTERM within 10 s");
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn artifacts(&self, rest: &str) -> String {
        format!("{}/v1/artifacts/{rest}", self.url)
    }

    /// A client command aimed at this server (with the suite's token, if any).
    pub fn cli_command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        if let Some(token) = suite_token() {
            cmd.env("ARTIFACTSTORE_TOKEN", token);
        }
        cmd.env("ARTIFACTSTORE_URL", &self.url);
        cmd
    }

    /// Runs a client command against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run artifactstore")
    }

    /// Partial uploads the backend holds: temp files in the data directory (fs), or
    /// multipart uploads in progress and staging objects (s3).
    pub fn temp_files(&self) -> Vec<PathBuf> {
        if let Some(prefix) = self.s3_prefix.clone() {
            return block_on(async move {
                let store = s3_store(&prefix);
                let uploads = store.multipart_uploads_in_progress().await.unwrap();
                let staged = store.staging_objects().await.unwrap();
                (0..uploads)
                    .map(|i| PathBuf::from(format!("multipart-upload-{i}")))
                    .chain(staged.into_iter().map(PathBuf::from))
                    .collect()
            });
        }
        std::fs::read_dir(self.data_dir.join("tmp"))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }

    /// Whether a blob with exactly these bytes is stored.
    /// `fsck --json` of this server's store: its data directory, or on S3 its bucket
    /// prefix (`--backend s3`, re-hashing every object with `deep`).
    pub fn fsck(&self, deep: bool) -> serde_json::Value {
        let mut cmd = Command::new(BIN);
        cmd.args(["--json", "fsck", "--data-dir"])
            .arg(&self.data_dir);
        if let Some(prefix) = &self.s3_prefix {
            cmd.args(["--backend", "s3"])
                .env("ARTIFACTSTORE_S3_PREFIX", prefix);
            if deep {
                cmd.arg("--deep");
            }
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "fsck: {}{}", stdout(&o), stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// How many blobs the store holds and their bytes, counted outside the server: the
    /// files under the data directory's `blobs/`, or on S3 the objects under the
    /// server's prefix as boto3 lists them.
    pub fn stored_blobs(&self) -> (u64, u64) {
        let Some(prefix) = &self.s3_prefix else {
            fn walk(dir: &Path, acc: &mut (u64, u64)) {
                for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        walk(&e.path(), acc);
                    } else {
                        acc.0 += 1;
                        acc.1 += m.len();
                    }
                }
            }
            let mut acc = (0, 0);
            walk(&self.data_dir.join("blobs"), &mut acc);
            return acc;
        };
        const LIST: &str = r#"
import os, sys, boto3
def ref(name):
    return open(os.environ[name].removeprefix("file:")).read().strip()
s3 = boto3.client("s3", endpoint_url=os.environ["ARTIFACTSTORE_S3_ENDPOINT_URL"],
                  region_name=os.environ.get("ARTIFACTSTORE_S3_REGION", "us-east-1"),
                  aws_access_key_id=ref("ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF"),
                  aws_secret_access_key=ref("ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF"))
count = size = 0
for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=os.environ["ARTIFACTSTORE_S3_BUCKET"], Prefix=sys.argv[1] + "blobs/"):
    for o in page.get("Contents", []):
        count += 1
        size += o["Size"]
print(count, size)
"#;
        let o = Command::new("python3")
            .args(["-c", LIST, prefix])
            .output()
            .unwrap();
        assert!(o.status.success(), "boto3 listing: {}", stderr(&o));
        let text = stdout(&o);
        let mut parts = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    }

    pub fn holds_blob(&self, data: &[u8]) -> bool {
        if let Some(prefix) = self.s3_prefix.clone() {
            let d = artifactstore_model::Digest::of(data);
            return block_on(async move {
                use artifactstore_blob::BlobStore;
                s3_store(&prefix).head(&d).await.unwrap().is_some()
            });
        }
        let hex = sha256_hex(data);
        self.data_dir
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .exists()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// A new PostgreSQL database for replicas that share it and one bucket, or `None` (with
/// the reason printed) when the suite runs without PostgreSQL or without S3.
pub fn replica_database(name: &str) -> Option<String> {
    let Ok(admin) = std::env::var("ARTIFACTSTORE_TEST_POSTGRES_URL") else {
        eprintln!("ARTIFACTSTORE_TEST_POSTGRES_URL not set: replica test not run");
        return None;
    };
    if !on_s3() {
        eprintln!("replicas need a shared blob store: run with ARTIFACTSTORE_TEST_BACKEND=s3");
        return None;
    }
    let db = format!("{name}_{}", std::process::id());
    assert!(
        Command::new("psql")
            .arg(&admin)
            .args(["-qc", &format!("CREATE DATABASE {db}")])
            .status()
            .unwrap()
            .success()
    );
    Some(format!("{}/{db}", admin.rsplit_once('/').unwrap().0))
}

pub fn sha256_hex(data: &[u8]) -> String {
    artifactstore_model::Digest::of(data).hex()
}

pub fn digest(data: &[u8]) -> String {
    artifactstore_model::Digest::of(data).to_string()
}

/// Deterministic pseudo-random bytes, distinct per seed.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    artifactstore_blob::conformance::seeded_bytes(len, seed)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn http() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = suite_token() {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Polls `f` until it returns true, for at most `secs` seconds.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 20 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// A counter's value in a `/metrics` page.
pub fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}
