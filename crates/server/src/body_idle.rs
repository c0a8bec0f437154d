//! The idle-body timeout: a request body from which no byte arrives for
//! `body_idle_timeout` fails, so that whatever reads it gives up — an upload aborts and
//! stores nothing — and the client, if it still listens, is answered 408
//! `request_timeout`. It applies to every route, and costs nothing where there is no
//! body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::Stream;
use http_body_util::{BodyStream, StreamBody};
use tokio::time::{Instant, Sleep};

use artifactstore_model::api::ErrorCode;

use crate::AppState;
use crate::error::{ApiError, ErrorCodeTag};

/// The error a body yields when it went silent for too long.
#[derive(Debug)]
pub struct BodyIdle {
    pub after: Duration,
}

impl std::fmt::Display for BodyIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no byte of the request body arrived for {} s",
            self.after.as_secs()
        )
    }
}

impl std::error::Error for BodyIdle {}

/// Wraps every request body in the idle timeout. A handler that failed because its body
/// timed out answers `body_incomplete`; that answer becomes the 408 here.
pub async fn limit(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let after = st.config.body_idle_timeout;
    let fired = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::new(StreamBody::new(IdleTimeout {
        inner: BodyStream::new(body),
        after,
        sleep: Box::pin(tokio::time::sleep(after)),
        armed: false,
        fired: fired.clone(),
    }));
    let resp = next.run(Request::from_parts(parts, body)).await;
    let failed_on_body = resp
        .extensions()
        .get::<ErrorCodeTag>()
        .is_some_and(|tag| tag.0 == ErrorCode::BodyIncomplete);
    if failed_on_body && fired.load(Ordering::Acquire) {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            format!("{}; nothing was stored", BodyIdle { after }),
        )
        .into_response();
    }
    resp
}

/// A stream of body frames that fails with [`BodyIdle`] when, once polled, no frame
/// arrives for `after`. The clock runs only while the reader waits for the client, not
/// while the reader is busy (a slow disk is not the client's silence).
struct IdleTimeout<S> {
    inner: S,
    after: Duration,
    sleep: Pin<Box<Sleep>>,
    /// Whether `sleep` counts down the current wait.
    armed: bool,
    fired: Arc<AtomicBool>,
}

impl<S, T, E> Stream for IdleTimeout<S>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    E: Into<axum::BoxError>,
{
    type Item = Result<T, axum::BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.fired.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            this.armed = false;
            return Poll::Ready(item.map(|r| r.map_err(Into::into)));
        }
        if !this.armed {
            this.sleep.as_mut().reset(Instant::now() + this.after);
            this.armed = true;
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.fired.store(true, Ordering::Release);
                Poll::Ready(Some(Err(Box::new(BodyIdle { after: this.after }))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn timed<S>(inner: S, after: Duration) -> IdleTimeout<S> {
        IdleTimeout {
            inner,
            after,
            sleep: Box::pin(tokio::time::sleep(after)),
            armed: false,
            fired: Arc::new(AtomicBool::new(false)),
        }
    }

    #[tokio::test]
    async fn a_silent_body_fails_after_the_timeout_and_then_ends() {
        let inner =
            futures::stream::iter([Ok::<_, std::io::Error>(1u8)]).chain(futures::stream::pending());
        let mut s = timed(inner.boxed(), Duration::from_millis(300));
        assert_eq!(s.next().await.unwrap().unwrap(), 1);
        let start = Instant::now();
        let err = s.next().await.unwrap().unwrap_err();
        assert!(err.is::<BodyIdle>(), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(s.fired.load(Ordering::Acquire));
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn each_byte_restarts_the_clock_and_a_busy_reader_is_not_timed() {
        // A byte every 100 ms under a 1 s timeout: never silent for 1 s.
        let inner = futures::stream::unfold(0u8, |n| async move {
            (n < 3).then_some(())?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, std::io::Error>(n), n + 1))
        });
        let mut s = timed(inner.boxed(), Duration::from_secs(1));
        for n in 0..3 {
            assert_eq!(s.next().await.unwrap().unwrap(), n);
            // The reader is busy for longer than the timeout between polls.
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        assert!(s.next().await.is_none());
        assert!(!s.fired.load(Ordering::Acquire));
    }
}
