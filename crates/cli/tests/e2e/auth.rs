//! `[auth]` on the real binary with the real test OIDC issuer: claim-gated grants, the
//! pull-request token that cannot touch the main namespace, token attacks refused with
//! their reason, tenants that never see each other's names, static tokens and
//! anonymous read, and the non-loopback rule.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::oidc::{Issuer, craft, hs256, now, payload_of};
use crate::common::*;

pub(crate) const AUDIENCE: &str = "artifactstore";

/// examples/serve-auth-github.toml, after what a test adds (static tokens, anonymous
/// grants). The server fills in its issuer from `ARTIFACTSTORE_AUTH_ISSUER` (see
/// [`start`]) and its audience from the example's default.
pub(crate) fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/serve-auth-github.toml"),
    )
    .unwrap();
    let path = dir.join("serve.toml");
    std::fs::write(&path, format!("{extra}\n{example}")).unwrap();
    path
}

/// A GitHub Actions-shaped token of the test issuer.
pub(crate) fn github_token(issuer: &Issuer, repository: &str, git_ref: &str) -> String {
    issuer.token(json!({
        "sub": format!("repo:{repository}:ref:{git_ref}"),
        "aud": AUDIENCE,
        "repository": repository,
        "repository_owner": repository.split('/').next().unwrap(),
        "ref": git_ref,
    }))
}

pub(crate) struct Answer {
    pub status: StatusCode,
    pub www_authenticate: Option<String>,
    pub body: Value,
    pub text: String,
}

