//! The index's side of garbage collection: which blobs no live file references, the
//! holds uploads take on the digests they are about to reference, and the one
//! collector at a time.
//!
//! The protocol, which holds at zero grace and across replicas on one database:
//! - an upload, once it knows its digest and *before* it looks whether the blob exists
//!   (or publishes it), takes a hold ([`Index::hold_blob`]); it releases the hold after
//!   its file row is written or the upload failed;
//! - a collector deletes a blob only after marking its candidate row `deleting`
//!   ([`Index::claim_for_deletion`]), in one statement that also checks that no live
//!   file references it and no fresh hold exists;
//! - both take the candidate row first — the hold by an upsert, which locks the row or
//!   the key of the row it inserts, so even a digest never noted before is covered —
//!   so the database orders them: a hold taken first stops the claim; a claim made
//!   first makes the hold wait until the collector has deleted the blob and forgotten
//!   the row, after which the upload finds the blob gone and writes it again;
//! - a hold is refreshed while its upload runs ([`Index::refresh_hold`]), so only the
//!   hold of a process that died goes stale.
//!
//! A hold or a `deleting` mark older than [`STALE_AFTER`] is left by a process that
//! died; it no longer counts.

use std::collections::HashSet;
use std::time::Duration;

use artifactstore_model::{Digest, Timestamp};
use sqlx::Row;

use crate::{Index, Result};

/// A hold or a `deleting` mark this old was left by a process that died.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// Digests asked about in one statement.
const PAGE: usize = 500;

/// What [`Index::hold_blob`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Hold {
    /// Held: no collector will delete the blob until the hold is released.
    Held,
    /// A collector is deleting the blob right now: ask again shortly.
    BeingDeleted,
}

impl Index {
    /// Takes `holder`'s hold on `digest` (see the module docs), unless a collector is
    /// deleting that blob. A digest taken up again starts its grace period anew.
    pub async fn hold_blob(&self, digest: &Digest, holder: &str) -> Result<Hold> {
        self.hold_grouped(*digest, holder).await
    }

