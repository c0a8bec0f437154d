//! The listener's limits, checked over raw TCP against either real server (`serve`,
//! `vend serve`) started with [`LIMITS_TOML`] at the top of its config file: a half-sent
//! head and an idle kept-alive connection are closed by their timeouts, the connection
//! beyond the cap waits while the open ones keep working and is served once one ends,
//! and ordinary requests work throughout.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The connection cap the servers under test are given.
pub const CAP: usize = 4;

/// Short timeouts, so that the checks wait only seconds; top-level keys of both configs.
pub const LIMITS_TOML: &str =
    "header_read_timeout_secs = 2\nkeep_alive_timeout_secs = 6\nmax_connections = 4\n";

/// The keys of the listener's limits, the same in both configs.
pub const KEYS: [&str; 3] = [
    "header_read_timeout_secs",
    "keep_alive_timeout_secs",
    "max_connections",
];

/// Asserts that a server given 0 for `key` refused to start, as a usage error naming it.
pub fn assert_refused(out: &std::process::Output, key: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
    assert!(
        stderr.contains(&format!("{key} = 0 is out of range")),
        "{key}: {stderr}"
    );
}

/// Generous: a closure or answer later than this counts as never.
const BOUND: Duration = Duration::from_secs(15);

pub fn check_all(url: &str) {
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();

    let mut kept = connect(addr);
    assert_eq!(get(&mut kept, addr), Some(200), "an ordinary request");

    let mut half = connect(addr);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n");
    half.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut half, BOUND),
        "a half-sent request head is still open after {BOUND:?}"
    );
    eprintln!("half-sent head closed after {:?}", started.elapsed());

    assert!(
        closed_within(&mut kept, BOUND),
        "an idle kept-alive connection is still open after {BOUND:?}"
    );

    let mut open: Vec<TcpStream> = (0..CAP)
        .map(|_| {
            let mut c = connect(addr);
            assert_eq!(get(&mut c, addr), Some(200), "a connection under the cap");
            c
        })
        .collect();
    // The kernel completes the handshake, but the server does not take it up.
    let mut beyond = connect(addr);
    send_get(&mut beyond, addr);
    beyond
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut byte = [0u8; 1];
    match beyond.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the connection beyond the cap was served or closed: {other:?}"),
    }
    for c in &mut open {
        assert_eq!(get(c, addr), Some(200), "an open connection at the cap");
    }
    drop(open.pop());
    assert_eq!(
        read_status(&mut beyond),
        Some(200),
        "the waiting connection once another ended"
    );
    drop(open);
    drop(beyond);

    let mut fresh = connect(addr);
    assert_eq!(
        get(&mut fresh, addr),
        Some(200),
        "an ordinary request after it all"
    );
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, BOUND).unwrap()
}

fn send_get(c: &mut TcpStream, addr: SocketAddr) {
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    c.write_all(request.as_bytes()).unwrap();
}

/// `GET /healthz` on `c`; the status, or `None` when it got no answer.
fn get(c: &mut TcpStream, addr: SocketAddr) -> Option<u16> {
    send_get(c, addr);
    read_status(c)
}

/// Reads one answer whole (head and `Content-Length` body), so that the connection can
/// carry the next request; its status, or `None` if the connection closed or fell
/// silent first.
fn read_status(c: &mut TcpStream) -> Option<u16> {
    c.set_read_timeout(Some(BOUND)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if got.len() >= end + 4 + length {
                return head.get(9..12)?.parse().ok();
            }
        }
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the server closes `c` (EOF or reset) within `bound`.
fn closed_within(c: &mut TcpStream, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        c.set_read_timeout(Some(left)).unwrap();
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}
