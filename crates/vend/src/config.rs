//! The vending service's configuration: one TOML file whose string values may name
//! environment variables (`${env:NAME}` or `${env:NAME:-default}`), so that one file
//! serves every deployment. `${claim}` (no `env:`) is left alone: prefix templates use it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use artifactstore_http::Limits;
use artifactstore_model::secret::SecretRef;
use serde::Deserialize;

use artifactstore_oidc::claims::{Matcher, PrefixTemplate};
use artifactstore_oidc::{IssuerConfig, TokenConfig};

use crate::roles::Action;

pub mod break_glass;

/// The shortest lease any role may hand out, as in STS.
pub const MIN_LEASE_SECS: u64 = 900;
/// The longest lease any role may hand out.
pub const MAX_LEASE_SECS: u64 = 43_200;
/// Test hook (feature `test-lease-floor`, which only test builds enable): lowers
/// [`MIN_LEASE_SECS`] so that live tests can watch leases expire. A build without the
/// feature has neither this constant nor any code that reads the variable.
#[cfg(feature = "test-lease-floor")]
pub const TEST_HOOK_LEASE_FLOOR_ENV: &str = "ARTIFACTSTORE_TEST_HOOK_LEASE_FLOOR_SECS";

/// The shortest `min_duration_secs` a role may have.
#[cfg(not(feature = "test-lease-floor"))]
fn lease_floor(_env: &dyn Fn(&str) -> Option<String>) -> u64 {
    MIN_LEASE_SECS
}

#[cfg(feature = "test-lease-floor")]
fn lease_floor(env: &dyn Fn(&str) -> Option<String>) -> u64 {
    env(TEST_HOOK_LEASE_FLOOR_ENV)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(MIN_LEASE_SECS)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: environment variable {var} is not set (and the value has no `:-default`)")]
    EnvUnset { key: String, var: String },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A request head must be complete this long after its first byte (and a new
    /// connection's first request must begin within it), else the connection is closed.
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// A kept-alive connection idle this long between requests is closed.
    #[serde(default = "default_keep_alive_timeout_secs")]
    pub keep_alive_timeout_secs: u64,
    /// Connections open at once; beyond it new ones wait until one ends.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`); reread when it changes.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`; reread when it changes.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Where leases and revocations live: `sqlite://...` or `postgres://...`.
    pub database_url: String,
    pub audit: AuditConfig,
    #[serde(default)]
    pub token: TokenConfig,
    pub issuers: Vec<IssuerConfig>,
    pub drivers: BTreeMap<String, DriverConfig>,
    pub roles: Vec<RoleConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub reaper: ReaperConfig,
    #[serde(default)]
    pub max_live_leases: LeaseLimits,
    /// `Host` values served (`name` for any port, `name:port` for one); `["*"]` serves
    /// any (with a warning). Default: `localhost`, `127.0.0.1`, `[::1]` and the listen
    /// address. Anything else is answered 421 `host_not_allowed` (DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins (`https://dash.example`) whose browsers may call vend across origins
    /// (preflights answered, state-changing requests served). Default: none, and no
    /// CORS header at all.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// `[break_glass]`: off when absent (see [`break_glass`]).
    #[serde(default)]
    pub break_glass: Option<break_glass::BreakGlassConfig>,
}

/// Token buckets against floods: per client address, checked before the token is
/// looked at, and per verified subject. Beyond either, 429 `rate_limited` with
/// `Retry-After`. A rate of 0 turns that limit off.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Requests per second a client address (an IPv4 address, an IPv6 /64) may make
    /// on the vending routes, sustained. Default 50.
    pub per_client_per_sec: f64,
    /// How many it may make at once (a CI fleet behind one NAT starting). Default 200.
    pub per_client_burst: u32,
    /// Vend requests per second of one subject (`iss` + `sub`), sustained. Default 5.
    pub per_subject_per_sec: f64,
    /// How many at once. Default 50 (the default live-lease cap per subject).
    pub per_subject_burst: u32,
    /// Most client addresses, and most subjects, whose buckets are kept; beyond it the
    /// idle ones go first. Default 10,000.
    pub max_tracked: usize,
    /// Refusals before a verified identity (rate-limited, malformed, unverifiable
    /// token, oversized body) are audited as one line when a client's window opens
    /// and one summary line with their count when it closes. Default 60 s.
    pub audit_window_secs: u64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_client_per_sec: 50.0,
            per_client_burst: 200,
            per_subject_per_sec: 5.0,
            per_subject_burst: 50,
            max_tracked: 10_000,
            audit_window_secs: 60,
        }
    }
}

