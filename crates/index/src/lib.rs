//! The metadata index: versions, files and the event log.
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

use std::sync::Arc;

use artifactstore_model::{Clock, Digest, StoreFault, SystemClock};
use sqlx::{AnyPool, Row};
use tokio::sync::{Mutex, watch};

/// The columns [`version_from_row`] reads, as a literal so queries stay `&'static str`.
macro_rules! version_columns {
    () => {
        "namespace, name, version, state, labels, created_at, completed_at, deleted_at, created_seq, file_count, expires_at"
    };
}

mod gc;
mod group;
mod read;
mod records;
mod retention;
mod usage;
mod write;

pub use artifactstore_model::api::{Event, EventKind, FileEntry};
pub use gc::{Hold, STALE_AFTER};
pub use group::GroupCommitStats;
pub use records::{AddedFile, BlobHolder, BlobRef, NewFile, VersionId, VersionRecord};
pub use retention::VersionAge;
pub use usage::{Quota, Usage};

/// The index's migrations. Migration 2 (leases and revocations) moved to the vending
/// service, which keeps its own migrations table; databases made before that still
/// record 2 as applied, so an applied migration missing here is not an error. Its
/// tables are deliberately left in place: in a database shared with the vending
/// service they hold its leases.
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

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
    #[error("the version holds its maximum of {max} files")]
    VersionFull { max: u64 },
    /// The namespace's quota would be passed; `what` says which and by how much.
    #[error("quota exceeded: {what}")]
    QuotaExceeded { what: String },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("index holds a value it cannot read back: {0}")]
    Corrupt(String),
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Db(e) if artifactstore_db::is_transient(e))
    }

    /// Whether the database itself failed — it does not answer, is shutting down, has
    /// no connection to spare, or its disk is full — rather than a refused request or
    /// a bug: the server answers these as 503 or 507, not as an internal error.
    pub fn fault(&self) -> Option<StoreFault> {
        let Error::Db(e) = self else { return None };
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Some(StoreFault::Unavailable)
            }
            sqlx::Error::Database(db) => db.code().and_then(|code| database_fault(&code)),
            _ => None,
        }
    }
}

/// What an SQLSTATE (PostgreSQL) or an SQLite result code says about the database.
fn database_fault(code: &str) -> Option<StoreFault> {
    match code {
        // PostgreSQL: disk_full; SQLite: SQLITE_FULL.
        "53100" | "13" => Some(StoreFault::Full),
        // PostgreSQL: insufficient resources (memory, connections), connection
        // exceptions, shutting down or starting up, I/O errors.
        c if c.starts_with("53") || c.starts_with("08") || c.starts_with("57P") => {
            Some(StoreFault::Unavailable)
        }
        "58030" => Some(StoreFault::Unavailable),
        // SQLite: SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR and their extended codes
        // (the primary code is the low byte). SQLSTATEs are always five characters,
        // SQLite's codes at most four digits.
        c if c.len() >= 5 => None,
        c => match c.parse::<u32>().map(|n| n & 0xff) {
            Ok(5 | 6 | 10) => Some(StoreFault::Unavailable),
            Ok(13) => Some(StoreFault::Full),
            _ => None,
        },
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct Index {
    pool: AnyPool,
    backend: &'static str,
    /// Serialises writers inside this process. SQLite allows one writer at a time; a
    /// writer that finds the lock taken sleeps in growing steps (up to 100 ms) and a
    /// deferred transaction that upgrades its lock can fail outright. Queueing here, for
    /// every write, avoids both. Across processes (PostgreSQL replicas), row locks and
    /// primary keys do the same job.
    write: Arc<Mutex<()>>,
    last_seq: Arc<watch::Sender<i64>>,
    clock: Arc<dyn Clock>,
    /// The most files one version may hold (`max_files_per_version`).
    max_files_per_version: Arc<std::sync::atomic::AtomicU64>,
    /// Writes of the upload path waiting for the next group commit (see `group`).
    queue: group::Queue,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

pub use artifactstore_db::sqlite_url;

/// The default cap on files per version: a manifest stays a size one answer can hold.
pub const DEFAULT_MAX_FILES_PER_VERSION: u64 = 100_000;

impl Index {
    /// Sets the most files one version may hold; beyond it `add_file` is refused with
    /// [`Error::VersionFull`].
    pub fn set_max_files_per_version(&self, max: u64) {
        self.max_files_per_version
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn max_files_per_version(&self) -> u64 {
        self.max_files_per_version
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connects to `url` (`sqlite://...` or `postgres://...`) and applies migrations.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with_clock(url, Arc::new(SystemClock)).await
    }

    /// [`open`](Self::open), with the clock that stamps rows and events.
    pub async fn open_with_clock(url: &str, clock: Arc<dyn Clock>) -> Result<Self> {
        let (pool, backend) = artifactstore_db::connect(
            url,
            artifactstore_db::PoolSize {
                sqlite: 8,
                postgres: 16,
            },
        )
        .await?;
        migrator().run(&pool).await?;
        let last: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM events")
            .fetch_one(&pool)
            .await?
            .try_get("last")?;
        let (last_seq, _) = watch::channel(last);
        Ok(Index {
            pool,
            backend: backend.as_str(),
            write: Arc::new(Mutex::new(())),
            last_seq: Arc::new(last_seq),
            clock,
            max_files_per_version: Arc::new(std::sync::atomic::AtomicU64::new(
                DEFAULT_MAX_FILES_PER_VERSION,
            )),
            queue: group::Queue::default(),
        })
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The clock that stamps rows and events.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
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
        publish(&self.last_seq, seq);
    }
}

/// Tells followers of the event feed that events up to `seq` are committed.
fn publish(last_seq: &watch::Sender<i64>, seq: i64) {
    last_seq.send_if_modified(|last| {
        let newer = seq > *last;
        if newer {
            *last = seq;
        }
        newer
    });
}

#[cfg(test)]
mod tests;
