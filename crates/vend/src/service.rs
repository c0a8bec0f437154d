//! The one decision path behind every wire format: token → revocations → role →
//! scope → duration → audit → lease → mint → audit → answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use artifactstore_index::{Index, Lease, LeaseFilter, LeaseState, RevocationKind};
use artifactstore_model::secret::Secret;
use serde::Serialize;

use crate::audit::{AuditLog, AuditRecord};
use crate::config::RoleConfig;
use crate::driver::{MintDriver, MintRequest};
use crate::oidc::{TokenVerifier, VerifiedToken, unix_now};
use crate::policy::Scope;
use crate::reason::{Denial, Reason};
use crate::roles::{PrefixTemplate, RenderError, rule_matches};

/// Which wire format a request came in on (for audit lines and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Sts,
    Json,
    Container,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Sts => "sts",
            Format::Json => "json",
            Format::Container => "container",
        }
    }
}

/// A request for credentials, whatever its wire format.
#[derive(Debug)]
pub struct VendRequest {
    pub token: Secret,
    /// A role name, or an ARN whose last path segment is one.
    pub role: Option<String>,
    pub duration_secs: Option<u64>,
    /// A session policy that may only narrow the role.
    pub policy: Option<String>,
    pub client: Option<String>,
    pub format: Format,
}

/// Credentials handed out.
#[derive(Debug)]
pub struct Issued {
    pub request_id: String,
    pub lease_id: String,
    pub role: String,
    pub driver: String,
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// For drivers without session tokens (Garage): `artifactstore-lease-<id>`, which
    /// upstreams ignore and which ties S3 request logs back to the lease.
    pub session_token: Secret,
    pub issued_at: i64,
    pub expires_at: i64,
    /// When a client should fetch new credentials: before expiry by a window (the
    /// smaller of 5 min and a third of the lifetime), less up to a fifth of it at
    /// random so that many clients do not come back at once.
    pub refresh_after: i64,
    pub scope: Scope,
}

/// A refusal, with the request id that its audit line carries.
#[derive(Debug)]
pub struct Refused {
    pub request_id: String,
    pub denial: Denial,
}

pub struct Role {
    pub config: RoleConfig,
    templates: Vec<PrefixTemplate>,
    driver: Arc<dyn MintDriver>,
}

impl Role {
    pub fn new(config: RoleConfig, driver: Arc<dyn MintDriver>) -> Result<Self, String> {
        let templates = config
            .prefixes
            .iter()
            .map(|p| PrefixTemplate::parse(p))
            .collect::<Result<_, _>>()?;
        Ok(Role {
            config,
            templates,
            driver,
        })
    }
}

#[derive(Default)]
pub struct Counters {
    pub decisions: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    pub issued: AtomicU64,
    pub mint_failures: AtomicU64,
    pub mint_micros: AtomicU64,
    pub reaped: AtomicU64,
    pub revoked: AtomicU64,
}

impl Counters {
    fn decision(&self, reason: Reason) {
        *self
            .decisions
            .lock()
            .unwrap()
            .entry(reason.as_str())
            .or_default() += 1;
    }
}

pub struct Service {
    pub verifier: TokenVerifier,
    pub roles: Vec<Role>,
    pub drivers: BTreeMap<String, Arc<dyn MintDriver>>,
    pub index: Index,
    pub audit: AuditLog,
    pub counters: Counters,
    pub admin_token: Option<Secret>,
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).expect("system randomness");
    hex::encode(buf)
}

fn random_below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let mut buf = [0u8; 8];
    aws_lc_rs::rand::fill(&mut buf).expect("system randomness");
    u64::from_le_bytes(buf) % n
}

/// The seconds before expiry at which a credential of `lifetime` seconds should be
/// renewed: the smaller of 5 min and a third of the lifetime.
pub fn refresh_window(lifetime: u64) -> u64 {
    (lifetime / 3).min(300)
}

/// Unix seconds as RFC 3339 UTC, as wire formats and audit lines show expiries.
pub(crate) fn rfc3339(secs: i64) -> String {
    artifactstore_model::rfc3339(secs.saturating_mul(1000))
}

/// Claims in audit lines and error messages are cut to this length.
fn short(s: &str) -> String {
    s.chars().take(256).collect()
}

