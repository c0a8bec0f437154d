use std::sync::Arc;

use crate::tests::{each_database, file, id};
use crate::{Error, Hold, Index};
use artifactstore_model::Digest;

/// Concurrent file rows share commits, every one is written, and the event log stays
/// gap-free; a refusal inside a group is answered alone and leaves the others written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_file_rows_share_commits_and_refusals_stay_alone() {
    each_database(|index, _| concurrent_rows(Arc::new(index))).await;
}

async fn concurrent_rows(index: Arc<Index>) {
    let v = id("grouped");
    index
        .add_file(&v, file("taken.txt", b"first"))
        .await
        .unwrap();
    let before = index.group_commit_stats();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (index, v) = (index.clone(), v.clone());
        tasks.push(tokio::spawn(async move {
            if i % 8 == 0 {
                // A different file at a path already taken: refused.
                index
                    .add_file(&v, file("taken.txt", format!("other {i}").as_bytes()))
                    .await
            } else {
                index
                    .add_file(&v, file(&format!("f/{i}.txt"), format!("{i}").as_bytes()))
                    .await
            }
        }));
    }
    let mut created = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(added) => {
                assert!(i % 8 != 0, "file {i} was to be refused");
                assert!(added.created);
                created += 1;
            }
            Err(Error::FileConflict { existing }) => {
                assert_eq!(i % 8, 0, "file {i}: {existing}");
                assert_eq!(existing, Digest::of(b"first"));
            }
            Err(e) => panic!("file {i}: {e}"),
        }
    }
    assert_eq!(created, 56);
    let files = index.files(&v).await.unwrap();
    assert_eq!(files.len(), 57);
    assert_eq!(index.version(&v).await.unwrap().unwrap().file_count, 57);
    // One file.added per row, sequence numbers without gaps.
    let events = index.events(0, 1000).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        events.len(),
        1 + 57,
        "version.created and one file.added per row"
    );
    let after = index.group_commit_stats();
    let (commits, writes) = (after.commits - before.commits, after.writes - before.writes);
    assert!(writes >= 56, "{writes} grouped writes");
    assert!(
        commits < 56,
        "56 rows written by {commits} commits: concurrent writes did not share a commit"
    );
}

/// Holds taken at once share commits too, and each is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_holds_share_commits() {
    each_database(|index, _| concurrent_holds(Arc::new(index))).await;
}

async fn concurrent_holds(index: Arc<Index>) {
    let before = index.group_commit_stats();
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let index = index.clone();
        tasks.push(tokio::spawn(async move {
            let digest = Digest::of(&i.to_le_bytes());
            let held = index.hold_blob(&digest, &format!("upload-{i}")).await;
            (digest, held)
        }));
    }
    for t in tasks {
        let (digest, held) = t.await.unwrap();
        assert_eq!(held.unwrap(), Hold::Held);
        // Held, so a collector that finds the blob unreferenced cannot claim it.
        index.note_candidates(&[(digest, 1)], &[]).await.unwrap();
        let now = index.clock().now();
        assert!(!index.claim_for_deletion(&digest, now).await.unwrap());
    }
    let after = index.group_commit_stats();
    assert!(
        after.commits - before.commits < 32,
        "{after:?} vs {before:?}"
    );
}
