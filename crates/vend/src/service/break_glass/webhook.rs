//! The break-glass webhook: one POST of a small JSON document per allowed use and per
//! refused credential, from a task of its own so that it never delays an answer. No
//! secret is ever in it (no credential, no key id). A delivery that fails is logged
//! and counted (`artifactstore_vend_break_glass_webhook_failures`); the audit log,
//! not the webhook, is the record.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;

use super::BreakGlassCounters;

/// Deliveries in flight at once; beyond it a notification is dropped (and counted as
/// failed) rather than queued without bound behind a slow receiver.
pub const MAX_IN_FLIGHT: usize = 8;
/// Whole delivery, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct Webhook {
    url: String,
    http: reqwest::Client,
    in_flight: Arc<Semaphore>,
}

impl Webhook {
    pub fn new(url: &str) -> Result<Self, String> {
        let http = artifactstore_credentials::sources::http_client_builder(TIMEOUT)
            .timeout(TIMEOUT)
            // The configured URL is the receiver: never somewhere it points to.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("break_glass.webhook_url: HTTP client: {e}"))?;
        Ok(Webhook {
            url: url.to_owned(),
            http,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Sends `payload` in the background.
    pub fn notify(&self, payload: Value, counters: Arc<BreakGlassCounters>) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            counters.webhook_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "break-glass webhook: {MAX_IN_FLIGHT} deliveries already in flight; this notification was dropped (the audit log has the event)"
            );
            return;
        };
        let request = self.http.post(&self.url).json(&payload);
        tokio::spawn(async move {
            let _permit = permit;
            let failure = match request.send().await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("the receiver answered {}", r.status())),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = failure {
                counters.webhook_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %why, "break-glass webhook delivery failed (the audit log has the event)");
            }
        });
    }
}
