//! The S3 backend against an in-process S3 server (s3s-fs, real SigV4 checks), and live
//! against the store that `scripts/s3-fixture.sh` starts (Garage in CI).

#![cfg(feature = "s3")]

use std::sync::Arc;
use std::time::Duration;

use artifactstore_blob::conformance::{self, chunked, unique_bytes};
use artifactstore_blob::s3::{BackendErrorKind, S3BlobStore, S3Config};
use artifactstore_blob::{BlobStore, Error};
use artifactstore_credentials::sources::StaticSource;
use artifactstore_credentials::{RefreshPolicy, RefreshingCache};
use artifactstore_model::secret::{Secret, SecretRef};
use hyper_util::rt::{TokioExecutor, TokioIo};

struct InProcessS3 {
    endpoint: String,
    access_key: String,
    secret_key: String,
    _root: tempfile::TempDir,
}

/// Starts s3s-fs on 127.0.0.1:0 with one generated key pair and one bucket.
async fn start_s3s(bucket: &str) -> InProcessS3 {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(bucket)).unwrap();
    let access_key = format!("AK{}", hex_of(&unique_bytes(8)));
    let secret_key = format!("SK{}", hex_of(&unique_bytes(16)));
    let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(
        access_key.clone(),
        secret_key.clone(),
    ));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    InProcessS3 {
        endpoint,
        access_key,
        secret_key,
        _root: root,
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn config(endpoint: &str, bucket: &str, prefix: &str) -> S3Config {
    let mut cfg = S3Config::new(bucket);
    cfg.endpoint_url = Some(endpoint.to_owned());
    cfg.prefix = prefix.to_owned();
    cfg.part_size = 5 * 1024 * 1024;
    cfg.concurrency = 2;
    cfg.max_attempts = 2;
    cfg.connect_timeout = Duration::from_secs(3);
    cfg
}

/// Long-lived keys behind the refreshing cache, as production wires the static source.
fn creds(ak: &str, sk: &str) -> Arc<RefreshingCache> {
    static_cache(Secret::new(ak), Secret::new(sk))
}

fn static_cache(access_key_id: Secret, secret_access_key: Secret) -> Arc<RefreshingCache> {
    Arc::new(RefreshingCache::new(
        Arc::new(StaticSource {
            access_key_id,
            secret_access_key,
            session_token: None,
        }),
        RefreshPolicy::default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_backend_passes_the_conformance_suite_on_in_process_s3() {
    let s3 = start_s3s("conformance").await;
    let store = Arc::new(
        S3BlobStore::new(
            config(&s3.endpoint, "conformance", "it/"),
            creds(&s3.access_key, &s3.secret_key),
        )
        .unwrap(),
    );
    store.head_bucket().await.expect("bucket reachable");
    store.probe().await.expect("probe");
    // s3s-fs honours If-None-Match on PUT and on completion alike.
    assert_eq!(
        (store.conditional_create(), store.conditional_complete()),
        (Some(true), Some(true))
    );
    conformance::run_all(store.clone()).await;
    // s3s-fs cannot list multipart uploads (501); the live run checks that none is left.
    match store.multipart_uploads_in_progress().await {
        Ok(n) => assert_eq!(n, 0, "an aborted upload was left behind"),
        Err(Error::Backend {
            kind: BackendErrorKind::NotImplemented,
            ..
        }) => {}
        Err(e) => panic!("{e}"),
    }
    assert_eq!(
        store.sweep_stale(Duration::ZERO).await.unwrap(),
        (0, 0),
        "staging objects left behind"
    );
}

fn assert_backend(e: &Error, want: BackendErrorKind, must_name: &[&str], must_not: &[&str]) {
    let msg = e.to_string();
    match e {
        Error::Backend { kind, .. } => assert_eq!(*kind, want, "{msg}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    for n in must_name {
        assert!(msg.contains(n), "{msg:?} should name {n:?}");
    }
    for n in must_not {
        assert!(!msg.contains(n), "{msg:?} leaks {n:?}");
        assert!(
            !format!("{e:?}").contains(n),
            "debug of {msg:?} leaks {n:?}"
        );
    }
}

#[tokio::test]
async fn s3_errors_say_what_is_wrong_and_never_show_the_secret() {
    let s3 = start_s3s("present").await;
    let canary = format!("canary-secret-{}", hex_of(&unique_bytes(8)));

    let wrong = S3BlobStore::new(
        config(&s3.endpoint, "present", ""),
        creds(&s3.access_key, &canary),
    )
    .unwrap();
    let e = wrong.head_bucket().await.unwrap_err();
    assert_backend(
        &e,
        BackendErrorKind::SignatureMismatch,
        &[&s3.endpoint, "present"],
        &[&canary],
    );
    // A blob write starts with a HEAD, whose 403 carries no error code: it can only say
    // "access denied". Either way it names the endpoint and hides the secret.
    let e = wrong.put(chunked(b"x"), None).await.unwrap_err();
    let kind = match &e {
        Error::Backend { kind, .. } => *kind,
        other => panic!("expected a backend error, got {other:?}"),
    };
    assert!(
        matches!(
            kind,
            BackendErrorKind::SignatureMismatch | BackendErrorKind::AccessDenied
        ),
        "{e}"
    );
    assert_backend(&e, kind, &[&s3.endpoint], &[&canary]);

    let missing = S3BlobStore::new(
        config(&s3.endpoint, "absent", ""),
        creds(&s3.access_key, &s3.secret_key),
    )
    .unwrap();
    let e = missing.head_bucket().await.unwrap_err();
    assert_backend(
        &e,
        BackendErrorKind::BucketNotFound,
        &["absent"],
        &[&s3.secret_key],
    );

    let nowhere =
        S3BlobStore::new(config("http://127.0.0.1:1", "b", ""), creds("AK", &canary)).unwrap();
    let e = nowhere.head_bucket().await.unwrap_err();
    assert_backend(
        &e,
        BackendErrorKind::Unreachable,
        &["127.0.0.1:1"],
        &[&canary],
    );
    assert!(e.is_retryable());
}

/// Whether a test that needs a live dependency (`what`) runs: the same rule and message
/// as `live_or_skip` in crates/cli/tests/common (another crate's tests, so a copy). When
/// the dependency is missing: with `require_var` set (to anything but empty or `0`;
/// scripts/test.sh sets it to 1) the test fails; otherwise it prints a `NOT run` line,
/// past the test harness's capture, and the test returns.
fn live_or_skip(present: bool, what: &str, require_var: &str) -> bool {
    use std::io::Write as _;
    if present {
        return true;
    }
    let required = std::env::var_os(require_var).is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{what} is required ({require_var} is set) but missing"
    );
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let _ = writeln!(
        std::io::stderr(),
        "{test}: NOT run: {what} is missing (set {require_var}=1 to make that a failure)"
    );
    false
}

/// Live against the fixture's store. In CI `ARTIFACTSTORE_REQUIRE_LIVE_S3=1` turns a
/// missing store into a failure instead of a skip.
fn live_store(prefix: &str) -> Option<S3BlobStore> {
    let endpoint = std::env::var("ARTIFACTSTORE_S3_ENDPOINT_URL");
    let what =
        "a live S3 store (ARTIFACTSTORE_S3_ENDPOINT_URL; scripts/s3-fixture.sh garage -- ...)";
    if !live_or_skip(endpoint.is_ok(), what, "ARTIFACTSTORE_REQUIRE_LIVE_S3") {
        return None;
    }
    let endpoint = endpoint.unwrap();
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let mut warnings = Vec::new();
    let mut resolve = |k: &str| {
        SecretRef::parse(&var(k))
            .unwrap()
            .resolve(&mut warnings)
            .unwrap()
    };
    let ak = resolve("ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF");
    let sk = resolve("ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF");
    let mut cfg = config(&endpoint, &var("ARTIFACTSTORE_S3_BUCKET"), prefix);
    cfg.region = std::env::var("ARTIFACTSTORE_S3_REGION").unwrap_or_else(|_| "us-east-1".into());
    cfg.max_attempts = 3;
    Some(S3BlobStore::new(cfg, static_cache(ak, sk)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_s3_backend_passes_the_conformance_suite() {
    let prefix = format!("conformance-{}/", hex_of(&unique_bytes(6)));
    let Some(store) = live_store(&prefix) else {
        return;
    };
    let store = Arc::new(store);
    store.head_bucket().await.expect("live bucket reachable");
    let conditional = store.probe().await.expect("probe");
    eprintln!(
        "live store: conditional create {}",
        if conditional {
            "supported"
        } else {
            "not supported (HEAD-then-PUT)"
        }
    );
    // What the probe must find on the stores CI runs (docs/compatibility.md).
    let facts = (store.conditional_create(), store.conditional_complete());
    match std::env::var("ARTIFACTSTORE_FIXTURE_SERVER").as_deref() {
        Ok("garage") => assert_eq!(facts, (Some(false), Some(false))),
        // Honoured on PUT, ignored on completion.
        Ok("ceph") => assert_eq!(facts, (Some(true), Some(false))),
        _ => {}
    }
    conformance::run_all(store.clone()).await;
    assert_eq!(store.multipart_uploads_in_progress().await.unwrap(), 0);
    assert_eq!(store.sweep_stale(Duration::ZERO).await.unwrap(), (0, 0));
}

/// A presigned GET reads the blob's exact bytes (whole and ranged) without other
/// credentials, asks for the answer headers it was given, and is refused once it has
/// expired. Stores that honour `response-content-*` (s3s, Garage, Ceph RGW) are held to
/// the headers too.
async fn presigned_gets(store: &S3BlobStore, overrides: bool) {
    use artifactstore_blob::PresignOptions;
    let data = unique_bytes(300_000);
    let put = store.put(chunked(&data), None).await.unwrap();
    let opts = |secs| PresignOptions {
        expires_in: Duration::from_secs(secs),
        content_type: Some("text/html; charset=utf-8".into()),
        content_disposition: Some("attachment; filename*=UTF-8''a%20b.html".into()),
    };
    let url = store
        .presigned_get(&put.digest, &opts(60))
        .await
        .unwrap()
        .expect("S3 hands out presigned URLs");
    assert_eq!(format!("{url:?}"), "Secret(<redacted>)");
    let parsed = reqwest::Url::parse(url.expose()).unwrap();
    let query: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
    assert_eq!(query["X-Amz-Expires"], "60");
    assert_eq!(query["response-content-type"], "text/html; charset=utf-8");
    assert_eq!(
        query["response-content-disposition"],
        "attachment; filename*=UTF-8''a%20b.html"
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = http.get(url.expose()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    if overrides {
        assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(
            resp.headers()["content-disposition"],
            "attachment; filename*=UTF-8''a%20b.html"
        );
    }
    assert!(resp.bytes().await.unwrap() == data, "other bytes");
    let resp = http
        .get(url.expose())
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert!(
        resp.bytes().await.unwrap() == data[1000..2000],
        "other bytes"
    );

    let short = store
        .presigned_get(&put.digest, &opts(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = http.get(short.expose()).send().await.unwrap().status();
    // S3 says 403; Garage 400; any refusal keeps the blob safe.
    assert!(status.is_client_error(), "an expired URL answered {status}");

    // S3 refuses expiries past a week; the error is about the expiry, with no URL.
    let err = store
        .presigned_get(&put.digest, &opts(8 * 86_400))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(!err.to_string().contains("X-Amz"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_gets_read_the_blob_and_expire_on_in_process_s3() {
    let s3 = start_s3s("presign").await;
    let store = S3BlobStore::new(
        config(&s3.endpoint, "presign", "it/"),
        creds(&s3.access_key, &s3.secret_key),
    )
    .unwrap();
    presigned_gets(&store, true).await;
    let fs = artifactstore_blob::FsBlobStore::open(s3._root.path().join("fs")).unwrap();
    let none = fs
        .presigned_get(
            &artifactstore_model::Digest::of(b"x"),
            &artifactstore_blob::PresignOptions {
                expires_in: Duration::from_secs(60),
                content_type: None,
                content_disposition: None,
            },
        )
        .await
        .unwrap();
    assert!(none.is_none(), "the fs store has no URLs to hand out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_presigned_gets_read_the_blob_and_expire() {
    let prefix = format!("presign-{}/", hex_of(&unique_bytes(6)));
    let Some(store) = live_store(&prefix) else {
        return;
    };
    // Garage and Ceph RGW honour the answer overrides; other live stores are held to
    // the bytes and the expiry only.
    let overrides = matches!(
        std::env::var("ARTIFACTSTORE_FIXTURE_SERVER").as_deref(),
        Ok("garage" | "ceph")
    );
    presigned_gets(&store, overrides).await;
}
