//! What the verifier is configured with: the trusted issuers and the checks every
//! token must pass. Users embed these in their own configuration files (vend's
//! `[token]` and `[[issuers]]`), so field names and defaults are part of those formats.

use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Allowed clock skew for `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Refuse tokens issued (`iat`) longer ago than this.
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    /// Refuse tokens longer than this many bytes before parsing them.
    #[serde(default = "default_max_token_bytes")]
    pub max_bytes: usize,
    /// Claims every token must carry (besides `iss`, `aud` and `exp`).
    #[serde(default = "default_required_claims")]
    pub required_claims: Vec<String>,
    /// Signature algorithms accepted; a subset of RS256, ES256, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            leeway_secs: default_leeway(),
            max_age_secs: None,
            max_bytes: default_max_token_bytes(),
            required_claims: default_required_claims(),
            algorithms: default_algorithms(),
        }
    }
}

fn default_leeway() -> u64 {
    60
}
fn default_max_token_bytes() -> usize {
    16 * 1024
}
fn default_required_claims() -> Vec<String> {
    vec!["sub".into()]
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer exactly as it appears in tokens' `iss`.
    pub issuer: String,
    /// The audience that must be in `aud` (string or array).
    pub audience: String,
    /// Where the keys are. Without it: discovery at
    /// `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Fetch discovery and keys over plain `http://` from a host that is not loopback.
    /// Off by default: keys fetched without TLS can be swapped by anyone on the path,
    /// and with them every token. Logged as a warning when on.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Clock skew allowed for this issuer's tokens, instead of the token settings'
    /// `leeway_secs`: issuers differ in how far their clocks drift.
    #[serde(default)]
    pub leeway_secs: Option<u64>,
    /// Claims this issuer's tokens must carry, instead of the token settings'
    /// `required_claims`: what identifies a workload differs between issuers.
    #[serde(default)]
    pub required_claims: Option<Vec<String>>,
}

impl IssuerConfig {
    /// An issuer with no overrides: keys by discovery, over https or from loopback.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            allow_insecure_http: false,
            leeway_secs: None,
            required_claims: None,
        }
    }
}

/// What a verifier's configuration must satisfy, checked where a service loads it:
/// issuers are http(s) URLs whose keys may be fetched (`check_fetch_url`), audiences are
/// not empty, and only asymmetric algorithms are named.
pub fn check(issuers: &[IssuerConfig], token: &TokenConfig) -> Result<(), String> {
    for issuer in issuers {
        if !(issuer.issuer.starts_with("https://") || issuer.issuer.starts_with("http://")) {
            return Err(format!(
                "issuer {:?}: must be an http(s) URL",
                issuer.issuer
            ));
        }
        let fetched = issuer.jwks_url.as_deref().unwrap_or(&issuer.issuer);
        crate::verify::check_fetch_url(fetched, issuer.allow_insecure_http)
            .map_err(|e| format!("issuer {:?}: {e}", issuer.issuer))?;
        if issuer.audience.is_empty() {
            return Err(format!("issuer {:?}: audience is empty", issuer.issuer));
        }
    }
    for alg in &token.algorithms {
        if !matches!(alg.as_str(), "RS256" | "ES256" | "EdDSA") {
            return Err(format!(
                "token.algorithms: {alg:?} is not allowed (RS256, ES256, EdDSA only)"
            ));
        }
    }
    Ok(())
}
