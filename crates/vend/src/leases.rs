//! The lease store: the credential leases the service handed out and the standing
//! revocations of subjects and roles, in the service's own database (SQLite or
//! PostgreSQL, one code path through the sqlx Any driver: portable SQL only, TEXT and
//! BIGINT columns, `$n` placeholders; times are [`Timestamp`]s stored as BIGINT Unix
//! milliseconds).
//!
//! The schema is vend's alone: `crates/vend/migrations`, tracked in its own table
//! [`MIGRATIONS_TABLE`], never in `_sqlx_migrations` (the artifact index's). So a new
//! vend database holds no artifact tables, and vend and the artifact index may share
//! one PostgreSQL database without either migrator seeing the other's migrations.
//!
//! Databases of the previous layout, where these tables were migration 2 of the
//! artifact index, are adopted in place: vend's first migration creates its tables
//! only if they do not exist yet, with the very columns and indexes of that old
//! migration, so existing leases and revocations stay as they are. What the old layout
//! left behind — the artifact tables in a vend database, the `_sqlx_migrations` rows —
//! is left alone: in a shared database those belong to the artifact index.

use artifactstore_model::Timestamp;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};
use tokio::sync::Mutex;

/// The table in which vend records which of its migrations ran.
pub const MIGRATIONS_TABLE: &str = "_artifactstore_vend_migrations";

fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("lease store holds a value it cannot read back: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Db(e) if artifactstore_db::is_transient(e))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Recorded before the driver mints; becomes active or failed.
    Pending,
    Active,
    Revoked,
    Expired,
    /// Nothing was handed out: the mint failed, or the issue was abandoned.
    Failed,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Pending => "pending",
            LeaseState::Active => "active",
            LeaseState::Revoked => "revoked",
            LeaseState::Expired => "expired",
            LeaseState::Failed => "failed",
        }
    }

    pub fn is_live(self) -> bool {
        matches!(self, LeaseState::Pending | LeaseState::Active)
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => LeaseState::Pending,
            "active" => LeaseState::Active,
            "revoked" => LeaseState::Revoked,
            "expired" => LeaseState::Expired,
            "failed" => LeaseState::Failed,
            other => return Err(StoreError::Corrupt(format!("lease state {other:?}"))),
        })
    }
}

/// One lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub id: String,
    pub issuer: String,
    pub subject: String,
    pub role: String,
    pub driver: String,
    pub access_key_id: Option<String>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub state: LeaseState,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<String>,
    /// Taken through break-glass (`POST /v1/break-glass`), not an OIDC decision.
    pub break_glass: bool,
    /// A break-glass lease's stated reason and ticket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass_ticket: Option<String>,
}

/// Which leases a query or a revocation covers. Every field narrows; the default
/// matches every lease.
#[derive(Clone, Debug, Default)]
pub struct LeaseFilter {
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub role: Option<String>,
    /// Only leases that are pending or active.
    pub live_only: bool,
    /// Only leases in this state.
    pub state: Option<LeaseState>,
    /// Only leases minted by this driver (its configured name).
    pub driver: Option<String>,
    /// Only leases that expire before this time.
    pub expiring_before: Option<Timestamp>,
    /// Only break-glass leases (`Some(true)`) or only the others (`Some(false)`).
    pub break_glass: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    Subject,
    Role,
}

impl RevocationKind {
    fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Subject => "subject",
            RevocationKind::Role => "role",
        }
    }
}

macro_rules! lease_columns {
    () => {
        "id, issuer, subject, role, driver, access_key_id, issued_at, expires_at, state, ended_at, end_reason, \
         break_glass, break_glass_reason, break_glass_ticket"
    };
}

