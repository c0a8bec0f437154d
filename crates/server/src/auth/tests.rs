use super::*;
use artifactstore_model::{ManualClock, Timestamp};
use axum::http::{HeaderValue, StatusCode};

fn auth(toml_text: &str, clock: Arc<dyn Clock>) -> Auth {
    let config: AuthConfig = toml::from_str(toml_text).unwrap();
    Auth::new(&config, reqwest::Client::new(), clock).unwrap()
}

fn bearer(t: &str) -> axum::http::HeaderMap {
    authorization(&format!("Bearer {t}"))
}

fn authorization(v: &str) -> axum::http::HeaderMap {
    let mut h = axum::http::HeaderMap::new();
    h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
    h
}

#[tokio::test]
async fn without_auth_everyone_may_do_everything() {
    let caller = Auth::off().caller(&Default::default()).await.unwrap();
    assert_eq!(caller.who, Who::Open);
    assert!(caller.allows(Permission::Delete, "any", "thing"));
    assert!(caller.reads_everything());
}

#[tokio::test]
async fn anonymous_reads_its_namespaces_and_nothing_else() {
    let a = auth(
        r#"anonymous = [{ namespaces = ["public"], permissions = ["read"] }]"#,
        artifactstore_model::clock::system_clock(),
    );
    let anon = a.caller(&Default::default()).await.unwrap();
    assert_eq!(anon.who, Who::Anonymous);
    assert!(anon.allows(Permission::Read, "public", "x"));
    assert!(!anon.allows(Permission::Read, "private", "x"));
    assert!(!anon.reads_everything());
    let e = anon.require(Permission::Write, "public", "x").unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED, "no token: 401, not 403");
    let e = anon.require(Permission::Read, "private", "x").unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);

    let no_anonymous = auth("", artifactstore_model::clock::system_clock());
    let nobody = no_anonymous.caller(&Default::default()).await.unwrap();
    assert!(!nobody.allows(Permission::Read, "public", "x"));
    assert!(nobody.require_anywhere(Permission::Read).is_err());
}

#[test]
fn anonymous_may_only_read() {
    let config: AuthConfig =
        toml::from_str(r#"anonymous = [{ namespaces = ["*"], permissions = ["read", "write"] }]"#)
            .unwrap();
    let e = Auth::new(
        &config,
        reqwest::Client::new(),
        artifactstore_model::clock::system_clock(),
    )
    .err()
    .unwrap();
    assert!(e.0.contains("may only read"), "{}", e.0);
}

#[tokio::test]
async fn static_tokens_get_their_grant_until_they_expire() {
    let (token, hash) = new_token();
    let clock = Arc::new(ManualClock::new(
        Timestamp::parse_rfc3339("2026-06-01T00:00:00Z").unwrap(),
    ));
    let a = auth(
        &format!(
            r#"
            [[tokens]]
            name = "release-bot"
            sha256 = "{hash}"
            namespaces = ["releases"]
            permissions = ["read", "write", "complete"]
            expires = "2026-07-01T00:00:00Z"
            "#
        ),
        clock.clone(),
    );
    let c = a.caller(&bearer(token.expose())).await.unwrap();
    assert_eq!(c.who, Who::Token("release-bot".into()));
    assert!(c.allows(Permission::Complete, "releases", "app"));
    assert!(!c.allows(Permission::Delete, "releases", "app"));
    let e = c.require(Permission::Write, "other", "app").unwrap_err();
    assert_eq!(e.status, StatusCode::FORBIDDEN, "a known caller: 403");
    assert!(
        e.message.contains("`write`") && e.message.contains("other/app"),
        "{}",
        e.message
    );

    let (unknown, _) = new_token();
    let e = a.caller(&bearer(unknown.expose())).await.unwrap_err();
    assert_eq!(
        (e.status, e.reason),
        (StatusCode::UNAUTHORIZED, Some("token_invalid"))
    );

    clock.set(Timestamp::parse_rfc3339("2026-07-01T00:00:00Z").unwrap());
    let e = a.caller(&bearer(token.expose())).await.unwrap_err();
    assert_eq!(
        (e.status, e.reason),
        (StatusCode::UNAUTHORIZED, Some("token_expired"))
    );
    assert!(!e.message.contains(token.expose()));
}

#[tokio::test]
async fn malformed_authorization_is_401_request_invalid() {
    let a = auth("", artifactstore_model::clock::system_clock());
    for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token"] {
        let e = a.caller(&authorization(bad)).await.unwrap_err();
        assert_eq!(
            (e.status, e.reason),
            (StatusCode::UNAUTHORIZED, Some("request_invalid")),
            "{bad}"
        );
    }
    // A JWT where no issuer is trusted.
    let e = a.caller(&bearer("a.b.c")).await.unwrap_err();
    assert_eq!(e.reason, Some("issuer_untrusted"));
    let mut two = bearer("a.b.c");
    two.append(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer x.y.z"),
    );
    let e = a.caller(&two).await.unwrap_err();
    assert_eq!(
        e.reason,
        Some("request_invalid"),
        "two Authorization headers"
    );
}

#[test]
fn a_rule_names_a_configured_issuer_and_must_name_one_among_several() {
    let with = |issuers: &str, rule_issuer: &str| {
        let config: AuthConfig = toml::from_str(&format!(
            "{issuers}\n[[rules]]\n{rule_issuer}\nclaims = {{ sub = \"x\" }}\nnamespaces = [\"a\"]\npermissions = [\"read\"]\n"
        ))
        .unwrap();
        Auth::new(
            &config,
            reqwest::Client::new(),
            artifactstore_model::clock::system_clock(),
        )
        .err()
        .map(|e| e.0)
    };
    let one = "[[issuers]]\nissuer = \"https://a\"\naudience = \"x\"\n";
    let two = format!("{one}[[issuers]]\nissuer = \"https://b\"\naudience = \"x\"\n");
    assert_eq!(with(one, ""), None);
    assert_eq!(with(&two, "issuer = \"https://b\""), None);
    assert!(
        with(one, "issuer = \"https://typo\"")
            .unwrap()
            .contains("not one of")
    );
    assert!(with(&two, "").unwrap().contains("name its `issuer`"));
}

#[test]
fn rules_without_an_issuer_are_refused() {
    let config: AuthConfig = toml::from_str(
        r#"
        [[rules]]
        claims = { sub = "x" }
        namespaces = ["a"]
        permissions = ["read"]
        "#,
    )
    .unwrap();
    let e = Auth::new(
        &config,
        reqwest::Client::new(),
        artifactstore_model::clock::system_clock(),
    )
    .err()
    .unwrap();
    assert!(e.0.contains("no [[auth.issuers]]"), "{}", e.0);
}
