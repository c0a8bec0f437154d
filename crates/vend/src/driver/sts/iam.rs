//! The few IAM calls session revocation needs (`PutRolePolicy`, `DeleteRolePolicy`,
//! `ListRolePolicies`), as SigV4-signed form posts to the STS endpoint — Ceph RGW and
//! MinIO-likes serve IAM on the same endpoint as S3 and STS. Signed with the driver's
//! own credentials; a whole IAM SDK for three calls would cost more than it saves.

use std::time::{Duration, SystemTime};

use aws_sdk_sts::config::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::StsCredentials;

/// How long one IAM call may take, answer included: the shared client only bounds the
/// connect, and a revocation waits on these calls.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What an IAM call came to, short of success.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    /// Not reached, timed out, or failed on its side (5xx, throttling).
    #[error("IAM at {endpoint}: {action}: {reason}")]
    Unavailable {
        endpoint: String,
        action: &'static str,
        reason: String,
    },
    /// The upstream answered and refused (no such role or policy, no permission, no
    /// IAM API at all).
    #[error("IAM at {endpoint}: {action}: {status} {code}")]
    Refused {
        endpoint: String,
        action: &'static str,
        status: u16,
        /// The error code of the answer (`NoSuchEntity`, `AccessDenied`, ...), or
        /// `-` when the answer named none.
        code: String,
    },
}

impl IamError {
    pub fn code(&self) -> Option<&str> {
        match self {
            IamError::Refused { code, .. } => Some(code),
            IamError::Unavailable { .. } => None,
        }
    }

    /// Whether the upstream refused for want of permission (403, `AccessDenied`): the
    /// credentials may not make this call, and asking again will not change that.
    pub fn is_access_denied(&self) -> bool {
        match self {
            IamError::Refused { status, code, .. } => {
                *status == 403 || code.starts_with("AccessDenied")
            }
            IamError::Unavailable { .. } => false,
        }
    }
}

/// The region IAM requests are signed for: `configured` when set; else `us-east-1` for
/// AWS's IAM (`iam.amazonaws.com`, one global endpoint signed for `us-east-1` whatever
/// the region of the STS driver); else the driver's own region (Ceph RGW and the like
/// serve IAM beside STS and take the same region).
pub fn signing_region(endpoint: &str, configured: Option<&str>, driver_region: &str) -> String {
    if let Some(region) = configured {
        return region.to_owned();
    }
    let aws = reqwest::Url::parse(endpoint)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        })
        .is_some_and(|host| host == "amazonaws.com" || host.ends_with(".amazonaws.com"));
    if aws {
        "us-east-1".into()
    } else {
        driver_region.to_owned()
    }
}

pub struct IamClient {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: StsCredentials,
    timeout: Duration,
}