/// How many leases may be live (pending or active) at once: one token replayed in a
/// loop must not mint without end. Beyond a limit vending is refused (`lease_limit`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseLimits {
    /// Per subject (`iss` + `sub`), over all roles. Default 50.
    pub per_subject: u64,
    /// Per role, over all subjects. Default 10,000.
    pub per_role: u64,
}

impl Default for LeaseLimits {
    fn default() -> Self {
        LeaseLimits {
            per_subject: 50,
            per_role: 10_000,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8090".into()
}
fn default_header_read_timeout_secs() -> u64 {
    Limits::DEFAULT_HEADER_READ_TIMEOUT_SECS
}
fn default_keep_alive_timeout_secs() -> u64 {
    Limits::DEFAULT_KEEP_ALIVE_TIMEOUT_SECS
}
fn default_max_connections() -> u64 {
    Limits::DEFAULT_MAX_CONNECTIONS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The audit log: one JSON line per decision, hash-chained.
    pub path: PathBuf,
    /// Key of the HMAC under which access key ids appear in the audit log. Without
    /// it a random key is drawn at start-up, so hashes only correlate within one run.
    #[serde(default)]
    pub hmac_key_ref: Option<SecretRef>,
    /// Key of the HMAC that seals every line of the chain (at least 32 bytes). Without
    /// it a key is generated beside the log (`<path>.chain-key`, mode 0600) at the
    /// first start and reused.
    #[serde(default)]
    pub chain_key_ref: Option<SecretRef>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DriverConfig {
    /// Garage's admin API v2: one expiring key per lease.
    Garage {
        admin_url: String,
        admin_token_ref: SecretRef,
    },
    /// An upstream STS: `AssumeRole` with a session policy generated from the role.
    Sts {
        endpoint_url: String,
        #[serde(default = "default_region")]
        region: String,
        /// The upstream role to assume (MinIO and RustFS accept any value).
        role_arn: String,
        access_key_id_ref: SecretRef,
        secret_access_key_ref: SecretRef,
        #[serde(default)]
        session_token_ref: Option<SecretRef>,
        /// Whether a revoked lease's session is denied upstream before it expires.
        #[serde(default)]
        revoke_sessions: RevokeSessions,
        /// Where the IAM API of `revoke_sessions` is (default: `endpoint_url`, as on
        /// Ceph RGW; on AWS, `https://iam.amazonaws.com`).
        #[serde(default)]
        iam_endpoint_url: Option<String>,
        /// The region IAM requests are signed for (default: `us-east-1` when the IAM
        /// endpoint's host is under `amazonaws.com`, AWS's global IAM; else `region`).
        #[serde(default)]
        iam_region: Option<String>,
    },
}

/// STS sessions cannot be deleted upstream. `auto`: on the first revocation, ask
/// whether the upstream takes policies on the assumed role from the driver's
/// credentials (Ceph RGW and AWS do, with `iam:ListRolePolicies`, `iam:PutRolePolicy`
/// and `iam:DeleteRolePolicy` on the role), and if so deny each revoked session there
/// (`upstream: "denied"`); where it does not, the answer stays `unsupported`. `off`
/// (the default): never touch the role; revoked sessions last until they expire.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RevokeSessions {
    #[default]
    Off,
    Auto,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl DriverConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            DriverConfig::Garage { .. } => "garage",
            DriverConfig::Sts { .. } => "sts",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    /// Name of an entry of `[drivers]`.
    pub driver: String,
    pub bucket: String,
    /// Key prefixes the credential may touch, templated from claims (`ci/${sub}/`).
    /// Empty: the whole bucket.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Accept bucket-wide credentials on drivers that cannot scope by prefix (Garage).
    #[serde(default)]
    pub bucket_wide: bool,
    pub actions: Vec<Action>,
    #[serde(default = "default_min_duration")]
    pub min_duration_secs: u64,
    #[serde(default = "default_max_duration")]
    pub max_duration_secs: u64,
    /// Used when a request names no duration (default: `max_duration_secs`).
    #[serde(default)]
    pub default_duration_secs: Option<u64>,
    /// The lease may not outlive the token it was vended for: a request for longer is
    /// refused, never silently shortened.
    #[serde(default)]
    pub bound_to_token: bool,
    /// The role applies when any rule matches; a rule matches when all its claims do.
    pub rules: Vec<BTreeMap<String, Matcher>>,
}

fn default_min_duration() -> u64 {
    MIN_LEASE_SECS
}
fn default_max_duration() -> u64 {
    3600
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token of the admin routes (`/v1/admin/...`).
    #[serde(default)]
    pub token_ref: Option<SecretRef>,
    /// OIDC tokens (verified as for vending: same issuers, same audience) whose claims
    /// match any of these rules may call the admin routes too, in the language of a
    /// role's `rules`. Without `token_ref` and without rules the admin routes are off.
    #[serde(default)]
    pub rules: Vec<BTreeMap<String, Matcher>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaperConfig {
    /// How often expired leases are looked for and revoked upstream, and crash
    /// reconciliation runs (it also runs once at start-up).
    #[serde(default = "default_reaper_interval")]
    pub interval_secs: u64,
    /// A lease still `pending` this long after it was recorded belongs to an issue that
    /// never finished (the service stopped mid-issue): it is ended as failed and its
    /// upstream key, if any, deleted. Well above the longest mint (the Garage driver's
    /// calls time out after 10 s each). Default 60.
    #[serde(default = "default_pending_timeout")]
    pub pending_timeout_secs: u64,
    /// Also delete upstream keys named by vend whose lease id this lease database has
    /// never seen (for instance after the database was restored from an older backup),
    /// once they are older than `pending_timeout_secs`. Off by default: another vend
    /// deployment minting on the same upstream with a database of its own has keys of
    /// exactly that kind. Turn it on only where this database is the only one.
    #[serde(default)]
    pub delete_unknown_keys: bool,
}

impl Default for ReaperConfig {
    fn default() -> Self {
        ReaperConfig {
            interval_secs: default_reaper_interval(),
            pending_timeout_secs: default_pending_timeout(),
            delete_unknown_keys: false,
        }
    }
}

fn default_reaper_interval() -> u64 {
    30
}

fn default_pending_timeout() -> u64 {
    60
}

impl VendConfig {
    /// Reads, substitutes `${env:...}` and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        let mut value: toml::Value = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        substitute_env(&mut value, "", env)?;
        let config: VendConfig = value.try_into().map_err(|e| parse_err(e.to_string()))?;
        config.check(env)?;
        Ok(config)
    }

    /// The listener's limits (connection cap, timeouts); `load` refuses values out of
    /// their range.
    pub fn listener_limits(&self) -> Result<Limits, ConfigError> {
        Limits::new(
            self.header_read_timeout_secs,
            self.keep_alive_timeout_secs,
            self.max_connections,
        )
        .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    fn check(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.listener_limits()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid(
                "tls_cert and tls_key go together: give both (HTTPS) or neither (plain HTTP)"
                    .into(),
            );
        }
        if self.issuers.is_empty() {
            return invalid("no [[issuers]]: no token could ever be accepted".into());
        }
        if self.reaper.pending_timeout_secs == 0 {
            return invalid(
                "reaper.pending_timeout_secs must be at least 1: every issue in flight would be failed".into(),
            );
        }
        artifactstore_oidc::config::check(&self.issuers, &self.token)
            .map_err(ConfigError::Invalid)?;
        admin::check(&self.admin)?;
        let r = &self.rate_limits;
        if !(r.per_client_per_sec >= 0.0 && r.per_subject_per_sec >= 0.0)
            || (r.per_client_per_sec > 0.0 && r.per_client_burst == 0)
            || (r.per_subject_per_sec > 0.0 && r.per_subject_burst == 0)
            || r.max_tracked == 0
            || r.audit_window_secs == 0
        {
            return invalid(
                "rate_limits: rates must be >= 0 (0 turns a limit off), bursts of a limit \
                 that is on >= 1, max_tracked and audit_window_secs >= 1"
                    .into(),
            );
        }
        let floor = lease_floor(env);
        if let Some(bg) = &self.break_glass {
            bg.check(&self.roles, floor)?;
        }
        let mut names = BTreeSet::new();
        if self.roles.is_empty() {
            return invalid("no [[roles]]: every request would be refused".into());
        }
        for role in &self.roles {
            let r = &role.name;
            if !names.insert(r.as_str()) {
                return invalid(format!("role {r:?} is defined twice"));
            }
            if r.is_empty()
                || r.len() > 64
                || !r
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
            {
                return invalid(format!(
                    "role {r:?}: names use letters, digits and + = , . @ _ - (at most 64)"
                ));
            }
            let Some(driver) = self.drivers.get(&role.driver) else {
                return invalid(format!(
                    "role {r:?}: driver {:?} is not defined under [drivers]",
                    role.driver
                ));
            };
            if role.bucket.is_empty() {
                return invalid(format!("role {r:?}: bucket is empty"));
            }
            if role.actions.is_empty() {
                return invalid(format!("role {r:?}: no actions"));
            }
            if role.rules.is_empty() || role.rules.iter().any(|rule| rule.is_empty()) {
                return invalid(format!(
                    "role {r:?}: every role needs rules, and a rule needs at least one claim"
                ));
            }
            for prefix in &role.prefixes {
                PrefixTemplate::parse(prefix).map_err(|e| {
                    ConfigError::Invalid(format!("role {r:?}: prefix {prefix:?}: {e}"))
                })?;
            }
            if matches!(driver, DriverConfig::Garage { .. })
                && !role.prefixes.is_empty()
                && !role.bucket_wide
            {
                return invalid(format!(
                    "role {r:?}: Garage grants keys per bucket, not per prefix, so its \
                     credentials would reach the whole bucket {:?}; remove `prefixes` or set \
                     `bucket_wide = true` to accept that",
                    role.bucket
                ));
            }
            if matches!(driver, DriverConfig::Garage { .. }) {
                let actions = role.actions.iter().copied().collect();
                crate::driver::garage::garage_actions_exact(&actions)
                    .map_err(|e| ConfigError::Invalid(format!("role {r:?}: {e}")))?;
            }
            let default = role.default_duration_secs.unwrap_or(role.max_duration_secs);
            if role.min_duration_secs < floor
                || role.max_duration_secs > MAX_LEASE_SECS
                || role.min_duration_secs > role.max_duration_secs
                || default < role.min_duration_secs
                || default > role.max_duration_secs
            {
                return invalid(format!(
                    "role {r:?}: durations must satisfy {floor} <= min ({}) <= default ({default}) \
                     <= max ({}) <= {MAX_LEASE_SECS}",
                    role.min_duration_secs, role.max_duration_secs
                ));
            }
        }
        Ok(())
    }
}

/// Replaces `${env:NAME}` and `${env:NAME:-default}` in every string of `value`.
pub fn substitute_env(
    value: &mut toml::Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains("${env:") => {
            *s = expand(s, key, env)?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{key}[{i}]"), env)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, item) in table.iter_mut() {
                let path = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                substitute_env(item, &path, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(s: &str, key: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let Some(end) = after.find('}') else {
            return Err(ConfigError::Invalid(format!(
                "{key}: unterminated ${{env:...}}"
            )));
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(ConfigError::EnvUnset {
                    key: key.to_owned(),
                    var: name.to_owned(),
                });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

mod admin;
#[cfg(test)]
mod tests;
