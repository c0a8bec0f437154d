//! A loopback TCP proxy in front of a store that can be told to misbehave the ways a
//! real store does: pass bytes through, stall (accept and read, never answer), reset
//! (accept, then RST), refuse (stop listening), or answer every request as a full store.
//!
//! Changing the mode closes every connection of the previous mode, so a client's pooled
//! connections cannot carry on as before: each next request meets the new behaviour.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow both ways unchanged.
    Pass,
    /// Connections are accepted and read from, and never answered.
    Stall,
    /// Connections are accepted and reset at once (`SO_LINGER` 0: an RST, not a FIN).
    Reset,
    /// Nothing listens: connecting is refused.
    Refuse,
    /// Every request is read whole and answered as MinIO answers a write when its drives
    /// are full: 507 `XMinioStorageFull`.
    Full,
}

pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    /// Bytes passed on to the store, in every mode so far.
    forwarded: Arc<AtomicU64>,
    /// The task accepting connections in the current mode; it owns them, so aborting it
    /// closes them all.
    serving: Mutex<Option<JoinHandle<()>>>,
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 in front of `upstream`, passing bytes through.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let proxy = FaultProxy {
            addr,
            upstream,
            forwarded: Arc::default(),
            serving: Mutex::new(None),
        };
        *proxy.serving.lock().await = Some(tokio::spawn(serve(
            listener,
            Mode::Pass,
            upstream,
            proxy.forwarded.clone(),
        )));
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many bytes clients have sent through to the store so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Switches to `mode`, closing every connection opened before.
    pub async fn set(&self, mode: Mode) {
        let mut serving = self.serving.lock().await;
        if let Some(task) = serving.take() {
            task.abort();
            let _ = task.await; // the listener and the connections are closed now
        }
        if mode == Mode::Refuse {
            return;
        }
        // The port was ours a moment ago; nobody else binds a fixed loopback port, but
        // the kernel may take a moment to release it.
        let mut listener = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let listener = listener.unwrap_or_else(|| panic!("rebind proxy on {}", self.addr));
        *serving = Some(tokio::spawn(serve(
            listener,
            mode,
            self.upstream,
            self.forwarded.clone(),
        )));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(task) = self.serving.get_mut().take() {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, mode: Mode, upstream: SocketAddr, forwarded: Arc<AtomicU64>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((socket, _)) = accepted {
                    connections.spawn(handle(socket, mode, upstream, forwarded.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(
    mut client: TcpStream,
    mode: Mode,
    upstream: SocketAddr,
    forwarded: Arc<AtomicU64>,
) {
    match mode {
        Mode::Pass => {
            let Ok(store) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_store, mut to_store) = store.into_split();
            let up = async {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = from_client.read(&mut buf).await {
                    if n == 0 || to_store.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    forwarded.fetch_add(n as u64, Ordering::Relaxed);
                }
                let _ = to_store.shutdown().await;
            };
            let down = async {
                let _ = tokio::io::copy(&mut from_store, &mut to_client).await;
                let _ = to_client.shutdown().await;
            };
            tokio::join!(up, down);
        }
        Mode::Stall => {
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n) = client.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            // Hold the connection open, silent, until the mode changes.
            std::future::pending::<()>().await;
        }
        Mode::Reset => {
            let _ = client.set_zero_linger();
            drop(client);
        }
        Mode::Full => answer_full(client).await,
        Mode::Refuse => unreachable!("nothing listens in refuse mode"),
    }
}

/// Reads each request (head and `Content-Length` body) and answers it 507, as a full
/// MinIO does; the whole body is read first, so the client sees the answer rather than
/// a connection closed under its upload.
async fn answer_full(mut client: TcpStream) {
    const BODY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>XMinioStorageFull</Code><Message>Storage backend has reached its minimum free drive threshold. Please delete a few objects to proceed.</Message></Error>";
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let Some(end) = find(&pending, b"\r\n\r\n") else {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
        let is_head = head.starts_with("head ");
        let body_len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut remaining = body_len.saturating_sub(pending.len() - end - 4);
        pending.clear();
        while remaining > 0 {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => remaining = remaining.saturating_sub(n),
            }
        }
        let answer = format!(
            "HTTP/1.1 507 Insufficient Storage\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            BODY.len(),
            if is_head { "" } else { BODY }
        );
        let _ = client.write_all(answer.as_bytes()).await;
        let _ = client.shutdown().await;
        return;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
