//! The reaper: leases past their expiry are ended and their keys deleted upstream.
//! It runs every `[reaper] interval_secs`, with crash reconciliation
//! (`reap_and_reconcile_every`, in [`super::reconcile`]).

use std::sync::atomic::Ordering;

use crate::leases::{LeaseState, StoreError};

use super::Service;

impl Service {
    /// Ends leases past their expiry and deletes their keys upstream. Returns how
    /// many were ended.
    pub async fn reap_once(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for lease in self
            .leases
            .leases_past_expiry(self.clock.now(), 500)
            .await?
        {
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
