//! `serve` configuration, layered: built-in defaults ← config file ← `ARTIFACTSTORE_*`
//! environment ← command-line flags. Unknown keys in the file are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use artifactstore_model::secret::SecretRef;
use artifactstore_server::Limits;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Keys read from the environment as `ARTIFACTSTORE_<KEY>`.
pub const ENV_KEYS: &[&str] = &[
    "backend",
    "listen",
    "data_dir",
    "database_url",
    "max_upload_size",
    "insecure_no_auth",
    "log_format",
    "allowed_hosts",
    "cors_allowed_origins",
    "max_files_per_version",
    "body_idle_timeout_secs",
    "max_concurrent_uploads",
    "header_read_timeout_secs",
    "keep_alive_timeout_secs",
    "max_connections",
    "tls_cert",
    "tls_key",
    "gc_grace_secs",
    "gc_interval_secs",
    "retention_interval_secs",
    "ui",
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Where blobs live: `fs` (the data directory) or `s3` (the `[s3]` section).
    pub backend: Backend,
    /// The S3 backend's settings (`[s3]`, env `ARTIFACTSTORE_S3_<KEY>`).
    pub s3: S3Settings,
    /// Address and port to listen on. Loopback by default.
    pub listen: SocketAddr,
    /// Directory for blobs, temp files and the SQLite index.
    pub data_dir: PathBuf,
    /// Metadata database URL; defaults to `sqlite://<data_dir>/index.db`.
    pub database_url: Option<String>,
    /// Largest accepted upload in bytes.
    pub max_upload_size: u64,
    /// Most files one version may hold; beyond it uploads get 409 `version_full`.
    pub max_files_per_version: u64,
    /// A request body from which no byte arrives this long is given up (408).
    pub body_idle_timeout_secs: u64,
    /// Uploads received at once; beyond it 503 `too_many_uploads`.
    pub max_concurrent_uploads: usize,
    /// A request head must be complete this long after its first byte (and a new
    /// connection's first request must begin within it), else the connection is closed.
    pub header_read_timeout_secs: u64,
    /// A kept-alive connection idle this long between requests is closed.
    pub keep_alive_timeout_secs: u64,
    /// Connections open at once; beyond it new ones wait until one ends.
    pub max_connections: u64,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`); reread when it changes.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`; reread when it changes.
    pub tls_key: Option<PathBuf>,
    /// A blob no live version references is deleted once it has been unreferenced this
    /// long.
    pub gc_grace_secs: u64,
    /// How often the server collects unreferenced blobs by itself; 0: only when asked
    /// (`artifactstore gc`).
    pub gc_interval_secs: u64,
    /// How often the server expires versions by `[[retention]]` by itself; 0: only when
    /// asked (`artifactstore gc --expire`).
    pub retention_interval_secs: u64,
    /// Which versions expire (`[[retention]]`, docs/OPERATOR.md); file only.
    #[serde(skip_serializing)]
    pub retention: Vec<artifactstore_server::retention::RetentionConfig>,
    /// What namespaces may hold (`[[quota]]`, docs/OPERATOR.md); file only.
    #[serde(skip_serializing)]
    pub quota: Vec<artifactstore_server::quota::QuotaConfig>,
    /// Allow listening on a non-loopback address without authentication.
    pub insecure_no_auth: bool,
    /// `Host` values served (`name` for any port, `name:port` for one); `["*"]`
    /// serves any. Default: `localhost`, `127.0.0.1`, `[::1]` and the listen address.
    /// Anything else is answered 421, which defeats DNS rebinding.
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins (`https://dash.example`) allowed to send state-changing requests
    /// from a browser, and to read answers across origins. Default: none.
    pub cors_allowed_origins: Vec<String>,
    /// `text` or `json` logs on stderr.
    pub log_format: LogFormat,
    /// Serve the artifact browser at `/ui/` (and redirect `/` to it).
    pub ui: bool,
    /// Who may do what (`[auth]`, docs/AUTH.md). Without it every caller may do
    /// everything, so the server then listens on loopback only.
    #[serde(skip_serializing)]
    pub auth: Option<artifactstore_server::auth::AuthConfig>,
    /// The audit log of changes and refusals (`[audit]`, env `ARTIFACTSTORE_AUDIT_<KEY>`).
    pub audit: AuditSettings,
}

