//! A group's writes as a few multi-row statements rather than a dozen statements each.
//! Every statement is a round trip to the database's connection (to SQLite's worker
//! thread, to PostgreSQL's server), and with commits shared those round trips are what a
//! group spends its time on: the holds of a group are three statements whatever their
//! number, and the new files of one version about eight.
//!
//! Only what can be decided for the whole set at once is written here: a file row with a
//! quota to check, a path that appears twice in the group, or a version that would pass
//! its maximum of files is left to the one-job-at-a-time path, which answers it exactly
//! as an ungrouped write would. Every value is bound; only placeholders are generated.

use std::collections::{HashMap, HashSet};

use artifactstore_model::{Timestamp, VersionState};
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::gc::STALE_AFTER;
use crate::records::file_from_row;
use crate::write::{AddFile, create_version, lock_version};
use crate::{AddedFile, Error, EventKind, FileEntry, Hold, Result, VersionId};

/// Takes every hold of `holds` (digest, holder) inside `tx` (the protocol is in `gc`'s
/// module docs): the candidate rows first (their keys lock out a collector), then the
/// holds of the digests no collector is deleting, which are answered
/// [`Hold::BeingDeleted`] without changing anything. Answers in the order asked; a
/// single hold run by itself is this with one.
pub(super) async fn holds(
    tx: &mut Transaction<'_, Any>,
    now: Timestamp,
    holds: &[(String, String)],
) -> Result<Vec<Hold>> {
    if holds.is_empty() {
        return Ok(Vec::new());
    }
    let stale = now.saturating_sub(STALE_AFTER).unix_millis();
    // In one order whatever the arrival: two replicas' groups then lock candidate rows in
    // the same order and cannot deadlock on them.
    let digests: Vec<&str> = {
        let mut digests: Vec<&str> = holds.iter().map(|(d, _)| d.as_str()).collect();
        digests.sort_unstable();
        digests.dedup();
        digests
    };
    // Rows of (digest, first_seen); an existing row is left as it is but locked.
    let sql = format!(
        "INSERT INTO gc_candidates (digest, size, first_seen) VALUES {} \
         ON CONFLICT (digest) DO UPDATE SET size = gc_candidates.size \
         RETURNING digest, deleting_since",
        (0..digests.len())
            .map(|i| format!("(${}, 0, $1)", i + 2))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now.unix_millis());
    for d in &digests {
        q = q.bind(*d);
    }
    let mut being_deleted = HashSet::new();
    for row in q.fetch_all(&mut **tx).await? {
        let since: Option<i64> = row.try_get("deleting_since")?;
        if since.is_some_and(|s| s >= stale) {
            being_deleted.insert(row.try_get::<String, _>("digest")?);
        }
    }
    // A row marked `deleting` existed before: the upsert above changed nothing in it.
    let held: Vec<&(String, String)> = holds
        .iter()
        .filter(|(d, _)| !being_deleted.contains(d))
        .collect();
    if !held.is_empty() {
        let held_digests: Vec<&str> = digests
            .iter()
            .copied()
            .filter(|d| !being_deleted.contains(*d))
            .collect();
        let sql = format!(
            "DELETE FROM gc_candidates WHERE digest IN ({})",
            (1..=held_digests.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for d in &held_digests {
            q = q.bind(*d);
        }
        q.execute(&mut **tx).await?;
        // The same (digest, holder) twice would be one row affected twice.
        let mut seen = HashSet::new();
        let pairs: Vec<&(String, String)> = held.into_iter().filter(|p| seen.insert(*p)).collect();
        let sql = format!(
            "INSERT INTO gc_holds (digest, holder, since) VALUES {} \
             ON CONFLICT (digest, holder) DO UPDATE SET since = excluded.since",
            (0..pairs.len())
                .map(|i| format!("(${}, ${}, $1)", 2 * i + 2, 2 * i + 3))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now.unix_millis());
        for (d, h) in pairs {
            q = q.bind(d.as_str()).bind(h.as_str());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(holds
        .iter()
        .map(|(d, _)| {
            if being_deleted.contains(d) {
                Hold::BeingDeleted
            } else {
                Hold::Held
            }
        })
        .collect())
}

/// What became of one file row of a batch.
pub(super) enum FileOutcome {
    Written {
        added: AddedFile,
        last_seq: i64,
    },
    Refused(Error),
    /// Left to the one-job-at-a-time path.
    Alone,
}

/// Adds the file rows of `specs` — all of one version, none with a quota — inside `tx`.
pub(super) async fn files(
    tx: &mut Transaction<'_, Any>,
    now: Timestamp,
    max_files: u64,
    id: &VersionId,
    specs: &[&AddFile],
) -> Result<Vec<FileOutcome>> {
    let mut out: Vec<FileOutcome> = specs.iter().map(|_| FileOutcome::Alone).collect();
    // A path asked twice: the second must see the first's row, so both go alone.
    let mut count = HashMap::new();
    for s in specs {
        *count.entry(s.file.path.as_str()).or_insert(0) += 1;
    }
    let batch: Vec<usize> = (0..specs.len())
        .filter(|&i| count[specs[i].file.path.as_str()] == 1)
        .collect();
    if batch.is_empty() {
        return Ok(out);
    }
    let mut last_seq = 0;
    let mut new_version = false;
    let (state, file_count) = match lock_version(tx, id).await? {
        Some(v) => (v.state, v.file_count),
        // Past the maximum of files, every file of a version about to be created is
        // answered alone, so that the version is created (and charged) by one of them.
        None if batch.len() as u64 > max_files => return Ok(out),
        None => {
            last_seq = create_version(tx, id, now).await?;
            new_version = true;
            (VersionState::Open, 0)
        }
    };
    if state == VersionState::Deleted {
        for &i in &batch {
            out[i] = FileOutcome::Refused(Error::VersionDeleted);
        }
        return Ok(out);
    }
    let existing = existing_files(tx, id, specs, &batch).await?;
    let mut new = Vec::new();
    for &i in &batch {
        let file = &specs[i].file;
        match existing.get(file.path.as_str()) {
            Some(record) if record.digest == file.digest => {
                let added = AddedFile {
                    record: record.clone(),
                    created: false,
                };
                out[i] = FileOutcome::Written { added, last_seq: 0 };
            }
            Some(record) => {
                out[i] = FileOutcome::Refused(Error::FileConflict {
                    existing: record.digest,
                })
            }
            None if state == VersionState::Complete => {
                out[i] = FileOutcome::Refused(Error::VersionComplete)
            }
            None => new.push(i),
        }
    }
    // Past the maximum, each file is answered alone (the ones that still fit are added).
    if new.is_empty() || file_count.saturating_add(new.len() as u64) > max_files {
        return Ok(out);
    }
    let bytes: u64 = new.iter().map(|&i| specs[i].file.size).sum();
    crate::usage::charge(tx, id.namespace.as_str(), bytes, new_version, None).await?;
    sqlx::query(
        "UPDATE versions SET file_count = file_count + $1 \
         WHERE namespace = $2 AND name = $3 AND version = $4",
    )
    .bind(new.len() as i64)
    .bind(id.namespace.as_str())
    .bind(id.name.as_str())
    .bind(id.version.as_str())
    .execute(&mut **tx)
    .await?;
    insert_files(tx, now, id, specs, &new).await?;
    let first_seq = insert_events(tx, now, id, specs, &new).await?;
    release_holds(tx, specs, &new).await?;
    for (n, &i) in new.iter().enumerate() {
        let added = specs[i].file.added(now);
        let seq = first_seq + n as i64;
        out[i] = FileOutcome::Written {
            added,
            last_seq: seq.max(last_seq),
        };
    }
    Ok(out)
}

/// The rows already at the paths of `batch`, by path.
async fn existing_files(
    tx: &mut Transaction<'_, Any>,
    id: &VersionId,
    specs: &[&AddFile],
    batch: &[usize],
) -> Result<HashMap<String, FileEntry>> {
    let sql = format!(
        "SELECT path, digest, size, media_type, created_at FROM files \
         WHERE namespace = $1 AND name = $2 AND version = $3 AND path IN ({})",
        (0..batch.len())
            .map(|n| format!("${}", n + 4))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str());
    for &i in batch {
        q = q.bind(specs[i].file.path.as_str());
    }
    let mut existing = HashMap::new();
    for row in q.fetch_all(&mut **tx).await? {
        let record = file_from_row(&row)?;
        existing.insert(record.path.clone(), record);
    }
    Ok(existing)
}

async fn insert_files(
    tx: &mut Transaction<'_, Any>,
    now: Timestamp,
    id: &VersionId,
    specs: &[&AddFile],
    new: &[usize],
) -> Result<()> {
    let sql = format!(
        "INSERT INTO files (namespace, name, version, path, digest, size, media_type, created_at) \
         VALUES {}",
        (0..new.len())
            .map(|n| {
                let b = 5 + 4 * n;
                format!("($1, $2, $3, ${b}, ${}, ${}, ${}, $4)", b + 1, b + 2, b + 3)
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .bind(now.unix_millis());
    for &i in new {
        let f = &specs[i].file;
        q = q
            .bind(f.path.as_str())
            .bind(f.digest.to_string())
            .bind(f.size as i64)
            .bind(f.media_type.as_str());
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// One `file.added` event per new row, numbered on from the log's end in the order of
/// `new`; returns the first number.
async fn insert_events(
    tx: &mut Transaction<'_, Any>,
    now: Timestamp,
    id: &VersionId,
    specs: &[&AddFile],
    new: &[usize],
) -> Result<i64> {
    let first: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM events")
        .fetch_one(&mut **tx)
        .await?
        .try_get("next")?;
    let sql = format!(
        "INSERT INTO events (seq, kind, namespace, name, version, path, digest, size, media_type, at) \
         VALUES {}",
        (0..new.len())
            .map(|n| {
                let b = 6 + 5 * n;
                format!(
                    "(${b}, $1, $2, $3, $4, ${}, ${}, ${}, ${}, $5)",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(EventKind::FileAdded.as_str())
        .bind(id.namespace.as_str())
        .bind(id.name.as_str())
        .bind(id.version.as_str())
        .bind(now.unix_millis());
    for (n, &i) in new.iter().enumerate() {
        let f = &specs[i].file;
        q = q
            .bind(first + n as i64)
            .bind(f.path.as_str())
            .bind(f.digest.to_string())
            .bind(f.size as i64)
            .bind(f.media_type.as_str());
    }
    q.execute(&mut **tx).await?;
    Ok(first)
}

/// Releases the upload holds the new rows now stand for.
async fn release_holds(
    tx: &mut Transaction<'_, Any>,
    specs: &[&AddFile],
    new: &[usize],
) -> Result<()> {
    let held: Vec<(String, &str)> = new
        .iter()
        .filter_map(|&i| {
            let s = specs[i];
            s.holder.as_deref().map(|h| (s.file.digest.to_string(), h))
        })
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "DELETE FROM gc_holds WHERE {}",
        (0..held.len())
            .map(|n| format!("(digest = ${} AND holder = ${})", 2 * n + 1, 2 * n + 2))
            .collect::<Vec<_>>()
            .join(" OR ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for (d, h) in &held {
        q = q.bind(d.as_str()).bind(*h);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}
