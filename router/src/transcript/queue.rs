//! The waiting line of a batcher ([`super::Opener`], [`super::Writer`]): jobs
//! wait here while the batches allowed at once run; each batch that ends takes
//! the next jobs that waited, together.

use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// Jobs in one batch at most. Each turn an [`super::Opener`] opens is a
/// subtransaction of its batch's transaction (so a refused one changes
/// nothing); Postgres keeps the ids of up to 64 of them in shared memory before
/// every other session's snapshots get slower, so a batch stays well under that.
pub const MAX_BATCH: usize = 32;

/// Batches of one batcher running at once at most; the jobs asked for while
/// they run wait for the next one.
pub const RUNNING_BATCHES: usize = 2;

/// A batcher's queue and its runners: [`Batches::submit`] queues a job and,
/// when fewer than [`RUNNING_BATCHES`] run, starts a runner that hands batches
/// of waiting jobs to `run` until none waits. Clones share the queue.
pub(super) struct Batches<J> {
    queue: Arc<Mutex<Queue<J>>>,
    /// A job's key: at most one job per key goes in a batch.
    key: fn(&J) -> Option<Uuid>,
}

impl<J> Clone for Batches<J> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            key: self.key,
        }
    }
}

impl<J: Send + 'static> Batches<J> {
    /// Batches whose jobs are told apart by `key` (see [`Queue::take`]).
    pub(super) fn new(key: fn(&J) -> Option<Uuid>) -> Self {
        Self {
            queue: Arc::default(),
            key,
        }
    }

    /// Queues `job`. A runner started here runs on the caller's runtime, in a
    /// task of its own: a caller that stops waiting does not cut a batch short.
    pub(super) fn submit<R, F>(&self, job: J, run: R)
    where
        R: Fn(Vec<J>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let start = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job, RUNNING_BATCHES);
        if !start {
            return;
        }
        let (queue, key) = (self.queue.clone(), self.key);
        tokio::spawn(async move {
            loop {
                let batch = queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(MAX_BATCH, key);
                let Some(batch) = batch else {
                    return;
                };
                run(batch).await;
            }
        });
    }
}

/// Checks that a batch function (`open_turns`, `lock_answers`) answered one
/// row per job, in the jobs' order: `indexes` are the rows' indexes (from 1).
/// Anything else answers no job: an error, the transaction not committed.
pub(super) fn rows_in_order(
    function: &str,
    indexes: impl ExactSizeIterator<Item = i32>,
    jobs: usize,
) -> Result<(), sqlx::Error> {
    let rows = indexes.len();
    if rows == jobs && indexes.zip(1..).all(|(index, i)| index == i) {
        return Ok(());
    }
    Err(sqlx::Error::Protocol(format!(
        "{function} answered {rows} rows for {jobs} jobs, or out of order"
    )))
}

/// Jobs waiting for a batch, and how many batches run.
struct Queue<J> {
    waiting: Vec<J>,
    running: usize,
}

impl<J> Default for Queue<J> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
            running: 0,
        }
    }
}

impl<J> Queue<J> {
    /// Adds `job`; `true` when fewer than `max_running` batches run, and the
    /// caller is to start one more runner (counted from now).
    fn push(&mut self, job: J, max_running: usize) -> bool {
        self.waiting.push(job);
        let start = self.running < max_running;
        if start {
            self.running += 1;
        }
        start
    }

    /// The next batch: up to `max` waiting jobs in the order they came, at most
    /// one per `key` (a job whose key is already in the batch stays for the
    /// next; `None` keys are never held back). `None` when nothing waits: the
    /// runner that asked stops (counted from now).
    fn take(&mut self, max: usize, key: impl Fn(&J) -> Option<Uuid>) -> Option<Vec<J>> {
        if self.waiting.is_empty() {
            self.running -= 1;
            return None;
        }
        let mut batch = Vec::new();
        let mut keys = std::collections::HashSet::new();
        let mut left = Vec::new();
        for job in self.waiting.drain(..) {
            let fits = batch.len() < max && key(&job).is_none_or(|k| keys.insert(k));
            if fits {
                batch.push(job);
            } else {
                left.push(job);
            }
        }
        self.waiting = left;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_takes_one_job_per_key_and_leaves_the_rest_in_order() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut queue = Queue::default();
        assert!(queue.push((a, 1), 1), "the first job starts a runner");
        assert!(!queue.push((a, 2), 1), "one runs already");
        assert!(!queue.push((b, 3), 1));
        assert!(!queue.push((a, 4), 1));
        let key = |job: &(Uuid, i32)| Some(job.0);
        assert_eq!(queue.take(10, key), Some(vec![(a, 1), (b, 3)]));
        assert_eq!(queue.take(10, key), Some(vec![(a, 2)]));
        assert_eq!(queue.take(1, |_| None), Some(vec![(a, 4)]));
        assert_eq!(queue.take(10, key), None, "the runner stops");
        assert!(queue.push((b, 5), 1), "and the next job starts one again");
    }

    #[test]
    fn rows_answer_their_jobs_only_all_and_in_order() {
        assert!(rows_in_order("f", [1, 2, 3].into_iter(), 3).is_ok());
        assert!(rows_in_order("f", [1, 3, 2].into_iter(), 3).is_err());
        assert!(rows_in_order("f", [1, 2].into_iter(), 3).is_err());
        assert!(rows_in_order("f", [1, 2, 3, 4].into_iter(), 3).is_err());
    }

    #[test]
    fn a_batch_takes_at_most_its_size() {
        let mut queue = Queue::default();
        for i in 0..5 {
            queue.push(i, 2);
        }
        assert_eq!(queue.take(3, |_| None), Some(vec![0, 1, 2]));
        assert_eq!(queue.take(3, |_| None), Some(vec![3, 4]));
    }
}