/// `[audit]`: the keyed, hash-chained log of every change and refusal (docs/AUTH.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Whether to audit. Default: on when `[auth]` is configured or `path` is set.
    pub enabled: Option<bool>,
    /// The log. Default: `<data_dir>/audit.log`.
    pub path: Option<PathBuf>,
    /// The key that seals every line (at least 32 bytes, `env:NAME` or `file:/path`).
    /// Default: a key generated beside the log (`<path>.chain-key`, mode 0600).
    #[serde(skip_serializing)]
    pub chain_key_ref: Option<SecretRef>,
    /// Refusals of one client (and identity) are written as one line when its window
    /// opens and one summary when it has passed.
    pub window_secs: u64,
    /// Clients whose windows are open at once; beyond them refusals share one window.
    pub max_tracked: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: None,
            path: None,
            chain_key_ref: None,
            window_secs: 60,
            max_tracked: 10_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Fs,
    S3,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Checksum {
    /// Checksum headers only where the S3 API requires them (works with most stores).
    #[default]
    WhenRequired,
    /// The SDK's default: checksums whenever supported (some stores reject them).
    WhenSupported,
}

/// How the S3 backend's files reach a client (`[s3] download`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum S3Download {
    /// The server streams every body from the bucket.
    #[default]
    Proxy,
    /// A file GET is answered 307 to a presigned GET of the blob (docs/CONFIG.md).
    Redirect,
}

/// Where the S3 backend's credentials come from.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialsSource {
    /// The first that is configured, in this order: web-identity (a token file),
    /// container (a URL), process (a command), file (a path), assume-role (a role ARN
    /// and base keys), static (keys).
    #[default]
    Auto,
    Static,
    WebIdentity,
    AssumeRole,
    Container,
    Process,
    File,
}

/// `[s3]`: an S3-compatible bucket. Credentials only as secret references.
///
/// This is the flat layer that files and `ARTIFACTSTORE_S3_<KEY>` variables are read
/// into (documented keys, one namespace). The credential settings in it are turned once
/// into the typed [`CredentialSourceConfig`] by [`S3Settings::credential_source`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:9000`; unset for AWS.
    pub endpoint_url: Option<String>,
    pub region: String,
    pub bucket: Option<String>,
    /// Key prefix for everything artifact-store writes in the bucket.
    pub prefix: String,
    /// Virtual-host-style addressing (`bucket.endpoint`); path style by default.
    pub virtual_host_style: bool,
    /// PEM file of extra CA certificates for a private endpoint.
    pub ca_bundle: Option<PathBuf>,
    pub connect_timeout_secs: u64,
    pub read_timeout_secs: u64,
    /// Longest one S3 call may take, all attempts included.
    pub operation_timeout_secs: u64,
    pub checksum: Checksum,
    /// Multipart part size in bytes (at least 5 MiB).
    pub part_size: u64,
    /// Parts uploaded at once per upload.
    pub concurrency: usize,
    /// Attempts per request for throttling, 5xx and network errors.
    pub max_attempts: u32,
    /// Multipart uploads and staging objects older than this are swept at start-up.
    /// Keep it above the longest upload when several replicas share the bucket.
    pub stale_upload_age_secs: u64,
    /// `proxy`: the server streams downloads; `redirect`: a file GET is answered 307
    /// to a presigned GET of the blob, so its bytes do not pass through the server.
    pub download: S3Download,
    /// How long the presigned URL of a redirect works (1..=3600).
    pub redirect_expiry_secs: u64,
    /// `env:NAME` or `file:/path` of the access key id.
    #[serde(skip_serializing)]
    pub access_key_id_ref: Option<SecretRef>,
    /// `env:NAME` or `file:/path` of the secret access key.
    #[serde(skip_serializing)]
    pub secret_access_key_ref: Option<SecretRef>,
    /// `env:NAME` or `file:/path` of a session token (temporary credentials).
    #[serde(skip_serializing)]
    pub session_token_ref: Option<SecretRef>,
    /// Where credentials come from (docs/CONFIG.md): `auto` (default), `static`,
    /// `web-identity`, `assume-role`, `container`, `process` or `file`.
    pub credentials_source: CredentialsSource,
    /// web-identity: the OIDC token file, re-read at every refresh.
    pub web_identity_token_file: Option<PathBuf>,
    /// web-identity (optional) and assume-role (required): the role to assume.
    pub role_arn: Option<String>,
    /// web-identity and assume-role: `RoleSessionName` (default `artifactstore`).
    pub role_session_name: Option<String>,
    /// web-identity and assume-role: the STS endpoint (default: the S3 endpoint).
    pub sts_endpoint_url: Option<String>,
    /// web-identity and assume-role: DurationSeconds to ask for (default: the STS's).
    pub credentials_duration_secs: Option<u64>,
    /// assume-role: an inline session policy (JSON) that narrows the role.
    pub session_policy: Option<String>,
    /// container: the credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI` style).
    pub container_credentials_url: Option<String>,
    /// container: file holding the `Authorization` value, re-read at every refresh.
    pub container_authorization_token_file: Option<PathBuf>,
    /// process: a credential_process command line, run with `sh -c`.
    pub credential_process: Option<String>,
    /// process: the command is killed past this many seconds (default 30).
    pub credential_process_timeout_secs: Option<u64>,
    /// file: a JSON file in credential_process format written by a sidecar.
    pub credentials_file: Option<PathBuf>,
    /// Refresh when less than this remains (default: the smaller of 5 min and a third
    /// of the credential's lifetime). Applies to every source.
    pub credentials_refresh_window_secs: Option<u64>,
    // Present only to refuse them with a message that says what to do instead.
    #[serde(skip_serializing)]
    pub access_key_id: Option<Refused>,
    #[serde(skip_serializing)]
    pub secret_access_key: Option<Refused>,
    #[serde(skip_serializing)]
    pub session_token: Option<Refused>,
}

