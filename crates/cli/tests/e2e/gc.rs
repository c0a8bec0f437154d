//! Garbage collection on the real binary (fs, and the bucket when the suite runs on
//! S3): the bytes of deleted versions are really freed, what another version still
//! references stays, the grace period holds, and uploads that re-reference a digest
//! being collected never lose their blob.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

/// A server that collects only when asked, with this grace.
fn start(dir: &std::path::Path, grace: &str) -> Server {
    Server::start_with_env(
        dir,
        &[],
        &[
            ("ARTIFACTSTORE_GC_GRACE_SECS", grace),
            ("ARTIFACTSTORE_GC_INTERVAL_SECS", "0"),
        ],
    )
}

fn gc(s: &Server, dry_run: bool) -> Value {
    let mut args = vec!["--json", "gc"];
    if dry_run {
        args.push("--dry-run");
    }
    let o = s.cli(&args);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn put(s: &Server, rest: &str, data: &[u8]) -> StatusCode {
    let (url, data) = (s.artifacts(rest), data.to_vec());
    block_on(async move {
        let mut req = http().put(url).body(data);
        if let Some(t) = suite_token() {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().status()
    })
}

fn delete(s: &Server, rest: &str) -> StatusCode {
    let url = s.artifacts(rest);
    block_on(async move {
        let mut req = http().delete(url);
        if let Some(t) = suite_token() {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().status()
    })
}

#[test]
fn deleted_versions_bytes_are_freed_and_shared_blobs_stay() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "0");
    let shared = bytes(64 * 1024, 1);
    let only_one = bytes(300 * 1024, 2);
    let only_two = bytes(100 * 1024, 3);
    for (rest, data) in [
        ("ci/app/1/shared.bin", &shared),
        ("ci/app/1/only.bin", &only_one),
        ("ci/app/2/shared.bin", &shared),
        ("ci/app/2/only.bin", &only_two),
    ] {
        assert_eq!(put(&s, rest, data), StatusCode::CREATED);
    }
    // Nothing is unreferenced while both versions live.
    let r = gc(&s, false);
    assert_eq!(
        (
            r["unreferenced_blobs"].as_u64(),
            r["collected_blobs"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(r["scanned_blobs"], 3);

    assert_eq!(delete(&s, "ci/app/1"), StatusCode::OK);
    let dry = gc(&s, true);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["unreferenced_blobs"], 1);
    assert_eq!(dry["unreferenced_bytes"], only_one.len() as u64);
    assert_eq!(dry["collected_blobs"], 0);
    assert!(s.holds_blob(&only_one), "a dry run deletes nothing");
    // fsck (of the bucket on S3, re-hashing every object) sees what GC would collect.
    let before = s.fsck(true);
    assert_eq!(before["unreferenced_blobs"], 1, "{before}");
    assert_eq!(before["blobs_checked"], 3);
    assert!(
        before["problems"].as_array().unwrap().is_empty(),
        "{before}"
    );

    let (count_before, bytes_before) = s.stored_blobs();
    assert_eq!(count_before, 3);
    let r = gc(&s, false);
    assert_eq!(r["collected_blobs"], 1, "{r}");
    assert_eq!(r["freed_bytes"], only_one.len() as u64);
    // Counted outside the server (files, or the bucket listed with boto3): exactly the
    // deleted version's own blob is gone.
    let (count_after, bytes_after) = s.stored_blobs();
    assert_eq!(count_before - count_after, 1);
    assert_eq!(bytes_before - bytes_after, only_one.len() as u64);
    assert!(
        !s.holds_blob(&only_one),
        "the deleted version's own blob is gone"
    );
    assert!(
        s.holds_blob(&shared),
        "a blob another version references stays"
    );
    assert!(s.holds_blob(&only_two));
    let copy = dir.path().join("shared.copy");
    let o = s.cli(&["get", "ci/app@2/shared.bin", "-o", copy.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&copy).unwrap(), shared);
    assert_eq!(gc(&s, false)["collected_blobs"], 0, "nothing left to free");
    let after = s.fsck(true);
    assert_eq!(
        (
            after["blobs_checked"].as_u64(),
            after["unreferenced_blobs"].as_u64()
        ),
        (Some(2), Some(0)),
        "{after}"
    );
    assert!(
        after["problems"].as_array().unwrap().is_empty(),
        "every file still has its blob: {after}"
    );

    let metrics = s.cli(&["--json", "gc", "--dry-run"]);
    assert!(metrics.status.success());
    let text = block_on({
        let url = format!("{}/metrics", s.url);
        async move {
            let mut req = http().get(url);
            if let Some(t) = suite_token() {
                req = req.bearer_auth(t);
            }
            req.send().await.unwrap().text().await.unwrap()
        }
    });
    assert!(
        text.contains(&format!(
            "artifactstore_gc_bytes_freed_total {}",
            only_one.len()
        )),
        "{text}"
    );
}

#[test]
fn a_blob_stays_until_it_has_been_unreferenced_for_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "3600");
    let data = bytes(10 * 1024, 4);
    assert_eq!(put(&s, "ci/grace/1/a.bin", &data), StatusCode::CREATED);
    assert_eq!(delete(&s, "ci/grace/1"), StatusCode::OK);
    let r = gc(&s, false);
    assert_eq!(
        (
            r["unreferenced_blobs"].as_u64(),
            r["collected_blobs"].as_u64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(r["grace_secs"], 3600);
    assert!(
        s.holds_blob(&data),
        "unreferenced for less than the grace: kept"
    );
    // Referenced again, it is no candidate any more.
    assert_eq!(put(&s, "ci/grace/2/a.bin", &data), StatusCode::CREATED);
    assert_eq!(gc(&s, false)["unreferenced_blobs"], 0);
}

/// Uploads that re-reference the one digest collections at zero grace are deleting
/// (the version that held it is deleted at the same moment, and a collector runs
/// without pause throughout): every upload that was acknowledged reads back whole.
#[test]
fn uploads_racing_collections_at_zero_grace_never_lose_their_blob() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "0");
    let url = s.url.clone();
    let (lost, collected, n) = block_on(async move {
        let client = http();
        let auth = |r: reqwest::RequestBuilder| match suite_token() {
            Some(t) => r.bearer_auth(t),
            None => r,
        };
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let collector = tokio::spawn({
            let (client, url, done) = (client.clone(), url.clone(), done.clone());
            async move {
                let mut collected = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut req = client.post(format!("{url}/v1/admin/gc"));
                    if let Some(t) = suite_token() {
                        req = req.bearer_auth(t);
                    }
                    let report: Value = req.send().await.unwrap().json().await.unwrap();
                    collected += report["collected_blobs"].as_u64().unwrap();
                }
                collected
            }
        });
        let mut lost = Vec::new();
        let n = 150u32;
        // Each acknowledged file is read back twice: at once, and again just before its
        // version is deleted, so a blob collected in between is caught too.
        let read_back = |k: usize, i: u32, data: Vec<u8>| {
            let req = auth(client.get(format!("{url}/v1/artifacts/ci/race-{k}/{i}/f.bin")));
            async move {
                let got = req.send().await.unwrap();
                let status = got.status();
                let body = got.bytes().await.unwrap();
                (status == StatusCode::OK && body.as_ref() == data.as_slice())
                    .then_some(())
                    .ok_or((k, i, status))
            }
        };
        let mut acked: Vec<usize> = Vec::new();
        for i in 1..=n {
            let previous = bytes(64 * 1024, u64::from((i - 1) % 2));
            for k in acked.drain(..) {
                if let Err(e) = read_back(k, i - 1, previous.clone()).await {
                    lost.push(e);
                }
            }
            // Three versions take up the shared digest while the one before them goes.
            let data = bytes(64 * 1024, u64::from(i % 2));
            let puts = (0..3).map(|k| {
                auth(client.put(format!("{url}/v1/artifacts/ci/race-{k}/{i}/f.bin")))
                    .body(data.clone())
                    .send()
            });
            let deletes = (0..3).map(|k| {
                auth(client.delete(format!("{url}/v1/artifacts/ci/race-{k}/{}", i - 1))).send()
            });
            let (puts, _) = futures::join!(
                futures::future::join_all(puts),
                futures::future::join_all(deletes)
            );
            for (k, put) in puts.into_iter().enumerate() {
                if !put.unwrap().status().is_success() {
                    continue; // not acknowledged: nothing was promised
                }
                match read_back(k, i, data.clone()).await {
                    Ok(()) => acked.push(k),
                    Err(e) => lost.push(e),
                }
            }
        }
        for k in acked {
            if let Err(e) = read_back(k, n, bytes(64 * 1024, u64::from(n % 2))).await {
                lost.push(e);
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (lost, collector.await.unwrap(), n)
    });
    assert!(
        lost.is_empty(),
        "acknowledged uploads lost their blob ({} of {}): {lost:?}",
        lost.len(),
        3 * n
    );
    // The collector did delete while the uploads ran: the shared digests, each time
    // the versions holding them were gone before the next took them up.
    assert!(collected > 0, "{collected} blobs collected");
    let report = s.fsck(true);
    assert!(
        report["problems"].as_array().unwrap().is_empty(),
        "fsck after the race: {report}"
    );
}

/// Two replicas on one PostgreSQL and one bucket collect at the same moment: one holds
/// the lease and collects, the other answers `busy` or finds nothing left; together they
/// free every blob exactly once, and nothing else.
#[test]
fn two_replicas_collecting_at_once_free_each_blob_once() {
    let Some(url) = replica_database("gc_replicas") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let flags = [
        "--database-url",
        &url,
        "--gc-grace-secs",
        "0",
        "--gc-interval-secs",
        "0",
    ];
    let a = Server::start_replica(&dir.path().join("a"), &shared, &flags);
    let b = Server::start_replica(&dir.path().join("b"), &shared, &flags);
    let n = 200;
    for i in 0..n {
        assert_eq!(
            put(
                &a,
                &format!("shared/gone/1/f{i}.bin"),
                format!("blob {i}").as_bytes()
            ),
            StatusCode::CREATED
        );
    }
    assert_eq!(put(&b, "shared/kept/1/k.bin", b"kept"), StatusCode::CREATED);
    assert_eq!(delete(&b, "shared/gone/1"), StatusCode::OK);
    let (ua, ub) = (a.url.clone(), b.url.clone());
    let reports: Vec<Value> = block_on(async move {
        let collect = |base: String| async move {
            let mut req = http().post(format!("{base}/v1/admin/gc"));
            if let Some(t) = suite_token() {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert!(resp.status().is_success());
            resp.json::<Value>().await.unwrap()
        };
        let mut all = Vec::new();
        for _ in 0..3 {
            let (x, y) = futures::join!(collect(ua.clone()), collect(ub.clone()));
            all.extend([x, y]);
        }
        all
    });
    let collected: u64 = reports
        .iter()
        .map(|r| r["collected_blobs"].as_u64().unwrap())
        .sum();
    let busy = reports.iter().filter(|r| r["busy"] == true).count();
    eprintln!(
        "replica collections: {busy} of {} answered busy",
        reports.len()
    );
    // The first round has 200 blobs to free, far longer than the moment between two
    // requests sent together: the second finds the lease taken.
    assert!(busy >= 1, "one collector at a time: {reports:?}");
    assert_eq!(collected, n, "every blob freed exactly once: {reports:?}");
    assert!(a.holds_blob(b"kept"));
    assert_eq!(
        b.stored_blobs().0,
        1,
        "only the kept version's blob is left in the bucket"
    );
}
