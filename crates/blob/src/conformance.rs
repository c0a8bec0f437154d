//! The behaviour every [`BlobStore`] backend must show. Backends call [`run_all`] from
//! their own tests; live backends run it against a real server.
//!
//! Content is unique to each run, so the suite can share a bucket with other data.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use artifactstore_model::Digest;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::{BlobStore, ByteStream, Error, PublishGate};

/// Runs every check in order; panics with a description on the first failure.
pub async fn run_all(store: Arc<dyn BlobStore>) {
    round_trip(&*store).await;
    large_bodies(&*store).await;
    large_reads(store.clone()).await;
    declared_digest(&*store).await;
    failed_body_leaves_nothing(&*store).await;
    ranged_reads(&*store).await;
    delete(&*store).await;
    list_in_order(&*store).await;
    concurrent_identical_puts(store.clone()).await;
    publish_gate(&*store).await;
}

static SEED: AtomicU64 = AtomicU64::new(0);

/// `len` bytes no other call of this run (or another run) produces.
pub fn unique_bytes(len: usize) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = nanos
        ^ SEED
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (std::process::id() as u64) << 32;
    seeded_bytes(len, seed)
}

/// `len` pseudo-random bytes determined by `seed` (xorshift64*: cheap, and distinct
/// seeds give distinct contents).
pub fn seeded_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Splits data into uneven chunks, as a network would deliver it.
pub fn chunked(data: &[u8]) -> ByteStream {
    let mut chunks = Vec::new();
    let mut rest = Bytes::copy_from_slice(data);
    let mut n = 1usize;
    while !rest.is_empty() {
        let take = rest.len().min(n * 7919 % 200_003 + 1);
        chunks.push(Ok(rest.split_to(take)));
        n += 1;
    }
    futures::stream::iter(chunks).boxed()
}

async fn read_all(
    store: &dyn BlobStore,
    digest: &Digest,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let read = store.get(digest, range).await.expect("get");
    let chunks: Vec<Bytes> = read.body.try_collect().await.expect("read body");
    chunks.concat()
}

pub async fn round_trip(store: &dyn BlobStore) {
    for len in [0usize, 1, 4096, 3 * 1024 * 1024 + 17] {
        let data = if len == 0 {
            Vec::new()
        } else {
            unique_bytes(len)
        };
        let out = store.put(chunked(&data), None).await.expect("put");
        assert_eq!(out.digest, Digest::of(&data), "digest of {len} bytes");
        assert_eq!(out.size, len as u64);
        let meta = store
            .head(&out.digest)
            .await
            .expect("head")
            .expect("blob present after put");
        assert_eq!(meta.size, len as u64);
        assert_eq!(
            read_all(store, &out.digest, None).await,
            data,
            "read back {len} bytes"
        );
        let again = store.put(chunked(&data), None).await.expect("second put");
        assert_eq!(again.digest, out.digest);
        if len > 0 {
            assert!(
                !again.created,
                "second put of the same bytes must deduplicate"
            );
        }
    }
    let absent = Digest::of(&unique_bytes(32));
    assert!(store.head(&absent).await.expect("head absent").is_none());
    assert!(matches!(
        store.get(&absent, None).await,
        Err(Error::NotFound { .. })
    ));
}

/// Bodies larger than an S3 multipart part (5 MiB minimum): with and without a declared
/// digest, a mismatch, and a body that fails after several parts.
pub async fn large_bodies(store: &dyn BlobStore) {
    let data = unique_bytes(11 * 1024 * 1024 + 13);
    let d = Digest::of(&data);
    let out = store
        .put(chunked(&data), Some(d))
        .await
        .expect("large declared put");
    assert_eq!(
        (out.digest, out.size, out.created),
        (d, data.len() as u64, true)
    );
    assert_eq!(read_all(store, &d, None).await, data);

    let data = unique_bytes(12 * 1024 * 1024 + 1);
    let out = store
        .put(chunked(&data), None)
        .await
        .expect("large undeclared put");
    assert_eq!(out.digest, Digest::of(&data));
    assert!(out.created);
    let n = data.len() as u64;
    assert_eq!(
        read_all(store, &out.digest, Some(n - 100..n)).await,
        &data[data.len() - 100..]
    );

    let data = unique_bytes(11 * 1024 * 1024);
    let wrong = Digest::of(b"not these bytes");
    assert!(matches!(
        store.put(chunked(&data), Some(wrong)).await,
        Err(Error::DigestMismatch { .. })
    ));
    assert!(store.head(&wrong).await.unwrap().is_none());
    assert!(store.head(&Digest::of(&data)).await.unwrap().is_none());

    let head = Bytes::from(unique_bytes(11 * 1024 * 1024));
    let body = futures::stream::iter([
        Ok(head.clone()),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ])
    .boxed();
    assert!(matches!(store.put(body, None).await, Err(Error::Body(_))));
    assert!(store.head(&Digest::of(&head)).await.unwrap().is_none());
}

