//! The listener against a tiny router on 127.0.0.1, spoken to over raw TCP so that a
//! test controls every byte (and every silence) of the client.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use super::{Acceptor, Limits, LimitsError, serve_from};

/// Long enough for any answer or closure on a loaded machine; never a measure of speed.
const BOUND: Duration = Duration::from_secs(15);

fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("a handler that panics");
                }
                "unreachable"
            }),
        )
        .route(
            "/slow",
            get(|| async {
                sleep(Duration::from_millis(2500)).await;
                "slow done"
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks = futures::stream::unfold(0u32, |i| async move {
                    if i == 5 {
                        return None;
                    }
                    sleep(Duration::from_millis(500)).await;
                    Some((Ok::<_, io::Error>(format!("chunk{i};")), i + 1))
                });
                axum::body::Body::from_stream(chunks)
            }),
        )
}

fn limits(header_read: Duration, keep_alive: Duration, max_connections: usize) -> Limits {
    Limits {
        header_read_timeout: header_read,
        keep_alive_timeout: keep_alive,
        max_connections,
        tls: None,
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) -> JoinHandle<()> {
        let _ = self.stop.take().unwrap().send(());
        self.served
    }
}

async fn start(limits: Limits) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_on(listener.local_addr().unwrap(), listener, limits)
}

fn start_on(addr: SocketAddr, acceptor: impl Acceptor + 'static, limits: Limits) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(serve_from(acceptor, router(), limits, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        served,
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// Reads one response (its head and a `Content-Length` body): status, head, body.
async fn read_response(stream: &mut TcpStream) -> io::Result<(u16, String, String)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned();
                return Ok((status, head, body));
            }
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// Sends `GET path` on a kept-alive connection and returns the answer's body.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, head, body) = timeout(BOUND, read_response(stream))
        .await
        .expect("no answer")
        .expect("connection failed");
    assert_eq!(status, 200, "{head}");
    body
}

/// Whether the server closes `stream` (EOF or reset) within `bound`; anything it
/// sends before is ignored.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[test]
fn limits_refuse_zero_and_values_too_large_to_limit_anything() {
    let d = Limits::default();
    assert_eq!(d.header_read_timeout, Duration::from_secs(10));
    assert_eq!(d.keep_alive_timeout, Duration::from_secs(60));
    assert_eq!(d.max_connections, 4096);
    assert_eq!(
        Limits::new(0, 60, 4096),
        Err(LimitsError {
            key: "header_read_timeout_secs",
            value: 0,
            min: 1,
            max: 600
        })
    );
    assert_eq!(
        Limits::new(10, 0, 4096).unwrap_err().key,
        "keep_alive_timeout_secs"
    );
    assert_eq!(Limits::new(10, 60, 0).unwrap_err().key, "max_connections");
    assert!(Limits::new(601, 60, 4096).is_err());
    assert!(Limits::new(10, 3601, 4096).is_err());
    assert!(Limits::new(10, 60, u64::MAX).is_err());
    let message = Limits::new(10, 60, 0).unwrap_err().to_string();
    assert_eq!(
        message,
        "max_connections = 0 is out of range: it must be from 1 to 1048576"
    );
    assert!(Limits::new(600, 3600, 1 << 20).is_ok());
}

#[tokio::test]
async fn a_request_is_served_with_the_peer_address_and_the_connection_kept_alive() {
    let server = start(Limits::default()).await;
    let mut stream = connect(server.addr).await;
    let me = stream.local_addr().unwrap();
    assert_eq!(get_on(&mut stream, "/peer").await, me.to_string());
    assert_eq!(get_on(&mut stream, "/").await, "ok");
}

#[tokio::test]
async fn a_half_sent_head_is_closed_at_the_header_read_timeout() {
    let server = start(limits(Duration::from_secs(1), Duration::from_secs(60), 16)).await;
    let mut stream = connect(server.addr).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut stream, BOUND).await);
}

#[tokio::test]
async fn a_connection_that_never_sends_is_closed_at_the_header_read_timeout() {
    let server = start(limits(Duration::from_secs(1), Duration::from_secs(60), 16)).await;
    let mut stream = connect(server.addr).await;
    assert!(closed_within(&mut stream, BOUND).await);
}

#[tokio::test]
async fn a_head_trickled_byte_by_byte_is_still_closed_at_the_header_read_timeout() {
    let server = start(limits(Duration::from_secs(1), Duration::from_secs(60), 16)).await;
    let stream = connect(server.addr).await;
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        write.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").await?;
        loop {
            sleep(Duration::from_millis(100)).await;
            write.write_all(b"a").await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), io::Error>(())
    });
    let mut buf = [0u8; 64];
    let closed = timeout(BOUND, read.read(&mut buf)).await;
    trickle.abort();
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "still open: {closed:?}"
    );
}

