//! The one vocabulary of decision reasons. Every answer, audit line and metric uses
//! these codes; docs/VEND.md lists them.

use artifactstore_oidc::{TokenReason, TokenRefusal};

/// The string forms (answers, audit lines, metric labels, docs) all come from the
/// `strum` derive below, so they cannot disagree.
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
pub enum Reason {
    /// Credentials were issued.
    Allow,
    /// The request itself is malformed (missing token, bad parameter).
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
    /// A claim feeds a prefix template but is not a safe path segment.
    ClaimInvalid,
    NoMatchingRole,
    /// The role asked for does not exist or the token's claims do not match it.
    RoleNotPermitted,
    DurationOutOfBounds,
    /// The request's session policy is malformed, or would widen the role, or cannot
    /// be enforced by the role's driver.
    PolicyInvalid,
    SubjectRevoked,
    RoleRevoked,
    /// The subject or the role holds its maximum of live leases (`max_live_leases`).
    LeaseLimit,
    /// The client address or the subject sent more requests than its token bucket
    /// allows (`rate_limits`); the answer says when to come back (`Retry-After`).
    RateLimited,
    UpstreamUnavailable,
    AuditUnavailable,
    /// Admin routes: no bearer, or one that is neither the admin token nor a valid
    /// token of a configured issuer.
    Unauthorized,
    /// Admin routes: a verified token that no `[admin] rules` entry matches (or whose
    /// subject is revoked).
    Forbidden,
    /// The same word as the artifact API's internal error.
    #[strum(serialize = "internal_error")]
    Internal,
}

impl Reason {
    /// Every reason, in declaration order.
    pub fn all() -> impl Iterator<Item = Reason> {
        <Reason as strum::IntoEnumIterator>::iter()
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// HTTP status of a refusal with this reason.
    pub fn status(self) -> u16 {
        match self {
            Reason::Allow => 200,
            Reason::RequestInvalid
            | Reason::TokenInvalid
            | Reason::TokenExpired
            | Reason::TokenNotYetValid
            | Reason::TokenTooOld
            | Reason::IssuerUntrusted
            | Reason::AudienceMismatch
            | Reason::ClaimMissing
            | Reason::ClaimInvalid
            | Reason::DurationOutOfBounds
            | Reason::PolicyInvalid => 400,
            Reason::TokenTooLarge => 413,
            Reason::NoMatchingRole
            | Reason::RoleNotPermitted
            | Reason::SubjectRevoked
            | Reason::RoleRevoked
            | Reason::Forbidden => 403,
            Reason::Unauthorized => 401,
            Reason::LeaseLimit | Reason::RateLimited => 429,
            Reason::UpstreamUnavailable | Reason::AuditUnavailable => 503,
            Reason::Internal => 500,
        }
    }

    /// The STS error code (AWS / MinIO error XML) of a refusal with this reason.
    pub fn sts_code(self) -> &'static str {
        match self {
            Reason::Allow => "",
            Reason::RequestInvalid => "InvalidParameterValue",
            Reason::TokenExpired => "ExpiredTokenException",
            Reason::TokenInvalid
            | Reason::TokenNotYetValid
            | Reason::TokenTooOld
            | Reason::TokenTooLarge
            | Reason::IssuerUntrusted
            | Reason::AudienceMismatch
            | Reason::ClaimMissing
            | Reason::ClaimInvalid => "InvalidIdentityToken",
            Reason::NoMatchingRole
            | Reason::RoleNotPermitted
            | Reason::SubjectRevoked
            | Reason::RoleRevoked
            | Reason::Unauthorized
            | Reason::Forbidden => "AccessDenied",
            // AWS's own word for too many requests of one kind.
            Reason::LeaseLimit | Reason::RateLimited => "Throttling",
            Reason::DurationOutOfBounds => "InvalidParameterValue",
            Reason::PolicyInvalid => "MalformedPolicyDocument",
            Reason::UpstreamUnavailable | Reason::AuditUnavailable => "ServiceUnavailable",
            Reason::Internal => "InternalError",
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A refusal: its reason code and a message safe to show (never a token or secret).
#[derive(Clone, Debug)]
pub struct Denial {
    pub reason: Reason,
    pub message: String,
    /// An STS error code more precise than the reason's own (`MissingParameter`).
    pub sts_code: Option<&'static str>,
    /// For `Retry-After`: when trying again may work.
    pub retry_after_secs: Option<u64>,
}

impl Denial {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Denial {
            reason,
            message: message.into(),
            sts_code: None,
            retry_after_secs: None,
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn with_sts_code(mut self, code: &'static str) -> Self {
        self.sts_code = Some(code);
        self
    }
}

/// A refused token keeps its reason's spelling: the verifier's words are vend's.
impl From<TokenReason> for Reason {
    fn from(reason: TokenReason) -> Self {
        match reason {
            TokenReason::RequestInvalid => Reason::RequestInvalid,
            TokenReason::TokenInvalid => Reason::TokenInvalid,
            TokenReason::TokenExpired => Reason::TokenExpired,
            TokenReason::TokenNotYetValid => Reason::TokenNotYetValid,
            TokenReason::TokenTooOld => Reason::TokenTooOld,
            TokenReason::TokenTooLarge => Reason::TokenTooLarge,
            TokenReason::IssuerUntrusted => Reason::IssuerUntrusted,
            TokenReason::AudienceMismatch => Reason::AudienceMismatch,
            TokenReason::ClaimMissing => Reason::ClaimMissing,
        }
    }
}

impl From<TokenRefusal> for Denial {
    fn from(refusal: TokenRefusal) -> Self {
        Denial::new(refusal.reason.into(), refusal.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token refused by the shared verifier is answered, audited and counted under
    /// the same word the verifier uses.
    #[test]
    fn every_token_reason_is_spelled_as_the_vend_reason() {
        for token_reason in TokenReason::all() {
            let reason = Reason::from(token_reason);
            assert_eq!(reason.as_str(), token_reason.as_str());
            assert_eq!(reason.to_string(), token_reason.to_string());
        }
        let denial = Denial::from(TokenRefusal::new(
            TokenReason::TokenExpired,
            "token has expired",
        ));
        assert_eq!(denial.reason, Reason::TokenExpired);
        assert_eq!(denial.message, "token has expired");
        assert_eq!((denial.sts_code, denial.retry_after_secs), (None, None));
    }

    /// The audit line (serde), the answer and metric label (`as_str`), the parser and
    /// the table in docs/VEND.md spell every reason the same way.
    #[test]
    fn every_reason_is_spelled_the_same_everywhere() {
        let docs = include_str!("../../../docs/VEND.md");
        assert_eq!(Reason::all().count(), 24);
        for reason in Reason::all() {
            let word = reason.as_str();
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{word}\"")
            );
            assert_eq!(reason.to_string(), word);
            assert_eq!(word.parse::<Reason>().unwrap(), reason);
            assert!(
                docs.contains(&format!("| `{word}` | {} |", reason.status())),
                "docs/VEND.md has no row for {word} with status {}",
                reason.status()
            );
        }
        assert_eq!(Reason::Internal.as_str(), "internal_error");
        assert_eq!(
            Reason::Internal.as_str(),
            artifactstore_model::api::ErrorCode::InternalError.as_str(),
            "both servers use one word for an internal error"
        );
    }
}
