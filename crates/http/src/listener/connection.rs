//! One connection: hyper's HTTP/1.1 state machine, plus the two timeouts it cannot
//! express. hyper's own header-read timer starts when the previous response ends, so
//! it also cuts idle kept-alive connections at the header-read timeout (the test
//! `hypers_own_header_timer_also_times_the_idle_wait` shows it) and a keep-alive
//! timeout above it could never apply. Here the connection's [`Activity`] tells the
//! two waits apart: until the first byte of a head it is idle (keep-alive timeout;
//! header-read timeout for a connection's first request), from that byte until the
//! head is complete it reads a head (header-read timeout), and while a request is
//! served (its body arriving, its answer being sent) neither runs: a body that stops
//! arriving is for the routes to bound (the artifact server's `body_idle_timeout_secs`).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use super::Limits;

/// Serves one accepted connection until it closes, times out, or, once `draining`
/// turns, has finished its current response. `_slot` is its place under the
/// connection cap, given back when this returns or unwinds, so a connection in its
/// TLS handshake counts toward the cap too.
pub(super) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    mut draining: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let accepted = Instant::now();
    let Some(tls) = limits.tls.as_ref() else {
        return serve_http(stream, peer, router, &limits, accepted, draining).await;
    };
    // The handshake is part of the first request's wait: a client that connects and
    // sends nothing, or stalls halfway, is closed at the same header-read deadline.
    let handshake = tokio::time::timeout_at(
        accepted + limits.header_read_timeout,
        tls.acceptor().accept(stream),
    );
    let stream = tokio::select! {
        shaken = handshake => match shaken {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "closing connection: TLS handshake not complete within header_read_timeout_secs");
                return;
            }
        },
        // Nothing was asked yet, so there is nothing to finish.
        _ = draining.changed() => return,
    };
    serve_http(stream, peer, router, &limits, accepted, draining).await
}

/// HTTP/1.1 on `stream`, plain or TLS, from `accepted` on.
async fn serve_http<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    limits: &Limits,
    accepted: Instant,
    mut draining: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(accepted));
    let io = TokioIo::new(WatchedIo {
        stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let request = activity.request_started();
            let response = router.clone().oneshot(req);
            async move {
                let response = response.await.unwrap_or_else(|never| match never {});
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _request: request,
                }))
            }
        })
    };
    let mut builder = http1::Builder::new();
    // The timeouts are this module's (see above), not hyper's.
    builder.header_read_timeout(None);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut drain_started = false;
    loop {
        let deadline = activity.deadline(limits);
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = timer => {
                if let Some(why) = activity.expired(limits, Instant::now()) {
                    tracing::debug!(%peer, "closing connection: {why}");
                    return;
                }
            }
            _ = draining.changed(), if !drain_started => {
                drain_started = true;
                // hyper closes after the response in progress, at once when idle.
                conn.as_mut().graceful_shutdown();
                if activity.never_used() {
                    // Nothing read, nothing to answer: hyper would wait for a request.
                    return;
                }
            }
        }
    }
}

/// What a connection is doing, as far as its timeouts are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No byte of a request head since `since`: the connection was just accepted
    /// (`fresh`) or its last response ended.
    Idle { since: Instant, fresh: bool },
    /// The first byte of a request head arrived at `since`; the head is not complete.
    ReadingHead { since: Instant },
    /// Requests being served: from a complete head until the response body is sent.
    Busy { requests: usize },
}

/// The connection's [`Phase`], moved on by its reads (first byte of a head), its
/// service (a complete head) and its response bodies (sent or dropped).
pub(super) struct Activity {
    phase: Mutex<Phase>,
    /// Woken on every change of phase, so that the connection's timer re-arms.
    changed: Notify,
}

impl Activity {
    fn new(accepted: Instant) -> Self {
        Activity {
            phase: Mutex::new(Phase::Idle {
                since: accepted,
                fresh: true,
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, mut phase: MutexGuard<'_, Phase>, next: Phase) {
        *phase = next;
        drop(phase);
        self.changed.notify_one();
    }

    /// Bytes arrived from the client.
    fn bytes_read(&self) {
        let phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            self.set(
                phase,
                Phase::ReadingHead {
                    since: Instant::now(),
                },
            );
        }
    }

    /// A complete head reached the service; the request lasts as long as the guard.
    fn request_started(self: &Arc<Self>) -> RequestGuard {
        let phase = self.phase();
        let requests = match *phase {
            Phase::Busy { requests } => requests + 1,
            _ => 1,
        };
        self.set(phase, Phase::Busy { requests });
        RequestGuard(self.clone())
    }

    fn request_ended(&self) {
        let phase = self.phase();
        let next = match *phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
                fresh: false,
            },
        };
        self.set(phase, next);
    }

    /// When the current wait times out, if it does.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match *self.phase() {
            Phase::Idle { since, fresh: true } | Phase::ReadingHead { since } => {
                Some(since + limits.header_read_timeout)
            }
            Phase::Idle {
                since,
                fresh: false,
            } => Some(since + limits.keep_alive_timeout),
            Phase::Busy { .. } => None,
        }
    }

    /// Why the connection is to be closed at `now`, if it is.
    fn expired(&self, limits: &Limits, now: Instant) -> Option<&'static str> {
        let deadline = self.deadline(limits)?;
        if now < deadline {
            return None;
        }
        Some(match *self.phase() {
            Phase::Idle { fresh: true, .. } => "no request began within header_read_timeout_secs",
            Phase::ReadingHead { .. } => {
                "request head not complete within header_read_timeout_secs"
            }
            _ => "idle longer than keep_alive_timeout_secs",
        })
    }

    /// Whether nothing was ever read from the client.
    fn never_used(&self) -> bool {
        matches!(*self.phase(), Phase::Idle { fresh: true, .. })
    }
}

/// One request in service; its drop ends the request.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The connection's stream (after TLS, if any), telling its [`Activity`] when bytes
/// of requests arrive.
struct WatchedIo<S> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in service until it is sent or dropped,
/// so a long download is never taken for an idle connection.
struct TrackedBody {
    body: Body,
    _request: RequestGuard,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
