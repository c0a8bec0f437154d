//! What users do with a verified token's claims: match them against rules
//! ([`Matcher`], [`rule_matches`]) and substitute them into `${claim}` templates
//! ([`Template`], [`PrefixTemplate`]) with every substituted value checked, so that no
//! claim can widen what it is substituted into.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// How one claim is matched. A bare string is an exact match.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Matcher {
    Exact(String),
    Op(MatchOp),
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchOp {
    /// The claim (a string) equals this.
    #[serde(default)]
    pub equals: Option<String>,
    /// The claim (a string) matches this glob: `*` any run of characters, `?` one.
    #[serde(default)]
    pub glob: Option<String>,
    /// The claim (an array of strings, or a string) contains this exact value.
    #[serde(default)]
    pub contains: Option<String>,
}

impl Matcher {
    /// Whether `claim` (absent: `None`) satisfies this matcher. Absent claims never do.
    pub fn matches(&self, claim: Option<&Value>) -> bool {
        let Some(claim) = claim else { return false };
        match self {
            Matcher::Exact(want) => claim.as_str() == Some(want),
            Matcher::Op(op) => {
                let mut any = false;
                if let Some(want) = &op.equals {
                    any = true;
                    if claim.as_str() != Some(want) {
                        return false;
                    }
                }
                if let Some(pattern) = &op.glob {
                    any = true;
                    if !claim.as_str().is_some_and(|s| glob_match(pattern, s)) {
                        return false;
                    }
                }
                if let Some(want) = &op.contains {
                    any = true;
                    let found = match claim {
                        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(want)),
                        Value::String(s) => s == want,
                        _ => false,
                    };
                    if !found {
                        return false;
                    }
                }
                // An empty `{}` matcher matches nothing: deny by default.
                any
            }
        }
    }
}

/// Whether a rule (claim name → matcher, all must hold) matches `claims`.
pub fn rule_matches(rule: &BTreeMap<String, Matcher>, claims: &Map<String, Value>) -> bool {
    !rule.is_empty() && rule.iter().all(|(name, m)| m.matches(claims.get(name)))
}

/// `*` matches any run of characters (including none), `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        // A `*` in the pattern is always a wildcard, also where the text holds a `*`.
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A string with `${claim}` placeholders, e.g. `${repository_owner}`. Parsing checks
/// only the placeholders; what a rendered string must look like is the user's rule,
/// applied to every substituted value ([`render_with`](Template::render_with)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Claim(String),
}

/// Why a template could not be rendered for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("claim {0:?} is missing or not a string")]
    Missing(String),
    #[error(
        "claim {0:?} holds a value that cannot go into a key prefix (allowed: letters, digits, \
         . _ - @ : + =, at most 128 characters, not . or ..)"
    )]
    Unsafe(String),
    /// A substituted value failed the check given to [`Template::render_with`].
    #[error("claim {0:?} holds a value that is not allowed here")]
    Refused(String),
}

impl Template {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            let literal = &rest[..start];
            if !literal.is_empty() {
                parts.push(Part::Literal(literal.to_owned()));
            }
            let Some(end) = rest[start..].find('}') else {
                return Err("unterminated `${`".into());
            };
            let name = &rest[start + 2..start + end];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!("bad claim name {name:?}"));
            }
            parts.push(Part::Claim(name.to_owned()));
            rest = &rest[start + end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The claims the template substitutes, in order (repeats included).
    pub fn claim_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Claim(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The literal parts, between the placeholders.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Literal(l) => Some(l.as_str()),
            Part::Claim(_) => None,
        })
    }

    /// Renders the template for `claims`. Each substituted value (a string claim) must
    /// satisfy `check`, else [`RenderError::Refused`] names the claim; a claim that is
    /// absent or not a string is [`RenderError::Missing`].
    pub fn render_with(
        &self,
        claims: &Map<String, Value>,
        check: impl Fn(&str) -> bool,
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Claim(name) => {
                    let value = claims
                        .get(name)
                        .and_then(Value::as_str)
                        .ok_or_else(|| RenderError::Missing(name.clone()))?;
                    if !check(value) {
                        return Err(RenderError::Refused(name.clone()));
                    }
                    out.push_str(value);
                }
            }
        }
        Ok(out)
    }
}

/// A key prefix with `${claim}` placeholders, e.g. `ci/${sub}/`: a [`Template`] that
/// ends with `/`, has no wildcard or dot segment in its literal parts, and substitutes
/// only safe path segments ([`is_safe_segment`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixTemplate {
    template: Template,
}

