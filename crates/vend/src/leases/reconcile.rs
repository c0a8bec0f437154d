//! The lease store's side of crash reconciliation: finding issues that never finished
//! and ending them without racing the issue that might still finish.

use artifactstore_model::Timestamp;

use super::{Lease, LeaseState, LeaseStore, Result, lease_from_row};

impl LeaseStore {
    /// Leases still pending that were recorded before `before`, oldest first, at most
    /// `limit`.
    pub async fn pending_before(&self, before: Timestamp, limit: u32) -> Result<Vec<Lease>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            lease_columns!(),
            " FROM leases WHERE state = 'pending' AND issued_at < $1 \
             ORDER BY issued_at LIMIT $2"
        ))
        .bind(before.unix_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// Ends a lease as failed only while it is still *pending*. Returns the lease as it
    /// was, or `None` when it was not pending any more: an issue that activated it
    /// meanwhile handed its credential out, and that lease is not this caller's to end.
    pub async fn fail_pending(
        &self,
        id: &str,
        reason: &str,
        at: Timestamp,
    ) -> Result<Option<Lease>> {
        let _guard = self.write.lock().await;
        let before = self.lease(id).await?;
        let done = sqlx::query(
            "UPDATE leases SET state = $2, ended_at = $3, end_reason = $4 \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(LeaseState::Failed.as_str())
        .bind(at.unix_millis())
        .bind(reason)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(if done == 1 { before } else { None })
    }
}