/// A configuration value that is accepted by the parser only to be refused with a clear
/// message. It keeps nothing of what it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused;

impl<'de> Deserialize<'de> for Refused {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Refused)
    }
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint_url: None,
            region: "us-east-1".into(),
            bucket: None,
            prefix: String::new(),
            virtual_host_style: false,
            ca_bundle: None,
            connect_timeout_secs: 10,
            read_timeout_secs: 60,
            operation_timeout_secs: 120,
            checksum: Checksum::WhenRequired,
            part_size: 8 << 20,
            concurrency: 4,
            max_attempts: 5,
            stale_upload_age_secs: 24 * 3600,
            download: S3Download::Proxy,
            redirect_expiry_secs: 60,
            access_key_id_ref: None,
            secret_access_key_ref: None,
            session_token_ref: None,
            credentials_source: CredentialsSource::Auto,
            web_identity_token_file: None,
            role_arn: None,
            role_session_name: None,
            sts_endpoint_url: None,
            credentials_duration_secs: None,
            session_policy: None,
            container_credentials_url: None,
            container_authorization_token_file: None,
            credential_process: None,
            credential_process_timeout_secs: None,
            credentials_file: None,
            credentials_refresh_window_secs: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        }
    }
}

impl S3Settings {
    /// Refuses secret values in configuration, naming the reference key to use instead.
    pub fn refuse_plain_secrets(&self) -> anyhow::Result<()> {
        for (given, key) in [
            (self.access_key_id.is_some(), "access_key_id"),
            (self.secret_access_key.is_some(), "secret_access_key"),
            (self.session_token.is_some(), "session_token"),
        ] {
            if given {
                anyhow::bail!(
                    "s3.{key}: credentials are not accepted as values in configuration; reference them instead: \
                     s3.{key}_ref = \"env:NAME\" or \"file:/path\" (environment: ARTIFACTSTORE_S3_{}_REF)",
                    key.to_uppercase()
                );
            }
        }
        Ok(())
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";
pub const DEFAULT_DATA_DIR: &str = "artifactstore-data";

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            backend: Backend::Fs,
            s3: S3Settings::default(),
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            max_upload_size: 64 << 30,
            max_files_per_version: artifactstore_index::DEFAULT_MAX_FILES_PER_VERSION,
            body_idle_timeout_secs: 60,
            max_concurrent_uploads: 1024,
            header_read_timeout_secs: Limits::DEFAULT_HEADER_READ_TIMEOUT_SECS,
            keep_alive_timeout_secs: Limits::DEFAULT_KEEP_ALIVE_TIMEOUT_SECS,
            max_connections: Limits::DEFAULT_MAX_CONNECTIONS,
            tls_cert: None,
            tls_key: None,
            gc_grace_secs: 3600,
            gc_interval_secs: 3600,
            retention_interval_secs: 3600,
            retention: Vec::new(),
            quota: Vec::new(),
            insecure_no_auth: false,
            allowed_hosts: None,
            cors_allowed_origins: Vec::new(),
            log_format: LogFormat::Text,
            ui: true,
            auth: None,
            audit: AuditSettings::default(),
        }
    }
}

/// Flags given on the command line; `None` means "not given, keep the layer below".
#[derive(Debug, Default, Serialize)]
pub struct ServeFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_size: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_no_auth: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_grace_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_interval_secs: Option<u64>,
    /// `Some(false)` for `--no-ui`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ui: Option<bool>,
}

