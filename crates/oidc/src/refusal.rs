//! Why a token was refused, in words every user of the verifier shares: vend turns a
//! [`TokenReason`] into its own reason with the same spelling, so answers, audit lines
//! and metrics say the same whichever service checked the token.

/// The string forms come from the `strum` derive below, so they cannot disagree.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
    strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum TokenReason {
    /// No token at all: the request is malformed, not the token.
    RequestInvalid,
    /// The token is not a well-formed, correctly signed JWT from a known key, or uses
    /// an algorithm that is not allowed.
    TokenInvalid,
    TokenExpired,
    /// `nbf` or `iat` lies in the future beyond the leeway.
    TokenNotYetValid,
    /// `iat` is older than the configured maximum token age.
    TokenTooOld,
    TokenTooLarge,
    IssuerUntrusted,
    AudienceMismatch,
    /// A required claim is absent.
    ClaimMissing,
}

impl TokenReason {
    /// Every reason, in declaration order.
    pub fn all() -> impl Iterator<Item = TokenReason> {
        <TokenReason as strum::IntoEnumIterator>::iter()
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A refused token: the reason and a message safe to show the caller. The message
/// never holds the token, only what was wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct TokenRefusal {
    pub reason: TokenReason,
    pub message: String,
}

impl TokenRefusal {
    pub fn new(reason: TokenReason, message: impl Into<String>) -> Self {
        TokenRefusal {
            reason,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_their_spelling() {
        assert_eq!(TokenReason::all().count(), 9);
        for reason in TokenReason::all() {
            let word = reason.as_str();
            assert_eq!(reason.to_string(), word);
            assert_eq!(word.parse::<TokenReason>().unwrap(), reason);
        }
        assert_eq!(TokenReason::RequestInvalid.as_str(), "request_invalid");
        assert_eq!(
            TokenReason::TokenNotYetValid.as_str(),
            "token_not_yet_valid"
        );
    }
}
