//! One trusted issuer's signing keys: discovery, a JWKS cache of our own, and the
//! rules for where keys may come from.
//!
//! Keys are pinned to one algorithm each (from the JWK's `alg`, or from its key type
//! and curve), so a token cannot choose how it is verified: an HMAC token "signed"
//! with a public key, `alg: none`, or a symmetric (`oct`) key in a JWKS never verify.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::config::IssuerConfig;

/// An unknown `kid` triggers a JWKS fetch at most this often per issuer.
pub const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(30);
/// Keys are refreshed this often even when every `kid` is known (rotation).
pub const PERIODIC_REFRESH: Duration = Duration::from_secs(300);
/// At most this many keys are kept per issuer.
pub const MAX_KEYS: usize = 64;
/// Discovery documents and key sets larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub(super) struct VerifyKey {
    pub(super) key: Arc<DecodingKey>,
    pub(super) alg: Algorithm,
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
    /// This issuer's `leeway_secs` and `required_claims`, where they override the
    /// token settings'.
    pub(super) leeway_secs: Option<u64>,
    pub(super) required_claims: Option<Vec<String>>,
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
            leeway_secs: config.leeway_secs,
            required_claims: config.required_claims.clone(),
        }
    }

    /// Whether a key set has been loaded at least once.
    pub fn loaded(&self) -> bool {
        self.keys.read().unwrap().is_some()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().unwrap().clone()
    }

    /// Installs a key set without fetching it, for in-process tests of a service.
    #[cfg(any(test, feature = "testing"))]
    pub fn install_jwks(&self, doc: &Value) {
        *self.keys.write().unwrap() = Some(Arc::new(parse_jwks(doc).unwrap()));
    }

    pub fn key_count(&self) -> usize {
        self.keys
            .read()
            .unwrap()
            .as_ref()
            .map_or(0, |k| k.by_kid.len() + k.unnamed.len())
    }

    pub(super) fn lookup(&self, kid: Option<&str>) -> Option<VerifyKey> {
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

#[cfg(test)]
mod tests;
