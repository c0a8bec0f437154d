//! The STS actions an endpoint answers, and temporary credentials for the session-token
//! probe.

use aws_credential_types::Credentials;
use aws_sdk_sts::config::{Region, SharedCredentialsProvider};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use artifactstore_credentials::sts_xml;

use super::{
    Outcome, Probe, answer, credentials, fail, pass, skipped, status_and_code, unsupported,
};

const NO_STS: &str = "no STS endpoint: --sts-endpoint or s3.sts_endpoint_url names one";
/// A role that does not exist: asking for it proves AssumeRole is there without a role.
const MADE_UP_ROLE: &str = "arn:aws:iam::000000000000:role/artifactstore-compat-no-such-role";
/// Three base64url segments that are no token anybody signed.
const MADE_UP_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6Im5vbmUifQ.eyJzdWIiOiJjb21wYXQifQ.c2lnbmF0dXJl";

/// Whether an error is STS's own refusal (the action exists) rather than the answer of
/// something that does not know the action (404/405/501, S3's codes, no code at all).
fn sts_refusal(status: Option<u16>, code: &str) -> bool {
    // Codes only STS and IAM use say so whatever the status (Ceph: 404 NoSuchEntity).
    const STS_CODES: &[&str] = &[
        "NoSuchEntity",
        "InvalidIdentityToken",
        "IDPRejectedClaim",
        "IDPCommunicationError",
        "ExpiredToken",
        "MalformedPolicyDocument",
        "PackedPolicyTooLarge",
        "InvalidClientTokenId",
        "ValidationError",
        "InvalidParameterValue",
        "MissingParameter",
    ];
    if STS_CODES.contains(&code) {
        return true;
    }
    let foreign = matches!(
        code,
        "" | "InvalidAction"
            | "NotImplemented"
            | "MethodNotAllowed"
            | "UnknownOperationException"
            | "UnsupportedOperation"
            | "NoSuchBucket"
            | "InvalidBucketName"
            | "InvalidRequest"
            | "InvalidArgument"
    );
    !foreign && !matches!(status, None | Some(404 | 405 | 501))
}

/// Status, code and evidence of a refusal, the code read as the credential sources
/// read it (Ceph RGW puts `<Error>` at the root, where the SDK finds none).
fn refusal<E>(e: &SdkError<E>) -> (Option<u16>, String, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let SdkError::ServiceError(se) = e else {
        let (status, code) = status_and_code(e);
        return (status, code, answer(e));
    };
    let (status, code, _) = artifactstore_credentials::refusal::sdk_answer(se.err(), se.raw());
    let code = code.unwrap_or_default();
    let evidence = if code.is_empty() {
        format!("HTTP {status} (no error code)")
    } else {
        format!("HTTP {status} {code}")
    };
    (Some(status), code, evidence)
}

fn client(p: &Probe, creds: Option<Credentials>) -> Option<aws_sdk_sts::Client> {
    let endpoint = p.options.sts_endpoint.as_deref()?;
    let mut b = aws_sdk_sts::Config::builder()
        .behavior_version_latest()
        .region(Region::new(p.cfg.region.clone()))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        // The store's bounds: a stalled STS must not hang the report (and its cleanup).
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(p.cfg.connect_timeout)
                .read_timeout(p.cfg.read_timeout)
                .operation_timeout(p.cfg.operation_timeout)
                .build(),
        );
    if let Some(c) = creds {
        b = b.credentials_provider(SharedCredentialsProvider::new(c));
    }
    Some(aws_sdk_sts::Client::from_conf(b.build()))
}

/// Temporary credentials for the session-token probe, and the AssumeRole row.
pub(super) struct Temporary {
    credentials: Option<Credentials>,
    /// Why there are none.
    none: String,
    assume_role: Outcome,
}

impl Temporary {
    pub(super) fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    pub(super) fn why_none(&self) -> String {
        self.none.clone()
    }

    pub(super) fn assume_role_row(&self) -> Outcome {
        self.assume_role.clone()
    }
}

