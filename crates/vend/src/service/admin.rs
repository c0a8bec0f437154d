//! Who may call the admin routes, and the audit line of every call.
//!
//! A caller is let in by the admin token (`[admin] token_ref`) or, with `[admin] rules`,
//! by an OIDC token that the vending verifier accepts (same issuers, same audience) and
//! whose claims match a rule. Every allowed call is one `admin.call` line naming its
//! actor. Refusals go through the same coalescing windows as vending's refusals before
//! a verified identity: a flood of wrong tokens costs at most two lines per window and
//! client (or verified subject), never one line per request.

use std::net::SocketAddr;

use artifactstore_model::secret::Secret;
use artifactstore_oidc::claims::rule_matches;

use crate::audit::{AuditError, AuditRecord};
use crate::leases::RevocationKind;
use crate::reason::{Denial, Reason};

use super::{Service, client_name, random_hex, short};

/// Who made an admin call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCaller {
    /// The bearer was the admin token.
    Token,
    /// A verified token whose claims an `[admin] rules` entry matched.
    Identity { issuer: String, subject: String },
}

impl AdminCaller {
    /// The `actor` of its audit lines: `admin-token`, or `ISSUER SUBJECT`.
    pub fn actor(&self) -> String {
        match self {
            AdminCaller::Token => "admin-token".to_owned(),
            AdminCaller::Identity { issuer, subject } => format!("{issuer} {}", short(subject)),
        }
    }
}

/// An admin call refused: the answer's status, code and message, and the request id
/// of its audit line (none when the admin API is off: nothing was served).
#[derive(Debug)]
pub struct AdminRefusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub request_id: Option<String>,
}

/// Whether `given` is the admin token, compared in constant time.
pub fn is_admin_token(expected: &Secret, given: &Secret) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(
        given.expose().as_bytes(),
        expected.expose().as_bytes(),
    )
    .is_ok()
}

impl Service {
    /// Whether the admin routes are on: an admin token, admin rules, or both.
    pub fn admin_enabled(&self) -> bool {
        self.admin_token.is_some() || !self.admin_rules.is_empty()
    }

    /// Decides who may make an admin `call` (`METHOD /path?query`, for the audit
    /// line). The admin token is tried first; any other bearer is verified as an OIDC
    /// token only when `[admin] rules` are configured, so a deployment with the token
    /// alone never fetches keys for its admin routes. A verified subject under a
    /// standing revocation is refused like one that no rule matches: revoking a
    /// subject takes its admin access away too.
    pub async fn authorize_admin(
        &self,
        bearer: Option<&Secret>,
        client: Option<SocketAddr>,
        call: &str,
    ) -> Result<AdminCaller, AdminRefusal> {
        if !self.admin_enabled() {
            return Err(AdminRefusal {
                status: 404,
                code: "admin_disabled",
                message: "the admin API is off: set [admin] token_ref or [admin] rules".into(),
                request_id: None,
            });
        }
        let mut record = AuditRecord {
            event: "admin.call",
            client: Some(client_name(client)),
            ..Default::default()
        };
        let Some(bearer) = bearer else {
            let denial = Denial::new(
                Reason::Unauthorized,
                "Authorization: Bearer <admin token or OIDC token> is missing",
            );
            return Err(self.refuse_admin(record, None, denial, call).await);
        };
        if self
            .admin_token
            .as_ref()
            .is_some_and(|expected| is_admin_token(expected, bearer))
        {
            return Ok(AdminCaller::Token);
        }
        if self.admin_rules.is_empty() {
            let denial = Denial::new(Reason::Unauthorized, "the admin token is wrong");
            return Err(self.refuse_admin(record, None, denial, call).await);
        }
        let token = match self.verifier.verify(bearer.expose()).await {
            Ok(token) => token,
            Err(refusal) => {
                let claimed = self.verifier.claimed_identity(bearer.expose());
                record.issuer = claimed.issuer;
                record.subject = claimed.subject;
                record.identity_verified = Some(false);
                // Audited under the token's own reason (`token_expired`, ...), answered
                // 401 like any other bearer that proves nothing.
                let denial = Denial::from(refusal);
                let mut refused = self.refuse_admin(record, None, denial.clone(), call).await;
                refused.status = 401;
                refused.code = Reason::Unauthorized.as_str();
                refused.message = format!(
                    "neither the admin token nor an acceptable token: {}: {}",
                    denial.reason.as_str(),
                    denial.message
                );
                return Err(refused);
            }
        };
        let caller = AdminCaller::Identity {
            issuer: token.issuer.clone(),
            subject: token.subject.clone(),
        };
        record.issuer = Some(token.issuer.clone());
        record.subject = Some(short(&token.subject));
        record.identity_verified = Some(true);
        record.actor = Some(caller.actor());
        let subject = Some((token.issuer.clone(), token.subject.clone()));
        let revoked = self
            .leases
            .is_revoked(RevocationKind::Subject, &token.issuer, &token.subject)
            .await;
        let denial = match revoked {
            Err(e) => Denial::new(Reason::Internal, format!("lease store: {e}")),
            Ok(true) => Denial::new(
                Reason::Forbidden,
                format!(
                    "the access of {} is revoked, admin access included",
                    caller.actor()
                ),
            ),
            Ok(false)
                if self
                    .admin_rules
                    .iter()
                    .any(|r| rule_matches(r, &token.claims)) =>
            {
                return Ok(caller);
            }
            Ok(false) => Denial::new(
                Reason::Forbidden,
                format!(
                    "no [admin] rules entry matches the token of {}: the admin API takes the \
                     admin token or a token whose claims match one of those rules",
                    caller.actor()
                ),
            ),
        };
        Err(self.refuse_admin(record, subject, denial, call).await)
    }

    /// An admin refusal's audit line, through the coalescing windows (per client, and
    /// per verified subject apart), and its answer. A refusal is answered whether or
    /// not its line is written: refusing takes nothing away from anyone.
    async fn refuse_admin(
        &self,
        record: AuditRecord,
        subject: Option<(String, String)>,
        denial: Denial,
        call: &str,
    ) -> AdminRefusal {
        let detail = format!("{call}: {}", denial.message);
        let request_id = self.coalesce(record, subject, &denial, Some(detail)).await;
        AdminRefusal {
            status: denial.reason.status(),
            code: denial.reason.as_str(),
            message: denial.message,
            request_id: Some(request_id),
        }
    }

    /// The one `admin.call` line of an allowed call, with who made it. The call goes
    /// ahead when it cannot be written (reads and revocations take nothing from
    /// anyone; lifting a revocation waits for its own `revocation.removed` line).
    pub async fn audit_admin_call(
        &self,
        caller: &AdminCaller,
        client: Option<SocketAddr>,
        call: &str,
    ) -> Result<(), AuditError> {
        let (issuer, subject) = match caller {
            AdminCaller::Token => (None, None),
            AdminCaller::Identity { issuer, subject } => {
                (Some(issuer.clone()), Some(short(subject)))
            }
        };
        let record = AuditRecord {
            event: "admin.call",
            request_id: Some(random_hex(8)),
            decision: Some("allow"),
            detail: Some(call.to_owned()),
            identity_verified: issuer.as_ref().map(|_| true),
            issuer,
            subject,
            client: client.map(|c| c.to_string()),
            actor: Some(caller.actor()),
            ..Default::default()
        };
        self.audit.append(&record).await
    }
}
