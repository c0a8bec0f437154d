//! The STS wire format, in one serde model: the vend service writes these documents and
//! the `web-identity` source reads them (from vend, Ceph RGW, MinIO, RustFS or AWS).
//! quick-xml does the escaping and parsing; nothing here scans for tags by hand.
//!
//! Elements a store adds that are not modelled (AWS's `PackedPolicySize`,
//! `SourceIdentity`, …) are ignored when reading.

use serde::{Deserialize, Serialize};

/// The namespace AWS puts on STS answers.
pub const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

#[derive(Serialize, Deserialize)]
#[serde(rename = "AssumeRoleWithWebIdentityResponse")]
pub struct AssumeRoleWithWebIdentityResponse {
    #[serde(rename = "@xmlns", default, skip_serializing_if = "Option::is_none")]
    pub xmlns: Option<String>,
    #[serde(rename = "AssumeRoleWithWebIdentityResult")]
    pub result: AssumeRoleWithWebIdentityResult,
    #[serde(rename = "ResponseMetadata", default)]
    pub metadata: ResponseMetadata,
}

#[derive(Serialize, Deserialize)]
pub struct AssumeRoleWithWebIdentityResult {
    #[serde(
        rename = "AssumedRoleUser",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub assumed_role_user: Option<AssumedRoleUser>,
    #[serde(rename = "Credentials")]
    pub credentials: Credentials,
    #[serde(
        rename = "SubjectFromWebIdentityToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subject: Option<String>,
    #[serde(rename = "Audience", default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(rename = "Provider", default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct AssumedRoleUser {
    #[serde(rename = "Arn")]
    pub arn: String,
    #[serde(rename = "AssumeRoleId")]
    pub assume_role_id: String,
}

