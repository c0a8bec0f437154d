//! What an audit line records, and the bounds that keep a line small.

use serde::Serialize;

use crate::reason::Reason;

/// What one line says. Tokens and secrets have no field here; access key ids appear
/// only as an HMAC.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditRecord {
    /// `decision`, `lease.issued`, `lease.failed`, `lease.revoked`, `lease.expired`,
    /// `revocation.added`, `revocation.removed`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// False when issuer and subject are what a refused token claimed, unverified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_hmac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
    /// How many refusals a coalesced line stands for (see `service::refusals`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// A `refusals.coalesced` line's count by reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_reason: Option<std::collections::BTreeMap<&'static str, u64>>,
}

/// Longest value of a field that can carry what a client sent (claims of a refused
/// token, a role name asked for, a client address).
pub const FIELD_MAX: usize = 128;
/// Longest `detail` (a revocation's target and reason, an upstream's message).
pub const DETAIL_MAX: usize = 1024;

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
pub(super) fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[{} bytes cut]", &s[..cut], s.len() - cut)
}

impl AuditRecord {
    /// Every field within its bound, so that no line can grow without limit (a flood
    /// of refused tokens with huge claims, a 64 KiB revocation reason).
    pub(super) fn bounded(mut self) -> Self {
        for v in [
            &mut self.request_id,
            &mut self.issuer,
            &mut self.subject,
            &mut self.audience,
            &mut self.role,
            &mut self.driver,
            &mut self.lease_id,
            &mut self.client,
        ]
        .into_iter()
        .flatten()
        {
            *v = truncated(v, FIELD_MAX);
        }
        if let Some(d) = &mut self.detail {
            *d = truncated(d, DETAIL_MAX);
        }
        self
    }
}
