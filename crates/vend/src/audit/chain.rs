//! The chain: how a line is numbered, linked to the line before and written.

use std::io::Write;
use std::path::Path;

use artifactstore_model::{Clock, Timestamp};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::AuditRecord;
use super::file::open_append;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: Timestamp,
    #[serde(flatten)]
    record: &'a AuditRecord,
    prev: &'a str,
}

pub(super) struct Chain {
    pub(super) seq: u64,
    pub(super) prev: String,
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes the next line of the chain and syncs it. A write or sync that fails takes
/// the file back to its length before, so no line outside the chain stays behind.
pub(super) fn append_line(
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