/// Carries a secret in the clear, because it is the wire document; its `Debug` shows
/// only the key id, and it lives no longer than one request or answer.
#[derive(Serialize, Deserialize)]
pub struct Credentials {
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    pub secret_access_key: String,
    #[serde(rename = "SessionToken", default)]
    pub session_token: String,
    #[serde(rename = "Expiration")]
    pub expiration: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct ResponseMetadata {
    #[serde(rename = "RequestId", default)]
    pub request_id: String,
}

/// AWS and MinIO: `<ErrorResponse><Error>…</Error><RequestId/></ErrorResponse>`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename = "ErrorResponse")]
pub struct ErrorResponse {
    #[serde(rename = "@xmlns", default, skip_serializing_if = "Option::is_none")]
    pub xmlns: Option<String>,
    #[serde(rename = "Error")]
    pub error: StsError,
    #[serde(rename = "RequestId", default)]
    pub request_id: String,
}

/// moto: `<ErrorResponse><Errors><Error>…</Error></Errors></ErrorResponse>`.
#[derive(Deserialize)]
struct WrappedErrorResponse {
    #[serde(rename = "Errors")]
    errors: Errors,
}

#[derive(Deserialize)]
struct Errors {
    #[serde(rename = "Error")]
    error: StsError,
}

/// One STS error. Ceph RGW answers this element at the document root.
#[derive(Serialize, Deserialize, Debug, Default)]
#[serde(rename = "Error")]
pub struct StsError {
    #[serde(rename = "Type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(rename = "Code", default)]
    pub code: String,
    #[serde(rename = "Message", default)]
    pub message: String,
}

/// Writes a document (the XML declaration is not needed by any SDK).
pub fn to_xml<T: Serialize>(doc: &T) -> String {
    quick_xml::se::to_string(doc).expect("STS documents serialize")
}

pub fn parse_web_identity_response(
    body: &str,
) -> Result<AssumeRoleWithWebIdentityResponse, quick_xml::DeError> {
    quick_xml::de::from_str(body)
}

/// The error of a refusal, whichever of the three shapes the store uses; `None` when
/// the body is not an STS error document.
pub fn parse_error(body: &str) -> Option<StsError> {
    // quick-xml does not check the root element's name: an error is a document that
    // names an error code.
    quick_xml::de::from_str::<ErrorResponse>(body)
        .map(|e| e.error)
        .or_else(|_| quick_xml::de::from_str::<WrappedErrorResponse>(body).map(|e| e.errors.error))
        .or_else(|_| quick_xml::de::from_str::<StsError>(body))
        .ok()
        .filter(|e| !e.code.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> AssumeRoleWithWebIdentityResponse {
        AssumeRoleWithWebIdentityResponse {
            xmlns: Some(STS_NS.into()),
            result: AssumeRoleWithWebIdentityResult {
                assumed_role_user: Some(AssumedRoleUser {
                    arn: "arn:aws:sts::000000000000:assumed-role/ci/lease-1".into(),
                    assume_role_id: "1:lease-1".into(),
                }),
                credentials: Credentials {
                    access_key_id: "AK".into(),
                    secret_access_key: "s<e>&c\"ret'".into(),
                    session_token: "tok".into(),
                    expiration: "2026-12-02T10:00:00Z".into(),
                },
                subject: Some("repo:acme/x:ref:refs/heads/main".into()),
                audience: Some("artifactstore".into()),
                provider: Some("https://issuer.example".into()),
            },
            metadata: ResponseMetadata {
                request_id: "r1".into(),
            },
        }
    }

    #[test]
    fn what_vend_writes_the_source_reads() {
        let xml = to_xml(&response());
        assert!(xml.starts_with(&format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"{STS_NS}\"><AssumeRoleWithWebIdentityResult>"
        )));
        assert!(!xml.contains("s<e>"), "escaped: {xml}");
        let back = parse_web_identity_response(&xml).unwrap();
        assert_eq!(back.result.credentials.secret_access_key, "s<e>&c\"ret'");
        assert_eq!(back.result.credentials.access_key_id, "AK");
        assert_eq!(back.metadata.request_id, "r1");
        assert!(!format!("{:?}", back.result.credentials).contains("ret"));
    }

    #[test]
    fn reads_an_aws_answer_with_elements_it_does_not_model() {
        let aws = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>amzn1.account.X</SubjectFromWebIdentityToken>
    <Audience>client.1@apps.example.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/FederatedWebIdentityRole/app1</Arn>
      <AssumeRoleId>AROACLKWSDQRAOEXAMPLE:app1</AssumeRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2014-10-24T23:00:23Z</Expiration>
      <AccessKeyId>ASgeIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <SourceIdentity>SourceIdentityValue</SourceIdentity>
    <Provider>www.amazon.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;
        let r = parse_web_identity_response(aws).unwrap();
        assert_eq!(r.result.credentials.access_key_id, "ASgeIAIOSFODNN7EXAMPLE");
        assert_eq!(r.result.credentials.expiration, "2014-10-24T23:00:23Z");
        assert_eq!(
            r.metadata.request_id,
            "ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE"
        );
    }

    #[test]
    fn reads_both_error_shapes() {
        let doc = ErrorResponse {
            xmlns: Some(STS_NS.into()),
            error: StsError {
                kind: "Sender".into(),
                code: "InvalidIdentityToken".into(),
                message: "token_invalid: bad <sig>".into(),
            },
            request_id: "r".into(),
        };
        let e = parse_error(&to_xml(&doc)).unwrap();
        assert_eq!(e.code, "InvalidIdentityToken");
        assert_eq!(e.message, "token_invalid: bad <sig>");
        // Ceph RGW: the error element is the root.
        let ceph =
            "<Error><Code>AccessDenied</Code><Message></Message><RequestId>tx1</RequestId></Error>";
        assert_eq!(parse_error(ceph).unwrap().code, "AccessDenied");
        // moto: the error wrapped in <Errors>.
        let moto = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ErrorResponse><Errors><Error>\
            <Code>SignatureDoesNotMatch</Code><Message>Check your key</Message>\
            <Type>Sender</Type></Error></Errors></ErrorResponse>";
        let e = parse_error(moto).unwrap();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("SignatureDoesNotMatch", "Check your key")
        );
        assert!(parse_error("not xml").is_none());
        assert!(parse_error("<html><body>502</body></html>").is_none());
    }
}
