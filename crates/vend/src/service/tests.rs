//! The decision path in process: a fake driver, a temp-file SQLite lease store, a
//! signing key made here, a manual clock. Each test breaks one step of the mint saga
//! and checks what was left behind: audit lines, lease rows, upstream keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use artifactstore_model::ManualClock;
use base64::Engine as _;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::sync::Notify;

use super::*;
use crate::VendConfig;
use crate::driver::{DriverError, MintRequest, Minted, Revoked};
use crate::leases::{Lease, LeaseFilter, LeaseState};

#[test]
fn the_refresh_window_is_the_smaller_of_five_minutes_and_a_third() {
    let secs = std::time::Duration::from_secs;
    assert_eq!(
        artifactstore_credentials::refresh_window(secs(3600)),
        secs(300)
    );
    assert_eq!(
        artifactstore_credentials::refresh_window(secs(900)),
        secs(300)
    );
    assert_eq!(
        artifactstore_credentials::refresh_window(secs(60)),
        secs(20)
    );
    assert_eq!(artifactstore_credentials::refresh_window(secs(0)), secs(0));
}

#[test]
fn revoked_strings_are_documented_values() {
    for r in [
        Revoked::Deleted,
        Revoked::AlreadyGone,
        Revoked::Denied,
        Revoked::Unsupported,
    ] {
        assert!(["deleted", "already_gone", "denied", "unsupported"].contains(&r.as_str()));
    }
}

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "vend-test";
/// 2026-12-02T00:00:00Z.
const START: Timestamp = Timestamp::from_unix_secs(1_796_169_600);

/// Pauses a mint until the test lets it go.
#[derive(Default)]
struct Gate {
    minting: Notify,
    go: Notify,
}

type Hook = Box<dyn FnOnce() + Send>;

/// What the fake upstream says when it fails: an internal endpoint and its message,
/// which must reach the log only.
const UPSTREAM_WORDS: &str = "admin API at http://10.9.8.7:3903: 500 disk full on node-3";

/// The admin token of the harness.
const ADMIN_TOKEN: &str = "admin-test-token";

/// A driver that mints keys in memory and remembers what it was asked.
#[derive(Default)]
struct FakeDriver {
    /// Live upstream keys: access key id → lease id.
    keys: Mutex<BTreeMap<String, String>>,
    mints: AtomicU64,
    /// Every revoke call: (lease id, access key id).
    revokes: Mutex<Vec<(String, Option<String>)>>,
    fail_mint: std::sync::atomic::AtomicBool,
    fail_check: std::sync::atomic::AtomicBool,
    checks: AtomicU64,
    gate: Mutex<Option<Arc<Gate>>>,
    /// Runs inside the next mint, before it returns.
    on_mint: Mutex<Option<Hook>>,
    /// When each key was created, as the upstream would list it.
    created: Mutex<BTreeMap<String, Timestamp>>,
    /// Every `revoke_unexpired` call: (lease id, the expiry it was given).
    unexpired: Mutex<Vec<(String, Timestamp)>>,
}

