//! Token checks: trusted issuers, their keys (a JWKS cache of our own) and the claims
//! every token must satisfy before any role is looked at.
//!
//! Keys are pinned to one algorithm each (from the JWK's `alg`, or from its key type
//! and curve), so a token cannot choose how it is verified: an HMAC token "signed"
//! with a public key, `alg: none`, or a symmetric (`oct`) key in a JWKS never verify.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use artifactstore_model::{Clock, Timestamp};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use crate::config::{IssuerConfig, TokenConfig};
use crate::reason::{Denial, Reason};

/// An unknown `kid` triggers a JWKS fetch at most this often per issuer.
pub const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(30);
/// Keys are refreshed this often even when every `kid` is known (rotation).
pub const PERIODIC_REFRESH: Duration = Duration::from_secs(300);
/// At most this many keys are kept per issuer.
pub const MAX_KEYS: usize = 64;
/// Discovery documents and key sets larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

#[derive(Clone)]
struct VerifyKey {
    key: Arc<DecodingKey>,
    alg: Algorithm,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, VerifyKey>,
    /// Keys without a `kid`; used only for tokens without one, and only when alone.
    unnamed: Vec<VerifyKey>,
}

/// One trusted issuer and its cached keys.
pub struct IssuerKeys {
    pub issuer: String,
    pub audience: String,
    jwks_url: Option<String>,
    allow_insecure_http: bool,
    keys: RwLock<Option<Arc<KeySet>>>,
    resolved_jwks_url: RwLock<Option<String>>,
    /// Single flight for fetches, and when the last one started.
    fetch: tokio::sync::Mutex<Option<Instant>>,
    last_error: RwLock<Option<String>>,
    pub refreshes_ok: std::sync::atomic::AtomicU64,
    pub refreshes_failed: std::sync::atomic::AtomicU64,
}

impl IssuerKeys {
    pub fn new(config: &IssuerConfig) -> Self {
        IssuerKeys {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            jwks_url: config.jwks_url.clone(),
            allow_insecure_http: config.allow_insecure_http,
            keys: RwLock::new(None),
            resolved_jwks_url: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(None),
            last_error: RwLock::new(None),
            refreshes_ok: Default::default(),
            refreshes_failed: Default::default(),
        }
    }

    /// Whether a key set has been loaded at least once.
    pub fn loaded(&self) -> bool {
        self.keys.read().unwrap().is_some()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().unwrap().clone()
    }

    /// Installs a key set without fetching it, for in-process tests of the service.
    #[cfg(test)]
    pub(crate) fn install_jwks(&self, doc: &Value) {
        *self.keys.write().unwrap() = Some(Arc::new(parse_jwks(doc).unwrap()));
    }

    pub fn key_count(&self) -> usize {
        self.keys
            .read()
            .unwrap()
            .as_ref()
            .map_or(0, |k| k.by_kid.len() + k.unnamed.len())
    }

    fn lookup(&self, kid: Option<&str>) -> Option<VerifyKey> {
        let keys = self.keys.read().unwrap().clone()?;
        match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None if keys.unnamed.len() == 1 && keys.by_kid.is_empty() => {
                Some(keys.unnamed[0].clone())
            }
            None => None,
        }
    }

    /// Fetches the key set if no fetch started within `min_interval`. Concurrent
    /// callers wait for the one fetch in flight instead of starting their own. On
    /// failure the last good set stays in use.
    pub async fn refresh(&self, http: &reqwest::Client, min_interval: Duration) {
        let mut last = self.fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < min_interval) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch_keys(http).await {
            Ok(set) => {
                *self.keys.write().unwrap() = Some(Arc::new(set));
                *self.last_error.write().unwrap() = None;
                self.refreshes_ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                if self.loaded() {
                    tracing::warn!(issuer = %self.issuer, error = %e, "could not refresh the issuer's keys; keeping the last good set");
                } else {
                    tracing::warn!(issuer = %self.issuer, error = %e, "could not load the issuer's keys; its tokens are refused until they load");
                }
                *self.last_error.write().unwrap() = Some(e);
                self.refreshes_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    async fn fetch_keys(&self, http: &reqwest::Client) -> Result<KeySet, String> {
        let url = match &self.jwks_url {
            Some(u) => u.clone(),
            None => {
                let cached = self.resolved_jwks_url.read().unwrap().clone();
                match cached {
                    Some(u) => u,
                    None => {
                        let u = self.discover(http).await?;
                        *self.resolved_jwks_url.write().unwrap() = Some(u.clone());
                        u
                    }
                }
            }
        };
        let doc = get_json(http, &url).await?;
        parse_jwks(&doc)
    }

    async fn discover(&self, http: &reqwest::Client) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let doc = get_json(http, &url).await?;
        let issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
        if issuer != self.issuer {
            return Err(format!(
                "discovery document at {url} names issuer {issuer:?}, not {:?}",
                self.issuer
            ));
        }
        let jwks = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("discovery document at {url} has no jwks_uri"))?;
        check_fetch_url(jwks, self.allow_insecure_http)
            .map_err(|e| format!("discovery document at {url}: jwks_uri: {e}"))?;
        Ok(jwks.to_owned())
    }
}

