//! `artifactstore vend audit verify`: checking a log's chain line by line.

use std::io::BufRead;
use std::path::Path;

use serde::Serialize;

use super::AuditError;
use super::chain::{GENESIS, sha256_hex};

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
