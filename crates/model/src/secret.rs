//! Secrets and references to them.
//!
//! A [`Secret`] never shows its value: its `Debug` prints a placeholder, and it has no
//! `Display` or `Serialize`. Configuration holds [`SecretRef`]s (`env:NAME` or
//! `file:/path`), never values; a reference is resolved when the secret is needed.

use std::fmt;
use std::path::PathBuf;

/// A secret value. The only way to read it is [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it (a signer, a request header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: do not leave the value in freed memory.
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// Where a secret comes from: `env:NAME` or `file:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The value is not echoed: a secret put where its reference belongs must not
    /// reach an error message.
    #[error("a secret reference must be env:NAME or file:/path (the value given is not shown)")]
    BadRef,
    #[error("secret reference env:{0}: the variable is not set or empty")]
    EnvMissing(String),
    #[error("secret reference file:{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret reference file:{}: the file is empty", .0.display())]
    FileEmpty(PathBuf),
}

/// The trimmed text of a file that holds one secret or token (a key, a JWT). The one
/// reader of such files: every caller gets the same trimming and the same refusal of
/// an empty file. The error names the path, never the content.
pub fn read_trimmed_file(path: &std::path::Path) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
        path: path.to_owned(),
        source,
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(SecretError::FileEmpty(path.to_owned()));
    }
    Ok(text.to_owned())
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        if let Some(name) = s.strip_prefix("env:")
            && !name.is_empty()
        {
            return Ok(SecretRef::Env(name.to_owned()));
        }
        if let Some(path) = s.strip_prefix("file:")
            && !path.is_empty()
        {
            return Ok(SecretRef::File(PathBuf::from(path)));
        }
        Err(SecretError::BadRef)
    }

    /// Reads the secret. A file that group or others can read is used, with a warning
    /// in `warnings`; surrounding whitespace (a trailing newline) is trimmed.
    pub fn resolve(&self, warnings: &mut Vec<String>) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
                _ => Err(SecretError::EnvMissing(name.clone())),
            },
            SecretRef::File(path) => {
                let err = |source| SecretError::File {
                    path: path.clone(),
                    source,
                };
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(path).map_err(err)?.permissions().mode();
                    if mode & 0o077 != 0 {
                        warnings.push(format!(
                            "secret file {} is readable by group or others (mode {:o}); chmod 600 it",
                            path.display(),
                            mode & 0o777
                        ));
                    }
                }
                Ok(Secret::new(&read_trimmed_file(path)?))
            }
        }
    }

    /// `env` or `file`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretRef::Env(_) => "env",
            SecretRef::File(_) => "file",
        }
    }
}

/// Configuration files name secrets by reference only (`env:NAME`, `file:/path`).
impl<'de> serde::Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        SecretRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_and_refs_resolve() {
        let s = Secret::new("canary-3f9a1c");
        assert!(!format!("{s:?}").contains("canary"));
        assert_eq!(s.expose(), "canary-3f9a1c");

        assert!(SecretRef::parse("plain").is_err());
        assert!(SecretRef::parse("env:").is_err());
        let dir = std::env::temp_dir().join(format!("secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        std::fs::write(&path, "value-from-file\n").unwrap();
        let mut warnings = Vec::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let r = SecretRef::parse(&format!("file:{}", path.display())).unwrap();
        assert_eq!(
            r.resolve(&mut warnings).unwrap().expose(),
            "value-from-file"
        );
        assert_eq!(warnings.len(), 1, "world-readable file warns");
        let missing = SecretRef::parse("env:ARTIFACTSTORE_TEST_SURELY_UNSET").unwrap();
        let e = missing.resolve(&mut warnings).unwrap_err().to_string();
        assert!(e.contains("ARTIFACTSTORE_TEST_SURELY_UNSET"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
