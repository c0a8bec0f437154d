//! `[admin]`: who may call the admin routes — the holder of the admin token, and
//! callers whose verified OIDC token matches one of `rules`.

use artifactstore_oidc::claims::Matcher;

use super::{AdminConfig, ConfigError};

/// Refuses `[admin] rules` that can never match: an empty rule, or a claim matched by
/// `{}` (no operator). Either would read as "admins are configured" while letting no
/// one in — or, were the matcher ever read as "anything", everyone.
pub(super) fn check(admin: &AdminConfig) -> Result<(), ConfigError> {
    for (i, rule) in admin.rules.iter().enumerate() {
        if rule.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "admin.rules[{i}] names no claim: a rule needs at least one claim to match"
            )));
        }
        for (claim, matcher) in rule {
            if let Matcher::Op(op) = matcher
                && op.equals.is_none()
                && op.glob.is_none()
                && op.contains.is_none()
            {
                return Err(ConfigError::Invalid(format!(
                    "admin.rules[{i}].{claim}: a matcher needs `equals`, `glob` or `contains` \
                     (or a bare string); `{{}}` matches nothing"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::VendConfig;

    use crate::config::tests::HEAD;

    /// The roles these tests refer to.
    const ROLES: &str = r#"
        [[roles]]
        name = "r"
        driver = "g"
        bucket = "b"
        actions = ["read", "list"]
        rules = [{ groups = { contains = "readers" } }]
    "#;

    fn parse(admin: &str) -> Result<VendConfig, String> {
        VendConfig::parse(
            &format!("{HEAD}{ROLES}\n[admin]\n{admin}"),
            Path::new("t.toml"),
            &|_| None,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn admin_rules_are_parsed_in_the_role_rule_language() {
        let c = parse(
            r#"rules = [{ groups = { contains = "vend-admins" } }, { sub = "ops-bot", iss = { glob = "https://*" } }]"#,
        )
        .unwrap();
        assert_eq!(c.admin.rules.len(), 2);
        assert!(c.admin.token_ref.is_none(), "rules alone are enough");
        let both = parse("token_ref = \"env:T\"\nrules = [{ sub = \"ops-bot\" }]").unwrap();
        assert!(both.admin.token_ref.is_some() && both.admin.rules.len() == 1);
    }

    #[test]
    fn admin_rules_that_can_never_match_are_refused_at_load() {
        let e = parse("rules = [{}]").unwrap_err();
        assert!(e.contains("admin.rules[0] names no claim"), "{e}");
        let e = parse("rules = [{ sub = \"x\" }, { groups = {} }]").unwrap_err();
        assert!(e.contains("admin.rules[1].groups"), "{e}");
        let e = parse("rules = [{ groups = { contain = \"typo\" } }]").unwrap_err();
        assert!(
            e.contains("t.toml"),
            "an unknown operator is a parse error: {e}"
        );
    }
}
