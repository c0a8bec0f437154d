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
    /// The credential still exists upstream, but the upstream now refuses every
    /// request made with it (an STS session denied by the assumed role's policy).
    Denied,
    /// This upstream cannot revoke a credential before it expires; it stays usable
    /// until then. Future vending is refused all the same.
    Unsupported,
}

impl Revoked {
    pub fn as_str(self) -> &'static str {
        match self {
            Revoked::Deleted => "deleted",
            Revoked::AlreadyGone => "already_gone",
            Revoked::Denied => "denied",
            Revoked::Unsupported => "unsupported",
        }
    }
}

/// A credential a driver created, as the upstream lists it (see
/// [`MintDriver::list_minted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintedKey {
    /// The lease it was minted for, read back from the name it was given.
    pub lease_id: String,
    pub access_key_id: String,
    /// When the upstream created it, where the upstream says.
    pub created: Option<Timestamp>,
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
    /// Takes back a credential that would otherwise work until `expires_at` (a
    /// revocation, a dead issue), as opposed to one the reaper ends at its expiry.
    /// Drivers that can only act on a live credential (STS sessions) tell the two
    /// apart; the others revoke as [`MintDriver::revoke`] does.
    async fn revoke_unexpired(
        &self,
        lease_id: &str,
        access_key_id: Option<&str>,
        _expires_at: Timestamp,
    ) -> Result<Revoked, DriverError> {
        self.revoke(lease_id, access_key_id).await
    }
    /// Whether the upstream answers and accepts our credentials.
    async fn check(&self) -> Result<(), DriverError>;
    /// Every credential this driver created that still exists upstream, so that crash
    /// reconciliation can find those no live lease accounts for. `None`: this upstream
    /// cannot list them (STS sessions are not objects one can enumerate).
    async fn list_minted(&self) -> Result<Option<Vec<MintedKey>>, DriverError> {
        Ok(None)
    }
}
