//! The artifact server's metrics, on the shared renderer (`artifactstore_model::metrics`).
//!
//! Every label value comes from a bounded set: methods outside the standard ones are
//! `other`, routes are the router's templates (or `unmatched`), statuses are numbers
//! and error codes are [`ErrorCode`]s. A client cannot create series.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use artifactstore_model::api::ErrorCode;
use artifactstore_model::metrics::prometheus_client::collector::Collector;
use artifactstore_model::metrics::prometheus_client::encoding::DescriptorEncoder;
use artifactstore_model::metrics::prometheus_client::metrics::counter::Counter;
use artifactstore_model::metrics::prometheus_client::metrics::family::Family;
use artifactstore_model::metrics::prometheus_client::metrics::gauge::Gauge;
use artifactstore_model::metrics::prometheus_client::metrics::histogram::Histogram;
use artifactstore_model::metrics::prometheus_client::registry::Registry;
use axum::http::Method;

use crate::Probe;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    bytes_in: Counter,
    bytes_out: Counter,
    download_redirects: Counter,
    uploads_in_flight: Gauge,
    gc_blobs: Counter,
    gc_bytes: Counter,
    gc_last_run: Gauge,
    versions_expired: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The label value of a request method: the standard methods by name, anything else
/// `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        registry.register("artifactstore_build_info", "Build information", build);
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "artifactstore_http_requests",
            "HTTP requests answered",
            requests.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        registry.register(
            "artifactstore_http_errors",
            "Error answers by error code",
            errors.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "artifactstore_http_request_duration_seconds",
            "Time to answer a request (headers; streaming bodies continue)",
            latency.clone(),
        );
        let bytes_in = Counter::default();
        registry.register(
            "artifactstore_bytes_received",
            "Artifact bytes received in uploads",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "artifactstore_bytes_sent",
            "Artifact bytes sent in downloads",
            bytes_out.clone(),
        );
        let download_redirects = Counter::default();
        registry.register(
            "artifactstore_download_redirects",
            "Downloads answered with a redirect to a presigned GET of the blob store",
            download_redirects.clone(),
        );
        let uploads_in_flight = Gauge::default();
        registry.register(
            "artifactstore_uploads_in_flight",
            "Uploads being received now",
            uploads_in_flight.clone(),
        );
        let gc_blobs = Counter::default();
        registry.register(
            "artifactstore_gc_blobs_collected",
            "Unreferenced blobs deleted by garbage collection",
            gc_blobs.clone(),
        );
        let gc_bytes = Counter::default();
        registry.register(
            "artifactstore_gc_bytes_freed",
            "Bytes of the blobs garbage collection deleted",
            gc_bytes.clone(),
        );
        let gc_last_run = Gauge::default();
        registry.register(
            "artifactstore_gc_last_run_timestamp_seconds",
            "When this server last finished a garbage collection (Unix seconds)",
            gc_last_run.clone(),
        );
        let versions_expired = Counter::default();
        registry.register(
            "artifactstore_versions_expired",
            "Versions expired by retention rules or their producer's expiry",
            versions_expired.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            errors,
            latency,
            bytes_in,
            bytes_out,
            download_redirects,
            uploads_in_flight,
            gc_blobs,
            gc_bytes,
            gc_last_run,
            versions_expired,
        }
    }

    /// Adds a probe's metrics (read at every scrape) to `/metrics`.
    pub fn add_probe(&self, probe: Arc<dyn Probe>) {
        self.registry
            .lock()
            .unwrap()
            .register_collector(Box::new(ProbeCollector(probe)));
    }

    /// Adds the index's group-commit counters (read at every scrape) to `/metrics`.
    pub fn add_index(&self, index: Arc<artifactstore_index::Index>) {
        self.registry
            .lock()
            .unwrap()
            .register_collector(Box::new(IndexCollector(index)));
    }

    /// Counts one answered request. `route` must be a route template, never a raw path.
    pub fn observe(
        &self,
        method: &Method,
        route: &str,
        status: u16,
        elapsed: Duration,
        error: Option<ErrorCode>,
    ) {
        self.requests
            .get_or_create(&vec![
                ("method", method_label(method).to_owned()),
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
        if let Some(code) = error {
            self.errors
                .get_or_create(&vec![("code", code.as_str().to_owned())])
                .inc();
        }
        self.latency
            .get_or_create(&vec![("route", route.to_owned())])
            .observe(elapsed.as_secs_f64());
    }

    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.inc_by(n);
    }

    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.inc_by(n);
    }

    pub fn download_redirected(&self) {
        self.download_redirects.inc();
    }

    /// Counts a finished garbage collection.
    pub fn gc_ran(&self, blobs: u64, bytes: u64, at: artifactstore_model::Timestamp) {
        self.gc_blobs.inc_by(blobs);
        self.gc_bytes.inc_by(bytes);
        self.gc_last_run.set(at.unix_millis() / 1000);
    }

    pub fn versions_expired(&self, n: u64) {
        self.versions_expired.inc_by(n);
    }

    pub fn upload_started(&self) -> UploadGauge<'_> {
        self.uploads_in_flight.inc();
        UploadGauge(self)
    }

    pub fn render(&self) -> String {
        artifactstore_model::metrics::render(&self.registry.lock().unwrap())
    }
}

