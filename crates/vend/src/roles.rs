//! Roles: which tokens a role applies to (claim rules) and what it grants (bucket,
//! prefixes templated from claims, actions).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a credential may do, in storage terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Write,
    List,
    Delete,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::List, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::List => "list",
            Action::Delete => "delete",
        }
    }
}

/// How one claim is matched. A bare string is an exact match.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Matcher {
    Exact(String),
    Op(MatchOp),
}

#[derive(Clone, Debug, Deserialize)]
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
pub fn rule_matches(
    rule: &std::collections::BTreeMap<String, Matcher>,
    claims: &Map<String, Value>,
) -> bool {
    !rule.is_empty() && rule.iter().all(|(name, m)| m.matches(claims.get(name)))
}

/// `*` matches any run of characters (including none), `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
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

/// A key prefix with `${claim}` placeholders, e.g. `ci/${sub}/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Claim(String),
}

/// Why a prefix could not be rendered for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("claim {0:?} is missing or not a string")]
    Missing(String),
    #[error(
        "claim {0:?} holds a value that cannot go into a key prefix (allowed: letters, digits, \
         . _ - @ : + =, at most 128 characters, not . or ..)"
    )]
    Unsafe(String),
}

impl PrefixTemplate {
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.ends_with('/') {
            return Err("must end with `/` so that it cannot match sibling prefixes".into());
        }
        if s.starts_with('/') {
            return Err("must not start with `/`".into());
        }
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
        for part in &parts {
            if let Part::Literal(l) = part
                && (l.contains('*')
                    || l.contains('?')
                    || l.split('/').any(|seg| seg == ".." || seg == "."))
            {
                return Err("literal parts may not contain `*`, `?`, `.` or `..` segments".into());
            }
        }
        Ok(PrefixTemplate { parts })
    }

    /// Renders the prefix for `claims`. A substituted value must be one safe path
    /// segment, so no claim can widen the prefix (`*`, `..`, `/` are refused).
    pub fn render(&self, claims: &Map<String, Value>) -> Result<String, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Claim(name) => {
                    let value = claims
                        .get(name)
                        .and_then(Value::as_str)
                        .ok_or_else(|| RenderError::Missing(name.clone()))?;
                    if !is_safe_segment(value) {
                        return Err(RenderError::Unsafe(name.clone()));
                    }
                    out.push_str(value);
                }
            }
        }
        Ok(out)
    }
}

fn is_safe_segment(v: &str) -> bool {
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
}
