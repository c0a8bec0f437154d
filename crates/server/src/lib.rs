//! The artifact service: an HTTP API over a [`BlobStore`] and an [`Index`].
//!
//! [`app`] builds the router from shared state (tests call it without a socket);
//! [`run`] serves it on a listener until a shutdown future resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tokio::net::TcpListener;

use artifactstore_blob::BlobStore;
use artifactstore_index::Index;

mod artifacts;
pub mod audit;
pub mod auth;
mod body_idle;
mod download;
pub mod error;
mod events;
pub mod fsck;
pub mod gc;
pub mod guard;
mod http_range;
pub mod metrics;
mod ops;
pub mod quota;
pub mod retention;
mod ui;

pub use artifacts::{DIGEST_HEADER, VERSION_HEADER};
/// The listener's connection cap and timeouts, shared with the vend server.
pub use artifactstore_http::Limits;
pub use download::Downloads;
pub use metrics::Metrics;
pub use ops::OPENAPI;

/// Settings of the service itself (not of where it listens).
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Largest accepted upload, in bytes.
    pub max_upload_size: u64,
    /// Longest an events long-poll may wait.
    pub max_event_wait: Duration,
    /// Which `Host` and `Origin` headers are served (see [`guard`]).
    pub origins: guard::Origins,
    /// A request body silent this long is given up: 408 `request_timeout`.
    pub body_idle_timeout: Duration,
    /// Uploads received at once; beyond it 503 `too_many_uploads`.
    pub max_concurrent_uploads: usize,
    /// When unreferenced blobs are collected.
    pub gc: gc::GcConfig,
    /// Which versions expire (`[[retention]]`).
    pub retention: retention::Retention,
    /// How often the server expires versions by itself; `None`: only when asked.
    pub retention_interval: Option<Duration>,
    /// What namespaces may hold (`[[quota]]`).
    pub quotas: quota::Quotas,
    /// Whether GETs of files and blobs may be redirected to the blob store.
    pub downloads: Downloads,
    /// Whether the browser is served at `/ui/` (`ui`).
    pub ui: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_upload_size: 64 << 30,
            max_event_wait: Duration::from_secs(60),
            origins: guard::Origins::loopback_and(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                8480,
            ))),
            body_idle_timeout: Duration::from_secs(60),
            max_concurrent_uploads: 1024,
            gc: gc::GcConfig::default(),
            retention: retention::Retention::default(),
            retention_interval: Some(Duration::from_secs(3600)),
            quotas: quota::Quotas::default(),
            downloads: Downloads::Proxy,
            ui: true,
        }
    }
}

/// A dependency beyond the index and the blob store that readiness and metrics report
/// on (the S3 backend's credentials).
pub trait Probe: Send + Sync {
    /// Its key under `checks` in `/readyz`.
    fn name(&self) -> &'static str;
    /// `Err` with a reason when the server cannot serve because of it.
    fn check(&self) -> Result<(), String>;
    /// Its metrics, written at every scrape of `/metrics` through the shared renderer
    /// (`artifactstore_model::metrics::const_gauge` and friends).
    fn encode_metrics(
        &self,
        encoder: &mut artifactstore_model::metrics::prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result;
}

#[derive(Clone)]
pub struct AppState {
    pub blobs: Arc<dyn BlobStore>,
    pub index: Arc<Index>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ServiceConfig>,
    pub probes: Vec<Arc<dyn Probe>>,
    /// One permit per upload being received (`max_concurrent_uploads`).
    pub upload_permits: Arc<tokio::sync::Semaphore>,
    /// The last round of `/readyz` checks.
    pub(crate) ready: Arc<ops::ReadyCache>,
    /// Who may do what (`[auth]`); off unless configured.
    pub auth: Arc<auth::Auth>,
    /// The audit log of changes and refusals (`[audit]`); none unless configured.
    pub audit: Option<Arc<audit::ApiAudit>>,
}

impl AppState {
    pub fn new(blobs: Arc<dyn BlobStore>, index: Arc<Index>, config: ServiceConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        metrics.add_index(index.clone());
        AppState {
            blobs,
            index,
            metrics,
            upload_permits: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_uploads)),
            config: Arc::new(config),
            probes: Vec::new(),
            ready: Arc::new(ops::ReadyCache::new(
                artifactstore_http::recent::READINESS_FRESH_FOR,
            )),
            auth: Arc::new(auth::Auth::off()),
            audit: None,
        }
    }

    /// Audits changes and refusals to `audit` (and reports its health in `/readyz`
    /// and `/metrics`).
    pub fn with_audit(self, audit: Arc<audit::ApiAudit>) -> Self {
        let mut st = self.with_probe(audit.clone());
        st.audit = Some(audit);
        st
    }

    pub fn with_auth(mut self, auth: auth::Auth) -> Self {
        self.auth = Arc::new(auth);
        self
    }

    pub fn with_probe(mut self, probe: Arc<dyn Probe>) -> Self {
        self.metrics.add_probe(probe.clone());
        self.probes.push(probe);
        self
    }
}

/// Largest JSON body accepted where labels are sent.
const LABELS_BODY_MAX: usize = 64 * 1024;

/// Every route of the API. `openapi.json` documents exactly these (a test checks it).
pub fn app(state: AppState) -> Router {
    use artifacts::*;
    let v = "/v1/artifacts/{namespace}/{name}/{version}";
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/v1/artifacts", get(list_namespaces))
        .route("/v1/artifacts/{namespace}", get(list_names))
        .route("/v1/artifacts/{namespace}/{name}", get(list_versions))
        .route(
            v,
            get(get_version).delete(delete_version).patch(patch_version),
        )
        .route(
            &format!("{v}/complete"),
            post(complete)
                // The labels body is small; uploads below stream and are bounded by
                // `max_upload_size` instead.
                .layer(DefaultBodyLimit::max(LABELS_BODY_MAX))
                .get(get_file_named_complete)
                .put(put_file_named_complete),
        )
        .route(&format!("{v}/{{*path}}"), get(get_file).put(put_file))
        .route("/v1/blobs/{digest}", get(get_blob))
        .route("/v1/events", get(events::list))
        // The browser: no API of its own, its pages read the routes above.
        .merge(ui::routes(state.config.ui))
        .route(
            "/v1/admin/gc",
            post(gc::admin_gc).layer(DefaultBodyLimit::max(LABELS_BODY_MAX)),
        )
        .fallback(ops::route_not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            body_idle::limit,
        ))
        // After the Host/Origin guard, before any body is read.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(
            guard::of(&state.config.origins),
            artifactstore_http::guard::guard,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), audit::layer))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and times every request, and logs it at debug level.
async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let mut resp = next.run(req).await;
    // A browser must never guess a type: an uploaded file is what its media type says.
    resp.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    let code = resp.extensions().get::<error::ErrorCodeTag>().map(|c| c.0);
    st.metrics.observe(
        &method,
        &route,
        resp.status().as_u16(),
        start.elapsed(),
        code,
    );
    tracing::debug!(%method, %route, status = resp.status().as_u16(), elapsed_ms = start.elapsed().as_millis() as u64, "request");
    resp
}

/// Serves the API on `listener` until `shutdown` resolves, then drains open requests.
/// Its connection cap and timeouts are `limits` (see [`artifactstore_http::listener`]).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    artifactstore_http::serve(listener, app(state), limits, shutdown).await
}
