//! Helpers of the vending tests: a real OIDC issuer (npm oauth2-mock-server), the
//! `artifactstore vend serve` process, Garage from the S3 fixture, boto3.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::{Rc, Weak};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use crate::common::oidc::*;
use crate::common::{BIN, REQUIRE_LIVE_S3, block_on, live_or_skip, spawn_announcing};

pub const AUDIENCE: &str = "artifactstore-test";

/// Garage from `scripts/s3-fixture.sh garage`, when the fixture is running.
pub struct Garage {
    pub admin_url: String,
    pub admin_token_ref: String,
    pub admin_token: String,
    pub s3_endpoint: String,
    pub region: String,
    pub bucket: String,
}

pub fn garage() -> Option<Garage> {
    let var = |k: &str| std::env::var(k).ok();
    match (
        var("ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_URL"),
        var("ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_TOKEN_REF"),
    ) {
        (Some(admin_url), Some(admin_token_ref)) => {
            let path = admin_token_ref.strip_prefix("file:").unwrap();
            let admin_token = std::fs::read_to_string(path).unwrap().trim().to_owned();
            Some(Garage {
                admin_url,
                admin_token_ref,
                admin_token,
                s3_endpoint: var("ARTIFACTSTORE_S3_ENDPOINT_URL").unwrap(),
                region: var("ARTIFACTSTORE_S3_REGION").unwrap_or_else(|| "garage".into()),
                bucket: var("ARTIFACTSTORE_S3_BUCKET").unwrap(),
            })
        }
        _ => {
            live_or_skip(
                false,
                "live Garage (run under scripts/s3-fixture.sh garage)",
                REQUIRE_LIVE_S3,
            );
            None
        }
    }
}

/// Tests run in parallel against one Garage. Every vend service started with Garage
/// holds a shared hold for its life; a test that asserts on *every* key Garage holds
/// ("no key was created") takes [`garage_alone`] first, so no other test mints or
/// deletes keys meanwhile.
static GARAGE_USERS: RwLock<()> = RwLock::new(());

thread_local! {
    /// Set while this thread's test holds Garage alone: its own vend services take no
    /// shared hold (which would wait for itself).
    static ALONE: Cell<bool> = const { Cell::new(false) };
    /// This thread's shared hold, one for all its vend services: a second read of the
    /// lock while a writer waits would wait for that writer, which waits for the first.
    static SHARED: RefCell<Weak<SharedHold>> = const { RefCell::new(Weak::new()) };
}