/// What a revocation covers.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RevokeTarget {
    Lease { id: String },
    Subject { issuer: String, subject: String },
    Role { role: String },
}

#[derive(Debug, Serialize)]
pub struct RevokedLease {
    pub lease_id: String,
    /// `deleted`, `already_gone`, `unsupported` (the upstream cannot revoke; the
    /// credential works until it expires) or `error`.
    pub upstream: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RevokeOutcome {
    pub leases: Vec<RevokedLease>,
    /// Whether future vending to the subject or role is now refused.
    pub standing: bool,
    pub audited: bool,
}

impl Service {
    fn deny(&self, record: &mut AuditRecord, denial: &Denial) {
        record.decision = Some("deny");
        record.reason = Some(denial.reason);
        record.detail = Some(denial.message.clone());
    }

    /// Writes a deny line and builds the refusal. A deny is a deny even when the
    /// audit log is down; the failure is logged and counted.
    async fn refuse(&self, mut record: AuditRecord, denial: Denial) -> Refused {
        self.deny(&mut record, &denial);
        self.counters.decision(denial.reason);
        let _ = self.audit.append(&record).await;
        Refused {
            request_id: record.request_id.unwrap_or_default(),
            denial,
        }
    }

    pub async fn vend(&self, request: VendRequest) -> Result<Issued, Refused> {
        let request_id = random_hex(8);
        let mut record = AuditRecord {
            event: "decision",
            request_id: Some(request_id.clone()),
            client: request.client.clone(),
            format: Some(request.format.as_str()),
            ..Default::default()
        };
        let token = match self.verifier.verify(request.token.expose()).await {
            Ok(t) => t,
            Err(denial) => {
                let claimed = self.verifier.claimed_identity(request.token.expose());
                record.issuer = claimed.issuer;
                record.subject = claimed.subject;
                record.identity_verified = Some(false);
                return Err(self.refuse(record, denial).await);
            }
        };
        record.issuer = Some(token.issuer.clone());
        record.subject = Some(short(&token.subject));
        record.audience = Some(token.audience.clone());
        record.identity_verified = Some(true);
        match self.decide(&token, &request).await {
            Ok((role, scope, duration)) => {
                record.role = Some(role.config.name.clone());
                record.driver = Some(role.driver.kind().to_owned());
                self.issue(record, &token, role, scope, duration).await
            }
            Err((role, denial)) => {
                record.role = role;
                Err(self.refuse(record, denial).await)
            }
        }
    }

    /// Token checks and the decision, without auditing or minting: the role, scope and
    /// duration that [`vend`](Self::vend) would issue. For benchmarks and dry runs.
    pub async fn evaluate(&self, request: &VendRequest) -> Result<(String, Scope, u64), Denial> {
        let token = self.verifier.verify(request.token.expose()).await?;
        self.decide(&token, request)
            .await
            .map(|(role, scope, duration)| (role.config.name.clone(), scope, duration))
            .map_err(|(_, denial)| denial)
    }