impl FakeDriver {
    fn live_keys(&self) -> Vec<String> {
        self.keys.lock().unwrap().keys().cloned().collect()
    }
    fn revokes(&self) -> Vec<(String, Option<String>)> {
        self.revokes.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl MintDriver for FakeDriver {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn can_enforce(&self, _scope: &Scope, _base: &Scope) -> Result<(), String> {
        Ok(())
    }
    async fn mint(&self, request: &MintRequest<'_>) -> Result<Minted, DriverError> {
        let n = self.mints.fetch_add(1, Ordering::SeqCst) + 1;
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.minting.notify_one();
            gate.go.notified().await;
        }
        if let Some(hook) = self.on_mint.lock().unwrap().take() {
            hook();
        }
        if self.fail_mint.load(Ordering::SeqCst) {
            return Err(DriverError::Unavailable(UPSTREAM_WORDS.into()));
        }
        let id = format!("FAKEKEY{n}");
        self.keys
            .lock()
            .unwrap()
            .insert(id.clone(), request.lease_id.to_owned());
        self.created.lock().unwrap().insert(
            id.clone(),
            request.expires_at.saturating_sub(request.duration),
        );
        Ok(Minted {
            access_key_id: id,
            secret_access_key: Secret::new(format!("fake-secret-{n}")),
            session_token: None,
            expires_at: request.expires_at,
        })
    }
    async fn revoke(&self, lease_id: &str, key: Option<&str>) -> Result<Revoked, DriverError> {
        self.revokes
            .lock()
            .unwrap()
            .push((lease_id.to_owned(), key.map(str::to_owned)));
        let mut keys = self.keys.lock().unwrap();
        let before = keys.len();
        match key {
            Some(k) => {
                keys.remove(k);
            }
            None => keys.retain(|_, lease| lease != lease_id),
        }
        Ok(if keys.len() < before {
            Revoked::Deleted
        } else {
            Revoked::AlreadyGone
        })
    }
    async fn revoke_unexpired(
        &self,
        lease_id: &str,
        key: Option<&str>,
        expires_at: Timestamp,
    ) -> Result<Revoked, DriverError> {
        self.unexpired
            .lock()
            .unwrap()
            .push((lease_id.to_owned(), expires_at));
        self.revoke(lease_id, key).await
    }
    async fn list_minted(&self) -> Result<Option<Vec<crate::driver::MintedKey>>, DriverError> {
        let created = self.created.lock().unwrap();
        Ok(Some(
            self.keys
                .lock()
                .unwrap()
                .iter()
                .map(|(key, lease)| crate::driver::MintedKey {
                    lease_id: lease.clone(),
                    access_key_id: key.clone(),
                    created: created.get(key).copied(),
                })
                .collect(),
        ))
    }
    async fn check(&self) -> Result<(), DriverError> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if self.fail_check.load(Ordering::SeqCst) {
            return Err(DriverError::Unavailable(UPSTREAM_WORDS.into()));
        }
        Ok(())
    }
}

struct Harness {
    service: Arc<Service>,
    driver: Arc<FakeDriver>,
    clock: Arc<ManualClock>,
    signer: jsonwebtoken::EncodingKey,
    audit_path: PathBuf,
    db_url: String,
    _dir: tempfile::TempDir,
}

const CONFIG: &str = r#"
    database_url = "sqlite://unused.db"
    [audit]
    path = "/unused"
    [[issuers]]
    issuer = "https://issuer.test"
    audience = "vend-test"
    [drivers.fake]
    kind = "garage"
    admin_url = "http://127.0.0.1:1"
    admin_token_ref = "env:UNUSED"
    [[roles]]
    name = "ci-writer"
    driver = "fake"
    bucket = "artifacts"
    actions = ["read", "write", "list", "delete"]
    rules = [{ groups = { contains = "writers" } }]
    [admin]
    rules = [{ groups = { contains = "vend-admins" } }]
"#;

/// The address the in-process router is told it listens on.
const LISTEN: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    8090,
);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn harness() -> Harness {
    harness_with_limits(crate::config::LeaseLimits::default()).await
}

async fn harness_with_limits(lease_limits: crate::config::LeaseLimits) -> Harness {
    harness_with(lease_limits, crate::config::RateLimits::default()).await
}

