use super::*;
use artifactstore_model::{FilePath, Name, Namespace, Version, VersionState};

pub(crate) fn id(v: &str) -> VersionId {
    VersionId {
        namespace: Namespace::parse("ci").unwrap(),
        name: Name::parse("tck").unwrap(),
        version: Version::parse(v).unwrap(),
    }
}

pub(crate) fn file(path: &str, data: &[u8]) -> NewFile {
    NewFile {
        path: FilePath::parse(path).unwrap(),
        digest: Digest::of(data),
        size: data.len() as u64,
        media_type: "text/plain".into(),
    }
}

/// Every test runs on SQLite, and on PostgreSQL too when CI provides one.
async fn databases() -> Vec<(tempfile::TempDir, String)> {
    artifactstore_db::testing::databases("index").await
}

pub(crate) async fn each_database<F, Fut>(test: F)
where
    F: Fn(Index, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for (_dir, url) in databases().await {
        eprintln!("database: {}", url.split('@').next_back().unwrap_or(&url));
        let index = Index::open(&url).await.unwrap();
        test(index, url).await;
    }
}

#[tokio::test]
async fn versions_files_and_events_follow_the_model() {
    each_database(|index, _| versions_files_and_events(index)).await;
}

async fn versions_files_and_events(index: Index) {
    let v1 = id("1");
    let added = index.add_file(&v1, file("a/b.txt", b"x")).await.unwrap();
    assert!(added.created);
    let again = index.add_file(&v1, file("a/b.txt", b"x")).await.unwrap();
    assert!(!again.created, "identical re-add is idempotent");
    match index.add_file(&v1, file("a/b.txt", b"y")).await {
        Err(Error::FileConflict { existing }) => assert_eq!(existing, Digest::of(b"x")),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(index.latest(&v1.namespace, &v1.name).await.unwrap(), None);
    index.complete(&v1, None).await.unwrap();
    index.complete(&v1, None).await.unwrap();
    assert_eq!(
        index.latest(&v1.namespace, &v1.name).await.unwrap(),
        Some(v1.version.clone())
    );
    assert!(matches!(
        index.add_file(&v1, file("c.txt", b"z")).await,
        Err(Error::VersionComplete)
    ));
    assert!(
        !index
            .add_file(&v1, file("a/b.txt", b"x"))
            .await
            .unwrap()
            .created
    );

    let kinds: Vec<_> = index
        .events(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, EventKind::VersionCreated),
            (2, EventKind::FileAdded),
            (3, EventKind::VersionCompleted)
        ]
    );

    let v2 = id("2");
    index.add_file(&v2, file("r.md", b"r")).await.unwrap();
    let listed: Vec<_> = index
        .versions(&v1.namespace, &v1.name, "", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.version, v.state))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("2".to_string(), VersionState::Open),
            ("1".to_string(), VersionState::Complete)
        ]
    );
    index.delete_version(&v1).await.unwrap();
    assert_eq!(index.latest(&v1.namespace, &v1.name).await.unwrap(), None);
    assert!(matches!(
        index.add_file(&v1, file("n.txt", b"n")).await,
        Err(Error::VersionDeleted)
    ));
    assert!(
        index
            .live_blob_holders(&Digest::of(b"x"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !index
            .live_blob_holders(&Digest::of(b"r"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn listing_pages_and_prefixes() {
    each_database(|index, _| listing(index)).await;
}

async fn listing(index: Index) {
    for ns in ["alpha", "beta", "bravo"] {
        let id = VersionId {
            namespace: Namespace::parse(ns).unwrap(),
            name: Name::parse("n").unwrap(),
            version: Version::parse("1").unwrap(),
        };
        index.add_file(&id, file("f", ns.as_bytes())).await.unwrap();
    }
    assert_eq!(
        index.namespaces("", "", 2).await.unwrap(),
        vec!["alpha", "beta"]
    );
    assert_eq!(
        index.namespaces("", "beta", 2).await.unwrap(),
        vec!["bravo"]
    );
    assert_eq!(
        index.namespaces("b", "", 10).await.unwrap(),
        vec!["beta", "bravo"]
    );
}

#[tokio::test]
async fn sequence_survives_reopen() {
    each_database(sequence_survives).await;
}

async fn sequence_survives(index: Index, url: String) {
    {
        index.add_file(&id("1"), file("f", b"1")).await.unwrap();
        index.close().await;
    }
    let index = Index::open(&url).await.unwrap();
    assert_eq!(*index.subscribe().borrow(), 2);
    index.add_file(&id("1"), file("g", b"2")).await.unwrap();
    assert_eq!(index.events(2, 10).await.unwrap()[0].seq, 3);
}

/// Two indexes on one database stand for two replicas: concurrent writers of the same new
/// version all succeed, and the event log stays gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_database_both_succeed() {
    for (_dir, url) in databases().await {
        let a = std::sync::Arc::new(Index::open(&url).await.unwrap());
        let b = std::sync::Arc::new(Index::open(&url).await.unwrap());
        let mut tasks = Vec::new();
        for i in 0..40 {
            let index = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let data = format!("file {i}");
                index
                    .add_file(&id("shared"), file(&format!("f{i}"), data.as_bytes()))
                    .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap().created, "{url}");
        }
        let events = a.events(0, 1000).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=41).collect::<Vec<i64>>(), "{url}");
        assert_eq!(
            events
                .iter()
                .filter(|e| e.kind == EventKind::VersionCreated)
                .count(),
            1
        );
        assert_eq!(a.files(&id("shared")).await.unwrap().len(), 40);
    }
}

#[tokio::test]
async fn a_version_holds_at_most_its_maximum_of_files() {
    each_database(|index, url| async move {
        index.set_max_files_per_version(2);
        let v = id("full");
        index.add_file(&v, file("a", b"a")).await.unwrap();
        index.add_file(&v, file("b", b"b")).await.unwrap();
        assert!(
            matches!(
                index.add_file(&v, file("c", b"c")).await,
                Err(Error::VersionFull { max: 2 })
            ),
            "{url}"
        );
        // The same file again is no new file.
        assert!(!index.add_file(&v, file("a", b"a")).await.unwrap().created);
        let record = index.version(&v).await.unwrap().unwrap();
        assert_eq!(record.file_count, 2);
        assert_eq!(index.files(&v).await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn file_pages_and_totals_agree_with_the_whole_list() {
    each_database(|index, _| file_pages_and_totals(index)).await;
}

async fn file_pages_and_totals(index: Index) {
    let v = id("paged");
    assert_eq!(index.file_totals(&v).await.unwrap(), (0, 0));
    // Mixed case and a multi-byte name: the page boundary must follow the same order
    // as ORDER BY on either database.
    for (i, p) in ["b", "A", "a/x", "a", "é", "Z/1", "a-b"].iter().enumerate() {
        index
            .add_file(&v, file(p, &vec![b'x'; i + 1]))
            .await
            .unwrap();
    }
    let whole: Vec<String> = index
        .files(&v)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = index.files_page(&v, after.as_deref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|f| f.path.clone());
        paged.extend(page.into_iter().map(|f| f.path));
        assert!(paged.len() <= whole.len(), "pages repeat files");
    }
    assert_eq!(paged, whole);
    assert_eq!(index.file_totals(&v).await.unwrap(), (7, 28));
}

#[test]
fn database_faults_are_told_from_refusals_and_bugs() {
    use artifactstore_model::StoreFault;
    let db = |e: sqlx::Error| Error::Db(e).fault();
    assert_eq!(db(sqlx::Error::PoolTimedOut), Some(StoreFault::Unavailable));
    assert_eq!(
        db(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))),
        Some(StoreFault::Unavailable)
    );
    assert_eq!(db(sqlx::Error::RowNotFound), None);
    assert_eq!(Error::VersionComplete.fault(), None);
    for (code, fault) in [
        ("53100", Some(StoreFault::Full)),
        ("53300", Some(StoreFault::Unavailable)),
        ("57P01", Some(StoreFault::Unavailable)),
        ("08006", Some(StoreFault::Unavailable)),
        ("23505", None),
        ("40001", None),
        ("13", Some(StoreFault::Full)),
        ("5", Some(StoreFault::Unavailable)),
        ("266", Some(StoreFault::Unavailable)),
        ("2067", None),
    ] {
        assert_eq!(database_fault(code), fault, "{code}");
    }
}

/// The garbage-collection protocol: a hold stops a claim, a claim makes a hold wait, a
/// live file stops a claim, stale holds lapse, and one collector holds the lease.
#[tokio::test]
async fn holds_and_claims_exclude_each_other_and_one_collector_runs() {
    for (_dir, url) in databases().await {
        let clock = Arc::new(artifactstore_model::ManualClock::new(
            artifactstore_model::Timestamp::from_unix_millis(1_800_000_000_000),
        ));
        let index = Index::open_with_clock(&url, clock.clone()).await.unwrap();
        let x = Digest::of(b"x");
        let now = || clock.now();
        index.note_candidates(&[(x, 1)], &[]).await.unwrap();
        // An upload holds x: no collector may claim it.
        assert_eq!(index.hold_blob(&x, "up-1").await.unwrap(), Hold::Held);
        index.note_candidates(&[(x, 1)], &[]).await.unwrap();
        assert!(!index.claim_for_deletion(&x, now()).await.unwrap());
        index.release_blob(&x, "up-1").await.unwrap();
        assert!(index.claim_for_deletion(&x, now()).await.unwrap());
        // Claimed: an upload of x waits until the collector is done with it.
        assert_eq!(
            index.hold_blob(&x, "up-2").await.unwrap(),
            Hold::BeingDeleted
        );
        index.forget_candidate(&x).await.unwrap();
        assert_eq!(index.hold_blob(&x, "up-2").await.unwrap(), Hold::Held);
        index.release_blob(&x, "up-2").await.unwrap();

        // A live file stops a claim; a deleted version's does not.
        let y = Digest::of(b"y");
        index.add_file(&id("1"), file("y", b"y")).await.unwrap();
        index.note_candidates(&[(y, 1)], &[]).await.unwrap();
        assert!(!index.claim_for_deletion(&y, now()).await.unwrap());
        assert!(index.live_digests(&[x, y]).await.unwrap().contains(&y));
        index.delete_version(&id("1")).await.unwrap();
        assert!(index.live_digests(&[x, y]).await.unwrap().is_empty());
        // Not unreferenced for the grace: not due, not claimable.
        let before = now().saturating_sub(std::time::Duration::from_secs(1));
        assert!(
            index
                .candidates_due(before, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(!index.claim_for_deletion(&y, before).await.unwrap());
        assert!(index.claim_for_deletion(&y, now()).await.unwrap());
        index.forget_candidate(&y).await.unwrap();

        // A hold left by a process that died lapses.
        let z = Digest::of(b"z");
        assert_eq!(index.hold_blob(&z, "dead").await.unwrap(), Hold::Held);
        index.note_candidates(&[(z, 1)], &[]).await.unwrap();
        clock.advance(STALE_AFTER + std::time::Duration::from_secs(1));
        assert!(index.claim_for_deletion(&z, now()).await.unwrap());

        // One collector at a time.
        let lease = std::time::Duration::from_secs(600);
        assert!(index.acquire_gc("a", lease).await.unwrap());
        assert!(!index.acquire_gc("b", lease).await.unwrap());
        assert!(index.acquire_gc("a", lease).await.unwrap(), "renewed");
        index.finish_gc("a").await.unwrap();
        assert!(index.acquire_gc("b", lease).await.unwrap());
        clock.advance(lease + std::time::Duration::from_secs(1));
        assert!(
            index.acquire_gc("c", lease).await.unwrap(),
            "a dead collector's lease lapses"
        );
    }
}

/// Usage follows every write and tombstone; a quota refuses the file or version that
/// would pass it, and a refused file changes nothing.
#[tokio::test]
async fn usage_is_kept_with_every_write_and_quotas_refuse_what_would_pass() {
    for (_dir, url) in databases().await {
        let index = Index::open(&url).await.unwrap();
        let quota = Quota {
            max_bytes: Some(10),
            max_versions: Some(2),
        };
        let add = |v: &'static str, path: &'static str, data: &'static [u8]| {
            let index = &index;
            async move {
                index
                    .add_file_within(&id(v), file(path, data), Some(&quota), None)
                    .await
            }
        };
        add("1", "a", b"12345").await.unwrap();
        add("1", "a", b"12345").await.unwrap(); // the same file again: no charge
        add("2", "b", b"1234").await.unwrap();
        assert_eq!(
            index.usage("ci").await.unwrap(),
            Usage {
                bytes: 9,
                versions: 2
            }
        );
        assert!(matches!(
            add("2", "c", b"12").await,
            Err(Error::QuotaExceeded { .. })
        ));
        assert!(matches!(
            add("3", "c", b"1").await,
            Err(Error::QuotaExceeded { .. })
        ));
        assert!(
            index.version(&id("3")).await.unwrap().is_none(),
            "no version was left"
        );
        assert_eq!(
            index.usage("ci").await.unwrap().bytes,
            9,
            "refusals change nothing"
        );
        index.delete_version(&id("1")).await.unwrap();
        index.delete_version(&id("1")).await.unwrap(); // twice: released once
        assert_eq!(
            index.usage("ci").await.unwrap(),
            Usage {
                bytes: 4,
                versions: 1
            }
        );
        add("3", "c", b"123456").await.unwrap();
        assert_eq!(index.usage("other").await.unwrap(), Usage::default());
    }
}

/// The file row releases its upload's hold in the same write: once its version is gone,
/// nothing holds the blob.
#[tokio::test]
async fn a_new_file_row_releases_its_uploads_hold() {
    for (_dir, url) in databases().await {
        let index = Index::open(&url).await.unwrap();
        let d = Digest::of(b"held");
        assert_eq!(index.hold_blob(&d, "up-1").await.unwrap(), Hold::Held);
        index
            .add_file_within(&id("1"), file("f", b"held"), None, Some("up-1"))
            .await
            .unwrap();
        index.delete_version(&id("1")).await.unwrap();
        index.note_candidates(&[(d, 4)], &[]).await.unwrap();
        let now = index.clock().now();
        assert!(
            index.claim_for_deletion(&d, now).await.unwrap(),
            "no hold was left behind"
        );
    }
}