/// The client that fetches discovery documents and keys. It follows no redirect: a
/// redirect could lead an https fetch to plain HTTP, or to a host nobody configured.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    artifactstore_credentials::sources::http_client_builder(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Signing keys and discovery documents come over `https://`, or plain HTTP from a
/// loopback host (a local test issuer), or where an issuer is explicitly configured
/// with `allow_insecure_http`.
pub fn check_fetch_url(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(&parsed) => Ok(()),
        "http" => Err(format!(
            "{url} is plain HTTP on a host that is not loopback: keys must come over https \
             (or set allow_insecure_http = true for this issuer)"
        )),
        other => Err(format!("{url}: scheme {other:?} is not https")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let mut resp = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| {
            format!(
                "GET {url}: {}",
                if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "cannot connect".to_owned()
                } else {
                    without_url(&e)
                }
            )
        })?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {}", without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" ({u})"), "");
    }
    s
}

/// The algorithm a JWK is pinned to, or `None` when it may not verify tokens.
fn pinned_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        // Symmetric keys (`oct`) and other curves never verify anything.
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(KeyAlgorithm::RS256) if by_type == Algorithm::RS256 => Some(by_type),
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::ES256 => Some(by_type),
        Some(KeyAlgorithm::EdDSA) if by_type == Algorithm::EdDSA => Some(by_type),
        Some(_) => None,
    }
}

fn parse_jwks(doc: &Value) -> Result<KeySet, String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("key set has no `keys` array")?;
    let mut set = KeySet::default();
    for raw in keys.iter().take(MAX_KEYS) {
        if raw
            .get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        let Some(alg) = pinned_algorithm(&jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let key = VerifyKey {
            key: Arc::new(key),
            alg,
        };
        match jwk.common.key_id {
            Some(kid) => {
                set.by_kid.insert(kid, key);
            }
            None => set.unnamed.push(key),
        }
    }
    Ok(set)
}

/// A token that passed every check.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    pub issuer: String,
    /// The vending audience it was accepted for.
    pub audience: String,
    pub subject: String,
    pub claims: Map<String, Value>,
    /// `exp`.
    pub expires_at: Timestamp,
}

/// What an audit line may say about a token that was refused: its claimed issuer and
/// subject, marked unverified, cut short.
#[derive(Clone, Debug, Default)]
pub struct ClaimedIdentity {
    pub issuer: Option<String>,
    pub subject: Option<String>,
}

pub struct TokenVerifier {
    pub issuers: Vec<Arc<IssuerKeys>>,
    config: TokenConfig,
    algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    /// Judges `exp`, `nbf`, `iat` and `max_age_secs`.
    clock: Arc<dyn Clock>,
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl TokenVerifier {
    pub fn new(
        issuers: &[IssuerConfig],
        config: TokenConfig,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let algorithms = config
            .algorithms
            .iter()
            .filter_map(|a| match a.as_str() {
                "RS256" => Some(Algorithm::RS256),
                "ES256" => Some(Algorithm::ES256),
                "EdDSA" => Some(Algorithm::EdDSA),
                _ => None,
            })
            .collect();
        TokenVerifier {
            issuers: issuers
                .iter()
                .map(|i| Arc::new(IssuerKeys::new(i)))
                .collect(),
            config,
            algorithms,
            http,
            clock,
        }
    }

    /// Loads or refreshes every issuer's keys (no more often than `min_interval`).
    pub async fn refresh_all(&self, min_interval: Duration) {
        for issuer in &self.issuers {
            issuer.refresh(&self.http, min_interval).await;
        }
    }

    /// The claimed (unverified) issuer and subject of a token, for audit lines.
    pub fn claimed_identity(&self, token: &str) -> ClaimedIdentity {
        if token.len() > self.config.max_bytes {
            return ClaimedIdentity::default();
        }
        let claims = unverified_claims(token).unwrap_or_default();
        let get = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .map(|s| truncate(s, 256))
        };
        ClaimedIdentity {
            issuer: get("iss"),
            subject: get("sub"),
        }
    }