pub(crate) fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> Answer {
    let (method, url, token) = (method.to_owned(), url.to_owned(), token.map(str::to_owned));
    block_on(async move {
        let mut req = http().request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(Value::String(s)) => req.body(s),
            Some(v) => req.json(&v),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let www_authenticate = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        Answer {
            status,
            www_authenticate,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    })
}

pub(crate) fn put(s: &Server, token: Option<&str>, rest: &str, data: &str) -> Answer {
    call(
        "PUT",
        &s.artifacts(rest),
        token,
        Some(Value::String(data.into())),
    )
}

pub(crate) fn start(dir: &Path, config: &Path, issuer: &Issuer) -> Server {
    Server::start_with_env(
        &dir.join("data"),
        &["--config", config.to_str().unwrap()],
        &[("ARTIFACTSTORE_AUTH_ISSUER", issuer.url.as_str())],
    )
}

#[test]
fn claims_get_exactly_their_grants_and_a_pull_request_cannot_touch_main() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &write_config(dir.path(), ""), &issuer);
    let main = github_token(&issuer, "acme/app", "refs/heads/main");
    let pr = github_token(&issuer, "acme/app", "refs/pull/7/merge");
    let reader =
        issuer.token(json!({"sub": "dash", "aud": AUDIENCE, "groups": ["artifact-readers"]}));
    let stranger = github_token(&issuer, "evil/app", "refs/heads/main");

    // main publishes acme/app@1 and moves latest to it.
    assert_eq!(
        put(&s, Some(&main), "acme/app/1/report.txt", "main").status,
        StatusCode::CREATED
    );
    assert_eq!(
        call(
            "POST",
            &s.artifacts("acme/app/1/complete"),
            Some(&main),
            None
        )
        .status,
        StatusCode::OK
    );

    // The pull request can neither write to, complete, relabel, delete nor move
    // latest in acme: 403 naming the permission and the resource.
    let a = put(&s, Some(&pr), "acme/app/2/report.txt", "poisoned");
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "forbidden");
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`write`") && message.contains("acme/app"),
        "{message}"
    );
    for (method, rest, body, permission) in [
        ("POST", "acme/app/1/complete", None, "complete"),
        (
            "PATCH",
            "acme/app/1",
            Some(json!({"labels": {"branch": "pr"}})),
            "complete",
        ),
        ("DELETE", "acme/app/1", None, "delete"),
    ] {
        let a = call(method, &s.artifacts(rest), Some(&pr), body);
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{method} {rest}: {}",
            a.text
        );
        assert!(a.text.contains(permission), "{}", a.text);
    }
    let latest = call("GET", &s.artifacts("acme/app/latest"), Some(&main), None);
    assert_eq!(latest.body["version"], "1", "{}", latest.text);
    // Nor read it: files, manifests (`latest` too), archives, listings, a file named
    // `complete` (a route of its own), with GET or HEAD.
    for (method, rest) in [
        ("GET", "acme/app/1/report.txt"),
        ("HEAD", "acme/app/1/report.txt"),
        ("GET", "acme/app/1"),
        ("GET", "acme/app/latest"),
        ("GET", "acme/app/1?format=tar"),
        ("GET", "acme/app"),
        ("GET", "acme"),
        ("GET", "acme/app/1/complete"),
    ] {
        let a = call(method, &s.artifacts(rest), Some(&pr), None);
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{method} {rest}: {}",
            a.text
        );
    }
    let a = put(
        &s,
        Some(&pr),
        "acme/app/2/complete",
        "a file named complete",
    );
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    // In its own namespace the pull request may publish.
    assert_eq!(
        put(&s, Some(&pr), "acme-pr/app/7/report.txt", "pr").status,
        StatusCode::CREATED
    );
    assert_eq!(
        call(
            "POST",
            &s.artifacts("acme-pr/app/7/complete"),
            Some(&pr),
            None
        )
        .status,
        StatusCode::OK
    );
    // Nobody here may delete, not even main.
    assert_eq!(
        call("DELETE", &s.artifacts("acme/app/1"), Some(&main), None).status,
        StatusCode::FORBIDDEN
    );

    // The reader reads both namespaces and writes nowhere.
    let a = call(
        "GET",
        &s.artifacts("acme/app/1/report.txt"),
        Some(&reader),
        None,
    );
    assert_eq!((a.status, a.text.as_str()), (StatusCode::OK, "main"));
    let a = call(
        "GET",
        &s.artifacts("acme-pr/app/7/report.txt"),
        Some(&reader),
        None,
    );
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        put(&s, Some(&reader), "acme/app/3/x", "x").status,
        StatusCode::FORBIDDEN
    );

    // Another repository's token gets nothing at all.
    let a = call(
        "GET",
        &s.artifacts("acme/app/1/report.txt"),
        Some(&stranger),
        None,
    );
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        put(&s, Some(&stranger), "acme/app/3/x", "x").status,
        StatusCode::FORBIDDEN
    );

    // Without a token: 401 with the challenge, and nothing served.
    let a = call("GET", &s.artifacts("acme/app/1/report.txt"), None, None);
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        a.www_authenticate.as_deref(),
        Some(r#"Bearer realm="artifactstore", error="invalid_token""#)
    );
    assert_eq!(a.body["error"]["code"], "unauthenticated");
    // The probes stay open.
    assert_eq!(
        call("GET", &format!("{}/healthz", s.url), None, None).status,
        StatusCode::OK
    );
    assert_eq!(
        call("GET", &format!("{}/metrics", s.url), None, None).status,
        StatusCode::OK
    );
    for token in [&main, &pr, &reader, &stranger] {
        assert!(
            !s.logs().contains(token.as_str()),
            "a token reached the log"
        );
    }
}