/// Reads of a body several parts long (which S3 fetches as ranges in parallel): whole,
/// ranges across part boundaries, and more of them at once than are fetched in parallel.
pub async fn large_reads(store: Arc<dyn BlobStore>) {
    let data = Arc::new(unique_bytes(18 * 1024 * 1024 + 7));
    let n = data.len() as u64;
    let d = Digest::of(&data);
    store.put(chunked(&data), Some(d)).await.expect("large put");
    assert!(
        read_all(&*store, &d, None).await == *data,
        "whole read differs"
    );
    for r in [1..n - 1, 5 * 1024 * 1024 - 1..15 * 1024 * 1024 + 1, 0..n] {
        let got = read_all(&*store, &d, Some(r.clone())).await;
        assert!(
            got == data[r.start as usize..r.end as usize],
            "range {r:?} differs"
        );
    }
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, data) = (store.clone(), data.clone());
            tokio::spawn(async move {
                assert!(
                    read_all(&*store, &d, None).await == *data,
                    "concurrent read differs"
                );
            })
        })
        .collect();
    for r in readers {
        r.await.expect("reader");
    }
    store.delete(&d).await.expect("delete");
}

pub async fn declared_digest(store: &dyn BlobStore) {
    let data = unique_bytes(100_000);
    let right = Digest::of(&data);
    let wrong = Digest::of(&unique_bytes(10));
    match store.put(chunked(&data), Some(wrong)).await {
        Err(Error::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, right);
        }
        other => panic!("declared wrong digest must fail, got {other:?}"),
    }
    assert!(
        store.head(&right).await.unwrap().is_none(),
        "mismatched upload became visible"
    );
    assert!(store.head(&wrong).await.unwrap().is_none());
    let out = store
        .put(chunked(&data), Some(right))
        .await
        .expect("declared right digest");
    assert_eq!(out.digest, right);
    assert!(out.created);
    // Declaring a digest that is already stored: the bytes are still checked.
    let again = store
        .put(chunked(&data), Some(right))
        .await
        .expect("declared existing digest");
    assert!(!again.created);
    assert_eq!(again.size, data.len() as u64);
    let liar = unique_bytes(100_000);
    assert!(matches!(
        store.put(chunked(&liar), Some(right)).await,
        Err(Error::DigestMismatch { .. })
    ));
    assert_eq!(
        read_all(store, &right, None).await,
        data,
        "existing blob damaged by a lying upload"
    );
    assert!(store.head(&Digest::of(&liar)).await.unwrap().is_none());
}

pub async fn failed_body_leaves_nothing(store: &dyn BlobStore) {
    let data = unique_bytes(2 * 1024 * 1024);
    let full = Digest::of(&data);
    let half = Bytes::copy_from_slice(&data[..data.len() / 2]);
    let body = futures::stream::iter([
        Ok(half.clone()),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ])
    .boxed();
    assert!(matches!(store.put(body, None).await, Err(Error::Body(_))));
    assert!(store.head(&full).await.unwrap().is_none());
    assert!(
        store.head(&Digest::of(&half)).await.unwrap().is_none(),
        "partial body became visible"
    );
}

pub async fn ranged_reads(store: &dyn BlobStore) {
    let data = unique_bytes(1_000_003);
    let d = store.put(chunked(&data), None).await.unwrap().digest;
    let n = data.len() as u64;
    for r in [0..1, n - 1..n, 1000..250_000, 500_000..n, 0..n, 7..7] {
        let got = read_all(store, &d, Some(r.clone())).await;
        assert_eq!(got, &data[r.start as usize..r.end as usize], "range {r:?}");
        let read = store.get(&d, Some(r.clone())).await.unwrap();
        assert_eq!(read.size, n);
        assert_eq!(read.range, r);
    }
    assert!(matches!(
        store.get(&d, Some(n..n + 1)).await,
        Err(Error::InvalidRange { .. })
    ));
}