/// The configured credential when it is temporary; else, with `--role-arn`, what
/// AssumeRole gives for that role.
pub(super) async fn temporary_credentials(p: &Probe) -> Temporary {
    let configured = p
        .credential
        .session_token
        .is_some()
        .then(|| p.sdk_credentials());
    let Some(sts) = client(p, Some(p.sdk_credentials())) else {
        return Temporary {
            none: if configured.is_some() {
                String::new()
            } else {
                format!("long-lived credentials, and {NO_STS} to get temporary ones from")
            },
            credentials: configured,
            assume_role: skipped(NO_STS),
        };
    };
    let role = p.options.role_arn.as_deref();
    let asked = sts
        .assume_role()
        .role_arn(role.unwrap_or(MADE_UP_ROLE))
        .role_session_name("artifactstore-compat")
        .duration_seconds(900)
        .send()
        .await;
    let (assumed, assume_role) = match (asked, role) {
        (Ok(out), Some(_)) => match out.credentials() {
            Some(c) => (
                Some(credentials(
                    c.access_key_id(),
                    c.secret_access_key(),
                    Some(c.session_token()),
                )),
                pass("temporary credentials for the given role"),
            ),
            None => (None, fail("answered without credentials")),
        },
        (Ok(_), None) => (
            None,
            fail("issued credentials for a role that does not exist"),
        ),
        (Err(e), Some(_)) => (None, fail(format!("the given role: {}", refusal(&e).2))),
        (Err(e), None) => {
            let (status, code, evidence) = refusal(&e);
            let outcome = if sts_refusal(status, &code) {
                pass(format!(
                    "present: a role that does not exist is refused: {evidence}"
                ))
            } else {
                unsupported(evidence)
            };
            (None, outcome)
        }
    };
    let none = if role.is_none() {
        "long-lived credentials, and no role to assume (--role-arn) for temporary ones".to_owned()
    } else {
        "AssumeRole of the given role failed".to_owned()
    };
    Temporary {
        credentials: configured.or(assumed),
        none,
        assume_role,
    }
}

pub(super) async fn web_identity(p: &Probe) -> Outcome {
    let Some(sts) = client(p, None) else {
        return skipped(NO_STS);
    };
    let asked = sts
        .assume_role_with_web_identity()
        .role_arn(p.options.role_arn.as_deref().unwrap_or(MADE_UP_ROLE))
        .role_session_name("artifactstore-compat")
        .web_identity_token(MADE_UP_TOKEN)
        .send()
        .await;
    match asked {
        Ok(_) => fail("issued credentials for a token nobody signed"),
        Err(e) => {
            let (status, code, evidence) = refusal(&e);
            // An unsigned request is refused by stores without STS too: the action is
            // there only if it is refused otherwise than an action nobody has.
            let baseline = unknown_action(p).await;
            if baseline == (status, code.clone()) {
                unsupported(format!("{evidence}, as for an unknown action"))
            } else if sts_refusal(status, &code) {
                pass(format!("present: a made-up token is refused: {evidence}"))
            } else {
                unsupported(evidence)
            }
        }
    }
}

/// The status and code an unsigned request for an action that does not exist gets.
async fn unknown_action(p: &Probe) -> (Option<u16>, String) {
    let Some(endpoint) = p.options.sts_endpoint.as_deref() else {
        return (None, String::new());
    };
    let sent = p
        .http
        .post(endpoint)
        .form(&[
            ("Action", "ArtifactstoreCompatNoSuchAction"),
            ("Version", "2011-06-15"),
        ])
        .send()
        .await;
    let Ok(resp) = sent else {
        return (None, String::new());
    };
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let code = sts_xml::parse_error(&body)
        .map(|e| e.code)
        .unwrap_or_default();
    (Some(status), code)
}

pub(super) async fn caller_identity(p: &Probe) -> Outcome {
    let Some(sts) = client(p, Some(p.sdk_credentials())) else {
        return skipped(NO_STS);
    };
    match sts.get_caller_identity().send().await {
        Ok(out) if out.arn().is_some() => pass("answered the caller's ARN"),
        Ok(_) => fail("answered without an ARN"),
        Err(e) => {
            let (status, code, evidence) = refusal(&e);
            if sts_refusal(status, &code) {
                fail(evidence)
            } else {
                unsupported(evidence)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sts_refusal;

    #[test]
    fn only_sts_refusals_prove_an_action() {
        assert!(sts_refusal(Some(400), "InvalidIdentityToken"));
        assert!(sts_refusal(Some(403), "AccessDenied"));
        assert!(!sts_refusal(Some(405), "MethodNotAllowed"));
        assert!(!sts_refusal(Some(400), "InvalidAction"));
        assert!(!sts_refusal(Some(404), "NoSuchKey"));
        assert!(!sts_refusal(Some(400), ""));
        assert!(!sts_refusal(None, "AccessDenied"));
        assert!(sts_refusal(Some(404), "NoSuchEntity"));
    }
}
