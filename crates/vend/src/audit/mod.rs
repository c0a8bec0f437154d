//! The audit log: one JSON line per decision and per lease change, each sealed with
//! an HMAC-SHA256 under the chain key and carrying the MAC of the line before it, so
//! that a line edited, inserted or removed — even with the chain recomputed — breaks
//! the chain, and a file whose head was cut lacks its genesis line
//! (`artifactstore vend audit verify`).
//!
//! A line is on disk (written and fdatasync'ed) before the answer it records is sent:
//! no record, no credential. The file is opened for every line, so a file that has
//! become unwritable is noticed at once rather than when a cached descriptor fails.

mod chain;
mod file;
mod key;
mod record;
mod start;
#[cfg(test)]
mod tests;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use artifactstore_model::Clock;

use chain::{Chain, append_line};
use file::open_append;

pub use chain::{GENESIS, GENESIS_EVENT};
pub use key::{ChainKey, KeyError, MIN_KEY_BYTES, default_key_path};
pub use record::{AuditRecord, DETAIL_MAX, FIELD_MAX};
pub use verify::{Head, VerifyReport, head, is_head, verify};

pub struct AuditLog {
    path: PathBuf,
    chain: std::sync::Arc<std::sync::Mutex<Chain>>,
    chain_key: Arc<ChainKey>,
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
    /// `line` counts from 1; 0 when the line's number is not known (the last line,
    /// found without reading the file through).
    #[error("audit log {path}: {}", at_line(*line, message))]
    Corrupt {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{0}")]
    Key(#[from] KeyError),
}

/// `line N: message`, or the message alone when the line's number is not known.
fn at_line(line: u64, message: &str) -> String {
    match line {
        0 => message.to_owned(),
        n => format!("line {n}: {message}"),
    }
}

impl AuditLog {
    /// [`open_keyed`](Self::open_keyed) with the key generated beside the log
    /// ([`default_key_path`]), as when `[audit] chain_key_ref` is unset.
    pub fn open(path: &Path, hmac_key: &[u8], clock: Arc<dyn Clock>) -> Result<Self, AuditError> {
        let mut warnings = Vec::new();
        let key = ChainKey::load_or_generate(&default_key_path(path), &mut warnings)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        Self::open_keyed(path, hmac_key, key, clock)
    }

    /// Opens (creating, mode 0600) the log and continues its chain. A last line cut
    /// short by a crash was never acknowledged; it is removed. A file that was not
    /// chained under `chain_key` (the unkeyed format of older versions, another key)
    /// is not appended to: it is moved aside and a new file begins, whose genesis line
    /// names the old file and has its head as `prev`.
    pub fn open_keyed(
        path: &Path,
        hmac_key: &[u8],
        chain_key: ChainKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuditError> {
        let chain = start::continue_or_begin(path, &chain_key, &*clock)?;
        tracing::info!(path = %path.display(), key_id = chain_key.id(), seq = chain.seq, "audit log open; its chain is sealed under this key id");
        Ok(AuditLog {
            path: path.to_owned(),
            chain: std::sync::Arc::new(std::sync::Mutex::new(chain)),
            chain_key: Arc::new(chain_key),
            hmac_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, hmac_key),
            clock,
            healthy: AtomicBool::new(true),
            failures: AtomicU64::new(0),
        })
    }

    /// The id of the key the chain is sealed with.
    pub fn chain_key_id(&self) -> &str {
        self.chain_key.id()
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
        let key = self.chain_key.clone();
        let written =
            tokio::task::spawn_blocking(move || append_line(&chain, &path, &*clock, &key, &record))
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
