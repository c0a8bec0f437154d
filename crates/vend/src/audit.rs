//! The audit log: one JSON line per decision and per lease change, each carrying the
//! SHA-256 of the line before it, so that an edited, inserted or removed line breaks
//! the chain (`artifactstore vend audit verify`).
//!
//! A line is on disk (written and fdatasync'ed) before the answer it records is sent:
//! no record, no credential. The file is opened for every line, so a file that has
//! become unwritable is noticed at once rather than when a cached descriptor fails.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use artifactstore_model::{Clock, Timestamp};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::reason::Reason;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What one line says. Tokens and secrets have no field here; access key ids appear
/// only as an HMAC.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditRecord {
    /// `decision`, `lease.issued`, `lease.failed`, `lease.revoked`, `lease.expired`,
    /// `revocation.added`, `revocation.removed`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// False when issuer and subject are what a refused token claimed, unverified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_hmac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
}

/// Longest value of a field that can carry what a client sent (claims of a refused
/// token, a role name asked for, a client address).
pub const FIELD_MAX: usize = 128;
/// Longest `detail` (a revocation's target and reason, an upstream's message).
pub const DETAIL_MAX: usize = 1024;

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[{} bytes cut]", &s[..cut], s.len() - cut)
}

impl AuditRecord {
    /// Every field within its bound, so that no line can grow without limit (a flood
    /// of refused tokens with huge claims, a 64 KiB revocation reason).
    fn bounded(mut self) -> Self {
        for v in [
            &mut self.request_id,
            &mut self.issuer,
            &mut self.subject,
            &mut self.audience,
            &mut self.role,
            &mut self.driver,
            &mut self.lease_id,
            &mut self.client,
        ]
        .into_iter()
        .flatten()
        {
            *v = truncated(v, FIELD_MAX);
        }
        if let Some(d) = &mut self.detail {
            *d = truncated(d, DETAIL_MAX);
        }
        self
    }
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: Timestamp,
    #[serde(flatten)]
    record: &'a AuditRecord,
    prev: &'a str,
}

struct Chain {
    seq: u64,
    prev: String,
}

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

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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

/// Writes the next line of the chain and syncs it. A write or sync that fails takes
/// the file back to its length before, so no line outside the chain stays behind.
fn append_line(
    chain: &std::sync::Mutex<Chain>,
    path: &Path,
    clock: &dyn Clock,
    record: &AuditRecord,
) -> std::io::Result<()> {
    let mut chain = chain.lock().unwrap_or_else(|p| p.into_inner());
    // Read under the chain's lock, so lines' times follow their order.
    let line = Line {
        seq: chain.seq + 1,
        time: clock.now(),
        record,
        prev: &chain.prev,
    };
    let mut bytes = serde_json::to_vec(&line).expect("audit lines serialize");
    let hash = sha256_hex(&bytes);
    bytes.push(b'\n');
    let mut f = open_append(path)?;
    let before = f.metadata()?.len();
    if let Err(e) = f.write_all(&bytes).and_then(|()| f.sync_data()) {
        let _ = f.set_len(before).and_then(|()| f.sync_data());
        return Err(e);
    }
    chain.seq += 1;
    chain.prev = hash;
    Ok(())
}

/// The offset just past the last `\n` before `end`, scanning back a chunk at a time:
/// a line may be longer than any fixed tail.
fn after_last_newline(f: &mut std::fs::File, end: u64) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut hi = end;
    let mut buf = vec![0u8; CHUNK as usize];
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let n = (hi - lo) as usize;
        f.seek(SeekFrom::Start(lo))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(lo + i as u64 + 1);
        }
        hi = lo;
    }
    Ok(0)
}

/// The last complete line of the log (without its `\n`), whatever its length. A last
/// line cut short by a crash was never acknowledged: it is removed first.
fn last_complete_line(
    path: &Path,
    file: &std::fs::File,
    len: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    if len == 0 {
        return Ok(None);
    }
    let mut f = std::fs::File::open(path)?;
    let mut end = len;
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    if last[0] != b'\n' {
        end = after_last_newline(&mut f, len)?;
        tracing::warn!(path = %path.display(), "audit log ends with an incomplete line (a crash while writing); removing it");
        file.set_len(end)?;
        file.sync_all()?;
    }
    if end == 0 {
        return Ok(None);
    }
    let start = after_last_newline(&mut f, end - 1)?;
    let mut line = vec![0u8; (end - 1 - start) as usize];
    f.seek(SeekFrom::Start(start))?;
    f.read_exact(&mut line)?;
    Ok(Some(line))
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The result of checking a log's chain.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub lines: u64,
    /// SHA-256 of the last line: keep it elsewhere to detect a cut-off tail.
    pub head: String,
}

