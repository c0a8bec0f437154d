//! Taking access away: one lease, or every lease of a subject or role plus a standing
//! revocation that refuses their future vending.

use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::audit::AuditRecord;
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
    /// Ends one live lease and takes its credential back upstream.
    pub(super) async fn end(&self, lease: &Lease, state: LeaseState, reason: &str) -> RevokedLease {
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
    /// to it. Revocation never waits for the audit log: it only takes access away.
    pub async fn revoke(
        &self,
        target: &RevokeTarget,
        reason: &str,
    ) -> Result<RevokeOutcome, StoreError> {
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
                        role: None,
                        live_only: true,
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
                ..Default::default()
            })
            .await
            .is_ok();
        let mut out = Vec::new();
        for lease in self.leases.leases(&filter, 10_000).await? {
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
    pub async fn unrevoke(&self, target: &RevokeTarget) -> Result<bool, StoreError> {
        let removed = match target {
            RevokeTarget::Lease { .. } => false,
            RevokeTarget::Subject { issuer, subject } => {
                self.leases
                    .remove_revocation(RevocationKind::Subject, issuer, subject)
                    .await?
            }
            RevokeTarget::Role { role } => {
                self.leases
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
}
