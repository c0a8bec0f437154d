//! Opens the configured blob store (`fs` or `s3`), resolving credentials from secret
//! references. Shared by `serve` and `storage verify`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use artifactstore_blob::s3::{ChecksumMode, S3BlobStore, S3Config};
use artifactstore_blob::{BlobStore, FsBlobStore};
use artifactstore_credentials::sources::{
    self, AssumeRoleSource, ContainerSource, FileSource, ProcessSource, StaticSource,
    WebIdentitySource,
};
use artifactstore_credentials::{CredentialSource, RefreshPolicy, RefreshingCache};
use artifactstore_model::Timestamp;
use artifactstore_model::secret::{Secret, SecretRef};

use crate::config::{
    Backend, Checksum, CredentialSourceConfig, S3Settings, ServeConfig, StaticKeys,
};
use crate::exit::{self, fail};

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
        self.expires = cache
            .expires_at()
            .map(|t| Timestamp::from_system_time(t).rfc3339());
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

    fn encode_metrics(
        &self,
        e: &mut artifactstore_model::metrics::prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use artifactstore_model::metrics::{const_counter, const_gauge};
        use std::sync::atomic::Ordering;
        let labels = [("source", self.0.source_name())];
        let stats = &self.0.stats;
        if let Some(exp) = self.0.expires_at() {
            let left = match exp.duration_since(std::time::SystemTime::now()) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            };
            const_gauge(
                e,
                "artifactstore_s3_credentials_expiry_seconds",
                "Seconds until the held credential expires",
                &labels,
                left.round(),
            )?;
        }
        const_gauge(
            e,
            "artifactstore_s3_credentials_valid",
            "Whether a usable credential is held",
            &labels,
            f64::from(u8::from(self.0.has_valid())),
        )?;
        for (name, help, value) in [
            (
                "artifactstore_s3_credentials_refreshes",
                "Credentials fetched from the source",
                &stats.refreshes,
            ),
            (
                "artifactstore_s3_credentials_refresh_failures",
                "Failed fetches from the source",
                &stats.failures,
            ),
            (
                "artifactstore_s3_credentials_forced_refreshes",
                "Refreshes forced by the store refusing a credential",
                &stats.forced,
            ),
        ] {
            const_counter(e, name, help, &labels, value.load(Ordering::Relaxed))?;
        }
        Ok(())
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

/// Reads the secret `reference` names (the setting `s3.<key>`).
fn resolve(
    key: &'static str,
    reference: &SecretRef,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Secret, &'static str)> {
    let secret = reference
        .resolve(warnings)
        .map_err(|e| fail(exit::USAGE, format!("s3.{key}: {e}")))?;
    Ok((secret, reference.kind()))
}

