//! `/readyz` under a flood of probes: one round of checks answers every probe for a
//! second, so the store is not asked once per probe, and a change shows within it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use artifactstore_server::Probe;

/// A check that counts how often it runs and fails when told to.
#[derive(Default)]
struct Counting {
    runs: AtomicU64,
    failing: AtomicBool,
}

impl Probe for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn check(&self) -> Result<(), String> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            Err("told to fail".into())
        } else {
            Ok(())
        }
    }
    fn encode_metrics(
        &self,
        _: &mut artifactstore_model::metrics::prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        Ok(())
    }
}

async fn status(app: &axum::Router) -> StatusCode {
    let req = Request::get("/readyz").body(Body::empty()).unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn a_flood_of_probes_runs_one_round_of_checks_a_second() {
    let (state, _dir) = support::state().await;
    let probe = Arc::new(Counting::default());
    let app = artifactstore_server::app(state.with_probe(probe.clone()));
    let probes: Vec<_> = (0..200)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { status(&app).await })
        })
        .collect();
    for p in probes {
        assert_eq!(p.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        probe.runs.load(Ordering::SeqCst),
        1,
        "one round for 200 probes"
    );

    probe.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(&app).await, StatusCode::SERVICE_UNAVAILABLE);
    probe.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(&app).await, StatusCode::OK, "recovers by itself");
    assert_eq!(probe.runs.load(Ordering::SeqCst), 3);
}
