//! Credential leases and revocations of the vending service.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Error, Index, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Recorded before the driver mints; becomes active or failed.
    Pending,
    Active,
    Revoked,
    Expired,
    /// The driver could not mint; nothing was handed out.
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

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => LeaseState::Pending,
            "active" => LeaseState::Active,
            "revoked" => LeaseState::Revoked,
            "expired" => LeaseState::Expired,
            "failed" => LeaseState::Failed,
            other => return Err(Error::Corrupt(format!("lease state {other:?}"))),
        })
    }
}

/// One lease. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub id: String,
    pub issuer: String,
    pub subject: String,
    pub role: String,
    pub driver: String,
    pub access_key_id: Option<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub state: LeaseState,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
}

/// Which leases a query or a revocation covers.
#[derive(Clone, Debug, Default)]
pub struct LeaseFilter {
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub role: Option<String>,
    /// Only leases that are pending or active.
    pub live_only: bool,
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
        "id, issuer, subject, role, driver, access_key_id, issued_at, expires_at, state, ended_at, end_reason"
    };
}

fn lease_from_row(row: &AnyRow) -> Result<Lease> {
    let state: String = row.try_get("state")?;
    Ok(Lease {
        id: row.try_get("id")?,
        issuer: row.try_get("issuer")?,
        subject: row.try_get("subject")?,
        role: row.try_get("role")?,
        driver: row.try_get("driver")?,
        access_key_id: row.try_get("access_key_id")?,
        issued_at: row.try_get("issued_at")?,
        expires_at: row.try_get("expires_at")?,
        state: LeaseState::parse(&state)?,
        ended_at: row.try_get("ended_at")?,
        end_reason: row.try_get("end_reason")?,
    })
}

impl Index {
    /// Records a new lease (normally `Pending`, before the driver mints).
    pub async fn insert_lease(&self, lease: &Lease) -> Result<()> {
        let _guard = self.write.lock().await;
        sqlx::query(concat!(
            "INSERT INTO leases (",
            lease_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&lease.id)
        .bind(&lease.issuer)
        .bind(&lease.subject)
        .bind(&lease.role)
        .bind(&lease.driver)
        .bind(lease.access_key_id.clone())
        .bind(lease.issued_at)
        .bind(lease.expires_at)
        .bind(lease.state.as_str())
        .bind(lease.ended_at)
        .bind(lease.end_reason.clone())
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
        expires_at: i64,
    ) -> Result<bool> {
        let _guard = self.write.lock().await;
        let done = sqlx::query(
            "UPDATE leases SET state = 'active', access_key_id = $2, expires_at = $3 \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(access_key_id)
        .bind(expires_at)
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
        at: i64,
    ) -> Result<Option<Lease>> {
        let _guard = self.write.lock().await;
        let before = self.lease(id).await?;
        let done = sqlx::query(
            "UPDATE leases SET state = $2, ended_at = $3, end_reason = $4 \
             WHERE id = $1 AND state IN ('pending', 'active')",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(at)
        .bind(reason)
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
             ORDER BY issued_at DESC, id LIMIT $5"
        ))
        .bind(filter.issuer.clone())
        .bind(filter.subject.clone())
        .bind(filter.role.clone())
        .bind(i64::from(filter.live_only))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// Live (pending or active) leases whose expiry is at or before `now`.
    pub async fn leases_past_expiry(&self, now: i64, limit: u32) -> Result<Vec<Lease>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            lease_columns!(),
            " FROM leases WHERE state IN ('pending', 'active') AND expires_at <= $1 \
             ORDER BY expires_at LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease_from_row).collect()
    }

    pub async fn live_lease_count(&self) -> Result<u64> {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM leases WHERE state IN ('pending', 'active')")
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
        Ok(n as u64)
    }

    /// Records a standing revocation (idempotent: the first reason is kept).
    pub async fn add_revocation(
        &self,
        kind: RevocationKind,
        issuer: &str,
        value: &str,
        reason: &str,
        at: i64,
    ) -> Result<()> {
        let _guard = self.write.lock().await;
        crate::retry_conflicts(|| async {
            if !self.is_revoked(kind, issuer, value).await? {
                sqlx::query(
                    "INSERT INTO revocations (kind, issuer, value, reason, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(kind.as_str())
                .bind(issuer)
                .bind(value)
                .bind(reason)
                .bind(at)
                .execute(&self.pool)
                .await?;
            }
            Ok(())
        })
        .await
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
