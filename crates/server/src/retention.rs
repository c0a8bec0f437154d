//! Retention: which versions expire. `[[retention]]` rules match names by namespace and
//! name globs (the first match wins); a producer may also give a version its own expiry
//! when it completes it (`expires_in_days`), capped by the rule's `max_expires_days`. An
//! expired version becomes a tombstone, as if deleted, with a `version.expired` event
//! naming why; its blobs then go at the next garbage collection. The version `latest`
//! selects is never expired.
//!
//! What a rule keeps, for one name:
//! - its newest `keep_last` complete versions, and for `keep_per_label = "branch"` the
//!   newest complete version of each value of that label (these are protected);
//! - with `max_age_days`, every other complete version completed within that many days;
//!   without it, nothing else (protections then say what stays);
//! - open versions, unless `open_timeout_hours` have passed since their last upload.

use std::collections::HashSet;
use std::time::Duration;

use artifactstore_index::VersionAge;
use artifactstore_model::{Timestamp, VersionState};
use serde::Deserialize;

use artifactstore_oidc::claims::glob_match;

const DAY: Duration = Duration::from_secs(86_400);

/// One `[[retention]]` entry, as configured.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Names it for events and logs; default `#<position>`.
    #[serde(default)]
    pub name: Option<String>,
    pub namespaces: Vec<String>,
    #[serde(default = "everything")]
    pub names: Vec<String>,
    #[serde(default)]
    pub keep_last: Option<u64>,
    #[serde(default)]
    pub max_age_days: Option<u64>,
    #[serde(default)]
    pub keep_per_label: Option<String>,
    #[serde(default)]
    pub open_timeout_hours: Option<u64>,
    #[serde(default)]
    pub max_expires_days: Option<u64>,
}

fn everything() -> Vec<String> {
    vec!["*".into()]
}

/// The checked rules, in order.
#[derive(Clone, Debug, Default)]
pub struct Retention {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    namespaces: Vec<String>,
    names: Vec<String>,
    keep_last: Option<u64>,
    max_age: Option<Duration>,
    keep_per_label: Option<String>,
    open_timeout: Option<Duration>,
    max_expires: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
#[error("[[retention]] {0}")]
pub struct RetentionError(String);

impl Retention {
    pub fn new(configs: &[RetentionConfig]) -> Result<Retention, RetentionError> {
        let mut rules = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let name = c.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
            let what = |m: &str| RetentionError(format!("{name}: {m}"));
            if c.namespaces.is_empty() || c.names.is_empty() {
                return Err(what(
                    "namespaces and names must each list at least one glob",
                ));
            }
            if c.keep_last.is_none()
                && c.max_age_days.is_none()
                && c.keep_per_label.is_none()
                && c.open_timeout_hours.is_none()
                && c.max_expires_days.is_none()
            {
                return Err(what(
                    "says nothing: give keep_last, max_age_days, keep_per_label, open_timeout_hours or max_expires_days",
                ));
            }
            let days = |d: Option<u64>, key: &str| match d {
                Some(0) => Err(what(&format!("{key} must be at least 1"))),
                Some(d) if d > 36_500 => Err(what(&format!("{key} must be at most 36500"))),
                d => Ok(d),
            };
            let max_age = days(c.max_age_days, "max_age_days")?;
            let max_expires = days(c.max_expires_days, "max_expires_days")?;
            let open_timeout = days(c.open_timeout_hours, "open_timeout_hours")?;
            if c.keep_last == Some(0) {
                return Err(what("keep_last must be at least 1 (latest is always kept)"));
            }
            rules.push(Rule {
                name,
                namespaces: c.namespaces.clone(),
                names: c.names.clone(),
                keep_last: c.keep_last,
                max_age: max_age.map(|d| DAY * d as u32),
                keep_per_label: c.keep_per_label.clone(),
                open_timeout: open_timeout.map(|h| Duration::from_secs(h * 3600)),
                max_expires: max_expires.map(|d| DAY * d as u32),
            });
        }
        Ok(Retention { rules })
    }

