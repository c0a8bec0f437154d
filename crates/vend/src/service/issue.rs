//! Issuing a credential: the mint saga after an allow decision.
//!
//! 1. the allow line is synced to the audit log — no record, no credential;
//! 2. the lease is recorded *pending*; from here on a [`PendingLease`] guard owns it;
//! 3. standing revocations are looked at again (one may have landed since the
//!    decision, before the row existed for it to find);
//! 4. the driver mints;
//! 5. the lease becomes *active* — unless a revocation ended it meanwhile;
//! 6. the `lease.issued` line is synced;
//! 7. the guard is committed and the credentials are answered.
//!
//! Any failure after step 2 abandons the guard, which deletes the freshly minted key
//! upstream, ends the lease as failed and writes `lease.failed`. A guard dropped
//! without either (the request future cancelled mid-saga: a client hanging up while
//! the driver mints) does the same in a task of its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use artifactstore_model::Timestamp;
use artifactstore_model::secret::Secret;
use artifactstore_oidc::VerifiedToken;

use crate::audit::AuditRecord;
use crate::driver::{MintDriver, MintRequest};
use crate::leases::{Lease, LeaseState, RevocationKind};
use crate::policy::Scope;
use crate::reason::{Denial, Reason};

use super::{Issued, Refused, Role, Service, random_hex};

/// A lease recorded pending and not yet handed out. It takes itself back — key
/// deleted upstream, row ended as failed — unless [`commit`](Self::commit)ted.
struct PendingLease {
    service: Arc<Service>,
    lease: Lease,
    driver: Arc<dyn MintDriver>,
    /// The upstream key, once minted.
    minted_key: Option<String>,
    /// False once committed or abandoned.
    open: bool,
}

/// Why an issue was abandoned: the lease row's short end reason, and the longer
/// story for the audit line.
struct Abandon {
    end_reason: &'static str,
    detail: String,
}

impl PendingLease {
    /// Records `lease` as pending. Only a recorded lease gets a guard: without a row
    /// there is nothing to take back, and nothing is minted.
    async fn record(
        service: &Arc<Service>,
        lease: Lease,
        driver: Arc<dyn MintDriver>,
    ) -> Result<Self, crate::leases::StoreError> {
        service.leases.insert_lease(&lease).await?;
        Ok(PendingLease {
            service: service.clone(),
            lease,
            driver,
            minted_key: None,
            open: true,
        })
    }

    fn minted(&mut self, access_key_id: &str) {
        self.minted_key = Some(access_key_id.to_owned());
    }

    /// The credential is handed out: nothing is taken back any more.
    fn commit(mut self) {
        self.open = false;
    }

    /// Takes everything back now, before the refusal is answered.
    async fn abandon(mut self, why: Abandon) {
        self.open = false;
        take_back(
            self.service.clone(),
            self.lease.clone(),
            self.driver.clone(),
            self.minted_key.take(),
            why,
        )
        .await;
    }
}

impl Drop for PendingLease {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let why = Abandon {
            end_reason: "cancelled",
            detail: "the request was cancelled while the credential was being issued".into(),
        };
        let work = take_back(
            self.service.clone(),
            self.lease.clone(),
            self.driver.clone(),
            self.minted_key.take(),
            why,
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(work);
            }
            // Only outside a runtime (never in the server): the row stays pending, and
            // the reaper ends it and deletes its key by lease id at expiry.
            Err(_) => {
                tracing::warn!(lease = %self.lease.id, "issue abandoned outside a runtime; the reaper will end the lease");
            }
        }
    }
}

/// The compensation of an abandoned issue.
async fn take_back(
    service: Arc<Service>,
    mut lease: Lease,
    driver: Arc<dyn MintDriver>,
    minted_key: Option<String>,
    why: Abandon,
) {
    let mut upstream = None;
    if let Some(key) = &minted_key {
        // The key goes first: a row ended while its key lives on would be out of reach
        // of every later revocation and of the reaper. If deleting fails the row stays
        // pending, so the reaper deletes the key (by lease id) at expiry.
        match driver.revoke(&lease.id, Some(key)).await {
            Ok(r) => upstream = Some(r.as_str()),
            Err(e) => {
                tracing::warn!(lease = %lease.id, error = %e, "could not delete a credential that was never handed out; the reaper will at expiry");
                lease.access_key_id = minted_key;
                let detail = format!("{}; deleting the key failed: {e}", why.detail);
                service
                    .lease_line("lease.failed", &lease, Some("error"), Some(detail))
                    .await;
                return;
            }
        }
    }
    let now = service.clock.now();
    if let Err(e) = service
        .leases
        .end_lease(&lease.id, LeaseState::Failed, why.end_reason, now)
        .await
    {
        // Still pending: the reaper ends it at expiry (its key, if any, is gone).
        tracing::warn!(lease = %lease.id, error = %e, "lease store: could not end an abandoned lease");
    }
    lease.access_key_id = minted_key;
    service
        .lease_line("lease.failed", &lease, upstream, Some(why.detail))
        .await;
}

