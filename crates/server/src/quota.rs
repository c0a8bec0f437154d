//! Quotas: `[[quota]]` entries give namespaces (by glob; the first match wins) a most
//! of logical bytes in live versions (`max_bytes`) and of live versions
//! (`max_versions`). An upload that would pass one is refused with 507
//! `quota_exceeded`: before a byte is read when its `Content-Length` (or the version it
//! would create) already says so, and again, under the namespace's usage lock, when its
//! file is recorded — a body of unknown length that turns out too large is then stored
//! but never referenced, and garbage collection removes it.

use artifactstore_index::Quota;
use serde::Deserialize;

use artifactstore_oidc::claims::glob_match;

/// One `[[quota]]` entry, as configured.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub max_versions: Option<u64>,
}

/// The checked quotas, in order.
#[derive(Clone, Debug, Default)]
pub struct Quotas {
    rules: Vec<(Vec<String>, Quota)>,
}

#[derive(Debug, thiserror::Error)]
#[error("[[quota]] #{position}: {message}")]
pub struct QuotaError {
    position: usize,
    message: &'static str,
}

impl Quotas {
    pub fn new(configs: &[QuotaConfig]) -> Result<Quotas, QuotaError> {
        let mut rules = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let fail = |message| QuotaError {
                position: i + 1,
                message,
            };
            if c.namespaces.is_empty() {
                return Err(fail("namespaces must list at least one glob"));
            }
            if c.max_bytes.is_none() && c.max_versions.is_none() {
                return Err(fail("give max_bytes, max_versions or both"));
            }
            rules.push((
                c.namespaces.clone(),
                Quota {
                    max_bytes: c.max_bytes,
                    max_versions: c.max_versions,
                },
            ));
        }
        Ok(Quotas { rules })
    }

    /// The quota of `namespace`, if one applies.
    pub fn for_namespace(&self, namespace: &str) -> Option<Quota> {
        self.rules
            .iter()
            .find(|(globs, _)| globs.iter().any(|g| glob_match(g, namespace)))
            .map(|(_, q)| *q)
    }
}
