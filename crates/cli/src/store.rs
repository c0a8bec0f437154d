//! Opens the configured blob store (`fs` or `s3`), resolving credentials from secret
//! references. Shared by `serve` and `storage verify`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use artifactstore_blob::s3::{ChecksumMode, S3BlobStore, S3Config};
use artifactstore_blob::{BlobStore, FsBlobStore};
use artifactstore_credentials::sources::{
    AssumeRoleSource, ContainerSource, FileSource, ProcessSource, StaticSource, WebIdentitySource,
};
use artifactstore_credentials::{CredentialSource, RefreshPolicy, RefreshingCache, SdkProvider};
use artifactstore_model::secret::SecretRef;
use aws_sdk_s3::config::SharedCredentialsProvider;

use crate::config::{Backend, Checksum, CredentialsSource, S3Settings, ServeConfig};
use crate::{exit, fail};

/// Which credentials the store uses — kinds and expiry, never values.
#[derive(Clone, Debug, Serialize)]
pub struct CredentialInfo {
    /// `static`, `web-identity`, `assume-role`, `container`, `process` or `file`.
    pub source: &'static str,
    /// For static credentials, the kind of reference each part came from (`env` or
    /// `file`).
    pub refs: Vec<(&'static str, &'static str)>,
    /// For other sources: where they come from (a file, a URL), never a value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the credential expires; `None` for long-lived keys.
    pub expires: Option<String>,
}

impl CredentialInfo {
    pub fn describe(&self) -> String {
        let refs: Vec<String> = self
            .refs
            .iter()
            .map(|(k, v)| format!("{k} from {v}"))
            .collect();
        match &self.detail {
            Some(d) => format!("{} ({d})", self.source),
            None => format!("{} ({})", self.source, refs.join(", ")),
        }
    }

    /// Fills in the expiry of the credential `cache` holds, fetching one if needed.
    pub async fn load_expiry(&mut self, cache: &RefreshingCache) -> anyhow::Result<()> {
        cache
            .get()
            .await
            .map_err(|e| fail(exit::FAILURE, e.to_string()))?;
        self.expires = cache.expires_at().map(|t| {
            let millis = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            artifactstore_server::rfc3339(millis)
        });
        Ok(())
    }
}

/// Readiness and metrics of the S3 backend's credentials.
pub struct CredentialProbe(pub Arc<RefreshingCache>);

impl artifactstore_server::Probe for CredentialProbe {
    fn name(&self) -> &'static str {
        "credentials"
    }

    fn check(&self) -> Result<(), String> {
        if self.0.has_valid() {
            return Ok(());
        }
        Err(format!(
            "no valid credential from source {}: {}",
            self.0.source_name(),
            self.0
                .last_error()
                .map_or_else(|| "none fetched yet".to_owned(), |e| e.message)
        ))
    }

    fn metrics(&self) -> String {
        use std::sync::atomic::Ordering;
        let source = self.0.source_name();
        let stats = &self.0.stats;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP artifactstore_s3_credentials_{name} {help}\n# TYPE artifactstore_s3_credentials_{name} {kind}\nartifactstore_s3_credentials_{name}{{source=\"{source}\"}} {value}\n"
            ));
        };
        if let Some(exp) = self.0.expires_at() {
            let left = match exp.duration_since(std::time::SystemTime::now()) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            };
            metric(
                "expiry_seconds",
                "gauge",
                "Seconds until the held credential expires.",
                format!("{left:.0}"),
            );
        }
        metric(
            "valid",
            "gauge",
            "Whether a usable credential is held.",
            u8::from(self.0.has_valid()).to_string(),
        );
        metric(
            "refreshes_total",
            "counter",
            "Credentials fetched from the source.",
            stats.refreshes.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "refresh_failures_total",
            "counter",
            "Failed fetches from the source.",
            stats.failures.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "forced_refreshes_total",
            "counter",
            "Refreshes forced by the store refusing a credential.",
            stats.forced.load(Ordering::Relaxed).to_string(),
        );
        out
    }
}

pub enum Opened {
    Fs(Arc<FsBlobStore>),
    S3(Arc<S3BlobStore>, Arc<RefreshingCache>),
}

impl Opened {
    pub fn blob_store(&self) -> Arc<dyn BlobStore> {
        match self {
            Opened::Fs(s) => s.clone(),
            Opened::S3(s, _) => s.clone(),
        }
    }
}

