//! Taking access away: one lease, or every lease of a subject or role plus a standing
//! revocation that refuses their future vending.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use artifactstore_model::Timestamp;
use serde::Serialize;

use crate::audit::AuditRecord;
use crate::driver::Revoked;
use crate::leases::{Lease, LeaseFilter, LeaseState, RevocationKind, StoreError};

use super::Service;

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
    /// `deleted`, `already_gone`, `denied` (the credential exists upstream but every
    /// request with it is refused), `unsupported` (the upstream cannot revoke; the
    /// credential works until `usable_until`) or `error`.
    pub upstream: &'static str,
    /// With `unsupported`: when the credential stops working by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_until: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a revocation or its lifting was refused.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("lease store: {0}")]
    Store(#[from] StoreError),
    /// Lifting a revocation is refused unless its audit line is written first.
    #[error("the audit log cannot be written: {0}")]
    AuditUnavailable(String),
    /// The role or issuer is not configured: such a revocation would block nothing.
    #[error("{0}; send \"force\": true to record it anyway")]
    UnknownTarget(String),
}

/// Live leases ended per round of a subject or role revocation.
pub(crate) const REVOKE_PAGE: u32 = 500;

#[derive(Debug, Serialize)]
pub struct RevokeOutcome {
    /// Live leases ended (upstream credential deleted, or the driver cannot revoke).
    pub ended: usize,
    /// Live leases whose upstream revocation failed; they stay live and are retried by
    /// the reaper or the next revocation.
    pub failed: usize,
    pub leases: Vec<RevokedLease>,
    /// Whether future vending to the subject or role is now refused.
    pub standing: bool,
    pub audited: bool,
}

