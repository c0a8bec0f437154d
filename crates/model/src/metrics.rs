//! The one Prometheus renderer of the workspace: every `/metrics` (the artifact
//! server, its probes, the vend service) is a `prometheus_client` registry encoded here,
//! so escaping and the text format are the library's, not hand-written per module.
//!
//! Label values must come from bounded sets (route templates, enums, configured
//! names); never put raw client input in a label.

pub use prometheus_client;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// `Content-Type` of what [`render`] returns (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry as Prometheus text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// Writes a gauge whose value is read at scrape time (for collectors).
pub fn const_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    value: f64,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric.encode_family(&labels)?)
}

/// Writes a counter whose value is read at scrape time (for collectors). `name` is
/// given without `_total`; the encoder adds it.
pub fn const_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    value: u64,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric.encode_family(&labels)?)
}