/// Checks every line of a log: JSON, consecutive `seq`, and `prev` equal to the hash
/// of the line before. Returns the first break.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let file = std::fs::File::open(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = std::io::BufReader::new(file);
    let mut prev = GENESIS.to_owned();
    let mut line_no = 0u64;
    let mut expected_seq: Option<u64> = None;
    let mut buf = Vec::new();
    let corrupt = |line: u64, message: String| AuditError::Corrupt {
        path: path.to_owned(),
        line,
        message,
    };
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| AuditError::Io {
                path: path.to_owned(),
                source,
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if !buf.ends_with(b"\n") {
            return Err(corrupt(line_no, "incomplete line (no newline)".into()));
        }
        let body = &buf[..buf.len() - 1];
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| corrupt(line_no, format!("not JSON: {e}")))?;
        let seq = value
            .get("seq")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| corrupt(line_no, "no seq".into()))?;
        if let Some(want) = expected_seq
            && seq != want
        {
            return Err(corrupt(
                line_no,
                format!("seq {seq} where {want} was expected (a line was removed or inserted)"),
            ));
        }
        let claimed_prev = value.get("prev").and_then(|p| p.as_str()).unwrap_or("");
        // The first line of a file may continue a chain from a rotated-away file.
        if line_no > 1 && claimed_prev != prev {
            return Err(corrupt(
                line_no,
                format!(
                    "prev does not match the hash of line {} (that line was edited, or lines were removed)",
                    line_no - 1
                ),
            ));
        }
        expected_seq = Some(seq + 1);
        prev = sha256_hex(body);
    }
    Ok(VerifyReport {
        lines: line_no,
        head: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: &'static str) -> AuditRecord {
        AuditRecord {
            event,
            reason: Some(Reason::Allow),
            subject: Some("s".into()),
            ..Default::default()
        }
    }

    /// A line longer than any fixed tail (one written by an older version, before
    /// fields were bounded) does not stop a restart, nor does a torn line after it.
    #[tokio::test]
    async fn a_restart_works_after_a_line_of_any_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let clock: Arc<dyn Clock> = Arc::new(artifactstore_model::SystemClock);
        let log = AuditLog::open(&path, b"k", clock.clone()).unwrap();
        log.append(&record("decision")).await.unwrap();
        let huge = AuditRecord {
            detail: Some("x".repeat(200 * 1024)),
            ..record("revocation.added")
        };
        append_line(&log.chain, &path, &*clock, &huge).unwrap();
        drop(log);
        assert!(std::fs::metadata(&path).unwrap().len() > 200 * 1024);

        let log = AuditLog::open(&path, b"k", clock.clone()).unwrap();
        log.append(&record("decision")).await.unwrap();
        assert_eq!(verify(&path).unwrap().lines, 3);

        // A crash tore the next line: it goes, the chain continues.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"seq\":4,\"ev")
            .unwrap();
        drop(log);
        let log = AuditLog::open(&path, b"k", clock).unwrap();
        log.append(&record("decision")).await.unwrap();
        assert_eq!(verify(&path).unwrap().lines, 4);
    }

    /// What a client sent is cut to its bound and marked, so a line stays small.
    #[tokio::test]
    async fn long_fields_are_cut_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, b"k", Arc::new(artifactstore_model::SystemClock)).unwrap();
        log.append(&AuditRecord {
            issuer: Some(format!("https://{}", "é".repeat(5000))),
            subject: Some("s".repeat(10_000)),
            detail: Some("\"".repeat(100_000)),
            ..record("decision")
        })
        .await
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() < 4 * 1024, "{} bytes", text.len());
        assert_eq!(text.matches("bytes cut]").count(), 3);
        assert!(verify(&path).is_ok());
        assert_eq!(truncated("short", FIELD_MAX), "short");
    }

    #[tokio::test]
    async fn the_chain_survives_a_restart_and_detects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, b"k", Arc::new(artifactstore_model::SystemClock)).unwrap();
        log.append(&record("decision")).await.unwrap();
        log.append(&record("lease.issued")).await.unwrap();
        drop(log);
        let log = AuditLog::open(&path, b"k", Arc::new(artifactstore_model::SystemClock)).unwrap();
        log.append(&record("decision")).await.unwrap();
        let report = verify(&path).unwrap();
        assert_eq!(report.lines, 3);

        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replacen("\"subject\":\"s\"", "\"subject\":\"t\"", 1);
        std::fs::write(&path, &edited).unwrap();
        let e = verify(&path).unwrap_err();
        assert!(matches!(e, AuditError::Corrupt { line: 2, .. }), "{e}");

        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(1);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        assert!(matches!(
            verify(&path).unwrap_err(),
            AuditError::Corrupt { line: 2, .. }
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_dropped_mid_append_do_not_break_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = std::sync::Arc::new(
            AuditLog::open(&path, b"k", Arc::new(artifactstore_model::SystemClock)).unwrap(),
        );
        // Clients hanging up: the awaiting futures are dropped at once, some before
        // and some after their line was written.
        for _ in 0..50 {
            let log = log.clone();
            let task = tokio::spawn(async move { log.append(&record("decision")).await });
            tokio::task::yield_now().await;
            task.abort();
        }
        log.append(&record("decision")).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        log.append(&record("decision")).await.unwrap();
        let report = verify(&path).unwrap();
        assert!(report.lines >= 2, "{report:?}");
    }

    #[tokio::test]
    async fn lines_carry_the_time_of_the_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let clock = Arc::new(artifactstore_model::ManualClock::new(
            Timestamp::from_unix_millis(1_764_633_600_250),
        ));
        let log = AuditLog::open(&path, b"k", clock.clone()).unwrap();
        log.append(&record("decision")).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"time\":\"2025-12-02T00:00:00.25Z\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_torn_last_line_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, b"k", Arc::new(artifactstore_model::SystemClock)).unwrap();
        log.append(&record("decision")).await.unwrap();
        drop(log);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"seq\":2,\"ti").unwrap();
        drop(f);
        assert!(verify(&path).is_err());
        let log = AuditLog::open(&path, b"k", Arc::new(artifactstore_model::SystemClock)).unwrap();
        log.append(&record("decision")).await.unwrap();
        assert_eq!(verify(&path).unwrap().lines, 2);
    }

    #[tokio::test]
    async fn an_unwritable_log_fails_the_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, b"k", Arc::new(artifactstore_model::SystemClock)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(log.append(&record("decision")).await.is_err());
        assert!(!log.healthy());
        assert!(!log.writable());
    }
}
