use std::path::Path;

use sqlx::Connection as _;

use super::*;

const ISSUER: &str = "https://issuer.example";

/// Every test runs on SQLite, and on PostgreSQL too when CI provides one.
pub(crate) async fn databases() -> Vec<(tempfile::TempDir, String)> {
    // Tests that connect before any store opens (the old layouts) need the drivers too.
    sqlx::any::install_default_drivers();
    artifactstore_db::testing::databases("vend").await
}

fn shown(url: &str) -> &str {
    url.split('@').next_back().unwrap_or(url)
}

fn ms(n: i64) -> Timestamp {
    Timestamp::from_unix_millis(n)
}

fn lease(id: &str, subject: &str, role: &str, expires_at: i64) -> Lease {
    Lease {
        id: id.into(),
        issuer: ISSUER.into(),
        subject: subject.into(),
        role: role.into(),
        driver: "garage".into(),
        access_key_id: None,
        issued_at: ms(1_000),
        expires_at: ms(expires_at),
        state: LeaseState::Pending,
        ended_at: None,
        end_reason: None,
        break_glass: false,
        break_glass_reason: None,
        break_glass_ticket: None,
    }
}

async fn table_names(url: &str) -> Vec<String> {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let sql = if url.starts_with("sqlite:") {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    } else {
        "SELECT CAST(table_name AS TEXT) AS name FROM information_schema.tables \
         WHERE table_schema = current_schema() ORDER BY table_name"
    };
    let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
    rows.iter().map(|r| r.try_get("name").unwrap()).collect()
}

#[tokio::test]
async fn leases_move_from_pending_to_an_end_once() {
    for (_dir, url) in databases().await {
        eprintln!("database: {}", shown(&url));
        lifecycle(LeaseStore::open(&url).await.unwrap()).await;
    }
}

