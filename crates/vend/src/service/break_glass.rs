//! Break-glass: a lease on a listed role for whoever holds the break-glass credential,
//! without an OIDC token — for when the issuer, its keys or the role rules are what is
//! broken. Off unless `[break_glass]` is configured.
//!
//! Every attempt is audited `critical`: `break_glass.refused` or `break_glass.allowed`
//! (then the usual `lease.issued`, also `critical`). Every attempt first takes a token
//! from a bucket of its client address and from a global one, before the body is
//! looked at and long before the costly argon2id check, so guessing is slow; attempts
//! beyond a bucket are answered 429 and audited through the refusal windows (one
//! `critical` line when a window opens, then one summary), so that a flood cannot
//! grow the audit log without bound. At most [`CONCURRENT_CHECKS`] hash checks run at
//! once, on blocking threads.
//!
//! A break-glass lease is minted through the same saga as any other (see
//! [`issue`](super::issue)); its row says `break_glass`, with the reason and ticket,
//! and its issuer and subject are both [`IDENTITY`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use artifactstore_model::secret::Secret;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::audit::AuditRecord;
use crate::config::break_glass::BreakGlassConfig;
use crate::policy::Scope;
use crate::reason::{Denial, Reason};

use super::issue::{BreakGlassNote, LeaseTemplate};
use super::limits::{Buckets, client_key};
use super::{Issued, Service, client_name, random_hex, short};

pub mod credential;
mod webhook;

pub use credential::{CredentialHash, HashError};

/// The issuer and subject of every break-glass lease and audit line: a standing
/// subject revocation of `break-glass`/`break-glass` (with `force`) turns the path off
/// without a restart.
pub const IDENTITY: &str = "break-glass";
/// The longest reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 1024;
/// The longest ticket accepted, in characters.
pub const MAX_TICKET_CHARS: usize = 256;
/// Hash checks at once: each takes about 19 MiB and tens of milliseconds of a core.
pub const CONCURRENT_CHECKS: usize = 2;

/// Counts for `/metrics`.
#[derive(Default)]
pub struct BreakGlassCounters {
    pub allowed: AtomicU64,
    pub refused: AtomicU64,
    pub webhook_failures: AtomicU64,
}

/// The configured break-glass path.
pub struct BreakGlass {
    hash: CredentialHash,
    roles: Vec<String>,
    max_duration_secs: u64,
    clients: Buckets<IpAddr>,
    global: Buckets<()>,
    checks: Arc<Semaphore>,
    webhook: Option<webhook::Webhook>,
    pub counters: Arc<BreakGlassCounters>,
    /// Hash checks running now, the most seen at once, and all so far (tests of the
    /// bound and of the rate limit coming first).
    #[cfg(test)]
    pub(crate) checks_seen: Arc<[std::sync::atomic::AtomicUsize; 3]>,
}

impl BreakGlass {
    /// `hash` is the resolved `credential_hash_ref`, already checked; `webhook_url` the
    /// resolved `webhook_url_ref`, if the section has one.
    pub fn new(
        config: &BreakGlassConfig,
        hash: CredentialHash,
        webhook_url: Option<&Secret>,
    ) -> Result<Self, String> {
        let webhook = match (webhook_url, &config.webhook_url) {
            (Some(url), _) => Some(webhook::Webhook::new(url.expose(), "webhook_url_ref")?),
            (None, Some(url)) => Some(webhook::Webhook::new(url, "webhook_url")?),
            (None, None) => None,
        };
        Ok(BreakGlass {
            hash,
            roles: config.roles.clone(),
            max_duration_secs: config.max_duration_secs,
            clients: Buckets::new(
                config.attempts_per_minute / 60.0,
                config.attempts_burst,
                10_000,
            ),
            global: Buckets::new(
                config.global_attempts_per_minute / 60.0,
                config.global_attempts_burst,
                1,
            ),
            checks: Arc::new(Semaphore::new(CONCURRENT_CHECKS)),
            webhook,
            counters: Arc::default(),
            #[cfg(test)]
            checks_seen: Arc::default(),
        })
    }
}

/// A break-glass request as it came in.
#[derive(Debug, Default)]
pub struct BreakGlassRequest {
    /// `Authorization: Bearer <credential>`.
    pub credential: Option<Secret>,
    pub role: Option<String>,
    pub reason: Option<String>,
    pub ticket: Option<String>,
    pub duration_secs: Option<u64>,
    pub client: Option<SocketAddr>,
    /// Why the body could not be read, if it could not: refused after the rate limit,
    /// so that malformed bodies are limited like any other attempt.
    pub malformed: Option<String>,
}

