//! The keyed chain against the attacks it exists for: a line edited and the chain
//! recomputed (with SHA-256, with another key), a cut head, a cut tail, a missing
//! genesis, a torn line; and its life across restarts, key changes and files.

use std::path::PathBuf;

use artifactstore_model::secret::Secret;
use serde_json::Value;

use super::*;

fn clock() -> Arc<dyn Clock> {
    Arc::new(artifactstore_model::SystemClock)
}

/// A log of a genesis line and `n` decisions, under the key generated beside it.
async fn log_of(dir: &Path, n: usize) -> (PathBuf, AuditLog) {
    let path = dir.join("audit.log");
    let log = AuditLog::open(&path, clock()).unwrap();
    for i in 0..n {
        log.append(&AuditRecord {
            subject: Some(format!("subject-{i}")),
            ..record("decision")
        })
        .await
        .unwrap();
    }
    (path, log)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// What a forger without the key does: edits what `edit` changes, then re-links
/// every line (the first to `prev`, when given) and seals each with a MAC of its own
/// making.
fn forged(
    lines: &[String],
    mut prev: Option<String>,
    edit: impl Fn(usize, &mut Value),
    mac: impl Fn(&[u8]) -> String,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut value: Value = serde_json::from_str(line).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("mac");
        if let Some(p) = &prev {
            object.insert("prev".into(), Value::String(p.clone()));
        }
        edit(i, &mut value);
        let body = serde_json::to_vec(&value).unwrap();
        let m = mac(&body);
        let mut sealed = String::from_utf8(body).unwrap();
        sealed.pop();
        sealed.push_str(&format!(",\"mac\":\"{m}\"}}"));
        out.push(sealed);
        prev = Some(m);
    }
    out
}

fn broken_at(e: AuditError) -> (u64, String) {
    match e {
        AuditError::Corrupt { line, message, .. } => (line, message),
        other => panic!("not a break of the chain: {other}"),
    }
}

fn other_key() -> ChainKey {
    ChainKey::from_secret(
        &Secret::new("someone-else's-key-of-32-bytes-or-more"),
        "test",
    )
    .unwrap()
}

#[tokio::test]
async fn an_edited_line_with_a_chain_recomputed_by_sha256_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _log) = log_of(dir.path(), 4).await;
    assert_eq!(verified(&path).unwrap().lines, 5);
    let edit = |i: usize, v: &mut Value| {
        if i == 2 {
            v["subject"] = "an-innocent-subject".into();
        }
    };
    let sha = |b: &[u8]| super::super::chain::sha256_hex(b);
    write_lines(&path, &forged(&lines(&path), None, edit, sha));
    let (line, message) = broken_at(verified(&path).unwrap_err());
    // Every line was resealed: the first one (the genesis) already fails.
    assert_eq!(line, 1, "{message}");
    assert!(message.contains("MAC does not verify"), "{message}");

    // Structurally the forgery is sound: only the key tells it apart.
    let structure = verify(&[&path], None, None).unwrap();
    assert!(!structure.authenticated);
    assert_eq!(structure.lines, 5);
}

#[tokio::test]
async fn an_edited_line_resealed_under_another_key_fails_at_that_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _log) = log_of(dir.path(), 4).await;
    let original = lines(&path);
    // The forger keeps the lines before the edit as they are and reseals from there.
    let wrong = other_key();
    let line_2_mac = super::super::chain::unseal(original[1].as_bytes())
        .unwrap()
        .1
        .to_owned();
    let mut tampered = original[..2].to_vec();
    tampered.extend(forged(
        &original[2..],
        Some(line_2_mac),
        |i, v| {
            if i == 0 {
                v["subject"] = "an-innocent-subject".into();
            }
        },
        |b| wrong.mac(b),
    ));
    write_lines(&path, &tampered);
    let (line, message) = broken_at(verified(&path).unwrap_err());
    assert_eq!(line, 3, "{message}");
    assert!(message.contains("MAC does not verify"), "{message}");

    // Rewritten whole under the forger's key, genesis included: the key id says so.
    let rewritten = forged(
        &original,
        None,
        |i, v| {
            if i == 0 {
                v["key_id"] = wrong.id().into();
            }
        },
        |b| wrong.mac(b),
    );
    write_lines(&path, &rewritten);
    let (line, message) = broken_at(verified(&path).unwrap_err());
    assert_eq!(line, 1, "{message}");
    assert!(message.contains(wrong.id()), "{message}");
    // And the forger's own key does verify it: the check is the key, not the shape.
    assert!(verify(&[&path], Some(&wrong), None).is_ok());
}

