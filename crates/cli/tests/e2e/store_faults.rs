//! A store that hangs, resets, refuses or fills up is answered as what it is: the real
//! server on `--backend s3`, with a fault proxy ([`FaultProxy`]) between it and the
//! store — the in-process s3s-fs server, or with `ARTIFACTSTORE_TEST_BACKEND=s3` the
//! live store — answers 503 `storage_unavailable` with `Retry-After` (507
//! `insufficient_storage` when full) in bounded time, never 500; stores nothing; and
//! `/readyz` turns 503 during the fault and 200 again by itself. A full disk under the fs
//! backend (a tiny tmpfs, where the test may mount one) is 507.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use artifactstore_blob::BlobStore;
use artifactstore_blob::s3::{S3BlobStore, S3Config};
use artifactstore_credentials::sources::StaticSource;
use artifactstore_credentials::{RefreshPolicy, RefreshingCache};
use artifactstore_model::Digest;
use artifactstore_model::secret::Secret;
use reqwest::StatusCode;
use serde_json::Value;

use super::fault_proxy::{FaultProxy, Mode};
use crate::common::*;

/// Short store timeouts, so that a hanging store is given up on within seconds.
const STORE_TIMEOUTS: [(&str, &str); 4] = [
    ("ARTIFACTSTORE_S3_CONNECT_TIMEOUT_SECS", "1"),
    ("ARTIFACTSTORE_S3_READ_TIMEOUT_SECS", "2"),
    ("ARTIFACTSTORE_S3_OPERATION_TIMEOUT_SECS", "4"),
    ("ARTIFACTSTORE_S3_MAX_ATTEMPTS", "2"),
];
/// How long an answer during a fault may take: the operation timeout above and slack.
const ANSWER_BOUND: Duration = Duration::from_secs(15);
const FAULTS: [Mode; 3] = [Mode::Stall, Mode::Reset, Mode::Refuse];
/// The smallest part S3 allows, so that a multipart upload takes only a few MiB.
const PART_SIZE: usize = 5 << 20;

/// The store behind the proxy, and a client of it that bypasses the proxy.
struct Store {
    addr: std::net::SocketAddr,
    direct: S3BlobStore,
    /// The variables that point a server at it (the live store's come from the fixture).
    env: Vec<(String, String)>,
    _root: Option<tempfile::TempDir>,
}

/// A unique prefix per rig, so that servers sharing a live bucket never meet.
fn unique_prefix() -> String {
    let d = Digest::of(format!("{}:{:?}", std::process::id(), Instant::now()).as_bytes());
    format!("faults-{}/", &d.hex()[..16])
}

/// s3s-fs on 127.0.0.1:0 with one bucket and one generated key pair.
async fn in_process_store(prefix: &str) -> Store {
    let s3 = crate::common::s3s::InProcessS3::start("faults", prefix).await;
    let (addr, bucket, key_id, secret) = (
        s3.addr,
        s3.bucket.as_str(),
        s3.key_id.clone(),
        s3.secret.clone(),
    );
    let mut cfg = S3Config::new(bucket);
    cfg.endpoint_url = Some(format!("http://{addr}"));
    cfg.prefix = prefix.to_owned();
    let cache = RefreshingCache::new(
        Arc::new(StaticSource {
            access_key_id: Secret::new(key_id.clone()),
            secret_access_key: Secret::new(secret.clone()),
            session_token: None,
        }),
        RefreshPolicy::default(),
    );
    Store {
        addr,
        direct: S3BlobStore::new(cfg, Arc::new(cache)).unwrap(),
        env: vec![
            ("ARTIFACTSTORE_S3_BUCKET".into(), bucket.into()),
            ("FAULTS_TEST_KEY_ID".into(), key_id),
            ("FAULTS_TEST_SECRET".into(), secret),
            (
                "ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF".into(),
                "env:FAULTS_TEST_KEY_ID".into(),
            ),
            (
                "ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF".into(),
                "env:FAULTS_TEST_SECRET".into(),
            ),
        ],
        _root: Some(s3.root),
    }
}

/// The live store the fixture exported (its credential settings pass through as they
/// are, so web-identity runs keep theirs).
fn live_store(prefix: &str) -> Store {
    let endpoint = std::env::var("ARTIFACTSTORE_S3_ENDPOINT_URL").expect("live endpoint");
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)
        .expect("the live endpoint is host:port over http")
        .next()
        .unwrap();
    Store {
        addr,
        direct: s3_store(prefix),
        env: Vec::new(),
        _root: None,
    }
}