pub async fn delete(store: &dyn BlobStore) {
    let data = unique_bytes(5000);
    let d = store.put(chunked(&data), None).await.unwrap().digest;
    assert!(store.delete(&d).await.unwrap());
    assert!(store.head(&d).await.unwrap().is_none());
    assert!(matches!(
        store.get(&d, None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        !store.delete(&d).await.unwrap(),
        "deleting an absent blob reports false"
    );
}

pub async fn list_in_order(store: &dyn BlobStore) {
    let mut mine = Vec::new();
    for _ in 0..5 {
        let data = unique_bytes(300);
        mine.push(store.put(chunked(&data), None).await.unwrap().digest);
    }
    mine.sort();
    // Page through everything with a small limit; our blobs must all appear, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(after, 3).await.expect("list");
        assert!(page.len() <= 3);
        if page.is_empty() {
            break;
        }
        for w in page.windows(2) {
            assert!(w[0].digest < w[1].digest, "list not in ascending order");
        }
        after = Some(page.last().unwrap().digest);
        seen.extend(page.into_iter().map(|m| m.digest));
    }
    for d in &mine {
        assert!(seen.contains(d), "{d} missing from list");
    }
    for w in seen.windows(2) {
        assert!(w[0] < w[1], "pages overlap or are out of order");
    }
    let first_after = store.list(Some(mine[0]), 1).await.unwrap();
    assert!(first_after.iter().all(|m| m.digest > mine[0]));
}

pub async fn concurrent_identical_puts(store: Arc<dyn BlobStore>) {
    let data = Arc::new(unique_bytes(512 * 1024));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (store, data) = (store.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            store.put(chunked(&data), None).await
        }));
    }
    for t in tasks {
        let out = t.await.unwrap().expect("concurrent put");
        assert_eq!(out.digest, Digest::of(&data));
    }
    assert_eq!(read_all(&*store, &Digest::of(&data), None).await, *data);
}

/// A gate that notes each digest it is asked about, whether the blob was visible then,
/// and refuses when told to.
struct NotingGate<'a> {
    store: &'a dyn BlobStore,
    refuse: bool,
    seen: std::sync::Mutex<Vec<(Digest, bool)>>,
}

#[async_trait::async_trait]
impl PublishGate for NotingGate<'_> {
    async fn before_publish(&self, digest: &Digest) -> crate::Result<()> {
        let visible = self.store.head(digest).await?.is_some();
        self.seen.lock().unwrap().push((*digest, visible));
        if self.refuse {
            return Err(Error::Gate {
                fault: None,
                message: "refused by the test".into(),
            });
        }
        Ok(())
    }
}

/// The gate runs once per put, with the digest, before the blob becomes visible, on
/// every path (small and multipart; declared and not; already stored); a gate that
/// refuses leaves nothing visible.
pub async fn publish_gate(store: &dyn BlobStore) {
    for len in [1000, 11 * 1024 * 1024 + 7] {
        for declared in [false, true] {
            let data = unique_bytes(len);
            let d = Digest::of(&data);
            let gate = |refuse| NotingGate {
                store,
                refuse,
                seen: Default::default(),
            };
            let refusing = gate(true);
            let e = store
                .put_gated(chunked(&data), declared.then_some(d), &refusing)
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Gate { .. }), "{e:?}");
            assert_eq!(*refusing.seen.lock().unwrap(), [(d, false)]);
            assert!(
                store.head(&d).await.unwrap().is_none(),
                "a refused put published its blob ({len} bytes, declared {declared})"
            );
            let passing = gate(false);
            let out = store
                .put_gated(chunked(&data), declared.then_some(d), &passing)
                .await
                .unwrap();
            assert!(out.created);
            assert_eq!(
                *passing.seen.lock().unwrap(),
                [(d, false)],
                "before it was visible"
            );
            let again = gate(false);
            let out = store
                .put_gated(chunked(&data), declared.then_some(d), &again)
                .await
                .unwrap();
            assert!(!out.created);
            assert_eq!(
                *again.seen.lock().unwrap(),
                [(d, true)],
                "once, before the existence check"
            );
            store.delete(&d).await.unwrap();
        }
    }
}
