//! Uploads that stall cannot take the server down: while hundreds of them hold their
//! connections open, downloads and health checks answer; each stalled upload ends by the
//! idle-body timeout and leaves nothing; and concurrent uploads are capped.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::*;

/// Short enough that the test waits for the timeout only seconds, long enough that a
/// slow machine opens every stalled upload and runs the checks before the first ends.
const IDLE_SECS: u64 = 20;
/// What a check of a server with stalled uploads may take before it counts as hung
/// (stuck, they never answer; the old thread-per-upload writer hung them all).
const CHECK_BOUND: Duration = Duration::from_secs(10);

/// Raises this process's soft open-file limit to the hard one: hundreds of stalled
/// connections would otherwise exhaust a default limit of 1024 (the server raises its
/// own, and children inherit ours).
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

fn host_port(s: &Server) -> String {
    s.url.trim_start_matches("http://").to_owned()
}

/// Opens an upload that declares `Content-Length: declared` and sends `first` of it.
async fn start_upload(s: &Server, rest: &str, declared: usize, first: &[u8]) -> TcpStream {
    start_request(s, "PUT", rest, "application/octet-stream", declared, first).await
}

/// Sends a request's head with `Content-Length: declared`, and `first` of its body.
async fn start_request(
    s: &Server,
    method: &str,
    rest: &str,
    content_type: &str,
    declared: usize,
    first: &[u8],
) -> TcpStream {
    let host = host_port(s);
    let mut tcp = TcpStream::connect(&host).await.expect("connect");
    let head = format!(
        "{method} /v1/artifacts/{rest} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {declared}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(first).await.unwrap();
    tcp
}

/// An answer read from a raw connection: its status and JSON body, or `None` when the
/// server closed the connection without one.
struct RawAnswer {
    status: Option<u16>,
    headers: String,
    body: Value,
}

async fn read_answer(tcp: &mut TcpStream, bound: Duration) -> RawAnswer {
    let mut buf = Vec::new();
    let read = timeout(bound, async {
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            // One answer is enough: stop once the body announced is there.
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer and no close within {bound:?}; got {:?}",
        String::from_utf8_lossy(&buf)
    );
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    RawAnswer {
        status,
        headers: headers.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

async fn uploads_in_flight(s: &Server) -> Option<u64> {
    let text = http()
        .get(format!("{}/metrics", s.url))
        .timeout(CHECK_BOUND)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("artifactstore_uploads_in_flight "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Waits until the server has `n` uploads in flight (so each is inside its handler).
async fn wait_for_uploads(s: &Server, n: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = uploads_in_flight(s).await;
        if now == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server has {now:?} uploads in flight after {secs} s, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A GET that must answer 200 within [`CHECK_BOUND`]; returns its body.
async fn must_answer(url: String, what: &str) -> bytes::Bytes {
    let resp = timeout(CHECK_BOUND, async {
        http().get(&url).send().await.unwrap().bytes().await
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not answer within {CHECK_BOUND:?} while uploads stall"));
    resp.unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test]
async fn stalled_uploads_leave_reads_and_health_answering_and_end_by_the_idle_timeout() {
    raise_open_file_limit();
    let stalled: usize = if on_s3() { 200 } else { 600 };
    let dir = tempfile::tempdir().unwrap();
    let idle = IDLE_SECS.to_string();
    let s = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("ARTIFACTSTORE_BODY_IDLE_TIMEOUT_SECS", idle.as_str())],
    );
    let data = bytes(300 << 10, 7);
    let resp = http()
        .put(s.artifacts("hostile/stall/1/existing.bin"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // Each upload declares 1 MiB, sends 3 bytes, then nothing. One reader per
    // connection notes when, and with what, the server ended it.
    let mut readers = Vec::with_capacity(stalled);
    for i in 0..stalled {
        let mut tcp =
            start_upload(&s, &format!("hostile/stall/1/stalled-{i}"), 1 << 20, b"abc").await;
        let sent = Instant::now();
        readers.push(tokio::spawn(async move {
            let answer = read_answer(&mut tcp, Duration::from_secs(IDLE_SECS + 30)).await;
            (sent, Instant::now(), answer)
        }));
    }
    // A labels body that stalls too: the timeout covers every route that reads a body.
    let mut completion = start_request(
        &s,
        "POST",
        "hostile/stall/1/complete",
        "application/json",
        64,
        b"{\"labels\":",
    )
    .await;
    wait_for_uploads(&s, stalled as u64, IDLE_SECS - 1).await;

    // While every one of them stalls: a download, liveness and readiness answer.
    let got = must_answer(s.artifacts("hostile/stall/1/existing.bin"), "a download").await;
    assert_eq!(
        sha256_hex(&got),
        sha256_hex(&data),
        "download while stalled"
    );
    must_answer(format!("{}/healthz", s.url), "/healthz").await;
    let ready: Value =
        serde_json::from_slice(&must_answer(format!("{}/readyz", s.url), "/readyz").await).unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let checks_done = Instant::now();

    let mut answered_408 = 0;
    let mut first_end = None::<Instant>;
    for r in readers {
        let (sent, ended, answer) = r.await.unwrap();
        let waited = ended - sent;
        assert!(
            waited >= Duration::from_secs(IDLE_SECS) - Duration::from_millis(500),
            "a stalled upload ended after {waited:?}, before the idle timeout of {IDLE_SECS} s"
        );
        first_end = Some(first_end.map_or(ended, |f: Instant| f.min(ended)));
        if let Some(status) = answer.status {
            assert_eq!(status, 408, "stalled upload answered: {}", answer.headers);
            assert_eq!(
                answer.body["error"]["code"], "request_timeout",
                "{}",
                answer.body
            );
            answered_408 += 1;
        }
    }
    assert!(
        checks_done < first_end.expect("there were stalled uploads"),
        "the checks must have run while all uploads were still stalled"
    );
    assert!(answered_408 > 0, "no stalled upload read back its 408");
    let answer = read_answer(&mut completion, Duration::from_secs(30)).await;
    assert_eq!(answer.status, Some(408), "{}", answer.headers);
    assert_eq!(answer.body["error"]["code"], "request_timeout");

    // Nothing of them is left: no file in the version, no temp file or pending upload.
    let manifest: Value = http()
        .get(s.artifacts("hostile/stall/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["existing.bin"], "{manifest}");
    assert_eq!(
        manifest["state"], "open",
        "the stalled completion changed nothing"
    );
    assert!(
        eventually(10, || s.temp_files().is_empty()).await,
        "partial uploads left behind: {:?}",
        s.temp_files()
    );
}

#[tokio::test]
async fn uploads_beyond_the_cap_get_503_and_every_ending_returns_its_permit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[
            ("ARTIFACTSTORE_MAX_CONCURRENT_UPLOADS", "2"),
            ("ARTIFACTSTORE_BODY_IDLE_TIMEOUT_SECS", "3"),
        ],
    );
    let refused = async |s: &Server| {
        // Headers only: the answer comes before a byte of the body is wanted.
        let mut third = start_upload(s, "hostile/cap/1/third", 5, b"").await;
        let answer = read_answer(&mut third, Duration::from_secs(10)).await;
        assert_eq!(answer.status, Some(503), "{}", answer.headers);
        assert_eq!(
            answer.body["error"]["code"], "too_many_uploads",
            "{}",
            answer.body
        );
        assert!(
            answer.headers.contains("\r\nretry-after: "),
            "no Retry-After: {}",
            answer.headers
        );
    };

    let mut finishing = start_upload(&s, "hostile/cap/1/a", 6, b"abc").await;
    let abandoned = start_upload(&s, "hostile/cap/1/b", 6, b"abc").await;
    wait_for_uploads(&s, 2, 10).await;
    refused(&s).await;

    // One ends well, the other by its client going away: both permits come back.
    finishing.write_all(b"def").await.unwrap();
    let answer = read_answer(&mut finishing, Duration::from_secs(10)).await;
    assert_eq!(answer.status, Some(201), "{}", answer.headers);
    drop(abandoned);
    wait_for_uploads(&s, 0, 10).await;
    let resp = http()
        .put(s.artifacts("hostile/cap/1/after"))
        .body(b"fine".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // Two that stall hold both permits until the idle timeout gives them back.
    let _c = start_upload(&s, "hostile/cap/1/c", 6, b"abc").await;
    let _d = start_upload(&s, "hostile/cap/1/d", 6, b"abc").await;
    wait_for_uploads(&s, 2, 10).await;
    refused(&s).await;
    wait_for_uploads(&s, 0, 15).await;
    let resp = http()
        .put(s.artifacts("hostile/cap/1/last"))
        .body(b"again".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}
