//! The STS driver: `AssumeRole` at an upstream STS (MinIO, RustFS, Ceph RGW, AWS),
//! signed with the vending service's own credentials, with an inline session policy
//! generated from the role's scope, for the lease's duration. An STS session cannot be
//! deleted upstream; with `revoke_sessions = "auto"`, on an upstream that evaluates the
//! assumed role's own policy (Ceph RGW, AWS), a revoked session is denied there
//! ([`revocation`]); otherwise revocation refuses future vending and says the session
//! lasts until it expires.

mod iam;
pub mod revocation;

use std::time::Duration;

use artifactstore_credentials::refusal;
use artifactstore_model::Timestamp;
use artifactstore_model::secret::Secret;
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::config::{
    BehaviorVersion, Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};

use self::iam::IamClient;
use self::revocation::SessionRevocation;
use super::{DriverError, MintDriver, MintRequest, Minted, Revoked};
use crate::config::RevokeSessions;
use crate::policy::Scope;

pub struct StsDriver {
    client: aws_sdk_sts::Client,
    endpoint: String,
    region: String,
    role_arn: String,
    credentials: StsCredentials,
    /// Denies revoked sessions upstream; `None` until configured (sessions then last
    /// until they expire).
    revocation: Option<SessionRevocation>,
}

#[derive(Clone)]
pub struct StsCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl StsDriver {
    pub fn new(endpoint: &str, region: &str, role_arn: &str, creds: StsCredentials) -> Self {
        let credentials = Credentials::new(
            creds.access_key_id.expose(),
            creds.secret_access_key.expose(),
            creds.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "artifactstore-vend",
        );
        let config = aws_sdk_sts::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(endpoint)
            .credentials_provider(credentials)
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(20))
                    .build(),
            )
            .build();
        StsDriver {
            client: aws_sdk_sts::Client::from_conf(config),
            endpoint: endpoint.to_owned(),
            region: region.to_owned(),
            role_arn: role_arn.to_owned(),
            credentials: creds,
            revocation: None,
        }
    }

    /// Revokes sessions upstream as `mode` says, through the IAM API at `iam_endpoint`
    /// (default: the STS endpoint, where Ceph RGW serves IAM), signed for `iam_region`
    /// (default: see [`iam::signing_region`]). Refused when the role ARN names no role
    /// whose policy could be changed.
    pub fn with_session_revocation(
        mut self,
        mode: RevokeSessions,
        iam_endpoint: Option<&str>,
        iam_region: Option<&str>,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        if mode == RevokeSessions::Off {
            return Ok(self);
        }
        let role = revocation::role_name(&self.role_arn).ok_or_else(|| {
            format!(
                "revoke_sessions = \"auto\" needs role_arn to be an IAM role ARN (arn:aws:iam::<account>:role/<name>), not {:?}",
                self.role_arn
            )
        })?;
        let iam_endpoint = iam_endpoint.unwrap_or(&self.endpoint);
        let iam = IamClient::new(
            http,
            iam_endpoint,
            &iam::signing_region(iam_endpoint, iam_region, &self.region),
            self.credentials.clone(),
        );
        self.revocation = Some(SessionRevocation::new(iam, role.to_owned(), mode));
        Ok(self)
    }

    fn classify<E>(&self, op: &str, e: &SdkError<E, HttpResponse>) -> DriverError
    where
        E: ProvideErrorMetadata + std::error::Error,
    {
        match e {
            SdkError::ServiceError(se) => {
                let (status, code, message) = refusal::sdk_answer(se.err(), se.raw());
                let code = code.unwrap_or_default();
                let answer = refusal::Answer {
                    status,
                    code: &code,
                    message: &message,
                };
                let text = match op.strip_prefix("AssumeRole").map(str::trim) {
                    // What to check when the store gives no reason (Ceph RGW).
                    Some("") => refusal::assume_role(&self.endpoint, &self.role_arn, &answer),
                    Some(what) => format!(
                        "{what} {}",
                        refusal::assume_role(&self.endpoint, &self.role_arn, &answer)
                    ),
                    None => format!("STS at {}: {op}: {}", self.endpoint, answer.head()),
                };
                if status >= 500
                    || matches!(
                        code.as_str(),
                        "InternalError" | "ServiceUnavailable" | "Throttling"
                    )
                {
                    DriverError::Unavailable(text)
                } else {
                    DriverError::Refused(text)
                }
            }
            SdkError::TimeoutError(_) => {
                DriverError::Unavailable(format!("STS at {}: {op}: timed out", self.endpoint))
            }
            SdkError::DispatchFailure(_) => {
                DriverError::Unavailable(format!("STS at {}: {op}: cannot connect", self.endpoint))
            }
            SdkError::ResponseError(_) => DriverError::Unavailable(format!(
                "STS at {}: {op}: the answer could not be read",
                self.endpoint
            )),
            _ => {
                DriverError::Unavailable(format!("STS at {}: {op}: request failed", self.endpoint))
            }
        }
    }
}

/// `RoleSessionName` allows `[\w+=,.@-]{2,64}`.
fn session_name(lease_id: &str) -> String {
    format!("artifactstore-{lease_id}")
        .chars()
        .take(64)
        .collect()
}