#[test]
fn token_attacks_get_401_with_the_reason_of_each() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let Some(mut impostor) = Issuer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &write_config(dir.path(), ""), &issuer);
    let good = github_token(&issuer, "acme/app", "refs/heads/main");
    let good_payload = payload_of(&good);
    let now = now();
    let rsa_public = issuer.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "rs256-key")
        .unwrap()
        .to_string();
    let mut tampered_payload = good_payload.clone();
    tampered_payload["ref"] = json!("refs/heads/main");
    tampered_payload["repository"] = json!("acme/other");
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let forged = craft(&json!({}), &tampered_payload, |_| Vec::new());
        format!(
            "{}.{}.{}",
            parts[0],
            forged.split('.').nth(1).unwrap(),
            parts[2]
        )
    };
    let claims = |extra: Value| {
        let mut c = json!({"sub": "s", "aud": AUDIENCE, "repository": "acme/app", "ref": "refs/heads/main"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let attacks: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            craft(
                &json!({"alg": "none", "typ": "JWT", "kid": "rs256-key"}),
                &good_payload,
                |_| Vec::new(),
            ),
            "token_invalid",
        ),
        (
            "HS256 signed with the issuer's public key",
            craft(
                &json!({"alg": "HS256", "typ": "JWT", "kid": "rs256-key"}),
                &good_payload,
                hs256(rsa_public.as_bytes()),
            ),
            "token_invalid",
        ),
        (
            "unknown kid",
            issuer.token_with(
                claims(json!({})),
                "RS256",
                Some(json!({"kid": "not-published"})),
            ),
            "token_invalid",
        ),
        ("tampered payload", tampered, "token_invalid"),
        (
            "expired",
            issuer.token(claims(
                json!({"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}),
            )),
            "token_expired",
        ),
        (
            "wrong iss",
            issuer.token(claims(json!({"iss": "https://evil.example"}))),
            "issuer_untrusted",
        ),
        (
            "another audience",
            issuer.token(claims(json!({"aud": "vend"}))),
            "audience_mismatch",
        ),
        (
            "untrusted issuer copying the trusted iss",
            impostor.token(claims(json!({"iss": issuer.url}))),
            "token_invalid",
        ),
        (
            "oversized",
            format!("{good}{}", "A".repeat(20_000)),
            "token_too_large",
        ),
        ("not a JWT", "garbage".to_owned(), "token_invalid"),
    ];
    impostor.stop();
    for (name, token, reason) in &attacks {
        let a = put(&s, Some(token), "acme/app/1/x", "x");
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{name}: {}", a.text);
        assert_eq!(a.body["error"]["code"], "unauthenticated", "{name}");
        assert_eq!(a.body["error"]["reason"], *reason, "{name}: {}", a.text);
        assert!(a.www_authenticate.is_some(), "{name}");
        assert!(!a.text.contains(token.as_str()), "{name}: token echoed");
    }
    assert!(!s.holds_blob(b"x"), "a refused upload stored something");
    // The good token still works, so the refusals were about the tokens.
    assert_eq!(
        put(&s, Some(&good), "acme/app/1/x", "x").status,
        StatusCode::CREATED
    );
    let logs = s.logs();
    for (name, token, _) in &attacks {
        if token.len() > 20 {
            assert!(!logs.contains(token.as_str()), "{name}: token in the log");
        }
    }
}

#[test]
fn one_tenant_never_sees_another_tenants_names_not_even_by_long_poll() {
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &write_config(dir.path(), ""), &issuer);
    let acme = github_token(&issuer, "acme/app", "refs/heads/main");
    // The tenants are acme (main) and acme-pr (pull requests): a pull-request token
    // must learn nothing of acme's names.
    let pr = github_token(&issuer, "acme/app", "refs/pull/9/merge");
    assert_eq!(
        put(&s, Some(&pr), "acme-pr/pr-app/9/a", "a").status,
        StatusCode::CREATED
    );
    let from = call("GET", &format!("{}/v1/events", s.url), Some(&pr), None).body["next_after"]
        .as_i64()
        .unwrap();

    // The pull-request token follows the feed while main writes a secret name.
    let follower = {
        let (url, pr) = (
            format!("{}/v1/events?after={from}&wait=4", s.url),
            pr.clone(),
        );
        std::thread::spawn(move || call("GET", &url, Some(&pr), None))
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        put(&s, Some(&acme), "acme/secret-name/1/f", "f").status,
        StatusCode::CREATED
    );
    let page = follower.join().unwrap();
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body["events"], json!([]), "{}", page.text);
    assert!(!page.text.contains("secret-name"), "{}", page.text);

    // Its own writes reach it.
    let next = page.body["next_after"].as_i64().unwrap();
    assert_eq!(
        put(&s, Some(&pr), "acme-pr/pr-app/9/b", "b").status,
        StatusCode::CREATED
    );
    let page = call(
        "GET",
        &format!("{}/v1/events?after={next}&wait=4", s.url),
        Some(&pr),
        None,
    );
    let events = page.body["events"].as_array().unwrap();
    assert!(
        !events.is_empty() && events.iter().all(|e| e["namespace"] == "acme-pr"),
        "{}",
        page.text
    );

    // Listings: namespaces, names and blobs of acme stay hidden.
    let ns = call("GET", &format!("{}/v1/artifacts", s.url), Some(&pr), None);
    assert_eq!(
        ns.body["items"],
        json!([{"name": "acme-pr"}]),
        "{}",
        ns.text
    );
    let ns = call("GET", &format!("{}/v1/artifacts", s.url), Some(&acme), None);
    assert_eq!(
        ns.body["items"],
        json!([{"name": "acme"}, {"name": "acme-pr"}]),
        "{}",
        ns.text
    );
    let names = call("GET", &s.artifacts("acme"), Some(&pr), None);
    assert_eq!(names.status, StatusCode::FORBIDDEN);
    let blob = call(
        "GET",
        &format!("{}/v1/blobs/{}", s.url, digest(b"f")),
        Some(&pr),
        None,
    );
    assert_eq!(blob.status, StatusCode::NOT_FOUND, "a blob only acme holds");
    let blob = call(
        "GET",
        &format!("{}/v1/blobs/{}", s.url, digest(b"f")),
        Some(&acme),
        None,
    );
    assert_eq!((blob.status, blob.text.as_str()), (StatusCode::OK, "f"));
}