    /// Renews `holder`'s hold on `digest` (an upload still running); false when it is
    /// gone (it lapsed, or was swept as stale), after which the upload must not rely on
    /// the blob it found.
    pub async fn refresh_hold(&self, digest: &Digest, holder: &str) -> Result<bool> {
        let _guard = self.write.lock().await;
        let done = sqlx::query("UPDATE gc_holds SET since = $1 WHERE digest = $2 AND holder = $3")
            .bind(self.clock.now().unix_millis())
            .bind(digest.to_string())
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Releases `holder`'s hold on `digest`.
    pub async fn release_blob(&self, digest: &Digest, holder: &str) -> Result<()> {
        let _guard = self.write.lock().await;
        sqlx::query("DELETE FROM gc_holds WHERE digest = $1 AND holder = $2")
            .bind(digest.to_string())
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Becomes the one collector for `ttl`, unless another holds the lease: false then.
    pub async fn acquire_gc(&self, holder: &str, ttl: Duration) -> Result<bool> {
        let _guard = self.write.lock().await;
        let now = self.clock.now();
        let taken = sqlx::query(
            "UPDATE gc_lease SET holder = $1, until = $2 \
             WHERE name = 'gc' AND (until < $3 OR holder = $1)",
        )
        .bind(holder)
        .bind(now.saturating_add(ttl).unix_millis())
        .bind(now.unix_millis())
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Ends `holder`'s lease and records the run's end.
    pub async fn finish_gc(&self, holder: &str) -> Result<()> {
        let _guard = self.write.lock().await;
        sqlx::query(
            "UPDATE gc_lease SET until = 0, last_run_at = $2 WHERE name = 'gc' AND holder = $1",
        )
        .bind(holder)
        .bind(self.clock.now().unix_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Which of `digests` a file of a version that is not deleted references.
    pub async fn live_digests(&self, digests: &[Digest]) -> Result<HashSet<Digest>> {
        let mut live = HashSet::new();
        for page in digests.chunks(PAGE) {
            let marks: Vec<String> = (1..=page.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT DISTINCT f.digest AS digest FROM files f JOIN versions v \
                 ON v.namespace = f.namespace AND v.name = f.name AND v.version = f.version \
                 WHERE v.state <> 'deleted' AND f.digest IN ({})",
                marks.join(", ")
            );
            // Only placeholders are formatted in; the digests are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in page {
                q = q.bind(d.to_string());
            }
            for row in q.fetch_all(&self.pool).await? {
                let text: String = row.try_get("digest")?;
                if let Ok(d) = text.parse() {
                    live.insert(d);
                }
            }
        }
        Ok(live)
    }

    /// Notes blobs found unreferenced (their grace starts now unless it started
    /// earlier) and forgets candidates found referenced again.
    pub async fn note_candidates(
        &self,
        unreferenced: &[(Digest, u64)],
        referenced: &[Digest],
    ) -> Result<()> {
        let _guard = self.write.lock().await;
        let now = self.clock.now().unix_millis();
        let mut tx = self.pool.begin().await?;
        for (digest, size) in unreferenced {
            sqlx::query(
                "INSERT INTO gc_candidates (digest, size, first_seen) VALUES ($1, $2, $3) \
                 ON CONFLICT (digest) DO NOTHING",
            )
            .bind(digest.to_string())
            .bind(i64::try_from(*size).unwrap_or(i64::MAX))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for page in referenced.chunks(PAGE) {
            let marks: Vec<String> = (1..=page.len()).map(|i| format!("${i}")).collect();
            // Only placeholders are formatted in; the digests are bound.
            let sql = format!(
                "DELETE FROM gc_candidates WHERE deleting_since IS NULL AND digest IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in page {
                q = q.bind(d.to_string());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` candidates unreferenced since before `cutoff`, after `after`.
    pub async fn candidates_due(
        &self,
        cutoff: Timestamp,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, u64)>> {
        let rows = sqlx::query(
            "SELECT digest, size FROM gc_candidates WHERE first_seen <= $1 AND digest > $2 \
             ORDER BY digest LIMIT $3",
        )
        .bind(cutoff.unix_millis())
        .bind(after.map(|d| d.to_string()).unwrap_or_default())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut due = Vec::new();
        for row in rows {
            let text: String = row.try_get("digest")?;
            let size: i64 = row.try_get("size")?;
            if let Ok(d) = text.parse() {
                due.push((d, u64::try_from(size).unwrap_or(0)));
            }
        }
        Ok(due)
    }

    /// Marks `digest` as being deleted if it is still a candidate unreferenced since
    /// before `cutoff`, no live file references it and no fresh hold exists: true when
    /// the caller may now delete the blob (and must then [`forget_candidate`](Self::forget_candidate)).
    pub async fn claim_for_deletion(&self, digest: &Digest, cutoff: Timestamp) -> Result<bool> {
        let _guard = self.write.lock().await;
        let now = self.clock.now();
        let stale = now.saturating_sub(STALE_AFTER).unix_millis();
        let d = digest.to_string();
        let claimed = sqlx::query(
            "UPDATE gc_candidates SET deleting_since = $1 \
             WHERE digest = $2 AND first_seen <= $3 \
             AND (deleting_since IS NULL OR deleting_since < $4) \
             AND NOT EXISTS (SELECT 1 FROM gc_holds h WHERE h.digest = $2 AND h.since >= $4) \
             AND NOT EXISTS (SELECT 1 FROM files f JOIN versions v \
                 ON v.namespace = f.namespace AND v.name = f.name AND v.version = f.version \
                 WHERE f.digest = $2 AND v.state <> 'deleted')",
        )
        .bind(now.unix_millis())
        .bind(&d)
        .bind(cutoff.unix_millis())
        .bind(stale)
        .execute(&self.pool)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Forgets a candidate whose blob was deleted (or found gone).
    pub async fn forget_candidate(&self, digest: &Digest) -> Result<()> {
        let _guard = self.write.lock().await;
        sqlx::query("DELETE FROM gc_candidates WHERE digest = $1")
            .bind(digest.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes holds left by processes that died.
    pub async fn sweep_stale_holds(&self) -> Result<u64> {
        let _guard = self.write.lock().await;
        let stale = self.clock.now().saturating_sub(STALE_AFTER).unix_millis();
        let done = sqlx::query("DELETE FROM gc_holds WHERE since < $1")
            .bind(stale)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
