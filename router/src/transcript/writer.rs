//! Batches of events that sandboxes push at the same time are stored together:
//! a [`Writer`] gathers the batches asked for while earlier ones are being
//! stored and stores each gathering in one transaction: one statement locks
//! every batch's conversation and reads where its events go (`lock_answers`,
//! migration 0017), one writes them all (`write_answers`), one commit, whatever
//! users they are of.
//!
//! As with [`super::Opener`], nothing waits for company: a batch asked for while
//! fewer than [`RUNNING_BATCHES`] gatherings run is stored at once; those asked
//! for meanwhile go together in the next, up to [`MAX_BATCH`] and one per
//! conversation (a second batch of a conversation waits for the next gathering,
//! so each is decided on what the one before it stored). Every batch is stored
//! exactly as [`store_events`] stores one, as its own user under row-level
//! security, and answers the same [`StoreOutcome`]. A batch whose events start a
//! turn in another answer than the one they began in (it needs a look-up in the
//! middle), every batch of a gathering that failed as a whole, and one whose
//! task ended without answering are stored on their own with [`store_events`]
//! (storing is idempotent by `seq`: nothing is stored twice).

use std::sync::Arc;

use sandbox::protocol::SandboxFrame;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    StoreOutcome, TranscriptError,
    queue::{Batches, rows_in_order},
    store::{Plan, answer, logged},
    store_events,
};

/// Stores sandboxes' batches of events, gathering those asked for at once (see
/// the module documentation). Cheap to share: clones share the queue.
#[derive(Clone)]
pub struct Writer {
    db: PgPool,
    batches: Batches<Job>,
}

/// One batch to store, and where its answer goes.
struct Job {
    user_id: Uuid,
    conversation_id: Uuid,
    message_id: Option<Uuid>,
    events: Arc<[SandboxFrame]>,
    reply: oneshot::Sender<Reply>,
}

/// What a gathering answers one batch.
enum Reply {
    Stored(StoreOutcome),
    NotYours,
    /// To be stored on its own.
    Alone,
}

impl Writer {
    /// A writer over `db`; its gatherings run on the runtime of the first batch.
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            batches: Batches::new(|job| Some(job.conversation_id)),
        }
    }

    /// Stores one batch as [`store_events`] does, together with the batches
    /// asked for at the same time.
    pub async fn store(
        &self,
        user_id: Uuid,
        conversation_id: Uuid,
        message_id: Option<Uuid>,
        events: Arc<[SandboxFrame]>,
    ) -> Result<StoreOutcome, TranscriptError> {
        let (reply, replied) = oneshot::channel();
        let job = Job {
            user_id,
            conversation_id,
            message_id,
            events: events.clone(),
            reply,
        };
        let db = self.db.clone();
        self.batches
            .submit(job, move |batch| run(db.clone(), batch));
        match replied.await {
            Ok(Reply::Stored(outcome)) => Ok(outcome),
            Ok(Reply::NotYours) => Err(TranscriptError::NotYours(conversation_id)),
            Ok(Reply::Alone) | Err(_) => {
                store_events(&self.db, user_id, conversation_id, message_id, &events).await
            }
        }
    }
}

/// Stores one gathering and answers each of its batches.
async fn run(db: PgPool, mut batch: Vec<Job>) {
    // Conversations' rows are locked in one order by every gathering.
    batch.sort_by_key(|job| job.conversation_id);
    let started = std::time::Instant::now();
    let replies = match store_batch(&db, &batch).await {
        Ok(replies) => replies,
        Err(error) => {
            tracing::warn!(batches = batch.len(), %error, "storing a gathering of event batches failed; storing each on its own");
            batch.iter().map(|_| Reply::Alone).collect()
        }
    };
    crate::metrics::turn_db("store_batch", started.elapsed());
    crate::metrics::events_batched(batch.len());
    for (job, reply) in batch.into_iter().zip(replies) {
        // A caller that is gone needs no answer: its batch is stored, or
        // (left to be stored alone) stored when the sandbox, which got no
        // answer either, sends it again.
        let _ = job.reply.send(reply);
    }
}

/// A row of `lock_answers`: the batch's index (from 1), the conversation's
/// `last_seq` (none when it is not the user's), the answer read.
type LockRow = (i32, Option<i64>, Option<Uuid>, Option<bool>, Option<i64>);

/// Stores `batch` in one transaction and answers each of its batches, in order.
async fn store_batch(db: &PgPool, batch: &[Job]) -> Result<Vec<Reply>, sqlx::Error> {
    let locks: Vec<Value> = batch
        .iter()
        .map(|job| {
            json!({
                "user_id": job.user_id,
                "conversation_id": job.conversation_id,
                "message_id": job.message_id,
            })
        })
        .collect();
    let mut tx = crate::db::unprivileged_tx(db).await?;
    // language=PostgreSQL
    let rows: Vec<LockRow> =
        crate::db::query_as("select * from lock_answers($1) order by job_index")
            .bind(sqlx::types::Json(&locks))
            .fetch_all(&mut *tx)
            .await?;
    rows_in_order("lock_answers", rows.iter().map(|row| row.0), batch.len())?;
    let mut replies = Vec::with_capacity(batch.len());
    let mut writes = Vec::new();
    for (job, (_, last_seq, id, ended, chars)) in batch.iter().zip(rows) {
        let Some(last_seq) = last_seq else {
            replies.push(Reply::NotYours);
            continue;
        };
        let found = id.map(|id| (id, ended.unwrap_or(false), chars.unwrap_or(0)));
        let first = answer(job.user_id, job.conversation_id, job.message_id, found);
        let stored_seq = u64::try_from(last_seq).unwrap_or(0);
        let mut plan = Plan::new(job.conversation_id, stored_seq, first, &job.events);
        if plan.apply().is_some() {
            // A turn in another answer: that look-up is the single path's.
            replies.push(Reply::Alone);
            continue;
        }
        let (outcome, target, write, raised) = plan.finish();
        writes.extend(write.as_element(job.user_id, target, raised));
        replies.push(Reply::Stored(outcome));
    }
    if !writes.is_empty() {
        // language=PostgreSQL
        crate::db::query("select write_answers($1)")
            .bind(sqlx::types::Json(&writes))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    for (job, reply) in batch.iter().zip(&replies) {
        if let Reply::Stored(outcome) = reply {
            logged(job.user_id, job.conversation_id, outcome);
        }
    }
    Ok(replies)
}
