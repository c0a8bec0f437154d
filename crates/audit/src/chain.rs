//! The chain: how a line is numbered, sealed with its MAC, linked to the line before
//! and written.
//!
//! A line is a JSON object whose last member is `"mac"`: the HMAC-SHA256, under the
//! chain key, of the same object without that member. `prev` is the previous line's
//! `mac`, so the MAC of the last line (the head) vouches for every line before it.
//! Every file starts with a genesis line (`"event":"audit.genesis"`) that names the key
//! id and, as its `prev`, the head of the file before it.

use std::io::Write;
use std::path::Path;

use artifactstore_model::{Clock, Timestamp};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::file::open_append;
use super::key::ChainKey;

/// The `prev` of the genesis line of the first file ever: there was no head before.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The event of the first line of every file.
pub const GENESIS_EVENT: &str = "audit.genesis";

/// What comes after the body of a line: `,"mac":"` + 64 hex digits + `"}`.
const MAC_OPEN: &[u8] = b",\"mac\":\"";
const MAC_HEX: usize = 64;
const SEAL_LEN: usize = MAC_OPEN.len() + MAC_HEX + 2;

/// The members a line begins with; a record's follow, then `prev`.
#[derive(Serialize)]
struct Stamp {
    seq: u64,
    time: Timestamp,
}

#[derive(Serialize)]
struct GenesisLine<'a> {
    seq: u64,
    time: Timestamp,
    event: &'static str,
    key_id: &'a str,
    /// The name the file before this one was moved aside to, when vend moved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_file: Option<&'a str>,
    prev: &'a str,
}

/// The end of the chain as written: the last `seq` and the head (the last line's MAC,
/// or for a file not yet begun the head of the file before it).
pub(super) struct Chain {
    pub(super) seq: u64,
    pub(super) prev: String,
}

/// What a line records.
pub(super) enum Entry<'a> {
    Genesis {
        previous_file: Option<&'a str>,
    },
    /// The members of a service's record as serialized (a JSON object without its
    /// braces): they go between `time` and `prev`, in the record's own order.
    Record(&'a [u8]),
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `body` (a serialized JSON object) with its MAC added as the last member; returns the
/// MAC too.
fn sealed(mut body: Vec<u8>, key: &ChainKey) -> (Vec<u8>, String) {
    let mac = key.mac(&body);
    debug_assert_eq!(body.last(), Some(&b'}'));
    body.pop();
    body.extend_from_slice(MAC_OPEN);
    body.extend_from_slice(mac.as_bytes());
    body.extend_from_slice(b"\"}");
    (body, mac)
}

/// A line (without its `\n`) split into the bytes its MAC covers and the MAC it
/// claims; `None` when it does not end in a `"mac"` member.
pub(super) fn unseal(line: &[u8]) -> Option<(Vec<u8>, &str)> {
    let at = line.len().checked_sub(SEAL_LEN)?;
    let (body, seal) = line.split_at(at);
    let mac = seal.strip_prefix(MAC_OPEN)?.strip_suffix(b"\"}")?;
    if !mac.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut covered = body.to_vec();
    covered.push(b'}');
    Some((covered, std::str::from_utf8(mac).ok()?))
}

/// Appends the lines of `entries`, sealed and chained, and syncs them. A file found
/// empty (new, or emptied or moved away by someone) gets a genesis line first, whose
/// `prev` is the head written last, so the chain goes on across files. A write or
/// sync that fails takes the file back to its length before, so no line outside the
/// chain stays behind, and the chain in memory does not move.
pub(super) fn append_entries(
    chain: &mut Chain,
    path: &Path,
    clock: &dyn Clock,
    key: &ChainKey,
    entries: &[Entry<'_>],
) -> std::io::Result<()> {
    let mut f = open_append(path)?;
    let before = f.metadata()?.len();
    let mut seq = chain.seq;
    let mut prev = chain.prev.clone();
    let mut bytes = Vec::new();
    let starts_with_genesis = matches!(entries.first(), Some(Entry::Genesis { .. }));
    let genesis = (before == 0 && !starts_with_genesis).then_some(Entry::Genesis {
        previous_file: None,
    });
    for entry in genesis.iter().chain(entries) {
        seq += 1;
        // Read under the chain's lock, so lines' times follow their order.
        let time = clock.now();
        let body = match entry {
            Entry::Genesis { previous_file } => serde_json::to_vec(&GenesisLine {
                seq,
                time,
                event: GENESIS_EVENT,
                key_id: key.id(),
                previous_file: *previous_file,
                prev: &prev,
            }),
            Entry::Record(members) => serde_json::to_vec(&Stamp { seq, time }).map(|mut b| {
                b.pop();
                if !members.is_empty() {
                    b.push(b',');
                    b.extend_from_slice(members);
                }
                b.extend_from_slice(b",\"prev\":\"");
                b.extend_from_slice(prev.as_bytes());
                b.extend_from_slice(b"\"}");
                b
            }),
        }
        .expect("audit lines serialize");
        let (line, mac) = sealed(body, key);
        bytes.extend_from_slice(&line);
        bytes.push(b'\n');
        prev = mac;
    }
    if let Err(e) = f.write_all(&bytes).and_then(|()| f.sync_data()) {
        let _ = f.set_len(before).and_then(|()| f.sync_data());
        return Err(e);
    }
    chain.seq = seq;
    chain.prev = prev;
    Ok(())
}
