//! End-to-end tests of the HTTP API against the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;
use reqwest::StatusCode;
use serde_json::Value;

async fn put(s: &Server, rest: &str, data: Vec<u8>) -> reqwest::Response {
    http()
        .put(s.artifacts(rest))
        .body(data)
        .send()
        .await
        .unwrap()
}

async fn json(resp: reqwest::Response) -> Value {
    resp.json().await.unwrap()
}

async fn error_code(resp: reqwest::Response) -> String {
    let v = json(resp).await;
    assert!(v["error"]["message"].is_string(), "error shape: {v}");
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn round_trips_empty_small_and_large_files_with_matching_digests() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let large = bytes(64 * 1024 * 1024 + 4099, 1);
    let cases = [
        ("empty.bin", Vec::new()),
        (
            "reports/cmis-summary.md",
            b"# CMIS summary\nall green\n".to_vec(),
        ),
        ("deep/nested/dir/tree/large.bin", large),
    ];
    for (path, data) in &cases {
        let resp = http()
            .put(s.artifacts(&format!("ci/tck/1/{path}")))
            .header("content-type", "application/x-test")
            .header("x-artifact-digest", digest(data))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{path}");
        let v = json(resp).await;
        assert_eq!(v["digest"], digest(data));
        assert_eq!(v["size"], data.len());
        assert_eq!(v["path"], *path);
    }
    for (path, data) in &cases {
        let resp = http()
            .get(s.artifacts(&format!("ci/tck/1/{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers().clone();
        assert_eq!(h["etag"], format!("\"{}\"", digest(data)).as_str());
        assert_eq!(h["content-length"], data.len().to_string().as_str());
        assert_eq!(h["content-type"], "application/x-test");
        let body = resp.bytes().await.unwrap();
        assert_eq!(sha256_hex(&body), sha256_hex(data), "{path} read back");
    }
    let head = http()
        .head(s.artifacts("ci/tck/1/empty.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "0");

    let manifest = json(http().get(s.artifacts("ci/tck/1")).send().await.unwrap()).await;
    assert_eq!(manifest["state"], "open");
    assert_eq!(manifest["file_count"], 3);
    let paths: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![
            "deep/nested/dir/tree/large.bin",
            "empty.bin",
            "reports/cmis-summary.md"
        ]
    );
    assert!(s.temp_files().is_empty());
}

#[tokio::test]
async fn ranged_reads_and_conditional_gets() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let data = bytes(100_000, 2);
    assert_eq!(
        put(&s, "ci/tck/1/r.bin", data.clone()).await.status(),
        StatusCode::CREATED
    );
    let url = s.artifacts("ci/tck/1/r.bin");
    let n = data.len();
    for (range, expect, content_range) in [
        ("bytes=0-0", &data[..1], format!("bytes 0-0/{n}")),
        (
            "bytes=99999-99999",
            &data[n - 1..],
            format!("bytes 99999-99999/{n}"),
        ),
        ("bytes=-1", &data[n - 1..], format!("bytes 99999-99999/{n}")),
        (
            "bytes=1000-",
            &data[1000..],
            format!("bytes 1000-99999/{n}"),
        ),
        ("bytes=10-19", &data[10..20], format!("bytes 10-19/{n}")),
        (
            "bytes=99990-200000",
            &data[99990..],
            format!("bytes 99990-99999/{n}"),
        ),
    ] {
        let resp = http()
            .get(&url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(resp.headers()["content-range"], content_range.as_str());
        assert_eq!(resp.bytes().await.unwrap().as_ref(), expect, "{range}");
    }
    let resp = http()
        .get(&url)
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes */{n}").as_str()
    );
    assert_eq!(error_code(resp).await, "range_not_satisfiable");

    let etag = format!("\"{}\"", digest(&data));
    let resp = http()
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let resp = http()
        .get(&url)
        .header("if-none-match", "\"sha256:other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // By digest too.
    let resp = http()
        .get(format!("{}/v1/blobs/{}", s.url, digest(&data)))
        .header("range", "bytes=5-9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[5..10]);
    let resp = http()
        .get(format!("{}/v1/blobs/{}", s.url, digest(b"nope")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = http()
        .get(format!("{}/v1/blobs/sha256:xyz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn conflicts_completion_and_latest() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let a = b"first".to_vec();
    let b = b"second".to_vec();
    assert_eq!(
        put(&s, "ci/tck/1/f.txt", a.clone()).await.status(),
        StatusCode::CREATED
    );
    // Same bytes again: idempotent.
    let again = put(&s, "ci/tck/1/f.txt", a.clone()).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(json(again).await["created"], false);
    // Different bytes: 409 and the stored file is untouched.
    let conflict = put(&s, "ci/tck/1/f.txt", b.clone()).await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(conflict).await, "file_conflict");
    let conflict = http()
        .put(s.artifacts("ci/tck/1/f.txt"))
        .header("x-artifact-digest", digest(&b))
        .body(b.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert_eq!(
        http()
            .get(s.artifacts("ci/tck/1/f.txt"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        a
    );

    // latest does not exist until a version completes.
    let resp = http()
        .get(s.artifacts("ci/tck/latest/f.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "no_complete_version");

    let done = http()
        .post(s.artifacts("ci/tck/1/complete"))
        .json(&serde_json::json!({"labels": {"branch": "main"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let m = json(done).await;
    assert_eq!(m["state"], "complete");
    assert_eq!(m["labels"]["branch"], "main");
    // Idempotent.
    assert_eq!(
        http()
            .post(s.artifacts("ci/tck/1/complete"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Any other upload to a complete version is refused; an identical retry still succeeds.
    let late = put(&s, "ci/tck/1/new.txt", b"late".to_vec()).await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(late).await, "version_complete");
    assert_eq!(
        put(&s, "ci/tck/1/f.txt", a.clone()).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        put(&s, "ci/tck/1/f.txt", b.clone()).await.status(),
        StatusCode::CONFLICT
    );
    // Labels are frozen too.
    let relabel = http()
        .patch(s.artifacts("ci/tck/1"))
        .json(&serde_json::json!({"labels": {"x": "y"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(relabel.status(), StatusCode::CONFLICT);

    let resp = http()
        .get(s.artifacts("ci/tck/latest/f.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-artifact-version"], "1");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), a);

    // An open version 2 does not move latest; completing it does.
    assert_eq!(
        put(&s, "ci/tck/2/f.txt", b.clone()).await.status(),
        StatusCode::CREATED
    );
    let patched = http()
        .patch(s.artifacts("ci/tck/2"))
        .json(&serde_json::json!({"labels": {"run": "2"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(json(patched).await["labels"]["run"], "2");
    let latest = json(
        http()
            .get(s.artifacts("ci/tck/latest"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(latest["version"], "1");
    http()
        .post(s.artifacts("ci/tck/2/complete"))
        .send()
        .await
        .unwrap();
    let latest = json(
        http()
            .get(s.artifacts("ci/tck/latest"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(latest["version"], "2");
    assert_eq!(latest["labels"]["run"], "2");

    // Deleting the latest version moves latest back; the name cannot be reused.
    let del = http().delete(s.artifacts("ci/tck/2")).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::OK);
    assert_eq!(json(del).await["state"], "deleted");
    let latest = json(
        http()
            .get(s.artifacts("ci/tck/latest"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(latest["version"], "1");
    let gone = http()
        .get(s.artifacts("ci/tck/2/f.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let reuse = put(&s, "ci/tck/2/g.txt", b"g".to_vec()).await;
    assert_eq!(reuse.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(reuse).await, "version_deleted");
    // The blob of the deleted version is kept (another version may share it later).
    assert!(s.holds_blob(&b));
    // Uploading to the alias is refused.
    assert_eq!(
        put(&s, "ci/tck/latest/f.txt", a.clone()).await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let data = b"payload that must not be stored".to_vec();

    let mismatch = http()
        .put(s.artifacts("ci/tck/1/f.txt"))
        .header("x-artifact-digest", digest(b"something else"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(mismatch.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(mismatch).await, "digest_mismatch");

    let bad_digest = http()
        .put(s.artifacts("ci/tck/1/f.txt"))
        .header("x-artifact-digest", "md5:abc")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(bad_digest).await, "invalid_digest");

    for (rest, code) in [
        ("bad%20ns/tck/1/f.txt", "invalid_name"),
        ("ci/-tck/1/f.txt", "invalid_name"),
        ("ci/tck/ver%2Fsion/f.txt", "invalid_name"),
        ("ci/tck/1/a/../f.txt", "invalid_path"),
        ("ci/tck/1/a/%2E%2E/f.txt", "invalid_path"),
        ("ci/tck/1/./f.txt", "invalid_path"),
        ("ci/tck/1/a//f.txt", "invalid_path"),
        ("ci/tck/1/%2Fetc/passwd", "invalid_path"),
        ("ci/tck/1/a%5Cb", "invalid_path"),
        ("ci/tck/1/a%0Ab", "invalid_path"),
        ("ci/tck/1/a%00b", "invalid_path"),
    ] {
        // reqwest normalises `..` in URLs, so send these on a raw socket.
        let (status, body) = raw_put(&s, &format!("/v1/artifacts/{rest}"), &data);
        assert_eq!(status, 400, "{rest}: {body}");
        assert!(
            body.contains(&format!("\"code\":\"{code}\"")),
            "{rest}: {body}"
        );
    }
    assert!(!s.holds_blob(&data), "refused upload left a blob");
    assert!(s.temp_files().is_empty());
    let ns = json(
        http()
            .get(format!("{}/v1/artifacts", s.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        ns["items"].as_array().unwrap().len(),
        0,
        "refused uploads created a version: {ns}"
    );

    // Too large, by header and by streamed length.
    let s2 = Server::start_with(&dir.path().join("small"), &["--max-upload-size", "1000"]);
    let resp = http()
        .put(s2.artifacts("ci/tck/1/big"))
        .body(vec![7u8; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let stream = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![9u8; 100])));
    let resp = http()
        .put(s2.artifacts("ci/tck/1/big"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(resp).await, "payload_too_large");
    assert!(s2.temp_files().is_empty());
    assert!(!s2.holds_blob(&[9u8; 2000]) && !s2.holds_blob(&[9u8; 1000]));
}

/// Sends a PUT with a raw request line, so that the path reaches the server untouched.
fn raw_put(s: &Server, path: &str, body: &[u8]) -> (u16, String) {
    let addr = s.url.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n",
        auth_header_line(),
        body.len()
    )
    .unwrap();
    conn.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = conn.read_to_string(&mut resp);
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, resp)
}

#[tokio::test]
async fn interrupted_and_short_bodies_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let data = bytes(3 * 1024 * 1024, 3);
    let addr = s.url.trim_start_matches("http://").to_owned();

    // Client promises 3 MiB, sends 1 MiB and disconnects.
    {
        let mut conn = TcpStream::connect(&addr).unwrap();
        write!(
            conn,
            "PUT /v1/artifacts/ci/tck/1/cut.bin HTTP/1.1\r\nHost: {addr}\r\n{}Content-Length: {}\r\n\r\n",
            auth_header_line(),
            data.len()
        )
        .unwrap();
        conn.write_all(&data[..1024 * 1024]).unwrap();
        conn.shutdown(std::net::Shutdown::Both).unwrap();
    }
    // Content-Length shorter than what the digest covers: the server reads only what was
    // declared, the digest check fails, nothing is stored.
    {
        let mut conn = TcpStream::connect(&addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            conn,
            "PUT /v1/artifacts/ci/tck/1/short.bin HTTP/1.1\r\nHost: {addr}\r\n{}X-Artifact-Digest: {}\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
            auth_header_line(),
            digest(&data)
        )
        .unwrap();
        let _ = conn.write_all(&data);
        let mut resp = String::new();
        let _ = conn.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert!(resp.contains("digest_mismatch"), "{resp}");
    }
    assert!(
        eventually(10, || s.temp_files().is_empty()).await,
        "temp file left behind"
    );
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = s.metrics().await;
        if metrics.contains("artifactstore_uploads_in_flight 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("artifactstore_uploads_in_flight 0"),
        "{metrics}"
    );
    for p in ["cut.bin", "short.bin"] {
        let resp = http()
            .get(s.artifacts(&format!("ci/tck/1/{p}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{p}");
    }
    assert!(
        !s.holds_blob(&data[..1024 * 1024]) && !s.holds_blob(&data[..1000]) && !s.holds_blob(&data)
    );
}

#[tokio::test]
async fn listings_paginate_newest_first_with_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    for ns in ["alpha", "beta", "gamma"] {
        assert_eq!(
            put(&s, &format!("{ns}/pkg/1/f"), ns.as_bytes().to_vec())
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    for name in ["n1", "n2", "n3", "other"] {
        put(&s, &format!("alpha/{name}/1/f"), name.as_bytes().to_vec()).await;
    }
    for v in 1..=7 {
        put(
            &s,
            &format!("alpha/pkg/2026-11-{v:02}/f"),
            format!("v{v}").into_bytes(),
        )
        .await;
    }
    http()
        .post(s.artifacts("alpha/pkg/2026-11-03/complete"))
        .send()
        .await
        .unwrap();

    // Namespaces, two per page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/artifacts?limit=2", s.url);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = json(http().get(url).send().await.unwrap()).await;
        for i in page["items"].as_array().unwrap() {
            seen.push(i["name"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec!["alpha", "beta", "gamma"]);

    let names = json(
        http()
            .get(s.artifacts("alpha?prefix=n"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = names["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["n1", "n2", "n3"]);

    // Versions newest first across pages of 3.
    let mut versions = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = s.artifacts("alpha/pkg?limit=3");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = json(http().get(url).send().await.unwrap()).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        for v in items {
            versions.push((
                v["version"].as_str().unwrap().to_owned(),
                v["state"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<(String, String)> = (1..=7)
        .rev()
        .map(|v| {
            (
                format!("2026-11-{v:02}"),
                if v == 3 { "complete" } else { "open" }.to_owned(),
            )
        })
        .collect();
    expected.push(("1".to_owned(), "open".to_owned())); // the first one, created above
    assert_eq!(versions, expected);

    let bad = http()
        .get(format!("{}/v1/artifacts?limit=0", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad = http()
        .get(format!("{}/v1/artifacts?bogus=1", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(bad).await, "invalid_query");
}

#[tokio::test]
async fn events_are_ordered_and_long_poll_wakes_up() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    put(&s, "ci/tck/1/a.txt", b"a".to_vec()).await;
    put(&s, "ci/tck/1/b.txt", b"bb".to_vec()).await;
    http()
        .post(s.artifacts("ci/tck/1/complete"))
        .send()
        .await
        .unwrap();
    http().delete(s.artifacts("ci/tck/1")).send().await.unwrap();

    let page = json(
        http()
            .get(format!("{}/v1/events", s.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let events = page["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        vec![
            "version.created",
            "file.added",
            "file.added",
            "version.completed",
            "version.deleted"
        ]
    );
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(events[2]["path"], "b.txt");
    assert_eq!(events[2]["digest"], digest(b"bb"));
    assert_eq!(events[2]["size"], 2);
    assert!(events[0]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(page["next_after"], 5);

    let page = json(
        http()
            .get(format!("{}/v1/events?after=3&limit=1", s.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page["events"][0]["seq"], 4);
    assert_eq!(page["events"].as_array().unwrap().len(), 1);

    // A follower waiting after seq 5 is woken by the next upload.
    let url = format!("{}/v1/events?after=5&wait=20", s.url);
    let waiter = tokio::spawn(async move {
        http()
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "long-poll returned before any event");
    let started = std::time::Instant::now();
    put(&s, "ci/tck/2/c.txt", b"c".to_vec()).await;
    let page = waiter.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(page["events"][0]["seq"], 6);
    assert_eq!(page["events"][0]["type"], "version.created");

    // An empty wait returns an empty page.
    let page = json(
        http()
            .get(format!("{}/v1/events?after=100&wait=1", s.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0);
    assert_eq!(page["next_after"], 100);
}

#[tokio::test]
async fn operational_endpoints_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"));
    let h = json(
        http()
            .get(format!("{}/healthz", s.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(h["status"], "ok");
    let r = http()
        .get(format!("{}/readyz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json(r).await["checks"]["index"], "ok");

    put(&s, "ci/tck/1/f", vec![1u8; 1234]).await;
    http()
        .get(s.artifacts("ci/tck/1/f"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    http()
        .get(s.artifacts("ci/tck/1/missing"))
        .send()
        .await
        .unwrap();
    let m = http()
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap();
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let m = m.text().await.unwrap();
    for needle in [
        "artifactstore_bytes_received_total 1234",
        "artifactstore_bytes_sent_total 1234",
        "artifactstore_http_requests_total{method=\"PUT\",route=\"/v1/artifacts/{namespace}/{name}/{version}/{*path}\",status=\"201\"} 1",
        "artifactstore_http_errors_total{code=\"file_not_found\"} 1",
        "artifactstore_http_request_duration_seconds_bucket{route=\"/v1/artifacts/{namespace}/{name}/{version}/{*path}\",le=\"+Inf\"} 3",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }

    let resp = http()
        .get(format!("{}/v2/nothing", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, "route_not_found");
    let resp = http()
        .post(format!("{}/v1/events", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(resp).await, "method_not_allowed");

    // A file literally named `complete` is still a file.
    assert_eq!(
        put(&s, "ci/tck/1/complete", b"c".to_vec()).await.status(),
        StatusCode::CREATED
    );
    let got = http()
        .get(s.artifacts("ci/tck/1/complete"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"c");
}

#[tokio::test]
async fn serve_refuses_non_loopback_without_the_insecure_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--insecure-no-auth"),
        "{}",
        stderr(&out)
    );

    let bad_config = dir.path().join("c.toml");
    std::fs::write(&bad_config, "listen = \"127.0.0.1:0\"\nno_such_key = 1\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&bad_config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no_such_key"), "{}", stderr(&out));

    // With the flag it serves, and warns.
    let mut s = Server::start_with(&dir.path().join("open"), &["--insecure-no-auth"]);
    assert!(s.url.starts_with("http://127.0.0.1:"));
    let wide_log = dir.path().join("wide.stderr.log");
    let mut wide = std::process::Command::new(BIN);
    wide.args([
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--insecure-no-auth",
        "--data-dir",
    ])
    .arg(dir.path().join("wide"));
    let (mut s2, url) = spawn_announcing(wide, "artifactstore listening on ", &wide_log);
    assert!(url.contains("0.0.0.0"), "{url}");
    let _ = s2.kill();
    s2.wait().unwrap();
    assert!(
        std::fs::read_to_string(&wide_log)
            .unwrap()
            .contains("WITHOUT authentication")
    );
    // A second server on the same data directory is refused.
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    assert!(s.stop().success());
}

/// The same server on PostgreSQL instead of the embedded SQLite index. CI runs it with a
/// real server (scripts/with-postgres.sh); without one, there is nothing to connect to.
#[tokio::test]
async fn serves_on_postgresql_when_configured() {
    let Ok(admin) = std::env::var("ARTIFACTSTORE_TEST_POSTGRES_URL") else {
        eprintln!("ARTIFACTSTORE_TEST_POSTGRES_URL not set: PostgreSQL end-to-end test not run");
        return;
    };
    let db = format!(
        "e2e_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let psql_ok = std::process::Command::new("psql")
        .arg(&admin)
        .args(["-qc", &format!("CREATE DATABASE {db}")])
        .status()
        .unwrap()
        .success();
    assert!(psql_ok, "create database");
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(&dir.path().join("data"), &["--database-url", &url]);
    let ready = json(
        http()
            .get(format!("{}/readyz", s.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ready["database"], "postgres");
    let data = bytes(200_000, 11);
    assert_eq!(
        put(&s, "pg/tck/1/a.bin", data.clone()).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put(&s, "pg/tck/1/a.bin", b"other".to_vec()).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        http()
            .post(s.artifacts("pg/tck/1/complete"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let got = http()
        .get(s.artifacts("pg/tck/latest/a.bin"))
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        &data[data.len() - 10..]
    );
    let names = json(http().get(s.artifacts("pg?prefix=t")).send().await.unwrap()).await;
    assert_eq!(names["items"][0]["name"], "tck");
    let events = json(
        http()
            .get(format!("{}/v1/events", s.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["version.created", "file.added", "version.completed"]
    );
    // State survives a restart: it lives in PostgreSQL.
    assert!(s.stop().success());
    let s = Server::start_with(&dir.path().join("data"), &["--database-url", &url]);
    let m = json(
        http()
            .get(s.artifacts("pg/tck/latest"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(m["version"], "1");
    assert_eq!(m["files"][0]["digest"], digest(&data));
}

/// Scale-out: two server processes on one PostgreSQL database and one bucket, with
/// concurrent writers of the same name on both. Needs both a live S3 store and
/// PostgreSQL (CI runs the live stage inside scripts/with-postgres.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_postgresql_and_the_bucket() {
    let Some(url) = replica_database("replicas") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let a = Server::start_replica(&dir.path().join("a"), &shared, &["--database-url", &url]);
    let b = Server::start_replica(&dir.path().join("b"), &shared, &["--database-url", &url]);

    // B follows the log while A and B write the same version concurrently.
    let follow = format!("{}/v1/events?after=0&wait=20", b.url);
    let follower =
        tokio::spawn(async move { json(http().get(follow).send().await.unwrap()).await });
    let mut writers = Vec::new();
    for i in 0..30u64 {
        let base = if i % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        writers.push(tokio::spawn(async move {
            let data = bytes(1000 + i as usize * 7, 100 + i);
            let resp = http()
                .put(format!("{base}/v1/artifacts/shared/run/1/f{i}.bin"))
                .header("x-artifact-digest", digest(&data))
                .body(data)
                .send()
                .await
                .unwrap();
            resp.status()
        }));
    }
    for w in writers {
        assert_eq!(w.await.unwrap(), StatusCode::CREATED);
    }
    let first = follower.await.unwrap();
    assert!(
        !first["events"].as_array().unwrap().is_empty(),
        "B's long-poll saw no event"
    );

    assert_eq!(
        http()
            .post(a.artifacts("shared/run/1/complete"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let m = json(
        http()
            .get(b.artifacts("shared/run/latest"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(m["version"], "1");
    assert_eq!(m["file_count"], 30);
    for i in [0u64, 1, 29] {
        let got = http()
            .get(b.artifacts(&format!("shared/run/latest/f{i}.bin")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.bytes().await.unwrap().as_ref(),
            bytes(1000 + i as usize * 7, 100 + i)
        );
    }
    let events = json(
        http()
            .get(format!("{}/v1/events?limit=1000", a.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let events = events["events"].as_array().unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=32).collect::<Vec<i64>>(),
        "gap-free across replicas"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "version.created")
            .count(),
        1
    );
}

/// A replica that starts on a shared PostgreSQL database (running migrations and its
/// start-up work) leaves another replica's upload in flight alone: the upload, half
/// sent when the second replica starts, completes and is visible through both. The
/// database keeps no per-upload rows that a start-up could wipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_starting_replica_leaves_an_upload_in_flight_alone() {
    let Ok(admin) = std::env::var("ARTIFACTSTORE_TEST_POSTGRES_URL") else {
        eprintln!("ARTIFACTSTORE_TEST_POSTGRES_URL not set: replica start-up test not run");
        return;
    };
    let db = format!("replica_start_{}", std::process::id());
    let psql = |url: &str, sql: &str| {
        let out = std::process::Command::new("psql")
            .arg(url)
            .args(["-qtAc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    psql(&admin, &format!("CREATE DATABASE {db}"));
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let a = Server::start_replica(&dir.path().join("a"), &shared, &["--database-url", &url]);

    let data = bytes(256 * 1024, 7);
    let addr = a.url.trim_start_matches("http://").to_owned();
    let head = format!(
        "PUT /v1/artifacts/shared/run/1/in-flight.bin HTTP/1.1\r\nHost: {addr}\r\n{}Content-Length: {}\r\nX-Artifact-Digest: {}\r\nConnection: close\r\n\r\n",
        auth_header_line(),
        data.len(),
        digest(&data)
    );
    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&data[..data.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // A is now inside the upload

    let b = Server::start_replica(&dir.path().join("b"), &shared, &["--database-url", &url]);
    assert_eq!(
        http()
            .get(format!("{}/readyz", b.url))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    conn.write_all(&data[data.len() / 2..]).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    let got = http()
        .get(a.artifacts("shared/run/1/in-flight.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    let m = json(
        http()
            .get(b.artifacts("shared/run/1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(m["files"][0]["path"], "in-flight.bin");
    assert_eq!(m["files"][0]["digest"], digest(&data));
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'uploads'"
        ),
        "0",
        "the per-upload table is gone"
    );
}
