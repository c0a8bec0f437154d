//! The decision: everything after the token checks and before anything is written —
//! standing revocations, the role, its scope narrowed by a session policy, the
//! duration.

use artifactstore_oidc::VerifiedToken;
use artifactstore_oidc::claims::{RenderError, rule_matches};

use crate::leases::{RevocationKind, StoreError};
use crate::policy::Scope;
use crate::reason::{Denial, Reason};

use super::{Role, Service, VendRequest, short};

impl Service {
    /// Everything after the token: revocations, role, scope, policy, duration.
    #[allow(clippy::type_complexity)]
    pub(super) async fn decide(
        &self,
        token: &VerifiedToken,
        request: &VendRequest,
    ) -> Result<(&Role, Scope, u64), (Option<String>, Denial)> {
        let db = |e: StoreError| {
            (
                None,
                Denial::new(Reason::Internal, format!("lease store: {e}")),
            )
        };
        if self
            .leases
            .is_revoked(RevocationKind::Subject, &token.issuer, &token.subject)
            .await
            .map_err(db)?
        {
            return Err((
                None,
                Denial::new(
                    Reason::SubjectRevoked,
                    "this subject's access has been revoked",
                ),
            ));
        }
        let role = match &request.role {
            Some(asked) => {
                let name = asked.rsplit('/').next().unwrap_or(asked);
                let Some(role) = self.roles.iter().find(|r| r.config.name == name) else {
                    return Err((
                        Some(short(name)),
                        Denial::new(
                            Reason::RoleNotPermitted,
                            format!("no role named {:?}", short(name)),
                        ),
                    ));
                };
                if !role
                    .config
                    .rules
                    .iter()
                    .any(|r| rule_matches(r, &token.claims))
                {
                    return Err((
                        Some(name.to_owned()),
                        Denial::new(
                            Reason::RoleNotPermitted,
                            format!("the token's claims do not match role {name:?}"),
                        ),
                    ));
                }
                role
            }
            None => self
                .roles
                .iter()
                .find(|r| {
                    r.config
                        .rules
                        .iter()
                        .any(|rule| rule_matches(rule, &token.claims))
                })
                .ok_or_else(|| {
                    (
                        None,
                        Denial::new(Reason::NoMatchingRole, "no role matches the token's claims"),
                    )
                })?,
        };
        let name = Some(role.config.name.clone());
        if self
            .leases
            .is_revoked(RevocationKind::Role, "", &role.config.name)
            .await
            .map_err(db)?
        {
            return Err((
                name,
                Denial::new(Reason::RoleRevoked, "this role has been revoked"),
            ));
        }
        self.check_lease_limits(token, &role.config.name)
            .await
            .map_err(|d| (name.clone(), d))?;
        let mut prefixes = Vec::new();
        for t in &role.templates {
            match t.render(&token.claims) {
                Ok(p) => prefixes.push(p),
                Err(e @ RenderError::Missing(_)) => {
                    return Err((name, Denial::new(Reason::ClaimMissing, e.to_string())));
                }
                Err(e @ (RenderError::Unsafe(_) | RenderError::Refused(_))) => {
                    return Err((name, Denial::new(Reason::ClaimInvalid, e.to_string())));
                }
            }
        }
        let mut scope = Scope {
            bucket: role.config.bucket.clone(),
            prefixes,
            actions: role.config.actions.iter().copied().collect(),
        };
        if let Some(policy) = &request.policy {
            let narrowed = scope
                .narrow(policy)
                .map_err(|e| (name.clone(), Denial::new(Reason::PolicyInvalid, e)))?;
            if let Err(why) = role.driver.can_enforce(&narrowed, &scope) {
                return Err((name, Denial::new(Reason::PolicyInvalid, why)));
            }
            scope = narrowed;
        }
        let c = &role.config;
        let default = c.default_duration_secs.unwrap_or(c.max_duration_secs);
        let mut duration = request.duration_secs.unwrap_or(default);
        if duration < c.min_duration_secs || duration > c.max_duration_secs {
            return Err((
                name,
                Denial::new(
                    Reason::DurationOutOfBounds,
                    format!(
                        "DurationSeconds {duration} is outside {}..={} for role {:?}",
                        c.min_duration_secs, c.max_duration_secs, c.name
                    ),
                ),
            ));
        }
        if c.bound_to_token {
            let left = self.clock.now().until(token.expires_at).as_secs();
            if duration > left {
                if request.duration_secs.is_some() || left < c.min_duration_secs {
                    return Err((
                        name,
                        Denial::new(
                            Reason::DurationOutOfBounds,
                            format!(
                                "role {:?} may not outlive its token, which expires in {left} s",
                                c.name
                            ),
                        ),
                    ));
                }
                duration = left;
            }
        }
        Ok((role, scope, duration))
    }
}

impl Service {
    /// Refuses a new lease when the subject or the role already holds its maximum of
    /// live ones. Concurrent requests of one subject may each pass before any row is
    /// written, so the cap can be exceeded by at most their number.
    async fn check_lease_limits(&self, token: &VerifiedToken, role: &str) -> Result<(), Denial> {
        let limits = self.lease_limits;
        let failed = |e: crate::leases::StoreError| {
            Denial::new(Reason::Internal, format!("lease store: {e}"))
        };
        let of_subject = self
            .leases
            .count_live(&crate::leases::LeaseFilter {
                issuer: Some(token.issuer.clone()),
                subject: Some(token.subject.clone()),
                ..Default::default()
            })
            .await
            .map_err(failed)?;
        if of_subject >= limits.per_subject {
            return Err(Denial::new(
                Reason::LeaseLimit,
                format!(
                    "this subject already holds {of_subject} live leases (max_live_leases.per_subject = {})",
                    limits.per_subject
                ),
            ));
        }
        let of_role = self
            .leases
            .count_live(&crate::leases::LeaseFilter {
                role: Some(role.to_owned()),
                ..Default::default()
            })
            .await
            .map_err(failed)?;
        if of_role >= limits.per_role {
            return Err(Denial::new(
                Reason::LeaseLimit,
                format!(
                    "this role already has {of_role} live leases (max_live_leases.per_role = {})",
                    limits.per_role
                ),
            ));
        }
        Ok(())
    }
}
