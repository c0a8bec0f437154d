//! The listener both servers run on instead of `axum::serve`, which has no limits: a
//! connection that sends half a request head, or nothing at all, would stay open
//! forever (slowloris), idle kept-alive connections would never be closed, and nothing
//! would bound how many connections are open.
//!
//! [`serve`] accepts on a TCP listener and drives each connection in a task of its own,
//! with three [`Limits`]:
//! - **header-read timeout**: a request head must be complete within it of its first
//!   byte, and a new connection must begin its first request within it. Trickling a
//!   head byte by byte does not extend it. It holds for every request of a kept-alive
//!   connection, not only the first.
//! - **keep-alive timeout**: a connection idle between requests for this long is closed.
//! - **connection cap**: at most this many connections are open; beyond it no
//!   connection is accepted until one ends (see [`serve`] for why).
//!
//! Only HTTP/1.1 is served. HTTP/2 would not be free: hyper has no header-read timeout
//! for it, a slow stream would hold the connection under its own rules, and every
//! client of both servers (the CLI, SDKs, boto3, curl) speaks HTTP/1.1 to a plain
//! `http://` URL anyway.
//!
//! Every request carries the peer's [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo),
//! as `into_make_service_with_connect_info` would give it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::tls::{Tls, TlsError};

mod connection;
#[cfg(test)]
mod tests;

/// How long a client may take and how many may be connected; see the module docs.
/// With [`Limits::with_tls`], connections speak TLS, whose handshake counts toward
/// the header-read timeout of the connection's first request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) keep_alive_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) tls: Option<Tls>,
}

/// A configured limit outside what the listener accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key} = {value} is out of range: it must be from {min} to {max}")]
pub struct LimitsError {
    /// The configuration key, as both servers spell it.
    pub key: &'static str,
    pub value: u64,
    pub min: u64,
    pub max: u64,
}

impl Limits {
    pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
    pub const DEFAULT_KEEP_ALIVE_TIMEOUT_SECS: u64 = 60;
    /// Room for a few thousand clients at once; the process's open-file limit must
    /// allow as many descriptors (and more, for files and the store).
    pub const DEFAULT_MAX_CONNECTIONS: u64 = 4096;

    /// The limits from configuration values (`header_read_timeout_secs`,
    /// `keep_alive_timeout_secs`, `max_connections`). Zero is refused: no timeout at
    /// all, or no connection, is never what was meant. So are values so large that the
    /// limit would not limit anything.
    pub fn new(
        header_read_timeout_secs: u64,
        keep_alive_timeout_secs: u64,
        max_connections: u64,
    ) -> Result<Self, LimitsError> {
        let in_range = |key, value, max| {
            if (1..=max).contains(&value) {
                Ok(value)
            } else {
                Err(LimitsError {
                    key,
                    value,
                    min: 1,
                    max,
                })
            }
        };
        let header = in_range("header_read_timeout_secs", header_read_timeout_secs, 600)?;
        let idle = in_range("keep_alive_timeout_secs", keep_alive_timeout_secs, 3600)?;
        let cap = in_range("max_connections", max_connections, 1 << 20)?;
        Ok(Limits {
            header_read_timeout: Duration::from_secs(header),
            keep_alive_timeout: Duration::from_secs(idle),
            max_connections: cap as usize,
            tls: None,
        })
    }

    /// The same limits, serving TLS with the PEM certificate chain in `cert` and its
    /// key in `key` instead of plain HTTP; both are reread when they change
    /// ([`Tls`]). A pair that cannot be served now is refused.
    pub fn with_tls(self, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Limits {
            tls: Some(Tls::load(cert, key)?),
            ..self
        })
    }

    /// The TLS the listener serves, if any.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// `https` with TLS, else `http`: the scheme of the URLs the listener answers.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(
            Self::DEFAULT_HEADER_READ_TIMEOUT_SECS,
            Self::DEFAULT_KEEP_ALIVE_TIMEOUT_SECS,
            Self::DEFAULT_MAX_CONNECTIONS,
        )
        .expect("the defaults are in range")
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves; then
/// accepts no more connections, lets open requests finish (each connection closes
/// after its current response) and returns once every connection has ended, as
/// axum's `with_graceful_shutdown` does.
///
/// At the connection cap the listener stops accepting rather than accepting and
/// answering `503`: a health probe or client that arrives then waits in the kernel's
/// listen backlog and is served as soon as any connection ends (stalled heads end by
/// the header-read timeout, idle ones by the keep-alive timeout), where a `503` would
/// fail a liveness probe, get the process restarted and drop every client. Answering
/// would also need a descriptor for each refused connection, which is what the cap
/// protects. Connections already open are unaffected either way.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_from(listener, router, limits, shutdown).await
}

/// Where connections come from: a TCP listener, or in tests one that fails on cue.
pub(crate) trait Acceptor: Send {
    fn accept(&mut self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send;
}

impl Acceptor for TcpListener {
    fn accept(&mut self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

pub(crate) async fn serve_from(
    mut acceptor: impl Acceptor,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    // One permit per open connection; a connection's task holds its permit, so it is
    // given back however the connection ends (closed, timed out, failed, panicked).
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (drain, draining) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut pause = AcceptPause::default();
    let mut warned_at_cap: Option<Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if warned_at_cap.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
                    warned_at_cap = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached: new connections wait until one ends"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                pause.reset();
                // Small answers must not wait for delayed ACKs.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                tokio::spawn(connection::serve_connection(
                    stream,
                    peer,
                    router.clone(),
                    limits.clone(),
                    draining.clone(),
                    slot,
                ));
            }
            // The peer gave up between its handshake and our accept: nothing is wrong here.
            Err(e) if concerns_one_connection(&e) => {
                tracing::debug!(error = %e, "a connection failed before it was accepted");
            }
            // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS): retrying at once
            // would spin on the same error, so pause; the server keeps running.
            Err(e) => {
                let wait = pause.next();
                tracing::warn!(error = %e, pause_ms = wait.as_millis() as u64, "cannot accept connections; pausing");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut shutdown => break,
                }
            }
        }
    }
    // Closing the listening socket makes new connections fail fast instead of waiting.
    drop(acceptor);
    let _ = drain.send(true);
    let open = limits.max_connections - slots.available_permits();
    tracing::debug!(open, "draining open connections");
    // Every slot back means every connection has ended. A request that never ends (a
    // client that stopped reading) must not keep the process from exiting: past the
    // deadline the remaining connections are dropped with the runtime.
    let all = u32::try_from(limits.max_connections).expect("max_connections is at most 2^20");
    if tokio::time::timeout(DRAIN_DEADLINE, slots.acquire_many(all))
        .await
        .is_err()
    {
        let open = limits.max_connections - slots.available_permits();
        tracing::warn!(
            open,
            "connections still open after the drain deadline; closing them"
        );
    }
}

/// How long a shutdown waits for requests in flight before it closes their connections.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// At most one "cap reached" warning per this long: a flood must not flood the log.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Errors of one pending connection (reset or aborted before it was accepted), after
/// which the next accept can go ahead at once.
fn concerns_one_connection(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted
            | ConnectionReset
            | ConnectionRefused
            | NetworkDown
            | NetworkUnreachable
            | HostUnreachable
    )
}

/// The pause after an accept error that is not one connection's: it doubles from
/// 10 ms up to 1 s while the errors go on and starts over once a connection is accepted.
#[derive(Debug)]
struct AcceptPause(Duration);

impl AcceptPause {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        wait
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

impl Default for AcceptPause {
    fn default() -> Self {
        AcceptPause(Self::FIRST)
    }
}