    /// Everything after the token: revocations, role, scope, policy, duration.
    #[allow(clippy::type_complexity)]
    async fn decide(
        &self,
        token: &VerifiedToken,
        request: &VendRequest,
    ) -> Result<(&Role, Scope, u64), (Option<String>, Denial)> {
        let db = |e: artifactstore_index::Error| {
            (
                None,
                Denial::new(Reason::Internal, format!("lease store: {e}")),
            )
        };
        if self
            .index
            .is_revoked(RevocationKind::Subject, &token.issuer, &token.subject)
            .await
            .map_err(db)?
        {
            return Err((
                None,
                Denial::new(
                    Reason::SubjectRevoked,
                    "this subject's access has been revoked",
                ),
            ));
        }
        let role = match &request.role {
            Some(asked) => {
                let name = asked.rsplit('/').next().unwrap_or(asked);
                let Some(role) = self.roles.iter().find(|r| r.config.name == name) else {
                    return Err((
                        Some(short(name)),
                        Denial::new(
                            Reason::RoleNotPermitted,
                            format!("no role named {:?}", short(name)),
                        ),
                    ));
                };
                if !role
                    .config
                    .rules
                    .iter()
                    .any(|r| rule_matches(r, &token.claims))
                {
                    return Err((
                        Some(name.to_owned()),
                        Denial::new(
                            Reason::RoleNotPermitted,
                            format!("the token's claims do not match role {name:?}"),
                        ),
                    ));
                }
                role
            }
            None => self
                .roles
                .iter()
                .find(|r| {
                    r.config
                        .rules
                        .iter()
                        .any(|rule| rule_matches(rule, &token.claims))
                })
                .ok_or_else(|| {
                    (
                        None,
                        Denial::new(Reason::NoMatchingRole, "no role matches the token's claims"),
                    )
                })?,
        };
        let name = Some(role.config.name.clone());
        if self
            .index
            .is_revoked(RevocationKind::Role, "", &role.config.name)
            .await
            .map_err(db)?
        {
            return Err((
                name,
                Denial::new(Reason::RoleRevoked, "this role has been revoked"),
            ));
        }
        let mut prefixes = Vec::new();
        for t in &role.templates {
            match t.render(&token.claims) {
                Ok(p) => prefixes.push(p),
                Err(e @ RenderError::Missing(_)) => {
                    return Err((name, Denial::new(Reason::ClaimMissing, e.to_string())));
                }
                Err(e @ RenderError::Unsafe(_)) => {
                    return Err((name, Denial::new(Reason::ClaimInvalid, e.to_string())));
                }
            }
        }
        let mut scope = Scope {
            bucket: role.config.bucket.clone(),
            prefixes,
            actions: role.config.actions.iter().copied().collect(),
        };
        if let Some(policy) = &request.policy {
            let narrowed = scope
                .narrow(policy)
                .map_err(|e| (name.clone(), Denial::new(Reason::PolicyInvalid, e)))?;
            if let Err(why) = role.driver.can_enforce(&narrowed, &scope) {
                return Err((name, Denial::new(Reason::PolicyInvalid, why)));
            }
            scope = narrowed;
        }
        let c = &role.config;
        let default = c.default_duration_secs.unwrap_or(c.max_duration_secs);
        let mut duration = request.duration_secs.unwrap_or(default);
        if duration < c.min_duration_secs || duration > c.max_duration_secs {
            return Err((
                name,
                Denial::new(
                    Reason::DurationOutOfBounds,
                    format!(
                        "DurationSeconds {duration} is outside {}..={} for role {:?}",
                        c.min_duration_secs, c.max_duration_secs, c.name
                    ),
                ),
            ));
        }
        if c.bound_to_token {
            let left = (token.expires_at - unix_now()).max(0) as u64;
            if duration > left {
                if request.duration_secs.is_some() || left < c.min_duration_secs {
                    return Err((
                        name,
                        Denial::new(
                            Reason::DurationOutOfBounds,
                            format!(
                                "role {:?} may not outlive its token, which expires in {left} s",
                                c.name
                            ),
                        ),
                    ));
                }
                duration = left;
            }
        }
        Ok((role, scope, duration))
    }

