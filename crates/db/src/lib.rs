//! How artifact-store connects to SQL: one function for every service that owns a
//! schema (the artifact index, vend's lease store), so that SQLite gets the same
//! durability settings everywhere and a URL means the same thing to both.
//!
//! Each service keeps its own schema and migrator; this crate holds no tables.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

/// Which database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Backend {
        if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Connections a pool may open, per backend. SQLite has one writer at a time, so a
/// few connections suffice; PostgreSQL serves several replicas' worth.
#[derive(Clone, Copy, Debug)]
pub struct PoolSize {
    pub sqlite: u32,
    pub postgres: u32,
}

/// Connects to `url` (`sqlite://...` or `postgres://...`). SQLite runs in WAL mode
/// with `synchronous = FULL`: a committed row survives power loss, which is what an
/// acknowledged upload and a recorded lease both promise.
pub async fn connect(url: &str, size: PoolSize) -> Result<(AnyPool, Backend), sqlx::Error> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of(url);
    let is_sqlite = backend == Backend::Sqlite;
    let pool = AnyPoolOptions::new()
        .max_connections(if is_sqlite { size.sqlite } else { size.postgres })
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if is_sqlite {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;",
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await?;
    Ok((pool, backend))
}

/// The SQLite URL of a database file (characters that mean something in a URL are
/// escaped; the file is created when missing).
pub fn sqlite_url(path: &std::path::Path) -> String {
    let p = path
        .to_string_lossy()
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    format!("sqlite://{p}?mode=rwc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_paths_are_escaped() {
        assert_eq!(Backend::of("sqlite:///x.db").as_str(), "sqlite");
        assert_eq!(Backend::of("postgres://u@h/db").as_str(), "postgres");
        assert_eq!(
            sqlite_url(std::path::Path::new("/a/b?c#d%e.db")),
            "sqlite:///a/b%3Fc%23d%25e.db?mode=rwc"
        );
    }
}

/// Whether a database error may pass by itself (a full pool, a broken connection), so
/// that the operation is worth trying again.
pub fn is_transient(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))
}

/// Databases for tests (feature `testing`, enabled only by dev-dependencies).
#[cfg(feature = "testing")]
pub mod testing {
    use sqlx::Connection;

    /// Creates a fresh, uniquely named database on the PostgreSQL server that
    /// `admin_url` reaches and returns its URL.
    pub async fn create_postgres_database(admin_url: &str, prefix: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        sqlx::any::install_default_drivers();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let db = format!(
            "{prefix}{}_{nanos}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = sqlx::AnyConnection::connect(admin_url)
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        let base = admin_url.rsplit_once('/').expect("URL has a database").0;
        format!("{base}/{db}")
    }

    /// The databases every storage test runs on, each fresh: a SQLite file in a new
    /// temporary directory (which must outlive the URL), and a new PostgreSQL database
    /// when `ARTIFACTSTORE_TEST_POSTGRES_URL` names a server (CI starts one with
    /// scripts/with-postgres.sh).
    pub async fn databases(prefix: &str) -> Vec<(tempfile::TempDir, String)> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let sqlite = super::sqlite_url(&dir.path().join(format!("{prefix}.db")));
        let mut urls = vec![(dir, sqlite)];
        if let Ok(admin) = std::env::var("ARTIFACTSTORE_TEST_POSTGRES_URL") {
            let url = create_postgres_database(&admin, prefix).await;
            urls.push((tempfile::tempdir().expect("a temporary directory"), url));
        }
        urls
    }
}
