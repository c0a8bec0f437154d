//! The keyed, hash-chained audit log both servers write: one JSON line per decision,
//! each sealed with an HMAC-SHA256 under the chain key and carrying the MAC of the line
//! before it, so that a line edited, inserted or removed — even with the chain
//! recomputed — breaks the chain, and a file whose head was cut lacks its genesis line
//! (`artifactstore audit verify`, `artifactstore vend audit verify`).
//!
//! A line is on disk (written and fdatasync'ed) before [`AuditLog::append`] returns, so
//! a service answers only what it has recorded. Appends that arrive while a write is
//! under way are written together after it, with one sync (a group commit), so many
//! concurrent requests cost one sync per batch, not one each. The file is opened for
//! every batch, so a file that has become unwritable is noticed at once rather than
//! when a cached descriptor fails.
//!
//! What a line says is the service's own [`Record`] type; this crate seals, chains,
//! bounds and verifies.

mod bound;
mod chain;
mod coalesce;
mod file;
mod key;
mod start;
#[cfg(test)]
mod tests;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use artifactstore_model::Clock;
use serde::Serialize;

use chain::{Chain, Entry, append_entries};
use file::open_append;

pub use bound::{DETAIL_MAX, FIELD_MAX, truncated};
pub use chain::{GENESIS, GENESIS_EVENT};
pub use coalesce::{Coalescer, Noted, OVERFLOW_CLIENT, Summary, WindowKey};
pub use key::{ChainKey, KeyError, MIN_KEY_BYTES, default_key_path};
pub use verify::{Head, VerifyReport, head, is_head, verify};

/// What one line of a service's log says: a struct serializing to a JSON object whose
/// members are written, in order, between the line's `seq` and `time` and its `prev`
/// and `mac` (so it has none of those four). Tokens and secrets have no field in any
/// record; values a client can fill are cut to their bound by [`bounded`](Self::bounded)
/// before the line is written, so that no line can grow without limit.
pub trait Record: Serialize {
    /// This record with every field within its bound ([`truncated`]).
    fn bounded(&self) -> Self
    where
        Self: Sized;
}

/// One line waiting for the writer, and who waits for it.
struct Pending {
    /// The record's members, serialized (without the object's braces).
    members: Vec<u8>,
    done: tokio::sync::oneshot::Sender<Result<(), (std::io::ErrorKind, String)>>,
}

/// What the writer works on, shared with the blocking task that writes.
struct Writer {
    path: PathBuf,
    chain: Mutex<Chain>,
    chain_key: ChainKey,
    /// Stamps each line's `time`.
    clock: Arc<dyn Clock>,
    pending: Mutex<Vec<Pending>>,
    /// Whether a blocking task is writing (or about to): appends that find one only
    /// queue their line.
    writing: AtomicBool,
    /// Batches written and synced.
    syncs: AtomicU64,
}

pub struct AuditLog {
    writer: Arc<Writer>,
    healthy: AtomicBool,
    /// Appends that failed since the start.
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
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, AuditError> {
        let mut warnings = Vec::new();
        let key = ChainKey::load_or_generate(&default_key_path(path), &mut warnings)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        Self::open_keyed(path, key, clock)
    }

    /// Opens (creating, mode 0600) the log and continues its chain. A last line cut
    /// short by a crash was never acknowledged; it is removed. A file that was not
    /// chained under `chain_key` (the unkeyed format of older versions, another key)
    /// is not appended to: it is moved aside and a new file begins, whose genesis line
    /// names the old file and has its head as `prev`.
    pub fn open_keyed(
        path: &Path,
        chain_key: ChainKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuditError> {
        let chain = start::continue_or_begin(path, &chain_key, &*clock)?;
        tracing::info!(path = %path.display(), key_id = chain_key.id(), seq = chain.seq, "audit log open; its chain is sealed under this key id");
        Ok(AuditLog {
            writer: Arc::new(Writer {
                path: path.to_owned(),
                chain: Mutex::new(chain),
                chain_key,
                clock,
                pending: Mutex::new(Vec::new()),
                writing: AtomicBool::new(false),
                syncs: AtomicU64::new(0),
            }),
            healthy: AtomicBool::new(true),
            failures: AtomicU64::new(0),
        })
    }

    /// The id of the key the chain is sealed with.
    pub fn chain_key_id(&self) -> &str {
        self.writer.chain_key.id()
    }

    pub fn path(&self) -> &Path {
        &self.writer.path
    }

    /// How many batches of lines were written and synced since the start (at most one
    /// per append; fewer when appends arrive together).
    pub fn syncs(&self) -> u64 {
        self.writer.syncs.load(Ordering::Relaxed)
    }

    /// Whether the last write succeeded (or none failed yet).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether the log can be opened for appending right now.
    pub fn writable(&self) -> bool {
        open_append(&self.writer.path).is_ok()
    }

    /// Appends one line and makes it durable: `Ok` once it is written and synced.
    /// Lines are written in the order their appends queue them.
    pub async fn append(&self, record: &impl Record) -> Result<(), AuditError> {
        let mut members = serde_json::to_vec(&record.bounded()).expect("audit records serialize");
        assert!(
            members.first() == Some(&b'{') && members.last() == Some(&b'}'),
            "an audit record serializes to a JSON object"
        );
        members.pop();
        members.remove(0);
        let (done, written) = tokio::sync::oneshot::channel();
        self.writer
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending { members, done });
        // The write runs as a blocking task that finishes even if the request awaiting
        // it is dropped (a client hanging up), so the chain in memory always matches
        // the file.
        if !self.writer.writing.swap(true, Ordering::SeqCst) {
            let writer = self.writer.clone();
            tokio::task::spawn_blocking(move || writer.write_pending());
        }
        let written = written.await.unwrap_or_else(|_| {
            Err((std::io::ErrorKind::Other, "the audit writer stopped".into()))
        });
        match written {
            Ok(()) => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err((kind, message)) => {
                self.healthy.store(false, Ordering::Relaxed);
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %self.writer.path.display(), error = %message, "cannot write the audit log");
                Err(AuditError::Io {
                    path: self.writer.path.clone(),
                    source: std::io::Error::new(kind, message),
                })
            }
        }
    }
}

impl Writer {
    /// Writes what is queued, a batch at a time, until nothing is.
    fn write_pending(&self) {
        // Should a write panic, the lines queued behind it fail instead of waiting for
        // a writer that will never come, and the next append starts a new writer.
        struct OnPanic<'a>(&'a Writer);
        impl Drop for OnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    drop(std::mem::take(
                        &mut *self.0.pending.lock().unwrap_or_else(|p| p.into_inner()),
                    ));
                    self.0.writing.store(false, Ordering::SeqCst);
                }
            }
        }
        let _on_panic = OnPanic(self);
        loop {
            // The chain first, the queue then: what queues while a batch is written
            // goes in the next one.
            let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
            let batch =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if batch.is_empty() {
                drop(chain);
                self.writing.store(false, Ordering::SeqCst);
                // An append that queued after the take but saw `writing` still set did
                // not start a writer: look again, unless a new writer has started.
                let queued = !self
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty();
                if !queued || self.writing.swap(true, Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            let entries: Vec<Entry<'_>> = batch.iter().map(|p| Entry::Record(&p.members)).collect();
            let result = append_entries(
                &mut chain,
                &self.path,
                &*self.clock,
                &self.chain_key,
                &entries,
            )
            .map_err(|e| (e.kind(), e.to_string()));
            drop((entries, chain));
            self.syncs.fetch_add(1, Ordering::Relaxed);
            for p in batch {
                let _ = p.done.send(result.clone());
            }
        }
    }
}
