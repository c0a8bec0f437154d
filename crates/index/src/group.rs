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
//! takes the queue, runs each job in a savepoint of one transaction and commits; the
//! others find their answer when it is sent. A job refused for a reason of its own
//! (a conflicting file, a complete version, a quota) is rolled back to its savepoint and
//! answered alone, leaving the rest of the group untouched. A job that meets a database
//! error, or whose group fails to commit, runs again by itself, exactly as it would have
//! without grouping — grouping never turns a write that would succeed into a failure.
//! The group runs in a task of its own, so a request that goes away mid-commit cannot
//! strand the others' answers.

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
    /// Commits made by groups, and the writes they carried (`/metrics`).
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

    /// The oldest queued jobs, at most [`MAX_GROUP`].
    fn take(&self) -> Vec<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
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
}

impl Index {
    fn writer(&self) -> Writer {
        Writer {
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            write: self.write.clone(),
            last_seq: self.last_seq.clone(),
            max_files: self.max_files_per_version.clone(),
        }
    }

    /// Group commits made so far, and the writes they carried.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            commits: self.queue.commits.load(Ordering::Relaxed),
            writes: self.queue.writes.load(Ordering::Relaxed),
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
            let (writer, queue) = (self.writer(), &self.queue);
            let count = jobs.len() as u64;
            // A task of its own: the group completes even if this request goes away.
            match tokio::spawn(writer.commit_group(jobs, guard)).await {
                Ok(true) => {
                    queue.commits.fetch_add(1, Ordering::Relaxed);
                    queue.writes.fetch_add(count, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(_) => return Err(lost()),
            }
        }
    }
}

/// A group's leader failed without answering (it panicked): nothing is known to be written.
fn lost() -> Error {
    Error::Db(sqlx::Error::WorkerCrashed)
}

impl Writer {
    /// Runs `jobs` in one transaction and answers each; returns whether a commit was made.
    async fn commit_group(self, jobs: Vec<Job>, guard: OwnedMutexGuard<()>) -> bool {
        let mut alone = Vec::new();
        let committed = self.run_group(jobs, &mut alone).await;
        drop(guard);
        for job in alone {
            self.run_alone(job).await;
        }
        committed
    }

    async fn run_group(&self, jobs: Vec<Job>, alone: &mut Vec<Job>) -> bool {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(_) => {
                alone.extend(jobs);
                return false;
            }
        };
        let mut written = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut savepoint = match (&mut tx).begin().await {
                Ok(sp) => sp,
                Err(_) => {
                    alone.push(job);
                    continue;
                }
            };
            match self.write_in(&mut savepoint, &job).await {
                Ok(w) if !w.keeps() => match savepoint.rollback().await {
                    Ok(()) => job.answer(w),
                    Err(_) => alone.push(job),
                },
                Ok(w) => match savepoint.commit().await {
                    Ok(()) => written.push((job, w)),
                    Err(_) => alone.push(job),
                },
                Err(e) => {
                    let _ = savepoint.rollback().await;
                    match e {
                        // Told apart from a refusal of the job itself: a lost race or
                        // a database fault is for the job's own transaction to meet.
                        Error::Db(_) => alone.push(job),
                        refusal => job.refuse(refusal),
                    }
                }
            }
        }
        if written.is_empty() {
            let _ = tx.rollback().await;
            return false;
        }
        if tx.commit().await.is_err() {
            alone.extend(written.into_iter().map(|(job, _)| job));
            return false;
        }
        let last_seq = written
            .iter()
            .filter_map(|(_, w)| match w {
                Written::AddFile { last_seq, .. } => Some(*last_seq),
                Written::Hold(_) => None,
            })
            .max()
            .unwrap_or(0);
        crate::publish(&self.last_seq, last_seq);
        for (job, w) in written {
            job.answer(w);
        }
        true
    }

    async fn write_in(&self, tx: &mut Transaction<'_, Any>, job: &Job) -> Result<Written> {
        let now = self.clock.now();
        match job {
            Job::AddFile(spec, _) => {
                let max = self.max_files.load(Ordering::Relaxed);
                let (added, last_seq) = add_file_in(tx, now, max, spec).await?;
                Ok(Written::AddFile { added, last_seq })
            }
            Job::Hold { digest, holder, .. } => Ok(Written::Hold(
                crate::gc::hold_in(tx, now, digest, holder).await?,
            )),
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

#[cfg(test)]
mod tests;