fn lease_from_row(row: &AnyRow) -> Result<Lease> {
    let state: String = row.try_get("state")?;
    let ended_at: Option<i64> = row.try_get("ended_at")?;
    Ok(Lease {
        id: row.try_get("id")?,
        issuer: row.try_get("issuer")?,
        subject: row.try_get("subject")?,
        role: row.try_get("role")?,
        driver: row.try_get("driver")?,
        access_key_id: row.try_get("access_key_id")?,
        issued_at: Timestamp::from_unix_millis(row.try_get("issued_at")?),
        expires_at: Timestamp::from_unix_millis(row.try_get("expires_at")?),
        state: LeaseState::parse(&state)?,
        ended_at: ended_at.map(Timestamp::from_unix_millis),
        end_reason: row.try_get("end_reason")?,
        break_glass: row.try_get::<i64, _>("break_glass")? != 0,
        break_glass_reason: row.try_get("break_glass_reason")?,
        break_glass_ticket: row.try_get("break_glass_ticket")?,
    })
}

pub struct LeaseStore {
    pool: AnyPool,
    backend: &'static str,
    /// Serialises writers inside this process: SQLite allows one writer at a time, and
    /// queueing here beats its lock-and-sleep. Across processes (a shared PostgreSQL),
    /// the conditional updates below do the same job.
    write: Mutex<()>,
}

