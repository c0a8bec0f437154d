use std::io::Write;
use std::sync::Arc;

use artifactstore_model::{Clock, Timestamp};

use serde::Serialize;

use super::chain::{Entry, append_entries};
use super::*;

mod keyed;

/// The key generated beside the log at `path`.
fn generated_key(path: &Path) -> ChainKey {
    ChainKey::load_or_generate(&default_key_path(path), &mut Vec::new()).unwrap()
}

/// The log at `path` checked under its generated key.
fn verified(path: &Path) -> Result<VerifyReport, AuditError> {
    verify(&[path], Some(&generated_key(path)), None)
}

/// A service's record, as the tests write it.
#[derive(Clone, Debug, Default, Serialize)]
struct AuditRecord {
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl Record for AuditRecord {
    fn bounded(&self) -> Self {
        let cut = |v: &Option<String>, max| v.as_deref().map(|v| truncated(v, max));
        AuditRecord {
            issuer: cut(&self.issuer, FIELD_MAX),
            subject: cut(&self.subject, FIELD_MAX),
            detail: cut(&self.detail, DETAIL_MAX),
            ..self.clone()
        }
    }
}

fn record(event: &'static str) -> AuditRecord {
    AuditRecord {
        event,
        reason: Some("allow"),
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
    let log = AuditLog::open(&path, clock.clone()).unwrap();
    log.append(&record("decision")).await.unwrap();
    let huge = AuditRecord {
        detail: Some("x".repeat(200 * 1024)),
        ..record("revocation.added")
    };
    // Written as it is, unbounded.
    let huge = serde_json::to_vec(&huge).unwrap();
    let w = &log.writer;
    append_entries(
        &mut w.chain.lock().unwrap(),
        &path,
        &*clock,
        &w.chain_key,
        &[Entry::Record(&huge[1..huge.len() - 1])],
    )
    .unwrap();
    drop(log);
    assert!(std::fs::metadata(&path).unwrap().len() > 200 * 1024);

    let log = AuditLog::open(&path, clock.clone()).unwrap();
    log.append(&record("decision")).await.unwrap();
    assert_eq!(verified(&path).unwrap().lines, 4);

    // A crash tore the next line: it goes, the chain continues.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"seq\":5,\"ev")
        .unwrap();
    drop(log);
    let log = AuditLog::open(&path, clock).unwrap();
    log.append(&record("decision")).await.unwrap();
    assert_eq!(verified(&path).unwrap().lines, 5);
}

/// What a client sent is cut to its bound and marked, so a line stays small.
#[tokio::test]
async fn long_fields_are_cut_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, Arc::new(artifactstore_model::SystemClock)).unwrap();
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
    assert!(verified(&path).is_ok());
    assert_eq!(truncated("short", FIELD_MAX), "short");
}

#[tokio::test]
async fn the_chain_survives_a_restart_and_detects_edits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, Arc::new(artifactstore_model::SystemClock)).unwrap();
    log.append(&record("decision")).await.unwrap();
    log.append(&record("lease.issued")).await.unwrap();
    drop(log);
    let log = AuditLog::open(&path, Arc::new(artifactstore_model::SystemClock)).unwrap();
    log.append(&record("decision")).await.unwrap();
    let report = verified(&path).unwrap();
    assert_eq!(report.lines, 4);

    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("\"subject\":\"s\"", "\"subject\":\"t\"", 1);
    std::fs::write(&path, &edited).unwrap();
    let e = verified(&path).unwrap_err();
    assert!(matches!(e, AuditError::Corrupt { line: 2, .. }), "{e}");

    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    assert!(matches!(
        verified(&path).unwrap_err(),
        AuditError::Corrupt { line: 2, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_dropped_mid_append_do_not_break_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = std::sync::Arc::new(
        AuditLog::open(&path, Arc::new(artifactstore_model::SystemClock)).unwrap(),
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
    let report = verified(&path).unwrap();
    assert!(report.lines >= 3, "{report:?}");
}

#[tokio::test]
async fn lines_carry_the_time_of_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let clock = Arc::new(artifactstore_model::ManualClock::new(
        Timestamp::from_unix_millis(1_764_633_600_250),
    ));
    let log = AuditLog::open(&path, clock.clone()).unwrap();
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
    let log = AuditLog::open(&path, Arc::new(artifactstore_model::SystemClock)).unwrap();
    log.append(&record("decision")).await.unwrap();
    drop(log);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"{\"seq\":3,\"ti").unwrap();
    drop(f);
    assert!(verified(&path).is_err());
    let log = AuditLog::open(&path, Arc::new(artifactstore_model::SystemClock)).unwrap();
    log.append(&record("decision")).await.unwrap();
    assert_eq!(verified(&path).unwrap().lines, 3);
}

#[tokio::test]
async fn an_unwritable_log_fails_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, Arc::new(artifactstore_model::SystemClock)).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    assert!(log.append(&record("decision")).await.is_err());
    assert!(!log.healthy());
    assert!(!log.writable());
}

/// Appends that queue while a batch is being written are written together, with one
/// sync, in the order they queued; each append returns only once its line is synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard stands for a batch being written while the appends queue.
#[allow(clippy::await_holding_lock)]
async fn appends_arriving_together_share_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::open(&path, Arc::new(artifactstore_model::SystemClock)).unwrap());
    // Hold the chain as a batch being written would: the next appends queue behind it.
    let held = log.writer.chain.lock().unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let appender = log.clone();
        tasks.push(tokio::spawn(async move {
            appender
                .append(&AuditRecord {
                    subject: Some(format!("s{i}")),
                    ..record("decision")
                })
                .await
        }));
        // Queued in order.
        while log.writer.pending.lock().unwrap().len() < i + 1 {
            tokio::task::yield_now().await;
        }
    }
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "no append returns before its line is synced"
    );
    drop(held);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(log.syncs(), 1, "fifty lines, one sync");
    let report = verified(&path).unwrap();
    assert_eq!(report.lines, 51);
    let subjects: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["subject"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        subjects,
        (0..50).map(|i| format!("s{i}")).collect::<Vec<_>>()
    );
}
