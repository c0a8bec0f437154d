//! The one vocabulary of decision reasons. Every answer, audit line and metric uses
//! these codes; docs/VEND.md lists them.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
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
    UpstreamUnavailable,
    AuditUnavailable,
    Internal,
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::Allow,
        Reason::RequestInvalid,
        Reason::TokenInvalid,
        Reason::TokenExpired,
        Reason::TokenNotYetValid,
        Reason::TokenTooOld,
        Reason::TokenTooLarge,
        Reason::IssuerUntrusted,
        Reason::AudienceMismatch,
        Reason::ClaimMissing,
        Reason::ClaimInvalid,
        Reason::NoMatchingRole,
        Reason::RoleNotPermitted,
        Reason::DurationOutOfBounds,
        Reason::PolicyInvalid,
        Reason::SubjectRevoked,
        Reason::RoleRevoked,
        Reason::UpstreamUnavailable,
        Reason::AuditUnavailable,
        Reason::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allow => "allow",
            Reason::RequestInvalid => "request_invalid",
            Reason::TokenInvalid => "token_invalid",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::TokenTooOld => "token_too_old",
            Reason::TokenTooLarge => "token_too_large",
            Reason::IssuerUntrusted => "issuer_untrusted",
            Reason::AudienceMismatch => "audience_mismatch",
            Reason::ClaimMissing => "claim_missing",
            Reason::ClaimInvalid => "claim_invalid",
            Reason::NoMatchingRole => "no_matching_role",
            Reason::RoleNotPermitted => "role_not_permitted",
            Reason::DurationOutOfBounds => "duration_out_of_bounds",
            Reason::PolicyInvalid => "policy_invalid",
            Reason::SubjectRevoked => "subject_revoked",
            Reason::RoleRevoked => "role_revoked",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::AuditUnavailable => "audit_unavailable",
            Reason::Internal => "internal_error",
        }
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
            | Reason::RoleRevoked => 403,
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
            | Reason::RoleRevoked => "AccessDenied",
            Reason::DurationOutOfBounds => "InvalidParameterValue",
            Reason::PolicyInvalid => "MalformedPolicyDocument",
            Reason::UpstreamUnavailable | Reason::AuditUnavailable => "ServiceUnavailable",
            Reason::Internal => "InternalError",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: its reason code and a message safe to show (never a token or secret).
#[derive(Clone, Debug)]
pub struct Denial {
    pub reason: Reason,
    pub message: String,
    /// An STS error code more precise than the reason's own (`MissingParameter`).
    pub sts_code: Option<&'static str>,
}

impl Denial {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Denial {
            reason,
            message: message.into(),
            sts_code: None,
        }
    }

    pub fn with_sts_code(mut self, code: &'static str) -> Self {
        self.sts_code = Some(code);
        self
    }
}
