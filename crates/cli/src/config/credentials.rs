//! The S3 backend's credential settings, from the flat `[s3]` keys to one typed
//! `CredentialSourceConfig`: which keys each source reads, what `auto` picks, what an
//! explicit choice ignores.

use super::*;

impl CredentialsSource {
    /// The `[s3]` keys this source reads; the others are ignored when it is chosen.
    fn keys(self) -> &'static [&'static str] {
        const STATIC: &[&str] = &[
            "access_key_id_ref",
            "secret_access_key_ref",
            "session_token_ref",
        ];
        match self {
            CredentialsSource::Auto => &[],
            CredentialsSource::Static => STATIC,
            CredentialsSource::WebIdentity => &[
                "web_identity_token_file",
                "role_arn",
                "role_session_name",
                "sts_endpoint_url",
                "credentials_duration_secs",
            ],
            CredentialsSource::AssumeRole => &[
                "access_key_id_ref",
                "secret_access_key_ref",
                "session_token_ref",
                "role_arn",
                "role_session_name",
                "sts_endpoint_url",
                "credentials_duration_secs",
                "session_policy",
            ],
            CredentialsSource::Container => &[
                "container_credentials_url",
                "container_authorization_token_file",
            ],
            CredentialsSource::Process => {
                &["credential_process", "credential_process_timeout_secs"]
            }
            CredentialsSource::File => &["credentials_file"],
        }
    }
}

/// The S3 credential source chosen by `credentials_source` (or by `auto`), with
/// exactly the settings it uses and their defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSourceConfig {
    Static(StaticKeys),
    WebIdentity {
        token_file: PathBuf,
        /// Optional: MinIO's claim-based mode refuses one.
        role_arn: Option<String>,
        session_name: String,
        /// `sts_endpoint_url`, else the S3 endpoint.
        sts_endpoint: String,
        duration_secs: Option<u64>,
    },
    AssumeRole {
        /// The keys AssumeRole is signed with.
        base: StaticKeys,
        role_arn: String,
        session_name: String,
        sts_endpoint: String,
        duration_secs: Option<u64>,
        session_policy: Option<String>,
    },
    Container {
        url: String,
        authorization_token_file: Option<PathBuf>,
    },
    Process {
        command: String,
        timeout: Duration,
    },
    File {
        path: PathBuf,
    },
}

/// Long-lived keys, by reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticKeys {
    pub access_key_id: SecretRef,
    pub secret_access_key: SecretRef,
    pub session_token: Option<SecretRef>,
}

/// The value of a setting the chosen source cannot do without.
fn required<T: Clone>(value: &Option<T>, key: &str, kind: CredentialsSource) -> Result<T, String> {
    value.clone().ok_or_else(|| {
        format!(
            "{} is required for credentials_source {}",
            setting(key),
            kind.name()
        )
    })
}

/// `s3.<key> (ARTIFACTSTORE_S3_<KEY>)`, as messages name a setting.
fn setting(key: &str) -> String {
    format!("s3.{key} (ARTIFACTSTORE_S3_{})", key.to_uppercase())
}

