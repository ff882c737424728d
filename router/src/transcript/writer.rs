//! The writer task of a [`super::Turn`]: takes what the relay buffered and writes
//! it in one transaction per flush, retrying while the database is down.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use super::{FLUSH_INTERVAL, Outcome, Shared};
use crate::db;

/// Attempts at the last flush of a closed turn before what it holds is given up.
const FINAL_ATTEMPTS: u32 = 20;

/// Longest pause between two attempts of a failing write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where a turn is written.
pub(super) struct Target {
    pub db: PgPool,
    pub user_id: Uuid,
    pub conversation_id: Uuid,
    pub message_id: Uuid,
}

/// What one flush writes.
#[derive(Default)]
struct Batch {
    text: String,
    events: Vec<Value>,
    max_seq: u64,
    done: Option<(u64, u64)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.text.is_empty() && self.events.is_empty() && self.done.is_none()
    }
}

pub(super) async fn run(target: Target, shared: Arc<Shared>) -> Outcome {
    let mut batch = Batch::default();
    let mut failures = 0u32;
    loop {
        shared.wake.notified().await;
        let closing = shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed;
        if !closing {
            // Let deltas gather so a long answer is a write per interval, not per
            // token; the end of the turn is written at once.
            let gather = tokio::time::sleep(FLUSH_INTERVAL);
            tokio::pin!(gather);
            loop {
                tokio::select! {
                    () = &mut gather => break,
                    () = shared.wake.notified() => {
                        if shared.pending.lock().unwrap_or_else(|e| e.into_inner()).closed {
                            break;
                        }
                    }
                }
            }
        }
        let closed = {
            let mut p = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            batch.text.push_str(&std::mem::take(&mut p.text));
            batch.events.append(&mut p.events);
            batch.max_seq = batch.max_seq.max(p.max_seq);
            if batch.done.is_none() {
                batch.done = p.done;
            }
            p.closed
        };
        loop {
            if batch.is_empty() {
                break;
            }
            match write(&target, &batch).await {
                Ok(()) => {
                    failures = 0;
                    batch = Batch::default();
                    break;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, conversation.id = %target.conversation_id, failures, "storing a turn failed; retrying");
                    if closed && failures >= FINAL_ATTEMPTS {
                        tracing::error!(conversation.id = %target.conversation_id, "giving up storing the end of a turn");
                        return Outcome::Incomplete;
                    }
                    tokio::time::sleep((FLUSH_INTERVAL * failures).min(MAX_BACKOFF)).await;
                    if !closed {
                        // Pick up what arrived meanwhile with the next flush.
                        shared.wake.notify_one();
                        break;
                    }
                }
            }
        }
        if closed && batch.is_empty() {
            let done = shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .done
                .is_some();
            tracing::debug!(conversation.id = %target.conversation_id, complete = done, "turn stored");
            return if done {
                Outcome::Complete
            } else {
                Outcome::Incomplete
            };
        }
    }
}

async fn write(t: &Target, b: &Batch) -> sqlx::Result<()> {
    let mut tx = db::user_tx(&t.db, t.user_id).await?;
    let (input, output) = match b.done {
        Some((i, o)) => (Some(clamp(i)), Some(clamp(o))),
        None => (None, None),
    };
    // language=PostgreSQL
    sqlx::query(
        "update messages set content = content || $3, events = events || $4,
             complete = complete or $5,
             input_tokens = coalesce($6, input_tokens), output_tokens = coalesce($7, output_tokens)
         where id = $1 and owner_id = $2",
    )
    .bind(t.message_id)
    .bind(t.user_id)
    .bind(&b.text)
    .bind(Json(&b.events))
    .bind(b.done.is_some())
    .bind(input)
    .bind(output)
    .execute(&mut *tx)
    .await?;
    // language=PostgreSQL
    sqlx::query(
        "update conversations set last_seq = greatest(last_seq, $3) where id = $1 and owner_id = $2",
    )
    .bind(t.conversation_id)
    .bind(t.user_id)
    .bind(clamp(b.max_seq))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
