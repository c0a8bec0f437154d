use super::*;
use serde_json::json;

#[test]
fn symmetric_and_mismatched_keys_are_never_loaded() {
    let doc = json!({"keys": [
        {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "r", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
        {"kty": "OKP", "kid": "e", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "OKP", "kid": "enc", "use": "enc", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    ]});
    let set = parse_jwks(&doc).unwrap();
    assert_eq!(set.by_kid.keys().collect::<Vec<_>>(), vec!["e"]);
    assert_eq!(set.by_kid["e"].alg, Algorithm::EdDSA);
}

#[test]
fn key_sets_are_bounded() {
    let key =
        json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    let keys: Vec<Value> = (0..500)
        .map(|i| {
            let mut k = key.clone();
            k["kid"] = json!(format!("k{i}"));
            k
        })
        .collect();
    let set = parse_jwks(&json!({ "keys": keys })).unwrap();
    assert_eq!(set.by_kid.len(), MAX_KEYS);
}

#[test]
fn keys_come_over_https_or_from_loopback_or_where_allowed() {
    assert!(check_fetch_url("https://token.actions.githubusercontent.com", false).is_ok());
    assert!(check_fetch_url("http://127.0.0.1:8080/jwks", false).is_ok());
    assert!(check_fetch_url("http://[::1]:8080", false).is_ok());
    assert!(check_fetch_url("http://localhost:3000", false).is_ok());
    let e = check_fetch_url("http://issuer.example/jwks", false).unwrap_err();
    assert!(e.contains("allow_insecure_http"), "{e}");
    assert!(check_fetch_url("http://issuer.example/jwks", true).is_ok());
    assert!(check_fetch_url("http://127.0.0.1.evil.example", false).is_err());
    assert!(check_fetch_url("ftp://issuer.example", true).is_err());
}

/// A key set behind a redirect is not fetched: the redirect could lead anywhere.
#[tokio::test]
async fn redirects_are_not_followed_to_keys() {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/jwks",
            get(|| async { axum::response::Redirect::temporary("/real") }),
        )
        .route(
            "/real",
            get(|| async { axum::Json(serde_json::json!({"keys": []})) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = crate::config::IssuerConfig {
        jwks_url: Some(format!("{base}/jwks")),
        ..crate::config::IssuerConfig::new("https://issuer.test", "a")
    };
    let keys = super::IssuerKeys::new(&config);
    let http = super::http_client().unwrap();
    let err = keys.fetch_keys(&http).await.err().expect("refused");
    assert!(err.contains("HTTP 307"), "{err}");
    // The same document without the redirect loads.
    let direct = super::IssuerKeys::new(&crate::config::IssuerConfig {
        jwks_url: Some(format!("{base}/real")),
        ..config
    });
    assert!(direct.fetch_keys(&http).await.is_ok());
}
