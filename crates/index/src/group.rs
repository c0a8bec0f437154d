//! Group commit for the writes of the upload path: an upload's hold on its digest and
//! its file row. Every commit of the index is durable on its own (SQLite's WAL is
//! fsynced, PostgreSQL waits for its WAL flush), so committing each write alone costs a
//! flush per write; concurrent uploads of small files then spend most of their time
//! waiting for the disk, one after the other, behind the write lock. Here they share one
//! transaction and so one flush, and each caller is answered only once the commit that
//! holds its write is durable.
//!
//! Leader and followers: a writer queues its job, then waits for its answer or for the
//! write lock, whichever comes first. Whoever gets the lock while its job is still queued
//! takes the queue (less the jobs whose callers have gone away: their writes are not
//! made, as an ungrouped write would have been rolled back) and runs it in one
//! transaction: holds and plain file rows as multi-row statements (`batch`), the rest
//! one job at a time in savepoints. A job refused for a reason of its own (a conflicting
//! file, a complete version, a quota) is rolled back to its savepoint, leaving the rest
//! of the group untouched. No answer, not even a refusal or an "already there", is sent
//! before the commit: each may rest on rows the group itself wrote. If the commit fails,
//! or a job meets a database error, that job runs again by itself, exactly as it would
//! have without grouping — grouping never turns a write that would succeed into a
//! failure. The group runs in a task of its own, so a request that goes away mid-commit
//! cannot strand the others' answers, and the jobs that run again by themselves do so in
//! another, so the leader does not wait for them.
//!
//! Across replicas on one PostgreSQL, groups take candidate rows in digest order and
//! version rows in name order. Two groups can still wait on each other through the
//! event log's next number while one holds a version row the other needs; PostgreSQL
//! then ends one of them as a deadlock (after `deadlock_timeout`), and its jobs run again
//! one by one — slower, never wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use artifactstore_model::{Clock, Digest};
use sqlx::{Acquire, Any, AnyPool, Transaction};
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot, watch};

use crate::write::{AddFile, add_file_in, retry_conflicts};
use crate::{AddedFile, Error, Hold, Index, Result};

/// The most writes one commit carries; the rest wait for the next one.
const MAX_GROUP: usize = 256;

/// One write waiting for a commit, and where its answer goes.
enum Job {
    AddFile(AddFile, oneshot::Sender<Result<AddedFile>>),
    Hold {
        digest: Digest,
        holder: String,
        reply: oneshot::Sender<Result<Hold>>,
    },
}

/// What a job wrote inside the group's transaction, answered once that commits.
enum Written {
    AddFile { added: AddedFile, last_seq: i64 },
    Hold(Hold),
}

impl Written {
    /// Whether there is anything to commit: a hold refused because a collector is
    /// deleting the blob, and a file row that was already there, wrote nothing that needs
    /// keeping (their transactions took locks only).
    fn keeps(&self) -> bool {
        match self {
            Written::AddFile { added, .. } => added.created,
            Written::Hold(hold) => *hold == Hold::Held,
        }
    }
}

impl Job {
    fn answer(self, written: Written) {
        match (self, written) {
            (Job::AddFile(_, reply), Written::AddFile { added, .. }) => {
                let _ = reply.send(Ok(added));
            }
            (Job::Hold { reply, .. }, Written::Hold(hold)) => {
                let _ = reply.send(Ok(hold));
            }
            _ => unreachable!("a job is answered with what it wrote"),
        }
    }

    /// Whether the caller has gone away (its request was dropped): its write is not made
    /// at all, as an ungrouped write would have been rolled back.
    fn abandoned(&self) -> bool {
        match self {
            Job::AddFile(_, reply) => reply.is_closed(),
            Job::Hold { reply, .. } => reply.is_closed(),
        }
    }

    fn refuse(self, e: Error) {
        match self {
            Job::AddFile(_, reply) => {
                let _ = reply.send(Err(e));
            }
            Job::Hold { reply, .. } => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// The writes waiting for the next group commit.
#[derive(Default)]
pub(crate) struct Queue {
    jobs: std::sync::Mutex<Vec<Job>>,
    stats: Arc<Stats>,
}

/// Commits made by groups, and the writes they carried (`/metrics`).
#[derive(Default)]
struct Stats {
    commits: AtomicU64,
    writes: AtomicU64,
}

impl Queue {
    fn push(&self, job: Job) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job);
    }

    /// The oldest queued jobs whose callers still wait, at most [`MAX_GROUP`].
    fn take(&self) -> Vec<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.retain(|job| !job.abandoned());
        let n = jobs.len().min(MAX_GROUP);
        jobs.drain(..n).collect()
    }
}

/// Group commits made so far, and the writes they carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    pub commits: u64,
    pub writes: u64,
}

/// What a write needs, cloned out of the index so that a group runs to its end in a task
/// of its own.
#[derive(Clone)]
pub(crate) struct Writer {
    pool: AnyPool,
    clock: Arc<dyn Clock>,
    write: Arc<Mutex<()>>,
    last_seq: Arc<watch::Sender<i64>>,
    max_files: Arc<AtomicU64>,
    stats: Arc<Stats>,
}

