//! `GET …/{version}?format=tar` and `zip`: the archive holds every file of the version
//! with its exact bytes, path and creation time (checked by extracting it with the
//! system `tar`, and reading the zip with Python's zipfile and unzip),
//! its parameters are checked, and a blob missing from the store midway ends the body
//! with an error instead of a well-formed archive without that file.

mod support;
use support::app;

use std::io::Write;
use std::path::Path;

use artifactstore_blob::conformance::seeded_bytes;
use artifactstore_model::api::Manifest;
use artifactstore_model::{Digest, Hasher};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn call(app: &Router, method: Method, uri: &str, body: Body) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

async fn put(app: &Router, uri: &str, body: Body) {
    let (status, answer) = call(app, Method::PUT, uri, body).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{uri}: {}",
        String::from_utf8_lossy(&answer)
    );
}

/// `n` MiB of pseudo-random bytes as a streamed body, and their digest.
fn large_body(mib: usize, extra: usize) -> (Body, Digest, u64) {
    let mut hasher = Hasher::new();
    let chunk = move |i: usize| {
        let len = if i == mib { extra } else { 1 << 20 };
        seeded_bytes(len, i as u64 + 1000)
    };
    for i in 0..=mib {
        hasher.update(&chunk(i));
    }
    let stream = futures::stream::iter(
        (0..=mib).map(move |i| Ok::<_, std::io::Error>(Bytes::from(chunk(i)))),
    );
    (
        Body::from_stream(stream),
        hasher.finish(),
        (mib << 20) as u64 + extra as u64,
    )
}

fn digest_of_file(path: &Path) -> (Digest, u64) {
    artifactstore_blob::rehash_file(path).unwrap()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every regular file under `dir`, as a path relative to it.
fn files_under(dir: &Path, root: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            files_under(&e.path(), root, out);
        } else {
            let rel = e.path().strip_prefix(root).unwrap().to_owned();
            out.push(rel.to_str().unwrap().to_owned());
        }
    }
}

#[tokio::test]
async fn the_archive_extracts_to_exactly_the_manifest() {
    let (app, dir) = app().await;
    let long = format!("{}long-name.txt", "deep-directory/".repeat(8));
    assert!(long.len() > 100);
    let small: Vec<(String, Vec<u8>)> = vec![
        ("empty.txt".into(), Vec::new()),
        ("a/b/c/nested.bin".into(), seeded_bytes(1000, 1)),
        ("a/block.bin".into(), seeded_bytes(512, 2)),
        (long.clone(), seeded_bytes(77, 3)),
        ("données/résumé ü.txt".into(), b"non-ASCII path\n".to_vec()),
    ];
    for (path, data) in &small {
        let uri = format!("/v1/artifacts/ci/whole/1/{}", url_encode(path));
        put(&app, &uri, Body::from(data.clone())).await;
    }
    // Larger than 64 MiB, streamed both ways.
    let (body, big_digest, big_size) = large_body(65, 12_345);
    put(&app, "/v1/artifacts/ci/whole/1/big/large.bin", body).await;
    let (status, m) = call(
        &app,
        Method::POST,
        "/v1/artifacts/ci/whole/1/complete",
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let manifest: Manifest = serde_json::from_slice(&m).unwrap();
    assert_eq!(manifest.files.len(), small.len() + 1);

    let req = Request::builder()
        .uri("/v1/artifacts/ci/whole/latest?format=tar")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h[header::CONTENT_TYPE], "application/x-tar");
    assert_eq!(h["x-artifact-version"], "1");
    assert_eq!(
        h[header::CONTENT_DISPOSITION],
        "attachment; filename*=UTF-8''whole-1.tar"
    );
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    // Streamed to disk chunk by chunk, as a client would.
    let archive = dir.path().join("whole.tar");
    let mut out = std::fs::File::create(&archive).unwrap();
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len() as u64;
            out.write_all(&data).unwrap();
        }
    }
    drop(out);
    assert_eq!(total % 512, 0, "an archive is whole blocks");

    let extracted = dir.path().join("extracted");
    std::fs::create_dir(&extracted).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&extracted)
        .output()
        .expect("run tar");
    assert!(
        tar.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&tar.stderr)
    );

    let mut found = Vec::new();
    files_under(&extracted, &extracted, &mut found);
    found.sort();
    let listed: Vec<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(
        found, listed,
        "the archive holds the manifest's files, no others"
    );
    for f in &manifest.files {
        let local = extracted.join(&f.path);
        assert_eq!(digest_of_file(&local), (f.digest, f.size), "{}", f.path);
        let meta = std::fs::metadata(&local).unwrap();
        let mtime = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(mtime, f.created_at.unix_secs(), "{}: mtime", f.path);
    }
    let big = manifest
        .files
        .iter()
        .find(|f| f.path == "big/large.bin")
        .unwrap();
    assert_eq!((big.digest, big.size), (big_digest, big_size));
    assert!(manifest.files.iter().any(|f| f.path == long));

    // The same version as a zip: Python's zipfile checks each CRC-32 and hashes each
    // entry; unzip tests the archive on its own terms.
    let req = Request::builder()
        .uri("/v1/artifacts/ci/whole/1?format=zip")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/zip");
    assert_eq!(
        resp.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename*=UTF-8''whole-1.zip"
    );
    let zip = dir.path().join("whole.zip");
    let mut out = std::fs::File::create(&zip).unwrap();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            out.write_all(&data).unwrap();
        }
    }
    drop(out);
    let script = "import hashlib, sys, zipfile\n\
        z = zipfile.ZipFile(sys.argv[1])\n\
        assert z.testzip() is None\n\
        for i in z.infolist():\n    \
            h = hashlib.sha256()\n    \
            with z.open(i) as f:\n        \
                for b in iter(lambda: f.read(1 << 20), b''):\n            \
                    h.update(b)\n    \
            print(i.filename, i.file_size, 'sha256:' + h.hexdigest(), i.compress_type)\n";
    let listed = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&zip)
        .output()
        .expect("run python3");
    assert!(
        listed.status.success(),
        "zipfile: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let expected: String = manifest
        .files
        .iter()
        .map(|f| format!("{} {} {} 0\n", f.path, f.size, f.digest))
        .collect();
    assert_eq!(String::from_utf8(listed.stdout).unwrap(), expected);
    let unzip = std::process::Command::new("unzip")
        .arg("-tq")
        .arg(&zip)
        .output();
    match unzip {
        Ok(o) => assert!(
            o.status.success(),
            "unzip -t: {}",
            String::from_utf8_lossy(&o.stdout)
        ),
        Err(e) => eprintln!("unzip not run: {e}"),
    }
}

