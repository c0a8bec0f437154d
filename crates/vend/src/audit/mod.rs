//! The audit log: one JSON line per decision and per lease change, each carrying the
//! SHA-256 of the line before it, so that an edited, inserted or removed line breaks
//! the chain (`artifactstore vend audit verify`).
//!
//! A line is on disk (written and fdatasync'ed) before the answer it records is sent:
//! no record, no credential. The file is opened for every line, so a file that has
//! become unwritable is noticed at once rather than when a cached descriptor fails.

mod chain;
mod file;
mod record;
#[cfg(test)]
mod tests;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use artifactstore_model::Clock;

use chain::{Chain, append_line, sha256_hex};
use file::{last_complete_line, open_append};

pub use chain::GENESIS;
pub use record::{AuditRecord, DETAIL_MAX, FIELD_MAX};
pub use verify::{VerifyReport, verify};

pub struct AuditLog {
    path: PathBuf,
    chain: std::sync::Arc<std::sync::Mutex<Chain>>,
    hmac_key: aws_lc_rs::hmac::Key,
    /// Stamps each line's `time`.
    clock: Arc<dyn Clock>,
    healthy: AtomicBool,
    pub failures: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path}: line {line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

impl AuditLog {
    /// Opens (creating, mode 0600) the log and continues its chain. A last line cut
    /// short by a crash was never acknowledged; it is removed.
    pub fn open(path: &Path, hmac_key: &[u8], clock: Arc<dyn Clock>) -> Result<Self, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let file = open_append(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let (seq, prev) = match last_complete_line(path, &file, len).map_err(io)? {
            None => (0, GENESIS.to_owned()),
            Some(last) => {
                let value: serde_json::Value =
                    serde_json::from_slice(&last).map_err(|e| AuditError::Corrupt {
                        path: path.to_owned(),
                        line: 0,
                        message: format!("last line is not JSON: {e}"),
                    })?;
                let seq = value.get("seq").and_then(|s| s.as_u64()).ok_or_else(|| {
                    AuditError::Corrupt {
                        path: path.to_owned(),
                        line: 0,
                        message: "last line has no seq".into(),
                    }
                })?;
                (seq, sha256_hex(&last))
            }
        };
        Ok(AuditLog {
            path: path.to_owned(),
            chain: std::sync::Arc::new(std::sync::Mutex::new(Chain { seq, prev })),
            hmac_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, hmac_key),
            clock,
            healthy: AtomicBool::new(true),
            failures: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the last write succeeded (or none failed yet).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether the log can be opened for appending right now.
    pub fn writable(&self) -> bool {
        open_append(&self.path).is_ok()
    }

    /// The HMAC-SHA256 (hex) under which an access key id appears in the log.
    pub fn key_hmac(&self, access_key_id: &str) -> String {
        hex::encode(aws_lc_rs::hmac::sign(&self.hmac_key, access_key_id.as_bytes()).as_ref())
    }

    /// Appends one line and makes it durable. Lines are written one at a time, in
    /// chain order.
    pub async fn append(&self, record: &AuditRecord) -> Result<(), AuditError> {
        // The whole append — numbering, writing, syncing, advancing the chain — runs as
        // one blocking task that finishes even if the request awaiting it is dropped
        // (a client hanging up), so the chain in memory always matches the file.
        let chain = self.chain.clone();
        let path = self.path.clone();
        let record = record.clone().bounded();
        let clock = self.clock.clone();
        let written =
            tokio::task::spawn_blocking(move || append_line(&chain, &path, &*clock, &record))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match written {
            Ok(()) => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(source) => {
                self.healthy.store(false, Ordering::Relaxed);
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %self.path.display(), error = %source, "cannot write the audit log; refusing to issue credentials");
                Err(AuditError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}
