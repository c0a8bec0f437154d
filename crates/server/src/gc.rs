//! Garbage collection of blobs: a blob no file of a live version references is deleted
//! once it has been unreferenced for `gc_grace_secs`, on any backend. The safety
//! argument is in `artifactstore_index`'s `gc` module: uploads hold the digest they
//! are about to reference ([`UploadHold`]) from before they look whether the blob
//! exists until their file row is written, and a collector deletes only what it could
//! mark under the same checks. One collector runs at a time across replicas.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use artifactstore_blob::{BlobStore, PublishGate};
use artifactstore_index::{Hold, Index};
use artifactstore_model::api::{GcReport, GcRequest};
use artifactstore_model::{Clock, Digest};
use axum::Json;
use axum::extract::{FromRequest, State};

use crate::AppState;
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};

/// Blobs listed, and candidates read, per step.
const PAGE: usize = 1000;
/// How long one collector holds the lease without finishing (renewed every page).
const LEASE: Duration = Duration::from_secs(10 * 60);
/// How long an upload waits for a collector deleting its digest.
const WAIT_FOR_COLLECTOR: Duration = Duration::from_secs(60);

/// When blobs are collected.
#[derive(Clone, Copy, Debug)]
pub struct GcConfig {
    /// How long a blob stays unreferenced before it is deleted.
    pub grace: Duration,
    /// How often the server collects by itself; `None`: only when asked.
    pub interval: Option<Duration>,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            grace: Duration::from_secs(3600),
            interval: Some(Duration::from_secs(3600)),
        }
    }
}

