//! Crash reconciliation: after the service was killed between deciding and
//! answering, no upstream credential may be left without a live lease.
//!
//! The mint saga ([`super::issue`]) records the lease *pending* before the driver
//! mints and compensates on every error, but a killed process compensates nothing.
//! What a kill can leave behind, by where it struck:
//!
//! - after the allow line, before the lease row: nothing upstream (nothing was minted);
//! - after the lease row: a pending row and no key;
//! - after the driver minted: a pending row and a key it never recorded;
//! - after the row became active: an active lease whose credential nobody received.
//!   Its key has a live lease: it ends at expiry or by revocation like any other.
//!
//! Two passes, at start-up and at every reaper interval:
//!
//! 1. **Stuck pending leases.** A lease still pending `pending_timeout` after it was
//!    recorded belongs to an issue that never finished. It is ended as failed — only
//!    while still pending, so an issue that finishes at that very moment keeps its
//!    lease and the saga, finding the row no longer pending, takes its own key back —
//!    and then its credential is taken back as a revocation would (a Garage key deleted
//!    by the key id the listing shows, else by lease id; an STS session denied by its
//!    session name where the driver can). Ending the row first means a key whose
//!    deletion fails is left with an *ended* lease, which pass 2 deletes next time.
//! 2. **Orphan keys** (drivers that can list what they created: Garage's keys named
//!    `artifactstore-vend-<lease id>`). The key list is read first and the lease rows
//!    after it; since the saga writes the row before it mints, every key in the list
//!    already has its row by the time the row is looked up, whoever minted it. So:
//!    - the row is pending or active: the key is accounted for (a young pending row is
//!      an issue in flight; an old one was pass 1's);
//!    - the row has ended (failed, revoked, expired): the key should not exist, and is
//!      deleted — an ended lease never becomes live again;
//!    - there is no row: this database never recorded that lease. That is another vend
//!      deployment with a database of its own minting on the same upstream, or this
//!      database restored from a backup older than the key. The key is kept (and
//!      counted) unless `delete_unknown_keys` is on, and then deleted only once the
//!      upstream reports it older than `pending_timeout`.
//!
//! Every action is counted in `/metrics` and written as one `lease.reconciled` audit
//! line (the lease id and the key's HMAC, never a secret).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::audit::AuditRecord;
use crate::driver::{DriverError, MintDriver, MintedKey, Revoked};
use crate::leases::{Lease, StoreError};

use super::Service;

/// The end reason of a lease that reconciliation failed for staying pending past the
/// bound: an issue still running finds it and answers as an upstream too slow to mint.
pub(crate) const PENDING_TIMED_OUT: &str = "pending past the reconciliation bound";

/// The audit event of every reconciliation action.
pub const RECONCILED_EVENT: &str = "lease.reconciled";

/// How reconciliation decides (`[reaper]` in the configuration).
#[derive(Clone, Copy, Debug)]
pub struct ReconcileSettings {
    /// How long a lease may stay pending before its issue counts as dead.
    pub pending_timeout: Duration,
    /// Whether keys of lease ids this database never recorded are deleted.
    pub delete_unknown_keys: bool,
}

impl From<&crate::config::ReaperConfig> for ReconcileSettings {
    fn from(c: &crate::config::ReaperConfig) -> Self {
        ReconcileSettings {
            pending_timeout: Duration::from_secs(c.pending_timeout_secs),
            delete_unknown_keys: c.delete_unknown_keys,
        }
    }
}

/// What one reconciliation round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Stuck pending leases ended as failed.
    pub pending_failed: u64,
    /// Upstream keys deleted because no live lease accounts for them.
    pub orphan_keys_deleted: u64,
    /// Upstream keys named by vend whose lease this database never recorded, left
    /// alone (see the module documentation).
    pub unknown_keys_kept: u64,
}

/// One driver's listing: keys by lease id.
type Listing = BTreeMap<String, Vec<MintedKey>>;