impl Index {
    fn writer(&self) -> Writer {
        Writer {
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            write: self.write.clone(),
            last_seq: self.last_seq.clone(),
            max_files: self.max_files_per_version.clone(),
            stats: self.queue.stats.clone(),
        }
    }

    /// Group commits made so far, and the writes they carried.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            commits: self.queue.stats.commits.load(Ordering::Relaxed),
            writes: self.queue.stats.writes.load(Ordering::Relaxed),
        }
    }

    pub(crate) async fn add_file_grouped(&self, spec: AddFile) -> Result<AddedFile> {
        let (reply, answer) = oneshot::channel();
        self.grouped(Job::AddFile(spec, reply), answer).await
    }

    pub(crate) async fn hold_grouped(&self, digest: Digest, holder: &str) -> Result<Hold> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Hold {
            digest,
            holder: holder.to_owned(),
            reply,
        };
        self.grouped(job, answer).await
    }

    /// Queues `job` and returns its answer: sent by the leader of the group that carried
    /// it, or after leading that group itself.
    async fn grouped<T>(&self, job: Job, mut answer: oneshot::Receiver<Result<T>>) -> Result<T> {
        self.queue.push(job);
        loop {
            let guard = tokio::select! {
                biased;
                sent = &mut answer => return sent.unwrap_or_else(|_| Err(lost())),
                guard = self.write.clone().lock_owned() => guard,
            };
            match answer.try_recv() {
                Ok(sent) => return sent,
                Err(TryRecvError::Closed) => return Err(lost()),
                Err(TryRecvError::Empty) => {}
            }
            let jobs = self.queue.take();
            if jobs.is_empty() {
                // Another group took this job and answers it after its commit (a job
                // run again by itself waits for the lock behind this one).
                drop(guard);
                return answer.await.unwrap_or_else(|_| Err(lost()));
            }
            // A task of its own: the group completes even if this request goes away.
            if tokio::spawn(self.writer().commit_group(jobs, guard))
                .await
                .is_err()
            {
                return Err(lost());
            }
        }
    }
}

/// A group's leader failed without answering (it panicked): nothing is known to be written.
fn lost() -> Error {
    Error::Db(sqlx::Error::WorkerCrashed)
}

/// What a job of a group came to, answered only once the group's commit is known: even a
/// refusal or an "already there" may rest on rows the group itself wrote.
enum Decided {
    Wrote(Written),
    Refused(Error),
}

impl Writer {
    /// Runs `jobs` in one transaction and answers each once it is committed. Jobs that
    /// must run by themselves do so in a task of their own, so that this group's leader
    /// is not kept waiting for them.
    async fn commit_group(self, jobs: Vec<Job>, guard: OwnedMutexGuard<()>) {
        let mut alone = Vec::new();
        self.run_group(jobs, &mut alone).await;
        drop(guard);
        if !alone.is_empty() {
            tokio::spawn(async move {
                for job in alone {
                    self.run_alone(job).await;
                }
            });
        }
    }