    /// Every check of a token, in order; the first failure decides the reason.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, Denial> {
        let deny = |reason, msg: &str| Err(Denial::new(reason, msg));
        if token.len() > self.config.max_bytes {
            return deny(
                Reason::TokenTooLarge,
                &format!("token is larger than {} bytes", self.config.max_bytes),
            );
        }
        if token.is_empty() {
            return deny(Reason::RequestInvalid, "no token");
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            Denial::new(
                Reason::TokenInvalid,
                "token is not a JWT with a supported signature algorithm",
            )
        })?;
        if !self.algorithms.contains(&header.alg) {
            return deny(
                Reason::TokenInvalid,
                &format!("signature algorithm {:?} is not allowed", header.alg),
            );
        }
        let claimed = unverified_claims(token)
            .ok_or_else(|| Denial::new(Reason::TokenInvalid, "token payload is not JSON"))?;
        let iss = claimed.get("iss").and_then(Value::as_str).unwrap_or("");
        let Some(issuer) = self.issuers.iter().find(|i| i.issuer == iss) else {
            return deny(
                Reason::IssuerUntrusted,
                &format!("issuer {:?} is not trusted", truncate(iss, 200)),
            );
        };
        let kid = header.kid.as_deref();
        let key = match issuer.lookup(kid) {
            Some(k) => k,
            None => {
                // Perhaps the issuer rotated its keys: look again, at most once per
                // UNKNOWN_KID_REFRESH, so unknown kids cannot make us hammer it.
                issuer.refresh(&self.http, UNKNOWN_KID_REFRESH).await;
                issuer.lookup(kid).ok_or_else(|| {
                    Denial::new(
                        Reason::TokenInvalid,
                        format!(
                            "no usable signing key {:?} for issuer {:?}",
                            kid.map(|k| truncate(k, 100)).unwrap_or_default(),
                            issuer.issuer
                        ),
                    )
                })?
            }
        };
        if key.alg != header.alg {
            return deny(
                Reason::TokenInvalid,
                "token algorithm does not match its key's algorithm",
            );
        }
        // The signature, and that `exp`, `iss` and `aud` are present, are checked by
        // jsonwebtoken; the times and the audience are checked below against our own
        // clock (jsonwebtoken would read the system's), in the documented order:
        // exp, nbf, iat, aud, max age.
        let mut validation = Validation::new(key.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| {
                let (reason, msg) = match e.kind() {
                    ErrorKind::MissingRequiredClaim(c) if c == "aud" => (
                        Reason::AudienceMismatch,
                        "token has no aud claim".to_owned(),
                    ),
                    ErrorKind::MissingRequiredClaim(c) => {
                        (Reason::ClaimMissing, format!("token has no {c} claim"))
                    }
                    ErrorKind::InvalidIssuer => {
                        (Reason::IssuerUntrusted, "issuer is not trusted".into())
                    }
                    ErrorKind::InvalidSignature => (
                        Reason::TokenInvalid,
                        "token signature does not verify".into(),
                    ),
                    _ => (Reason::TokenInvalid, format!("token rejected: {e}")),
                };
                Denial::new(reason, msg)
            })?;
        let claims = data.claims;
        let now = self.clock.now().unix_secs();
        let leeway = i64::try_from(self.config.leeway_secs).unwrap_or(i64::MAX);
        let seconds = |name: &str| -> Result<Option<i64>, Denial> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_i64().map(Some).ok_or_else(|| {
                    Denial::new(
                        Reason::TokenInvalid,
                        format!("token claim {name} is not a number of seconds"),
                    )
                }),
            }
        };
        let exp = seconds("exp")?.unwrap_or(0);
        if exp < now.saturating_sub(leeway) {
            return deny(Reason::TokenExpired, "token has expired");
        }
        if seconds("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return deny(Reason::TokenNotYetValid, "token is not valid yet (nbf)");
        }
        let iat = seconds("iat")?;
        if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return deny(
                Reason::TokenNotYetValid,
                "token is issued in the future (iat)",
            );
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == issuer.audience,
            Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(&issuer.audience)),
            _ => false,
        };
        if !audience_ok {
            return deny(
                Reason::AudienceMismatch,
                &format!("audience {:?} is not in the token's aud", issuer.audience),
            );
        }
        if let Some(max_age) = self.config.max_age_secs {
            let Some(iat) = iat else {
                return deny(Reason::ClaimMissing, "token has no iat claim");
            };
            let max_age = i64::try_from(max_age).unwrap_or(i64::MAX);
            if now.saturating_sub(iat) > max_age.saturating_add(leeway) {
                return deny(
                    Reason::TokenTooOld,
                    &format!("token was issued more than {max_age} s ago"),
                );
            }
        }
        for name in &self.config.required_claims {
            if claims.get(name).is_none_or(Value::is_null) {
                return deny(Reason::ClaimMissing, &format!("token has no {name} claim"));
            }
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let expires_at = Timestamp::from_unix_secs(exp);
        Ok(VerifiedToken {
            issuer: issuer.issuer.clone(),
            audience: issuer.audience.clone(),
            subject,
            claims,
            expires_at,
        })
    }
}

/// The payload of a JWT, decoded without any check. Only for routing (`iss`) and
/// for what an audit line says about a refused token.
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_, payload) = (parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests;
