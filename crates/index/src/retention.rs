//! What retention reads and writes: the names that have live versions, the ages of a
//! name's versions, and expiring one (a tombstone with a `version.expired` event).

use artifactstore_model::{Timestamp, VersionState};
use sqlx::Row;

use crate::records::{VersionId, VersionRecord};
use crate::write::{lock_version, retry_conflicts, tombstone};
use crate::{Error, EventKind, Index, Result};

/// What retention needs to know of one live version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionAge {
    pub version: String,
    pub state: VersionState,
    pub labels: std::collections::BTreeMap<String, String>,
    pub completed_at: Option<Timestamp>,
    /// Orders complete versions: the highest is `latest`.
    pub completed_seq: Option<i64>,
    /// The producer's expiry (`expires_in_days` when it was completed).
    pub expires_at: Option<Timestamp>,
    /// Its last upload (its creation when it has no file).
    pub last_upload_at: Timestamp,
}

impl Index {
    /// Up to `limit` (namespace, name) pairs that have a version not deleted, after
    /// `after`, in order.
    pub async fn live_names(
        &self,
        after: Option<&(String, String)>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let (ns, name) = after.cloned().unwrap_or_default();
        let rows = sqlx::query(
            "SELECT DISTINCT namespace, name FROM versions WHERE state <> 'deleted' \
             AND (namespace > $1 OR (namespace = $1 AND name > $2)) \
             ORDER BY namespace, name LIMIT $3",
        )
        .bind(ns)
        .bind(name)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("namespace")?, r.try_get("name")?)))
            .collect()
    }

    /// The versions of one name that are not deleted, with what retention weighs.
    pub async fn version_ages(&self, namespace: &str, name: &str) -> Result<Vec<VersionAge>> {
        let rows = sqlx::query(
            "SELECT v.version AS version, v.state AS state, v.labels AS labels, \
             v.completed_at AS completed_at, v.completed_seq AS completed_seq, \
             v.expires_at AS expires_at, \
             COALESCE((SELECT MAX(f.created_at) FROM files f WHERE f.namespace = v.namespace \
                 AND f.name = v.name AND f.version = v.version), v.created_at) AS last_upload_at \
             FROM versions v WHERE v.namespace = $1 AND v.name = $2 AND v.state <> 'deleted'",
        )
        .bind(namespace)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        let mut ages = Vec::with_capacity(rows.len());
        for r in rows {
            let state: String = r.try_get("state")?;
            let labels: String = r.try_get("labels")?;
            let ms = |c: &str| -> Result<Option<Timestamp>> {
                Ok(r.try_get::<Option<i64>, _>(c)?
                    .map(Timestamp::from_unix_millis))
            };
            ages.push(VersionAge {
                version: r.try_get("version")?,
                state: state.parse().map_err(Error::Corrupt)?,
                labels: serde_json::from_str(&labels)
                    .map_err(|e| Error::Corrupt(format!("labels: {e}")))?,
                completed_at: ms("completed_at")?,
                completed_seq: r.try_get("completed_seq")?,
                expires_at: ms("expires_at")?,
                last_upload_at: Timestamp::from_unix_millis(r.try_get("last_upload_at")?),
            });
        }
        Ok(ages)
    }

    /// Expires a version: a tombstone like [`delete_version`](Self::delete_version), with
    /// a `version.expired` event carrying `why`. Nothing happens (`None`) when the
    /// version is deleted already or is, by now, the name's `latest`.
    pub async fn expire_version(&self, id: &VersionId, why: &str) -> Result<Option<VersionRecord>> {
        retry_conflicts(|| self.expire_version_once(id, why)).await
    }

    async fn expire_version_once(
        &self,
        id: &VersionId,
        why: &str,
    ) -> Result<Option<VersionRecord>> {
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let Some(mut v) = lock_version(&mut tx, id).await? else {
            return Ok(None);
        };
        if v.state == VersionState::Deleted {
            return Ok(None);
        }
        // Looked at under the version's lock: a version completed since the plan
        // was made may have become `latest`, which is never expired.
        let newest: Option<String> = sqlx::query(
            "SELECT version FROM versions WHERE namespace = $1 AND name = $2 \
             AND state = 'complete' ORDER BY completed_seq DESC LIMIT 1",
        )
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("version"))
        .transpose()?;
        if newest.as_deref() == Some(id.version.as_str()) {
            return Ok(None);
        }
        let now = self.clock.now();
        let seq = tombstone(&mut tx, id, EventKind::VersionExpired, Some(why), now).await?;
        tx.commit().await?;
        self.published(seq);
        v.state = VersionState::Deleted;
        v.deleted_at = Some(now);
        Ok(Some(v))
    }
}
