//! Credential vending: a workload's OIDC token in, short-lived storage credentials
//! scoped by its role out — with leases, revocation and a hash-chained audit log that
//! fails closed.
//!
//! Token checks and the JWKS cache are `artifactstore_oidc`'s, shared with the artifact
//! server. Layers, each in its own module: [`roles`] and [`policy`] (what a token may
//! get), [`driver`] (minting upstream), [`audit`], [`leases`] (the lease store: vend's
//! own database and migrations), [`service`] (the one decision path) and [`http`]
//! (wire formats).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use artifactstore_model::secret::{Secret, SecretRef};
use artifactstore_model::{Clock, SystemClock};

pub mod audit;
pub mod config;
#[cfg(feature = "test-crash-points")]
pub mod crash_points;
pub mod driver;
pub mod http;
pub mod leases;
pub mod metrics;
pub mod policy;
pub mod reason;
pub mod roles;
pub mod service;

pub use config::VendConfig;
pub use reason::{Denial, Reason};
pub use service::Service;

use driver::MintDriver;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{what}: {source}")]
    Secret {
        what: String,
        source: artifactstore_model::secret::SecretError,
    },
    #[error("lease store {url}: {source}")]
    LeaseStore {
        url: String,
        source: leases::StoreError,
    },
    #[error("{0}")]
    Audit(#[from] audit::AuditError),
    #[error("{0}")]
    Invalid(String),
}

/// A database URL fit for an error message: `user:password@` becomes `user:***@`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
#[test]
fn database_passwords_stay_out_of_errors() {
    assert_eq!(
        without_password("postgres://vend:s3cret@db:5432/leases"),
        "postgres://vend:***@db:5432/leases"
    );
    assert_eq!(
        without_password("sqlite://x.db?mode=rwc"),
        "sqlite://x.db?mode=rwc"
    );
}

fn resolve(r: &SecretRef, what: &str, warnings: &mut Vec<String>) -> Result<Secret, StartError> {
    r.resolve(warnings).map_err(|source| StartError::Secret {
        what: what.to_owned(),
        source,
    })
}

/// Builds the service from its configuration: resolves secret references, opens the
/// lease store and the audit log. Warnings (e.g. group-readable secret files) are
/// returned for the caller to print.
pub async fn build(config: VendConfig) -> Result<(Arc<Service>, Vec<String>), StartError> {
    build_with_clock(config, Arc::new(SystemClock)).await
}

