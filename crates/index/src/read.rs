//! Reads: lookups, listings, the event log and what fsck needs.

use artifactstore_model::{Digest, FilePath, Name, Namespace, Version};
use sqlx::Row;

use crate::records::{BlobHolder, digest_from, event_from_row, file_from_row, version_from_row};
use crate::{BlobRef, Error, Event, Index, Result, VersionId, VersionRecord};
use artifactstore_model::api::FileEntry;

impl Index {
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

    pub async fn file(&self, id: &VersionId, path: &FilePath) -> Result<Option<FileEntry>> {
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
    pub async fn files(&self, id: &VersionId) -> Result<Vec<FileEntry>> {
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

    /// One page of a version's files, ordered by path: at most `limit` files whose
    /// path sorts after `after`.
    pub async fn files_page(
        &self,
        id: &VersionId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FileEntry>> {
        let rows = sqlx::query(
            "SELECT path, digest, size, media_type, created_at FROM files \
             WHERE namespace = $1 AND name = $2 AND version = $3 AND path > $4 \
             ORDER BY path LIMIT $5",
        )
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(file_from_row).collect()
    }

    /// How many files a version holds and their total size in bytes.
    pub async fn file_totals(&self, id: &VersionId) -> Result<(u64, u64)> {
        // SUM of a BIGINT is NUMERIC on PostgreSQL: cast it back.
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes FROM files \
             WHERE namespace = $1 AND name = $2 AND version = $3",
        )
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        let bytes: i64 = row.try_get("bytes")?;
        Ok((n.max(0) as u64, bytes.max(0) as u64))
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
            "SELECT seq, kind, namespace, name, version, path, digest, size, media_type, at, detail FROM events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Events with `seq < before`, newest first: the end of the log, for a follower
    /// that starts from now and shows what just happened.
    pub async fn events_before(&self, before: i64, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT seq, kind, namespace, name, version, path, digest, size, media_type, at, detail FROM events \
             WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The names (namespace and name) of live versions holding `digest`, in order after
    /// `after`, at most `limit` of them: the server serves a blob only to a caller who
    /// may read one of them. A name that holds it many times is one holder.
    pub async fn live_blob_holders(
        &self,
        digest: &Digest,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<BlobHolder>> {
        let (after_ns, after_name) = after.unwrap_or(("", ""));
        let rows = sqlx::query(
            "SELECT f.namespace, f.name, MIN(f.size) AS size, MIN(f.media_type) AS media_type \
             FROM files f JOIN versions v \
             ON v.namespace = f.namespace AND v.name = f.name AND v.version = f.version \
             WHERE f.digest = $1 AND v.state <> 'deleted' \
             AND (f.namespace > $2 OR (f.namespace = $2 AND f.name > $3)) \
             GROUP BY f.namespace, f.name ORDER BY f.namespace, f.name LIMIT $4",
        )
        .bind(digest.to_string())
        .bind(after_ns)
        .bind(after_name)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let size: i64 = r.try_get("size")?;
                Ok(BlobHolder {
                    namespace: r.try_get("namespace")?,
                    name: r.try_get("name")?,
                    size: size as u64,
                    media_type: r.try_get("media_type")?,
                })
            })
            .collect()
    }

    /// Blobs that files of live versions reference, in digest order, after `after` (for
    /// fsck).
    pub async fn referenced_blobs(
        &self,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRef>> {
        let rows = sqlx::query(
            // Files of tombstones do not count: garbage collection frees their blobs.
            "SELECT f.digest AS digest, MIN(f.size) AS size, COUNT(*) AS files FROM files f \
             JOIN versions v ON v.namespace = f.namespace AND v.name = f.name AND v.version = f.version \
             WHERE v.state <> 'deleted' AND f.digest > $1 \
             GROUP BY f.digest ORDER BY f.digest LIMIT $2",
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
            "SELECT f.namespace, f.name, f.version, f.path FROM files f JOIN versions v \
             ON v.namespace = f.namespace AND v.name = f.name AND v.version = f.version \
             WHERE f.digest = $1 AND v.state <> 'deleted' ORDER BY f.namespace, f.name, f.version, f.path",
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