async fn harness_with(
    lease_limits: crate::config::LeaseLimits,
    rate_limits: crate::config::RateLimits,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config = VendConfig::parse(CONFIG, Path::new("t.toml"), &|_| None).unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let driver = Arc::new(FakeDriver::default());
    let audit_path = dir.path().join("audit.log");
    let audit = AuditLog::open(&audit_path, clock.clone()).unwrap();
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("vend.db").display());
    let index = LeaseStore::open(&db_url).await.unwrap();

    // A signing key of our own, its public half served to the verifier as a JWKS.
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
    let jwks = json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig", "x": b64(public.as_ref())}
    ]});
    let signer = jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref());
    let clock_dyn: Arc<dyn Clock> = clock.clone();
    let verifier = TokenVerifier::new(
        &config.issuers,
        config.token,
        reqwest::Client::new(),
        clock_dyn.clone(),
    );
    verifier.issuers[0].install_jwks(&jwks);

    let as_driver: Arc<dyn MintDriver> = driver.clone();
    let roles = config
        .roles
        .into_iter()
        .map(|r| Role::new(r, as_driver.clone()).unwrap())
        .collect();
    let service = Arc::new(Service {
        verifier,
        roles,
        drivers: BTreeMap::from([("fake".to_owned(), as_driver)]),
        leases: index,
        audit,
        key_hmac: crate::audit::KeyHasher::new(b"test-hmac-key"),
        counters: Default::default(),
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        admin_rules: config.admin.rules,
        lease_limits,
        limiter: limits::Limiter::new(&rate_limits),
        refusals: refusals::Coalescer::new(
            Duration::from_secs(rate_limits.audit_window_secs),
            rate_limits.max_tracked,
        ),
        edge: EdgeConfig::default(),
        break_glass: None,
        clock: clock_dyn,
    });
    Harness {
        service,
        driver,
        clock,
        signer,
        audit_path,
        db_url,
        _dir: dir,
    }
}

impl Harness {
    fn token(&self, sub: &str, ttl: Duration) -> String {
        let now = self.clock.now().unix_secs();
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "groups": ["writers"],
            "iat": now, "exp": now + ttl.as_secs() as i64,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.signer).unwrap()
    }

    fn request(&self, sub: &str) -> VendRequest {
        VendRequest {
            token: Secret::new(self.token(sub, Duration::from_secs(3600))),
            role: None,
            duration_secs: Some(900),
            policy: None,
            client: None,
            format: Format::Json,
        }
    }

    async fn leases(&self) -> Vec<Lease> {
        self.service
            .leases
            .leases(&LeaseFilter::default(), 100)
            .await
            .unwrap()
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            // Every file begins with its genesis line; the tests look at what follows.
            .filter(|l: &Value| l["event"] != crate::audit::GENESIS_EVENT)
            .collect()
    }

    fn events(&self) -> Vec<String> {
        self.audit_lines()
            .iter()
            .map(|l| l["event"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Makes every later audit append fail: the log is moved aside and its path
    /// becomes a directory.
    fn break_audit(&self) -> impl FnOnce() + Send + 'static {
        let path = self.audit_path.clone();
        move || {
            if path.exists() {
                std::fs::rename(&path, path.with_extension("aside")).unwrap();
            }
            std::fs::create_dir(&path).unwrap();
        }
    }

    /// Puts the log moved aside by [`break_audit`](Self::break_audit) back.
    fn mend_audit(&self) {
        std::fs::remove_dir(&self.audit_path).unwrap();
        let aside = self.audit_path.with_extension("aside");
        if aside.exists() {
            std::fs::rename(aside, &self.audit_path).unwrap();
        }
    }

    /// Runs SQL on the lease store's database behind its back (fault injection).
    async fn sql(&self, statement: &str) {
        let mut conn = sqlx::AnyConnection::connect(&self.db_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

fn refused(r: Result<Issued, Refused>) -> Denial {
    match r {
        Ok(i) => panic!("issued lease {}", i.lease_id),
        Err(r) => r.denial,
    }
}

#[tokio::test]
async fn an_allowed_request_is_audited_recorded_minted_and_activated() {
    let h = harness().await;
    let issued = h.service.vend(h.request("alice")).await.unwrap();
    assert_eq!(issued.issued_at, START);
    assert_eq!(
        issued.expires_at,
        START.saturating_add(Duration::from_secs(900))
    );
    assert!(issued.refresh_after < issued.expires_at.saturating_sub(Duration::from_secs(299)));
    let lease = h
        .service
        .leases
        .lease(&issued.lease_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.state, LeaseState::Active);
    assert_eq!(
        lease.access_key_id.as_deref(),
        Some(issued.access_key_id.as_str())
    );
    assert_eq!(h.driver.live_keys(), vec![issued.access_key_id.clone()]);
    assert_eq!(h.events(), ["decision", "lease.issued"]);
    let text = std::fs::read_to_string(&h.audit_path).unwrap();
    assert!(text.contains("\"time\":\"2026-12-02T00:00:00Z\""), "{text}");
    assert!(!text.contains(issued.secret_access_key.expose()));
    assert!(
        !text.contains(&issued.access_key_id),
        "key ids only as HMAC"
    );
}

#[tokio::test]
async fn an_unwritable_allow_line_issues_nothing_and_never_calls_the_driver() {
    let h = harness().await;
    (h.break_audit())();
    let denial = refused(h.service.vend(h.request("alice")).await);
    assert_eq!(denial.reason, Reason::AuditUnavailable);
    assert_eq!(denial.reason.status(), 503);
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 0, "driver called");
    assert!(h.leases().await.is_empty(), "a lease row was written");
}

#[tokio::test]
async fn an_unwritable_issued_line_takes_the_fresh_key_back() {
    let h = harness().await;
    *h.driver.on_mint.lock().unwrap() = Some(Box::new(h.break_audit()));
    let denial = refused(h.service.vend(h.request("alice")).await);
    assert_eq!(denial.reason, Reason::AuditUnavailable);
    assert_eq!(denial.reason.status(), 503);
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 1);
    assert!(
        h.driver.live_keys().is_empty(),
        "the fresh key is still upstream"
    );
    let revokes = h.driver.revokes();
    assert_eq!(revokes.len(), 1);
    assert_eq!(revokes[0].1.as_deref(), Some("FAKEKEY1"));
    let leases = h.leases().await;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].state, LeaseState::Failed);
    assert_eq!(leases[0].end_reason.as_deref(), Some("audit unavailable"));
    h.mend_audit();
    assert_eq!(h.events(), ["decision"], "only the allow line made it");
}

