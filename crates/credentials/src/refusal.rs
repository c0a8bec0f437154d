//! What an STS refusal tells the user: the STS, the action, the role, the store's code
//! and words — and, when the store gives no reason (Ceph RGW answers a bare 403
//! `AccessDenied` to every refusal of a token or a role), what to check, with what the
//! token itself says: its issuer, audience, subject and expiry. Never the token, its
//! signature or a secret.

use artifactstore_model::Timestamp;
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::ProvideErrorMetadata;
use serde_json::Value;

/// The claims of a token that explain a refusal. The token is not verified here; it is
/// only read to tell the user what they sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TokenFacts {
    pub iss: Option<String>,
    pub aud: Vec<String>,
    pub sub: Option<String>,
    pub exp: Option<i64>,
}

/// The claims of a JWT's payload; `None` when it is not a JWT.
pub(crate) fn token_facts(token: &str) -> Option<TokenFacts> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(short);
    let aud = match claims.get("aud") {
        Some(Value::String(a)) => vec![short(a)],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(short).collect(),
        _ => Vec::new(),
    };
    Some(TokenFacts {
        iss: text("iss"),
        aud,
        sub: text("sub"),
        exp: claims.get("exp").and_then(Value::as_i64),
    })
}

/// A claim as shown in a message: at most 128 characters.
fn short(s: &str) -> String {
    s.chars().take(128).collect()
}

fn shown(v: &Option<String>) -> String {
    v.as_deref()
        .map_or_else(|| "none".to_owned(), |s| format!("{s:?}"))
}

/// A refusal's code (empty when the store gave none) and message as the store gave them.
pub struct Answer<'a> {
    pub status: u16,
    pub code: &'a str,
    pub message: &'a str,
}

impl Answer<'_> {
    /// `HTTP <status> <code>: <message>`, leaving out what the store did not give.
    pub fn head(&self) -> String {
        let message: String = self.message.trim().chars().take(300).collect();
        let mut head = format!("HTTP {}", self.status);
        if !self.code.is_empty() {
            head = format!("{head} {}", self.code);
        }
        if !message.is_empty() {
            head = format!("{head}: {message}");
        }
        head
    }

    /// Whether the store said no more than "denied".
    fn bare_denial(&self) -> bool {
        self.message.trim().is_empty()
            && matches!(
                self.code,
                "AccessDenied" | "InvalidIdentityToken" | "Forbidden" | ""
            )
    }
}

/// The status, code and message of an STS error answer to an SDK call: what the SDK
/// read, else what [`crate::sts_xml::parse_error`] reads from the body — Ceph RGW
/// answers an `<Error>` at the root, where the SDK finds no code. `None`: no code at all.
pub fn sdk_answer<E: ProvideErrorMetadata>(
    err: &E,
    raw: &HttpResponse,
) -> (u16, Option<String>, String) {
    let body = raw.body().bytes().map(String::from_utf8_lossy);
    let parsed = body.as_deref().and_then(crate::sts_xml::parse_error);
    let code = err
        .code()
        .map(str::to_owned)
        .or_else(|| parsed.as_ref().map(|p| p.code.clone()));
    let message = err
        .message()
        .map(str::to_owned)
        .or_else(|| parsed.map(|p| p.message))
        .unwrap_or_default();
    (raw.status().as_u16(), code, message)
}

/// The message of a refused `AssumeRoleWithWebIdentity`.
pub(crate) fn web_identity(
    endpoint: &str,
    role_arn: Option<&str>,
    answer: &Answer<'_>,
    token: &str,
    token_file: &std::path::Path,
    now: Timestamp,
) -> String {
    let role = role_arn.map_or_else(|| " (no RoleArn)".to_owned(), |r| format!(" of role {r}"));
    let mut text = format!(
        "STS at {endpoint}: AssumeRoleWithWebIdentity{role}: {}",
        answer.head()
    );
    let facts = token_facts(token);
    let now_secs = now.unix_secs();
    if let Some(exp) = facts.as_ref().and_then(|f| f.exp)
        && exp <= now_secs
    {
        let at = Timestamp::from_unix_secs(exp);
        text.push_str(&format!(
            " — the token in {} expired at {} ({} s ago): the token file must be rewritten \
             with a fresh token before it expires",
            token_file.display(),
            at.rfc3339(),
            now_secs - exp
        ));
        return text;
    }
    match facts {
        None => text.push_str(&format!(
            " — the file {} does not hold a JWT",
            token_file.display()
        )),
        Some(f) if answer.bare_denial() => text.push_str(&format!(
            " — the STS gives no reason. It refuses a token so when its issuer has no OIDC \
             provider there (the token's iss is {}), when its audience is not among that \
             provider's client IDs (its aud is {}), when the role does not exist, or when \
             the role's trust policy does not allow it (its sub is {})",
            shown(&f.iss),
            if f.aud.is_empty() {
                "none".to_owned()
            } else {
                format!("{:?}", f.aud)
            },
            shown(&f.sub)
        )),
        Some(_) => {}
    }
    text
}

