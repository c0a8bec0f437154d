use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "ISS" => Some("https://issuer.example".into()),
        "BUCKET" => Some("artifacts".into()),
        _ => None,
    }
}

/// A service with one issuer and one Garage driver `g`, without roles: the start of the
/// configurations that the tests of single sections (`[admin]`, `[break_glass]`)
/// complete.
pub(super) const HEAD: &str = r#"
    database_url = "sqlite://unused.db"
    [audit]
    path = "/unused"
    [[issuers]]
    issuer = "https://issuer.test"
    audience = "vend-test"
    [drivers.g]
    kind = "garage"
    admin_url = "http://127.0.0.1:1"
    admin_token_ref = "env:UNUSED"
"#;

const BASE: &str = r#"
    database_url = "sqlite://x.db"
    [audit]
    path = "${env:AUDIT:-/tmp/audit.log}"
    [[issuers]]
    issuer = "${env:ISS}"
    audience = "vend"
    [drivers.g]
    kind = "garage"
    admin_url = "http://127.0.0.1:3903"
    admin_token_ref = "env:T"
    [[roles]]
    name = "ci-writer"
    driver = "g"
    bucket = "${env:BUCKET}"
    actions = ["read", "write", "list", "delete"]
    rules = [{ groups = { contains = "w" } }]
"#;

#[test]
fn env_values_are_substituted_and_defaults_apply() {
    let c = VendConfig::parse(BASE, Path::new("t.toml"), &env).unwrap();
    assert_eq!(c.issuers[0].issuer, "https://issuer.example");
    assert_eq!(c.roles[0].bucket, "artifacts");
    assert_eq!(c.audit.path, PathBuf::from("/tmp/audit.log"));
}

#[test]
fn issuers_on_plain_http_elsewhere_than_loopback_need_allow_insecure_http() {
    fn with(iss: &'static str) -> impl Fn(&str) -> Option<String> {
        move |name: &str| match name {
            "ISS" => Some(iss.to_owned()),
            other => env(other),
        }
    }
    let e =
        VendConfig::parse(BASE, Path::new("t.toml"), &with("http://issuer.example")).unwrap_err();
    assert!(e.to_string().contains("allow_insecure_http"), "{e}");
    assert!(VendConfig::parse(BASE, Path::new("t.toml"), &with("http://127.0.0.1:9")).is_ok());
    let allowed = BASE.replace(
        "audience = \"vend\"",
        "audience = \"vend\"\nallow_insecure_http = true",
    );
    let c = VendConfig::parse(
        &allowed,
        Path::new("t.toml"),
        &with("http://issuer.example"),
    )
    .unwrap();
    assert!(c.issuers[0].allow_insecure_http);
    let jwks = BASE.replace(
        "audience = \"vend\"",
        "audience = \"vend\"\njwks_url = \"http://keys.example/jwks\"",
    );
    assert!(VendConfig::parse(&jwks, Path::new("t.toml"), &env).is_err());
}

#[test]
fn an_unset_variable_is_named() {
    let e = VendConfig::parse(BASE, Path::new("t.toml"), &|_| None).unwrap_err();
    assert!(e.to_string().contains("ISS"), "{e}");
    assert!(e.to_string().contains("issuers[0].issuer"), "{e}");
}

#[test]
fn garage_roles_with_prefixes_need_bucket_wide() {
    let text = BASE.replace(
        "actions = [\"read\", \"write\", \"list\", \"delete\"]",
        "actions = [\"read\", \"list\"]\n prefixes = [\"ci/${sub}/\"]",
    );
    let e = VendConfig::parse(&text, Path::new("t.toml"), &env).unwrap_err();
    assert!(e.to_string().contains("per bucket"), "{e}");
    let ok = text.replace("prefixes =", "bucket_wide = true\n prefixes =");
    VendConfig::parse(&ok, Path::new("t.toml"), &env).unwrap();
}

#[test]
fn garage_roles_take_actions_in_the_pairs_garage_grants() {
    let text = BASE.replace(
        "actions = [\"read\", \"write\", \"list\", \"delete\"]",
        "actions = [\"read\", \"delete\"]",
    );
    let e = VendConfig::parse(&text, Path::new("t.toml"), &env).unwrap_err();
    assert!(e.to_string().contains("read with list"), "{e}");
}