/// [`build`], with the clock that times leases, token checks and audit lines.
pub async fn build_with_clock(
    config: VendConfig,
    clock: Arc<dyn Clock>,
) -> Result<(Arc<Service>, Vec<String>), StartError> {
    let mut warnings = Vec::new();
    let http = artifactstore_credentials::sources::http_client_builder(Duration::from_secs(5))
        .build()
        .map_err(|e| StartError::Invalid(format!("HTTP client: {e}")))?;
    let mut drivers: BTreeMap<String, Arc<dyn MintDriver>> = BTreeMap::new();
    for (name, d) in &config.drivers {
        let driver: Arc<dyn MintDriver> = match d {
            config::DriverConfig::Garage {
                admin_url,
                admin_token_ref,
            } => Arc::new(driver::garage::GarageDriver::new(
                admin_url,
                resolve(
                    admin_token_ref,
                    &format!("drivers.{name}.admin_token_ref"),
                    &mut warnings,
                )?,
                http.clone(),
            )),
            config::DriverConfig::Sts {
                endpoint_url,
                region,
                role_arn,
                access_key_id_ref,
                secret_access_key_ref,
                session_token_ref,
                revoke_sessions,
                iam_endpoint_url,
                iam_region,
            } => Arc::new(
                driver::sts::StsDriver::new(
                    endpoint_url,
                    region,
                    role_arn,
                    driver::sts::StsCredentials {
                        access_key_id: resolve(
                            access_key_id_ref,
                            &format!("drivers.{name}.access_key_id_ref"),
                            &mut warnings,
                        )?,
                        secret_access_key: resolve(
                            secret_access_key_ref,
                            &format!("drivers.{name}.secret_access_key_ref"),
                            &mut warnings,
                        )?,
                        session_token: session_token_ref
                            .as_ref()
                            .map(|r| {
                                resolve(
                                    r,
                                    &format!("drivers.{name}.session_token_ref"),
                                    &mut warnings,
                                )
                            })
                            .transpose()?,
                    },
                )
                .with_session_revocation(
                    *revoke_sessions,
                    iam_endpoint_url.as_deref(),
                    iam_region.as_deref(),
                    http.clone(),
                )
                .map_err(|e| StartError::Invalid(format!("drivers.{name}: {e}")))?,
            ),
        };
        drivers.insert(name.clone(), driver);
    }
    let mut roles = Vec::new();
    for role in config.roles {
        let driver = drivers[&role.driver].clone();
        roles.push(service::Role::new(role, driver).map_err(StartError::Invalid)?);
    }
    let hmac_key = match &config.audit.hmac_key_ref {
        Some(r) => resolve(r, "audit.hmac_key_ref", &mut warnings)?
            .expose()
            .as_bytes()
            .to_vec(),
        None => {
            warnings.push(
                "audit.hmac_key_ref is not set: access key ids in the audit log are hashed with a key drawn at start-up, so hashes correlate only within this run".into(),
            );
            let mut k = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut k).expect("system randomness");
            k
        }
    };
    let chain_key = match &config.audit.chain_key_ref {
        Some(r) => audit::ChainKey::from_ref(r, &mut warnings),
        None => audit::ChainKey::load_or_generate(
            &audit::default_key_path(&config.audit.path),
            &mut warnings,
        ),
    }
    .map_err(audit::AuditError::from)?;
    let audit = audit::AuditLog::open_keyed(&config.audit.path, chain_key, clock.clone())?;
    let index = leases::LeaseStore::open(&config.database_url)
        .await
        .map_err(|source| StartError::LeaseStore {
            url: without_password(&config.database_url),
            source,
        })?;
    let admin_token = config
        .admin
        .token_ref
        .as_ref()
        .map(|r| resolve(r, "admin.token_ref", &mut warnings))
        .transpose()?;
    let break_glass = config
        .break_glass
        .as_ref()
        .map(|bg| {
            let phc = resolve(
                &bg.credential_hash_ref,
                "break_glass.credential_hash_ref",
                &mut warnings,
            )?;
            let hash = service::break_glass::CredentialHash::parse(&phc).map_err(|e| {
                StartError::Invalid(format!("break_glass.credential_hash_ref: {e}"))
            })?;
            warnings.push(format!(
                "break-glass is on for role(s) {}: every use is audited as critical",
                bg.roles.join(", ")
            ));
            let webhook_url = bg
                .webhook_url_ref
                .as_ref()
                .map(|r| resolve(r, "break_glass.webhook_url_ref", &mut warnings))
                .transpose()?;
            service::break_glass::BreakGlass::new(bg, hash, webhook_url.as_ref())
                .map_err(StartError::Invalid)
        })
        .transpose()?;
    let oidc_http = artifactstore_oidc::verify::http_client()
        .map_err(|e| StartError::Invalid(format!("HTTP client: {e}")))?;
    for issuer in config.issuers.iter().filter(|i| i.allow_insecure_http) {
        warnings.push(format!(
            "issuer {}: allow_insecure_http is on: its keys may be fetched over plain HTTP, where anyone on the path can replace them",
            issuer.issuer
        ));
    }
    let verifier = artifactstore_oidc::TokenVerifier::new(
        &config.issuers,
        config.token,
        oidc_http,
        clock.clone(),
    );
    let service = Arc::new(Service {
        verifier,
        roles,
        drivers,
        leases: index,
        audit,
        key_hmac: audit::KeyHasher::new(&hmac_key),
        counters: Default::default(),
        admin_token,
        admin_rules: config.admin.rules,
        lease_limits: config.max_live_leases,
        limiter: service::limits::Limiter::new(&config.rate_limits),
        refusals: service::refusals::Coalescer::new(
            Duration::from_secs(config.rate_limits.audit_window_secs),
            config.rate_limits.max_tracked,
        ),
        break_glass,
        edge: service::EdgeConfig {
            allowed_hosts: config.allowed_hosts,
            cors_allowed_origins: config.cors_allowed_origins,
            // A body of a few KiB arrives as fast as its head.
            body_deadline: Some(Duration::from_secs(config.header_read_timeout_secs)),
        },
        clock,
    });
    Ok((service, warnings))
}

/// Background work: the first key fetch (retried until it works), periodic key
/// refresh, crash reconciliation (at once, then periodically) and the reaper of
/// expired leases. Runs until the service is dropped elsewhere and the task is aborted.
pub async fn background(service: Arc<Service>, reaper: config::ReaperConfig) {
    let keys = {
        let service = service.clone();
        async move { service.verifier.keep_keys_fresh().await }
    };
    // Refusal windows that have passed get their summary line within a second.
    let refusal_windows = {
        let service = service.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                service.close_refusal_windows().await;
            }
        }
    };
    let interval = Duration::from_secs(reaper.interval_secs.max(1));
    let settings = service::reconcile::ReconcileSettings::from(&reaper);
    let reaper = async move { service.reap_and_reconcile_every(interval, settings).await };
    tokio::join!(keys, refusal_windows, reaper);
}
