//! Opening a log at start-up: continuing its chain, or moving aside a file that cannot
//! be continued and beginning a new one chained to it.
//!
//! vend does not rotate its log by size or age. A new file begins when the log is new
//! or empty, and when the file there was not chained under the configured key: the
//! unkeyed format of older versions, or another key (`chain_key_ref` changed). Such a
//! file is never appended to — its lines could not be verified with one key — but
//! renamed to `<log>.unkeyed-<UTC time>` or `<log>.key-<old key id>-<UTC time>`, and
//! the new file's genesis line names it and carries its head as `prev`.

use std::path::{Path, PathBuf};

use artifactstore_model::Clock;

use super::AuditError;
use super::chain::{Chain, Entry, GENESIS, GENESIS_EVENT, append_entries, sha256_hex, unseal};
use super::file::{first_line, last_complete_line, open_append};
use super::key::ChainKey;

pub(super) fn continue_or_begin(
    path: &Path,
    key: &ChainKey,
    clock: &dyn Clock,
) -> Result<Chain, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let corrupt = |message: String| AuditError::Corrupt {
        path: path.to_owned(),
        line: 0,
        message,
    };
    let file = open_append(path).map_err(io)?;
    let Some(last) = last_complete_line(path, &file).map_err(io)? else {
        let first_ever = Chain {
            seq: 0,
            prev: GENESIS.to_owned(),
        };
        return begin(path, key, clock, first_ever, None);
    };
    drop(file);
    let first = first_line(path).map_err(io)?.unwrap_or_default();
    match genesis_key_id(&first) {
        Some(id) if id == key.id() => {
            let (body, mac) = unseal(&last).ok_or_else(|| {
                corrupt("the last line carries no MAC: it was not written under this chain key; run `artifactstore audit verify` (or `vend audit verify`)".into())
            })?;
            if !key.verifies(&body, mac) {
                return Err(corrupt(
                    "the last line's MAC does not verify under the chain key: it was edited; run `artifactstore audit verify` (or `vend audit verify`)".into(),
                ));
            }
            let seq = seq_of(&last).ok_or_else(|| corrupt("the last line has no seq".into()))?;
            Ok(Chain {
                seq,
                prev: mac.to_owned(),
            })
        }
        other => {
            let tag = match &other {
                Some(id) => format!("key-{id}"),
                None => "unkeyed".to_owned(),
            };
            // The head as the file's own format has it: its last MAC, or for the
            // unkeyed format the SHA-256 of its last line.
            let head = match unseal(&last) {
                Some((_, mac)) => mac.to_owned(),
                None => sha256_hex(&last),
            };
            let seq = seq_of(&last).unwrap_or(0);
            let aside = move_aside(path, &tag, clock).map_err(io)?;
            let aside_name = aside
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            tracing::warn!(
                path = %path.display(),
                moved_to = %aside.display(),
                previous_head = %head,
                "the audit log was not chained under the configured chain key ({}); moved it aside and began a new file chained to its head",
                match &other {
                    Some(id) => format!("its key id is {id}, the configured one {}", key.id()),
                    None => "it is in the unkeyed format of older versions".to_owned(),
                }
            );
            begin(
                path,
                key,
                clock,
                Chain { seq, prev: head },
                Some(&aside_name),
            )
        }
    }
}

/// The key id named by `first` when it is a sealed genesis line.
fn genesis_key_id(first: &[u8]) -> Option<String> {
    unseal(first)?;
    let value: serde_json::Value = serde_json::from_slice(first).ok()?;
    if value.get("event")?.as_str()? != GENESIS_EVENT {
        return None;
    }
    Some(value.get("key_id")?.as_str()?.to_owned())
}

fn seq_of(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()?
        .get("seq")?
        .as_u64()
}

/// Writes the genesis line of a new (empty) file.
fn begin(
    path: &Path,
    key: &ChainKey,
    clock: &dyn Clock,
    chain: Chain,
    previous_file: Option<&str>,
) -> Result<Chain, AuditError> {
    let mut chain = chain;
    append_entries(
        &mut chain,
        path,
        clock,
        key,
        &[Entry::Genesis { previous_file }],
    )
    .map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(chain)
}

/// Renames the log to `<name>.<tag>-<UTC time>` (with `.2`, `.3`… if that is taken)
/// and returns the new path.
fn move_aside(path: &Path, tag: &str, clock: &dyn Clock) -> std::io::Result<PathBuf> {
    let stamp: String = clock
        .now()
        .rfc3339()
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let base = format!("{name}.{tag}-{stamp}Z");
    let mut aside = path.with_file_name(&base);
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = path.with_file_name(format!("{base}.{n}"));
    }
    std::fs::rename(path, &aside)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(aside)
}
