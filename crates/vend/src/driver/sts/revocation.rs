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
        // Before the write, so that expired denies free their room in the role's
        // inline-policy quota (on AWS, about fifty of these) before it is needed.
        self.prune(now, false).await;
        let name = policy_name(expires_at, lease_id);
        let document = deny_document(session_name);
        let mut put = self
            .iam
            .put_role_policy(&self.role_name, &name, &document)
            .await;
        // Refused, but not for want of permission (a full quota): whatever has expired
        // since the last prune may make room; once more if it did.
        if let Err(e @ IamError::Refused { .. }) = &put
            && !e.is_access_denied()
            && self.prune(now, true).await > 0
        {
            put = self
                .iam
                .put_role_policy(&self.role_name, &name, &document)
                .await;
        }
        match put {
            Ok(()) => Ok(Revoked::Denied),
            Err(e) if e.is_access_denied() => {
                // Listing was allowed, writing is not: these credentials cannot revoke
                // anything, which is the honest answer; asked again like a failed probe.
                tracing::warn!(
                    role = %self.role_name,
                    error = %e,
                    "revoke_sessions = \"auto\": the upstream lets this driver's credentials list the role's policies but not write one (iam:PutRolePolicy on the role is missing), so STS sessions stay usable until they expire"
                );
                *self.probed.lock().await = Some((Instant::now(), Err(e.to_string())));
                Ok(Revoked::Unsupported)
            }
            Err(e @ IamError::Unavailable { .. }) => Err(DriverError::Unavailable(e.to_string())),
            Err(e @ IamError::Refused { .. }) => Err(DriverError::Refused(e.to_string())),
        }
    }

    /// Whether the upstream takes role policies from us, asked once and remembered
    /// (a refusal for `REPROBE_AFTER`): listing the role's policies needs the IAM API
    /// and a permission on this role; a refused write later counts as a refused probe.
    async fn probe(&self) -> Result<Result<(), String>, DriverError> {
        // Not held across the call: a slow upstream must not queue every revocation
        // behind one probe. Two revocations at once may both ask; either answer does.
        if let Some((at, result)) = self.probed.lock().await.as_ref()
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
        *self.probed.lock().await = Some((Instant::now(), result.clone()));
        Ok(result)
    }

    /// Deletes our policies whose session has expired, at most every `PRUNE_EVERY`
    /// unless `now_anyway`; how many it deleted. Failures wait for the next round (a
    /// stale deny only denies a session that no longer works).
    async fn prune(&self, now: Timestamp, now_anyway: bool) -> usize {
        {
            let mut last = self.last_prune.lock().await;
            if !now_anyway && last.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return 0;
            }
            *last = Some(Instant::now());
        }
        let names = match self.iam.list_role_policies(&self.role_name).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(role = %self.role_name, error = %e, "could not list revocation policies to prune");
                return 0;
            }
        };
        let before = now.saturating_sub(SKEW).unix_secs();
        let mut deleted = 0;
        let expired = names
            .into_iter()
            .filter(|name| policy_expiry(name).is_some_and(|exp| exp < before));
        for name in expired {
            match self.iam.delete_role_policy(&self.role_name, &name).await {
                Ok(()) => deleted += 1,
                Err(e) if e.code() == Some("NoSuchEntity") => deleted += 1,
                Err(e) => {
                    tracing::warn!(role = %self.role_name, policy = %name, error = %e, "could not delete an expired revocation policy");
                }
            }
        }
        deleted
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex as StdMutex};

    use artifactstore_model::secret::Secret;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::super::StsCredentials;
    use super::*;

    /// The IAM of one role, as the fake upstream keeps it.
    #[derive(Default)]
    struct Upstream {
        policies: BTreeSet<String>,
        /// `PutRolePolicy` of a new name fails with `LimitExceeded` at this many.
        quota: usize,
        /// `PutRolePolicy` is refused with 403 `AccessDenied` (listing is allowed).
        deny_put: bool,
        /// `Action` of every call, in order.
        calls: Vec<String>,
    }

    impl Upstream {
        fn answer(&mut self, form: &[(String, String)]) -> (u16, String) {
            let param = |k: &str| {
                form.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let action = param("Action");
            self.calls.push(action.clone());
            let error = |status, code: &str| {
                (
                    status,
                    format!("<ErrorResponse><Error><Code>{code}</Code></Error></ErrorResponse>"),
                )
            };
            match action.as_str() {
                "ListRolePolicies" => {
                    let members: String = self
                        .policies
                        .iter()
                        .map(|n| format!("<member>{n}</member>"))
                        .collect();
                    (
                        200,
                        format!(
                            "<ListRolePoliciesResponse><PolicyNames>{members}</PolicyNames></ListRolePoliciesResponse>"
                        ),
                    )
                }
                "PutRolePolicy" if self.deny_put => error(403, "AccessDenied"),
                "PutRolePolicy" => {
                    let name = param("PolicyName");
                    if !self.policies.contains(&name) && self.policies.len() >= self.quota {
                        return error(409, "LimitExceeded");
                    }
                    self.policies.insert(name);
                    (200, "<PutRolePolicyResponse/>".into())
                }
                "DeleteRolePolicy" => {
                    if self.policies.remove(&param("PolicyName")) {
                        (200, "<DeleteRolePolicyResponse/>".into())
                    } else {
                        error(404, "NoSuchEntity")
                    }
                }
                _ => error(400, "InvalidAction"),
            }
        }
    }

    /// Serves `upstream` as an IAM endpoint (one request per connection); its URL.
    /// With `silent`, it accepts connections and never answers.
    async fn serve(upstream: Arc<StdMutex<Upstream>>, silent: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_len, body_len) = loop {
                        let n = conn.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (end + 4, len);
                        }
                    };
                    while buf.len() < head_len + body_len {
                        let n = conn.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    if silent {
                        std::future::pending::<()>().await;
                    }
                    let form: Vec<(String, String)> =
                        serde_urlencoded::from_bytes(&buf[head_len..head_len + body_len]).unwrap();
                    let (status, body) = upstream.lock().unwrap().answer(&form);
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        url
    }

    fn iam_client(url: &str) -> IamClient {
        let http = artifactstore_credentials::sources::http_client_builder(Duration::from_secs(5))
            .build()
            .unwrap();
        IamClient::new(
            http,
            url,
            "us-east-1",
            StsCredentials {
                access_key_id: Secret::new("AKID"),
                secret_access_key: Secret::new("secret"),
                session_token: None,
            },
        )
    }

    async fn revocation(upstream: &Arc<StdMutex<Upstream>>) -> SessionRevocation {
        let url = serve(upstream.clone(), false).await;
        SessionRevocation::new(iam_client(&url), "vend".into(), RevokeSessions::Auto)
    }

    fn in_secs(secs: u64) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now()).saturating_add(Duration::from_secs(secs))
    }

    fn calls(upstream: &Arc<StdMutex<Upstream>>) -> Vec<String> {
        std::mem::take(&mut upstream.lock().unwrap().calls)
    }

    /// A policy of ours whose session expired long ago.
    const EXPIRED: &str = "artifactstore-vend-revoked-1000000000-00aa";

    #[tokio::test]
    async fn a_refused_write_is_unsupported_and_waits_like_a_refused_probe() {
        let upstream = Arc::new(StdMutex::new(Upstream {
            quota: 50,
            deny_put: true,
            ..Upstream::default()
        }));
        let r = revocation(&upstream).await;
        // Listing is allowed, so the probe passes; the write is refused: the honest
        // answer is that the session lives on, not an error that keeps the lease.
        assert_eq!(
            r.revoke("00ff", "artifactstore-00ff", in_secs(900))
                .await
                .unwrap(),
            Revoked::Unsupported
        );
        assert_eq!(
            calls(&upstream),
            ["ListRolePolicies", "ListRolePolicies", "PutRolePolicy"]
        );
        // Remembered as a refused probe: the next revocation asks nothing upstream.
        assert_eq!(
            r.revoke("00fe", "artifactstore-00fe", in_secs(900))
                .await
                .unwrap(),
            Revoked::Unsupported
        );
        assert!(calls(&upstream).is_empty());
        assert!(r.probed.lock().await.as_ref().is_some_and(|(_, result)| {
            result
                .as_ref()
                .is_err_and(|e| e.contains("PutRolePolicy: 403"))
        }));
    }

    #[tokio::test]
    async fn a_full_role_is_pruned_before_the_write() {
        // The role's quota is full with its own policy and an expired deny of ours.
        let upstream = Arc::new(StdMutex::new(Upstream {
            policies: ["access".to_owned(), EXPIRED.to_owned()].into(),
            quota: 2,
            ..Upstream::default()
        }));
        let r = revocation(&upstream).await;
        assert_eq!(
            r.revoke("00ff", "artifactstore-00ff", in_secs(900))
                .await
                .unwrap(),
            Revoked::Denied
        );
        assert_eq!(
            calls(&upstream),
            [
                "ListRolePolicies",
                "ListRolePolicies",
                "DeleteRolePolicy",
                "PutRolePolicy"
            ]
        );
        let policies = upstream.lock().unwrap().policies.clone();
        assert!(policies.contains("access") && !policies.contains(EXPIRED));
        assert_eq!(policies.len(), 2, "{policies:?}");
    }

    #[tokio::test]
    async fn a_write_refused_for_room_prunes_at_once_and_is_tried_again() {
        let upstream = Arc::new(StdMutex::new(Upstream {
            policies: ["access".to_owned()].into(),
            quota: 2,
            ..Upstream::default()
        }));
        let r = revocation(&upstream).await;
        assert_eq!(
            r.revoke("00ff", "artifactstore-00ff", in_secs(900))
                .await
                .unwrap(),
            Revoked::Denied
        );
        calls(&upstream);
        // The role is full again, with a deny whose session expired since the last
        // prune (which is not due for minutes): the refused write prunes anyway, and
        // the second attempt lands.
        {
            let mut u = upstream.lock().unwrap();
            u.policies.clear();
            u.policies.insert("access".into());
            u.policies.insert(EXPIRED.into());
        }
        assert_eq!(
            r.revoke("00fe", "artifactstore-00fe", in_secs(900))
                .await
                .unwrap(),
            Revoked::Denied
        );
        assert_eq!(
            calls(&upstream),
            [
                "PutRolePolicy",
                "ListRolePolicies",
                "DeleteRolePolicy",
                "PutRolePolicy"
            ]
        );
        // Nothing to prune: the refusal is the answer, once, and the lease stays.
        let err = r
            .revoke("00fd", "artifactstore-00fd", in_secs(900))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DriverError::Refused(text) if text.contains("LimitExceeded")),
            "{err:?}"
        );
        assert_eq!(calls(&upstream), ["PutRolePolicy", "ListRolePolicies"]);
    }

    #[tokio::test]
    async fn an_upstream_that_never_answers_times_out() {
        let upstream = Arc::new(StdMutex::new(Upstream::default()));
        let url = serve(upstream, true).await;
        let iam = iam_client(&url).with_timeout(Duration::from_millis(300));
        let answer = tokio::time::timeout(Duration::from_secs(10), iam.list_role_policies("vend"))
            .await
            .expect("an IAM call without a timeout of its own");
        assert!(
            matches!(&answer, Err(IamError::Unavailable { reason, .. }) if reason == "timed out"),
            "{answer:?}"
        );
    }

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
