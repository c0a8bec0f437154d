//! A version's manifest is paged by path: every file is answered exactly once across
//! the pages, the counts are the whole version's on each page, and the paging
//! parameters are bounded.

mod support;
use support::app;

use artifactstore_model::api::Manifest;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn call(app: &Router, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

async fn manifest(app: &Router, uri: &str) -> Manifest {
    let (status, body) = call(app, Method::GET, uri, Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn pages_cover_every_file_once_in_path_order() {
    let (app, _dir) = app().await;
    let mut expected = Vec::new();
    let mut total = 0u64;
    for i in 0..25u64 {
        // Paths whose byte order differs from their numeric order.
        let path = format!("dir{}/f{i}.txt", i % 3);
        let body = vec![b'x'; i as usize];
        let (status, _) = call(
            &app,
            Method::PUT,
            &format!("/v1/artifacts/ci/big/1/{path}"),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        expected.push(path);
        total += i;
    }
    expected.sort();
    let (status, _) = call(
        &app,
        Method::POST,
        "/v1/artifacts/ci/big/1/complete",
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let whole = manifest(&app, "/v1/artifacts/ci/big/latest").await;
    assert_eq!(
        whole.files.len(),
        25,
        "the default page holds a small version whole"
    );
    assert_eq!(whole.next_cursor, None);
    assert_eq!((whole.file_count, whole.total_size), (25, total));

    let mut seen = Vec::new();
    let mut uri = "/v1/artifacts/ci/big/1?limit=10".to_owned();
    let mut pages = 0;
    loop {
        let page = manifest(&app, &uri).await;
        pages += 1;
        assert!(page.files.len() <= 10);
        assert_eq!(
            (page.file_count, page.total_size),
            (25, total),
            "totals on every page"
        );
        seen.extend(page.files.into_iter().map(|f| f.path));
        match page.next_cursor {
            Some(c) => {
                let c: String = url_encode(&c);
                uri = format!("/v1/artifacts/ci/big/1?limit=10&cursor={c}");
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected, "every file once, by path");
}

#[tokio::test]
async fn paging_parameters_are_bounded() {
    let (app, _dir) = app().await;
    let (status, _) = call(&app, Method::PUT, "/v1/artifacts/ci/p/1/a", b"a".to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    let long = "a".repeat(4097);
    for uri in [
        "/v1/artifacts/ci/p/1?limit=0".to_owned(),
        "/v1/artifacts/ci/p/1?limit=10001".to_owned(),
        "/v1/artifacts/ci/p/1?limit=x".to_owned(),
        "/v1/artifacts/ci/p/1?page=2".to_owned(),
        format!("/v1/artifacts/ci/p/1?cursor={long}"),
        "/v1/artifacts/ci/p/1?cursor=a%00b".to_owned(),
        "/v1/artifacts/ci/p/1?cursor=%0A".to_owned(),
    ] {
        let (status, body) = call(&app, Method::GET, &uri, Vec::new()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{uri}");
    }
    let page = manifest(&app, "/v1/artifacts/ci/p/1?limit=10000&cursor=a").await;
    assert!(page.files.is_empty(), "nothing after the last path");
    assert_eq!(page.file_count, 1);
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
