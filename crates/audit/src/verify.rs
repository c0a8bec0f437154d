//! `artifactstore vend audit verify` and `audit head`: checking a log's chain line by
//! line, and reading its head.

use std::io::BufRead;
use std::path::Path;

use serde::Serialize;

use super::AuditError;
use super::chain::{GENESIS_EVENT, unseal};
use super::file::read_tail;
use super::key::ChainKey;

/// The result of checking a log's chain.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub files: usize,
    pub lines: u64,
    /// The MAC of the last line: keep it elsewhere to detect a cut-off tail later.
    pub head: String,
    /// The key id the (last) file's genesis line names.
    pub key_id: String,
    /// Whether every line's MAC was checked under the chain key. Without a key only
    /// the structure was: anyone can write a structurally sound chain.
    pub authenticated: bool,
    /// The `prev` of the first file's genesis line: the head of the file before it
    /// (64 zeros for the first file ever).
    pub previous_head: String,
    /// With an expected head: how many lines were appended after the line it is the
    /// MAC of (0: it is the head).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines_after_expected_head: Option<u64>,
}

/// Whether `s` has the form of a head (64 lower-case hex digits).
pub fn is_head(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where the chain stands after the lines read so far.
struct Cursor {
    seq: u64,
    mac: String,
}

/// Checks the files of a log, oldest first, as one chain: each file begins with a
/// genesis line; every line is JSON sealed with a MAC, which with `key` must verify
/// under it; `seq` counts up by one and `prev` is the MAC of the line before (for a
/// later file's genesis, the head of the file before it). With `expect_head`, some
/// line's MAC must be it (a head kept elsewhere earlier), or the tail was cut.
/// Returns the first break, naming the file and line.
pub fn verify<P: AsRef<Path>>(
    paths: &[P],
    key: Option<&ChainKey>,
    expect_head: Option<&str>,
) -> Result<VerifyReport, AuditError> {
    let mut cursor: Option<Cursor> = None;
    let mut report = VerifyReport {
        files: paths.len(),
        lines: 0,
        head: String::new(),
        key_id: String::new(),
        authenticated: key.is_some(),
        previous_head: String::new(),
        lines_after_expected_head: None,
    };
    let mut last = None;
    for path in paths {
        let path = path.as_ref();
        let lines = verify_file(path, key, expect_head, &mut cursor, &mut report)?;
        last = Some((path, lines));
    }
    if let (Some(want), Some((path, lines))) = (expect_head, last)
        && report.lines_after_expected_head.is_none()
    {
        return Err(AuditError::Corrupt {
            path: path.to_owned(),
            line: lines,
            message: format!(
                "no line has the expected head {want} as its MAC; the chain ends at {}: lines were cut from the end (or the expected head belongs to another log)",
                report.head
            ),
        });
    }
    Ok(report)
}

fn verify_file(
    path: &Path,
    key: Option<&ChainKey>,
    expect_head: Option<&str>,
    cursor: &mut Option<Cursor>,
    report: &mut VerifyReport,
) -> Result<u64, AuditError> {
    let file = std::fs::File::open(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = std::io::BufReader::new(file);
    let corrupt = |line: u64, message: String| AuditError::Corrupt {
        path: path.to_owned(),
        line,
        message,
    };
    let first_file = cursor.is_none();
    let mut line_no = 0u64;
    let mut buf = Vec::new();
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
        let n = line_no;
        if !buf.ends_with(b"\n") {
            return Err(corrupt(
                n,
                "incomplete line (no newline at the end of the file): torn by a crash while writing, or cut".into(),
            ));
        }
        let line = &buf[..buf.len() - 1];
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| corrupt(n, format!("not JSON: {e}")))?;
        let Some((body, mac)) = unseal(line) else {
            return Err(corrupt(
                n,
                "no MAC: not a line of the keyed chain (the unkeyed format of older versions, or written by something else)".into(),
            ));
        };
        let seq = value
            .get("seq")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| corrupt(n, "no seq".into()))?;
        let prev = value.get("prev").and_then(|p| p.as_str()).unwrap_or("");
        let is_genesis = value.get("event").and_then(|e| e.as_str()) == Some(GENESIS_EVENT);
        if n == 1 {
            if !is_genesis {
                return Err(corrupt(
                    1,
                    "not a genesis line: the head of the file was cut (or the file is in the unkeyed format of older versions)".into(),
                ));
            }
            let key_id = value.get("key_id").and_then(|k| k.as_str()).unwrap_or("");
            if let Some(key) = key
                && key_id != key.id()
            {
                return Err(corrupt(
                    1,
                    format!(
                        "the file was chained under key id {key_id:?}, the key given has id {} (another key, or the file was rewritten under a key of someone else's)",
                        key.id()
                    ),
                ));
            }
            report.key_id = key_id.to_owned();
        } else if is_genesis {
            return Err(corrupt(
                n,
                "a genesis line inside the file: files were spliced together".into(),
            ));
        }
        if let Some(key) = key
            && !key.verifies(&body, mac)
        {
            return Err(corrupt(
                n,
                "the MAC does not verify under the chain key: the line was edited (its chain recomputed without the key), or forged".into(),
            ));
        }
        match cursor {
            None => report.previous_head = prev.to_owned(),
            Some(before) => {
                if prev != before.mac {
                    return Err(corrupt(
                        n,
                        if n == 1 {
                            format!(
                                "the genesis names {prev} as the head of the file before, which ends with {}: a file is missing between them, or the earlier one was cut",
                                before.mac
                            )
                        } else {
                            format!(
                                "prev is not the MAC of line {}: lines were removed, inserted or reordered",
                                n - 1
                            )
                        },
                    ));
                }
                if seq != before.seq + 1 {
                    return Err(corrupt(
                        n,
                        format!(
                            "seq {seq} where {} was expected: a line was removed or inserted",
                            before.seq + 1
                        ),
                    ));
                }
            }
        }
        report.lines += 1;
        if let Some(after) = &mut report.lines_after_expected_head {
            *after += 1;
        }
        if expect_head == Some(mac) {
            report.lines_after_expected_head = Some(0);
        }
        *cursor = Some(Cursor {
            seq,
            mac: mac.to_owned(),
        });
        report.head = mac.to_owned();
    }
    if line_no == 0 {
        return Err(corrupt(
            0,
            if first_file {
                "empty: not even a genesis line".into()
            } else {
                "empty: not even a genesis line (a file between others was emptied)".into()
            },
        ));
    }
    Ok(line_no)
}

/// The head of a log as it is on disk.
#[derive(Debug, Serialize)]
pub struct Head {
    /// The MAC of the last complete line.
    pub head: String,
    pub seq: u64,
    /// Whether a torn line (a write cut short by a crash) follows it; the service
    /// removes it at its next start.
    pub torn_tail: bool,
}

/// Reads the head of the log at `path` without changing the file (the service may be
/// writing it). Not authenticated: `verify` checks the chain that leads to it.
pub fn head(path: &Path) -> Result<Head, AuditError> {
    let corrupt = |message: &str| AuditError::Corrupt {
        path: path.to_owned(),
        line: 0,
        message: message.to_owned(),
    };
    let tail = read_tail(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    let line = tail
        .line
        .ok_or_else(|| corrupt("no complete line: the log has no head yet"))?;
    let (_, mac) = unseal(&line).ok_or_else(|| {
        corrupt("the last line has no MAC (the unkeyed format of older versions)")
    })?;
    let seq = serde_json::from_slice::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v.get("seq")?.as_u64())
        .ok_or_else(|| corrupt("the last line has no seq"))?;
    Ok(Head {
        head: mac.to_owned(),
        seq,
        torn_tail: tail.end < tail.len,
    })
}
