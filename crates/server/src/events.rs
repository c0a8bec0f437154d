//! `GET /v1/events`: the event log, with long-polling for followers, and its end
//! (`tail`) for a follower that starts from now.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;

use artifactstore_model::api::EventsPage;

use crate::AppState;
use crate::artifacts::query;
use crate::auth::{Caller, Permission};
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
    /// The last this many events instead, oldest first; `next_after` is then the
    /// newest event of the log, where following begins.
    #[serde(default)]
    tail: Option<u32>,
}

/// How often a waiting request re-reads the log even without a local notification, so
/// that events written by another replica on a shared database are seen too.
const POLL: Duration = Duration::from_secs(1);

/// Events a request reads past for a caller who may not read them all, before it
/// answers with what it found (maybe nothing) and where it stopped.
const MAX_SCANNED: usize = 10_000;
/// Events read at a time for such a caller.
const SCAN_BATCH: u32 = 1000;

pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Json<EventsPage>> {
    caller.require_anywhere(Permission::Read)?;
    let q = query(q)?;
    if let Some(n) = q.tail {
        // 0 is what `after` and `wait` mean when absent.
        if !(1..=1000).contains(&n) || q.after != 0 || q.wait.unwrap_or(0) != 0 || q.limit.is_some()
        {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "tail must be 1..=1000, and takes no after, limit or wait",
            ));
        }
        return tail(&st, &caller, n).await.map(Json);
    }
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
    let everything = caller.reads_everything();
    // A caller who may not read everything has the log read past for it in batches of
    // at least SCAN_BATCH, whatever its `limit`, so a small limit cannot turn one
    // request into thousands of queries.
    let batch = if everything {
        limit
    } else {
        limit.max(SCAN_BATCH)
    };
    let (mut after, mut scanned) = (q.after, 0);
    loop {
        notified.borrow_and_update();
        let mut events = st.index.events(after, batch).await?;
        let full_batch = events.len() == batch as usize;
        scanned += events.len();
        if let Some(last) = events.last() {
            after = last.seq;
        }
        // Events of names the caller cannot read are passed over: it learns neither
        // their names nor, by an early answer, that one happened (only, from
        // `next_after`, that the log moved on).
        if !everything {
            events.retain(|e| caller.allows(Permission::Read, &e.namespace, &e.name));
            if events.len() > limit as usize {
                events.truncate(limit as usize);
                after = events.last().map_or(after, |e| e.seq);
            }
        }
        let now = tokio::time::Instant::now();
        if !events.is_empty() || now >= deadline || scanned >= MAX_SCANNED {
            return Ok(Json(EventsPage {
                events,
                next_after: after,
            }));
        }
        if full_batch {
            // More may be waiting right behind what was passed over.
            continue;
        }
        let _ = tokio::time::timeout((deadline - now).min(POLL), notified.changed()).await;
    }
}

/// The last `n` events the caller may read, oldest first, and the newest sequence
/// number of the whole log: a follower shows these and asks for what comes after, so
/// it never reads the log from its beginning. A caller who may not read everything has
/// at most `MAX_SCANNED` events read past for it, as when following.
async fn tail(st: &AppState, caller: &Caller, n: u32) -> ApiResult<EventsPage> {
    let everything = caller.reads_everything();
    let batch = if everything { n } else { n.max(SCAN_BATCH) };
    let (mut before, mut newest, mut scanned) = (i64::MAX, None, 0);
    let mut shown = Vec::new();
    loop {
        let events = st.index.events_before(before, batch).await?;
        let done = events.len() < batch as usize;
        scanned += events.len();
        newest = newest.or(Some(events.first().map_or(0, |e| e.seq)));
        if let Some(last) = events.last() {
            before = last.seq;
        }
        shown.extend(
            events
                .into_iter()
                .filter(|e| everything || caller.allows(Permission::Read, &e.namespace, &e.name)),
        );
        if shown.len() >= n as usize || done || scanned >= MAX_SCANNED {
            shown.truncate(n as usize);
            shown.reverse();
            return Ok(EventsPage {
                events: shown,
                next_after: newest.unwrap_or(0),
            });
        }
    }
}