/// The attacks that need a configuration of their own: an issuer whose key set holds a
/// symmetric (`oct`) key, which must never verify anything; `nbf` beyond the leeway;
/// and claim values that would widen or escape a `${claim}` template.
#[test]
fn oct_keys_early_tokens_and_template_escapes_are_refused() {
    use base64::Engine as _;
    let Some(issuer) = Issuer::start() else {
        return;
    };
    let secret = b"a-shared-secret-that-must-not-work";
    let oct_issuer = "http://127.0.0.1:1/oct-issuer";
    let oct_jwks = crate::common::oidc::serve_static_json(json!({"keys": [{
        "kty": "oct", "kid": "hmac-key", "alg": "HS256",
        "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    }]}));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[auth.issuers]]
issuer = "{real}"
audience = "{AUDIENCE}"

[[auth.issuers]]
issuer = "{oct_issuer}"
audience = "{AUDIENCE}"
jwks_url = "{oct_jwks}"

[[auth.rules]]
issuer = "{real}"
claims = {{ repository_owner = {{ glob = "*" }} }}
namespaces = ["gh-${{repository_owner}}"]
permissions = ["read", "write"]

[[auth.rules]]
issuer = "{oct_issuer}"
claims = {{ sub = {{ glob = "*" }} }}
namespaces = ["*"]
permissions = ["read", "write"]
"#,
            real = issuer.url
        ),
    )
    .unwrap();
    let s = Server::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let now = now();
    let oct_payload = json!({"iss": oct_issuer, "aud": AUDIENCE, "sub": "x", "exp": now + 600});
    for (name, token, reason) in [
        (
            "HS256 with the JWKS oct key",
            craft(
                &json!({"alg": "HS256", "typ": "JWT", "kid": "hmac-key"}),
                &oct_payload,
                hs256(secret),
            ),
            "token_invalid",
        ),
        (
            "RS256 header naming the JWKS oct key",
            craft(
                &json!({"alg": "RS256", "typ": "JWT", "kid": "hmac-key"}),
                &oct_payload,
                hs256(secret),
            ),
            "token_invalid",
        ),
        (
            "nbf beyond the leeway",
            issuer.token(
                json!({"sub": "s", "aud": AUDIENCE, "repository_owner": "acme", "nbf": now + 600}),
            ),
            "token_not_yet_valid",
        ),
    ] {
        let a = put(&s, Some(&token), "gh-acme/app/1/x", "x");
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{name}: {}", a.text);
        assert_eq!(a.body["error"]["reason"], reason, "{name}: {}", a.text);
    }
    // The template gives each owner its namespace, and a claim value that is not a
    // valid name — a glob, a path, nothing — fills in nothing: no grant at all.
    let owner = |o: &str| issuer.token(json!({"sub": "s", "aud": AUDIENCE, "repository_owner": o}));
    assert_eq!(
        put(&s, Some(&owner("acme")), "gh-acme/app/1/x", "x").status,
        StatusCode::CREATED
    );
    assert_eq!(
        put(&s, Some(&owner("acme")), "gh-other/app/1/x", "x").status,
        StatusCode::FORBIDDEN
    );
    for bad in ["*", "a*", "../gh-acme", ""] {
        let a = put(&s, Some(&owner(bad)), "gh-acme/app/1/y", "y");
        assert_eq!(a.status, StatusCode::FORBIDDEN, "owner {bad:?}: {}", a.text);
    }
    assert!(!s.holds_blob(b"y"));
}
