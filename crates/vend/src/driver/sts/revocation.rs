//! Revoking STS sessions before they expire, where the upstream evaluates the assumed
//! role's own permission policy on every request (Ceph RGW and AWS do): a deny added
//! to that role outweighs every allow of the session.
//!
//! Each revoked session gets an inline role policy of its own,
//! `artifactstore-vend-revoked-<expiry>-<lease>`, denying every S3 action to the
//! requests whose `aws:userid` ends in the session name the lease was minted under
//! (`<role id>:artifactstore-<lease>`). Why per session and not one deny on
//! `aws:TokenIssueTime` (which Ceph evaluates too): the upstream role is shared by
//! every vend role and subject of the driver, so a time-based deny would cut off
//! sessions nobody revoked. One policy per session needs no read-modify-write of a
//! shared document (no lost update between two replicas revoking at once), and a new
//! session never carries an old name, so lifting a revocation has nothing to undo.
//! The policies are deleted once their session has expired.

use std::time::{Duration, Instant, SystemTime};

use artifactstore_model::Timestamp;
use serde_json::json;
use tokio::sync::Mutex;

use super::iam::{IamClient, IamError};
use crate::config::RevokeSessions;
use crate::driver::{DriverError, Revoked};

/// Every revocation policy of ours starts with this; nothing else is ever deleted.
pub const POLICY_PREFIX: &str = "artifactstore-vend-revoked-";
/// A refused probe (no IAM API, no permission) is tried again after this long, so that
/// granting the permission needs no restart.
const REPROBE_AFTER: Duration = Duration::from_secs(300);
/// Expired sessions' policies are looked for at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// Kept this long past the session's expiry: the upstream's clock may lag ours.
const SKEW: Duration = Duration::from_secs(300);

pub struct SessionRevocation {
    iam: IamClient,
    role_name: String,
    mode: RevokeSessions,
    /// The last probe: when, and whether the upstream takes role policies from us
    /// (`Err` says why not).
    probed: Mutex<Option<(Instant, Result<(), String>)>>,
    last_prune: Mutex<Option<Instant>>,
}

/// The role name of an IAM role ARN (`arn:aws:iam::123:role/path/name` → `name`).
pub fn role_name(role_arn: &str) -> Option<&str> {
    let resource = role_arn.strip_prefix("arn:")?.splitn(5, ':').nth(4)?;
    let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// The revocation policy of one session: deny every S3 action to it, compact (Ceph RGW
/// refuses policy documents with spaces as MalformedPolicyDocument).
pub fn deny_document(session_name: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Deny",
            "Action": ["s3:*"],
            "Resource": ["*"],
            "Condition": {"StringLike": {"aws:userid": format!("*:{session_name}")}}
        }]
    })
    .to_string()
}

pub fn policy_name(expires_at: Timestamp, lease_id: &str) -> String {
    format!("{POLICY_PREFIX}{}-{lease_id}", expires_at.unix_secs())
}

