//! Token checks: trusted issuers, their keys (`verify/keys.rs`) and the claims every
//! token must satisfy before any user of the token looks at it.

use std::sync::Arc;
use std::time::Duration;

use artifactstore_model::{Clock, Timestamp};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use crate::config::{IssuerConfig, TokenConfig};
use crate::refusal::{TokenReason, TokenRefusal};

mod keys;

pub use keys::{
    IssuerKeys, MAX_KEYS, PERIODIC_REFRESH, UNKNOWN_KID_REFRESH, check_fetch_url, http_client,
};

/// A token that passed every check.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    pub issuer: String,
    /// The audience it was accepted for (its issuer's configured audience).
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

    /// Keeps every issuer's keys loaded: every [`PERIODIC_REFRESH`] once all are, every
    /// 2 s while one is not (an issuer down at start-up). Runs until its task is
    /// dropped or aborted.
    pub async fn keep_keys_fresh(&self) {
        loop {
            self.refresh_all(Duration::ZERO).await;
            let all = self.issuers.iter().all(|i| i.loaded());
            tokio::time::sleep(if all {
                PERIODIC_REFRESH
            } else {
                Duration::from_secs(2)
            })
            .await;
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
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenRefusal> {
        let deny = |reason, msg: &str| Err(TokenRefusal::new(reason, msg));
        if token.len() > self.config.max_bytes {
            return deny(
                TokenReason::TokenTooLarge,
                &format!("token is larger than {} bytes", self.config.max_bytes),
            );
        }
        if token.is_empty() {
            return deny(TokenReason::RequestInvalid, "no token");
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            TokenRefusal::new(
                TokenReason::TokenInvalid,
                "token is not a JWT with a supported signature algorithm",
            )
        })?;
        if !self.algorithms.contains(&header.alg) {
            return deny(
                TokenReason::TokenInvalid,
                &format!("signature algorithm {:?} is not allowed", header.alg),
            );
        }
        let claimed = unverified_claims(token).ok_or_else(|| {
            TokenRefusal::new(TokenReason::TokenInvalid, "token payload is not JSON")
        })?;
        let iss = claimed.get("iss").and_then(Value::as_str).unwrap_or("");
        let Some(issuer) = self.issuers.iter().find(|i| i.issuer == iss) else {
            return deny(
                TokenReason::IssuerUntrusted,
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
                    TokenRefusal::new(
                        TokenReason::TokenInvalid,
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
                TokenReason::TokenInvalid,
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
                        TokenReason::AudienceMismatch,
                        "token has no aud claim".to_owned(),
                    ),
                    ErrorKind::MissingRequiredClaim(c) => {
                        (TokenReason::ClaimMissing, format!("token has no {c} claim"))
                    }
                    ErrorKind::InvalidIssuer => {
                        (TokenReason::IssuerUntrusted, "issuer is not trusted".into())
                    }
                    ErrorKind::InvalidSignature => (
                        TokenReason::TokenInvalid,
                        "token signature does not verify".into(),
                    ),
                    _ => (TokenReason::TokenInvalid, format!("token rejected: {e}")),
                };
                TokenRefusal::new(reason, msg)
            })?;
        let claims = data.claims;
        let now = self.clock.now().unix_secs();
        let leeway = issuer.leeway_secs.unwrap_or(self.config.leeway_secs);
        let leeway = i64::try_from(leeway).unwrap_or(i64::MAX);
        let seconds = |name: &str| -> Result<Option<i64>, TokenRefusal> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_i64().map(Some).ok_or_else(|| {
                    TokenRefusal::new(
                        TokenReason::TokenInvalid,
                        format!("token claim {name} is not a number of seconds"),
                    )
                }),
            }
        };
        let exp = seconds("exp")?.unwrap_or(0);
        if exp < now.saturating_sub(leeway) {
            return deny(TokenReason::TokenExpired, "token has expired");
        }
        if seconds("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return deny(
                TokenReason::TokenNotYetValid,
                "token is not valid yet (nbf)",
            );
        }
        let iat = seconds("iat")?;
        if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return deny(
                TokenReason::TokenNotYetValid,
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
                TokenReason::AudienceMismatch,
                &format!("audience {:?} is not in the token's aud", issuer.audience),
            );
        }
        if let Some(max_age) = self.config.max_age_secs {
            let Some(iat) = iat else {
                return deny(TokenReason::ClaimMissing, "token has no iat claim");
            };
            let max_age = i64::try_from(max_age).unwrap_or(i64::MAX);
            if now.saturating_sub(iat) > max_age.saturating_add(leeway) {
                return deny(
                    TokenReason::TokenTooOld,
                    &format!("token was issued more than {max_age} s ago"),
                );
            }
        }
        let required = issuer
            .required_claims
            .as_deref()
            .unwrap_or(&self.config.required_claims);
        for name in required {
            if claims.get(name).is_none_or(Value::is_null) {
                return deny(
                    TokenReason::ClaimMissing,
                    &format!("token has no {name} claim"),
                );
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
/// A token's claims as it states them, signature NOT checked: for naming a refused
/// token in an audit line, or for a client to see when its own token expires. Never a
/// basis for a decision.
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_, payload) = (parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests;