pub fn load(file: Option<&Path>, flags: &ServeFlags) -> anyhow::Result<ServeConfig> {
    let mut fig = Figment::from(Serialized::defaults(ServeConfig::default()));
    if let Some(file) = file {
        anyhow::ensure!(
            file.is_file(),
            "config file {} does not exist",
            file.display()
        );
        fig = fig.merge(Toml::string(&substituted(file)?));
    }
    fig = fig
        .merge(Env::prefixed("ARTIFACTSTORE_").only(ENV_KEYS))
        .merge(Env::prefixed("ARTIFACTSTORE_S3_").map(|k| format!("s3.{k}").into()))
        .merge(Env::prefixed("ARTIFACTSTORE_AUDIT_").map(|k| format!("audit.{k}").into()))
        .merge(Serialized::defaults(flags));
    let cfg: ServeConfig = fig.extract().context("invalid configuration")?;
    cfg.s3.refuse_plain_secrets()?;
    // Zero would refuse every body or every upload; the upper bounds keep the timer's
    // deadline and the permit count representable.
    anyhow::ensure!(
        (1..=86_400).contains(&cfg.body_idle_timeout_secs),
        "body_idle_timeout_secs must be 1..=86400"
    );
    anyhow::ensure!(
        (1..=1 << 20).contains(&cfg.max_concurrent_uploads),
        "max_concurrent_uploads must be 1..=1048576"
    );
    cfg.listener_limits()?;
    anyhow::ensure!(
        cfg.tls_cert.is_some() == cfg.tls_key.is_some(),
        "tls_cert and tls_key go together: give both (HTTPS) or neither (plain HTTP)"
    );
    anyhow::ensure!(
        cfg.gc_grace_secs <= 10 * 365 * 86_400
            && cfg.gc_interval_secs <= 365 * 86_400
            && cfg.retention_interval_secs <= 365 * 86_400,
        "gc_grace_secs must be at most ten years, gc_interval_secs and retention_interval_secs at most one year"
    );
    // A redirect's URL is a credential while it lasts: minutes at most, and long
    // enough for a client to follow it.
    anyhow::ensure!(
        (1..=3600).contains(&cfg.s3.redirect_expiry_secs),
        "s3.redirect_expiry_secs must be 1..=3600"
    );
    anyhow::ensure!(
        (1..=86_400).contains(&cfg.audit.window_secs)
            && (1..=1 << 20).contains(&cfg.audit.max_tracked),
        "audit.window_secs must be 1..=86400 and audit.max_tracked 1..=1048576"
    );
    Ok(cfg)
}

/// The file's text with `${env:NAME}` and `${env:NAME:-default}` in its strings
/// replaced from the environment (the same dialect as vend's configuration), so that
/// one file serves every deployment (e.g. `[[auth.issuers]]`' issuer and audience).
fn substituted(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("read config file {}", file.display()))?;
    if !text.contains("${env:") {
        return Ok(text);
    }
    let mut value: toml::Value =
        toml::from_str(&text).with_context(|| format!("config file {}", file.display()))?;
    artifactstore_vend::config::substitute_env(&mut value, "", &|name| std::env::var(name).ok())
        .with_context(|| format!("config file {}", file.display()))?;
    Ok(toml::to_string(&value)?)
}

impl ServeConfig {
    /// The listener's limits; `load` has refused values out of their range.
    pub fn listener_limits(&self) -> anyhow::Result<Limits> {
        Ok(Limits::new(
            self.header_read_timeout_secs,
            self.keep_alive_timeout_secs,
            self.max_connections,
        )?)
    }

    /// Where to audit, or `None` when auditing is off.
    pub fn audit_path(&self) -> Option<PathBuf> {
        let on = self
            .audit
            .enabled
            .unwrap_or(self.auth.is_some() || self.audit.path.is_some());
        on.then(|| {
            self.audit
                .path
                .clone()
                .unwrap_or_else(|| self.data_dir.join("audit.log"))
        })
    }

    /// How the server answers file GETs. Only the S3 backend hands out presigned URLs:
    /// on fs, `download = "redirect"` changes nothing.
    pub fn downloads(&self) -> artifactstore_server::Downloads {
        match (self.backend, self.s3.download) {
            (Backend::S3, S3Download::Redirect) => artifactstore_server::Downloads::Redirect {
                expires_in: Duration::from_secs(self.s3.redirect_expiry_secs),
            },
            _ => artifactstore_server::Downloads::Proxy,
        }
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| artifactstore_index::sqlite_url(&self.data_dir.join("index.db")))
    }
}

mod credentials;
pub use credentials::{CredentialSourceConfig, StaticKeys};
#[cfg(test)]
mod tests;