impl PrefixTemplate {
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.ends_with('/') {
            return Err("must end with `/` so that it cannot match sibling prefixes".into());
        }
        if s.starts_with('/') {
            return Err("must not start with `/`".into());
        }
        let template = Template::parse(s)?;
        if template.literals().any(|l| {
            l.contains('*') || l.contains('?') || l.split('/').any(|seg| seg == ".." || seg == ".")
        }) {
            return Err("literal parts may not contain `*`, `?`, `.` or `..` segments".into());
        }
        Ok(PrefixTemplate { template })
    }

    /// Renders the prefix for `claims`. A substituted value must be one safe path
    /// segment, so no claim can widen the prefix (`*`, `..`, `/` are refused).
    pub fn render(&self, claims: &Map<String, Value>) -> Result<String, RenderError> {
        self.template
            .render_with(claims, is_safe_segment)
            .map_err(|e| match e {
                RenderError::Refused(name) => RenderError::Unsafe(name),
                other => other,
            })
    }
}

/// Whether `v` can stand as one segment of a key prefix: not empty, at most 128
/// characters of letters, digits and `. _ - @ : + =`, and not `.` or `..`.
pub fn is_safe_segment(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v != "."
        && v != ".."
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@:+=".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn globs() {
        assert!(glob_match("repo:acme/*", "repo:acme/app:ref:main"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("repo:acme/*", "repo:acmex/app"));
        assert!(glob_match("*b*b", "abxbb"));
        // A `*` of the pattern stays a wildcard where the text holds a `*`.
        assert!(glob_match("*b", "*ab"));
        assert!(glob_match("a*", "a*"));
    }

    #[test]
    fn matchers() {
        let c = claims(json!({"groups": ["a", "artifact-writers"], "sub": "repo:acme/x", "n": 3}));
        let contains: Matcher =
            serde_json::from_value(json!({"contains": "artifact-writers"})).unwrap();
        assert!(contains.matches(c.get("groups")));
        assert!(!contains.matches(c.get("missing")));
        let exact: Matcher = serde_json::from_value(json!("repo:acme/x")).unwrap();
        assert!(exact.matches(c.get("sub")));
        assert!(!exact.matches(c.get("n")));
        let glob: Matcher = serde_json::from_value(json!({"glob": "repo:acme/*"})).unwrap();
        assert!(glob.matches(c.get("sub")));
        // A glob never matches an array claim wholesale.
        let g2: Matcher = serde_json::from_value(json!({"glob": "*"})).unwrap();
        assert!(!g2.matches(c.get("groups")));
        let empty: Matcher = serde_json::from_value(json!({})).unwrap();
        assert!(!empty.matches(c.get("sub")));
    }

    #[test]
    fn claims_cannot_widen_a_prefix() {
        let t = PrefixTemplate::parse("ci/${sub}/").unwrap();
        assert_eq!(
            t.render(&claims(json!({"sub": "job-1"}))).unwrap(),
            "ci/job-1/"
        );
        for bad in ["../x", "*", "a/b", "..", ".", "", "a*", "x?y", "a b"] {
            assert_eq!(
                t.render(&claims(json!({ "sub": bad }))),
                Err(RenderError::Unsafe("sub".into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            t.render(&claims(json!({"sub": 5}))),
            Err(RenderError::Missing("sub".into()))
        );
    }

    #[test]
    fn templates_are_checked() {
        assert!(PrefixTemplate::parse("ci/${sub}").is_err());
        assert!(PrefixTemplate::parse("ci/*/").is_err());
        assert!(PrefixTemplate::parse("ci/../").is_err());
        assert!(PrefixTemplate::parse("/ci/").is_err());
        assert!(PrefixTemplate::parse("ci/${}/").is_err());
        assert!(PrefixTemplate::parse("ci/${sub/").is_err());
        assert!(PrefixTemplate::parse("reports/").is_ok());
    }

    /// Another user's rule for substituted values: the template itself stays free of
    /// prefix rules, and the check sees each value, never the literals.
    #[test]
    fn templates_render_with_the_users_check() {
        let t = Template::parse("${repository_owner}-${env}").unwrap();
        assert_eq!(
            t.claim_names().collect::<Vec<_>>(),
            vec!["repository_owner", "env"]
        );
        let lower = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_lowercase());
        let c = claims(json!({"repository_owner": "acme", "env": "prod"}));
        assert_eq!(t.render_with(&c, lower).unwrap(), "acme-prod");
        let c = claims(json!({"repository_owner": "Acme", "env": "prod"}));
        assert_eq!(
            t.render_with(&c, lower),
            Err(RenderError::Refused("repository_owner".into()))
        );
        let c = claims(json!({"repository_owner": "acme"}));
        assert_eq!(
            t.render_with(&c, lower),
            Err(RenderError::Missing("env".into()))
        );
        assert_eq!(
            Template::parse("plain").unwrap().render_with(&c, |_| false),
            Ok("plain".into())
        );
        assert!(Template::parse("${a").is_err());
        assert!(Template::parse("${a.b}").is_err());
    }
}