struct Rig {
    proxy: FaultProxy,
    server: Server,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let prefix = unique_prefix();
        let store = if on_s3() {
            live_store(&prefix)
        } else {
            in_process_store(&prefix).await
        };
        let proxy = FaultProxy::start(store.addr).await;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let stderr_log = dir.path().join("server.stderr.log");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--backend", "s3"])
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("ARTIFACTSTORE_URL");
        if !on_s3() {
            for (k, _) in std::env::vars() {
                if k.starts_with("ARTIFACTSTORE_S3_") {
                    cmd.env_remove(k);
                }
            }
        }
        cmd.envs(store.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(STORE_TIMEOUTS)
            .env("ARTIFACTSTORE_S3_ENDPOINT_URL", proxy.url())
            .env("ARTIFACTSTORE_S3_PREFIX", &prefix)
            .env("ARTIFACTSTORE_S3_STALE_UPLOAD_AGE_SECS", "0")
            .env("ARTIFACTSTORE_S3_PART_SIZE", PART_SIZE.to_string())
            // 10,000 parts of PART_SIZE.
            .env("ARTIFACTSTORE_MAX_UPLOAD_SIZE", (10u64 << 30).to_string());
        let (child, url) = spawn_announcing(cmd, "artifactstore listening on ", &stderr_log);
        Rig {
            proxy,
            server: Server {
                child,
                url,
                data_dir,
                stderr_log,
                s3_prefix: on_s3().then_some(prefix),
            },
            store,
            _dir: dir,
        }
    }

    async fn holds(&self, data: &[u8]) -> bool {
        self.store
            .direct
            .head(&Digest::of(data))
            .await
            .expect("the store answers directly")
            .is_some()
    }
}

/// Status, `Retry-After` and JSON body of an answer, and how long it took.
async fn timed(req: reqwest::RequestBuilder) -> (StatusCode, Option<String>, Value, Duration) {
    let started = Instant::now();
    let resp = req.send().await.expect("the server answers");
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, retry, body, started.elapsed())
}