/// Decrements the in-flight gauge when an upload ends, however it ends.
pub struct UploadGauge<'a>(&'a Metrics);

impl Drop for UploadGauge<'_> {
    fn drop(&mut self) {
        self.0.uploads_in_flight.dec();
    }
}

struct ProbeCollector(Arc<dyn Probe>);

impl std::fmt::Debug for ProbeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProbeCollector({})", self.0.name())
    }
}

impl Collector for ProbeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.0.encode_metrics(&mut encoder)
    }
}

/// How many writes of the upload path shared each commit of the index: writes per
/// commit is the group commit's gain (1 means every upload paid a commit of its own).
#[derive(Debug)]
struct IndexCollector(Arc<artifactstore_index::Index>);

impl Collector for IndexCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        use artifactstore_model::metrics::const_counter;
        let stats = self.0.group_commit_stats();
        const_counter(
            &mut encoder,
            "artifactstore_index_group_commits",
            "Index commits made for groups of upload writes (holds and file rows).",
            &[],
            stats.commits,
        )?;
        const_counter(
            &mut encoder,
            "artifactstore_index_grouped_writes",
            "Upload writes (holds and file rows) those group commits carried.",
            &[],
            stats.writes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_methods_add_no_series() {
        let m = Metrics::new();
        for i in 0..500 {
            let method = Method::from_bytes(format!("JUNK{i}").as_bytes()).unwrap();
            m.observe(&method, "unmatched", 405, Duration::from_millis(1), None);
        }
        let text = m.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("artifactstore_http_requests_total{"))
            .collect();
        assert_eq!(
            series,
            [
                "artifactstore_http_requests_total{method=\"other\",route=\"unmatched\",status=\"405\"} 500"
            ]
        );
        assert!(!text.contains("JUNK"));
    }

    #[test]
    fn renders_the_documented_names() {
        let m = Metrics::new();
        m.observe(
            &Method::GET,
            "/v1/events",
            404,
            Duration::from_millis(3),
            Some(ErrorCode::VersionNotFound),
        );
        m.add_bytes_in(7);
        m.download_redirected();
        let _gauge = m.upload_started();
        let text = m.render();
        for want in [
            "artifactstore_build_info{version=\"",
            "artifactstore_http_errors_total{code=\"version_not_found\"} 1",
            "artifactstore_http_request_duration_seconds_bucket{route=\"/v1/events\",le=\"0.005\"} 1",
            "artifactstore_http_request_duration_seconds_count{route=\"/v1/events\"} 1",
            "artifactstore_bytes_received_total 7",
            "artifactstore_download_redirects_total 1",
            "artifactstore_uploads_in_flight 1",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