/// The configured credential source, as a source and what `storage verify` says of it.
fn credential_source(
    s: &S3Settings,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Arc<dyn CredentialSource>, CredentialInfo)> {
    let (chosen, ignored) = s.credential_source().map_err(|m| fail(exit::USAGE, m))?;
    for key in ignored {
        warnings.push(format!(
            "s3.{key} is ignored: the credentials source is {}",
            chosen.name()
        ));
    }
    let info = |detail: String| CredentialInfo {
        source: chosen.name(),
        refs: Vec::new(),
        detail: Some(detail),
        expires: None,
    };
    let http = || {
        sources::http_client(Duration::from_secs(s.connect_timeout_secs))
            .map_err(|e| fail(exit::FAILURE, e.to_string()))
    };
    Ok(match &chosen {
        CredentialSourceConfig::Static(keys) => {
            let (source, refs) = static_source(keys, warnings)?;
            (
                Arc::new(source),
                CredentialInfo {
                    source: chosen.name(),
                    refs,
                    detail: None,
                    expires: None,
                },
            )
        }
        CredentialSourceConfig::WebIdentity {
            token_file,
            role_arn,
            session_name,
            sts_endpoint,
            duration_secs,
        } => (
            Arc::new(WebIdentitySource {
                token_file: token_file.clone(),
                sts_endpoint: sts_endpoint.clone(),
                role_arn: role_arn.clone(),
                session_name: session_name.clone(),
                duration_secs: *duration_secs,
                http: http()?,
            }),
            info(format!(
                "token file {}, STS {sts_endpoint}",
                token_file.display()
            )),
        ),
        CredentialSourceConfig::AssumeRole {
            base,
            role_arn,
            session_name,
            sts_endpoint,
            duration_secs,
            session_policy,
        } => {
            let (base, _) = static_source(base, warnings)?;
            (
                Arc::new(AssumeRoleSource::new(
                    sts_endpoint,
                    &s.region,
                    &base,
                    role_arn.clone(),
                    session_name.clone(),
                    session_policy.clone(),
                    *duration_secs,
                )),
                info(format!("role {role_arn}, STS {sts_endpoint}")),
            )
        }
        CredentialSourceConfig::Container {
            url,
            authorization_token_file,
        } => (
            Arc::new(ContainerSource {
                url: url.clone(),
                token_file: authorization_token_file.clone(),
                http: http()?,
            }),
            info(format!("endpoint {url}")),
        ),
        CredentialSourceConfig::Process { command, timeout } => (
            Arc::new(ProcessSource {
                command: command.clone(),
                timeout: *timeout,
            }),
            info("credential_process command".into()),
        ),
        CredentialSourceConfig::File { path } => (
            Arc::new(FileSource::new(path.clone())),
            info(format!("file {}", path.display())),
        ),
    })
}

/// Resolves static keys, and says which kind of reference each came from.
fn static_source(
    keys: &StaticKeys,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(StaticSource, Vec<(&'static str, &'static str)>)> {
    let (ak, ak_kind) = resolve("access_key_id_ref", &keys.access_key_id, warnings)?;
    let (sk, sk_kind) = resolve("secret_access_key_ref", &keys.secret_access_key, warnings)?;
    let token = keys
        .session_token
        .as_ref()
        .map(|t| resolve("session_token_ref", t, warnings))
        .transpose()?;
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

/// The S3 store, what its credentials are, and the cache that holds them — the one
/// credential handle, shared by the store (which signs from it and tells it of refused
/// keys) and by `/readyz` and `/metrics`.
pub fn s3_store(
    s: &S3Settings,
) -> anyhow::Result<(S3BlobStore, CredentialInfo, Arc<RefreshingCache>)> {
    let cfg = s3_config(s)?;
    let (cache, info) = s3_credentials(s)?;
    let store =
        S3BlobStore::new(cfg, cache.clone()).map_err(|e| fail(exit::USAGE, e.to_string()))?;
    Ok((store, info, cache))
}

/// The configured credential source behind its refreshing cache.
pub fn s3_credentials(s: &S3Settings) -> anyhow::Result<(Arc<RefreshingCache>, CredentialInfo)> {
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
    Ok((cache, info))
}

/// Where and how to reach the bucket, from `[s3]`.
pub fn s3_config(s: &S3Settings) -> anyhow::Result<S3Config> {
    let bucket = s.bucket.clone().ok_or_else(|| {
        fail(
            exit::USAGE,
            "the s3 backend needs s3.bucket (ARTIFACTSTORE_S3_BUCKET)",
        )
    })?;
    Ok(S3Config {
        endpoint_url: s.endpoint_url.clone(),
        region: s.region.clone(),
        bucket,
        prefix: s.prefix.clone(),
        path_style: !s.virtual_host_style,
        ca_bundle: s.ca_bundle.clone(),
        connect_timeout: Duration::from_secs(s.connect_timeout_secs),
        read_timeout: Duration::from_secs(s.read_timeout_secs),
        operation_timeout: Duration::from_secs(s.operation_timeout_secs),
        checksum: match s.checksum {
            Checksum::WhenRequired => ChecksumMode::WhenRequired,
            Checksum::WhenSupported => ChecksumMode::WhenSupported,
        },
        part_size: usize::try_from(s.part_size).context("s3.part_size")?,
        concurrency: s.concurrency,
        max_attempts: s.max_attempts,
    })
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
