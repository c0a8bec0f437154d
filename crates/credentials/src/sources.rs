//! The sources behind the cache. Each reads what it needs at every fetch (token files
//! and sidecar files are re-read, never cached here) and writes nothing to disk.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use artifactstore_model::Timestamp;
use artifactstore_model::secret::Secret;
use serde_json::Value;

use crate::{Credential, CredentialSource, SourceError};

fn parse_time(name: &'static str, s: &str) -> Result<Timestamp, SourceError> {
    Timestamp::parse_rfc3339(s.trim())
        .ok_or_else(|| SourceError::new(name, format!("expiration {s:?} is not an RFC 3339 time")))
}

/// The one HTTP client builder of the workspace (credential sources, vend's issuer and
/// driver calls, the CLI): a connect timeout, so that an unreachable endpoint fails
/// fast, and a user agent naming the version. Callers add an overall timeout where a
/// request must not hang; each source's requests set their own.
pub fn http_client_builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .user_agent(concat!("artifactstore/", env!("CARGO_PKG_VERSION")))
}

/// The HTTP client of the sources that ask an endpoint (web-identity, container).
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, SourceError> {
    http_client_builder(connect_timeout)
        .build()
        .map_err(|e| SourceError::new("http", format!("cannot build the HTTP client: {e}")))
}

/// Why a request to an STS or credentials endpoint got no answer.
fn unreachable(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else {
        "cannot connect"
    }
}

fn read_file(
    name: &'static str,
    path: &std::path::Path,
    what: &str,
) -> Result<String, SourceError> {
    artifactstore_model::secret::read_trimmed_file(path).map_err(|e| match e {
        artifactstore_model::secret::SecretError::FileEmpty(_) => {
            SourceError::new(name, format!("{what} {} is empty", path.display()))
        }
        artifactstore_model::secret::SecretError::File { source, .. } => {
            SourceError::new(name, format!("{what} {}: {source}", path.display()))
        }
        other => SourceError::new(name, format!("{what}: {other}")),
    })
}

/// Long-lived keys from secret references.
pub struct StaticSource {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

#[async_trait::async_trait]
impl CredentialSource for StaticSource {
    fn name(&self) -> &'static str {
        "static"
    }
    async fn fetch(&self) -> Result<Credential, SourceError> {
        Ok(Credential {
            access_key_id: self.access_key_id.expose().to_owned(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
            expires_at: None,
        })
    }
}

/// `AssumeRoleWithWebIdentity` at an STS endpoint of our configuration, with a token
/// file re-read at every fetch. `RoleArn` is optional (MinIO's claim-based mode rejects
/// one). The expiry the STS returns is believed over the duration asked for.
pub struct WebIdentitySource {
    pub token_file: PathBuf,
    pub sts_endpoint: String,
    pub role_arn: Option<String>,
    pub session_name: String,
    pub duration_secs: Option<u64>,
    pub http: reqwest::Client,
}

#[async_trait::async_trait]
impl CredentialSource for WebIdentitySource {
    fn name(&self) -> &'static str {
        "web-identity"
    }

    async fn fetch(&self) -> Result<Credential, SourceError> {
        let name = self.name();
        let token = read_file(name, &self.token_file, "token file")?;
        let mut form: Vec<(&str, String)> = vec![
            ("Action", "AssumeRoleWithWebIdentity".into()),
            ("Version", "2011-06-15".into()),
            ("WebIdentityToken", token.clone()),
            ("RoleSessionName", self.session_name.clone()),
        ];
        if let Some(arn) = &self.role_arn {
            form.push(("RoleArn", arn.clone()));
        }
        if let Some(d) = self.duration_secs {
            form.push(("DurationSeconds", d.to_string()));
        }
        let endpoint = &self.sts_endpoint;
        let resp = self
            .http
            .post(endpoint)
            .form(&form)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| {
                SourceError::new(name, format!("STS at {endpoint}: {}", unreachable(&e)))
            })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|_| {
            SourceError::new(
                name,
                format!("STS at {endpoint}: the answer could not be read"),
            )
        })?;
        if !status.is_success() {
            let (code, message) = crate::sts_xml::parse_error(&body)
                .map_or_else(Default::default, |e| (e.code, e.message));
            let answer = crate::refusal::Answer {
                status: status.as_u16(),
                code: &code,
                message: &message,
            };
            return Err(SourceError::new(
                name,
                crate::refusal::web_identity(
                    endpoint,
                    self.role_arn.as_deref(),
                    &answer,
                    &token,
                    &self.token_file,
                    Timestamp::from_system_time(SystemTime::now()),
                ),
            ));
        }
        // The parser's own message is not shown: it could quote a credential.
        let doc = crate::sts_xml::parse_web_identity_response(&body).map_err(|_| {
            SourceError::new(
                name,
                format!(
                    "STS at {endpoint}: the answer is not an AssumeRoleWithWebIdentity response"
                ),
            )
        })?;
        let c = doc.result.credentials;
        Ok(Credential {
            expires_at: Some(parse_time(name, &c.expiration)?),
            session_token: (!c.session_token.is_empty()).then(|| Secret::new(c.session_token)),
            secret_access_key: Secret::new(c.secret_access_key),
            access_key_id: c.access_key_id,
        })
    }
}