    fn rule_for(&self, namespace: &str, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.namespaces.iter().any(|p| glob_match(p, namespace))
                && r.names.iter().any(|p| glob_match(p, name))
        })
    }

    /// The expiry a producer asked for at `now`, capped by the name's rule.
    pub fn producer_expiry(
        &self,
        namespace: &str,
        name: &str,
        expires_in_days: u64,
        now: Timestamp,
    ) -> Timestamp {
        let asked = DAY.saturating_mul(expires_in_days.min(36_500) as u32);
        let capped = match self.rule_for(namespace, name).and_then(|r| r.max_expires) {
            Some(cap) => asked.min(cap),
            None => asked,
        };
        now.saturating_add(capped)
    }

    /// The versions of one name that expire at `now`, each with why.
    pub fn plan(
        &self,
        namespace: &str,
        name: &str,
        versions: &[VersionAge],
        now: Timestamp,
    ) -> Vec<(String, String)> {
        let rule = self.rule_for(namespace, name);
        let mut complete: Vec<&VersionAge> = versions
            .iter()
            .filter(|v| v.state == VersionState::Complete)
            .collect();
        complete.sort_by_key(|v| std::cmp::Reverse(v.completed_seq));
        let mut expired = Vec::new();
        let because = |why: &str| match rule {
            Some(r) => format!("retention rule {}: {why}", r.name),
            None => why.to_owned(),
        };
        let mut labels_seen = HashSet::new();
        for (i, v) in complete.iter().enumerate() {
            if i == 0 {
                // `latest`: never expired, and the newest of its label's value.
                if let Some(label) = rule.and_then(|r| r.keep_per_label.as_ref())
                    && let Some(value) = v.labels.get(label)
                {
                    labels_seen.insert(value.clone());
                }
                continue;
            }
            if v.expires_at.is_some_and(|at| at <= now) {
                expired.push((
                    v.version.clone(),
                    because("expires_at, set when it was completed"),
                ));
                continue;
            }
            let Some(rule) = rule else { continue };
            let kept_last = rule.keep_last.is_some_and(|n| (i as u64) < n);
            let kept_label = rule.keep_per_label.as_ref().is_some_and(|label| {
                v.labels
                    .get(label)
                    .is_some_and(|value| labels_seen.insert(value.clone()))
            });
            if kept_last || kept_label {
                continue;
            }
            let why = match rule.max_age {
                Some(age) => v
                    .completed_at
                    .is_some_and(|at| at.saturating_add(age) <= now)
                    .then_some("max_age_days"),
                None if rule.keep_last.is_some() => Some("keep_last"),
                None if rule.keep_per_label.is_some() => Some("keep_per_label"),
                None => None,
            };
            if let Some(why) = why {
                expired.push((v.version.clone(), because(why)));
            }
        }
        if let Some(timeout) = rule.and_then(|r| r.open_timeout) {
            for v in versions.iter().filter(|v| v.state == VersionState::Open) {
                if v.last_upload_at.saturating_add(timeout) <= now {
                    expired.push((v.version.clone(), because("open_timeout_hours")));
                }
            }
        }
        expired
    }
}

/// Expires, at the index's `now`, every version the rules (or its producer) say has
/// expired; with `dry_run` only counts them. Returns how many.
pub async fn expire(
    index: &artifactstore_index::Index,
    retention: &Retention,
    dry_run: bool,
) -> Result<u64, artifactstore_index::Error> {
    const PAGE: usize = 500;
    let now = index.clock().now();
    let mut expired = 0;
    let mut after = None;
    loop {
        let names = index.live_names(after.as_ref(), PAGE).await?;
        for (namespace, name) in &names {
            let ages = index.version_ages(namespace, name).await?;
            for (version, why) in retention.plan(namespace, name, &ages, now) {
                if dry_run {
                    expired += 1;
                    continue;
                }
                let (Ok(ns), Ok(n), Ok(v)) = (
                    artifactstore_model::Namespace::parse(namespace),
                    artifactstore_model::Name::parse(name),
                    artifactstore_model::Version::parse(&version),
                ) else {
                    continue;
                };
                let id = artifactstore_index::VersionId {
                    namespace: ns,
                    name: n,
                    version: v,
                };
                match index.expire_version(&id, &why).await {
                    Ok(Some(_)) => {
                        tracing::info!(%namespace, %name, %version, %why, "version expired");
                        expired += 1;
                    }
                    Ok(None) => {}
                    // One version that cannot be expired now (a lost race with another
                    // replica) does not stop the pass; the next one tries it again.
                    Err(e) => {
                        tracing::warn!(%namespace, %name, %version, error = %e, "could not expire a version")
                    }
                }
            }
        }
        if names.len() < PAGE {
            break;
        }
        after = names.last().cloned();
    }
    Ok(expired)
}

/// Expires versions every `retention_interval` for as long as the server runs.
pub async fn keep_expiring(st: crate::AppState) {
    let Some(interval) = st.config.retention_interval else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        match expire(&st.index, &st.config.retention, false).await {
            Ok(n) => st.metrics.versions_expired(n),
            Err(e) => {
                tracing::warn!(error = %e, "expiring versions failed; it runs again at the next interval")
            }
        }
    }
}

#[cfg(test)]
mod tests;