impl Service {
    /// Ends one live lease and takes its credential back upstream.
    pub(super) async fn end(&self, lease: &Lease, state: LeaseState, reason: &str) -> RevokedLease {
        let mut out = RevokedLease {
            lease_id: lease.id.clone(),
            upstream: "error",
            usable_until: None,
            error: None,
        };
        let Some(driver) = self.driver_of(lease) else {
            out.upstream = "driver_gone";
            out.error = Some(format!(
                "the driver {:?} that minted this lease is no longer configured",
                lease.driver
            ));
            return out;
        };
        let key = lease.access_key_id.as_deref();
        // A lease at its expiry needs no more than cleaning up; one ended early has a
        // credential that would still work (an STS session can be denied, not deleted).
        let revoked = if state == LeaseState::Expired {
            driver.revoke(&lease.id, key).await
        } else {
            driver
                .revoke_unexpired(&lease.id, key, lease.expires_at)
                .await
        };
        match revoked {
            Ok(r) => {
                out.upstream = r.as_str();
                if r == Revoked::Unsupported && lease.expires_at > self.clock.now() {
                    out.usable_until = Some(lease.expires_at);
                }
            }
            Err(e) => out.error = Some(e.to_string()),
        }
        // A lease whose upstream revocation failed stays live, so the reaper (or the
        // next revocation) tries again.
        if out.error.is_none() {
            match self
                .leases
                .end_lease(&lease.id, state, reason, self.clock.now())
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
    /// to it. Revocation never waits for the audit log: it only takes access away. A
    /// subject of an unknown issuer or an unknown role is refused unless `force`.
    pub async fn revoke(
        &self,
        target: &RevokeTarget,
        reason: &str,
        force: bool,
    ) -> Result<RevokeOutcome, RevokeError> {
        self.revoke_as(target, reason, force, None).await
    }

    /// [`revoke`](Self::revoke) by `actor` (an admin caller), named on its
    /// `revocation.added` line.
    pub async fn revoke_as(
        &self,
        target: &RevokeTarget,
        reason: &str,
        force: bool,
        actor: Option<&str>,
    ) -> Result<RevokeOutcome, RevokeError> {
        if !force {
            self.check_known(target)?;
        }
        let (filter, standing) = match target {
            RevokeTarget::Lease { id } => {
                let lease = self.leases.lease(id).await?;
                let leases = lease
                    .filter(|l| l.state.is_live())
                    .into_iter()
                    .collect::<Vec<_>>();
                let mut out = Vec::new();
                for l in &leases {
                    out.push(self.end(l, LeaseState::Revoked, reason).await);
                }
                let failed = out.iter().filter(|l| l.error.is_some()).count();
                self.counters
                    .revoked
                    .fetch_add((out.len() - failed) as u64, Ordering::Relaxed);
                return Ok(RevokeOutcome {
                    ended: out.len() - failed,
                    failed,
                    leases: out,
                    standing: false,
                    audited: self.audit.healthy(),
                });
            }
            RevokeTarget::Subject { issuer, subject } => {
                self.leases
                    .add_revocation(
                        RevocationKind::Subject,
                        issuer,
                        subject,
                        reason,
                        self.clock.now(),
                    )
                    .await?;
                (
                    LeaseFilter {
                        issuer: Some(issuer.clone()),
                        subject: Some(subject.clone()),
                        live_only: true,
                        ..Default::default()
                    },
                    true,
                )
            }
            RevokeTarget::Role { role } => {
                self.leases
                    .add_revocation(RevocationKind::Role, "", role, reason, self.clock.now())
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
                actor: actor.map(str::to_owned),
                ..Default::default()
            })
            .await
            .is_ok();
        // Page by page until no live lease is left that has not been tried: a lease
        // whose upstream revocation failed stays live and is not tried twice here.
        let mut out = Vec::new();
        let mut tried = HashSet::new();
        loop {
            let limit = REVOKE_PAGE.saturating_add(u32::try_from(tried.len()).unwrap_or(u32::MAX));
            let page: Vec<Lease> = self
                .leases
                .leases(&filter, limit)
                .await?
                .into_iter()
                .filter(|l| !tried.contains(&l.id))
                .collect();
            if page.is_empty() {
                break;
            }
            for lease in page {
                tried.insert(lease.id.clone());
                out.push(self.end(&lease, LeaseState::Revoked, reason).await);
            }
        }
        let failed = out.iter().filter(|l| l.error.is_some()).count();
        self.counters
            .revoked
            .fetch_add((out.len() - failed) as u64, Ordering::Relaxed);
        Ok(RevokeOutcome {
            ended: out.len() - failed,
            failed,
            leases: out,
            standing,
            audited: audited && self.audit.healthy(),
        })
    }

    /// Lifts a standing revocation of a subject or role. Giving access back is
    /// audited first: without its audit line, the revocation stays.
    pub async fn unrevoke(&self, target: &RevokeTarget) -> Result<bool, RevokeError> {
        self.unrevoke_as(target, None).await
    }

    /// [`unrevoke`](Self::unrevoke) by `actor`, named on its `revocation.removed` line.
    pub async fn unrevoke_as(
        &self,
        target: &RevokeTarget,
        actor: Option<&str>,
    ) -> Result<bool, RevokeError> {
        let (kind, issuer, value) = match target {
            RevokeTarget::Lease { .. } => return Ok(false),
            RevokeTarget::Subject { issuer, subject } => {
                (RevocationKind::Subject, issuer.as_str(), subject.as_str())
            }
            RevokeTarget::Role { role } => (RevocationKind::Role, "", role.as_str()),
        };
        if !self.leases.is_revoked(kind, issuer, value).await? {
            return Ok(false);
        }
        self.audit
            .append(&AuditRecord {
                event: "revocation.removed",
                detail: Some(format!("{target:?}")),
                actor: actor.map(str::to_owned),
                ..Default::default()
            })
            .await
            .map_err(|e| RevokeError::AuditUnavailable(e.to_string()))?;
        Ok(self.leases.remove_revocation(kind, issuer, value).await?)
    }

    /// A revocation must name something that could be vended: a configured role, or
    /// a subject of a configured issuer.
    fn check_known(&self, target: &RevokeTarget) -> Result<(), RevokeError> {
        match target {
            RevokeTarget::Lease { .. } => Ok(()),
            RevokeTarget::Role { role } if !self.roles.iter().any(|r| &r.config.name == role) => {
                Err(RevokeError::UnknownTarget(format!(
                    "no role {role:?} is configured"
                )))
            }
            RevokeTarget::Subject { issuer, .. }
                if !self.verifier.issuers.iter().any(|i| &i.issuer == issuer) =>
            {
                Err(RevokeError::UnknownTarget(format!(
                    "no issuer {issuer:?} is configured"
                )))
            }
            _ => Ok(()),
        }
    }
}
