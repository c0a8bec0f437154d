//! What an unsuccessful answer of the server means: the one place that turns its status
//! and error envelope (`artifactstore_model::api::ErrorBody`) into a message and an
//! exit code.

use artifactstore_model::api::ErrorBody;
use reqwest::StatusCode;

use crate::exit::{self, fail};

/// The failure an answer with `status` and body `text` means. `token_sent`: whether the
/// request carried a token, so that a 401 to a request without one says how to give one.
pub fn failure(status: StatusCode, text: String, token_sent: bool) -> anyhow::Error {
    let reason = reason(&text);
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => (b.error.code, b.error.message),
        Err(_) => ("http_error".to_owned(), text),
    };
    let exit_code = match (status, code.as_str()) {
        (_, "digest_mismatch") => exit::INTEGRITY,
        (StatusCode::UNAUTHORIZED, _) => exit::UNAUTHENTICATED,
        (StatusCode::FORBIDDEN, _) => exit::FORBIDDEN,
        (StatusCode::NOT_FOUND, _) => exit::NOT_FOUND,
        (StatusCode::CONFLICT, _) => exit::CONFLICT,
        _ => exit::FAILURE,
    };
    let code = match reason {
        Some(r) => format!("{code} ({r})"),
        None => code,
    };
    let hint = if status == StatusCode::UNAUTHORIZED && !token_sent {
        "; no token was sent: give --token-file, --token-env, --token-from or ARTIFACTSTORE_TOKEN"
    } else {
        ""
    };
    fail(
        exit_code,
        format!("{code}: {message} (HTTP {}){hint}", status.as_u16()),
    )
}

/// Whether a 401 answer's envelope says the token expired (`code` or `reason`
/// `token_expired`): the one refusal that a fresh token can cure.
pub fn says_expired(body: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let error = &doc["error"];
    [&error["code"], &error["reason"]]
        .iter()
        .any(|v| v.as_str() == Some("token_expired"))
}

/// Why a token was refused (the envelope's `reason`), if it says. Read from the JSON
/// itself, so that it is shown whichever fields `ErrorBody` has.
fn reason(body: &str) -> Option<String> {
    let doc = serde_json::from_str::<serde_json::Value>(body).ok()?;
    let reason = doc["error"]["reason"].as_str()?;
    (!reason.is_empty()).then(|| reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, reason: &str) -> String {
        format!(r#"{{"error":{{"code":"{code}","message":"m","reason":"{reason}"}}}}"#)
    }

    fn code_and_message(e: &anyhow::Error) -> (u8, String) {
        let f = e.downcast_ref::<exit::Failure>().unwrap();
        (f.code, f.message.clone())
    }

    #[test]
    fn an_expired_refusal_is_told_apart() {
        assert!(says_expired(&body("unauthenticated", "token_expired")));
        assert!(says_expired(&body("token_expired", "")));
        assert!(!says_expired(&body("unauthenticated", "audience_mismatch")));
        assert!(!says_expired("token_expired"));
    }

    #[test]
    fn refusals_have_their_exit_codes_and_say_why() {
        let e = failure(
            StatusCode::UNAUTHORIZED,
            body("unauthenticated", "audience_mismatch"),
            true,
        );
        assert_eq!(
            code_and_message(&e),
            (
                exit::UNAUTHENTICATED,
                "unauthenticated (audience_mismatch): m (HTTP 401)".to_owned()
            )
        );
        let e = failure(StatusCode::UNAUTHORIZED, "{}".to_owned(), false);
        assert!(code_and_message(&e).1.contains("no token was sent"));
        let forbidden = r#"{"error":{"code":"forbidden","message":"not granted `read` on ns"}}"#;
        let e = failure(StatusCode::FORBIDDEN, forbidden.to_owned(), true);
        assert_eq!(
            code_and_message(&e),
            (
                exit::FORBIDDEN,
                "forbidden: not granted `read` on ns (HTTP 403)".to_owned()
            )
        );
        let e = failure(StatusCode::NOT_FOUND, body("version_not_found", ""), true);
        assert_eq!(code_and_message(&e).0, exit::NOT_FOUND);
    }
}
