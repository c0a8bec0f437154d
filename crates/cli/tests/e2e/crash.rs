//! Crash safety: SIGKILL during many concurrent uploads, then restart and check that
//! every acknowledged file reads back, nothing partial is visible and fsck is clean.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use futures::StreamExt;
use serde_json::Value;

/// What the writers send before the kill.
struct Burst {
    writers: u64,
    /// Size of writer `w`'s `i`th file.
    size: fn(u64, u64) -> usize,
    /// Acknowledged uploads to wait for before the kill.
    acked_before_kill: usize,
    /// Whether the uploads must have shared index commits before the kill.
    grouped: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_concurrent_uploads_loses_nothing_acknowledged() {
    kill_during(Burst {
        writers: 8,
        size: |w, i| {
            let size = ((w * 7919 + i * 104_729) % (3 * 1024 * 1024)) as usize;
            if on_s3() && i % 4 == 0 {
                size + 6 * 1024 * 1024 // multipart on the S3 backend
            } else {
                size
            }
        },
        acked_before_kill: 60,
        grouped: false,
    })
    .await;
}

/// Small files are where uploads share commits (the index's group commit): the kill
/// lands while groups are being written, and still no acknowledged file is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_burst_of_small_uploads_loses_nothing_acknowledged() {
    kill_during(Burst {
        writers: 16,
        size: |w, i| ((w * 31 + i * 977) % 4096) as usize,
        acked_before_kill: 400,
        grouped: true,
    })
    .await;
}

async fn kill_during(burst: Burst) {
    let Burst {
        writers: writer_count,
        size: size_of,
        acked_before_kill,
        grouped,
    } = burst;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut s = Server::start(&data_dir);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..writer_count {
        let (url, acked) = (s.url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let client = http();
            for i in 0..400u64 {
                let data = bytes(size_of(w, i), w * 1000 + i + 1);
                let path = format!("crash/w{w}/1/file-{i}.bin");
                let mut req = client
                    .put(format!("{url}/v1/artifacts/{path}"))
                    .body(data.clone());
                if i % 2 == 0 {
                    req = req.header("x-artifact-digest", digest(&data));
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().unwrap().push((path, digest(&data)))
                    }
                    Ok(r) => panic!("unexpected {} before the kill", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // One upload that is certainly mid-body at the kill: it trickles for 60 s (a
    // multipart upload in progress on the S3 backend), longer than the wait below, so
    // that a loaded machine slow to acknowledge the others cannot see it end first.
    let slow_url = s.artifacts("crash/slow/1/partial.bin");
    let slow = tokio::spawn(async move {
        let chunks = futures::stream::iter(0..600).then(|_| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, std::io::Error>(vec![0x5a_u8; 256 * 1024])
        });
        let _ = http()
            .put(slow_url)
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await;
    });
    // Kill while uploads are in flight: once enough have been acknowledged.
    for _ in 0..450 {
        if acked.lock().unwrap().len() >= acked_before_kill && !s.temp_files().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if grouped {
        let metrics = s.metrics().await;
        let commits = counter(&metrics, "artifactstore_index_group_commits_total");
        let writes = counter(&metrics, "artifactstore_index_grouped_writes_total");
        assert!(
            writes > commits,
            "{writes} writes in {commits} commits: no upload shared a commit before the kill"
        );
        eprintln!("{writes} upload writes in {commits} index commits before the kill");
    }
    let temp_before_kill = s.temp_files().len();
    assert!(temp_before_kill >= 1, "no upload was in flight at the kill");
    s.kill9();
    slow.await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= acked_before_kill,
        "only {} uploads acknowledged before the kill",
        acked.len()
    );
    eprintln!(
        "{} acknowledged, {temp_before_kill} temp files at the kill",
        acked.len()
    );

    let s = Server::start(&data_dir);
    assert!(
        s.temp_files().is_empty(),
        "leftover temp files survived the restart"
    );
    let client = http();
    for (path, want) in &acked {
        let resp = client
            .get(format!("{}/v1/artifacts/{path}", s.url))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "acknowledged {path} lost: {}",
            resp.status()
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(&digest(&body), want, "{path} corrupted");
    }
    // Nothing partial is visible: every file any manifest lists reads back whole.
    let mut listed = 0;
    for w in 0..writer_count {
        let resp = client
            .get(format!("{}/v1/artifacts/crash/w{w}/1", s.url))
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            continue;
        }
        let m: Value = resp.json().await.unwrap();
        for f in m["files"].as_array().unwrap() {
            let url = format!(
                "{}/v1/artifacts/crash/w{w}/1/{}",
                s.url,
                f["path"].as_str().unwrap()
            );
            let body = client.get(url).send().await.unwrap().bytes().await.unwrap();
            assert_eq!(body.len() as u64, f["size"].as_u64().unwrap());
            assert_eq!(digest(&body), f["digest"].as_str().unwrap());
            listed += 1;
        }
    }
    assert!(listed >= acked.len());
    let partial = client
        .get(s.artifacts("crash/slow/1/partial.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        partial.status(),
        404,
        "the interrupted upload became visible"
    );
    drop(s); // SIGKILL again: fsck must be clean after that too
    if on_s3() {
        return; // fsck reads a local data directory
    }

    let out = std::process::Command::new(BIN)
        .args(["fsck", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("clean"));
}
