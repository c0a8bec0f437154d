//! The one decision path behind every wire format: token → revocations → role →
//! scope → duration → audit → lease → mint → audit → answer.
//!
//! One job per file: [`decide`] (everything after the token, before anything is
//! written), [`issue`] (the mint saga and its compensation), [`revoke`] (ending
//! leases and standing revocations), [`reaper`] (ending expired leases),
//! [`reconcile`] (what a killed process left behind).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use artifactstore_model::secret::Secret;
use artifactstore_model::{Clock, Timestamp};
use artifactstore_oidc::TokenVerifier;
use artifactstore_oidc::claims::PrefixTemplate;

use crate::audit::{AuditLog, AuditRecord};
use crate::config::RoleConfig;
use crate::driver::MintDriver;
use crate::leases::{Lease, LeaseStore};
use crate::policy::Scope;
use crate::reason::{Denial, Reason};

pub mod admin;
pub mod break_glass;
mod decide;
mod issue;
pub mod limits;
mod reaper;
pub mod reconcile;
pub mod refusals;
mod revoke;
#[cfg(test)]
mod tests;

pub use revoke::{RevokeError, RevokeOutcome, RevokeTarget, RevokedLease};

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
    /// The peer the request came from (its address is rate-limited and audited).
    pub client: Option<SocketAddr>,
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
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// When a client should fetch new credentials: before expiry by a window (the
    /// smaller of 5 min and a third of the lifetime), less up to a fifth of it at
    /// random so that many clients do not come back at once.
    pub refresh_after: Timestamp,
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
    /// Crash reconciliation: stuck pending leases failed, orphan keys deleted, and
    /// (a gauge) the unknown keys the last round kept.
    pub reconciled_pending: AtomicU64,
    pub reconciled_orphans: AtomicU64,
    pub unknown_keys: AtomicU64,
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
    /// The lease store (vend's own database; the field keeps its old name for the
    /// modules that read it).
    pub leases: LeaseStore,
    pub audit: AuditLog,
    /// How access key ids appear in the audit log.
    pub key_hmac: crate::audit::KeyHasher,
    pub counters: Counters,
    pub admin_token: Option<Secret>,
    /// `[admin] rules`: verified tokens matching one of them may call the admin
    /// routes (see [`admin`]).
    pub admin_rules: Vec<BTreeMap<String, artifactstore_oidc::claims::Matcher>>,
    pub lease_limits: crate::config::LeaseLimits,
    /// Token buckets per client address and per subject (`[rate_limits]`).
    pub limiter: limits::Limiter,
    /// Open audit windows of refusals (see [`refusals`]).
    pub refusals: refusals::Coalescer,
    /// `[break_glass]`, when configured (see [`break_glass`]).
    pub break_glass: Option<break_glass::BreakGlass>,
    /// `allowed_hosts` and `cors_allowed_origins` as configured; the HTTP layer
    /// resolves them against the address it listens on.
    pub edge: EdgeConfig,
    /// Lease times, the reaper's "now" and token expiry checks (through the verifier,
    /// which shares it).
    pub clock: Arc<dyn Clock>,
}

/// Which `Host` and `Origin` values the HTTP layer serves, and how long a request
/// body may take to arrive, as configured.
#[derive(Clone, Debug, Default)]
pub struct EdgeConfig {
    pub allowed_hosts: Option<Vec<String>>,
    pub cors_allowed_origins: Vec<String>,
    /// A body (at most a few KiB here) must be whole this long after the request
    /// reached the router; `None`: no deadline (in-process tests).
    pub body_deadline: Option<std::time::Duration>,
}

/// The client of an audit line and a refusal window: the address as limited.
fn client_name(peer: Option<SocketAddr>) -> String {
    match peer.map(|p| limits::client_key(p.ip())) {
        Some(std::net::IpAddr::V6(net)) => format!("{net}/64"),
        Some(v4) => v4.to_string(),
        None => "unknown".to_owned(),
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).expect("system randomness");
    hex::encode(buf)
}

