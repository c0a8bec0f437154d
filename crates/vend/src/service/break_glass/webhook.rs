//! The break-glass webhook: one POST of a small JSON document per allowed use and per
//! refused credential, from a task of its own so that it never delays an answer. No
//! secret is ever in it (no credential, no key id). A delivery that fails is logged
//! and counted (`artifactstore_vend_break_glass_webhook_failures`); the audit log,
//! not the webhook, is the record. The URL is never logged either: chat and paging
//! webhooks carry their token in it.

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
    url: reqwest::Url,
    http: reqwest::Client,
    in_flight: Arc<Semaphore>,
}

impl Webhook {
    /// `url` is the configured `webhook_url` or the resolved `webhook_url_ref`; `what`
    /// names which, for errors (which never show the URL).
    pub fn new(url: &str, what: &str) -> Result<Self, String> {
        let Some(url) = crate::config::break_glass::webhook_url(url) else {
            return Err(format!(
                "break_glass.{what}: not an http(s) URL (the value is not shown)"
            ));
        };
        let http = artifactstore_credentials::sources::http_client_builder(TIMEOUT)
            .timeout(TIMEOUT)
            // The configured URL is the receiver: never somewhere it points to.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("break_glass.{what}: HTTP client: {e}"))?;
        Ok(Webhook {
            url,
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
        let request = self.http.post(self.url.clone()).json(&payload);
        tokio::spawn(async move {
            let _permit = permit;
            let failure = match request.send().await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("the receiver answered {}", r.status())),
                Err(e) => Some(describe(e)),
            };
            if let Some(why) = failure {
                counters.webhook_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %why, "break-glass webhook delivery failed (the audit log has the event)");
            }
        });
    }
}

/// A failed delivery in words, without the URL (which reqwest's errors carry).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut words = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        words.push_str(": ");
        words.push_str(&s.to_string());
        source = s.source();
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "canary-hook-token-7c3e";

    /// A closed port on 127.0.0.1.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn a_failed_delivery_is_described_without_the_url() {
        let url = format!(
            "http://127.0.0.1:{}/hooks/{CANARY}?token={CANARY}",
            closed_port()
        );
        let e = reqwest::Client::new().post(&url).send().await.unwrap_err();
        assert!(e.to_string().contains(CANARY), "reqwest's own words: {e}");
        let words = describe(e);
        assert!(!words.contains(CANARY), "{words}");
        assert!(!words.contains("/hooks/"), "{words}");
    }

    #[test]
    fn a_bad_url_is_refused_without_being_shown() {
        let err = Webhook::new(&format!("hooks.example/{CANARY}"), "webhook_url_ref")
            .err()
            .unwrap();
        assert!(err.contains("break_glass.webhook_url_ref"), "{err}");
        assert!(!err.contains(CANARY), "{err}");
    }
}
