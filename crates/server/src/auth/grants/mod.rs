//! Grants: which permissions reach which namespaces and names. Patterns are globs
//! (`*` any run, `?` one character) over names, and may carry `${claim}` templates that
//! are filled from a verified token's claims before the glob is used.

use std::collections::{BTreeMap, BTreeSet};

use artifactstore_model::{Name, Namespace};
use artifactstore_oidc::claims::{self, Matcher};
use serde::Deserialize;
use serde_json::{Map, Value};

/// What a caller may do.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Permission {
    /// Listings, manifests, files, blobs and events.
    Read,
    /// Uploads to versions that are still open.
    Write,
    /// Completing a version (which moves `latest`) and changing its labels.
    Complete,
    /// Tombstoning a version.
    Delete,
    /// The administrative API (and `/metrics` with `protect_metrics`).
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The default `names`: every name.
pub(super) fn everything() -> Vec<String> {
    vec!["*".to_owned()]
}

/// A grant as configured: for anonymous callers, static tokens and claim rules alike.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    pub namespaces: Vec<String>,
    #[serde(default = "everything")]
    pub names: Vec<String>,
    pub permissions: Vec<Permission>,
}

/// `[[auth.rules]]`: tokens whose claims all match get the grant.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Only tokens of this issuer (its `iss`); any trusted issuer when unset.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Claim name → matcher (exact string, `{ glob }`, `{ contains }`, `{ equals }`);
    /// every one must hold.
    pub claims: BTreeMap<String, Matcher>,
    pub namespaces: Vec<String>,
    #[serde(default = "everything")]
    pub names: Vec<String>,
    pub permissions: Vec<Permission>,
}

/// A grant whose patterns are plain globs (templates already filled in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub namespaces: Vec<String>,
    pub names: Vec<String>,
    pub permissions: BTreeSet<Permission>,
}

impl Grant {
    fn reaches_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .iter()
            .any(|p| claims::glob_match(p, namespace))
    }

    pub fn allows(&self, permission: Permission, namespace: &str, name: &str) -> bool {
        self.permissions.contains(&permission)
            && self.reaches_namespace(namespace)
            && self.names.iter().any(|p| claims::glob_match(p, name))
    }

    /// Whether some name of `namespace` may get `permission`.
    pub fn allows_in(&self, permission: Permission, namespace: &str) -> bool {
        self.permissions.contains(&permission) && self.reaches_namespace(namespace)
    }

    /// Whether this grant gives `permission` on every namespace and name.
    pub fn is_universal(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
            && self.namespaces.iter().any(|p| p == "*")
            && self.names.iter().any(|p| p == "*")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GrantError(pub String);

/// Which kind of name a pattern stands for; a template's filled-in values must be one.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Namespace,
    Name,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Name => "name",
        }
    }
    fn valid(self, value: &str) -> bool {
        match self {
            Kind::Namespace => Namespace::parse(value).is_ok(),
            Kind::Name => Name::parse(value).is_ok(),
        }
    }
}

/// A pattern as configured: a glob over name characters, maybe with `${claim}`s.
#[derive(Clone, Debug)]
struct Pattern {
    template: claims::Template,
    kind: Kind,
}

impl Pattern {
    fn parse(s: &str, kind: Kind, templates_allowed: bool) -> Result<Pattern, GrantError> {
        let template = claims::Template::parse(s)
            .map_err(|e| GrantError(format!("{} pattern {s:?}: {e}", kind.word())))?;
        if template.claim_names().next().is_some() && !templates_allowed {
            return Err(GrantError(format!(
                "{} pattern {s:?}: `${{claim}}` templates need a token's claims; \
                 only [[auth.rules]] may use them",
                kind.word()
            )));
        }
        // The literal parts hold what a name may hold, plus the glob characters.
        if let Some(c) = template
            .literals()
            .flat_map(str::chars)
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?')))
        {
            return Err(GrantError(format!(
                "{} pattern {s:?}: {c:?} can never match a {}",
                kind.word(),
                kind.word()
            )));
        }
        if s.is_empty() {
            return Err(GrantError(format!("an empty {} pattern", kind.word())));
        }
        Ok(Pattern { template, kind })
    }

    /// The glob for these claims, or `None` when a claim is absent or its value is not
    /// a valid name (so it can neither widen the pattern with `*` nor escape it).
    fn fill(&self, claims: &Map<String, Value>) -> Option<String> {
        self.template
            .render_with(claims, |value| self.kind.valid(value))
            .ok()
    }
}

/// A grant as configured, checked: patterns parsed, permissions known.
#[derive(Clone, Debug)]
pub struct GrantTemplate {
    namespaces: Vec<Pattern>,
    names: Vec<Pattern>,
    permissions: BTreeSet<Permission>,
}

impl GrantTemplate {
    pub fn parse(
        namespaces: &[String],
        names: &[String],
        permissions: &[Permission],
        templates_allowed: bool,
    ) -> Result<Self, GrantError> {
        if namespaces.is_empty() || names.is_empty() || permissions.is_empty() {
            return Err(GrantError(
                "a grant needs at least one namespace, one name and one permission".into(),
            ));
        }
        let parse = |list: &[String], kind| {
            list.iter()
                .map(|s| Pattern::parse(s, kind, templates_allowed))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(GrantTemplate {
            namespaces: parse(namespaces, Kind::Namespace)?,
            names: parse(names, Kind::Name)?,
            permissions: permissions.iter().copied().collect(),
        })
    }

    pub fn permissions(&self) -> &BTreeSet<Permission> {
        &self.permissions
    }

    /// The grant for these claims. Patterns that cannot be filled are dropped; a grant
    /// left with no namespace or no name pattern grants nothing (`None`).
    pub fn fill(&self, claims: &Map<String, Value>) -> Option<Grant> {
        let fill = |list: &[Pattern]| {
            list.iter()
                .filter_map(|p| p.fill(claims))
                .collect::<Vec<_>>()
        };
        let (namespaces, names) = (fill(&self.namespaces), fill(&self.names));
        if namespaces.is_empty() || names.is_empty() {
            return None;
        }
        Some(Grant {
            namespaces,
            names,
            permissions: self.permissions.clone(),
        })
    }
}

/// A claim rule, checked.
#[derive(Clone, Debug)]
pub struct Rule {
    issuer: Option<String>,
    claims: BTreeMap<String, Matcher>,
    grant: GrantTemplate,
}

impl Rule {
    pub fn parse(config: &RuleConfig) -> Result<Self, GrantError> {
        if config.claims.is_empty() {
            return Err(GrantError(
                "a rule needs at least one claim to match (deny by default)".into(),
            ));
        }
        Ok(Rule {
            issuer: config.issuer.clone(),
            claims: config.claims.clone(),
            grant: GrantTemplate::parse(
                &config.namespaces,
                &config.names,
                &config.permissions,
                true,
            )?,
        })
    }

    /// The grant of this rule for a verified token, when the rule matches it.
    pub fn grant_for(&self, issuer: &str, token_claims: &Map<String, Value>) -> Option<Grant> {
        if self.issuer.as_deref().is_some_and(|i| i != issuer) {
            return None;
        }
        if !claims::rule_matches(&self.claims, token_claims) {
            return None;
        }
        self.grant.fill(token_claims)
    }
}

#[cfg(test)]
mod tests;