impl std::fmt::Debug for LeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl LeaseStore {
    /// Connects to `url` (`sqlite://...` or `postgres://...`) and applies vend's
    /// migrations, adopting the lease tables of a database of the previous layout.
    pub async fn open(url: &str) -> Result<Self> {
        let (pool, backend) = artifactstore_db::connect(
            url,
            artifactstore_db::PoolSize {
                sqlite: 4,
                postgres: 8,
            },
        )
        .await?;
        migrator().run(&pool).await?;
        Ok(LeaseStore {
            pool,
            backend: backend.as_str(),
            write: Mutex::new(()),
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

    /// Records a new lease (normally `Pending`, before the driver mints).
    pub async fn insert_lease(&self, lease: &Lease) -> Result<()> {
        let _guard = self.write.lock().await;
        sqlx::query(concat!(
            "INSERT INTO leases (",
            lease_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&lease.id)
        .bind(&lease.issuer)
        .bind(&lease.subject)
        .bind(&lease.role)
        .bind(&lease.driver)
        .bind(lease.access_key_id.clone())
        .bind(lease.issued_at.unix_millis())
        .bind(lease.expires_at.unix_millis())
        .bind(lease.state.as_str())
        .bind(lease.ended_at.map(Timestamp::unix_millis))
        .bind(lease.end_reason.clone())
        .bind(i64::from(lease.break_glass))
        .bind(lease.break_glass_reason.clone())
        .bind(lease.break_glass_ticket.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a pending lease active once the driver has minted its credential.
    /// Returns false when the lease was no longer pending (revoked meanwhile).
    pub async fn activate_lease(
        &self,
        id: &str,
        access_key_id: &str,
        expires_at: Timestamp,
    ) -> Result<bool> {
        let _guard = self.write.lock().await;
        let done = sqlx::query(
            "UPDATE leases SET state = 'active', access_key_id = $2, expires_at = $3 \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(access_key_id)
        .bind(expires_at.unix_millis())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Ends a lease that is still pending or active. Returns the lease as it was when
    /// it was live, or `None` when it had already ended (or never existed).
    pub async fn end_lease(
        &self,
        id: &str,
        state: LeaseState,
        reason: &str,
        at: Timestamp,
    ) -> Result<Option<Lease>> {
        self.end_lease_from(id, false, state, reason, at).await
    }

    /// Ends a lease still live — or, with `only_pending`, still pending — in one
    /// conditional update, so that of two writers (an issue activating it, a
    /// revocation or reconciliation ending it) exactly one wins. Returns the lease as
    /// it was, or `None` when the condition no longer held.
    async fn end_lease_from(
        &self,
        id: &str,
        only_pending: bool,
        state: LeaseState,
        reason: &str,
        at: Timestamp,
    ) -> Result<Option<Lease>> {
        let _guard = self.write.lock().await;
        let before = self.lease(id).await?;
        let done = sqlx::query(
            "UPDATE leases SET state = $2, ended_at = $3, end_reason = $4 \
             WHERE id = $1 AND (state = 'pending' OR ($5 = 0 AND state = 'active'))",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(at.unix_millis())
        .bind(reason)
        .bind(i64::from(only_pending))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(if done == 1 { before } else { None })
    }

    pub async fn lease(&self, id: &str) -> Result<Option<Lease>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            lease_columns!(),
            " FROM leases WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    /// Leases matching `filter`, newest first, at most `limit`.
    pub async fn leases(&self, filter: &LeaseFilter, limit: u32) -> Result<Vec<Lease>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            lease_columns!(),
            " FROM leases WHERE ($1 IS NULL OR issuer = $1) AND ($2 IS NULL OR subject = $2) \
              AND ($3 IS NULL OR role = $3) \
              AND ($4 = 0 OR state IN ('pending', 'active')) \
              AND ($5 IS NULL OR state = $5) AND ($6 IS NULL OR driver = $6) \
              AND ($7 IS NULL OR expires_at < $7) AND ($8 IS NULL OR break_glass = $8) \
             ORDER BY issued_at DESC, id LIMIT $9"
        ))
        .bind(filter.issuer.clone())
        .bind(filter.subject.clone())
        .bind(filter.role.clone())
        .bind(i64::from(filter.live_only))
        .bind(filter.state.map(LeaseState::as_str))
        .bind(filter.driver.clone())
        .bind(filter.expiring_before.map(Timestamp::unix_millis))
        .bind(filter.break_glass.map(i64::from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// Live (pending or active) leases whose expiry is at or before `now`.
    pub async fn leases_past_expiry(&self, now: Timestamp, limit: u32) -> Result<Vec<Lease>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            lease_columns!(),
            " FROM leases WHERE state IN ('pending', 'active') AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2"
        ))
        .bind(now.unix_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// Live (pending or active) leases matching `filter`'s issuer, subject and role.
    pub async fn count_live(&self, filter: &LeaseFilter) -> Result<u64> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM leases WHERE ($1 IS NULL OR issuer = $1) \
             AND ($2 IS NULL OR subject = $2) AND ($3 IS NULL OR role = $3) \
             AND state IN ('pending', 'active')",
        )
        .bind(filter.issuer.clone())
        .bind(filter.subject.clone())
        .bind(filter.role.clone())
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(n.max(0) as u64)
    }

    pub async fn live_lease_count(&self) -> Result<u64> {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM leases WHERE state IN ('pending', 'active')")
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
        Ok(n.max(0) as u64)
    }

    /// Records a standing revocation. Idempotent, also between processes on one
    /// database: the first reason is kept (`ON CONFLICT DO NOTHING`, which SQLite and
    /// PostgreSQL both speak).
    pub async fn add_revocation(
        &self,
        kind: RevocationKind,
        issuer: &str,
        value: &str,
        reason: &str,
        at: Timestamp,
    ) -> Result<()> {
        let _guard = self.write.lock().await;
        sqlx::query(
            "INSERT INTO revocations (kind, issuer, value, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, issuer, value) DO NOTHING",
        )
        .bind(kind.as_str())
        .bind(issuer)
        .bind(value)
        .bind(reason)
        .bind(at.unix_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lifts a standing revocation; returns whether one existed.
    pub async fn remove_revocation(
        &self,
        kind: RevocationKind,
        issuer: &str,
        value: &str,
    ) -> Result<bool> {
        let _guard = self.write.lock().await;
        let n =
            sqlx::query("DELETE FROM revocations WHERE kind = $1 AND issuer = $2 AND value = $3")
                .bind(kind.as_str())
                .bind(issuer)
                .bind(value)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(n > 0)
    }

    /// Whether `kind`/`value` (of `issuer`, for subjects) is revoked.
    pub async fn is_revoked(
        &self,
        kind: RevocationKind,
        issuer: &str,
        value: &str,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM revocations WHERE kind = $1 AND issuer = $2 AND value = $3",
        )
        .bind(kind.as_str())
        .bind(issuer)
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}

mod reconcile;
#[cfg(test)]
mod tests;