/// Garage to this test alone, until dropped.
pub struct GarageAlone(#[allow(dead_code)] RwLockWriteGuard<'static, ()>);

pub fn garage_alone() -> GarageAlone {
    let guard = GARAGE_USERS.write().unwrap_or_else(PoisonError::into_inner);
    ALONE.set(true);
    GarageAlone(guard)
}

impl Drop for GarageAlone {
    fn drop(&mut self) {
        ALONE.set(false);
    }
}

pub struct SharedHold(#[allow(dead_code)] RwLockReadGuard<'static, ()>);

fn garage_shared() -> Option<Rc<SharedHold>> {
    if ALONE.get() {
        return None;
    }
    SHARED.with(|held| {
        if let Some(hold) = held.borrow().upgrade() {
            return Some(hold);
        }
        let hold = Rc::new(SharedHold(
            GARAGE_USERS.read().unwrap_or_else(PoisonError::into_inner),
        ));
        *held.borrow_mut() = Rc::downgrade(&hold);
        Some(hold)
    })
}

impl Garage {
    /// Ids of every key Garage holds.
    pub fn key_ids(&self) -> Vec<String> {
        let url = format!("{}/v2/ListKeys", self.admin_url);
        let token = self.admin_token.clone();
        let body: Value = block_on(async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        body.as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A running `artifactstore vend serve`.
pub struct Vend {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub audit: PathBuf,
    pub stderr: PathBuf,
    pub admin_token: String,
    pub admin_token_file: PathBuf,
    /// Held while this service may mint on Garage (see [`garage_alone`]).
    _garage_shared: Option<Rc<SharedHold>>,
}

pub struct VendSetup<'a> {
    /// The example config to start from (`examples/vend-garage.toml`).
    pub example: &'a str,
    /// TOML appended to it (extra roles, sections).
    pub extra: String,
    pub env: Vec<(String, String)>,
    /// Listen address (default `127.0.0.1:0`); fixed when a test restarts the service.
    pub listen: Option<String>,
}

impl Vend {
    /// Starts the vend service on the example config with the env a quickstart sets.
    /// Without Garage, the driver points at a closed port: every refusal that comes
    /// before minting still works, and minting fails as `upstream_unavailable`.
    pub fn start(issuer: &Issuer, garage: Option<&Garage>, setup: VendSetup<'_>) -> Vend {
        let vend = Self::spawn(issuer, garage, setup);
        vend.wait_for_keys();
        vend
    }

    /// Starts without waiting for the issuers' keys.
    pub fn spawn(issuer: &Issuer, garage: Option<&Garage>, setup: VendSetup<'_>) -> Vend {
        let garage_shared = garage.and_then(|_| garage_shared());
        let dir = tempfile::tempdir().unwrap();
        let admin_token = format!("admin-canary-{}", std::process::id());
        let admin_token_file = dir.path().join("admin-token");
        std::fs::write(&admin_token_file, &admin_token).unwrap();
        let mut text = std::fs::read_to_string(repo_root().join(setup.example)).unwrap();
        text.push_str(&format!(
            "\n[admin]\ntoken_ref = \"file:{}\"\n",
            admin_token_file.display()
        ));
        text.push_str(&setup.extra);
        let config = dir.path().join("vend.toml");
        std::fs::write(&config, text).unwrap();
        let audit = dir.path().join("audit.log");
        let stderr = dir.path().join("vend.stderr.log");
        let mut cmd = Command::new(BIN);
        let listen = setup.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        cmd.args(["vend", "serve", "--listen", &listen, "--config"])
            .arg(&config)
            .env("ARTIFACTSTORE_VEND_ISSUER", &issuer.url)
            .env("ARTIFACTSTORE_VEND_AUDIENCE", AUDIENCE)
            .env("ARTIFACTSTORE_VEND_AUDIT_LOG", &audit)
            .env(
                "ARTIFACTSTORE_VEND_DATABASE_URL",
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("leases.db").display()
                ),
            )
            .env("RUST_LOG", "info");
        match garage {
            Some(g) => {
                cmd.env("ARTIFACTSTORE_VEND_BUCKET", &g.bucket)
                    .env("ARTIFACTSTORE_VEND_GARAGE_ADMIN_URL", &g.admin_url)
                    .env(
                        "ARTIFACTSTORE_VEND_GARAGE_ADMIN_TOKEN_REF",
                        &g.admin_token_ref,
                    );
            }
            None => {
                let fake = dir.path().join("garage-token");
                std::fs::write(&fake, "unused").unwrap();
                cmd.env("ARTIFACTSTORE_VEND_BUCKET", "artifacts")
                    .env("ARTIFACTSTORE_VEND_GARAGE_ADMIN_URL", "http://127.0.0.1:9")
                    .env(
                        "ARTIFACTSTORE_VEND_GARAGE_ADMIN_TOKEN_REF",
                        format!("file:{}", fake.display()),
                    );
            }
        }
        for (k, v) in &setup.env {
            cmd.env(k, v);
        }
        let (child, url) = spawn_announcing(cmd, "artifactstore vend listening on ", &stderr);
        Vend {
            child,
            url,
            dir,
            audit,
            stderr,
            admin_token,
            admin_token_file,
            _garage_shared: garage_shared,
        }
    }

    /// Waits until every issuer's keys are loaded.
    pub fn wait_for_keys(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, m) = get_text(&format!("{}/metrics", self.url));
            let loaded = m
                .lines()
                .filter(|l| l.starts_with("artifactstore_vend_jwks_loaded{"))
                // The value as a number: a gauge may be rendered `1` or `1.0`.
                .all(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(1.0));
            if loaded {
                return;
            }
            assert!(Instant::now() < deadline, "keys never loaded: {m}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `POST /v1/credentials`.
    pub fn credentials(&self, token: &str, body: Value) -> (u16, Value, String) {
        let url = format!("{}/v1/credentials", self.url);
        let token = token.to_owned();
        block_on(async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let reason = r
                .headers()
                .get("x-artifactstore-reason")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, r.json().await.unwrap_or(Value::Null), reason)
        })
    }

    /// `POST /` (STS) with these form fields; returns status, body text.
    pub fn sts(&self, form: &[(&str, &str)]) -> (u16, String) {
        let url = format!("{}/", self.url);
        let form: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        block_on(async move {
            let r = reqwest::Client::new()
                .post(url)
                .form(&form)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let token = self.admin_token.clone();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        block_on(async move {
            let mut req = reqwest::Client::new()
                .request(method, url)
                .bearer_auth(token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        })
    }

    pub fn leases(&self) -> Vec<Value> {
        let (status, body) = self.admin("GET", "/v1/admin/leases", None);
        assert_eq!(status, 200, "{body}");
        body["leases"].as_array().unwrap().clone()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vend {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn get_text(url: &str) -> (u16, String) {
    let url = url.to_owned();
    block_on(async move {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

pub fn get_json(url: &str) -> (u16, Value) {
    let (s, t) = get_text(url);
    (s, serde_json::from_str(&t).unwrap_or(Value::Null))
}

/// Runs `s3.py OP KEY` with exactly `env` (plus PATH and HOME): no other AWS
/// configuration can leak in.
pub fn boto3(op: &str, key: &str, env: &[(&str, String)]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vend/s3.py");
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(script).args([op, key]).env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", home.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    if let Ok(pyenv) = std::env::var("PYENV_ROOT") {
        cmd.env("PYENV_ROOT", pyenv);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|_| {
        panic!(
            "s3.py {op} {key}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn s3_env(g: &Garage) -> Vec<(&'static str, String)> {
    vec![
        ("T_S3_ENDPOINT", g.s3_endpoint.clone()),
        ("T_REGION", g.region.clone()),
        ("T_BUCKET", g.bucket.clone()),
    ]
}

/// `env` (an S3 target for `s3.py`) plus boto3's own web identity settings aimed at
/// the vend service, as a job would run it.
pub fn with_web_identity(
    mut env: Vec<(&'static str, String)>,
    vend: &Vend,
    token_file: &Path,
    role: &str,
) -> Vec<(&'static str, String)> {
    env.push((
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        token_file.display().to_string(),
    ));
    env.push((
        "AWS_ROLE_ARN",
        format!("arn:aws:iam::000000000000:role/{role}"),
    ));
    env.push(("AWS_ENDPOINT_URL_STS", vend.url.clone()));
    env
}

/// `env` (an S3 target for `s3.py`) plus these credentials (`with_token`: their
/// session token too).
pub fn with_keys(
    mut env: Vec<(&'static str, String)>,
    creds: &Value,
    with_token: bool,
) -> Vec<(&'static str, String)> {
    env.push(("T_AK", creds["access_key_id"].as_str().unwrap().to_owned()));
    env.push((
        "T_SK",
        creds["secret_access_key"].as_str().unwrap().to_owned(),
    ));
    if with_token {
        env.push(("T_ST", creds["session_token"].as_str().unwrap().to_owned()));
    }
    env
}

/// Seconds from now until vended credentials expire (their `expiration`).
pub fn seconds_left(creds: &Value) -> i64 {
    let expires = time::OffsetDateTime::parse(
        creds["expiration"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    expires.unix_timestamp() - now()
}

/// Claims of a token the example roles accept as `ci-writer`.
pub fn writer_claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": AUDIENCE, "groups": ["dev", "artifact-writers"]})
}

/// Runs the CLI with `args`.
pub fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run artifactstore")
}
