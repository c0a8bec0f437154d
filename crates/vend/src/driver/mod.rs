//! Mint drivers: how a decision becomes a credential upstream, and how it is taken
//! back. One small trait; one implementation per kind of upstream.

use std::time::Duration;

use artifactstore_model::Timestamp;
use artifactstore_model::secret::Secret;

use crate::policy::Scope;

pub mod garage;
pub mod sts;

/// What to mint.
#[derive(Debug)]
pub struct MintRequest<'a> {
    pub lease_id: &'a str,
    pub subject: &'a str,
    pub role: &'a str,
    pub scope: &'a Scope,
    pub duration: Duration,
    /// When the credential must stop working.
    pub expires_at: Timestamp,
}

/// A minted credential. The secret halves leave this process only in the answer to
/// the caller.
#[derive(Debug)]
pub struct Minted {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Absent for drivers whose keys need none (Garage).
    pub session_token: Option<Secret>,
    /// The upstream's own expiry is believed over the requested one.
    pub expires_at: Timestamp,
}

/// What revoking upstream achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// The upstream credential was deleted.
    Deleted,
    /// It was already gone upstream.
    AlreadyGone,
    /// This upstream cannot revoke a credential before it expires; it stays usable
    /// until then. Future vending is refused all the same.
    Unsupported,
}

impl Revoked {
    pub fn as_str(self) -> &'static str {
        match self {
            Revoked::Deleted => "deleted",
            Revoked::AlreadyGone => "already_gone",
            Revoked::Unsupported => "unsupported",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The upstream could not be reached or failed; trying again may work.
    #[error("{0}")]
    Unavailable(String),
    /// The upstream refused (credentials, permissions, unknown bucket or role).
    #[error("{0}")]
    Refused(String),
}

#[async_trait::async_trait]
pub trait MintDriver: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Whether this driver can mint a credential that reaches exactly `scope` (its
    /// prefixes and actions), and if not, why. `base` is the role's own scope: what the
    /// configuration already accepted (Garage roles that opted in to bucket-wide keys).
    fn can_enforce(&self, scope: &Scope, base: &Scope) -> Result<(), String>;
    async fn mint(&self, request: &MintRequest<'_>) -> Result<Minted, DriverError>;
    /// Takes a credential back. `access_key_id` is `None` when the lease never got
    /// one recorded (a crash between minting and recording).
    async fn revoke(
        &self,
        lease_id: &str,
        access_key_id: Option<&str>,
    ) -> Result<Revoked, DriverError>;
    /// Whether the upstream answers and accepts our credentials.
    async fn check(&self) -> Result<(), DriverError>;
}