#[tokio::test]
async fn archives_follow_the_index_past_its_first_page() {
    let (app, dir) = app().await;
    // One more than the archive reads from the index per query.
    let n = 1001;
    for i in 0..n {
        let uri = format!("/v1/artifacts/ci/many/1/f{i:04}");
        put(&app, &uri, Body::from(format!("{i}"))).await;
    }
    let (status, tar) = call(
        &app,
        Method::GET,
        "/v1/artifacts/ci/many/1?format=tar",
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let archive = dir.path().join("many.tar");
    std::fs::write(&archive, &tar).unwrap();
    let list = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(list.status.success());
    let names: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("f{i:04}")).collect();
    assert_eq!(names, expected, "every file once, in path order");
}

#[tokio::test]
async fn unknown_formats_and_paging_with_a_format_are_refused() {
    let (app, _dir) = app().await;
    put(&app, "/v1/artifacts/ci/q/1/a", Body::from("a")).await;
    for uri in [
        "/v1/artifacts/ci/q/1?format=bogus",
        "/v1/artifacts/ci/q/1?format=TAR",
        "/v1/artifacts/ci/q/1?format=zip&limit=1",
        "/v1/artifacts/ci/q/1?format=tar&limit=1",
        "/v1/artifacts/ci/q/1?format=tar&cursor=a",
    ] {
        let (status, body) = call(&app, Method::GET, uri, Body::empty()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{uri}");
    }
    for format in ["tar", "zip"] {
        let uri = format!("/v1/artifacts/ci/q/1?format={format}");
        let (status, _) = call(&app, Method::GET, &uri, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn a_blob_missing_midway_truncates_the_body_with_an_error() {
    let (app, dir) = app().await;
    put(&app, "/v1/artifacts/ci/gap/1/a.txt", Body::from("first")).await;
    let second = seeded_bytes(10_000, 9);
    put(
        &app,
        "/v1/artifacts/ci/gap/1/b.bin",
        Body::from(second.clone()),
    )
    .await;
    put(&app, "/v1/artifacts/ci/gap/1/c.txt", Body::from("third")).await;
    let hex = Digest::of(&second).hex();
    std::fs::remove_file(
        dir.path()
            .join("blobs/blobs/sha256")
            .join(&hex[..2])
            .join(&hex),
    )
    .unwrap();
    let req = Request::builder()
        .uri("/v1/artifacts/ci/gap/1?format=tar")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the head precedes the blobs");
    let mut body = resp.into_body();
    let mut received = 0usize;
    let ended_with_error = loop {
        match body.frame().await {
            None => break false,
            Some(Err(_)) => break true,
            Some(Ok(f)) => received += f.into_data().map(|d| d.len()).unwrap_or(0),
        }
    };
    assert!(
        ended_with_error,
        "the body ended cleanly after {received} bytes without b.bin"
    );
    // a.txt's header and its block, then b.bin's header; nothing after it.
    assert_eq!(received, 3 * 512);
}