impl S3Settings {
    /// The credential source these settings choose, typed, and the credential keys
    /// given that it does not read (docs/CONFIG.md: an explicit choice ignores the
    /// others — scripts export several sources' settings and pick one; the caller
    /// warns about each). Errors name the missing setting and its variable.
    pub fn credential_source(&self) -> Result<(CredentialSourceConfig, Vec<&'static str>), String> {
        let kind = match self.credentials_source {
            CredentialsSource::Auto => {
                if self.web_identity_token_file.is_some() {
                    CredentialsSource::WebIdentity
                } else if self.container_credentials_url.is_some() {
                    CredentialsSource::Container
                } else if self.credential_process.is_some() {
                    CredentialsSource::Process
                } else if self.credentials_file.is_some() {
                    CredentialsSource::File
                } else if self.role_arn.is_some() && self.access_key_id_ref.is_some() {
                    CredentialsSource::AssumeRole
                } else {
                    CredentialsSource::Static
                }
            }
            other => other,
        };
        let used = kind.keys();
        let ignored = self
            .given_credential_keys()
            .into_iter()
            .filter(|k| !used.contains(k))
            .collect();
        let session_name = || {
            self.role_session_name
                .clone()
                .unwrap_or_else(|| "artifactstore".into())
        };
        let sts_endpoint = || {
            self.sts_endpoint_url
                .clone()
                .or_else(|| self.endpoint_url.clone())
                .ok_or_else(|| format!("{} is needed to reach an STS", setting("sts_endpoint_url")))
        };
        let source = match kind {
            CredentialsSource::Auto | CredentialsSource::Static => {
                CredentialSourceConfig::Static(self.static_keys()?)
            }
            CredentialsSource::WebIdentity => CredentialSourceConfig::WebIdentity {
                token_file: required(
                    &self.web_identity_token_file,
                    "web_identity_token_file",
                    kind,
                )?,
                role_arn: self.role_arn.clone(),
                session_name: session_name(),
                sts_endpoint: sts_endpoint()?,
                duration_secs: self.credentials_duration_secs,
            },
            CredentialsSource::AssumeRole => CredentialSourceConfig::AssumeRole {
                role_arn: required(&self.role_arn, "role_arn", kind)?,
                base: self.static_keys()?,
                session_name: session_name(),
                sts_endpoint: sts_endpoint()?,
                duration_secs: self.credentials_duration_secs,
                session_policy: self.session_policy.clone(),
            },
            CredentialsSource::Container => CredentialSourceConfig::Container {
                url: required(
                    &self.container_credentials_url,
                    "container_credentials_url",
                    kind,
                )?,
                authorization_token_file: self.container_authorization_token_file.clone(),
            },
            CredentialsSource::Process => CredentialSourceConfig::Process {
                command: required(&self.credential_process, "credential_process", kind)?,
                timeout: Duration::from_secs(
                    self.credential_process_timeout_secs.unwrap_or(30).max(1),
                ),
            },
            CredentialsSource::File => CredentialSourceConfig::File {
                path: required(&self.credentials_file, "credentials_file", kind)?,
            },
        };
        Ok((source, ignored))
    }

    fn static_keys(&self) -> Result<StaticKeys, String> {
        let missing = |k: &str| {
            format!(
                "the s3 backend needs credentials: {} = env:NAME or file:/path, \
                 or another s3.credentials_source (docs/CONFIG.md)",
                setting(k)
            )
        };
        Ok(StaticKeys {
            access_key_id: self
                .access_key_id_ref
                .clone()
                .ok_or_else(|| missing("access_key_id_ref"))?,
            secret_access_key: self
                .secret_access_key_ref
                .clone()
                .ok_or_else(|| missing("secret_access_key_ref"))?,
            session_token: self.session_token_ref.clone(),
        })
    }

    /// The credential settings given (in any layer), by key.
    fn given_credential_keys(&self) -> Vec<&'static str> {
        [
            ("access_key_id_ref", self.access_key_id_ref.is_some()),
            (
                "secret_access_key_ref",
                self.secret_access_key_ref.is_some(),
            ),
            ("session_token_ref", self.session_token_ref.is_some()),
            (
                "web_identity_token_file",
                self.web_identity_token_file.is_some(),
            ),
            ("role_arn", self.role_arn.is_some()),
            ("role_session_name", self.role_session_name.is_some()),
            ("sts_endpoint_url", self.sts_endpoint_url.is_some()),
            (
                "credentials_duration_secs",
                self.credentials_duration_secs.is_some(),
            ),
            ("session_policy", self.session_policy.is_some()),
            (
                "container_credentials_url",
                self.container_credentials_url.is_some(),
            ),
            (
                "container_authorization_token_file",
                self.container_authorization_token_file.is_some(),
            ),
            ("credential_process", self.credential_process.is_some()),
            (
                "credential_process_timeout_secs",
                self.credential_process_timeout_secs.is_some(),
            ),
            ("credentials_file", self.credentials_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, given)| given.then_some(k))
        .collect()
    }
}

impl CredentialSourceConfig {
    /// `static`, `web-identity`, `assume-role`, `container`, `process` or `file`.
    pub fn name(&self) -> &'static str {
        match self {
            CredentialSourceConfig::Static(_) => "static",
            CredentialSourceConfig::WebIdentity { .. } => "web-identity",
            CredentialSourceConfig::AssumeRole { .. } => "assume-role",
            CredentialSourceConfig::Container { .. } => "container",
            CredentialSourceConfig::Process { .. } => "process",
            CredentialSourceConfig::File { .. } => "file",
        }
    }
}

impl CredentialsSource {
    fn name(self) -> &'static str {
        match self {
            CredentialsSource::Auto => "auto",
            CredentialsSource::Static => "static",
            CredentialsSource::WebIdentity => "web-identity",
            CredentialsSource::AssumeRole => "assume-role",
            CredentialsSource::Container => "container",
            CredentialsSource::Process => "process",
            CredentialsSource::File => "file",
        }
    }
}
