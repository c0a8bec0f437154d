//! Static bearer tokens: high-entropy strings of which the configuration holds only a
//! SHA-256, each with its grants and an optional expiry.

use std::collections::HashMap;

use artifactstore_model::Timestamp;
use artifactstore_model::secret::Secret;
use serde::Deserialize;

use super::grants::{Grant, GrantError, GrantTemplate, Permission, everything};

/// Every static token starts with this, so a server tells it from a JWT at a glance
/// and secret scanners can find one that leaked.
pub const TOKEN_PREFIX: &str = "ast_";
/// Random bytes in a token (hex-encoded after the prefix): 256 bits.
const TOKEN_BYTES: usize = 32;

/// `[[auth.tokens]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; audit lines and logs name the token by this.
    pub name: String,
    /// Hex SHA-256 of the whole token (`artifactstore token new` prints it).
    pub sha256: String,
    pub namespaces: Vec<String>,
    #[serde(default = "everything")]
    pub names: Vec<String>,
    pub permissions: Vec<Permission>,
    /// RFC 3339; after it the token is refused (`token_expired`).
    #[serde(default)]
    pub expires: Option<String>,
}

#[derive(Clone, Debug)]
pub struct StaticToken {
    pub name: String,
    /// Its one grant, shared by every request it makes.
    pub grants: std::sync::Arc<[Grant]>,
    pub expires: Option<Timestamp>,
}

/// The configured tokens by hash.
#[derive(Clone, Debug, Default)]
pub struct StaticTokens {
    by_hash: HashMap<[u8; 32], StaticToken>,
}

/// The SHA-256 of a token, as the configuration holds it.
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// A new token and the hex SHA-256 to put in the configuration.
pub fn new_token() -> (Secret, String) {
    let mut bytes = [0u8; TOKEN_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source works");
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hex::encode(token_hash(&token));
    (Secret::new(token), hash)
}

impl StaticTokens {
    pub fn parse(configs: &[TokenConfig]) -> Result<Self, GrantError> {
        let mut by_hash = HashMap::new();
        for c in configs {
            let what = |m: String| GrantError(format!("[[auth.tokens]] {:?}: {m}", c.name));
            if c.name.is_empty() || c.name.len() > 64 {
                return Err(what("name must be 1 to 64 characters".into()));
            }
            let hash: [u8; 32] = hex::decode(&c.sha256)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    what("sha256 must be 64 hex digits (artifactstore token new)".into())
                })?;
            let grant = GrantTemplate::parse(&c.namespaces, &c.names, &c.permissions, false)
                .map_err(|e| what(e.0))?
                .fill(&Default::default())
                .ok_or_else(|| what("grants nothing".into()))?;
            let expires = match &c.expires {
                None => None,
                Some(s) => Some(
                    Timestamp::parse_rfc3339(s)
                        .ok_or_else(|| what(format!("expires {s:?} is not an RFC 3339 time")))?,
                ),
            };
            let token = StaticToken {
                name: c.name.clone(),
                grants: vec![grant].into(),
                expires,
            };
            if by_hash.values().any(|t: &StaticToken| t.name == token.name) {
                return Err(what(
                    "two tokens have this name; audit lines could not tell them apart".into(),
                ));
            }
            if by_hash.insert(hash, token).is_some() {
                return Err(what("the same sha256 is configured twice".into()));
            }
        }
        Ok(StaticTokens { by_hash })
    }

    /// The token with this value, if one is configured. The lookup is by the hash of
    /// what was sent, so its timing says nothing about any configured token's value.
    pub fn find(&self, token: &str) -> Option<&StaticToken> {
        self.by_hash.get(&token_hash(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_found_by_its_hash_and_nothing_else_is() {
        let (token, hash) = new_token();
        assert!(token.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(token.expose().len(), TOKEN_PREFIX.len() + 64);
        let tokens = StaticTokens::parse(&[TokenConfig {
            name: "dash".into(),
            sha256: hash.clone(),
            namespaces: vec!["team-*".into()],
            names: everything(),
            permissions: vec![Permission::Read],
            expires: None,
        }])
        .unwrap();
        assert_eq!(tokens.find(token.expose()).unwrap().name, "dash");
        assert!(
            tokens.find(&hash).is_none(),
            "the hash itself is not a token"
        );
        let (other, _) = new_token();
        assert_ne!(other.expose(), token.expose());
        assert!(tokens.find(other.expose()).is_none());
        assert!(!format!("{token:?}").contains(&token.expose()[4..]));
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        let base = TokenConfig {
            name: "ci".into(),
            sha256: "ab".repeat(32),
            namespaces: vec!["x".into()],
            names: everything(),
            permissions: vec![Permission::Write],
            expires: None,
        };
        for (bad, words) in [
            (
                TokenConfig {
                    sha256: "abc".into(),
                    ..base.clone()
                },
                "64 hex",
            ),
            (
                TokenConfig {
                    expires: Some("tomorrow".into()),
                    ..base.clone()
                },
                "RFC 3339",
            ),
            (
                TokenConfig {
                    namespaces: vec!["${sub}".into()],
                    ..base.clone()
                },
                "templates",
            ),
            (
                TokenConfig {
                    permissions: vec![],
                    ..base.clone()
                },
                "one permission",
            ),
            (
                TokenConfig {
                    namespaces: vec!["a/b".into()],
                    ..base.clone()
                },
                "never match",
            ),
        ] {
            let e = StaticTokens::parse(&[bad]).unwrap_err().0;
            assert!(e.contains("\"ci\"") && e.contains(words), "{e}");
        }
        let renamed = TokenConfig {
            name: "ci2".into(),
            ..base.clone()
        };
        let e = StaticTokens::parse(&[base.clone(), renamed]).unwrap_err().0;
        assert!(e.contains("twice"), "{e}");
        let rehashed = TokenConfig {
            sha256: "cd".repeat(32),
            ..base.clone()
        };
        let e = StaticTokens::parse(&[base, rehashed]).unwrap_err().0;
        assert!(e.contains("this name"), "{e}");
    }
}
