//! The chain key: every audit line carries the HMAC-SHA256 of its bytes under it, so a
//! line edited and re-chained by someone without the key no longer verifies.
//!
//! The key comes from `[audit] chain_key_ref`, or, when that is unset, from a file
//! generated next to the log (`<log>.chain-key`, mode 0600) at the first start and
//! reused afterwards. It is identified by a key id derived from it, never by itself.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use artifactstore_model::secret::{Secret, SecretRef};
use aws_lc_rs::hmac;

/// The label whose HMAC under the key is the key id: a value that says which key a
/// file was chained with, and from which the key cannot be recovered.
const KEY_ID_LABEL: &[u8] = b"artifactstore vend audit chain key id";
/// Hex characters of a key id (64 bits).
const KEY_ID_HEX: usize = 16;
/// Shortest key accepted from a reference, in bytes (a 128-bit key in hex).
pub const MIN_KEY_BYTES: usize = 32;

/// The key of the audit chain. No `Display`, no `Serialize`; its `Debug` shows the key
/// id only.
pub struct ChainKey {
    key: hmac::Key,
    id: String,
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainKey(id {})", self.id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("audit chain key {what}: {source}")]
    Secret {
        what: String,
        source: artifactstore_model::secret::SecretError,
    },
    #[error("audit chain key {what}: shorter than {MIN_KEY_BYTES} bytes (the value is not shown)")]
    TooShort { what: String },
    #[error("audit chain key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ChainKey {
    /// The key whose bytes are `secret`'s value (as a reference resolves it: trimmed).
    pub fn from_secret(secret: &Secret, what: &str) -> Result<Self, KeyError> {
        let bytes = secret.expose().as_bytes();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                what: what.to_owned(),
            });
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let id = hex::encode(hmac::sign(&key, KEY_ID_LABEL).as_ref())[..KEY_ID_HEX].to_owned();
        Ok(ChainKey { key, id })
    }

    /// The key a reference (`env:NAME`, `file:/path`) names. Warnings (a key file others
    /// can read) go to `warnings`.
    pub fn from_ref(r: &SecretRef, warnings: &mut Vec<String>) -> Result<Self, KeyError> {
        let what = r.to_string();
        let secret = r.resolve(warnings).map_err(|source| KeyError::Secret {
            what: what.clone(),
            source,
        })?;
        Self::from_secret(&secret, &what)
    }

    /// The key in `path`, generated there first when the file does not exist: 32 random
    /// bytes in hex, written to a temporary file of mode 0600, synced and then linked to
    /// `path`, so the file is either absent or whole; a start racing this one keeps the
    /// key that was linked first.
    pub fn load_or_generate(path: &Path, warnings: &mut Vec<String>) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        if !path.exists() {
            let mut raw = [0u8; 32];
            aws_lc_rs::rand::fill(&mut raw)
                .map_err(|_| io(std::io::Error::other("no randomness")))?;
            let mut text = hex::encode(raw);
            raw.fill(0);
            text.push('\n');
            let mut suffix = [0u8; 8];
            aws_lc_rs::rand::fill(&mut suffix)
                .map_err(|_| io(std::io::Error::other("no randomness")))?;
            let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
            tmp_name.push(format!(".tmp-{}", hex::encode(suffix)));
            let tmp = path.with_file_name(tmp_name);
            let written = write_new_private(&tmp, text.as_bytes());
            // Best effort: do not leave the value in freed memory.
            let mut bytes = text.into_bytes();
            bytes.fill(0);
            std::hint::black_box(&bytes);
            written.map_err(io)?;
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::File::open(dir)
                            .and_then(|d| d.sync_all())
                            .map_err(io)?;
                    }
                    tracing::info!(path = %path.display(), "generated the audit chain key");
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        Self::from_ref(&SecretRef::File(path.to_owned()), warnings)
    }

    /// Which key this is: the first 64 bits of the HMAC of a fixed label, in hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The HMAC-SHA256 (hex) of `bytes`.
    pub(super) fn mac(&self, bytes: &[u8]) -> String {
        hex::encode(hmac::sign(&self.key, bytes).as_ref())
    }

    /// Whether `mac_hex` is the HMAC of `bytes` (compared in constant time).
    pub(super) fn verifies(&self, bytes: &[u8], mac_hex: &str) -> bool {
        hex::decode(mac_hex).is_ok_and(|tag| hmac::verify(&self.key, bytes, &tag).is_ok())
    }
}

/// Where the key is generated when `[audit] chain_key_ref` is unset: beside the log,
/// named after it (`vend-audit.log` → `vend-audit.log.chain-key`).
pub fn default_key_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_owned();
    name.push(".chain-key");
    log.with_file_name(name)
}

fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}
