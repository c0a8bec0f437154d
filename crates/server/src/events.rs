//! `GET /v1/events`: the event log, with long-polling for followers.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;

use artifactstore_model::api::EventsPage;

use crate::AppState;
use crate::artifacts::query;
use crate::error::{ApiError, ApiResult};
use artifactstore_model::api::ErrorCode;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    limit: Option<u32>,
    /// Seconds to wait for an event when there is none yet.
    #[serde(default)]
    wait: Option<u64>,
}

/// How often a waiting request re-reads the log even without a local notification, so
/// that events written by another replica on a shared database are seen too.
const POLL: Duration = Duration::from_secs(1);

pub async fn list(
    State(st): State<AppState>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Json<EventsPage>> {
    let q = query(q)?;
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "limit must be 1..=1000",
            ));
        }
    };
    let wait = Duration::from_secs(q.wait.unwrap_or(0)).min(st.config.max_event_wait);
    let deadline = tokio::time::Instant::now() + wait;
    let mut notified = st.index.subscribe();
    loop {
        notified.borrow_and_update();
        let events = st.index.events(q.after, limit).await?;
        let now = tokio::time::Instant::now();
        if !events.is_empty() || now >= deadline {
            let next_after = events.last().map_or(q.after, |e| e.seq);
            return Ok(Json(EventsPage { events, next_after }));
        }
        let _ = tokio::time::timeout((deadline - now).min(POLL), notified.changed()).await;
    }
}