/// A refused break-glass attempt, as answered: status, code, message.
#[derive(Debug)]
pub struct BreakGlassRefused {
    pub request_id: String,
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl BreakGlassRefused {
    fn from_denial(request_id: String, status: u16, code: &'static str, d: Denial) -> Self {
        BreakGlassRefused {
            request_id,
            status,
            code,
            message: d.message,
            retry_after_secs: d.retry_after_secs,
        }
    }
}

/// The window key of break-glass refusals: apart from the same client's other
/// refusals, and marked so that their summary lines are `critical` too.
fn window_subject() -> Option<(String, String)> {
    Some((IDENTITY.to_owned(), IDENTITY.to_owned()))
}

/// Whether a refusal window is break-glass's (its summary line is `critical`).
pub fn is_break_glass_window(subject: &Option<(String, String)>) -> bool {
    subject
        .as_ref()
        .is_some_and(|(i, s)| i == IDENTITY && s == IDENTITY)
}

impl Service {
    /// One break-glass attempt. See the module documentation for the order of checks.
    pub async fn break_glass(
        self: &Arc<Self>,
        request: BreakGlassRequest,
    ) -> Result<Issued, BreakGlassRefused> {
        let request_id = random_hex(8);
        let mut record = AuditRecord {
            event: "break_glass.refused",
            request_id: Some(request_id.clone()),
            issuer: Some(IDENTITY.to_owned()),
            subject: Some(IDENTITY.to_owned()),
            role: request.role.as_deref().map(short),
            client: Some(client_name(request.client)),
            format: Some("break_glass"),
            severity: Some("critical"),
            detail: None,
            ..Default::default()
        };
        let Some(bg) = &self.break_glass else {
            let denial = Denial::new(
                Reason::RequestInvalid,
                "break-glass is off: there is no [break_glass] section",
            );
            let refused = self
                .refuse_coalesced(record, window_subject(), denial)
                .await;
            return Err(BreakGlassRefused::from_denial(
                refused.request_id,
                404,
                "break_glass_disabled",
                refused.denial,
            ));
        };
        let now = self.clock.now();
        let limited = match request.client {
            Some(peer) => bg.clients.take(&client_key(peer.ip()), now),
            None => Ok(()),
        }
        .and_then(|()| bg.global.take(&(), now));
        if let Err(limited) = limited {
            bg.counters.refused.fetch_add(1, Ordering::Relaxed);
            let denial = limited.denial("break-glass attempts", "break_glass.attempts_*");
            let refused = self
                .refuse_coalesced(record, window_subject(), denial)
                .await;
            return Err(BreakGlassRefused::from_denial(
                refused.request_id,
                429,
                Reason::RateLimited.as_str(),
                refused.denial,
            ));
        }
        // From here every refusal is one full `critical` line: the buckets bound them.
        let refuse = |record: AuditRecord, status: u16, code: &'static str, denial: Denial| {
            let service = self.clone();
            let counters = bg.counters.clone();
            async move {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                // The line says why it was refused and, once read, the reason and ticket.
                let mut record = record;
                let note = record.detail.take();
                let refused = service.refuse_noted(record, denial, note.as_deref()).await;
                BreakGlassRefused::from_denial(refused.request_id, status, code, refused.denial)
            }
        };
        let (reason, ticket) = match checked_body(&request) {
            Ok(ok) => ok,
            Err(message) => {
                let denial = Denial::new(Reason::RequestInvalid, message);
                return Err(refuse(record, 400, Reason::RequestInvalid.as_str(), denial).await);
            }
        };
        record.detail = Some(note(&reason, ticket.as_deref()));
        let credential = request.credential.as_ref();
        let verified = match credential {
            Some(c) => self.check_credential(bg, c).await,
            None => false,
        };
        if !verified {
            let message = if credential.is_some() {
                "the break-glass credential is wrong"
            } else {
                "Authorization: Bearer <break-glass credential> is missing"
            };
            if let Some(hook) = &bg.webhook {
                hook.notify(
                    json!({
                        "event": "break_glass.refused",
                        "request_id": request_id,
                        "role": record.role,
                        "reason": reason,
                        "ticket": ticket,
                        "client": record.client,
                        "why": message,
                    }),
                    bg.counters.clone(),
                );
            }
            let denial = Denial::new(Reason::TokenInvalid, message);
            return Err(refuse(record, 401, "break_glass_credential_invalid", denial).await);
        }
        let role_name = request.role.clone().unwrap_or_default();
        let Some(role) = bg
            .roles
            .contains(&role_name)
            .then(|| self.roles.iter().find(|r| r.config.name == role_name))
            .flatten()
        else {
            let denial = Denial::new(
                Reason::RoleNotPermitted,
                format!(
                    "role {:?} is not one of break_glass.roles",
                    short(&role_name)
                ),
            );
            return Err(refuse(record, 403, Reason::RoleNotPermitted.as_str(), denial).await);
        };
        record.driver = Some(role.driver.kind().to_owned());
        // Longer requests are cut to the maximum (an emergency should not fail on a
        // number); shorter than the role allows is refused, as for any lease.
        let duration = request
            .duration_secs
            .unwrap_or(bg.max_duration_secs)
            .min(bg.max_duration_secs);
        if duration < role.config.min_duration_secs {
            let denial = Denial::new(
                Reason::DurationOutOfBounds,
                format!(
                    "duration_secs {duration} is below role {:?}'s min_duration_secs ({})",
                    role.config.name, role.config.min_duration_secs
                ),
            );
            return Err(refuse(record, 400, Reason::DurationOutOfBounds.as_str(), denial).await);
        }
        let mut prefixes = Vec::new();
        for t in &role.templates {
            // The configuration refuses templated prefixes on break-glass roles: there
            // are no claims to fill them.
            match t.render(&Default::default()) {
                Ok(p) => prefixes.push(p),
                Err(e) => {
                    let denial = Denial::new(Reason::ClaimMissing, e.to_string());
                    return Err(refuse(record, 500, "internal_error", denial).await);
                }
            }
        }
        let scope = Scope {
            bucket: role.config.bucket.clone(),
            prefixes,
            actions: role.config.actions.iter().copied().collect(),
        };
        let template = LeaseTemplate {
            issuer: IDENTITY.to_owned(),
            subject: IDENTITY.to_owned(),
            audience: String::new(),
            break_glass: Some(BreakGlassNote {
                reason: reason.clone(),
                ticket: ticket.clone(),
            }),
        };
        // A standing revocation of the break-glass identity or of the role refuses
        // here, with a deny line; the saga looks again once the lease row exists.
        if let Some(revoked) = self.revoked_now(&template, &role.config.name).await {
            let (status, message) = match revoked {
                Reason::SubjectRevoked => (403, "break-glass has been revoked"),
                Reason::RoleRevoked => (403, "this role has been revoked"),
                _ => (500, "lease store: the revocation check failed"),
            };
            let denial = Denial::new(revoked, message);
            return Err(refuse(record, status, revoked.as_str(), denial).await);
        }
        record.event = "break_glass.allowed";
        let client = record.client.clone();
        match self.issue(record, &template, role, scope, duration).await {
            Ok(issued) => {
                bg.counters.allowed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(lease = %issued.lease_id, role = %issued.role, "break-glass lease issued");
                if let Some(hook) = &bg.webhook {
                    hook.notify(
                        json!({
                            "event": "break_glass.allowed",
                            "request_id": issued.request_id,
                            "lease_id": issued.lease_id,
                            "role": issued.role,
                            "reason": reason,
                            "ticket": ticket,
                            "expires_at": issued.expires_at,
                            "client": client,
                        }),
                        bg.counters.clone(),
                    );
                }
                Ok(issued)
            }
            Err(refused) => {
                bg.counters.refused.fetch_add(1, Ordering::Relaxed);
                let status = refused.denial.reason.status();
                let code = refused.denial.reason.as_str();
                Err(BreakGlassRefused::from_denial(
                    refused.request_id,
                    status,
                    code,
                    refused.denial,
                ))
            }
        }
    }

