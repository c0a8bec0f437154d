//! `[break_glass]`: an emergency way to a lease on chosen roles without an OIDC token,
//! for when the issuer or the role rules are what is broken. Absent: off (the route
//! answers 404 `break_glass_disabled`).

use artifactstore_model::secret::SecretRef;
use serde::Deserialize;

use super::{ConfigError, RoleConfig};

/// The default and the usual ceiling of a break-glass lease: 15 minutes.
pub const DEFAULT_MAX_DURATION_SECS: u64 = 900;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassConfig {
    /// Reference (`env:`/`file:`) to the argon2id PHC string of the break-glass
    /// credential (`artifactstore vend hash-credential` makes one). The credential
    /// itself is never configured.
    pub credential_hash_ref: SecretRef,
    /// The configured roles a break-glass lease may be for.
    pub roles: Vec<String>,
    /// The longest break-glass lease; longer requests are cut to it. Never above the
    /// `max_duration_secs` of a listed role. Default 900.
    #[serde(default = "default_max_duration")]
    pub max_duration_secs: u64,
    /// Notified (POST, JSON, no secrets) of every allowed use and every refused
    /// credential, from a background task with a 5-second timeout. The URL is never
    /// logged or echoed in an error. When it carries a token (most chat and paging
    /// webhooks do), prefer `webhook_url_ref`.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Reference (`env:`/`file:`) to the webhook URL, for URLs that carry a token.
    /// At most one of `webhook_url` and `webhook_url_ref`.
    #[serde(default)]
    pub webhook_url_ref: Option<SecretRef>,
    /// Attempts one client address may make (burst); they come back at
    /// `attempts_per_minute`. Every attempt counts, so that a guesser is slowed before
    /// the costly hash check. Default 5.
    #[serde(default = "default_burst")]
    pub attempts_burst: u32,
    /// Default 5 per minute.
    #[serde(default = "default_per_minute")]
    pub attempts_per_minute: f64,
    /// Attempts from all addresses together (burst), against guessing from many
    /// addresses. Default 20.
    #[serde(default = "default_global_burst")]
    pub global_attempts_burst: u32,
    /// Default 20 per minute.
    #[serde(default = "default_global_per_minute")]
    pub global_attempts_per_minute: f64,
}

fn default_max_duration() -> u64 {
    DEFAULT_MAX_DURATION_SECS
}
fn default_burst() -> u32 {
    5
}
fn default_per_minute() -> f64 {
    5.0
}
fn default_global_burst() -> u32 {
    20
}
fn default_global_per_minute() -> f64 {
    20.0
}

impl BreakGlassConfig {
    /// Checks the section against the configured roles; `floor` is the shortest lease
    /// any role may have.
    pub fn check(&self, roles: &[RoleConfig], floor: u64) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("break_glass: {m}")));
        if self.roles.is_empty() {
            return invalid("roles is empty: list the roles a break-glass lease may be for".into());
        }
        for name in &self.roles {
            let Some(role) = roles.iter().find(|r| &r.name == name) else {
                return invalid(format!("role {name:?} is not a configured [[roles]] entry"));
            };
            if role.prefixes.iter().any(|p| p.contains("${")) {
                return invalid(format!(
                    "role {name:?} has templated prefixes, which a break-glass lease (no token, no claims) cannot fill"
                ));
            }
            if self.max_duration_secs < role.min_duration_secs {
                return invalid(format!(
                    "max_duration_secs ({}) is below role {name:?}'s min_duration_secs ({})",
                    self.max_duration_secs, role.min_duration_secs
                ));
            }
            if self.max_duration_secs > role.max_duration_secs {
                return invalid(format!(
                    "max_duration_secs ({}) is above role {name:?}'s max_duration_secs ({})",
                    self.max_duration_secs, role.max_duration_secs
                ));
            }
        }
        if self.max_duration_secs < floor {
            return invalid(format!(
                "max_duration_secs ({}) is below the shortest lease ({floor})",
                self.max_duration_secs
            ));
        }
        if self.webhook_url.is_some() && self.webhook_url_ref.is_some() {
            return invalid("give webhook_url or webhook_url_ref, not both".into());
        }
        if let Some(url) = &self.webhook_url
            && webhook_url(url).is_none()
        {
            // Not echoed: a webhook URL often carries a token.
            return invalid("webhook_url is not an http(s) URL (the value is not shown)".into());
        }
        let rates_ok = |burst: u32, per_minute: f64| burst >= 1 && per_minute > 0.0;
        if !rates_ok(self.attempts_burst, self.attempts_per_minute)
            || !rates_ok(self.global_attempts_burst, self.global_attempts_per_minute)
        {
            return invalid(
                "attempt limits cannot be off: bursts must be >= 1 and rates > 0".into(),
            );
        }
        Ok(())
    }
}