impl Service {
    /// One reconciliation round (see the module documentation).
    pub async fn reconcile_once(
        &self,
        settings: &ReconcileSettings,
    ) -> Result<Reconciled, StoreError> {
        let mut done = Reconciled::default();
        // The key lists come first: pass 2 relies on every listed key's row already
        // existing when it is looked up.
        let mut listings: Vec<(Arc<dyn MintDriver>, Listing)> = Vec::new();
        for (name, driver) in &self.drivers {
            match driver.list_minted().await {
                Ok(Some(keys)) => {
                    let mut by_lease = Listing::new();
                    for key in keys {
                        by_lease.entry(key.lease_id.clone()).or_default().push(key);
                    }
                    listings.push((driver.clone(), by_lease));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(driver = %name, error = %e, "reconciliation: cannot list the keys this driver created; trying again next round");
                }
            }
        }
        let now = self.clock.now();
        let cutoff = now.saturating_sub(settings.pending_timeout);
        // Keys dealt with in pass 1 (several drivers may list one cluster).
        let mut handled = BTreeSet::new();

        for stuck in self.leases.pending_before(cutoff, 500).await? {
            let Some(lease) = self
                .leases
                .fail_pending(&stuck.id, PENDING_TIMED_OUT, now)
                .await?
            else {
                // Activated or ended meanwhile: not a dead issue.
                continue;
            };
            let listed: Vec<(Arc<dyn MintDriver>, MintedKey)> = listings
                .iter()
                .flat_map(|(d, l)| {
                    l.get(&lease.id)
                        .into_iter()
                        .flatten()
                        .map(|k| (d.clone(), k.clone()))
                })
                .collect();
            let mut key_ids: Vec<String> = listed
                .iter()
                .map(|(_, k)| k.access_key_id.clone())
                .collect();
            // `revoke_unexpired`: a dead issue's credential would work until its
            // expiry (an STS session, which no listing shows, is denied upstream by its
            // session name where the driver can).
            let upstream = if listed.is_empty() {
                match self.driver_of(&lease) {
                    Some(d) => {
                        d.revoke_unexpired(
                            &lease.id,
                            lease.access_key_id.as_deref(),
                            lease.expires_at,
                        )
                        .await
                    }
                    None => Err(DriverError::Refused(format!(
                        "no driver named {:?} is configured",
                        lease.driver
                    ))),
                }
            } else {
                let mut result = Ok(Revoked::AlreadyGone);
                for (driver, key) in &listed {
                    handled.insert(key.access_key_id.clone());
                    match driver
                        .revoke_unexpired(&lease.id, Some(&key.access_key_id), lease.expires_at)
                        .await
                    {
                        Ok(Revoked::Deleted) => {
                            if result.is_ok() {
                                result = Ok(Revoked::Deleted);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => result = Err(e),
                    }
                }
                result
            };
            if key_ids.is_empty() {
                key_ids.extend(lease.access_key_id.clone());
            }
            let waited = settings.pending_timeout.as_secs();
            let story = format!(
                "pending_failed: still pending {waited} s after it was recorded, so its issue never finished (the service stopped mid-issue, or the mint outlasted the bound); ended as failed"
            );
            let (upstream, detail) = match &upstream {
                Ok(r) => (r.as_str(), story),
                Err(e) => {
                    tracing::warn!(lease = %lease.id, error = %e, "reconciliation: could not take back the credential of a dead issue; on a driver that lists its keys the next round deletes it");
                    (
                        "error",
                        format!(
                            "{story}; taking its credential back failed (on a driver that lists its keys the next round deletes it)"
                        ),
                    )
                }
            };
            self.reconciled_line(
                &lease,
                key_ids.first().map(String::as_str),
                upstream,
                detail,
            )
            .await;
            done.pending_failed += 1;
        }

        for (driver, listing) in &listings {
            let ids: Vec<&str> = listing.keys().map(String::as_str).collect();
            let rows = self.leases.leases_by_id(&ids).await?;
            for (lease_id, keys) in listing {
                for key in keys {
                    if !handled.insert(key.access_key_id.clone()) {
                        continue;
                    }
                    match rows.get(lease_id).cloned() {
                        Some(lease) if lease.state.is_live() => {}
                        Some(lease) => {
                            let detail = format!(
                                "orphan_key_deleted: the key outlived its lease, which ended {}",
                                lease.state.as_str()
                            );
                            if self.delete_orphan(driver, key).await {
                                self.reconciled_line(
                                    &lease,
                                    Some(&key.access_key_id),
                                    "deleted",
                                    detail,
                                )
                                .await;
                                done.orphan_keys_deleted += 1;
                            }
                        }
                        None => {
                            let old_enough = key.created.is_some_and(|c| c <= cutoff);
                            if settings.delete_unknown_keys && old_enough {
                                if self.delete_orphan(driver, key).await {
                                    self.unknown_key_line(driver.kind(), key).await;
                                    done.orphan_keys_deleted += 1;
                                }
                            } else {
                                done.unknown_keys_kept += 1;
                            }
                        }
                    }
                }
            }
        }
        let c = &self.counters;
        c.reconciled_pending
            .fetch_add(done.pending_failed, Ordering::Relaxed);
        c.reconciled_orphans
            .fetch_add(done.orphan_keys_deleted, Ordering::Relaxed);
        c.unknown_keys
            .store(done.unknown_keys_kept, Ordering::Relaxed);
        if done.unknown_keys_kept > 0 {
            tracing::info!(
                keys = done.unknown_keys_kept,
                "reconciliation: upstream keys named by vend whose leases this database never recorded are kept (another deployment's, or a restored database; see reaper.delete_unknown_keys)"
            );
        }
        Ok(done)
    }

    /// Deletes one listed key; false (and a warning) when the upstream would not.
    async fn delete_orphan(&self, driver: &Arc<dyn MintDriver>, key: &MintedKey) -> bool {
        match driver.revoke(&key.lease_id, Some(&key.access_key_id)).await {
            Ok(Revoked::Deleted) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(lease = %key.lease_id, error = %e, "reconciliation: could not delete an orphan key; trying again next round");
                false
            }
        }
    }

    async fn reconciled_line(
        &self,
        lease: &Lease,
        access_key_id: Option<&str>,
        upstream: &str,
        detail: String,
    ) {
        let mut lease = lease.clone();
        lease.access_key_id = access_key_id.map(str::to_owned);
        if !self
            .lease_line(RECONCILED_EVENT, &lease, Some(upstream), Some(detail))
            .await
        {
            tracing::error!(lease = %lease.id, "audit log unavailable: a reconciliation line was not written");
        }
    }

    async fn unknown_key_line(&self, driver: &str, key: &MintedKey) {
        let record = AuditRecord {
            event: RECONCILED_EVENT,
            driver: Some(driver.to_owned()),
            lease_id: Some(key.lease_id.clone()),
            access_key_hmac: Some(self.key_hmac.of(&key.access_key_id)),
            detail: Some(
                "upstream: deleted; orphan_key_deleted: this database never recorded the key's lease (reaper.delete_unknown_keys is on)"
                    .into(),
            ),
            ..Default::default()
        };
        if self.audit.append(&record).await.is_err() {
            tracing::error!(lease = %key.lease_id, "audit log unavailable: a reconciliation line was not written");
        }
    }

    /// Reconciles once now (start-up), then reaps and reconciles every `interval`,
    /// for ever (a background task of the server).
    pub async fn reap_and_reconcile_every(&self, interval: Duration, settings: ReconcileSettings) {
        loop {
            if let Err(e) = self.reconcile_once(&settings).await {
                tracing::warn!(error = %e, "crash reconciliation");
            }
            tokio::time::sleep(interval).await;
            if let Err(e) = self.reap_once().await {
                tracing::warn!(error = %e, "lease reaper");
            }
        }
    }
}