/// The expiry a policy name of ours records (`None` for any other name).
fn policy_expiry(name: &str) -> Option<i64> {
    name.strip_prefix(POLICY_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

impl SessionRevocation {
    pub fn new(iam: IamClient, role_name: String, mode: RevokeSessions) -> Self {
        SessionRevocation {
            iam,
            role_name,
            mode,
            probed: Mutex::new(None),
            last_prune: Mutex::new(None),
        }
    }

    /// Makes the session minted for `lease_id` useless before `expires_at`:
    /// `Denied` when the upstream role now refuses it, `AlreadyGone` when it has
    /// expired anyway, `Unsupported` when revocation is off or the upstream cannot.
    pub async fn revoke(
        &self,
        lease_id: &str,
        session_name: &str,
        expires_at: Timestamp,
    ) -> Result<Revoked, DriverError> {
        if self.mode == RevokeSessions::Off {
            return Ok(Revoked::Unsupported);
        }
        let now = Timestamp::from_system_time(SystemTime::now());
        if expires_at <= now {
            return Ok(Revoked::AlreadyGone);
        }
        if let Err(why) = self.probe().await? {
            tracing::debug!(role = %self.role_name, %why, "sessions cannot be revoked upstream");
            return Ok(Revoked::Unsupported);
        }
        self.iam
            .put_role_policy(
                &self.role_name,
                &policy_name(expires_at, lease_id),
                &deny_document(session_name),
            )
            .await
            .map_err(|e| match e {
                IamError::Unavailable { .. } => DriverError::Unavailable(e.to_string()),
                IamError::Refused { .. } => DriverError::Refused(e.to_string()),
            })?;
        self.prune(now).await;
        Ok(Revoked::Denied)
    }

    /// Whether the upstream takes role policies from us, asked once and remembered
    /// (a refusal for `REPROBE_AFTER`): listing the role's policies needs the IAM API
    /// and the permission on this role that writing one does.
    async fn probe(&self) -> Result<Result<(), String>, DriverError> {
        let mut probed = self.probed.lock().await;
        if let Some((at, result)) = probed.as_ref()
            && (result.is_ok() || at.elapsed() < REPROBE_AFTER)
        {
            return Ok(result.clone());
        }
        let result = match self.iam.list_role_policies(&self.role_name).await {
            Ok(_) => Ok(()),
            Err(e @ IamError::Unavailable { .. }) => {
                return Err(DriverError::Unavailable(e.to_string()));
            }
            Err(e) => {
                tracing::warn!(
                    role = %self.role_name,
                    error = %e,
                    "revoke_sessions = \"auto\": the upstream does not take role policies from this driver's credentials, so STS sessions stay usable until they expire (needs the IAM API and iam:ListRolePolicies, iam:PutRolePolicy, iam:DeleteRolePolicy on the role)"
                );
                Err(e.to_string())
            }
        };
        *probed = Some((Instant::now(), result.clone()));
        Ok(result)
    }

    /// Deletes our policies whose session has expired; failures wait for the next
    /// round (a stale deny only denies a session that no longer works).
    async fn prune(&self, now: Timestamp) {
        {
            let mut last = self.last_prune.lock().await;
            if last.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let names = match self.iam.list_role_policies(&self.role_name).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(role = %self.role_name, error = %e, "could not list revocation policies to prune");
                return;
            }
        };
        let before = now.saturating_sub(SKEW).unix_secs();
        for name in names {
            if policy_expiry(&name).is_some_and(|exp| exp < before)
                && let Err(e) = self.iam.delete_role_policy(&self.role_name, &name).await
                && e.code() != Some("NoSuchEntity")
            {
                tracing::warn!(role = %self.role_name, policy = %name, error = %e, "could not delete an expired revocation policy");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_come_from_arns() {
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/ci/vend"),
            Some("vend")
        );
        assert_eq!(role_name("arn:aws:iam:::role/vend-1"), Some("vend-1"));
        assert_eq!(role_name("arn:aws:iam::tenant:role/x"), Some("x"));
        assert_eq!(role_name("arn:aws:iam::1:user/x"), None);
        assert_eq!(role_name("arn:aws:iam::1:role/"), None);
        assert_eq!(role_name("vend"), None);
    }

    #[test]
    fn deny_documents_are_compact_and_name_one_session() {
        let doc = deny_document("artifactstore-0123abcd");
        assert!(!doc.contains(' '), "{doc}");
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["Statement"][0]["Effect"], "Deny");
        assert_eq!(
            v["Statement"][0]["Condition"]["StringLike"]["aws:userid"],
            "*:artifactstore-0123abcd"
        );
    }

    #[test]
    fn policy_names_record_the_expiry_and_only_ours_are_pruned() {
        let name = policy_name(Timestamp::from_unix_secs(1_796_169_600), "00ff");
        assert_eq!(name, "artifactstore-vend-revoked-1796169600-00ff");
        assert!(name.len() <= 128);
        assert_eq!(policy_expiry(&name), Some(1_796_169_600));
        assert_eq!(policy_expiry("access"), None);
        assert_eq!(policy_expiry("artifactstore-vend-revoked-x-00ff"), None);
    }
}