#[test]
fn durations_are_bounded() {
    let text = BASE.replace("rules =", "min_duration_secs = 60\n rules =");
    let e = VendConfig::parse(&text, Path::new("t.toml"), &env).unwrap_err();
    assert!(e.to_string().contains("durations"), "{e}");
}

/// Without the test hook, no environment variable lowers the floor; this crate's
/// own tests are built without it.
#[cfg(not(feature = "test-lease-floor"))]
#[test]
fn no_variable_lowers_the_lease_floor() {
    let text = BASE.replace("rules =", "min_duration_secs = 5\n rules =");
    let hook = |name: &str| match name {
        "ARTIFACTSTORE_TEST_HOOK_LEASE_FLOOR_SECS" | "ARTIFACTSTORE_TEST_MIN_LEASE_SECS" => {
            Some("1".to_owned())
        }
        other => env(other),
    };
    let e = VendConfig::parse(&text, Path::new("t.toml"), &hook).unwrap_err();
    assert!(e.to_string().contains("900 <= min (5)"), "{e}");
}

#[test]
fn rate_limits_and_edge_keys_parse_with_their_defaults() {
    let c = VendConfig::parse(BASE, Path::new("t.toml"), &env).unwrap();
    assert_eq!(c.rate_limits.per_client_burst, 200);
    assert_eq!(c.rate_limits.audit_window_secs, 60);
    assert!(c.allowed_hosts.is_none() && c.cors_allowed_origins.is_empty());
    let text = format!(
        "allowed_hosts = [\"vend.internal\"]\ncors_allowed_origins = [\"https://dash.example\"]\n{BASE}\n[rate_limits]\nper_subject_per_sec = 0\nper_client_burst = 10\n"
    );
    let c = VendConfig::parse(&text, Path::new("t.toml"), &env).unwrap();
    assert_eq!(
        c.allowed_hosts.as_deref(),
        Some(&["vend.internal".to_owned()][..])
    );
    assert_eq!(c.cors_allowed_origins, ["https://dash.example"]);
    assert_eq!(c.rate_limits.per_subject_per_sec, 0.0);
    assert_eq!(c.rate_limits.per_client_burst, 10);
    for bad in [
        "per_client_per_sec = -1",
        "per_client_burst = 0",
        "audit_window_secs = 0",
        "max_tracked = 0",
    ] {
        let text = format!("{BASE}\n[rate_limits]\n{bad}\n");
        let e = VendConfig::parse(&text, Path::new("t.toml"), &env).unwrap_err();
        assert!(e.to_string().contains("rate_limits"), "{bad}: {e}");
    }
}

#[test]
fn hmac_algorithms_cannot_be_allowed() {
    let text = BASE.replacen("[audit]", "[token]\nalgorithms = [\"HS256\"]\n[audit]", 1);
    let e = VendConfig::parse(&text, Path::new("t.toml"), &env).unwrap_err();
    assert!(e.to_string().contains("HS256"), "{e}");
}

#[test]
fn listener_limits_have_defaults_and_zero_is_refused() {
    let c = VendConfig::parse(BASE, Path::new("t.toml"), &env).unwrap();
    assert_eq!(c.listener_limits().unwrap(), Limits::default());
    let text = format!(
        "header_read_timeout_secs = 2\nkeep_alive_timeout_secs = 3\nmax_connections = 4\n{BASE}"
    );
    let c = VendConfig::parse(&text, Path::new("t.toml"), &env).unwrap();
    assert_eq!(c.listener_limits().unwrap(), Limits::new(2, 3, 4).unwrap());
    for key in [
        "header_read_timeout_secs",
        "keep_alive_timeout_secs",
        "max_connections",
    ] {
        let text = format!("{key} = 0\n{BASE}");
        let e = VendConfig::parse(&text, Path::new("t.toml"), &env).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("{key} = 0 is out of range")),
            "{e}"
        );
    }
}

#[test]
fn crash_reconciliation_defaults_to_a_minute_and_never_to_zero() {
    let c = VendConfig::parse(BASE, Path::new("t.toml"), &env).unwrap();
    assert_eq!(c.reaper.pending_timeout_secs, 60);
    assert!(!c.reaper.delete_unknown_keys);
    let zero = format!("{BASE}\n[reaper]\npending_timeout_secs = 0\n");
    let err = VendConfig::parse(&zero, Path::new("t.toml"), &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("reaper.pending_timeout_secs"), "{err}");
}