    /// The argon2id check, on a blocking thread, at most [`CONCURRENT_CHECKS`] at once.
    async fn check_credential(&self, bg: &BreakGlass, credential: &Secret) -> bool {
        // The permit goes into the blocking task: a client that hangs up drops this
        // future, not the check, which holds its place until it is done.
        let Ok(permit) = bg.checks.clone().acquire_owned().await else {
            return false;
        };
        let hash = bg.hash.clone();
        let credential = credential.clone();
        #[cfg(test)]
        let seen = bg.checks_seen.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            #[cfg(test)]
            {
                let now = seen[0].fetch_add(1, Ordering::SeqCst) + 1;
                seen[1].fetch_max(now, Ordering::SeqCst);
                seen[2].fetch_add(1, Ordering::SeqCst);
            }
            let ok = hash.verify(&credential);
            #[cfg(test)]
            seen[0].fetch_sub(1, Ordering::SeqCst);
            ok
        })
        .await
        .unwrap_or(false)
    }
}

/// The reason (trimmed, non-empty, bounded) and ticket (bounded) of a request.
fn checked_body(request: &BreakGlassRequest) -> Result<(String, Option<String>), String> {
    if let Some(why) = &request.malformed {
        return Err(why.clone());
    }
    let reason = request.reason.as_deref().map(str::trim).unwrap_or("");
    if reason.is_empty() {
        return Err("a reason is required: say why break-glass is needed".into());
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        ));
    }
    let ticket = request
        .ticket
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if ticket.is_some_and(|t| t.chars().count() > MAX_TICKET_CHARS) {
        return Err(format!(
            "ticket is longer than {MAX_TICKET_CHARS} characters"
        ));
    }
    // Both end up in audit lines, webhook payloads and the lease row.
    if reason.contains(|c: char| c.is_control() && c != '\n' && c != '\t')
        || ticket.is_some_and(|t| t.contains(char::is_control))
    {
        return Err(
            "reason and ticket may not hold control characters (the reason may hold newlines and tabs)"
                .into(),
        );
    }
    Ok((reason.to_owned(), ticket.map(str::to_owned)))
}

/// The audit line's detail of a break-glass attempt (after the refusal's message on a
/// refused one). The ticket (at most [`MAX_TICKET_CHARS`]) comes first: a long reason
/// is what the line's bound on its detail cuts.
fn note(reason: &str, ticket: Option<&str>) -> String {
    match ticket {
        Some(t) => format!("break-glass ticket: {t}; reason: {reason}"),
        None => format!("break-glass reason: {reason}"),
    }
}
