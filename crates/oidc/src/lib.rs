//! OIDC token verification, shared by every service that takes a workload's token:
//! credential vending and the artifact server check tokens the same way, with the
//! same defences and the same reasons for a refusal.
//!
//! [`verify`] holds the [`TokenVerifier`] (trusted issuers, their JWKS cache, every
//! token check), [`config`] what it is configured with, [`refusal`] why a token was
//! refused, and [`claims`] the matchers and `${claim}` templates that users apply to a
//! verified token's claims.

pub mod claims;
pub mod config;
pub mod refusal;
pub mod verify;

pub use config::{IssuerConfig, TokenConfig};
pub use refusal::{TokenReason, TokenRefusal};
pub use verify::{ClaimedIdentity, IssuerKeys, TokenVerifier, VerifiedToken};