/// One upload's hold on the digest it is about to reference. Taken by the blob store
/// through [`PublishGate`] as soon as the digest is known; released by
/// [`release`](Self::release) once the file row is written or the upload failed, or
/// (if the request is dropped) when it goes away.
pub struct UploadHold {
    index: Arc<Index>,
    holder: String,
    held: Mutex<Option<Digest>>,
    /// Renews the hold while the upload runs (a slow body, a large copy).
    refresher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set when a renewal found the hold gone: the blob may have been collected.
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl UploadHold {
    pub fn new(index: Arc<Index>) -> Self {
        let mut b = [0u8; 12];
        aws_lc_rs::rand::fill(&mut b).expect("system randomness");
        UploadHold {
            index,
            holder: hex::encode(b),
            held: Mutex::new(None),
            refresher: Mutex::new(None),
            lost: Default::default(),
        }
    }

    fn take(&self) -> Option<Digest> {
        if let Some(task) = self
            .refresher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        self.held.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Whether the hold lapsed while the upload ran, so the blob it found may be gone.
    pub fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn keep_fresh(&self, digest: Digest) {
        let (index, holder, lost) = (self.index.clone(), self.holder.clone(), self.lost.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(artifactstore_index::STALE_AFTER / 3).await;
                match index.refresh_hold(&digest, &holder).await {
                    Ok(true) => {}
                    Ok(false) => {
                        lost.store(true, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    // Tried again at the next turn; the hold lapses only after several.
                    Err(e) => {
                        tracing::warn!(error = %e, "could not renew an upload's hold on its blob")
                    }
                }
            }
        });
        *self.refresher.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Who holds it, for the index to release in the file row's own transaction.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The index released the hold with the file row: nothing is left to release.
    pub fn released_with_row(&self) {
        let _ = self.take();
    }

    /// Releases the hold (after the file row is written, or the upload failed).
    pub async fn release(self) {
        if let Some(d) = self.take()
            && let Err(e) = self.index.release_blob(&d, &self.holder).await
        {
            tracing::warn!(error = %e, "could not release an upload's hold on its blob; it lapses by itself");
        }
    }
}

impl Drop for UploadHold {
    fn drop(&mut self) {
        if let Some(d) = self.take() {
            let (index, holder) = (self.index.clone(), self.holder.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = index.release_blob(&d, &holder).await;
                });
            }
        }
    }
}

#[async_trait::async_trait]
impl PublishGate for UploadHold {
    async fn before_publish(&self, digest: &Digest) -> artifactstore_blob::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_COLLECTOR;
        let mut pause = Duration::from_millis(10);
        loop {
            match self.index.hold_blob(digest, &self.holder).await {
                Ok(Hold::Held) => {
                    *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(*digest);
                    self.keep_fresh(*digest);
                    return Ok(());
                }
                Ok(Hold::BeingDeleted) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Ok(Hold::BeingDeleted) => {
                    return Err(artifactstore_blob::Error::Gate {
                        fault: Some(artifactstore_model::StoreFault::Unavailable),
                        message: "the blob is being collected; try again".into(),
                    });
                }
                Err(e) => {
                    return Err(artifactstore_blob::Error::Gate {
                        fault: e.fault(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }
}

/// One collection: notes unreferenced blobs and deletes those unreferenced for longer
/// than `grace`; with `dry_run` only finds what is unreferenced. A blob first found
/// unreferenced now is deleted now only at zero grace.
pub async fn collect(
    index: &Index,
    blobs: &dyn BlobStore,
    clock: &dyn Clock,
    grace: Duration,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    let holder = {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).expect("system randomness");
        hex::encode(b)
    };
    let mut report = GcReport {
        dry_run,
        grace_secs: grace.as_secs(),
        ..GcReport::default()
    };
    if !index.acquire_gc(&holder, LEASE).await? {
        report.busy = true;
        return Ok(report);
    }
    let result = collect_leased(index, blobs, clock, grace, dry_run, &holder, &mut report).await;
    let finished = index.finish_gc(&holder).await;
    result?;
    finished?;
    Ok(report)
}

async fn collect_leased(
    index: &Index,
    blobs: &dyn BlobStore,
    clock: &dyn Clock,
    grace: Duration,
    dry_run: bool,
    holder: &str,
    report: &mut GcReport,
) -> Result<(), GcError> {
    let mut after = None;
    loop {
        let page = blobs.list(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest);
        let digests: Vec<Digest> = page.iter().map(|b| b.digest).collect();
        let live = index.live_digests(&digests).await?;
        report.scanned_blobs += page.len() as u64;
        let unreferenced: Vec<(Digest, u64)> = page
            .iter()
            .filter(|b| !live.contains(&b.digest))
            .map(|b| (b.digest, b.size))
            .collect();
        report.unreferenced_blobs += unreferenced.len() as u64;
        report.unreferenced_bytes += unreferenced.iter().map(|(_, s)| s).sum::<u64>();
        if !dry_run {
            let referenced: Vec<Digest> = live.into_iter().collect();
            index.note_candidates(&unreferenced, &referenced).await?;
        }
        index.acquire_gc(holder, LEASE).await?;
        if page.len() < PAGE {
            break;
        }
    }
    if dry_run {
        return Ok(());
    }
    // Read after the walk: a blob first found unreferenced in this walk is due now only
    // at zero grace.
    let cutoff = clock.now().saturating_sub(grace);
    let mut after = None;
    loop {
        let due = index.candidates_due(cutoff, after.as_ref(), PAGE).await?;
        let Some((last, _)) = due.last() else { break };
        after = Some(*last);
        for (digest, size) in &due {
            if !index.claim_for_deletion(digest, cutoff).await? {
                continue;
            }
            let existed = match blobs.delete(digest).await {
                Ok(existed) => existed,
                Err(e) => {
                    // Unmarked at once: an upload of this digest need not wait for the
                    // mark to lapse; the next pass notes it again.
                    let _ = index.forget_candidate(digest).await;
                    return Err(e.into());
                }
            };
            index.forget_candidate(digest).await?;
            if existed {
                report.collected_blobs += 1;
                report.freed_bytes += size;
            }
        }
        index.acquire_gc(holder, LEASE).await?;
        if due.len() < PAGE {
            break;
        }
    }
    index.sweep_stale_holds().await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Index(#[from] artifactstore_index::Error),
    #[error(transparent)]
    Blob(#[from] artifactstore_blob::Error),
}

impl From<GcError> for ApiError {
    fn from(e: GcError) -> Self {
        match e {
            GcError::Index(e) => e.into(),
            GcError::Blob(e) => e.into(),
        }
    }
}

/// Expires versions by the retention rules when asked (`expire`), then runs a
/// collection, and records both in the metrics.
pub async fn run(st: &AppState, expire: bool, dry_run: bool) -> Result<GcReport, GcError> {
    let expired = if expire {
        let n = crate::retention::expire(&st.index, &st.config.retention, dry_run).await?;
        if !dry_run {
            st.metrics.versions_expired(n);
        }
        n
    } else {
        0
    };
    let mut report = collect(
        &st.index,
        &*st.blobs,
        st.index.clock(),
        st.config.gc.grace,
        dry_run,
    )
    .await?;
    report.expire = expire;
    report.expired_versions = expired;
    if !dry_run && !report.busy {
        st.metrics.gc_ran(
            report.collected_blobs,
            report.freed_bytes,
            st.index.clock().now(),
        );
    }
    Ok(report)
}

/// `POST /v1/admin/gc`: collect now (the `admin` permission).
pub async fn admin_gc(
    State(st): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    req: axum::extract::Request,
) -> ApiResult<Json<GcReport>> {
    caller.require_anywhere(Permission::Admin)?;
    // Read only once the caller may.
    let body = axum::body::Bytes::from_request(req, &()).await;
    let request: GcRequest = crate::artifacts::parse_json_body(
        &headers,
        body,
        "{\"expire\": true|false, \"dry_run\": true|false}",
    )?
    .unwrap_or_default();
    let report = run(&st, request.expire, request.dry_run).await?;
    tracing::info!(
        expired = report.expired_versions,
        collected = report.collected_blobs,
        freed_bytes = report.freed_bytes,
        busy = report.busy,
        dry_run = report.dry_run,
        "garbage collection asked for"
    );
    Ok(Json(report))
}

/// Collects every `interval` for as long as the server runs.
pub async fn keep_collecting(st: AppState) {
    let Some(interval) = st.config.gc.interval else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        match run(&st, false, false).await {
            Ok(r) if r.busy => {
                tracing::debug!("garbage collection skipped: another collector runs")
            }
            Ok(r) => tracing::info!(
                collected = r.collected_blobs,
                freed_bytes = r.freed_bytes,
                "garbage collection"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "garbage collection failed; it runs again at the next interval")
            }
        }
    }
}