async fn lifecycle(store: LeaseStore) {
    for l in [
        lease("a", "alice", "ci-writer", 5_000),
        lease("b", "bob", "reader", 9_000),
        lease("c", "alice", "reader", 2_000),
    ] {
        store.insert_lease(&l).await.unwrap();
    }
    assert!(store.activate_lease("a", "GKa", ms(6_000)).await.unwrap());
    assert!(
        !store.activate_lease("a", "GKx", ms(6_000)).await.unwrap(),
        "only pending leases activate"
    );
    let a = store.lease("a").await.unwrap().unwrap();
    assert_eq!(
        (a.state, a.access_key_id.as_deref(), a.expires_at),
        (LeaseState::Active, Some("GKa"), ms(6_000))
    );
    assert_eq!(store.live_lease_count().await.unwrap(), 3);

    // Past expiry at 6 000: a (active, 6 000) and c (pending, 2 000), oldest first.
    let due: Vec<String> = store
        .leases_past_expiry(ms(6_000), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(due, ["c", "a"]);

    let ended = store
        .end_lease("a", LeaseState::Expired, "expired", ms(7_000))
        .await
        .unwrap();
    assert_eq!(
        ended.unwrap().state,
        LeaseState::Active,
        "returns the lease as it was"
    );
    assert!(
        store
            .end_lease("a", LeaseState::Revoked, "again", ms(8_000))
            .await
            .unwrap()
            .is_none(),
        "ends once"
    );
    let a = store.lease("a").await.unwrap().unwrap();
    assert_eq!(
        (a.state, a.ended_at, a.end_reason.as_deref()),
        (LeaseState::Expired, Some(ms(7_000)), Some("expired"))
    );
    // A pending lease revoked before its mint is recorded cannot become active.
    let revoked = store
        .end_lease("c", LeaseState::Revoked, "subject revoked", ms(7_500))
        .await
        .unwrap();
    assert_eq!(revoked.unwrap().state, LeaseState::Pending);
    assert!(!store.activate_lease("c", "GKc", ms(9_000)).await.unwrap());
    assert_eq!(store.lease("c").await.unwrap().unwrap().access_key_id, None);

    let alice = LeaseFilter {
        subject: Some("alice".into()),
        ..Default::default()
    };
    assert_eq!(store.leases(&alice, 10).await.unwrap().len(), 2);
    let live_readers = LeaseFilter {
        role: Some("reader".into()),
        live_only: true,
        ..Default::default()
    };
    let live: Vec<String> = store
        .leases(&live_readers, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(live, ["b"]);

    let subject = RevocationKind::Subject;
    assert!(!store.is_revoked(subject, ISSUER, "alice").await.unwrap());
    store
        .add_revocation(subject, ISSUER, "alice", "incident", ms(1))
        .await
        .unwrap();
    store
        .add_revocation(subject, ISSUER, "alice", "again", ms(2))
        .await
        .unwrap();
    assert!(store.is_revoked(subject, ISSUER, "alice").await.unwrap());
    assert!(
        !store
            .is_revoked(subject, "https://other.example", "alice")
            .await
            .unwrap()
    );
    assert!(
        !store
            .is_revoked(RevocationKind::Role, "", "alice")
            .await
            .unwrap()
    );
    assert!(
        store
            .remove_revocation(subject, ISSUER, "alice")
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_revocation(subject, ISSUER, "alice")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn lease_queries_narrow_by_every_filter() {
    for (_dir, url) in databases().await {
        eprintln!("database: {}", shown(&url));
        filters(LeaseStore::open(&url).await.unwrap()).await;
    }
}

async fn filters(store: LeaseStore) {
    let mut glass = lease("g", "break-glass", "ci-writer", 3_000);
    glass.break_glass = true;
    glass.break_glass_reason = Some("incident 42".into());
    glass.break_glass_ticket = Some("INC-42".into());
    let mut sts = lease("s", "alice", "reader", 8_000);
    sts.driver = "ceph".into();
    for l in [lease("a", "alice", "ci-writer", 5_000), sts, glass] {
        store.insert_lease(&l).await.unwrap();
    }
    assert!(store.activate_lease("a", "GKa", ms(5_000)).await.unwrap());
    let ids = |filter: LeaseFilter| {
        let store = &store;
        async move {
            let mut ids: Vec<String> = store
                .leases(&filter, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let by_state = LeaseFilter {
        state: Some(LeaseState::Active),
        ..Default::default()
    };
    assert_eq!(ids(by_state).await, ["a"]);
    let by_driver = LeaseFilter {
        driver: Some("ceph".into()),
        ..Default::default()
    };
    assert_eq!(ids(by_driver).await, ["s"]);
    let expiring = LeaseFilter {
        expiring_before: Some(ms(5_000)),
        ..Default::default()
    };
    assert_eq!(ids(expiring).await, ["g"], "before, not at");
    let break_glass = LeaseFilter {
        break_glass: Some(true),
        ..Default::default()
    };
    assert_eq!(ids(break_glass).await, ["g"]);
    let ordinary = LeaseFilter {
        break_glass: Some(false),
        subject: Some("alice".into()),
        state: Some(LeaseState::Pending),
        ..Default::default()
    };
    assert_eq!(ids(ordinary).await, ["s"]);
    let found = store.leases_by_id(&["a", "g", "nope"]).await.unwrap();
    assert_eq!(found.keys().collect::<Vec<_>>(), ["a", "g"]);
    assert_eq!(found["a"].state, LeaseState::Active);
    // Reconciliation fails only pending leases; an active one is left to its holder.
    assert!(
        store
            .fail_pending("a", "stuck", ms(9_000))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .fail_pending("s", "stuck", ms(9_000))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.lease("s").await.unwrap().unwrap().state,
        LeaseState::Failed
    );
    let g = store.lease("g").await.unwrap().unwrap();
    assert!(g.break_glass);
    assert_eq!(
        (
            g.break_glass_reason.as_deref(),
            g.break_glass_ticket.as_deref()
        ),
        (Some("incident 42"), Some("INC-42"))
    );
}

#[tokio::test]
async fn a_new_vend_database_holds_only_vend_tables() {
    for (_dir, url) in databases().await {
        let store = LeaseStore::open(&url).await.unwrap();
        store.close().await;
        // Opening again finds its migration applied and changes nothing.
        LeaseStore::open(&url).await.unwrap().close().await;
        assert_eq!(
            table_names(&url).await,
            [MIGRATIONS_TABLE, "leases", "revocations"],
            "{}",
            shown(&url)
        );
    }
}

/// Builds a database the way the previous layout did: the artifact index's old
/// migrations (artifact tables, then leases as migration 2), recorded in
/// `_sqlx_migrations` with their checksums.
async fn old_layout(url: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/old-layout");
    let old = Migrator::new(dir.as_path()).await.unwrap();
    assert_eq!(old.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2]);
    let pool = sqlx::any::AnyPoolOptions::new().connect(url).await.unwrap();
    old.run(&pool).await.unwrap();
    pool.close().await;
}

/// What a service of the previous layout left in its database: an active lease, a
/// pending one (a crash mid-issue), an ended one, and a standing revocation.
async fn old_rows(url: &str) {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    for (id, state, key, ended) in [
        ("old-active", "active", Some("GKold"), None),
        ("old-pending", "pending", None, None),
        ("old-revoked", "revoked", Some("GKgone"), Some(4_000_i64)),
    ] {
        sqlx::query(
            "INSERT INTO leases (id, issuer, subject, role, driver, access_key_id, issued_at, \
             expires_at, state, ended_at, end_reason) \
             VALUES ($1, $2, 'alice', 'ci-writer', 'garage', $3, 1000, 5000, $4, $5, $6)",
        )
        .bind(id)
        .bind(ISSUER)
        .bind(key)
        .bind(state)
        .bind(ended)
        .bind(ended.map(|_| "incident"))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO revocations (kind, issuer, value, reason, created_at) \
         VALUES ('role', '', 'reader', 'retired', 900)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
}

async fn applied(url: &str, table: &str) -> Vec<i64> {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {table} ORDER BY version"
    )))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.iter().map(|r| r.try_get("version").unwrap()).collect()
}

/// A vend database of the previous layout (opened through the artifact index, so it
/// holds artifact tables, `_sqlx_migrations` rows 1 and 2, and the lease data) opens
/// with the current code, keeps every lease and revocation, and they work.
#[tokio::test]
async fn an_old_layout_vend_database_is_adopted_with_its_leases() {
    for (_dir, url) in databases().await {
        eprintln!("database: {}", shown(&url));
        old_layout(&url).await;
        old_rows(&url).await;

        let store = LeaseStore::open(&url).await.unwrap();
        let active = store.lease("old-active").await.unwrap().unwrap();
        assert_eq!(
            (active.state, active.access_key_id.as_deref()),
            (LeaseState::Active, Some("GKold"))
        );
        assert_eq!(
            (active.issued_at, active.expires_at),
            (ms(1_000), ms(5_000))
        );
        let revoked = store.lease("old-revoked").await.unwrap().unwrap();
        assert_eq!(
            (revoked.state, revoked.ended_at),
            (LeaseState::Revoked, Some(ms(4_000)))
        );
        assert_eq!(store.live_lease_count().await.unwrap(), 2);
        assert!(
            store
                .is_revoked(RevocationKind::Role, "", "reader")
                .await
                .unwrap()
        );
        // Usable, not just readable: the reaper's query, ending, new rows.
        let due: Vec<String> = store
            .leases_past_expiry(ms(6_000), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(due.len(), 2, "{due:?}");
        assert!(
            store
                .end_lease("old-active", LeaseState::Expired, "expired", ms(6_000))
                .await
                .unwrap()
                .is_some()
        );
        store
            .insert_lease(&lease("new", "bob", "ci-writer", 9_000))
            .await
            .unwrap();
        assert!(
            store
                .activate_lease("new", "GKnew", ms(9_000))
                .await
                .unwrap()
        );
        assert!(
            store
                .remove_revocation(RevocationKind::Role, "", "reader")
                .await
                .unwrap()
        );
        store.close().await;

        // The index's bookkeeping is untouched; vend's is its own.
        assert_eq!(applied(&url, "_sqlx_migrations").await, [1, 2]);
        assert_eq!(applied(&url, MIGRATIONS_TABLE).await, [1, 2, 3]);
        // And reopening (a restart) is a no-op that keeps everything.
        let store = LeaseStore::open(&url).await.unwrap();
        assert_eq!(
            store
                .leases(&LeaseFilter::default(), 10)
                .await
                .unwrap()
                .len(),
            4
        );
        store.close().await;
    }
}

/// An artifact database of the previous layout (its `_sqlx_migrations` has rows 1 and
/// 2; it holds lease tables) opens with the current index, whose migrations no longer
/// include 2; the lease tables are left alone (they may be vend's, in a shared
/// database), and vend can open the same database beside it.
#[tokio::test]
async fn an_old_layout_artifact_database_still_opens_and_keeps_lease_tables() {
    for (_dir, url) in databases().await {
        eprintln!("database: {}", shown(&url));
        old_layout(&url).await;
        old_rows(&url).await;

        let index = artifactstore_index::Index::open(&url).await.unwrap();
        index.ping().await.unwrap();
        index.close().await;
        let tables = table_names(&url).await;
        for t in ["leases", "revocations", "versions", "files", "events"] {
            assert!(tables.iter().any(|n| n == t), "{t} missing: {tables:?}");
        }
        assert!(applied(&url, "_sqlx_migrations").await.starts_with(&[1, 2]));

        // Shared database: vend adopts the tables; the index opens again after it.
        let store = LeaseStore::open(&url).await.unwrap();
        assert_eq!(store.live_lease_count().await.unwrap(), 2);
        store.close().await;
        let index = artifactstore_index::Index::open(&url).await.unwrap();
        index.close().await;
    }
}

/// The current layout: a new artifact database holds no lease tables, and on one
/// shared database each migrator keeps to its own table, in either order.
#[tokio::test]
async fn index_and_vend_share_a_new_database() {
    for (_dir, url) in databases().await {
        let index = || async { artifactstore_index::Index::open(&url).await.unwrap() };
        index().await.close().await;
        let tables = table_names(&url).await;
        assert!(
            !tables.iter().any(|t| t == "leases" || t == "revocations"),
            "{tables:?}"
        );
        LeaseStore::open(&url).await.unwrap().close().await;
        index().await.close().await;
        LeaseStore::open(&url).await.unwrap().close().await;
        assert_eq!(applied(&url, MIGRATIONS_TABLE).await, [1, 2, 3]);
        assert!(!applied(&url, "_sqlx_migrations").await.contains(&2));
    }
}
