//! Writes: every one runs in one transaction, queued behind the process's write lock,
//! and is run again when it lost a race with another replica.

use std::collections::BTreeMap;
use std::time::Duration;

use artifactstore_model::{Timestamp, VersionState};
use sqlx::{Any, Row, Transaction};

use crate::records::{file_from_row, version_from_row};
use crate::{AddedFile, Error, EventKind, Index, NewFile, Result, VersionId, VersionRecord};

/// Whether a write lost a race with another writer (another replica on a shared
/// database): the same event seq or the same new version row taken first, a
/// serialization failure, or SQLite's lock held by another process.
pub(crate) fn is_write_conflict(e: &Error) -> bool {
    let Error::Db(sqlx::Error::Database(db)) = e else {
        return false;
    };
    db.is_unique_violation()
        || matches!(db.code().as_deref(), Some("40001" | "40P01" | "5" | "517"))
}

/// Runs a write transaction again (up to 8 times, with a short growing pause) when it
/// lost a race; the loser sees the winner's row on the next attempt.
pub(crate) async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = Duration::from_millis(2);
    for _ in 0..7 {
        match attempt().await {
            Err(e) if is_write_conflict(&e) => {
                let jitter = Duration::from_micros(artifactstore_model::random_below(7) * 300);
                tokio::time::sleep(pause + jitter).await;
                pause *= 2;
            }
            other => return other,
        }
    }
    attempt().await
}

/// Appends an event inside `tx` and returns its sequence number.
async fn append_event(
    tx: &mut Transaction<'_, Any>,
    kind: EventKind,
    id: &VersionId,
    file: Option<&NewFile>,
    at: Timestamp,
) -> Result<i64> {
    append_event_with(tx, kind, id, file, None, at).await
}