#[tokio::test]
async fn a_cut_head_and_a_missing_genesis_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _log) = log_of(dir.path(), 4).await;
    let original = lines(&path);

    write_lines(&path, &original[2..]);
    let (line, message) = broken_at(verified(&path).unwrap_err());
    assert_eq!(line, 1, "{message}");
    assert!(message.contains("not a genesis line"), "{message}");
    assert!(message.contains("head of the file was cut"), "{message}");

    write_lines(&path, &original[1..]);
    let (line, _) = broken_at(verified(&path).unwrap_err());
    assert_eq!(line, 1);

    // Structure alone sees it too.
    let (line, _) = broken_at(verify(&[&path], None, None).unwrap_err());
    assert_eq!(line, 1);

    std::fs::write(&path, "").unwrap();
    let (_, message) = broken_at(verified(&path).unwrap_err());
    assert!(message.contains("not even a genesis line"), "{message}");
}

#[tokio::test]
async fn a_cut_tail_fails_against_the_head_kept_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_of(dir.path(), 3).await;
    let shipped = head(&path).unwrap();
    assert_eq!(shipped.seq, 4);
    assert!(!shipped.torn_tail);
    assert!(is_head(&shipped.head));
    let key = generated_key(&path);
    let files = [path.clone()];

    let at_head = verify(&files, Some(&key), Some(&shipped.head)).unwrap();
    assert_eq!(at_head.head, shipped.head);
    assert_eq!(at_head.lines_after_expected_head, Some(0));

    // Lines written since the head was shipped are fine.
    log.append(&record("decision")).await.unwrap();
    log.append(&record("decision")).await.unwrap();
    let grown = verify(&files, Some(&key), Some(&shipped.head)).unwrap();
    assert_eq!(grown.lines_after_expected_head, Some(2));
    assert_ne!(grown.head, shipped.head);

    // Cut back past the shipped head: the rest still chains, but the head is gone.
    let all = lines(&path);
    write_lines(&path, &all[..all.len() - 3]);
    assert!(verify(&files, Some(&key), None).is_ok());
    let (line, message) = broken_at(verify(&files, Some(&key), Some(&shipped.head)).unwrap_err());
    assert_eq!(line, 3, "{message}");
    assert!(message.contains("cut from the end"), "{message}");
}

#[tokio::test]
async fn a_torn_last_line_fails_verify_and_head_reads_the_line_before() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _log) = log_of(dir.path(), 2).await;
    let before = head(&path).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"seq\":4,\"time\":\"2026")
        .unwrap();
    let (line, message) = broken_at(verified(&path).unwrap_err());
    assert_eq!(line, 4, "{message}");
    assert!(message.contains("incomplete line"), "{message}");
    let torn = head(&path).unwrap();
    assert!(torn.torn_tail);
    assert_eq!(torn.head, before.head);
}

#[tokio::test]
async fn a_restart_reuses_the_generated_key_and_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_of(dir.path(), 2).await;
    let key_path = default_key_path(&path);
    assert_eq!(key_path, dir.path().join("audit.log.chain-key"));
    let key_text = std::fs::read(&key_path).unwrap();
    let id = log.chain_key_id().to_owned();
    drop(log);

    let log = AuditLog::open(&path, clock()).unwrap();
    assert_eq!(log.chain_key_id(), id);
    log.append(&record("decision")).await.unwrap();
    assert_eq!(std::fs::read(&key_path).unwrap(), key_text);
    let report = verified(&path).unwrap();
    assert_eq!((report.lines, report.key_id.as_str()), (4, id.as_str()));
    assert_eq!(report.previous_head, GENESIS);
    let geneses = lines(&path)
        .iter()
        .filter(|l| l.contains(GENESIS_EVENT))
        .count();
    assert_eq!(geneses, 1);
    // Nothing else was left in the directory (no temporary key file).
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["audit.log", "audit.log.chain-key"]);
}

#[cfg(unix)]
#[tokio::test]
async fn the_generated_key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (path, _log) = log_of(dir.path(), 0).await;
    let meta = std::fs::metadata(default_key_path(&path)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // 32 random bytes in hex.
    let text = std::fs::read_to_string(default_key_path(&path)).unwrap();
    assert_eq!(text.trim().len(), 64);
}