fn assert_unavailable(what: &str, answer: &(StatusCode, Option<String>, Value, Duration)) {
    let (status, retry, body, took) = answer;
    assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    assert_eq!(
        body["error"]["code"], "storage_unavailable",
        "{what}: {body}"
    );
    assert!(
        retry
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok())
            .is_some(),
        "{what}: Retry-After missing: {retry:?}"
    );
    assert!(*took < ANSWER_BOUND, "{what}: answered after {took:?}");
    eprintln!("{what}: 503 storage_unavailable after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_while_the_store_stalls_resets_or_refuses_are_503_and_store_nothing() {
    let rig = Rig::start().await;
    let s = &rig.server;
    for (i, mode) in FAULTS.into_iter().enumerate() {
        rig.proxy.set(mode).await;
        let data = bytes(300_000, 40 + i as u64);
        let path = format!("faults/up/1/{mode:?}.bin");
        let answer = timed(http().put(s.artifacts(&path)).body(data.clone())).await;
        assert_unavailable(&format!("upload during {mode:?}"), &answer);

        rig.proxy.set(Mode::Pass).await;
        let (status, _, body, _) = timed(http().get(s.artifacts(&path))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{mode:?}: {body}");
        assert!(!rig.holds(&data).await, "{mode:?}: a blob became visible");
    }
    let logs = s.logs();
    assert!(
        logs.contains("blob store unavailable"),
        "the cause is logged: {logs}"
    );
    assert!(!logs.contains("internal error"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_cut_off_midway_is_503_and_leaves_only_what_the_sweep_removes() {
    use futures::{SinkExt, StreamExt};
    let rig = Rig::start().await;
    let data = bytes(3 * PART_SIZE - 1000, 45);
    let (mut tx, rx) = futures::channel::mpsc::channel::<bytes::Bytes>(4);
    let body = reqwest::Body::wrap_stream(rx.map(Ok::<_, std::io::Error>));
    let upload = tokio::spawn(timed(
        http()
            .put(rig.server.artifacts("faults/midway/1/big.bin"))
            .body(body),
    ));
    // The first part goes through to the store; then the connection to it is cut, and
    // the rest of the body follows.
    let before = rig.proxy.forwarded();
    let (head, tail) = data.split_at(PART_SIZE + 1000);
    for chunk in head.chunks(256 << 10) {
        tx.send(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let mut waited = 0;
    while rig.proxy.forwarded() - before < (PART_SIZE as u64) / 2 {
        assert!(waited < 400, "the first part never reached the store");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    rig.proxy.set(Mode::Reset).await;
    for chunk in tail.chunks(256 << 10) {
        if tx.send(bytes::Bytes::copy_from_slice(chunk)).await.is_err() {
            break; // the server has given up on the body
        }
    }
    drop(tx);
    let answer = upload.await.unwrap();
    assert_unavailable("multipart upload cut off midway", &answer);

    rig.proxy.set(Mode::Pass).await;
    let (status, _, body, _) =
        timed(http().get(rig.server.artifacts("faults/midway/1/big.bin"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(!rig.holds(&data).await, "a blob became visible");
    let direct = &rig.store.direct;
    assert_eq!(
        direct.staging_objects().await.unwrap(),
        Vec::<String>::new(),
        "a staging object became visible"
    );
    // The multipart upload the server could not abort while the store was cut off is
    // one the start-up sweep finds and aborts (s3s-fs cannot list uploads; a live store can).
    match direct.multipart_uploads_in_progress().await {
        Ok(left) => {
            let (aborted, _) = direct.sweep_stale(Duration::ZERO).await.unwrap();
            assert_eq!(aborted, left, "the sweep aborts every upload left");
            assert_eq!(direct.multipart_uploads_in_progress().await.unwrap(), 0);
            eprintln!("multipart uploads left by the cut-off upload, all swept: {left}");
        }
        Err(artifactstore_blob::Error::Backend {
            kind: artifactstore_blob::s3::BackendErrorKind::NotImplemented,
            ..
        }) => eprintln!("this store cannot list multipart uploads; the sweep is checked live"),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_of_stored_files_while_the_store_fails_are_503_not_500() {
    let rig = Rig::start().await;
    let s = &rig.server;
    let data = bytes(200_000, 50);
    let (status, _, body, _) = timed(
        http()
            .put(s.artifacts("faults/down/1/a.bin"))
            .body(data.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for mode in FAULTS {
        rig.proxy.set(mode).await;
        let answer = timed(http().get(s.artifacts("faults/down/1/a.bin"))).await;
        assert_unavailable(&format!("download during {mode:?}"), &answer);
    }
    rig.proxy.set(Mode::Pass).await;
    let got = http()
        .get(s.artifacts("faults/down/1/a.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_store_does_not_answer_and_recovers_by_itself() {
    let rig = Rig::start().await;
    let ready = format!("{}/readyz", rig.server.url);
    let (status, _, body, _) = timed(http().get(&ready)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for mode in FAULTS {
        rig.proxy.set(mode).await;
        // A round of checks answers every probe for a second: past it, a fresh round.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, _, body, took) = timed(http().get(&ready)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{mode:?}: {body}");
        assert!(took < ANSWER_BOUND, "{mode:?}: /readyz took {took:?}");
        assert_eq!(body["checks"]["blobs"], "failing", "{mode:?}: {body}");
        assert_eq!(body["checks"]["index"], "ok", "{mode:?}: {body}");
        // Public: each check's name and state, never where or why.
        let text = body.to_string();
        let port = rig.proxy.url().rsplit(':').next().unwrap().to_owned();
        for secret_ish in [port.as_str(), "http", "s3://", "/", "timed out", "refused"] {
            assert!(
                !text.contains(secret_ish),
                "{mode:?}: {secret_ish:?} in {text}"
            );
        }
        for check in body["checks"].as_object().unwrap().values() {
            assert!(check == "ok" || check == "failing", "{text}");
        }

        rig.proxy.set(Mode::Pass).await;
        let mut recovered = false;
        for _ in 0..30 {
            if http().get(&ready).send().await.unwrap().status() == StatusCode::OK {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(recovered, "/readyz did not recover after {mode:?}");
    }
    assert!(
        rig.server.logs().contains("readiness check failing"),
        "why is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_out_of_space_is_507_and_stores_nothing() {
    let rig = Rig::start().await;
    let s = &rig.server;
    rig.proxy.set(Mode::Full).await;
    let data = bytes(100_000, 60);
    let (status, retry, body, took) = timed(
        http()
            .put(s.artifacts("faults/full/1/a.bin"))
            .body(data.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    assert_eq!(retry, None);
    assert!(took < ANSWER_BOUND, "answered after {took:?}");
    assert!(!body.to_string().contains("XMinio"), "{body}");
    rig.proxy.set(Mode::Pass).await;
    assert!(!rig.holds(&data).await);
    let (status, _, _, _) = timed(http().get(s.artifacts("faults/full/1/a.bin"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A tmpfs of `size` mounted at a fresh directory, unmounted on drop. `None` where this
/// process may not mount (not root, or no `CAP_SYS_ADMIN`).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `serve` on the fs backend with its data and its SQLite index where the test says.
fn fs_server(data_dir: &Path, index_db: &Path, stderr_log: &Path) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--backend", "fs"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--database-url", &artifactstore_index::sqlite_url(index_db)])
        .env_remove("ARTIFACTSTORE_URL");
    let (child, url) = spawn_announcing(cmd, "artifactstore listening on ", stderr_log);
    Server {
        child,
        url,
        data_dir: data_dir.to_owned(),
        stderr_log: stderr_log.to_owned(),
        s3_prefix: None,
    }
}

#[tokio::test]
async fn a_full_disk_under_the_fs_backend_is_507_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "1m") else {
        eprintln!(
            "a_full_disk_under_the_fs_backend_is_507_and_leaves_no_temp_file: NOT run: \
             cannot mount a tmpfs here (needs root); the ENOSPC mapping is unit-tested"
        );
        return;
    };
    let data_dir = disk.0.join("data");
    // The index lives off the tiny disk: only the blob write is to meet ENOSPC.
    let s = fs_server(
        &data_dir,
        &dir.path().join("index.db"),
        &dir.path().join("fs.stderr.log"),
    );
    let data = bytes(3 << 20, 70);
    let (status, retry, body, _) =
        timed(http().put(s.artifacts("faults/disk/1/big.bin")).body(data)).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    assert_eq!(retry, None);
    assert!(
        !body.to_string().contains(&*disk.0.to_string_lossy()),
        "{body}"
    );
    let left: Vec<_> = std::fs::read_dir(data_dir.join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
    // Room is still there for a file that fits.
    let (status, _, body, _) = timed(
        http()
            .put(s.artifacts("faults/disk/1/small.bin"))
            .body(vec![7u8; 1000]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    drop(s);
}

#[tokio::test]
async fn a_full_disk_under_the_metadata_database_is_507_and_the_file_is_not_visible() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("dbdisk"), "2m") else {
        eprintln!(
            "a_full_disk_under_the_metadata_database_is_507_and_the_file_is_not_visible: \
             NOT run: cannot mount a tmpfs here (needs root); the SQLite and PostgreSQL \
             codes are unit-tested in the index"
        );
        return;
    };
    // Blobs have room; only the index's disk fills up.
    let s = fs_server(
        &dir.path().join("data"),
        &disk.0.join("index.db"),
        &dir.path().join("db.stderr.log"),
    );
    let (status, _, body, _) = timed(
        http()
            .put(s.artifacts("faults/db/1/first.txt"))
            .body("first"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Fill what is left of the database's disk.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = None;
    // SQLite may find room in pages it already holds for a row or two.
    for i in 0..50 {
        let (status, retry, body, _) = timed(
            http()
                .put(s.artifacts(&format!("faults/db/1/f{i}.txt")))
                .body(format!("file {i} {}", "x".repeat(4000))),
        )
        .await;
        if status != StatusCode::CREATED {
            refused = Some((i, status, retry, body));
            break;
        }
    }
    let (i, status, retry, body) = refused.expect("the full database disk refused nothing");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    assert_eq!(retry, None);
    assert!(!body.to_string().contains("index.db"), "{body}");
    let (status, _, _, _) = timed(http().get(s.artifacts(&format!("faults/db/1/f{i}.txt")))).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused file is not visible"
    );

    // Room again: the same upload goes through, no restart needed.
    std::fs::remove_file(&filler).unwrap();
    let (status, _, body, _) = timed(
        http()
            .put(s.artifacts(&format!("faults/db/1/f{i}.txt")))
            .body(format!("file {i} {}", "x".repeat(4000))),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    drop(s);
}