/// Claims in audit lines and error messages are cut to this length.
fn short(s: &str) -> String {
    s.chars().take(256).collect()
}

impl Service {
    fn deny(&self, record: &mut AuditRecord, denial: &Denial) {
        record.decision = Some("deny");
        record.reason = Some(denial.reason);
        record.detail = Some(denial.message.clone());
    }

    /// Writes a deny line and builds the refusal. A deny is a deny even when the
    /// audit log is down; the failure is logged and counted.
    async fn refuse(&self, record: AuditRecord, denial: Denial) -> Refused {
        self.refuse_noted(record, denial, None).await
    }

    /// [`refuse`](Self::refuse), the line's detail being the refusal's message and then
    /// `note` (break-glass keeps the reason and ticket of a refused attempt).
    async fn refuse_noted(
        &self,
        mut record: AuditRecord,
        denial: Denial,
        note: Option<&str>,
    ) -> Refused {
        self.deny(&mut record, &denial);
        if let Some(note) = note {
            record.detail = Some(format!("{}; {note}", denial.message));
        }
        self.counters.decision(denial.reason);
        let _ = self.audit.append(&record).await;
        Refused {
            request_id: record.request_id.unwrap_or_default(),
            denial,
        }
    }

    /// Audits a refusal of a flood's kind through the coalescing windows (see
    /// [`refusals`]) and builds it. `subject` is the verified (issuer, subject) of a
    /// subject's rate limit. As with [`refuse`](Self::refuse), a deny is a deny even
    /// when the audit log is down.
    async fn refuse_coalesced(
        &self,
        record: AuditRecord,
        subject: Option<(String, String)>,
        denial: Denial,
    ) -> Refused {
        self.counters.decision(denial.reason);
        let request_id = self.coalesce(record, subject, &denial, None).await;
        Refused { request_id, denial }
    }

    /// Counts a refusal in its client's (and subject's) window; the refusal that opens
    /// a window is written as `record`, denied with `denial` (its detail replaced by
    /// `detail` when given), after the summary of the window it closes. Returns the
    /// request id the answer carries.
    pub(super) async fn coalesce(
        &self,
        mut record: AuditRecord,
        subject: Option<(String, String)>,
        denial: &Denial,
        detail: Option<String>,
    ) -> String {
        let key = refusals::WindowKey {
            client: record.client.clone().unwrap_or_else(|| client_name(None)),
            subject,
        };
        match self
            .refusals
            .note(key, denial.reason.as_str(), self.clock.now(), || {
                random_hex(8)
            }) {
            refusals::Noted::Counted { request_id } => request_id,
            refusals::Noted::Opened {
                request_id,
                key,
                closed,
            } => {
                if let Some(summary) = closed {
                    self.write_summary(*summary).await;
                }
                record.request_id = Some(request_id.clone());
                record.client = Some(key.client);
                record.count = Some(1);
                self.deny(&mut record, denial);
                if detail.is_some() {
                    record.detail = detail;
                }
                let _ = self.audit.append(&record).await;
                request_id
            }
        }
    }

    /// A refusal before the request reached [`vend`](Self::vend): a client over its
    /// rate, a body too large or malformed. Audited through the coalescing windows.
    pub async fn refuse_early(
        &self,
        client: Option<SocketAddr>,
        format: Format,
        denial: Denial,
    ) -> Refused {
        let record = AuditRecord {
            event: "decision",
            client: Some(client_name(client)),
            format: Some(format.as_str()),
            ..Default::default()
        };
        self.refuse_coalesced(record, None, denial).await
    }

    /// Writes the summaries of the refusal windows that have passed.
    pub async fn close_refusal_windows(&self) {
        for summary in self.refusals.due(self.clock.now()) {
            self.write_summary(summary).await;
        }
    }

