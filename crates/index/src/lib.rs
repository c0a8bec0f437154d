//! The metadata index: versions, files, the event log, uploads in flight, and the
//! credential leases of the vending service.
//!
//! One code path for SQLite (the embedded default) and PostgreSQL, through the sqlx Any
//! driver: portable SQL only, TEXT and BIGINT columns, `$n` placeholders.
//!
//! Invariants:
//! - a `files` row is inserted only after its blob is durable (the caller's duty: the
//!   service writes the blob first);
//! - a complete version's file set never changes; a deleted version stays as a tombstone;
//! - event sequence numbers are gap-free and follow commit order, so a follower that has
//!   seen `seq = n` has seen everything before it.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use artifactstore_model::{Digest, FilePath, Name, Namespace, Version, VersionState};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use tokio::sync::{Mutex, watch};

mod leases;
pub use leases::{Lease, LeaseFilter, LeaseState, RevocationKind};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Errors of the index. Domain refusals have their own variants so that the HTTP layer
/// can map them without string matching.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("version not found")]
    VersionNotFound,
    #[error("version has been deleted")]
    VersionDeleted,
    #[error("version is complete; its files and labels can no longer change")]
    VersionComplete,
    #[error("a different file is already stored at this path (digest {existing})")]
    FileConflict { existing: Digest },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("index holds a value it cannot read back: {0}")]
    Corrupt(String),
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Db(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The full name of a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionId {
    pub namespace: Namespace,
    pub name: Name,
    pub version: Version,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct VersionRecord {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub state: VersionState,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub deleted_at: Option<i64>,
    #[serde(skip)]
    pub created_seq: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FileRecord {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub created_at: i64,
}

/// A file to record, once its blob is durable.
#[derive(Clone, Debug)]
pub struct NewFile {
    pub path: FilePath,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EventKind {
    #[serde(rename = "version.created")]
    VersionCreated,
    #[serde(rename = "file.added")]
    FileAdded,
    #[serde(rename = "version.completed")]
    VersionCompleted,
    #[serde(rename = "version.deleted")]
    VersionDeleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::VersionCreated => "version.created",
            EventKind::FileAdded => "file.added",
            EventKind::VersionCompleted => "version.completed",
            EventKind::VersionDeleted => "version.deleted",
        }
    }
}

impl FromStr for EventKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "version.created" => EventKind::VersionCreated,
            "file.added" => EventKind::FileAdded,
            "version.completed" => EventKind::VersionCompleted,
            "version.deleted" => EventKind::VersionDeleted,
            other => return Err(Error::Corrupt(format!("event kind {other:?}"))),
        })
    }
}

/// One entry of the append-only event log. Carries names, digests and sizes only.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub namespace: String,
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Unix milliseconds; the HTTP layer presents it as RFC 3339.
    #[serde(skip)]
    pub at: i64,
}

/// Result of [`Index::add_file`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedFile {
    pub record: FileRecord,
    /// False when the same file (same path, same digest) was already recorded.
    pub created: bool,
}

/// A blob digest and how many file rows reference it (for fsck).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
    pub files: u64,
}