/// `AssumeRole`, signed with base credentials from secret references.
pub struct AssumeRoleSource {
    client: aws_sdk_sts::Client,
    endpoint: String,
    role_arn: String,
    session_name: String,
    policy: Option<String>,
    duration_secs: Option<u64>,
}

impl AssumeRoleSource {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        endpoint: &str,
        region: &str,
        base: &StaticSource,
        role_arn: String,
        session_name: String,
        policy: Option<String>,
        duration_secs: Option<u64>,
    ) -> Self {
        use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_sts::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new(
                base.access_key_id.expose(),
                base.secret_access_key.expose(),
                base.session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "artifactstore-assume-role-base",
            ))
            .build();
        AssumeRoleSource {
            client: aws_sdk_sts::Client::from_conf(config),
            endpoint: endpoint.to_owned(),
            role_arn,
            session_name,
            policy,
            duration_secs,
        }
    }
}

#[async_trait::async_trait]
impl CredentialSource for AssumeRoleSource {
    fn name(&self) -> &'static str {
        "assume-role"
    }

    async fn fetch(&self) -> Result<Credential, SourceError> {
        use aws_sdk_sts::error::SdkError;
        let name = self.name();
        let mut req = self
            .client
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name);
        if let Some(p) = &self.policy {
            req = req.policy(p);
        }
        if let Some(d) = self.duration_secs {
            req = req.duration_seconds(d.min(i32::MAX as u64) as i32);
        }
        let out = req.send().await.map_err(|e| {
            let what = match &e {
                SdkError::ServiceError(se) => {
                    let (status, code, message) = crate::refusal::sdk_answer(se.err(), se.raw());
                    let answer = crate::refusal::Answer {
                        status,
                        code: code.as_deref().unwrap_or_default(),
                        message: &message,
                    };
                    return SourceError::new(
                        name,
                        crate::refusal::assume_role(&self.endpoint, &self.role_arn, &answer),
                    );
                }
                SdkError::TimeoutError(_) => "timed out",
                SdkError::DispatchFailure(_) => "cannot connect",
                _ => "request failed",
            };
            SourceError::new(
                name,
                format!(
                    "STS at {}: AssumeRole of role {}: {what}",
                    self.endpoint, self.role_arn
                ),
            )
        })?;
        let c = out
            .credentials()
            .ok_or_else(|| SourceError::new(name, "AssumeRole answered without credentials"))?;
        Ok(Credential {
            access_key_id: c.access_key_id().to_owned(),
            secret_access_key: Secret::new(c.secret_access_key()),
            session_token: Some(Secret::new(c.session_token())),
            expires_at: Some(Timestamp::from_unix_secs(c.expiration().secs().max(0))),
        })
    }
}

/// Parses `{"AccessKeyId", "SecretAccessKey", "Token"|"SessionToken", "Expiration"}`
/// (container-credentials and credential_process JSON).
fn from_json(name: &'static str, doc: &Value, what: &str) -> Result<Credential, SourceError> {
    let s = |k: &str| doc.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    let (Some(ak), Some(sk)) = (s("AccessKeyId"), s("SecretAccessKey")) else {
        return Err(SourceError::new(
            name,
            format!("{what} has no AccessKeyId/SecretAccessKey"),
        ));
    };
    Ok(Credential {
        access_key_id: ak.to_owned(),
        secret_access_key: Secret::new(sk),
        session_token: s("SessionToken").or(s("Token")).map(Secret::new),
        expires_at: s("Expiration").map(|e| parse_time(name, e)).transpose()?,
    })
}

/// An `AWS_CONTAINER_CREDENTIALS_FULL_URI`-style endpoint, with the authorization
/// token read from a file at every fetch.
pub struct ContainerSource {
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub http: reqwest::Client,
}

#[async_trait::async_trait]
impl CredentialSource for ContainerSource {
    fn name(&self) -> &'static str {
        "container"
    }

    async fn fetch(&self) -> Result<Credential, SourceError> {
        let name = self.name();
        let mut req = self.http.get(&self.url).timeout(Duration::from_secs(30));
        if let Some(f) = &self.token_file {
            req = req.header(
                "Authorization",
                read_file(name, f, "authorization token file")?,
            );
        }
        let url = &self.url;
        let resp = req
            .send()
            .await
            .map_err(|e| SourceError::new(name, format!("{url}: {}", unreachable(&e))))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = body
                .get("code")
                .or_else(|| body.pointer("/error/code"))
                .and_then(Value::as_str)
                .unwrap_or("error");
            let message = body
                .get("message")
                .or_else(|| body.pointer("/error/message"))
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(SourceError::new(
                name,
                format!("{url}: HTTP {status} {code}: {message}"),
            ));
        }
        from_json(name, &body, url)
    }
}

