use super::*;
use serde_json::json;

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn rule(toml_text: &str) -> Rule {
    let config: RuleConfig = toml::from_str(toml_text).unwrap();
    Rule::parse(&config).unwrap()
}

#[test]
fn a_rule_grants_only_when_every_claim_matches_and_only_its_issuer() {
    let r = rule(
        r#"
        issuer = "https://issuer.test"
        claims = { repository = { glob = "acme/*" }, ref = "refs/heads/main" }
        namespaces = ["acme"]
        permissions = ["read", "write", "complete"]
        "#,
    );
    let main = claims(json!({"repository": "acme/app", "ref": "refs/heads/main"}));
    let g = r.grant_for("https://issuer.test", &main).unwrap();
    assert!(g.allows(Permission::Write, "acme", "anything"));
    assert!(!g.allows(Permission::Write, "acme-pr", "anything"));
    assert!(!g.allows(Permission::Delete, "acme", "anything"));
    let pr = claims(json!({"repository": "acme/app", "ref": "refs/pull/7/merge"}));
    assert!(r.grant_for("https://issuer.test", &pr).is_none());
    let other = claims(json!({"repository": "evil/app", "ref": "refs/heads/main"}));
    assert!(r.grant_for("https://issuer.test", &other).is_none());
    assert!(r.grant_for("https://other.test", &main).is_none());
}

#[test]
fn templates_fill_from_claims_and_refuse_values_that_are_not_names() {
    let r = rule(
        r#"
        claims = { repository_owner = { glob = "*" } }
        namespaces = ["ci-${repository_owner}"]
        names = ["${repository_name}"]
        permissions = ["write"]
        "#,
    );
    let ok = claims(json!({"repository_owner": "acme", "repository_name": "app"}));
    let g = r.grant_for("i", &ok).unwrap();
    assert_eq!(g.namespaces, vec!["ci-acme".to_owned()]);
    assert!(g.allows(Permission::Write, "ci-acme", "app"));
    assert!(!g.allows(Permission::Write, "ci-acme", "app2"));
    // A claim value with glob characters, a slash or nothing at all cannot widen or
    // escape the pattern: the rule grants nothing.
    for owner in ["*", "a*", "a/b", "", "?"] {
        let c = claims(json!({"repository_owner": owner, "repository_name": "app"}));
        assert!(r.grant_for("i", &c).is_none(), "{owner:?}");
    }
    let missing = claims(json!({"repository_owner": "acme"}));
    assert!(r.grant_for("i", &missing).is_none());
}

#[test]
fn patterns_and_rules_that_cannot_mean_anything_are_refused() {
    for (text, words) in [
        (
            r#"claims = {}
            namespaces = ["a"]
            permissions = ["read"]"#,
            "at least one claim",
        ),
        (
            r#"claims = { sub = "x" }
            namespaces = ["a/b"]
            permissions = ["read"]"#,
            "never match",
        ),
        (
            r#"claims = { sub = "x" }
            namespaces = []
            permissions = ["read"]"#,
            "at least one namespace",
        ),
    ] {
        let config: RuleConfig = toml::from_str(text).unwrap();
        let e = Rule::parse(&config).unwrap_err().0;
        assert!(e.contains(words), "{e}");
    }
    let unknown: Result<RuleConfig, _> = toml::from_str(
        r#"claims = { sub = "x" }
        namespaces = ["a"]
        permissions = ["superuser"]"#,
    );
    assert!(unknown.is_err());
}

#[test]
fn globs_over_names() {
    let g = GrantTemplate::parse(
        &["team-*".into(), "shared".into()],
        &["app?".into()],
        &[Permission::Read],
        false,
    )
    .unwrap()
    .fill(&Map::new())
    .unwrap();
    assert!(g.allows(Permission::Read, "team-a", "app1"));
    assert!(g.allows(Permission::Read, "shared", "appX"));
    assert!(!g.allows(Permission::Read, "team", "app1"));
    assert!(!g.allows(Permission::Read, "shared", "app12"));
    assert!(g.allows_in(Permission::Read, "team-b"));
    assert!(!g.is_universal(Permission::Read));
}
