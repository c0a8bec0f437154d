//! Prometheus text-format metrics, kept by hand: a few counters and one histogram do not
//! justify a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    uploads_in_flight: AtomicU64,
}

impl Metrics {
    pub fn observe(
        &self,
        method: &str,
        route: &str,
        status: u16,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        *self
            .requests
            .lock()
            .unwrap()
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        if let Some(code) = error {
            *self.errors.lock().unwrap().entry(code).or_default() += 1;
        }
        let secs = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().unwrap();
        let h = latency.entry(route.to_owned()).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    pub fn upload_started(&self) -> UploadGauge<'_> {
        self.uploads_in_flight.fetch_add(1, Ordering::Relaxed);
        UploadGauge(self)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP artifactstore_build_info Build information.");
        let _ = writeln!(out, "# TYPE artifactstore_build_info gauge");
        let _ = writeln!(
            out,
            "artifactstore_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        let _ = writeln!(
            out,
            "# HELP artifactstore_http_requests_total HTTP requests answered."
        );
        let _ = writeln!(out, "# TYPE artifactstore_http_requests_total counter");
        for ((method, route, status), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "artifactstore_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP artifactstore_http_errors_total Error answers by error code."
        );
        let _ = writeln!(out, "# TYPE artifactstore_http_errors_total counter");
        for (code, n) in self.errors.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "artifactstore_http_errors_total{{code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP artifactstore_http_request_duration_seconds Time to answer a request (headers; streaming bodies continue)."
        );
        let _ = writeln!(
            out,
            "# TYPE artifactstore_http_request_duration_seconds histogram"
        );
        for (route, h) in self.latency.lock().unwrap().iter() {
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "artifactstore_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "artifactstore_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "artifactstore_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "artifactstore_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP artifactstore_bytes_received_total Artifact bytes received in uploads."
        );
        let _ = writeln!(out, "# TYPE artifactstore_bytes_received_total counter");
        let _ = writeln!(
            out,
            "artifactstore_bytes_received_total {}",
            self.bytes_in.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP artifactstore_bytes_sent_total Artifact bytes sent in downloads."
        );
        let _ = writeln!(out, "# TYPE artifactstore_bytes_sent_total counter");
        let _ = writeln!(
            out,
            "artifactstore_bytes_sent_total {}",
            self.bytes_out.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP artifactstore_uploads_in_flight Uploads being received now."
        );
        let _ = writeln!(out, "# TYPE artifactstore_uploads_in_flight gauge");
        let _ = writeln!(
            out,
            "artifactstore_uploads_in_flight {}",
            self.uploads_in_flight.load(Ordering::Relaxed)
        );
        out
    }
}

/// Decrements the in-flight gauge when an upload ends, however it ends.
pub struct UploadGauge<'a>(&'a Metrics);

impl Drop for UploadGauge<'_> {
    fn drop(&mut self) {
        self.0.uploads_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