/// [`append_event`] with why it happened (`detail`: the rule that expired a version).
async fn append_event_with(
    tx: &mut Transaction<'_, Any>,
    kind: EventKind,
    id: &VersionId,
    file: Option<&NewFile>,
    detail: Option<&str>,
    at: Timestamp,
) -> Result<i64> {
    let seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM events")
        .fetch_one(&mut **tx)
        .await?
        .try_get("next")?;
    sqlx::query(
        "INSERT INTO events (seq, kind, namespace, name, version, path, digest, size, media_type, at, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(seq)
    .bind(kind.as_str())
    .bind(id.namespace.as_str())
    .bind(id.name.as_str())
    .bind(id.version.as_str())
    .bind(file.map(|f| f.path.as_str().to_owned()))
    .bind(file.map(|f| f.digest.to_string()))
    .bind(file.map(|f| f.size as i64))
    .bind(file.map(|f| f.media_type.clone()))
    .bind(at.unix_millis())
    .bind(detail.map(str::to_owned))
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

/// Marks a version deleted inside `tx`, with its event (`version.deleted`, or
/// `version.expired` and why); returns the event's sequence number.
pub(crate) async fn tombstone(
    tx: &mut Transaction<'_, Any>,
    id: &VersionId,
    kind: EventKind,
    detail: Option<&str>,
    now: Timestamp,
) -> Result<i64> {
    let seq = append_event_with(tx, kind, id, None, detail, now).await?;
    crate::usage::release(tx, id).await?;
    sqlx::query(
        "UPDATE versions SET state = 'deleted', deleted_at = $1 WHERE namespace = $2 AND name = $3 AND version = $4",
    )
    .bind(now.unix_millis())
    .bind(id.namespace.as_str())
    .bind(id.name.as_str())
    .bind(id.version.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

/// Reads a version's state inside `tx`, taking its row lock first where the database
/// has row locks (a no-op update locks the row on PostgreSQL and is portable).
pub(crate) async fn lock_version(
    tx: &mut Transaction<'_, Any>,
    id: &VersionId,
) -> Result<Option<VersionRecord>> {
    sqlx::query(
        "UPDATE versions SET state = state WHERE namespace = $1 AND name = $2 AND version = $3",
    )
    .bind(id.namespace.as_str())
    .bind(id.name.as_str())
    .bind(id.version.as_str())
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query(concat!(
        "SELECT ",
        version_columns!(),
        " FROM versions WHERE namespace = $1 AND name = $2 AND version = $3"
    ))
    .bind(id.namespace.as_str())
    .bind(id.name.as_str())
    .bind(id.version.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(version_from_row).transpose()
}

/// Creates `id`, open and empty, with its `version.created` event inside `tx`; returns
/// the event's sequence number.
pub(crate) async fn create_version(
    tx: &mut Transaction<'_, Any>,
    id: &VersionId,
    now: Timestamp,
) -> Result<i64> {
    let seq = append_event(tx, EventKind::VersionCreated, id, None, now).await?;
    sqlx::query(
        "INSERT INTO versions (namespace, name, version, state, labels, created_at, created_seq) \
         VALUES ($1, $2, $3, 'open', '{}', $4, $5)",
    )
    .bind(id.namespace.as_str())
    .bind(id.name.as_str())
    .bind(id.version.as_str())
    .bind(now.unix_millis())
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

/// A file row to add: the file, its version, the quota it is checked against and the
/// upload hold its row releases.
#[derive(Clone, Debug)]
pub(crate) struct AddFile {
    pub id: VersionId,
    pub file: NewFile,
    pub quota: Option<crate::Quota>,
    pub holder: Option<String>,
}

/// Adds `spec`'s file row inside `tx` (creating its version, open, if needed) and returns
/// it with the last event sequence number written; `created` is false, and nothing is
/// written, when the same file is already there.
pub(crate) async fn add_file_in(
    tx: &mut Transaction<'_, Any>,
    now: Timestamp,
    max_files: u64,
    spec: &AddFile,
) -> Result<(AddedFile, i64)> {
    let AddFile {
        id,
        file,
        quota,
        holder,
    } = spec;
    let mut last_seq = 0;
    let mut new_version = false;
    let (state, file_count) = match lock_version(tx, id).await? {
        Some(v) => (v.state, v.file_count),
        None => {
            last_seq = create_version(tx, id, now).await?;
            new_version = true;
            (VersionState::Open, 0)
        }
    };
    if state == VersionState::Deleted {
        return Err(Error::VersionDeleted);
    }
    let existing = sqlx::query(
        "SELECT path, digest, size, media_type, created_at FROM files \
         WHERE namespace = $1 AND name = $2 AND version = $3 AND path = $4",
    )
    .bind(id.namespace.as_str())
    .bind(id.name.as_str())
    .bind(id.version.as_str())
    .bind(file.path.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = existing {
        let record = file_from_row(&row)?;
        if record.digest != file.digest {
            return Err(Error::FileConflict {
                existing: record.digest,
            });
        }
        let added = AddedFile {
            record,
            created: false,
        };
        return Ok((added, 0));
    }
    if state == VersionState::Complete {
        return Err(Error::VersionComplete);
    }
    if file_count >= max_files {
        return Err(Error::VersionFull { max: max_files });
    }
    crate::usage::charge(
        tx,
        id.namespace.as_str(),
        file.size,
        new_version,
        quota.as_ref(),
    )
    .await?;
    sqlx::query(
        "UPDATE versions SET file_count = file_count + 1 \
         WHERE namespace = $1 AND name = $2 AND version = $3",
    )
    .bind(id.namespace.as_str())
    .bind(id.name.as_str())
    .bind(id.version.as_str())
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO files (namespace, name, version, path, digest, size, media_type, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id.namespace.as_str())
    .bind(id.name.as_str())
    .bind(id.version.as_str())
    .bind(file.path.as_str())
    .bind(file.digest.to_string())
    .bind(file.size as i64)
    .bind(&file.media_type)
    .bind(now.unix_millis())
    .execute(&mut **tx)
    .await?;
    last_seq = last_seq.max(append_event(tx, EventKind::FileAdded, id, Some(file), now).await?);
    if let Some(holder) = holder {
        sqlx::query("DELETE FROM gc_holds WHERE digest = $1 AND holder = $2")
            .bind(file.digest.to_string())
            .bind(holder)
            .execute(&mut **tx)
            .await?;
    }
    let added = file.added(now);
    Ok((added, last_seq))
}

impl Index {
    /// Records a file whose blob is durable. Creates the version (open) if needed.
    pub async fn add_file(&self, id: &VersionId, file: NewFile) -> Result<AddedFile> {
        self.add_file_within(id, file, None, None).await
    }

    /// [`add_file`](Self::add_file), refused with [`Error::QuotaExceeded`] when the file
    /// (or the version it creates) would pass the namespace's `quota`. A new file row
    /// releases `holder`'s hold on its digest in the same transaction (garbage
    /// collection's hold; see `gc`), so the row and the release are one write.
    pub async fn add_file_within(
        &self,
        id: &VersionId,
        file: NewFile,
        quota: Option<&crate::Quota>,
        holder: Option<&str>,
    ) -> Result<AddedFile> {
        self.add_file_grouped(AddFile {
            id: id.clone(),
            file,
            quota: quota.copied(),
            holder: holder.map(str::to_owned),
        })
        .await
    }
    /// Freezes a version's file set (idempotent). `labels`, if given, are set first; on an
    /// already complete version they must equal the stored ones.
    pub async fn complete(
        &self,
        id: &VersionId,
        labels: Option<BTreeMap<String, String>>,
    ) -> Result<VersionRecord> {
        self.complete_with(id, labels, None).await
    }

    /// [`complete`](Self::complete), with the expiry its producer gave it. Completing a
    /// complete version again does not change its expiry.
    pub async fn complete_with(
        &self,
        id: &VersionId,
        labels: Option<BTreeMap<String, String>>,
        expires_at: Option<Timestamp>,
    ) -> Result<VersionRecord> {
        retry_conflicts(|| self.complete_once(id, labels.clone(), expires_at)).await
    }

    async fn complete_once(
        &self,
        id: &VersionId,
        labels: Option<BTreeMap<String, String>>,
        expires_at: Option<Timestamp>,
    ) -> Result<VersionRecord> {
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut v = lock_version(&mut tx, id)
            .await?
            .ok_or(Error::VersionNotFound)?;
        match v.state {
            VersionState::Deleted => return Err(Error::VersionDeleted),
            VersionState::Complete => {
                if labels.is_some_and(|l| l != v.labels) {
                    return Err(Error::VersionComplete);
                }
                return Ok(v);
            }
            VersionState::Open => {}
        }
        let now = self.clock.now();
        let seq = append_event(&mut tx, EventKind::VersionCompleted, id, None, now).await?;
        if let Some(labels) = labels {
            v.labels = labels;
        }
        sqlx::query(
            "UPDATE versions SET state = 'complete', completed_at = $1, completed_seq = $2, labels = $3, \
             expires_at = $4 WHERE namespace = $5 AND name = $6 AND version = $7",
        )
        .bind(now.unix_millis())
        .bind(seq)
        .bind(serde_json::to_string(&v.labels).expect("labels serialise"))
        .bind(expires_at.map(Timestamp::unix_millis))
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.published(seq);
        v.state = VersionState::Complete;
        v.completed_at = Some(now);
        v.expires_at = expires_at;
        Ok(v)
    }

    /// Replaces the labels of an open version.
    pub async fn set_labels(
        &self,
        id: &VersionId,
        labels: BTreeMap<String, String>,
    ) -> Result<VersionRecord> {
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut v = lock_version(&mut tx, id)
            .await?
            .ok_or(Error::VersionNotFound)?;
        match v.state {
            VersionState::Deleted => return Err(Error::VersionDeleted),
            VersionState::Complete if labels != v.labels => return Err(Error::VersionComplete),
            VersionState::Complete => return Ok(v),
            VersionState::Open => {}
        }
        sqlx::query(
            "UPDATE versions SET labels = $1 WHERE namespace = $2 AND name = $3 AND version = $4",
        )
        .bind(serde_json::to_string(&labels).expect("labels serialise"))
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        v.labels = labels;
        Ok(v)
    }

    /// Tombstones a version (idempotent). Its file rows stay (reads answer
    /// `version_deleted`), but they no longer keep their blobs: garbage collection frees
    /// what no live version references.
    pub async fn delete_version(&self, id: &VersionId) -> Result<VersionRecord> {
        retry_conflicts(|| self.delete_version_once(id)).await
    }

    async fn delete_version_once(&self, id: &VersionId) -> Result<VersionRecord> {
        let _guard = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut v = lock_version(&mut tx, id)
            .await?
            .ok_or(Error::VersionNotFound)?;
        if v.state == VersionState::Deleted {
            return Ok(v);
        }
        let now = self.clock.now();
        let seq = tombstone(&mut tx, id, EventKind::VersionDeleted, None, now).await?;
        tx.commit().await?;
        self.published(seq);
        v.state = VersionState::Deleted;
        v.deleted_at = Some(now);
        Ok(v)
    }
}