    /// Writes the summaries of every open refusal window (at shutdown), so that no
    /// counted refusal goes unrecorded.
    pub async fn close_all_refusal_windows(&self) {
        for summary in self.refusals.drain() {
            self.write_summary(summary).await;
        }
    }

    /// One window's summary line. Refusals are answered whether or not it is written
    /// (issuance alone is fail-closed), so a summary the audit log cannot take goes to
    /// the error log with its counts rather than nowhere.
    async fn write_summary(&self, summary: refusals::Summary) {
        let record = refusals::summary_record(&summary, self.refusals.window());
        if let Err(e) = self.audit.append(&record).await {
            tracing::error!(
                error = %e,
                client = record.client.as_deref().unwrap_or("unknown"),
                count = record.count.unwrap_or(0),
                "audit log unavailable: a refusal window's summary was not written"
            );
        }
    }

    /// Takes an `Arc` because an issue abandoned midway (a client hanging up while the
    /// driver mints) finishes its compensation in a task of its own.
    pub async fn vend(self: &Arc<Self>, request: VendRequest) -> Result<Issued, Refused> {
        let request_id = random_hex(8);
        let mut record = AuditRecord {
            event: "decision",
            request_id: Some(request_id.clone()),
            client: request.client.map(|c| c.to_string()),
            format: Some(request.format.as_str()),
            ..Default::default()
        };
        let token = match self.verifier.verify(request.token.expose()).await {
            Ok(t) => t,
            Err(refusal) => {
                let claimed = self.verifier.claimed_identity(request.token.expose());
                record.issuer = claimed.issuer;
                record.subject = claimed.subject;
                record.identity_verified = Some(false);
                record.client = Some(client_name(request.client));
                return Err(self
                    .refuse_coalesced(record, None, Denial::from(refusal))
                    .await);
            }
        };
        record.issuer = Some(token.issuer.clone());
        record.subject = Some(short(&token.subject));
        record.audience = Some(token.audience.clone());
        record.identity_verified = Some(true);
        let subject = (token.issuer.clone(), token.subject.clone());
        if let Err(limited) = self.limiter.subjects.take(&subject, self.clock.now()) {
            record.client = Some(client_name(request.client));
            let denial = limited.denial("this subject", "rate_limits.per_subject_per_sec");
            return Err(self.refuse_coalesced(record, Some(subject), denial).await);
        }
        match self.decide(&token, &request).await {
            Ok((role, scope, duration)) => {
                record.role = Some(role.config.name.clone());
                record.driver = Some(role.driver.kind().to_owned());
                self.issue(
                    record,
                    &issue::LeaseTemplate::of(&token),
                    role,
                    scope,
                    duration,
                )
                .await
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
            access_key_hmac: lease.access_key_id.as_deref().map(|k| self.key_hmac.of(k)),
            expiration: Some(lease.expires_at.rfc3339()),
            detail: match (upstream, detail) {
                (Some(u), Some(d)) => Some(format!("upstream: {u}; {d}")),
                (Some(u), None) => Some(format!("upstream: {u}")),
                (None, d) => d,
            },
            // Everything that happens to a break-glass lease is for an operator's eyes.
            severity: lease.break_glass.then_some("critical"),
            ..Default::default()
        };
        self.audit.append(&record).await.is_ok()
    }

    /// The driver that minted a lease: the one configured under the name the lease
    /// records. Leases of older versions recorded the driver's kind; for them the
    /// driver of that kind is used only when it is the only one, never a guess among
    /// several clusters.
    fn driver_of(&self, lease: &Lease) -> Option<Arc<dyn MintDriver>> {
        if let Some(d) = self.drivers.get(&lease.driver) {
            return Some(d.clone());
        }
        let mut of_kind = self.drivers.values().filter(|d| d.kind() == lease.driver);
        match (of_kind.next(), of_kind.next()) {
            (Some(d), None) => Some(d.clone()),
            _ => None,
        }
    }
}
