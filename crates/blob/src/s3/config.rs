//! Where and how to reach the bucket, and the SDK client built from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use artifactstore_credentials::RefreshingCache;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedHttpClient, StalledStreamProtectionConfig,
};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use super::credential_retry;
use crate::{Error, Result};

/// S3 refuses parts smaller than this (except the last).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// When the SDK adds checksum headers and validates checksums of responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    /// Only where the S3 API requires one. Works with older MinIO and most stores.
    #[default]
    WhenRequired,
    /// Whenever the operation supports one (the SDK's own default); some stores reject it.
    WhenSupported,
}

/// Where and how to reach the bucket. Credentials are passed separately.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:9000`; `None` means AWS.
    pub endpoint_url: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Key prefix for everything this store writes, e.g. `artifacts/` (may be empty).
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`); virtual-host style otherwise.
    pub path_style: bool,
    /// PEM bundle of extra CA certificates to trust, for a private endpoint.
    pub ca_bundle: Option<PathBuf>,
    /// Longest wait for a TCP (and TLS) connection to the store.
    pub connect_timeout: Duration,
    /// Longest one attempt may take from sending the request (its body included) to the
    /// answer's head; also the longest wait for the next chunk of a download.
    pub read_timeout: Duration,
    /// Longest one S3 call may take, all its attempts and the pauses between them
    /// included, so that a store that hangs is given up on in bounded time whatever
    /// `max_attempts` is. A download's body is not covered (`read_timeout` bounds it).
    pub operation_timeout: Duration,
    pub checksum: ChecksumMode,
    pub part_size: usize,
    /// Parts uploaded at once; memory per upload ≈ part_size × (concurrency + 1).
    pub concurrency: usize,
    /// Attempts per request (first try included) for throttling, 5xx and network errors.
    pub max_attempts: u32,
}

impl S3Config {
    /// For messages: the endpoint URL, or `AWS S3 (<region>)`.
    pub fn endpoint_name(&self) -> String {
        self.endpoint_url
            .clone()
            .unwrap_or_else(|| format!("AWS S3 ({})", self.region))
    }

    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            endpoint_url: None,
            region: "us-east-1".into(),
            bucket: bucket.into(),
            prefix: String::new(),
            path_style: true,
            ca_bundle: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            operation_timeout: Duration::from_secs(120),
            checksum: ChecksumMode::WhenRequired,
            part_size: 8 << 20,
            concurrency: 4,
            max_attempts: 5,
        }
    }
}

/// Checks `cfg` and builds the client, signing every request from `credentials`.
pub(super) fn build_client(cfg: &S3Config, credentials: Arc<RefreshingCache>) -> Result<Client> {
    let builder = credential_retry::install(sdk_config(cfg)?, credentials);
    Ok(Client::from_conf(builder.build()))
}

/// Checks `cfg` and makes the SDK configuration it describes, without credentials.
pub(super) fn sdk_config(cfg: &S3Config) -> Result<aws_sdk_s3::config::Builder> {
    if cfg.part_size < MIN_PART_SIZE {
        return Err(Error::Config(format!(
            "part size {} is below the S3 minimum of {MIN_PART_SIZE} bytes",
            cfg.part_size
        )));
    }
    if cfg.bucket.is_empty() {
        return Err(Error::Config("the bucket name is empty".into()));
    }
    let (request, response) = match cfg.checksum {
        ChecksumMode::WhenRequired => (
            RequestChecksumCalculation::WhenRequired,
            ResponseChecksumValidation::WhenRequired,
        ),
        ChecksumMode::WhenSupported => (
            RequestChecksumCalculation::WhenSupported,
            ResponseChecksumValidation::WhenSupported,
        ),
    };
    let mut builder = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()))
        .force_path_style(cfg.path_style)
        .request_checksum_calculation(request)
        .response_checksum_validation(response)
        .retry_config(RetryConfig::standard().with_max_attempts(cfg.max_attempts.max(1)))
        // Downloads are paced by our client's reader, so the SDK's throughput check
        // would misfire; `body_stream` bounds a store that stops sending instead.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(cfg.connect_timeout)
                .read_timeout(cfg.read_timeout)
                .operation_timeout(cfg.operation_timeout)
                .build(),
        );
    if let Some(endpoint) = &cfg.endpoint_url {
        builder = builder.endpoint_url(endpoint);
    }
    if let Some(ca) = &cfg.ca_bundle {
        builder = builder.http_client(http_client_with_ca(ca)?);
    }
    Ok(builder)
}

/// `prefix` without a leading `/` and, unless empty, with a trailing one.
pub(super) fn normalized_prefix(prefix: &str) -> String {
    let mut prefix = prefix.trim_start_matches('/').to_owned();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

/// The SDK's HTTPS client, trusting the CAs of a PEM bundle besides the system's.
fn http_client_with_ca(path: &Path) -> Result<SharedHttpClient> {
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(RUSTLS)
        .tls_context(tls_context(Some(path))?)
        .build_https())
}

/// The TLS provider of every client the backend builds.
pub(super) const RUSTLS: aws_smithy_http_client::tls::Provider =
    aws_smithy_http_client::tls::Provider::Rustls(
        aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
    );

/// Trust for the SDK's clients: the system's CAs, and those of `ca` if given.
pub(super) fn tls_context(ca: Option<&Path>) -> Result<aws_smithy_http_client::tls::TlsContext> {
    use aws_smithy_http_client::tls::{TlsContext, TrustStore};
    let mut trust = TrustStore::default();
    if let Some(path) = ca {
        let pem = std::fs::read(path).map_err(|source| Error::Io {
            op: "read CA bundle",
            path: path.to_owned(),
            source,
        })?;
        trust = trust.with_pem_certificate(pem);
    }
    TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| {
            let path = ca.map(|p| p.display().to_string()).unwrap_or_default();
            Error::Config(format!("CA bundle {path}: {e}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::credential_retry::tests::static_cache;

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(normalized_prefix(""), "");
        assert_eq!(normalized_prefix("a"), "a/");
        assert_eq!(normalized_prefix("/a/b/"), "a/b/");
    }

    #[test]
    fn a_small_part_size_or_an_empty_bucket_is_refused() {
        let mut cfg = S3Config::new("b");
        cfg.part_size = MIN_PART_SIZE - 1;
        let e = build_client(&cfg, static_cache("AK", "SK")).unwrap_err();
        assert!(e.to_string().contains("below the S3 minimum"), "{e}");
        let e = build_client(&S3Config::new(""), static_cache("AK", "SK")).unwrap_err();
        assert!(e.to_string().contains("bucket name is empty"), "{e}");
        build_client(&S3Config::new("b"), static_cache("AK", "SK")).expect("valid config");
    }

    #[test]
    fn a_missing_ca_bundle_names_its_path() {
        let mut cfg = S3Config::new("b");
        cfg.ca_bundle = Some("/nonexistent/ca.pem".into());
        let e = build_client(&cfg, static_cache("AK", "SK")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