#[tokio::test]
async fn a_revocation_landing_while_minting_keeps_the_lease_from_ever_being_active() {
    let h = harness().await;
    let gate = Arc::new(Gate::default());
    *h.driver.gate.lock().unwrap() = Some(gate.clone());
    let service = h.service.clone();
    let request = h.request("alice");
    let vend = tokio::spawn(async move { service.vend(request).await });
    gate.minting.notified().await;

    let outcome = h
        .service
        .revoke(
            &RevokeTarget::Subject {
                issuer: ISSUER.into(),
                subject: "alice".into(),
            },
            "incident",
            false,
        )
        .await
        .unwrap();
    assert_eq!(outcome.leases.len(), 1, "the pending lease is found");
    gate.go.notify_one();

    let denial = refused(vend.await.unwrap());
    assert_eq!(denial.reason, Reason::SubjectRevoked);
    let lease = &h.leases().await[0];
    assert_eq!(lease.state, LeaseState::Revoked);
    assert_eq!(lease.access_key_id, None, "it never became active");
    assert!(
        h.driver.live_keys().is_empty(),
        "the fresh key is still upstream"
    );
    assert!(
        h.driver
            .revokes()
            .contains(&(lease.id.clone(), Some("FAKEKEY1".into())))
    );
    // And the subject stays refused, before any driver call.
    let denial = refused(h.service.vend(h.request("alice")).await);
    assert_eq!(denial.reason, Reason::SubjectRevoked);
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_lease_row_that_cannot_be_activated_takes_the_key_back() {
    let h = harness().await;
    h.sql(
        "CREATE TRIGGER no_activation BEFORE UPDATE OF state ON leases \
         WHEN NEW.state = 'active' BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .await;
    let denial = refused(h.service.vend(h.request("alice")).await);
    assert_eq!(denial.reason, Reason::Internal);
    assert!(
        h.driver.live_keys().is_empty(),
        "the driver's key is still upstream"
    );
    assert_eq!(h.driver.revokes()[0].1.as_deref(), Some("FAKEKEY1"));
    let lease = &h.leases().await[0];
    assert_eq!(lease.state, LeaseState::Failed);
    assert_eq!(h.events(), ["decision", "lease.failed"]);
}

#[tokio::test]
async fn a_lease_row_that_cannot_be_written_stops_before_minting() {
    let h = harness().await;
    h.sql(
        "CREATE TRIGGER no_leases BEFORE INSERT ON leases \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .await;
    let denial = refused(h.service.vend(h.request("alice")).await);
    assert_eq!(denial.reason, Reason::Internal);
    assert_eq!(h.driver.mints.load(Ordering::SeqCst), 0);
    assert_eq!(h.events(), ["decision", "lease.failed"]);
}

#[tokio::test]
async fn a_failed_mint_fails_the_lease() {
    let h = harness().await;
    h.driver.fail_mint.store(true, Ordering::SeqCst);
    let denial = refused(h.service.vend(h.request("alice")).await);
    assert_eq!(denial.reason, Reason::UpstreamUnavailable);
    // The token holder learns that the upstream failed, not where it is or what it said;
    // neither does the audit log keep the upstream's words.
    assert!(!denial.message.contains("10.9.8.7"), "{}", denial.message);
    assert!(!denial.message.contains("disk full"), "{}", denial.message);
    let audit = std::fs::read_to_string(&h.audit_path).unwrap();
    assert!(
        !audit.contains("10.9.8.7") && !audit.contains("disk full"),
        "{audit}"
    );
    let lease = &h.leases().await[0];
    assert_eq!(
        (lease.state, lease.end_reason.as_deref()),
        (LeaseState::Failed, Some("mint failed"))
    );
    assert_eq!(h.service.leases.live_lease_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_request_cancelled_while_minting_leaves_no_live_lease() {
    let h = harness().await;
    let gate = Arc::new(Gate::default());
    *h.driver.gate.lock().unwrap() = Some(gate.clone());
    let service = h.service.clone();
    let request = h.request("alice");
    let vend = tokio::spawn(async move { service.vend(request).await });
    gate.minting.notified().await;
    vend.abort();
    assert!(vend.await.unwrap_err().is_cancelled());
    // The guard's compensation runs in a task of its own.
    for _ in 0..200 {
        if h.service.leases.live_lease_count().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lease = &h.leases().await[0];
    assert_eq!(
        (lease.state, lease.end_reason.as_deref()),
        (LeaseState::Failed, Some("cancelled"))
    );
}

#[tokio::test]
async fn token_times_and_lease_expiry_follow_the_injected_clock() {
    let h = harness().await;
    let issued = h.service.vend(h.request("alice")).await.unwrap();

    // Nothing is due until the clock says so.
    assert_eq!(h.service.reap_once().await.unwrap(), 0);
    h.clock.advance(Duration::from_secs(900));
    assert_eq!(h.service.reap_once().await.unwrap(), 1);
    let lease = h
        .service
        .leases
        .lease(&issued.lease_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.state, LeaseState::Expired);
    assert_eq!(
        lease.ended_at,
        Some(START.saturating_add(Duration::from_secs(900)))
    );
    assert!(
        h.driver.live_keys().is_empty(),
        "the reaper deletes the key"
    );

    // A token minted now expires in 10 minutes; beyond the 60 s leeway it is refused.
    let request = VendRequest {
        token: Secret::new(h.token("bob", Duration::from_secs(600))),
        ..h.request("bob")
    };
    h.clock.advance(Duration::from_secs(600 + 61));
    let denial = refused(h.service.vend(request).await);
    assert_eq!(denial.reason, Reason::TokenExpired);
    // And one issued in the future (iat beyond the leeway) is not valid yet.
    let future = h.token("carol", Duration::from_secs(3600));
    h.clock.set(START);
    let denial = refused(
        h.service
            .vend(VendRequest {
                token: Secret::new(future),
                ..h.request("carol")
            })
            .await,
    );
    assert_eq!(denial.reason, Reason::TokenNotYetValid);
}

mod admin;
mod break_glass;
mod floods;
mod reconcile;
mod revoke_paths;
mod routes;