#[async_trait::async_trait]
impl MintDriver for StsDriver {
    fn kind(&self) -> &'static str {
        "sts"
    }

    fn can_enforce(&self, _scope: &Scope, _base: &Scope) -> Result<(), String> {
        Ok(())
    }

    async fn mint(&self, request: &MintRequest<'_>) -> Result<Minted, DriverError> {
        let out = self
            .client
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(session_name(request.lease_id))
            .policy(request.scope.session_policy())
            .duration_seconds(request.duration.as_secs().min(i32::MAX as u64) as i32)
            .send()
            .await
            .map_err(|e| self.classify("AssumeRole", &e))?;
        let Some(c) = out.credentials() else {
            return Err(DriverError::Unavailable(format!(
                "STS at {}: AssumeRole answered without credentials",
                self.endpoint
            )));
        };
        Ok(Minted {
            access_key_id: c.access_key_id().to_owned(),
            secret_access_key: Secret::new(c.secret_access_key()),
            session_token: Some(Secret::new(c.session_token())),
            expires_at: Timestamp::from_unix_secs(c.expiration().secs()),
        })
    }

    /// What the reaper asks for a lease past its expiry: its session has expired with
    /// it, and a session cannot be deleted upstream anyway.
    async fn revoke(&self, _lease_id: &str, _key: Option<&str>) -> Result<Revoked, DriverError> {
        Ok(Revoked::Unsupported)
    }

    async fn revoke_unexpired(
        &self,
        lease_id: &str,
        _key: Option<&str>,
        expires_at: Timestamp,
    ) -> Result<Revoked, DriverError> {
        match &self.revocation {
            // The session name is known from the lease id alone, so a session whose
            // key was never recorded (a crash mid-issue) is denied all the same.
            Some(r) => {
                r.revoke(lease_id, &session_name(lease_id), expires_at)
                    .await
            }
            None => Ok(Revoked::Unsupported),
        }
    }

    async fn check(&self) -> Result<(), DriverError> {
        match self.client.get_caller_identity().send().await {
            Ok(_) => return Ok(()),
            Err(e) => match self.classify("GetCallerIdentity", &e) {
                DriverError::Refused(text)
                    if text.contains("InvalidClientTokenId")
                        || text.contains("SignatureDoesNotMatch")
                        || text.contains("InvalidAccessKeyId") =>
                {
                    return Err(DriverError::Refused(text));
                }
                // Not served here (Ceph RGW answers 405 MethodNotAllowed without even
                // checking the signature; MinIO refuses it): ask what minting asks.
                DriverError::Refused(_) => {}
                unavailable => return Err(unavailable),
            },
        }
        self.probe_assume_role().await
    }
}

/// The session policy of the readiness probe: one object action on one key of a bucket
/// named for the probe, the same shape as a lease's policy, so a store that takes those
/// takes this one; the session it opens is never used.
const PROBE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::artifactstore-readiness-probe/none"]}]}"#;

impl StsDriver {
    /// Readiness where `GetCallerIdentity` proves nothing: an `AssumeRole` of the
    /// configured role with our credentials, for the shortest session, granting
    /// nothing useful. It fails exactly when minting would (wrong secret, a role that
    /// does not exist or does not trust our user).
    async fn probe_assume_role(&self) -> Result<(), DriverError> {
        self.client
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name("artifactstore-vend-readiness")
            .policy(PROBE_POLICY)
            .duration_seconds(900)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.classify("AssumeRole readiness probe:", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver(role_arn: &str) -> StsDriver {
        StsDriver::new(
            "http://127.0.0.1:9",
            "us-east-1",
            role_arn,
            StsCredentials {
                access_key_id: Secret::new("AKID"),
                secret_access_key: Secret::new("secret"),
                session_token: None,
            },
        )
    }

    #[test]
    fn session_revocation_needs_a_role_arn_only_when_asked_for() {
        let http = reqwest::Client::new();
        // MinIO accepts any role ARN; with revocation off nothing reads it.
        assert!(
            driver("anything")
                .with_session_revocation(RevokeSessions::Off, None, None, http.clone())
                .is_ok()
        );
        let refused = driver("anything")
            .with_session_revocation(RevokeSessions::Auto, None, None, http.clone())
            .err()
            .unwrap();
        assert!(refused.contains("IAM role ARN"), "{refused}");
        let on = driver("arn:aws:iam::123:role/vend")
            .with_session_revocation(RevokeSessions::Auto, None, None, http)
            .unwrap();
        assert!(on.revocation.is_some());
    }

    #[tokio::test]
    async fn without_session_revocation_a_revoked_session_is_unsupported() {
        let d = driver("arn:aws:iam::123:role/vend");
        let later = Timestamp::from_system_time(std::time::SystemTime::now())
            .saturating_add(Duration::from_secs(600));
        // Nothing upstream is asked (the endpoint is a closed port).
        assert_eq!(
            d.revoke_unexpired("00ff", None, later).await.unwrap(),
            Revoked::Unsupported
        );
    }
}