pub struct Index {
    pool: AnyPool,
    backend: &'static str,
    /// Serialises writers inside this process. SQLite allows one writer at a time; a
    /// writer that finds the lock taken sleeps in growing steps (up to 100 ms) and a
    /// deferred transaction that upgrades its lock can fail outright. Queueing here, for
    /// every write, avoids both. Across processes (PostgreSQL replicas), row locks and
    /// primary keys do the same job.
    write: Mutex<()>,
    last_seq: watch::Sender<i64>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The SQLite URL of an index file inside `dir`.
pub fn sqlite_url(path: &std::path::Path) -> String {
    let p = path
        .to_string_lossy()
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    format!("sqlite://{p}?mode=rwc")
}

/// The columns [`version_from_row`] reads, as a literal so queries stay `&'static str`.
macro_rules! version_columns {
    () => {
        "namespace, name, version, state, labels, created_at, completed_at, deleted_at, created_seq"
    };
}

fn version_from_row(row: &AnyRow) -> Result<VersionRecord> {
    let state: String = row.try_get("state")?;
    let labels: String = row.try_get("labels")?;
    Ok(VersionRecord {
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        state: state.parse().map_err(Error::Corrupt)?,
        labels: serde_json::from_str(&labels)
            .map_err(|e| Error::Corrupt(format!("labels: {e}")))?,
        created_at: row.try_get("created_at")?,
        completed_at: row.try_get("completed_at")?,
        deleted_at: row.try_get("deleted_at")?,
        created_seq: row.try_get("created_seq")?,
    })
}

fn digest_from(s: &str) -> Result<Digest> {
    s.parse()
        .map_err(|_| Error::Corrupt(format!("digest {s:?}")))
}

fn file_from_row(row: &AnyRow) -> Result<FileRecord> {
    let digest: String = row.try_get("digest")?;
    let size: i64 = row.try_get("size")?;
    Ok(FileRecord {
        path: row.try_get("path")?,
        digest: digest_from(&digest)?,
        size: size as u64,
        media_type: row.try_get("media_type")?,
        created_at: row.try_get("created_at")?,
    })
}

fn event_from_row(row: &AnyRow) -> Result<Event> {
    let kind: String = row.try_get("kind")?;
    let digest: Option<String> = row.try_get("digest")?;
    let size: Option<i64> = row.try_get("size")?;
    Ok(Event {
        seq: row.try_get("seq")?,
        kind: kind.parse()?,
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        path: row.try_get("path")?,
        digest: digest.as_deref().map(digest_from).transpose()?,
        size: size.map(|s| s as u64),
        media_type: row.try_get("media_type")?,
        at: row.try_get("at")?,
    })
}

/// Whether a write lost a race with another writer (another replica on a shared
/// database): the same event seq or the same new version row taken first, a
/// serialization failure, or SQLite's lock held by another process.
fn is_write_conflict(e: &Error) -> bool {
    let Error::Db(sqlx::Error::Database(db)) = e else {
        return false;
    };
    db.is_unique_violation()
        || matches!(db.code().as_deref(), Some("40001" | "40P01" | "5" | "517"))
}

/// Runs a write transaction again (up to 8 times, with a short growing pause) when it
/// lost a race; the loser sees the winner's row on the next attempt.
async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = Duration::from_millis(2);
    for _ in 0..7 {
        match attempt().await {
            Err(e) if is_write_conflict(&e) => {
                let jitter = Duration::from_micros((now_millis() as u64 % 7) * 300);
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
    at: i64,
) -> Result<i64> {
    let seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM events")
        .fetch_one(&mut **tx)
        .await?
        .try_get("next")?;
    sqlx::query(
        "INSERT INTO events (seq, kind, namespace, name, version, path, digest, size, media_type, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

/// Reads a version's state inside `tx`, taking its row lock first where the database
/// has row locks (a no-op update locks the row on PostgreSQL and is portable).
async fn lock_version(
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

impl Index {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and applies migrations.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if is_sqlite {
                        // FULL: a committed row survives power loss, which is what an
                        // acknowledged upload promises.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        let last: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM events")
            .fetch_one(&pool)
            .await?
            .try_get("last")?;
        let (last_seq, _) = watch::channel(last);
        Ok(Index {
            pool,
            backend: if is_sqlite { "sqlite" } else { "postgres" },
            write: Mutex::new(()),
            last_seq,
        })
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// A cheap query that proves the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Follows the newest event sequence number written by this process.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.last_seq.subscribe()
    }

    fn published(&self, seq: i64) {
        self.last_seq.send_if_modified(|last| {
            let newer = seq > *last;
            if newer {
                *last = seq;
            }
            newer
        });
    }

    /// Records an upload in flight; returns its id.
    pub async fn begin_upload(&self, id: &VersionId, path: &FilePath) -> Result<String> {
        let _guard = self.write.lock().await;
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let upload = format!(
            "{}-{}-{}",
            now_millis(),
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        sqlx::query(
            "INSERT INTO uploads (id, namespace, name, version, path, started_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&upload)
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .bind(path.as_str())
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(upload)
    }

    /// Forgets an upload that failed or was refused.
    pub async fn end_upload(&self, upload: &str) -> Result<()> {
        let _guard = self.write.lock().await;
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(upload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets uploads that a crashed process left behind; returns how many.
    pub async fn clear_uploads(&self) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM uploads")
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    pub async fn uploads_in_flight(&self) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM uploads")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(n as u64)
    }

    /// Records a file whose blob is durable. Creates the version (open) if needed.
    /// `upload` (from [`begin_upload`](Self::begin_upload)) is cleared in the same
    /// transaction.
    pub async fn add_file(
        &self,
        id: &VersionId,
        file: NewFile,
        upload: Option<&str>,
    ) -> Result<AddedFile> {
        retry_conflicts(|| self.add_file_once(id, file.clone(), upload)).await
    }

    async fn add_file_once(
        &self,
        id: &VersionId,
        file: NewFile,
        upload: Option<&str>,
    ) -> Result<AddedFile> {
        let _guard = self.write.lock().await;
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        if let Some(upload) = upload {
            sqlx::query("DELETE FROM uploads WHERE id = $1")
                .bind(upload)
                .execute(&mut *tx)
                .await?;
        }
        let mut last_seq = 0;
        let state = match lock_version(&mut tx, id).await? {
            Some(v) => v.state,
            None => {
                let seq = append_event(&mut tx, EventKind::VersionCreated, id, None, now).await?;
                sqlx::query(
                    "INSERT INTO versions (namespace, name, version, state, labels, created_at, created_seq) \
                     VALUES ($1, $2, $3, 'open', '{}', $4, $5)",
                )
                .bind(id.namespace.as_str())
                .bind(id.name.as_str())
                .bind(id.version.as_str())
                .bind(now)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                last_seq = seq;
                VersionState::Open
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
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            let record = file_from_row(&row)?;
            if record.digest != file.digest {
                return Err(Error::FileConflict {
                    existing: record.digest,
                });
            }
            tx.commit().await?; // only the upload row went away
            return Ok(AddedFile {
                record,
                created: false,
            });
        }
        if state == VersionState::Complete {
            return Err(Error::VersionComplete);
        }
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
        .bind(now)
        .execute(&mut *tx)
        .await?;
        last_seq =
            last_seq.max(append_event(&mut tx, EventKind::FileAdded, id, Some(&file), now).await?);
        tx.commit().await?;
        self.published(last_seq);
        Ok(AddedFile {
            record: FileRecord {
                path: file.path.as_str().to_owned(),
                digest: file.digest,
                size: file.size,
                media_type: file.media_type,
                created_at: now,
            },
            created: true,
        })
    }

    /// Freezes a version's file set (idempotent). `labels`, if given, are set first; on an
    /// already complete version they must equal the stored ones.
    pub async fn complete(
        &self,
        id: &VersionId,
        labels: Option<BTreeMap<String, String>>,
    ) -> Result<VersionRecord> {
        retry_conflicts(|| self.complete_once(id, labels.clone())).await
    }

    async fn complete_once(
        &self,
        id: &VersionId,
        labels: Option<BTreeMap<String, String>>,
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
        let now = now_millis();
        let seq = append_event(&mut tx, EventKind::VersionCompleted, id, None, now).await?;
        if let Some(labels) = labels {
            v.labels = labels;
        }
        sqlx::query(
            "UPDATE versions SET state = 'complete', completed_at = $1, completed_seq = $2, labels = $3 \
             WHERE namespace = $4 AND name = $5 AND version = $6",
        )
        .bind(now)
        .bind(seq)
        .bind(serde_json::to_string(&v.labels).expect("labels serialise"))
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.published(seq);
        v.state = VersionState::Complete;
        v.completed_at = Some(now);
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

    /// Tombstones a version (idempotent). Its file rows stay, so its blobs stay referenced
    /// until a garbage collector decides otherwise.
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
        let now = now_millis();
        let seq = append_event(&mut tx, EventKind::VersionDeleted, id, None, now).await?;
        sqlx::query(
            "UPDATE versions SET state = 'deleted', deleted_at = $1 WHERE namespace = $2 AND name = $3 AND version = $4",
        )
        .bind(now)
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.published(seq);
        v.state = VersionState::Deleted;
        v.deleted_at = Some(now);
        Ok(v)
    }

    pub async fn version(&self, id: &VersionId) -> Result<Option<VersionRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            version_columns!(),
            " FROM versions WHERE namespace = $1 AND name = $2 AND version = $3"
        ))
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// The newest complete version: the one completed last.
    pub async fn latest(&self, namespace: &Namespace, name: &Name) -> Result<Option<Version>> {
        let row = sqlx::query(
            "SELECT version FROM versions WHERE namespace = $1 AND name = $2 AND state = 'complete' \
             ORDER BY completed_seq DESC LIMIT 1",
        )
        .bind(namespace.as_str())
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let v: String = row.try_get("version")?;
                Version::parse(&v)
                    .map(Some)
                    .map_err(|e| Error::Corrupt(e.to_string()))
            }
        }
    }

    pub async fn file(&self, id: &VersionId, path: &FilePath) -> Result<Option<FileRecord>> {
        let row = sqlx::query(
            "SELECT path, digest, size, media_type, created_at FROM files \
             WHERE namespace = $1 AND name = $2 AND version = $3 AND path = $4",
        )
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .bind(path.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(file_from_row).transpose()
    }

    /// Every file of a version, ordered by path.
    pub async fn files(&self, id: &VersionId) -> Result<Vec<FileRecord>> {
        let rows = sqlx::query(
            "SELECT path, digest, size, media_type, created_at FROM files \
             WHERE namespace = $1 AND name = $2 AND version = $3 ORDER BY path",
        )
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(file_from_row).collect()
    }

    /// Namespaces that hold at least one live version, ascending, after `after`.
    pub async fn namespaces(&self, prefix: &str, after: &str, limit: u32) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT namespace FROM versions WHERE state <> 'deleted' \
             AND substr(namespace, 1, CAST($1 AS INTEGER)) = $2 AND namespace > $3 ORDER BY namespace LIMIT $4",
        )
        .bind(prefix.len() as i64)
        .bind(prefix)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("namespace")?)).collect()
    }

    /// Names in a namespace that hold at least one live version, ascending.
    pub async fn names(
        &self,
        namespace: &Namespace,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT name FROM versions WHERE namespace = $1 AND state <> 'deleted' \
             AND substr(name, 1, CAST($2 AS INTEGER)) = $3 AND name > $4 ORDER BY name LIMIT $5",
        )
        .bind(namespace.as_str())
        .bind(prefix.len() as i64)
        .bind(prefix)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// Live versions of a name, newest first; `before` is the `created_seq` cursor.
    pub async fn versions(
        &self,
        namespace: &Namespace,
        name: &Name,
        prefix: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<VersionRecord>> {
        let rows = sqlx::query(concat!("SELECT ", version_columns!(), " FROM versions WHERE namespace = $1 AND name = $2 AND state <> 'deleted' \
             AND substr(version, 1, CAST($3 AS INTEGER)) = $4 AND created_seq < $5 ORDER BY created_seq DESC LIMIT $6"))
        .bind(namespace.as_str())
        .bind(name.as_str())
        .bind(prefix.len() as i64)
        .bind(prefix)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Events with `seq > after`, ascending.
    pub async fn events(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT seq, kind, namespace, name, version, path, digest, size, media_type, at FROM events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Size and media type of a blob if a file of a live version references it.
    pub async fn live_blob(&self, digest: &Digest) -> Result<Option<(u64, String)>> {
        let row = sqlx::query(
            "SELECT f.size, f.media_type FROM files f JOIN versions v \
             ON v.namespace = f.namespace AND v.name = f.name AND v.version = f.version \
             WHERE f.digest = $1 AND v.state <> 'deleted' LIMIT 1",
        )
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(None),
            Some(r) => {
                let size: i64 = r.try_get("size")?;
                Ok(Some((size as u64, r.try_get("media_type")?)))
            }
        }
    }

    /// Referenced blobs in digest order, after `after` (for fsck).
    pub async fn referenced_blobs(
        &self,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRef>> {
        let rows = sqlx::query(
            "SELECT digest, MIN(size) AS size, COUNT(*) AS files FROM files WHERE digest > $1 \
             GROUP BY digest ORDER BY digest LIMIT $2",
        )
        .bind(after.map(|d| d.to_string()).unwrap_or_default())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get("digest")?;
                let size: i64 = r.try_get("size")?;
                let files: i64 = r.try_get("files")?;
                Ok(BlobRef {
                    digest: digest_from(&digest)?,
                    size: size as u64,
                    files: files as u64,
                })
            })
            .collect()
    }

    /// The files that reference a blob, as `namespace/name@version/path` (for reports).
    pub async fn files_with_digest(&self, digest: &Digest) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT namespace, name, version, path FROM files WHERE digest = $1 ORDER BY namespace, name, version, path",
        )
        .bind(digest.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let (ns, n, v, p): (String, String, String, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
                Ok(format!("{ns}/{n}@{v}/{p}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