fn resolve(
    name: &'static str,
    reference: Option<&str>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<(artifactstore_model::secret::Secret, &'static str)>> {
    let Some(r) = reference else { return Ok(None) };
    let r = SecretRef::parse(r).map_err(|e| fail(exit::USAGE, format!("s3.{name}_ref: {e}")))?;
    let secret = r
        .resolve(warnings)
        .map_err(|e| fail(exit::USAGE, format!("s3.{name}_ref: {e}")))?;
    Ok(Some((secret, r.kind())))
}

/// The configured credential source, as a source and what `storage verify` says of it.
fn credential_source(
    s: &S3Settings,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Arc<dyn CredentialSource>, CredentialInfo)> {
    let usage = |m: String| fail(exit::USAGE, m);
    let kind = match s.credentials_source {
        CredentialsSource::Auto => {
            if s.web_identity_token_file.is_some() {
                CredentialsSource::WebIdentity
            } else if s.container_credentials_url.is_some() {
                CredentialsSource::Container
            } else if s.credential_process.is_some() {
                CredentialsSource::Process
            } else if s.credentials_file.is_some() {
                CredentialsSource::File
            } else if s.role_arn.is_some() && s.access_key_id_ref.is_some() {
                CredentialsSource::AssumeRole
            } else {
                CredentialsSource::Static
            }
        }
        other => other,
    };
    let info = |source: &'static str, detail: String| CredentialInfo {
        source,
        refs: Vec::new(),
        detail: Some(detail),
        expires: None,
    };
    let sts_endpoint = || {
        s.sts_endpoint_url
            .clone()
            .or_else(|| s.endpoint_url.clone())
            .ok_or_else(|| usage("s3.sts_endpoint_url (ARTIFACTSTORE_S3_STS_ENDPOINT_URL) is needed to reach an STS".into()))
    };
    let http = || {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(s.connect_timeout_secs))
            .build()
            .map_err(|e| fail(exit::FAILURE, format!("HTTP client: {e}")))
    };
    Ok(match kind {
        CredentialsSource::Auto | CredentialsSource::Static => {
            let (source, refs) = static_source(s, warnings)?;
            (
                Arc::new(source),
                CredentialInfo {
                    source: "static",
                    refs,
                    detail: None,
                    expires: None,
                },
            )
        }
        CredentialsSource::WebIdentity => {
            let token_file = s.web_identity_token_file.clone().ok_or_else(|| {
                usage("s3.web_identity_token_file (ARTIFACTSTORE_S3_WEB_IDENTITY_TOKEN_FILE) is required for web-identity".into())
            })?;
            let endpoint = sts_endpoint()?;
            let detail = format!("token file {}, STS {endpoint}", token_file.display());
            (
                Arc::new(WebIdentitySource {
                    token_file,
                    sts_endpoint: endpoint,
                    role_arn: s.role_arn.clone(),
                    session_name: s.role_session_name.clone(),
                    duration_secs: s.credentials_duration_secs,
                    http: http()?,
                }),
                info("web-identity", detail),
            )
        }
        CredentialsSource::AssumeRole => {
            let role_arn = s.role_arn.clone().ok_or_else(|| {
                usage("s3.role_arn (ARTIFACTSTORE_S3_ROLE_ARN) is required for assume-role".into())
            })?;
            let (base, _) = static_source(s, warnings)?;
            let endpoint = sts_endpoint()?;
            let detail = format!("role {role_arn}, STS {endpoint}");
            (
                Arc::new(AssumeRoleSource::new(
                    &endpoint,
                    &s.region,
                    &base,
                    role_arn,
                    s.role_session_name.clone(),
                    s.session_policy.clone(),
                    s.credentials_duration_secs,
                )),
                info("assume-role", detail),
            )
        }
        CredentialsSource::Container => {
            let url = s.container_credentials_url.clone().ok_or_else(|| {
                usage("s3.container_credentials_url (ARTIFACTSTORE_S3_CONTAINER_CREDENTIALS_URL) is required for container".into())
            })?;
            let detail = format!("endpoint {url}");
            (
                Arc::new(ContainerSource {
                    url,
                    token_file: s.container_authorization_token_file.clone(),
                    http: http()?,
                }),
                info("container", detail),
            )
        }
        CredentialsSource::Process => {
            let command = s.credential_process.clone().ok_or_else(|| {
                usage("s3.credential_process (ARTIFACTSTORE_S3_CREDENTIAL_PROCESS) is required for process".into())
            })?;
            (
                Arc::new(ProcessSource {
                    command,
                    timeout: Duration::from_secs(s.credential_process_timeout_secs.max(1)),
                }),
                info("process", "credential_process command".into()),
            )
        }
        CredentialsSource::File => {
            let path = s.credentials_file.clone().ok_or_else(|| {
                usage(
                    "s3.credentials_file (ARTIFACTSTORE_S3_CREDENTIALS_FILE) is required for file"
                        .into(),
                )
            })?;
            let detail = format!("file {}", path.display());
            (Arc::new(FileSource::new(path)), info("file", detail))
        }
    })
}

