//! The verifier against tokens signed here, on a manual clock.

use artifactstore_model::{ManualClock, Timestamp};
use base64::Engine as _;
use serde_json::json;

use super::*;

const NOW: i64 = 1_796_169_600;

/// One signing key shared by every issuer of a test, its public half installed as
/// each issuer's key set.
struct Signer {
    key: jsonwebtoken::EncodingKey,
    jwks: Value,
}

fn signer() -> Signer {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public.as_ref());
    Signer {
        key: jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwks: json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": x}]}),
    }
}

impl Signer {
    fn token(&self, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }

    fn verifier(&self, issuers: &[IssuerConfig]) -> TokenVerifier {
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_secs(NOW)));
        let verifier = TokenVerifier::new(
            issuers,
            TokenConfig::default(),
            reqwest::Client::new(),
            clock,
        );
        for issuer in &verifier.issuers {
            issuer.install_jwks(&self.jwks);
        }
        verifier
    }
}

#[tokio::test]
async fn a_good_token_verifies_and_each_check_has_its_reason() {
    let s = signer();
    let v = s.verifier(&[IssuerConfig::new("https://a.test", "aud-a")]);
    let claims = json!({"iss": "https://a.test", "aud": ["x", "aud-a"], "sub": "job",
                        "iat": NOW, "exp": NOW + 600});
    let ok = v.verify(&s.token(claims.clone())).await.unwrap();
    assert_eq!(
        (
            ok.issuer.as_str(),
            ok.audience.as_str(),
            ok.subject.as_str()
        ),
        ("https://a.test", "aud-a", "job")
    );
    assert_eq!(ok.expires_at, Timestamp::from_unix_secs(NOW + 600));

    let refused = |changes: Value| {
        let mut c = claims.clone();
        for (k, val) in changes.as_object().unwrap() {
            c[k] = val.clone();
        }
        let token = s.token(c);
        let v = &v;
        async move { v.verify(&token).await.unwrap_err().reason }
    };
    assert_eq!(
        refused(json!({"exp": NOW - 61})).await,
        TokenReason::TokenExpired
    );
    assert_eq!(
        refused(json!({"nbf": NOW + 61})).await,
        TokenReason::TokenNotYetValid
    );
    assert_eq!(
        refused(json!({"iss": "https://b.test"})).await,
        TokenReason::IssuerUntrusted
    );
    assert_eq!(
        refused(json!({"aud": "aud-b"})).await,
        TokenReason::AudienceMismatch
    );
    assert_eq!(
        refused(json!({"sub": null})).await,
        TokenReason::ClaimMissing
    );
    let empty = v.verify("").await.unwrap_err();
    assert_eq!(empty.reason, TokenReason::RequestInvalid);
    let large = v.verify(&"a".repeat(16 * 1024 + 1)).await.unwrap_err();
    assert_eq!(large.reason, TokenReason::TokenTooLarge);
    let token = s.token(claims);
    // One character of the signature changed, well inside it.
    let at = token.rfind('.').unwrap() + 10;
    let swap = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
    let bad = v.verify(&forged).await.unwrap_err();
    assert_eq!(bad.reason, TokenReason::TokenInvalid);
    assert!(!bad.message.contains(&token[..20]), "{}", bad.message);
}

/// An issuer's own leeway and required claims replace the token settings' for its
/// tokens, and only for its tokens.
#[tokio::test]
async fn issuer_overrides_replace_the_token_settings_for_that_issuer() {
    let s = signer();
    let strict = IssuerConfig {
        leeway_secs: Some(0),
        required_claims: Some(vec!["sub".into(), "repository".into()]),
        ..IssuerConfig::new("https://strict.test", "aud")
    };
    let lax = IssuerConfig {
        required_claims: Some(vec![]),
        ..IssuerConfig::new("https://lax.test", "aud")
    };
    let plain = IssuerConfig::new("https://plain.test", "aud");
    let v = s.verifier(&[strict, lax, plain]);
    let token = |iss: &str, exp: i64, extra: Value| {
        let mut c = json!({"iss": iss, "aud": "aud", "exp": exp});
        for (k, val) in extra.as_object().unwrap() {
            c[k] = val.clone();
        }
        s.token(c)
    };
    let sub = json!({"sub": "job"});
    let both = json!({"sub": "job", "repository": "acme/app"});

    // Expired 30 s ago: within the default leeway of 60 s, beyond the strict 0.
    let late = NOW - 30;
    assert!(
        v.verify(&token("https://plain.test", late, sub.clone()))
            .await
            .is_ok()
    );
    let e = v
        .verify(&token("https://strict.test", late, both.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.reason, TokenReason::TokenExpired);

    // The strict issuer requires `repository` as well as `sub`.
    let fresh = NOW + 600;
    let e = v
        .verify(&token("https://strict.test", fresh, sub.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.reason, TokenReason::ClaimMissing);
    assert!(e.message.contains("repository"), "{}", e.message);
    assert!(
        v.verify(&token("https://strict.test", fresh, both))
            .await
            .is_ok()
    );

    // The lax issuer requires nothing beyond iss, aud and exp; the others still `sub`.
    assert!(
        v.verify(&token("https://lax.test", fresh, json!({})))
            .await
            .is_ok()
    );
    let e = v
        .verify(&token("https://plain.test", fresh, json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.reason, TokenReason::ClaimMissing);
}

#[test]
fn issuer_overrides_are_optional_in_configuration() {
    let plain: IssuerConfig =
        serde_json::from_value(json!({"issuer": "https://a.test", "audience": "a"})).unwrap();
    assert_eq!((plain.leeway_secs, plain.required_claims), (None, None));
    let set: IssuerConfig = serde_json::from_value(json!({
        "issuer": "https://a.test", "audience": "a",
        "leeway_secs": 5, "required_claims": ["sub", "repository"]
    }))
    .unwrap();
    assert_eq!(set.leeway_secs, Some(5));
    assert_eq!(
        set.required_claims,
        Some(vec!["sub".to_owned(), "repository".to_owned()])
    );
}
