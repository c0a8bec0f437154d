//! A result worth reusing for a moment: both servers' `/readyz` run one round of checks
//! and let it answer every probe for a second, so a flood of probes costs the stores
//! and upstreams one round a second however many arrive.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// The last value computed and when. Holding the lock while computing makes it single
/// flight: callers that arrive meanwhile wait for that computation and take its result.
pub struct Recent<T> {
    fresh_for: Duration,
    last: Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Recent<T> {
    pub fn new(fresh_for: Duration) -> Self {
        Recent {
            fresh_for,
            last: Mutex::new(None),
        }
    }

    /// The last value if it is younger than `fresh_for`, else a new one from `compute`.
    pub async fn get<F: Future<Output = T>>(&self, compute: impl FnOnce() -> F) -> T {
        let mut last = self.last.lock().await;
        if let Some((at, value)) = &*last
            && at.elapsed() < self.fresh_for
        {
            return value.clone();
        }
        let value = compute().await;
        *last = Some((Instant::now(), value.clone()));
        value
    }
}

/// How long one round of readiness checks answers `/readyz`, on both servers.
pub const READINESS_FRESH_FOR: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_computation_until_it_is_stale() {
        let recent = Arc::new(Recent::new(Duration::from_millis(200)));
        let runs = Arc::new(AtomicU32::new(0));
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let (recent, runs) = (recent.clone(), runs.clone());
                tokio::spawn(async move {
                    recent
                        .get(|| async {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            runs.fetch_add(1, Ordering::SeqCst)
                        })
                        .await
                })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), 0, "every caller got the first round");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            recent
                .get(|| async { runs.fetch_add(1, Ordering::SeqCst) })
                .await,
            1
        );
    }
}