/// A credential_process command (JSON `Version: 1` on stdout), run by `sh -c` with a
/// timeout. Its stderr is never logged: only its length reaches an error message.
pub struct ProcessSource {
    pub command: String,
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl CredentialSource for ProcessSource {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn fetch(&self) -> Result<Credential, SourceError> {
        let name = self.name();
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| SourceError::new(name, format!("cannot start the command: {e}")))?;
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                SourceError::new(
                    name,
                    format!("the command did not finish within {:?}", self.timeout),
                )
            })?
            .map_err(|e| SourceError::new(name, format!("the command failed: {e}")))?;
        if !out.status.success() {
            // Its stderr may hold anything, secrets included: only its size is told.
            return Err(SourceError::new(
                name,
                format!(
                    "the command exited with {} ({} bytes on stderr, not shown)",
                    out.status,
                    out.stderr.len()
                ),
            ));
        }
        let doc: Value = serde_json::from_slice(&out.stdout)
            .map_err(|_| SourceError::new(name, "the command's output is not JSON"))?;
        if doc.get("Version").and_then(Value::as_u64) != Some(1) {
            return Err(SourceError::new(
                name,
                "the command's output is not Version 1",
            ));
        }
        from_json(name, &doc, "the command's output")
    }
}

/// A JSON file in credential_process format written by a sidecar. Re-read before the
/// credential in it expires, and as soon as the file changes.
pub struct FileSource {
    pub path: PathBuf,
    seen: Mutex<Seen>,
}

/// Modification time and length: enough to notice a sidecar's rewrite.
type FileStamp = (SystemTime, u64);

#[derive(Default)]
struct Seen {
    /// The file as it was when last read.
    read: Option<FileStamp>,
    /// When `changed` last looked.
    checked: Option<Instant>,
}

impl FileSource {
    pub fn new(path: PathBuf) -> Self {
        FileSource {
            path,
            seen: Mutex::new(Seen::default()),
        }
    }

    fn stamp(&self) -> Option<FileStamp> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }
}

#[async_trait::async_trait]
impl CredentialSource for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn fetch(&self) -> Result<Credential, SourceError> {
        let name = self.name();
        let stamp = self.stamp();
        let text = read_file(name, &self.path, "credentials file")?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|_| SourceError::new(name, format!("{} is not JSON", self.path.display())))?;
        let c = from_json(name, &doc, &self.path.display().to_string())?;
        self.seen.lock().unwrap().read = stamp;
        Ok(c)
    }

    /// Looks at the file's modification time and size at most once a second.
    fn changed(&self) -> bool {
        let mut seen = self.seen.lock().unwrap();
        if seen
            .checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return false;
        }
        seen.checked = Some(Instant::now());
        let now = self.stamp();
        now.is_some() && now != seen.read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn process_output_and_failures() {
        let ok = ProcessSource {
            command: r#"echo '{"Version":1,"AccessKeyId":"AK","SecretAccessKey":"SK","SessionToken":"T","Expiration":"2030-01-01T00:00:00Z"}'"#.into(),
            timeout: Duration::from_secs(5),
        };
        let c = ok.fetch().await.unwrap();
        assert_eq!(c.access_key_id, "AK");
        assert!(c.expires_at.is_some());
        let failing = ProcessSource {
            command: "echo 'the secret is hunter2 and more and more' >&2; exit 3".into(),
            timeout: Duration::from_secs(5),
        };
        let e = failing.fetch().await.unwrap_err().to_string();
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let slow = ProcessSource {
            command: "sleep 5".into(),
            timeout: Duration::from_millis(200),
        };
        assert!(
            slow.fetch()
                .await
                .unwrap_err()
                .to_string()
                .contains("did not finish")
        );
        let v2 = ProcessSource {
            command: r#"echo '{"Version":2,"AccessKeyId":"AK","SecretAccessKey":"SK"}'"#.into(),
            timeout: Duration::from_secs(5),
        };
        assert!(v2.fetch().await.is_err());
    }

    #[tokio::test]
    async fn a_sidecar_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.json");
        std::fs::write(
            &path,
            r#"{"Version":1,"AccessKeyId":"AK1","SecretAccessKey":"S"}"#,
        )
        .unwrap();
        let source = FileSource::new(path.clone());
        assert_eq!(source.fetch().await.unwrap().access_key_id, "AK1");
        assert!(!source.changed());
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(
            &path,
            r#"{"Version":1,"AccessKeyId":"AK22","SecretAccessKey":"S"}"#,
        )
        .unwrap();
        assert!(source.changed());
        assert_eq!(source.fetch().await.unwrap().access_key_id, "AK22");
    }
}
