//! vend's audit log: the shared keyed chain ([`artifactstore_audit`]) with vend's own
//! record of decisions and lease changes.

use serde::Serialize;

pub use artifactstore_audit::*;

use crate::reason::Reason;

/// The HMAC-SHA256 under which an access key id appears in the audit log: lines about
/// one key correlate without the key id appearing in them.
pub struct KeyHasher(aws_lc_rs::hmac::Key);

impl KeyHasher {
    pub fn new(key: &[u8]) -> Self {
        KeyHasher(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key))
    }

    /// The HMAC (hex) of `access_key_id`.
    pub fn of(&self, access_key_id: &str) -> String {
        hex::encode(aws_lc_rs::hmac::sign(&self.0, access_key_id.as_bytes()).as_ref())
    }
}

/// What one line says. Tokens and secrets have no field here; access key ids appear
/// only as an HMAC.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditRecord {
    /// `decision`, `lease.issued`, `lease.failed`, `lease.revoked`, `lease.expired`,
    /// `lease.reconciled`, `revocation.added`, `revocation.removed`.
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
    /// How many refusals a coalesced line stands for (see [`Coalescer`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `critical` for lines an operator must look at (every break-glass attempt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<&'static str>,
    /// Who called an admin route: `admin-token`, or the verified issuer and subject
    /// of the OIDC token that an `[admin] rules` entry let in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// A `refusals.coalesced` line's count by reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_reason: Option<std::collections::BTreeMap<&'static str, u64>>,
}

impl Record for AuditRecord {
    /// Every field within its bound, so that no line can grow without limit (a flood
    /// of refused tokens with huge claims, a 64 KiB revocation reason).
    fn bounded(&self) -> Self {
        let mut bounded = self.clone();
        for v in [
            &mut bounded.request_id,
            &mut bounded.issuer,
            &mut bounded.subject,
            &mut bounded.audience,
            &mut bounded.role,
            &mut bounded.driver,
            &mut bounded.lease_id,
            &mut bounded.client,
            &mut bounded.actor,
        ]
        .into_iter()
        .flatten()
        {
            *v = truncated(v, FIELD_MAX);
        }
        if let Some(d) = &mut bounded.detail {
            *d = truncated(d, DETAIL_MAX);
        }
        bounded
    }
}
