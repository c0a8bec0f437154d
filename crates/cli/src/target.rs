//! Parsing of `NS/NAME@VERSION/PATH` arguments.

use crate::exit::{self, fail};

#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub path: Option<String>,
}

pub fn parse(s: &str) -> anyhow::Result<Target> {
    let bad = || {
        fail(
            exit::USAGE,
            format!("{s:?}: expected NS, NS/NAME, NS/NAME@VERSION or NS/NAME@VERSION/PATH"),
        )
    };
    let (namespace, rest) = match s.split_once('/') {
        Some((ns, rest)) => (ns, Some(rest)),
        None => (s, None),
    };
    if namespace.is_empty() || namespace.contains('@') {
        return Err(bad());
    }
    let mut t = Target {
        namespace: namespace.to_owned(),
        name: None,
        version: None,
        path: None,
    };
    if let Some(rest) = rest {
        let (name, after) = match rest.split_once('@') {
            Some((n, a)) => (n, Some(a)),
            None => (rest, None),
        };
        if name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        t.name = Some(name.to_owned());
        if let Some(after) = after {
            let (version, path) = match after.split_once('/') {
                Some((v, p)) => (v, Some(p)),
                None => (after, None),
            };
            if version.is_empty() || path.is_some_and(str::is_empty) {
                return Err(bad());
            }
            t.version = Some(version.to_owned());
            t.path = path.map(str::to_owned);
        }
    }
    Ok(t)
}

impl Target {
    /// Requires `NS/NAME@VERSION` exactly (no path).
    pub fn version_only(s: &str) -> anyhow::Result<(String, String, String)> {
        match parse(s)? {
            Target {
                namespace,
                name: Some(name),
                version: Some(version),
                path: None,
            } => Ok((namespace, name, version)),
            _ => Err(fail(
                exit::USAGE,
                format!("{s:?}: expected NS/NAME@VERSION"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse("ci/tck@2026-11-29.1/reports/summary.md").unwrap();
        assert_eq!(t.namespace, "ci");
        assert_eq!(t.name.as_deref(), Some("tck"));
        assert_eq!(t.version.as_deref(), Some("2026-11-29.1"));
        assert_eq!(t.path.as_deref(), Some("reports/summary.md"));
        assert_eq!(parse("ci").unwrap().name, None);
        assert_eq!(parse("ci/tck").unwrap().version, None);
        assert!(parse("ci/tck@").is_err());
        assert!(parse("ci/tck@1/").is_err());
        assert!(parse("/x").is_err());
        assert_eq!(
            Target::version_only("a/b@1").unwrap(),
            ("a".into(), "b".into(), "1".into())
        );
        assert!(Target::version_only("a/b@1/p").is_err());
    }
}