/// The message of a refused `AssumeRole`.
pub fn assume_role(endpoint: &str, role_arn: &str, answer: &Answer<'_>) -> String {
    let mut text = format!(
        "STS at {endpoint}: AssumeRole of role {role_arn}: {}",
        answer.head()
    );
    if answer.code == "NoSuchEntity" && answer.message.trim().is_empty() {
        text.push_str(" — no role of that name exists at this STS");
    } else if answer.bare_denial() {
        text.push_str(
            " — the STS gives no reason. It refuses so a wrong secret key, an unknown \
             access key, a role that does not exist, or a role whose trust policy does \
             not allow the user of these keys",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        use base64::Engine as _;
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.c2lnbmF0dXJlLWNhbmFyeQ",
            b(r#"{"alg":"RS256"}"#),
            b(payload)
        )
    }

    const DENIED: Answer<'static> = Answer {
        status: 403,
        code: "AccessDenied",
        message: "",
    };

    #[test]
    fn an_expired_token_is_named_as_such() {
        let token = jwt(r#"{"iss":"http://i","aud":"a","sub":"s","exp":1000}"#);
        let now = Timestamp::from_unix_secs(1060);
        let text = web_identity(
            "http://sts",
            Some("arn:aws:iam:::role/r"),
            &DENIED,
            &token,
            std::path::Path::new("/run/token"),
            now,
        );
        assert!(
            text.starts_with(
                "STS at http://sts: AssumeRoleWithWebIdentity of role arn:aws:iam:::role/r: \
                 HTTP 403 AccessDenied — the token in /run/token expired at 1970-01-01T00:16:40"
            ),
            "{text}"
        );
        assert!(text.contains("(60 s ago)"), "{text}");
        assert!(!text.contains("c2lnbmF0dXJlLWNhbmFyeQ"), "{text}");
    }

    #[test]
    fn a_bare_denial_lists_what_to_check_with_the_tokens_claims() {
        let token = jwt(r#"{"iss":"http://i","aud":["x","y"],"sub":"job","exp":99999999999}"#);
        let text = web_identity(
            "http://sts",
            None,
            &DENIED,
            &token,
            std::path::Path::new("/t"),
            Timestamp::from_unix_secs(0),
        );
        assert!(
            text.contains("(no RoleArn): HTTP 403 AccessDenied — "),
            "{text}"
        );
        for part in [
            r#"iss is "http://i""#,
            r#"aud is ["x", "y"]"#,
            r#"sub is "job""#,
            "client IDs",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        // A store that says why is quoted, without the list.
        let said = Answer {
            status: 400,
            code: "InvalidIdentityToken",
            message: "audience_mismatch: not for us",
        };
        let text = web_identity(
            "http://sts",
            None,
            &said,
            &token,
            std::path::Path::new("/t"),
            Timestamp::from_unix_secs(0),
        );
        assert!(
            text.ends_with("HTTP 400 InvalidIdentityToken: audience_mismatch: not for us"),
            "{text}"
        );
        let text = web_identity(
            "http://sts",
            None,
            &DENIED,
            "not a jwt",
            std::path::Path::new("/t"),
            Timestamp::from_unix_secs(0),
        );
        assert!(text.ends_with("the file /t does not hold a JWT"), "{text}");
    }

    #[test]
    fn assume_role_refusals_say_what_to_check() {
        let missing = Answer {
            status: 404,
            code: "NoSuchEntity",
            message: "",
        };
        let text = assume_role("http://sts", "arn:aws:iam:::role/x", &missing);
        assert_eq!(
            text,
            "STS at http://sts: AssumeRole of role arn:aws:iam:::role/x: HTTP 404 NoSuchEntity \
             — no role of that name exists at this STS"
        );
        let text = assume_role("http://sts", "arn:aws:iam:::role/x", &DENIED);
        assert!(text.contains("wrong secret key"), "{text}");
    }
}