#[tokio::test]
async fn an_unkeyed_log_is_moved_aside_and_the_new_file_chains_to_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    // Two lines in the unkeyed format of older versions.
    let first = format!("{{\"seq\":1,\"event\":\"decision\",\"prev\":\"{GENESIS}\"}}");
    let second = format!(
        "{{\"seq\":2,\"event\":\"decision\",\"prev\":\"{}\"}}",
        super::super::chain::sha256_hex(first.as_bytes())
    );
    write_lines(&path, &[first, second.clone()]);
    let old_head = super::super::chain::sha256_hex(second.as_bytes());

    let log = AuditLog::open(&path, clock()).unwrap();
    log.append(&record("decision")).await.unwrap();
    let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".unkeyed-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        lines(&aside[0])[1],
        second,
        "the old file is kept as it was"
    );

    let genesis: Value = serde_json::from_str(&lines(&path)[0]).unwrap();
    assert_eq!(genesis["event"], GENESIS_EVENT);
    assert_eq!(genesis["prev"], old_head.as_str());
    assert_eq!(genesis["seq"], 3, "seq goes on from the old file");
    let name = aside[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(genesis["previous_file"], name.as_str());
    let report = verified(&path).unwrap();
    assert_eq!(report.previous_head, old_head);
}

#[tokio::test]
async fn a_new_key_moves_the_log_aside_and_chains_to_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_of(dir.path(), 2).await;
    let old_id = log.chain_key_id().to_owned();
    drop(log);
    let old_head = head(&path).unwrap().head;

    let log = AuditLog::open_keyed(&path, other_key(), clock()).unwrap();
    log.append(&record("decision")).await.unwrap();
    let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(&format!(".key-{old_id}-")))
        .collect();
    assert_eq!(aside.len(), 1);
    let old_key = generated_key(&path);
    let old_report = verify(&aside[..], Some(&old_key), None).unwrap();
    assert_eq!(old_report.head, old_head);
    let new_report = verify(&[&path], Some(&other_key()), None).unwrap();
    assert_eq!(new_report.previous_head, old_head);
    assert_eq!(new_report.lines, 2);
}

#[tokio::test]
async fn files_chain_together_across_a_move() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_of(dir.path(), 2).await;
    // A log rotator moves the file away while the service runs; the next line begins
    // a new file whose genesis carries the old head.
    let first = dir.path().join("audit.log.1");
    std::fs::rename(&path, &first).unwrap();
    log.append(&record("decision")).await.unwrap();
    log.append(&record("decision")).await.unwrap();
    let key = generated_key(&path);

    let both = verify(&[first.clone(), path.clone()], Some(&key), None).unwrap();
    assert_eq!((both.files, both.lines), (2, 6));
    assert_eq!(both.previous_head, GENESIS);
    assert_eq!(
        verify(&[&path], Some(&key), None).unwrap().previous_head,
        verify(&[&first], Some(&key), None).unwrap().head
    );

    // A file cut at its end, or one missing between two, breaks the link.
    let all = lines(&first);
    write_lines(&first, &all[..all.len() - 1]);
    let (line, message) =
        broken_at(verify(&[first.clone(), path.clone()], Some(&key), None).unwrap_err());
    assert_eq!(line, 1, "{message}");
    assert!(
        message.contains("a file is missing between them"),
        "{message}"
    );
}

#[tokio::test]
async fn a_tampered_last_line_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_of(dir.path(), 2).await;
    drop(log);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("subject-1", "subject-x")).unwrap();
    let e = AuditLog::open(&path, clock()).err().expect("refused");
    assert!(e.to_string().contains("does not verify"), "{e}");
}

#[tokio::test]
async fn the_chain_key_stays_secret() {
    let canary = "chain-key-canary-7d41e0b95c3a2f68";
    let key = ChainKey::from_secret(&Secret::new(canary), "env:K").unwrap();
    assert!(!format!("{key:?}").contains("canary"));
    assert!(!key.id().contains("canary") && key.id().len() == 16);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open_keyed(&path, key, clock()).unwrap();
    log.append(&record("decision")).await.unwrap();
    assert!(!std::fs::read_to_string(&path).unwrap().contains(canary));
    let report = verify(
        &[&path],
        Some(&ChainKey::from_secret(&Secret::new(canary), "env:K").unwrap()),
        None,
    )
    .unwrap();
    assert!(!serde_json::to_string(&report).unwrap().contains(canary));

    let e = ChainKey::from_secret(&Secret::new("short-canary"), "env:K").unwrap_err();
    assert!(!e.to_string().contains("short-canary"), "{e}");
    assert!(e.to_string().contains("32 bytes"), "{e}");
}