/// `url` parsed, if it is an http(s) URL with a host: the one check of `webhook_url`
/// at load and of the resolved `webhook_url_ref` at start.
pub fn webhook_url(url: &str) -> Option<reqwest::Url> {
    reqwest::Url::parse(url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::VendConfig;

    use crate::config::tests::HEAD;

    /// The roles these tests refer to.
    const ROLES: &str = r#"
        [[roles]]
        name = "writer"
        driver = "g"
        bucket = "artifacts"
        actions = ["read", "write", "list", "delete"]
        max_duration_secs = 1800
        rules = [{ groups = { contains = "writers" } }]
        [[roles]]
        name = "scoped"
        driver = "g"
        bucket = "artifacts"
        prefixes = ["ci/${sub}/"]
        bucket_wide = true
        actions = ["read", "list"]
        rules = [{ groups = { contains = "scoped" } }]
    "#;

    fn parse(section: &str) -> Result<VendConfig, String> {
        VendConfig::parse(
            &format!("{HEAD}{ROLES}\n{section}"),
            Path::new("t.toml"),
            &|_| None,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn break_glass_is_off_unless_configured_and_defaults_to_15_minutes() {
        assert!(parse("").unwrap().break_glass.is_none());
        let c = parse(
            "[break_glass]\ncredential_hash_ref = \"file:/etc/bg.hash\"\nroles = [\"writer\"]\n",
        )
        .unwrap();
        let bg = c.break_glass.unwrap();
        assert_eq!(bg.max_duration_secs, 900);
        assert_eq!((bg.attempts_burst, bg.global_attempts_burst), (5, 20));
        assert!(bg.webhook_url.is_none() && bg.webhook_url_ref.is_none());
        let c = parse(
            "[break_glass]\ncredential_hash_ref = \"file:/etc/bg.hash\"\nroles = [\"writer\"]\nwebhook_url_ref = \"env:BG_HOOK\"\n",
        )
        .unwrap();
        assert!(c.break_glass.unwrap().webhook_url_ref.is_some());
    }

    /// Webhook URLs often carry a token: a refused one is not echoed.
    #[test]
    fn a_bad_webhook_url_is_not_echoed() {
        let err = parse(
            "[break_glass]\ncredential_hash_ref = \"env:BG_HASH\"\nroles = [\"writer\"]\nwebhook_url = \"hooks.example/T0/B0/canary-token-5a1f\"\n",
        )
        .unwrap_err();
        assert!(err.contains("not an http(s) URL"), "{err}");
        assert!(!err.contains("canary-token-5a1f"), "{err}");
        // Nor a literal URL put where its reference belongs.
        let err = parse(
            "[break_glass]\ncredential_hash_ref = \"env:BG_HASH\"\nroles = [\"writer\"]\nwebhook_url_ref = \"https://hooks.example/canary-token-5a1f\"\n",
        )
        .unwrap_err();
        assert!(!err.contains("canary-token-5a1f"), "{err}");
        let err = parse(
            "[break_glass]\ncredential_hash_ref = \"env:BG_HASH\"\nroles = [\"writer\"]\nwebhook_url = \"https://a.example/\"\nwebhook_url_ref = \"env:BG_HOOK\"\n",
        )
        .unwrap_err();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn bad_break_glass_sections_are_refused_at_load() {
        let section = |extra: &str| {
            format!("[break_glass]\ncredential_hash_ref = \"env:BG_HASH\"\n{extra}\n")
        };
        for (extra, words) in [
            ("roles = []", "roles is empty"),
            ("roles = [\"nobody\"]", "not a configured"),
            ("roles = [\"scoped\"]", "templated prefixes"),
            (
                "roles = [\"writer\"]\nmax_duration_secs = 3600",
                "above role \"writer\"",
            ),
            (
                "roles = [\"writer\"]\nmax_duration_secs = 60",
                "below role \"writer\"",
            ),
            (
                "roles = [\"writer\"]\nwebhook_url = \"ftp://x/\"",
                "not an http(s) URL",
            ),
            (
                "roles = [\"writer\"]\nwebhook_url = \"hooks\"",
                "not an http(s) URL",
            ),
            ("roles = [\"writer\"]\nattempts_burst = 0", "cannot be off"),
            (
                "roles = [\"writer\"]\nglobal_attempts_per_minute = 0",
                "cannot be off",
            ),
            // The credential itself is never a configuration value.
            ("roles = [\"writer\"]\ncredential = \"x\"", "unknown field"),
        ] {
            let err = parse(&section(extra)).unwrap_err();
            assert!(err.contains(words), "{extra}: {err}");
        }
        // A hash reference that is not a reference.
        let err = parse(
            "[break_glass]\ncredential_hash_ref = \"$argon2id$v=19$...\"\nroles = [\"writer\"]\n",
        )
        .unwrap_err();
        assert!(
            err.contains("credential_hash_ref") || err.contains("env:"),
            "{err}"
        );
    }
}