/// Who a lease is for and how it came to be: a verified token's issuer, subject and
/// audience, or the break-glass path's fixed identity with its reason and ticket.
pub(super) struct LeaseTemplate {
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    pub break_glass: Option<BreakGlassNote>,
}

/// What a break-glass lease row records besides the usual.
pub(super) struct BreakGlassNote {
    pub reason: String,
    pub ticket: Option<String>,
}

impl LeaseTemplate {
    pub fn of(token: &VerifiedToken) -> Self {
        LeaseTemplate {
            issuer: token.issuer.clone(),
            subject: token.subject.clone(),
            audience: token.audience.clone(),
            break_glass: None,
        }
    }
}

impl Service {
    /// Whether a standing revocation now covers the holder's subject or the role.
    pub(super) async fn revoked_now(&self, holder: &LeaseTemplate, role: &str) -> Option<Reason> {
        match (
            self.leases
                .is_revoked(RevocationKind::Subject, &holder.issuer, &holder.subject)
                .await,
            self.leases.is_revoked(RevocationKind::Role, "", role).await,
        ) {
            (Ok(false), Ok(false)) => None,
            (Ok(true), _) => Some(Reason::SubjectRevoked),
            (_, Ok(true)) => Some(Reason::RoleRevoked),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "lease store: revocation check");
                Some(Reason::Internal)
            }
        }
    }

    pub(super) async fn issue(
        self: &Arc<Self>,
        mut record: AuditRecord,
        holder: &LeaseTemplate,
        role: &Role,
        scope: Scope,
        duration_secs: u64,
    ) -> Result<Issued, Refused> {
        let request_id = record.request_id.clone().unwrap_or_default();
        let refuse = |reason: Reason, message: String| {
            self.counters.decision(reason);
            Refused {
                request_id: request_id.clone(),
                denial: Denial::new(reason, message),
            }
        };
        let lease_id = random_hex(12);
        let issued_at = self.clock.now();
        // Whole seconds, as every wire format shows expiries; never later than asked.
        let expires_at = Timestamp::from_unix_secs(
            issued_at
                .unix_secs()
                .saturating_add(i64::try_from(duration_secs).unwrap_or(i64::MAX)),
        );
        record.decision = Some("allow");
        record.reason = Some(Reason::Allow);
        record.lease_id = Some(lease_id.clone());
        record.expiration = Some(expires_at.rfc3339());
        // No record, no credential: the decision is on disk before anything is
        // minted, so an unwritable log leaves nothing behind upstream.
        if self.audit.append(&record).await.is_err() {
            return Err(refuse(
                Reason::AuditUnavailable,
                "the audit log cannot be written; no credentials are issued".into(),
            ));
        }
        #[cfg(feature = "test-crash-points")]
        crate::crash_points::at(crate::crash_points::Point::AfterAllow);
        let lease = Lease {
            id: lease_id.clone(),
            issuer: holder.issuer.clone(),
            subject: holder.subject.clone(),
            role: role.config.name.clone(),
            driver: role.config.driver.clone(),
            access_key_id: None,
            issued_at,
            expires_at,
            state: LeaseState::Pending,
            ended_at: None,
            end_reason: None,
            break_glass: holder.break_glass.is_some(),
            break_glass_reason: holder.break_glass.as_ref().map(|b| b.reason.clone()),
            break_glass_ticket: holder.break_glass.as_ref().and_then(|b| b.ticket.clone()),
        };
        let mut pending = match PendingLease::record(self, lease.clone(), role.driver.clone()).await
        {
            Ok(p) => p,
            Err(e) => {
                self.lease_line(
                    "lease.failed",
                    &lease,
                    None,
                    Some(format!("lease store: {e}")),
                )
                .await;
                return Err(refuse(Reason::Internal, format!("lease store: {e}")));
            }
        };
        #[cfg(feature = "test-crash-points")]
        crate::crash_points::at(crate::crash_points::Point::AfterLeaseRow);
        // A revocation that landed between the decision and the lease row would not
        // have seen this lease: look again now that the row exists (a revocation
        // recorded after this point finds the lease and ends it).
        if let Some(reason) = self.revoked_now(holder, &role.config.name).await {
            pending
                .abandon(Abandon {
                    end_reason: reason.as_str(),
                    detail: "revoked before the credential was minted".into(),
                })
                .await;
            return Err(refuse(
                reason,
                "revoked while the credential was being issued".into(),
            ));
        }
        let started = Instant::now();
        let minted = role
            .driver
            .mint(&MintRequest {
                lease_id: &lease_id,
                subject: &holder.subject,
                role: &role.config.name,
                scope: &scope,
                duration: Duration::from_secs(duration_secs),
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
                // The upstream's endpoint and words go to the log only: they describe
                // the deployment, not the caller's request. The audit line says which
                // kind of failure it was, which holds nothing an upstream wrote.
                tracing::warn!(lease = %lease_id, request_id = %request_id, error = %e, "mint failed");
                let kind = match e {
                    crate::driver::DriverError::Unavailable(_) => "was unavailable",
                    crate::driver::DriverError::Refused(_) => "refused",
                };
                pending
                    .abandon(Abandon {
                        end_reason: "mint failed",
                        detail: format!(
                            "mint failed: the {} upstream {kind}; its answer is in the service log",
                            role.driver.kind()
                        ),
                    })
                    .await;
                return Err(refuse(
                    Reason::UpstreamUnavailable,
                    format!(
                        "the storage upstream did not issue credentials; the vend service's log has the details (request id {request_id})"
                    ),
                ));
            }
        };
        pending.minted(&minted.access_key_id);
        #[cfg(feature = "test-crash-points")]
        crate::crash_points::at(crate::crash_points::Point::AfterMint);
        match self
            .leases
            .activate_lease(&lease_id, &minted.access_key_id, minted.expires_at)
            .await
        {
            Ok(true) => {
                #[cfg(feature = "test-crash-points")]
                crate::crash_points::at(crate::crash_points::Point::AfterActivate);
            }
            Ok(false) => {
                // The mint outlasted the pending bound and reconciliation failed the
                // lease: the upstream was too slow, which is no revocation (a client
                // told `subject_revoked` would stop trying).
                let ended = self.leases.lease(&lease_id).await.ok().flatten();
                if ended.and_then(|l| l.end_reason).as_deref()
                    == Some(super::reconcile::PENDING_TIMED_OUT)
                {
                    let why = "the storage upstream took longer to mint than the pending \
                               bound ([reaper] pending_timeout_secs); nothing was handed out";
                    pending
                        .abandon(Abandon {
                            end_reason: "mint too slow",
                            detail: why.into(),
                        })
                        .await;
                    return Err(refuse(Reason::UpstreamUnavailable, why.into()));
                }
                // Ended by a revocation while the driver minted: a lease revocation,
                // or one of the subject or role.
                let reason = match self.revoked_now(holder, &role.config.name).await {
                    Some(Reason::RoleRevoked) => Reason::RoleRevoked,
                    _ => Reason::SubjectRevoked,
                };
                let why = "the lease was revoked while it was being issued";
                pending
                    .abandon(Abandon {
                        end_reason: "revoked while issuing",
                        detail: why.into(),
                    })
                    .await;
                return Err(refuse(reason, why.into()));
            }
            Err(e) => {
                let why = format!("lease store: {e}");
                pending
                    .abandon(Abandon {
                        end_reason: "lease store",
                        detail: why.clone(),
                    })
                    .await;
                return Err(refuse(Reason::Internal, why));
            }
        }
        let mut issued_line = record.clone();
        issued_line.event = "lease.issued";
        issued_line.access_key_hmac = Some(self.key_hmac.of(&minted.access_key_id));
        issued_line.expiration = Some(minted.expires_at.rfc3339());
        if self.audit.append(&issued_line).await.is_err() {
            let why = "the audit log cannot be written; no credentials are issued";
            pending
                .abandon(Abandon {
                    end_reason: "audit unavailable",
                    detail: why.into(),
                })
                .await;
            return Err(refuse(Reason::AuditUnavailable, why.into()));
        }
        pending.commit();
        self.counters.decision(Reason::Allow);
        self.counters.issued.fetch_add(1, Ordering::Relaxed);
        // The same window and jitter as the credential cache that will hold it.
        let renew_before = artifactstore_credentials::with_jitter(
            artifactstore_credentials::refresh_window(issued_at.until(minted.expires_at)),
        );
        Ok(Issued {
            request_id,
            lease_id: lease_id.clone(),
            role: role.config.name.clone(),
            driver: role.driver.kind().to_owned(),
            issuer: holder.issuer.clone(),
            subject: holder.subject.clone(),
            audience: holder.audience.clone(),
            access_key_id: minted.access_key_id.clone(),
            secret_access_key: minted.secret_access_key.clone(),
            session_token: minted
                .session_token
                .clone()
                .unwrap_or_else(|| Secret::new(format!("artifactstore-lease-{lease_id}"))),
            issued_at,
            expires_at: minted.expires_at,
            refresh_after: minted.expires_at.saturating_sub(renew_before),
            scope,
        })
    }
}
