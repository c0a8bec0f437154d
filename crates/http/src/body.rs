//! A deadline for a whole request body. The listener bounds the wait for a request's
//! head; a route whose bodies are small (vend's token exchanges, a few KiB) bounds the
//! body too, so a client that trickles a body byte by byte cannot hold a connection
//! and a handler open. Streaming uploads use an idle timeout instead (the artifact
//! server's `body_idle_timeout_secs`), since a large body may rightly take long.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use tokio::time::Sleep;

/// What a body yields once its deadline has passed; a reader sees a failed body and
/// answers as it answers any unreadable one.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyTooSlow(pub Duration);

/// Middleware: the request's body must be whole within `limit` of the request reaching
/// the router. Use with `axum::middleware::from_fn_with_state(limit, body_deadline)`.
pub async fn body_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = Body::new(DeadlineBody {
        inner: body,
        sleep: Box::pin(tokio::time::sleep(limit)),
        limit,
    });
    next.run(Request::from_parts(parts, body)).await
}

struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow(this.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::Router;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A route that reads its body whole and says how many bytes it got, or why not.
    async fn app(limit: Duration) -> std::net::SocketAddr {
        let router = Router::new()
            .route(
                "/",
                post(
                    |body: Result<Bytes, axum::extract::rejection::BytesRejection>| async move {
                        match body {
                            Ok(b) => format!("got {}", b.len()),
                            Err(e) => format!("refused: {}", e.body_text()),
                        }
                    },
                ),
            )
            .layer(axum::middleware::from_fn_with_state(limit, body_deadline));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    async fn post_trickled(addr: std::net::SocketAddr, body: &[u8], gap: Duration) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        for b in body {
            if tcp.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(gap).await;
        }
        let mut answer = String::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(20), tcp.read_to_string(&mut answer)).await;
        answer
    }

    #[tokio::test]
    async fn a_trickled_body_is_cut_off_at_the_deadline() {
        let addr = app(Duration::from_millis(500)).await;
        let started = Instant::now();
        // 40 bytes, one every 100 ms: 4 s in all, far past the deadline.
        let answer = post_trickled(addr, &[b'x'; 40], Duration::from_millis(100)).await;
        assert!(answer.contains("refused"), "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the body was read to its end: {answer}"
        );
    }

    #[tokio::test]
    async fn a_body_sent_in_time_is_read_whole() {
        let addr = app(Duration::from_secs(5)).await;
        let answer = post_trickled(addr, &[b'x'; 20], Duration::from_millis(10)).await;
        assert!(answer.contains("got 20"), "{answer}");
    }
}
