//! Opens the configured blob store (`fs` or `s3`), resolving credentials from secret
//! references. Shared by `serve` and `storage verify`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use artifactstore_blob::s3::{ChecksumMode, S3BlobStore, S3Config, S3Credentials};
use artifactstore_blob::{BlobStore, FsBlobStore};
use artifactstore_model::secret::SecretRef;

use crate::config::{Backend, Checksum, S3Settings, ServeConfig};
use crate::{exit, fail};

/// Which credentials the store uses — kinds and expiry, never values.
#[derive(Clone, Debug, Serialize)]
pub struct CredentialInfo {
    /// `static` for credentials read from secret references.
    pub source: &'static str,
    /// For each credential part, the kind of reference it came from (`env` or `file`).
    pub refs: Vec<(&'static str, &'static str)>,
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
        format!("{} ({})", self.source, refs.join(", "))
    }
}

pub enum Opened {
    Fs(Arc<FsBlobStore>),
    S3(Arc<S3BlobStore>),
}

impl Opened {
    pub fn blob_store(&self) -> Arc<dyn BlobStore> {
        match self {
            Opened::Fs(s) => s.clone(),
            Opened::S3(s) => s.clone(),
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

pub fn s3_store(s: &S3Settings) -> anyhow::Result<(S3BlobStore, CredentialInfo)> {
    let bucket = s.bucket.clone().ok_or_else(|| {
        fail(
            exit::USAGE,
            "the s3 backend needs s3.bucket (ARTIFACTSTORE_S3_BUCKET)",
        )
    })?;
    let mut warnings = Vec::new();
    let missing = |k: &str| {
        fail(
            exit::USAGE,
            format!(
                "the s3 backend needs s3.{k}_ref (ARTIFACTSTORE_S3_{}_REF) = env:NAME or file:/path",
                k.to_uppercase()
            ),
        )
    };
    let (ak, ak_kind) = resolve(
        "access_key_id",
        s.access_key_id_ref.as_deref(),
        &mut warnings,
    )?
    .ok_or_else(|| missing("access_key_id"))?;
    let (sk, sk_kind) = resolve(
        "secret_access_key",
        s.secret_access_key_ref.as_deref(),
        &mut warnings,
    )?
    .ok_or_else(|| missing("secret_access_key"))?;
    let token = resolve(
        "session_token",
        s.session_token_ref.as_deref(),
        &mut warnings,
    )?;
    for w in &warnings {
        tracing::warn!("{w}");
        eprintln!("warning: {w}");
    }
    let mut refs = vec![("access_key_id", ak_kind), ("secret_access_key", sk_kind)];
    if let Some((_, kind)) = &token {
        refs.push(("session_token", kind));
    }
    let info = CredentialInfo {
        source: "static",
        refs,
        expires: None,
    };
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
    let store = S3BlobStore::new(
        cfg,
        S3Credentials {
            access_key_id: ak.expose().to_owned(),
            secret_access_key: sk,
            session_token: token.map(|(t, _)| t),
        },
    )
    .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    Ok((store, info))
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
            let (store, info) = s3_store(&cfg.s3)?;
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
            Ok(Opened::S3(Arc::new(store)))
        }
    }
}