    async fn issue(
        &self,
        mut record: AuditRecord,
        token: &VerifiedToken,
        role: &Role,
        scope: Scope,
        duration: u64,
    ) -> Result<Issued, Refused> {
        let request_id = record.request_id.clone().unwrap_or_default();
        let lease_id = random_hex(12);
        let issued_at = unix_now();
        let expires_at = issued_at + duration as i64;
        record.decision = Some("allow");
        record.reason = Some(Reason::Allow);
        record.lease_id = Some(lease_id.clone());
        record.expiration = Some(rfc3339(expires_at));
        // No record, no credential: the decision is on disk before anything is
        // minted, so an unwritable log leaves nothing behind upstream.
        if self.audit.append(&record).await.is_err() {
            self.counters.decision(Reason::AuditUnavailable);
            return Err(Refused {
                request_id,
                denial: Denial::new(
                    Reason::AuditUnavailable,
                    "the audit log cannot be written; no credentials are issued",
                ),
            });
        }
        let fail = |reason, message: String| Refused {
            request_id: request_id.clone(),
            denial: Denial::new(reason, message),
        };
        let lease = Lease {
            id: lease_id.clone(),
            issuer: token.issuer.clone(),
            subject: token.subject.clone(),
            role: role.config.name.clone(),
            driver: role.driver.kind().to_owned(),
            access_key_id: None,
            issued_at: issued_at * 1000,
            expires_at: expires_at * 1000,
            state: LeaseState::Pending,
            ended_at: None,
            end_reason: None,
        };
        if let Err(e) = self.index.insert_lease(&lease).await {
            self.counters.decision(Reason::Internal);
            self.lease_line(
                "lease.failed",
                &lease,
                None,
                Some(format!("lease store: {e}")),
            )
            .await;
            return Err(fail(Reason::Internal, format!("lease store: {e}")));
        }
        // A revocation that landed between the decision and the lease row would not
        // have seen this lease: look again now that the row exists (a revocation
        // recorded after this point finds the lease and ends it).
        let revoked = match (
            self.index
                .is_revoked(RevocationKind::Subject, &token.issuer, &token.subject)
                .await,
            self.index
                .is_revoked(RevocationKind::Role, "", &role.config.name)
                .await,
        ) {
            (Ok(false), Ok(false)) => None,
            (Ok(true), _) => Some(Reason::SubjectRevoked),
            (_, Ok(true)) => Some(Reason::RoleRevoked),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "lease store: revocation check");
                Some(Reason::Internal)
            }
        };
        if let Some(reason) = revoked {
            let _ = self
                .index
                .end_lease(&lease_id, LeaseState::Failed, reason.as_str(), now_ms())
                .await;
            self.lease_line("lease.failed", &lease, None, Some(reason.as_str().into()))
                .await;
            self.counters.decision(reason);
            return Err(fail(
                reason,
                "revoked while the credential was being issued".into(),
            ));
        }
        let started = Instant::now();
        let minted = role
            .driver
            .mint(&MintRequest {
                lease_id: &lease_id,
                subject: &token.subject,
                role: &role.config.name,
                scope: &scope,
                duration: Duration::from_secs(duration),
                expires_at,
            })
            .await;
        self.counters
            .mint_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let minted = match minted {
            Ok(m) => m,
            Err(e) => {
                self.counters.mint_failures.fetch_add(1, Ordering::Relaxed);
                self.counters.decision(Reason::UpstreamUnavailable);
                let _ = self
                    .index
                    .end_lease(&lease_id, LeaseState::Failed, "mint failed", now_ms())
                    .await;
                self.lease_line("lease.failed", &lease, None, Some(e.to_string()))
                    .await;
                tracing::warn!(lease = %lease_id, error = %e, "mint failed");
                return Err(fail(
                    Reason::UpstreamUnavailable,
                    format!("the storage upstream did not issue credentials: {e}"),
                ));
            }
        };
        let hmac = self.audit.key_hmac(&minted.access_key_id);
        let activated = self
            .index
            .activate_lease(&lease_id, &minted.access_key_id, minted.expires_at * 1000)
            .await;
        let undo = |why: String| {
            let (driver, lease_id, key) = (
                role.driver.clone(),
                lease_id.clone(),
                minted.access_key_id.clone(),
            );
            async move {
                if let Err(e) = driver.revoke(&lease_id, Some(&key)).await {
                    tracing::warn!(lease = %lease_id, error = %e, "could not take back a credential that was not handed out; it expires on its own");
                }
                why
            }
        };
        match activated {
            Ok(true) => {}
            Ok(false) => {
                let why = undo("the lease was revoked while it was being issued".into()).await;
                self.lease_line("lease.failed", &lease, None, Some(why.clone()))
                    .await;
                self.counters.decision(Reason::SubjectRevoked);
                return Err(fail(Reason::SubjectRevoked, why));
            }
            Err(e) => {
                let why = undo(format!("lease store: {e}")).await;
                let _ = self
                    .index
                    .end_lease(&lease_id, LeaseState::Failed, "lease store", now_ms())
                    .await;
                self.lease_line("lease.failed", &lease, None, Some(why.clone()))
                    .await;
                self.counters.decision(Reason::Internal);
                return Err(fail(Reason::Internal, why));
            }
        }
        let mut issued_line = record.clone();
        issued_line.event = "lease.issued";
        issued_line.access_key_hmac = Some(hmac);
        issued_line.expiration = Some(rfc3339(minted.expires_at));
        if self.audit.append(&issued_line).await.is_err() {
            let why =
                undo("the audit log cannot be written; no credentials are issued".into()).await;
            let _ = self
                .index
                .end_lease(
                    &lease_id,
                    LeaseState::Revoked,
                    "audit unavailable",
                    now_ms(),
                )
                .await;
            self.counters.decision(Reason::AuditUnavailable);
            return Err(fail(Reason::AuditUnavailable, why));
        }
        self.counters.decision(Reason::Allow);
        self.counters.issued.fetch_add(1, Ordering::Relaxed);
        let lifetime = (minted.expires_at - issued_at).max(0) as u64;
        let window = refresh_window(lifetime);
        let refresh_after = minted.expires_at - window as i64 - random_below(window / 5 + 1) as i64;
        Ok(Issued {
            request_id,
            lease_id: lease_id.clone(),
            role: role.config.name.clone(),
            driver: role.driver.kind().to_owned(),
            issuer: token.issuer.clone(),
            subject: token.subject.clone(),
            audience: token.audience.clone(),
            access_key_id: minted.access_key_id.clone(),
            secret_access_key: minted.secret_access_key.clone(),
            session_token: minted
                .session_token
                .clone()
                .unwrap_or_else(|| Secret::new(format!("artifactstore-lease-{lease_id}"))),
            issued_at,
            expires_at: minted.expires_at,
            refresh_after,
            scope,
        })
    }

    async fn lease_line(
        &self,
        event: &'static str,
        lease: &Lease,
        upstream: Option<&str>,
        detail: Option<String>,
    ) -> bool {
        let record = AuditRecord {
            event,
            issuer: Some(lease.issuer.clone()),
            subject: Some(short(&lease.subject)),
            role: Some(lease.role.clone()),
            driver: Some(lease.driver.clone()),
            lease_id: Some(lease.id.clone()),
            access_key_hmac: lease
                .access_key_id
                .as_deref()
                .map(|k| self.audit.key_hmac(k)),
            expiration: Some(rfc3339(lease.expires_at / 1000)),
            detail: match (upstream, detail) {
                (Some(u), Some(d)) => Some(format!("upstream: {u}; {d}")),
                (Some(u), None) => Some(format!("upstream: {u}")),
                (None, d) => d,
            },
            ..Default::default()
        };
        self.audit.append(&record).await.is_ok()
    }

    fn driver_of(&self, lease: &Lease) -> Option<Arc<dyn MintDriver>> {
        self.roles
            .iter()
            .find(|r| r.config.name == lease.role)
            .map(|r| r.driver.clone())
            .or_else(|| {
                self.drivers
                    .values()
                    .find(|d| d.kind() == lease.driver)
                    .cloned()
            })
    }

    /// Ends one live lease and takes its credential back upstream.
    async fn end(&self, lease: &Lease, state: LeaseState, reason: &str) -> RevokedLease {
        let mut out = RevokedLease {
            lease_id: lease.id.clone(),
            upstream: "error",
            error: None,
        };
        let Some(driver) = self.driver_of(lease) else {
            out.error = Some(format!("no driver {:?} is configured", lease.driver));
            return out;
        };
        match driver
            .revoke(&lease.id, lease.access_key_id.as_deref())
            .await
        {
            Ok(r) => out.upstream = r.as_str(),
            Err(e) => out.error = Some(e.to_string()),
        }
        // A lease whose upstream revocation failed stays live, so the reaper (or the
        // next revocation) tries again.
        if out.error.is_none() {
            match self
                .index
                .end_lease(&lease.id, state, reason, now_ms())
                .await
            {
                Ok(Some(_)) => {
                    let event = if state == LeaseState::Expired {
                        "lease.expired"
                    } else {
                        "lease.revoked"
                    };
                    self.lease_line(event, lease, Some(out.upstream), Some(reason.to_owned()))
                        .await;
                }
                Ok(None) => {}
                Err(e) => out.error = Some(format!("lease store: {e}")),
            }
        }
        out
    }

    /// Revokes a lease, or every lease of a subject or role and all future vending
    /// to it. Revocation never waits for the audit log: it only takes access away.
    pub async fn revoke(
        &self,
        target: &RevokeTarget,
        reason: &str,
    ) -> Result<RevokeOutcome, artifactstore_index::Error> {
        let (filter, standing) = match target {
            RevokeTarget::Lease { id } => {
                let lease = self.index.lease(id).await?;
                let leases = lease
                    .filter(|l| matches!(l.state, LeaseState::Pending | LeaseState::Active))
                    .into_iter()
                    .collect::<Vec<_>>();
                let mut out = Vec::new();
                for l in &leases {
                    out.push(self.end(l, LeaseState::Revoked, reason).await);
                }
                self.counters
                    .revoked
                    .fetch_add(out.len() as u64, Ordering::Relaxed);
                return Ok(RevokeOutcome {
                    leases: out,
                    standing: false,
                    audited: self.audit.healthy(),
                });
            }
            RevokeTarget::Subject { issuer, subject } => {
                self.index
                    .add_revocation(RevocationKind::Subject, issuer, subject, reason, now_ms())
                    .await?;
                (
                    LeaseFilter {
                        issuer: Some(issuer.clone()),
                        subject: Some(subject.clone()),
                        role: None,
                        live_only: true,
                    },
                    true,
                )
            }
            RevokeTarget::Role { role } => {
                self.index
                    .add_revocation(RevocationKind::Role, "", role, reason, now_ms())
                    .await?;
                (
                    LeaseFilter {
                        role: Some(role.clone()),
                        live_only: true,
                        ..Default::default()
                    },
                    true,
                )
            }
        };
        let audited = self
            .audit
            .append(&AuditRecord {
                event: "revocation.added",
                detail: Some(format!("{target:?}: {reason}")),
                ..Default::default()
            })
            .await
            .is_ok();
        let mut out = Vec::new();
        for lease in self.index.leases(&filter, 10_000).await? {
            out.push(self.end(&lease, LeaseState::Revoked, reason).await);
        }
        self.counters
            .revoked
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(RevokeOutcome {
            leases: out,
            standing,
            audited: audited && self.audit.healthy(),
        })
    }

    /// Lifts a standing revocation of a subject or role.
    pub async fn unrevoke(
        &self,
        target: &RevokeTarget,
    ) -> Result<bool, artifactstore_index::Error> {
        let removed = match target {
            RevokeTarget::Lease { .. } => false,
            RevokeTarget::Subject { issuer, subject } => {
                self.index
                    .remove_revocation(RevocationKind::Subject, issuer, subject)
                    .await?
            }
            RevokeTarget::Role { role } => {
                self.index
                    .remove_revocation(RevocationKind::Role, "", role)
                    .await?
            }
        };
        if removed {
            let _ = self
                .audit
                .append(&AuditRecord {
                    event: "revocation.removed",
                    detail: Some(format!("{target:?}")),
                    ..Default::default()
                })
                .await;
        }
        Ok(removed)
    }

    /// Ends leases past their expiry and deletes their keys upstream. Returns how
    /// many were ended.
    pub async fn reap_once(&self) -> Result<u64, artifactstore_index::Error> {
        let mut n = 0;
        for lease in self.index.leases_past_expiry(now_ms(), 500).await? {
            let r = self.end(&lease, LeaseState::Expired, "expired").await;
            if r.error.is_none() {
                n += 1;
            } else {
                tracing::warn!(lease = %lease.id, error = ?r.error, "could not end an expired lease upstream; will try again");
            }
        }
        self.counters.reaped.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

fn now_ms() -> i64 {
    artifactstore_index::now_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Revoked;

    #[test]
    fn the_refresh_window_is_the_smaller_of_five_minutes_and_a_third() {
        assert_eq!(refresh_window(3600), 300);
        assert_eq!(refresh_window(900), 300);
        assert_eq!(refresh_window(60), 20);
        assert_eq!(refresh_window(0), 0);
    }

    #[test]
    fn revoked_strings_are_documented_values() {
        for r in [Revoked::Deleted, Revoked::AlreadyGone, Revoked::Unsupported] {
            assert!(["deleted", "already_gone", "unsupported"].contains(&r.as_str()));
        }
    }
}