#[tokio::test]
async fn the_next_head_on_a_kept_alive_connection_has_the_header_read_timeout_too() {
    // The keep-alive timeout is far beyond the bound: only the header-read timeout can
    // close this connection in time.
    let server = start(limits(Duration::from_secs(1), Duration::from_secs(600), 16)).await;
    let mut stream = connect(server.addr).await;
    assert_eq!(get_on(&mut stream, "/").await, "ok");
    stream.write_all(b"GET / HTTP/1.1\r\nHost: ").await.unwrap();
    assert!(closed_within(&mut stream, BOUND).await);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_lasts_the_keep_alive_timeout_and_is_then_closed() {
    let server = start(limits(Duration::from_secs(1), Duration::from_secs(5), 16)).await;
    let mut stream = connect(server.addr).await;
    assert_eq!(get_on(&mut stream, "/").await, "ok");
    // Idle for longer than the header-read timeout: still served.
    sleep(Duration::from_millis(2500)).await;
    assert_eq!(get_on(&mut stream, "/").await, "ok");
    assert!(closed_within(&mut stream, BOUND).await);
}

#[tokio::test]
async fn a_slow_handler_and_a_streaming_response_are_not_taken_for_idle() {
    let server = start(limits(Duration::from_secs(1), Duration::from_secs(1), 16)).await;
    let mut stream = connect(server.addr).await;
    assert_eq!(get_on(&mut stream, "/slow").await, "slow done");
    let mut stream = connect(server.addr).await;
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = String::new();
    timeout(BOUND, stream.read_to_string(&mut all))
        .await
        .expect("the response never ended")
        .unwrap();
    assert!(all.contains("chunk4;"), "{all}");
}

/// Why the listener times heads itself: hyper's header-read timer, on its own, also
/// runs while a kept-alive connection waits for its next request, so it closes idle
/// connections at the header-read timeout. Should hyper start it at the first byte
/// of a head instead, this fails, and hyper's timer could do the job.
#[tokio::test]
async fn hypers_own_header_timer_also_times_the_idle_wait() {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("ok")))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(1))
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    let mut stream = connect(addr).await;
    assert_eq!(get_on(&mut stream, "/").await, "ok");
    // Not a byte of a next request, yet closed in about a second.
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn beyond_the_cap_no_connection_is_accepted_until_one_ends() {
    let server = start(limits(Duration::from_secs(10), Duration::from_secs(60), 2)).await;
    let mut first = connect(server.addr).await;
    let mut second = connect(server.addr).await;
    assert_eq!(get_on(&mut first, "/").await, "ok");
    assert_eq!(get_on(&mut second, "/").await, "ok");

    // The third connects (the kernel's backlog holds it) but is not served.
    let mut third = connect(server.addr).await;
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let waited = timeout(Duration::from_secs(1), read_response(&mut third)).await;
    assert!(waited.is_err(), "served beyond the cap: {waited:?}");

    // The open ones go on working.
    assert_eq!(get_on(&mut first, "/").await, "ok");
    assert_eq!(get_on(&mut second, "/").await, "ok");

    // One ends: the waiting one is accepted and answered.
    drop(first);
    let (status, _, body) = timeout(BOUND, read_response(&mut third))
        .await
        .expect("never accepted after a connection ended")
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(get_on(&mut second, "/").await, "ok");
}

#[tokio::test]
async fn a_slot_comes_back_when_a_connection_panics_is_reset_or_times_out() {
    let server = start(limits(Duration::from_secs(1), Duration::from_secs(60), 1)).await;

    let mut panicking = connect(server.addr).await;
    panicking
        .write_all(b"GET /panic HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut panicking, BOUND).await);
    let mut next = connect(server.addr).await;
    assert_eq!(get_on(&mut next, "/").await, "ok");
    drop(next);

    // Reset by the client in the middle of a request body.
    let reset = connect(server.addr).await;
    let mut reset = reset.into_std().unwrap();
    {
        use std::io::Write;
        reset
            .write_all(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nabc")
            .unwrap();
    }
    let reset = TcpStream::from_std(reset).unwrap();
    // A zero linger resets the connection on drop instead of closing it (and so never
    // blocks, which is what the deprecation is about).
    #[allow(deprecated)]
    reset.set_linger(Some(Duration::ZERO)).unwrap();
    sleep(Duration::from_millis(100)).await;
    drop(reset);
    let mut next = connect(server.addr).await;
    assert_eq!(get_on(&mut next, "/").await, "ok");
    drop(next);

    // Timed out halfway through its head.
    let mut stalled = connect(server.addr).await;
    stalled.write_all(b"GET / HTT").await.unwrap();
    let mut next = connect(server.addr).await;
    assert!(closed_within(&mut stalled, BOUND).await);
    assert_eq!(get_on(&mut next, "/").await, "ok");
}

/// A listener whose accepts fail with EMFILE while `failing` is set.
struct OutOfDescriptors {
    listener: TcpListener,
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Acceptor for OutOfDescriptors {
    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            const EMFILE: i32 = 24;
            return Err(io::Error::from_raw_os_error(EMFILE));
        }
        self.listener.accept().await
    }
}

#[tokio::test]
async fn accept_errors_pause_the_accept_loop_and_do_not_stop_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let acceptor = OutOfDescriptors {
        listener,
        failing: failing.clone(),
        calls: calls.clone(),
    };
    let server = start_on(addr, acceptor, Limits::default());
    let mut waiting = connect(addr).await;
    sleep(Duration::from_millis(1000)).await;
    // Pauses of 10, 20, 40 ... ms: a handful of attempts in a second, not a spin.
    let attempts = calls.load(Ordering::SeqCst);
    assert!(
        (1..=20).contains(&attempts),
        "{attempts} accepts in a second"
    );
    assert!(!server.served.is_finished());

    failing.store(false, Ordering::SeqCst);
    assert_eq!(get_on(&mut waiting, "/").await, "ok");
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_closes_idle_ones_and_accepts_no_more() {
    let server = start(Limits::default()).await;
    let addr = server.addr;
    let mut idle = connect(addr).await;
    assert_eq!(get_on(&mut idle, "/").await, "ok");
    let mut silent = connect(addr).await;
    let mut busy = connect(addr).await;
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    sleep(Duration::from_millis(300)).await;

    let served = server.stop().await;
    // Idle and silent connections are closed at once, well before any timeout.
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(!served.is_finished(), "returned with a request in flight");
    let (status, head, body) = timeout(BOUND, read_response(&mut busy))
        .await
        .expect("the request in flight was not finished")
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "slow done"));
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    timeout(BOUND, served)
        .await
        .expect("did not return after draining")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}
