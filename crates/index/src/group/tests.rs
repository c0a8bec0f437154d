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
    assert_eq!(
        after.writes - before.writes,
        32,
        "every hold went through a group"
    );
    assert!(
        after.commits - before.commits < 32,
        "{after:?} vs {before:?}"
    );
}

/// Answers of `n` concurrent `add_file_within` calls, in call order.
async fn concurrently(
    index: &Arc<Index>,
    v: &crate::VersionId,
    n: usize,
    file_of: impl Fn(usize) -> crate::NewFile,
    quota: Option<crate::Quota>,
) -> Vec<crate::Result<crate::AddedFile>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (index, v, f) = (index.clone(), v.clone(), file_of(i));
            tokio::spawn(async move { index.add_file_within(&v, f, quota.as_ref(), None).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// What a group must decide one write at a time is decided as an ungrouped write would:
/// one path sent many times at once, the version's maximum of files, a quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_keep_the_answers_of_single_writes() {
    each_database(|index, _| keep_answers(Arc::new(index))).await;
}

async fn keep_answers(index: Arc<Index>) {
    // The same file at one path, 16 times at once: one row, the others unchanged.
    let v = id("same-path");
    let answers = concurrently(&index, &v, 16, |_| file("a.txt", b"same"), None).await;
    let created = answers
        .iter()
        .filter(|a| a.as_ref().unwrap().created)
        .count();
    assert_eq!(created, 1, "one of the identical writes creates the row");
    // Different files at one path: one wins, the others are conflicts.
    let v = id("contested");
    let answers = concurrently(&index, &v, 16, |i| file("a.txt", &[i as u8]), None).await;
    let won: Vec<_> = answers.iter().filter(|a| a.is_ok()).collect();
    assert_eq!(won.len(), 1);
    let winner = won[0].as_ref().unwrap().record.digest;
    for a in &answers {
        match a {
            Ok(_) => {}
            Err(Error::FileConflict { existing }) => assert_eq!(*existing, winner),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(index.version(&v).await.unwrap().unwrap().file_count, 1);
    // The maximum of files per version holds under concurrency.
    index.set_max_files_per_version(10);
    let v = id("full");
    let answers = concurrently(&index, &v, 32, |i| file(&format!("{i}"), &[i as u8]), None).await;
    let created = answers.iter().filter(|a| a.is_ok()).count();
    let full = answers
        .iter()
        .filter(|a| matches!(a, Err(Error::VersionFull { max: 10 })))
        .count();
    assert_eq!((created, full), (10, 22));
    assert_eq!(index.files(&v).await.unwrap().len(), 10);
    index.set_max_files_per_version(crate::DEFAULT_MAX_FILES_PER_VERSION);
    // A quota of 5 one-byte files, 16 at once: 5 written, 11 refused, usage exact.
    let quota = crate::Quota {
        max_bytes: Some(5),
        max_versions: None,
    };
    let v = crate::VersionId {
        namespace: artifactstore_model::Namespace::parse("quota").unwrap(),
        ..id("q")
    };
    let answers = concurrently(
        &index,
        &v,
        16,
        |i| file(&format!("{i}"), &[i as u8]),
        Some(quota),
    )
    .await;
    let created = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(created, 5, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.is_ok() || matches!(a, Err(Error::QuotaExceeded { .. })))
    );
    assert_eq!(index.usage("quota").await.unwrap().bytes, 5);
    // Usage counts each version once, whichever path created it.
    let usage = index.usage("ci").await.unwrap();
    assert_eq!(usage.versions, 3, "{usage:?}");
    assert_eq!(usage.bytes, 4 + 1 + 10, "{usage:?}");
    // The event log has one file.added per row and no gaps.
    let events = index.events(0, 10_000).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let added = events
        .iter()
        .filter(|e| e.kind == crate::EventKind::FileAdded)
        .count();
    assert_eq!(added, 1 + 1 + 10 + 5);
}

/// A digest a collector is deleting is refused its hold inside a group; the others in
/// the same group are held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_digest_being_deleted_is_refused_its_hold_inside_a_group() {
    each_database(|index, _| being_deleted(Arc::new(index))).await;
}

async fn being_deleted(index: Arc<Index>) {
    let doomed = Digest::of(b"doomed");
    index.note_candidates(&[(doomed, 1)], &[]).await.unwrap();
    let now = index.clock().now();
    assert!(index.claim_for_deletion(&doomed, now).await.unwrap());
    let tasks: Vec<_> = (0..16u32)
        .map(|i| {
            let index = index.clone();
            tokio::spawn(async move {
                let d = if i % 4 == 0 {
                    doomed
                } else {
                    Digest::of(&i.to_le_bytes())
                };
                (d, index.hold_blob(&d, &format!("u{i}")).await.unwrap())
            })
        })
        .collect();
    for t in tasks {
        let (d, hold) = t.await.unwrap();
        let want = if d == doomed {
            Hold::BeingDeleted
        } else {
            Hold::Held
        };
        assert_eq!(hold, want);
    }
    // The collector's mark is untouched: it still owns the digest.
    assert_eq!(
        index.hold_blob(&doomed, "again").await.unwrap(),
        Hold::BeingDeleted
    );
    index.forget_candidate(&doomed).await.unwrap();
    assert_eq!(index.hold_blob(&doomed, "later").await.unwrap(), Hold::Held);
}

/// A write whose caller went away while it waited for the lock is not made later by
/// another group (an ungrouped write would have been rolled back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_went_away_is_not_made() {
    each_database(|index, _| abandoned(Arc::new(index))).await;
}

async fn abandoned(index: Arc<Index>) {
    let gone = id("gone");
    let lock = index.write.clone().lock_owned().await;
    let caller = {
        let (index, gone) = (index.clone(), gone.clone());
        tokio::spawn(async move { index.add_file(&gone, file("x", b"x")).await })
    };
    for _ in 0..1000 {
        if !index.queue.jobs.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        !index.queue.jobs.lock().unwrap().is_empty(),
        "the write was never queued"
    );
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    drop(lock);
    // The next writer leads the next group.
    index.add_file(&id("next"), file("y", b"y")).await.unwrap();
    assert!(
        index.version(&gone).await.unwrap().is_none(),
        "the abandoned write was made"
    );
    assert!(index.version(&id("next")).await.unwrap().is_some());
}