fn static_source(
    s: &S3Settings,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(StaticSource, Vec<(&'static str, &'static str)>)> {
    let missing = |k: &str| {
        fail(
            exit::USAGE,
            format!(
                "the s3 backend needs credentials: s3.{k}_ref (ARTIFACTSTORE_S3_{}_REF) = env:NAME or file:/path, \
                 or another s3.credentials_source (docs/CONFIG.md)",
                k.to_uppercase()
            ),
        )
    };
    let (ak, ak_kind) = resolve("access_key_id", s.access_key_id_ref.as_deref(), warnings)?
        .ok_or_else(|| missing("access_key_id"))?;
    let (sk, sk_kind) = resolve(
        "secret_access_key",
        s.secret_access_key_ref.as_deref(),
        warnings,
    )?
    .ok_or_else(|| missing("secret_access_key"))?;
    let token = resolve("session_token", s.session_token_ref.as_deref(), warnings)?;
    let mut refs = vec![("access_key_id", ak_kind), ("secret_access_key", sk_kind)];
    if let Some((_, kind)) = &token {
        refs.push(("session_token", kind));
    }
    Ok((
        StaticSource {
            access_key_id: ak,
            secret_access_key: sk,
            session_token: token.map(|(t, _)| t),
        },
        refs,
    ))
}

/// The S3 store, what its credentials are, and the cache that holds them.
pub fn s3_store(
    s: &S3Settings,
) -> anyhow::Result<(S3BlobStore, CredentialInfo, Arc<RefreshingCache>)> {
    let bucket = s.bucket.clone().ok_or_else(|| {
        fail(
            exit::USAGE,
            "the s3 backend needs s3.bucket (ARTIFACTSTORE_S3_BUCKET)",
        )
    })?;
    let mut warnings = Vec::new();
    let (source, info) = credential_source(s, &mut warnings)?;
    for w in &warnings {
        tracing::warn!("{w}");
        eprintln!("warning: {w}");
    }
    let cache = Arc::new(RefreshingCache::new(
        source,
        RefreshPolicy {
            window: s.credentials_refresh_window_secs.map(Duration::from_secs),
            ..RefreshPolicy::default()
        },
    ));
    let cfg = S3Config {
        endpoint_url: s.endpoint_url.clone(),
        region: s.region.clone(),
        bucket,
        prefix: s.prefix.clone(),
        path_style: !s.virtual_host_style,
        ca_bundle: s.ca_bundle.clone(),
        connect_timeout: Duration::from_secs(s.connect_timeout_secs),
        read_timeout: Duration::from_secs(s.read_timeout_secs),
        checksum: match s.checksum {
            Checksum::WhenRequired => ChecksumMode::WhenRequired,
            Checksum::WhenSupported => ChecksumMode::WhenSupported,
        },
        part_size: usize::try_from(s.part_size).context("s3.part_size")?,
        concurrency: s.concurrency,
        max_attempts: s.max_attempts,
    };
    let rejecting = cache.clone();
    let store = S3BlobStore::with_provider(
        cfg,
        SharedCredentialsProvider::new(SdkProvider(cache.clone())),
        Arc::new(move |key_id: &str| rejecting.reject(key_id)),
    )
    .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    Ok((store, info, cache))
}

/// Opens the configured store for serving: for `s3`, checks the bucket, probes the
/// store once and sweeps stale uploads; for `fs`, removes leftover temp files.
pub async fn open_for_serving(cfg: &ServeConfig) -> anyhow::Result<Opened> {
    match cfg.backend {
        Backend::Fs => {
            let blobs = FsBlobStore::open(&cfg.data_dir).context("open blob store")?;
            blobs.recover().context("clean leftover temp files")?;
            Ok(Opened::Fs(Arc::new(blobs)))
        }
        Backend::S3 => {
            // S3 allows at most 10,000 parts per upload.
            if cfg.s3.part_size.saturating_mul(10_000) < cfg.max_upload_size {
                return Err(fail(
                    exit::USAGE,
                    format!(
                        "s3.part_size {} allows uploads of at most {} bytes (10,000 parts), below max_upload_size {}; \
                         raise s3.part_size or lower max_upload_size",
                        cfg.s3.part_size,
                        cfg.s3.part_size * 10_000,
                        cfg.max_upload_size
                    ),
                ));
            }
            let (store, mut info, cache) = s3_store(&cfg.s3)?;
            info.load_expiry(&cache)
                .await
                .context("S3 backend: no credentials")?;
            store.head_bucket().await.context("S3 backend not usable")?;
            store.probe().await.context("S3 backend not usable")?;
            store
                .sweep_stale(Duration::from_secs(cfg.s3.stale_upload_age_secs))
                .await
                .context("sweep stale uploads")?;
            tracing::info!(
                endpoint = store.endpoint(),
                bucket = store.bucket(),
                credentials = %info.describe(),
                "S3 backend ready"
            );
            Ok(Opened::S3(Arc::new(store), cache))
        }
    }
}