impl IamClient {
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        region: &str,
        credentials: StsCredentials,
    ) -> Self {
        IamClient {
            http,
            endpoint: endpoint.to_owned(),
            region: region.to_owned(),
            credentials,
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The same client with another per-call timeout (tests, which cannot wait ten
    /// seconds for an upstream that never answers).
    #[cfg(test)]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub async fn put_role_policy(
        &self,
        role: &str,
        name: &str,
        document: &str,
    ) -> Result<(), IamError> {
        self.call(
            "PutRolePolicy",
            &[
                ("RoleName", role),
                ("PolicyName", name),
                ("PolicyDocument", document),
            ],
        )
        .await
        .map(|_| ())
    }

    pub async fn delete_role_policy(&self, role: &str, name: &str) -> Result<(), IamError> {
        self.call(
            "DeleteRolePolicy",
            &[("RoleName", role), ("PolicyName", name)],
        )
        .await
        .map(|_| ())
    }

    /// The names of the role's inline policies (the first 1,000: enough for the names
    /// this driver looks for, which it prunes as their sessions expire).
    pub async fn list_role_policies(&self, role: &str) -> Result<Vec<String>, IamError> {
        let body = self
            .call(
                "ListRolePolicies",
                &[("RoleName", role), ("MaxItems", "1000")],
            )
            .await?;
        Ok(elements(&body, "member"))
    }

    /// One signed call; the answer's body when it is a 2xx.
    async fn call(
        &self,
        action: &'static str,
        params: &[(&str, &str)],
    ) -> Result<String, IamError> {
        let unavailable = |reason: String| IamError::Unavailable {
            endpoint: self.endpoint.clone(),
            action,
            reason,
        };
        let mut form: Vec<(&str, &str)> = vec![("Action", action), ("Version", "2010-05-08")];
        form.extend_from_slice(params);
        let body = serde_urlencoded::to_string(&form)
            .map_err(|e| unavailable(format!("cannot encode the request: {e}")))?;
        let url = format!("{}/", self.endpoint.trim_end_matches('/'));
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let headers = self
            .signed_headers(&url, content_type, body.as_bytes())
            .map_err(|e| unavailable(format!("cannot sign the request: {e}")))?;
        let mut request = self
            .http
            .post(&url)
            .timeout(self.timeout)
            .header("content-type", content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let answer = request.send().await.map_err(|e| {
            unavailable(if e.is_timeout() {
                "timed out".into()
            } else {
                "cannot connect".into()
            })
        })?;
        let status = answer.status().as_u16();
        let text = answer
            .text()
            .await
            .map_err(|_| unavailable("the answer could not be read".into()))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let code = elements(&text, "Code")
            .into_iter()
            .next()
            .unwrap_or_else(|| "-".into());
        if status >= 500 || matches!(code.as_str(), "Throttling" | "ServiceUnavailable") {
            return Err(unavailable(format!("{status} {code}")));
        }
        Err(IamError::Refused {
            endpoint: self.endpoint.clone(),
            action,
            status,
            code,
        })
    }

    /// The SigV4 headers (service `iam`) for a POST of `body` to `url`.
    fn signed_headers(
        &self,
        url: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, String> {
        let identity = Credentials::new(
            self.credentials.access_key_id.expose(),
            self.credentials.secret_access_key.expose(),
            self.credentials
                .session_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
            None,
            "artifactstore-vend",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("iam")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            [("content-type", content_type)].into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }
}

/// The text of every `<tag>…</tag>` in an IAM answer. The answers read here carry
/// policy names (`[\w+=,.@-]`) and error codes only, so no entity needs decoding.
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(rest[..end].trim().to_owned());
        rest = &rest[end + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{IamError, elements, signing_region};

    #[test]
    fn aws_iam_is_signed_for_us_east_1_unless_configured() {
        let aws = "https://iam.amazonaws.com";
        assert_eq!(signing_region(aws, None, "eu-west-1"), "us-east-1");
        assert_eq!(
            signing_region("https://IAM.AmazonAWS.com./", None, "eu-west-1"),
            "us-east-1"
        );
        assert_eq!(
            signing_region(aws, Some("us-gov-west-1"), "eu-west-1"),
            "us-gov-west-1"
        );
        // Ceph RGW and the like: the driver's region.
        assert_eq!(
            signing_region("http://rgw.internal:8000", None, "default"),
            "default"
        );
        assert_eq!(
            signing_region("http://rgw.internal:8000", Some("zg"), "default"),
            "zg"
        );
        // Only a host under amazonaws.com counts, not one that merely ends like it.
        assert_eq!(
            signing_region("https://notamazonaws.com", None, "eu-west-1"),
            "eu-west-1"
        );
        assert_eq!(signing_region("not a url", None, "eu-west-1"), "eu-west-1");
    }

    #[test]
    fn access_denial_is_told_apart() {
        let refused = |status: u16, code: &str| IamError::Refused {
            endpoint: "http://iam".into(),
            action: "PutRolePolicy",
            status,
            code: code.into(),
        };
        assert!(refused(403, "AccessDenied").is_access_denied());
        assert!(refused(403, "-").is_access_denied());
        assert!(refused(400, "AccessDeniedException").is_access_denied());
        assert!(!refused(409, "LimitExceeded").is_access_denied());
        assert!(!refused(404, "NoSuchEntity").is_access_denied());
        let unavailable = IamError::Unavailable {
            endpoint: "http://iam".into(),
            action: "PutRolePolicy",
            reason: "timed out".into(),
        };
        assert!(!unavailable.is_access_denied());
    }

    #[test]
    fn reads_policy_names_and_error_codes() {
        let list = "<ListRolePoliciesResponse><ListRolePoliciesResult><PolicyNames>\
            <member>access</member><member>artifactstore-vend-revoked-1-ab</member>\
            </PolicyNames><IsTruncated>false</IsTruncated></ListRolePoliciesResult>\
            </ListRolePoliciesResponse>";
        assert_eq!(
            elements(list, "member"),
            ["access", "artifactstore-vend-revoked-1-ab"]
        );
        // Ceph RGW puts <Error> at the root; AWS inside <ErrorResponse>.
        let ceph = "<?xml version=\"1.0\"?><Error><Code>NoSuchEntity</Code></Error>";
        let aws = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
            <Message>no</Message></Error></ErrorResponse>";
        assert_eq!(elements(ceph, "Code"), ["NoSuchEntity"]);
        assert_eq!(elements(aws, "Code"), ["AccessDenied"]);
        assert!(elements("<Empty/>", "member").is_empty());
    }
}
