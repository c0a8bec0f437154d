//! The lease store's side of crash reconciliation: finding issues that never finished
//! and ending them without racing the issue that might still finish.

use std::collections::BTreeMap;

use artifactstore_model::Timestamp;

use super::{Lease, LeaseState, LeaseStore, Result, lease_from_row};

/// Ids per lookup query: well under SQLite's bound on bound parameters.
const LOOKUP_CHUNK: usize = 500;

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
        self.end_lease_from(id, true, LeaseState::Failed, reason, at)
            .await
    }

    /// The leases of these ids that exist, by id: one query per
    /// [`LOOKUP_CHUNK`] ids rather than one per id, since reconciliation looks up
    /// every key the upstream lists at every round.
    pub async fn leases_by_id(&self, ids: &[&str]) -> Result<BTreeMap<String, Lease>> {
        let mut found = BTreeMap::new();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            let placeholders = (1..=chunk.len())
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT {} FROM leases WHERE id IN ({placeholders})",
                lease_columns!()
            );
            // Only placeholders are formatted in; the ids are bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&self.pool).await? {
                let lease = lease_from_row(&row)?;
                found.insert(lease.id.clone(), lease);
            }
        }
        Ok(found)
    }
}