    async fn run_group(&self, jobs: Vec<Job>, alone: &mut Vec<Job>) {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(_) => {
                alone.extend(jobs);
                return;
            }
        };
        let (mut decided, one_by_one) = match self.write_batched(&mut tx, jobs).await {
            Ok(done) => done,
            Err(jobs) => {
                // A database error inside a multi-row statement: nothing of the group
                // is known to be written, so each job runs by itself.
                let _ = tx.rollback().await;
                alone.extend(jobs);
                return;
            }
        };
        for job in one_by_one {
            let mut savepoint = match (&mut tx).begin().await {
                Ok(sp) => sp,
                Err(_) => {
                    alone.push(job);
                    continue;
                }
            };
            match self.write_in(&mut savepoint, &job).await {
                Ok(w) if !w.keeps() => match savepoint.rollback().await {
                    Ok(()) => decided.push((job, Decided::Wrote(w))),
                    Err(_) => alone.push(job),
                },
                Ok(w) => match savepoint.commit().await {
                    Ok(()) => decided.push((job, Decided::Wrote(w))),
                    Err(_) => alone.push(job),
                },
                // A lost race or a database fault is for the job's own transaction to
                // meet; a refusal of the job itself is kept, its writes rolled back.
                Err(Error::Db(_)) => {
                    let _ = savepoint.rollback().await;
                    alone.push(job);
                }
                Err(refusal) => match savepoint.rollback().await {
                    Ok(()) => decided.push((job, Decided::Refused(refusal))),
                    Err(_) => alone.push(job),
                },
            }
        }
        let written = decided
            .iter()
            .filter(|(_, d)| matches!(d, Decided::Wrote(w) if w.keeps()))
            .count() as u64;
        let committed = if written == 0 {
            tx.rollback().await.is_ok()
        } else {
            tx.commit().await.is_ok()
        };
        if !committed {
            // Every answer may rest on what the group wrote: each job runs again alone.
            alone.extend(decided.into_iter().map(|(job, _)| job));
            return;
        }
        if written > 0 {
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
            self.stats.writes.fetch_add(written, Ordering::Relaxed);
        }
        let last_seq = decided
            .iter()
            .filter_map(|(_, d)| match d {
                Decided::Wrote(Written::AddFile { last_seq, .. }) => Some(*last_seq),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        crate::publish(&self.last_seq, last_seq);
        for (job, d) in decided {
            match d {
                Decided::Wrote(w) => job.answer(w),
                Decided::Refused(e) => job.refuse(e),
            }
        }
    }

    /// Writes what multi-row statements can (`batch`): every hold, and the file rows
    /// without a quota, version by version in the order of their names (so that two
    /// replicas' groups take version rows in one order). Returns what each job came to and
    /// the jobs left to run one by one; on a database error, every job, for none is known
    /// to be written.
    #[allow(clippy::type_complexity)]
    async fn write_batched(
        &self,
        tx: &mut Transaction<'_, Any>,
        jobs: Vec<Job>,
    ) -> std::result::Result<(Vec<(Job, Decided)>, Vec<Job>), Vec<Job>> {
        let now = self.clock.now();
        let max_files = self.max_files.load(Ordering::Relaxed);
        let (mut holds, mut files, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for job in jobs {
            match &job {
                Job::Hold { .. } => holds.push(job),
                Job::AddFile(spec, _) if spec.quota.is_none() => files.push(job),
                Job::AddFile(..) => rest.push(job),
            }
        }
        let asked: Vec<(String, String)> = holds
            .iter()
            .map(|job| match job {
                Job::Hold { digest, holder, .. } => (digest.to_string(), holder.clone()),
                Job::AddFile(..) => unreachable!("holds only"),
            })
            .collect();
        let held = match batch::holds(tx, now, &asked).await {
            Ok(held) => held,
            Err(_) => return Err(holds.into_iter().chain(files).chain(rest).collect()),
        };
        let mut decided: Vec<(Job, Decided)> = holds
            .into_iter()
            .zip(held)
            .map(|(job, hold)| (job, Decided::Wrote(Written::Hold(hold))))
            .collect();
        let mut by_version: std::collections::BTreeMap<String, (crate::VersionId, Vec<Job>)> =
            std::collections::BTreeMap::new();
        for job in files {
            let Job::AddFile(spec, _) = &job else {
                unreachable!("file rows only")
            };
            let key = format!("{}/{}/{}", spec.id.namespace, spec.id.name, spec.id.version);
            by_version
                .entry(key)
                .or_insert_with(|| (spec.id.clone(), Vec::new()))
                .1
                .push(job);
        }
        let mut versions = by_version.into_values();
        while let Some((id, jobs)) = versions.next() {
            let specs: Vec<&AddFile> = jobs
                .iter()
                .map(|job| match job {
                    Job::AddFile(spec, _) => spec,
                    Job::Hold { .. } => unreachable!("file rows only"),
                })
                .collect();
            let outcomes = match batch::files(tx, now, max_files, &id, &specs).await {
                Ok(outcomes) => outcomes,
                Err(_) => {
                    let mut all: Vec<Job> = decided.into_iter().map(|(job, _)| job).collect();
                    all.extend(jobs);
                    all.extend(versions.flat_map(|(_, jobs)| jobs));
                    all.extend(rest);
                    return Err(all);
                }
            };
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                match outcome {
                    batch::FileOutcome::Written { added, last_seq } => {
                        decided.push((job, Decided::Wrote(Written::AddFile { added, last_seq })))
                    }
                    batch::FileOutcome::Refused(e) => decided.push((job, Decided::Refused(e))),
                    batch::FileOutcome::Alone => rest.push(job),
                }
            }
        }
        Ok((decided, rest))
    }

    async fn write_in(&self, tx: &mut Transaction<'_, Any>, job: &Job) -> Result<Written> {
        let now = self.clock.now();
        match job {
            Job::AddFile(spec, _) => {
                let max = self.max_files.load(Ordering::Relaxed);
                let (added, last_seq) = add_file_in(tx, now, max, spec).await?;
                Ok(Written::AddFile { added, last_seq })
            }
            Job::Hold { digest, holder, .. } => {
                let asked = [(digest.to_string(), holder.clone())];
                let held = batch::holds(tx, now, &asked).await?;
                Ok(Written::Hold(
                    held.into_iter().next().expect("one answer per hold"),
                ))
            }
        }
    }

    /// Runs one job in a transaction of its own (again when it lost a race), as every
    /// write did before grouping.
    async fn run_alone(&self, job: Job) {
        let result = retry_conflicts(|| async {
            let _guard = self.write.lock().await;
            let mut tx = self.pool.begin().await?;
            let w = self.write_in(&mut tx, &job).await?;
            if w.keeps() {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            if let Written::AddFile { last_seq, .. } = &w {
                crate::publish(&self.last_seq, *last_seq);
            }
            Ok(w)
        })
        .await;
        match result {
            Ok(w) => job.answer(w),
            Err(e) => job.refuse(e),
        }
    }
}

mod batch;

#[cfg(test)]
mod tests;
