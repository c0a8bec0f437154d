//! What a namespace holds (`namespace_usage`), charged and released in the same
//! transaction as the rows that change it, and the quota a write is checked against.

use sqlx::{Any, Row, Transaction};

use crate::records::VersionId;
use crate::{Error, Index, Result};

/// What a namespace holds in live versions: logical bytes (every file, shared blobs
/// counted each time) and versions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub versions: u64,
}

/// The most a namespace may hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    pub max_bytes: Option<u64>,
    pub max_versions: Option<u64>,
}

impl Quota {
    /// Why adding `bytes` (and a version, when `new_version`) to `usage` would pass the
    /// quota; `None` when it would not.
    pub fn refusal(&self, usage: Usage, bytes: u64, new_version: bool) -> Option<String> {
        if let Some(max) = self.max_bytes
            && usage.bytes.saturating_add(bytes) > max
        {
            return Some(format!(
                "the namespace holds {} bytes of its {max}; {bytes} more do not fit",
                usage.bytes
            ));
        }
        if let Some(max) = self.max_versions
            && new_version
            && usage.versions >= max
        {
            return Some(format!(
                "the namespace holds {} versions, its most",
                usage.versions
            ));
        }
        None
    }
}

fn usage_from(row: &sqlx::any::AnyRow) -> Result<Usage> {
    let bytes: i64 = row.try_get("bytes")?;
    let versions: i64 = row.try_get("versions")?;
    Ok(Usage {
        bytes: bytes.max(0) as u64,
        versions: versions.max(0) as u64,
    })
}

/// Adds a file of `bytes` (and a version, when `new_version`) to its namespace inside
/// `tx`, refusing with [`Error::QuotaExceeded`] what `quota` does not allow. The usage
/// row is updated before it is read, so concurrent writers to one namespace queue on
/// its lock.
pub(crate) async fn charge(
    tx: &mut Transaction<'_, Any>,
    namespace: &str,
    bytes: u64,
    new_version: bool,
    quota: Option<&Quota>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO namespace_usage (namespace, bytes, versions) VALUES ($1, 0, 0) \
         ON CONFLICT (namespace) DO NOTHING",
    )
    .bind(namespace)
    .execute(&mut **tx)
    .await?;
    let before = usage_from(
        &sqlx::query(
            "UPDATE namespace_usage SET bytes = bytes + $1, versions = versions + $2 \
             WHERE namespace = $3 RETURNING bytes - $1 AS bytes, versions - $2 AS versions",
        )
        .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
        .bind(i64::from(new_version))
        .bind(namespace)
        .fetch_one(&mut **tx)
        .await?,
    )?;
    if let Some(what) = quota.and_then(|q| q.refusal(before, bytes, new_version)) {
        return Err(Error::QuotaExceeded { what });
    }
    Ok(())
}

/// Takes a version that becomes a tombstone, with its files, off its namespace.
pub(crate) async fn release(tx: &mut Transaction<'_, Any>, id: &VersionId) -> Result<()> {
    sqlx::query(
        "UPDATE namespace_usage SET versions = versions - 1, bytes = bytes - \
         (SELECT COALESCE(SUM(size), 0) FROM files WHERE namespace = $1 AND name = $2 AND version = $3) \
         WHERE namespace = $1",
    )
    .bind(id.namespace.as_str())
    .bind(id.name.as_str())
    .bind(id.version.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Index {
    /// What `namespace` holds in live versions.
    pub async fn usage(&self, namespace: &str) -> Result<Usage> {
        let row = sqlx::query("SELECT bytes, versions FROM namespace_usage WHERE namespace = $1")
            .bind(namespace)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(usage_from)
            .transpose()
            .map(Option::unwrap_or_default)
    }
}
