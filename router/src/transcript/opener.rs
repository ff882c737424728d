//! Turns that arrive together are opened together: an [`Opener`] gathers the
//! turns asked for while earlier ones are being opened and opens each gathering
//! in one transaction, one statement (`open_turns`, migration 0016) and one
//! commit, whatever users they are of.
//!
//! Nothing waits for company: a turn asked for while fewer than
//! [`RUNNING_BATCHES`] batches run starts a batch at once (alone if it is
//! alone); the turns asked for meanwhile wait for the next free batch and go in
//! it together, up to [`MAX_BATCH`]. So a quiet router opens a turn as before,
//! and a busy one pays a round trip and a commit per batch instead of per turn.
//!
//! Each turn in a batch is opened as [`open_turn`] opens one, under row-level
//! security as its own user, and its answer is the same: another user's
//! conversation is refused for that turn alone. When the batch fails as a
//! whole (the database answered an error, the connection broke), every turn of
//! it is opened again on its own with [`open_turn`], which then gives each its
//! own answer; a turn replacing messages is always opened on its own. A batch
//! runs in a task of its own, so a caller that stops waiting does not cut it
//! short; a turn whose caller is gone by the time it opened is taken back
//! ([`discard_turn`]): nobody will send it to a sandbox.

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    NewMessage, OpenTurn, TranscriptError, discard_turn, open_turn,
    queue::{Batches, rows_in_order},
    title,
};

/// Opens turns, batching those asked for at once (see the module
/// documentation). Cheap to share: clones share the queue.
#[derive(Clone)]
pub struct Opener {
    db: PgPool,
    batches: Batches<Job>,
}

/// One turn asked for: what to open, and where its answer goes.
struct Job {
    user_id: Uuid,
    conversation_id: Uuid,
    content: String,
    events: Value,
    reply: oneshot::Sender<Answer>,
}

/// What a batch answers one turn.
enum Answer {
    Opened(OpenTurn),
    NotYours,
    /// The batch failed as a whole: the turn is to be opened on its own.
    Alone,
}

impl Opener {
    /// An opener over `db`; its batches run on the runtime of the first turn.
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            batches: Batches::new(|_| None),
        }
    }

    /// Opens a turn as [`open_turn`] does, in a batch with the turns asked for
    /// at the same time (one replacing messages on its own).
    pub async fn open(
        &self,
        user_id: Uuid,
        conversation_id: Uuid,
        message: NewMessage<'_>,
    ) -> Result<OpenTurn, TranscriptError> {
        if message.replaces.is_some() {
            return open_turn(&self.db, user_id, conversation_id, message).await;
        }
        let (reply, answered) = oneshot::channel();
        let job = Job {
            user_id,
            conversation_id,
            content: message.content.to_string(),
            events: message.events.clone(),
            reply,
        };
        let db = self.db.clone();
        self.batches
            .submit(job, move |batch| run(db.clone(), batch));
        match answered.await {
            Ok(Answer::Opened(turn)) => Ok(turn),
            Ok(Answer::NotYours) => Err(TranscriptError::NotYours(conversation_id)),
            // The batch failed, or its task ended without answering.
            Ok(Answer::Alone) | Err(_) => {
                open_turn(&self.db, user_id, conversation_id, message).await
            }
        }
    }
}

/// Opens one batch and answers each of its turns.
async fn run(db: PgPool, mut batch: Vec<Job>) {
    // Conversations' rows are locked in one order by every batch, so two
    // batches never wait for each other in a cycle; turns of one
    // conversation keep the order they came in (a stable sort).
    batch.sort_by_key(|job| job.conversation_id);
    let started = std::time::Instant::now();
    let opened = open_batch(&db, &batch).await;
    crate::metrics::turn_db("open_batch", started.elapsed());
    crate::metrics::turns_batched(batch.len());
    let answers = match opened {
        Ok(answers) => answers,
        Err(error) => {
            tracing::warn!(turns = batch.len(), %error, "opening a batch of turns failed; opening each on its own");
            batch.iter().map(|_| Answer::Alone).collect()
        }
    };
    for (job, answer) in batch.into_iter().zip(answers) {
        if let Err(Answer::Opened(turn)) = job.reply.send(answer) {
            // Its caller is gone: nobody sends this turn to a sandbox.
            if let Err(error) = discard_turn(&db, job.user_id, &turn).await {
                tracing::warn!(user.id = %job.user_id, %error, "taking back a turn nobody waited for");
            }
        }
    }
}

/// A row of `open_turns`: the turn's index (from 1), `opened` or `not_yours`,
/// then as [`open_turn`]'s statement answers (nulls when not opened).
type BatchRow = (
    i32,
    String,
    Option<i64>,
    Option<bool>,
    Option<String>,
    Option<bool>,
    Option<Uuid>,
    Option<Uuid>,
);

/// Opens `batch` in one transaction as the unprivileged role (each turn's user
/// set by `open_turns` before its statement) and reads each turn's answer, in
/// the batch's order.
async fn open_batch(db: &PgPool, batch: &[Job]) -> Result<Vec<Answer>, sqlx::Error> {
    let turns: Vec<Value> = batch
        .iter()
        .map(|job| {
            json!({
                "user_id": job.user_id,
                "conversation_id": job.conversation_id,
                "title": title(&job.content),
                "content": job.content,
                "events": job.events,
            })
        })
        .collect();
    let mut tx = crate::db::unprivileged_tx(db).await?;
    // language=PostgreSQL
    let rows: Vec<BatchRow> =
        crate::db::query_as("select * from open_turns($1) order by turn_index")
            .bind(sqlx::types::Json(&turns))
            .fetch_all(&mut *tx)
            .await?;
    // Checked before the commit: rows that answer no turn open none.
    rows_in_order("open_turns", rows.iter().map(|row| row.0), batch.len())?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .zip(batch)
        .map(|(row, job)| answer(job, row))
        .collect())
}

/// One turn's answer from its row.
fn answer(job: &Job, row: BatchRow) -> Answer {
    match row {
        (
            _,
            outcome,
            Some(last_seq),
            Some(created),
            Some(tier),
            Some(voice),
            Some(asked),
            Some(answer),
        ) if outcome == "opened" => {
            tracing::debug!(user.id = %job.user_id, conversation.id = %job.conversation_id, message.id = %answer, "turn opened");
            Answer::Opened(OpenTurn {
                conversation_id: job.conversation_id,
                user_message_id: asked,
                message_id: answer,
                created_conversation: created,
                last_seq: u64::try_from(last_seq).unwrap_or(0),
                tier: crate::plans::Tier::parse(&tier),
                voice_answers: voice,
            })
        }
        (_, outcome, ..) if outcome == "not_yours" => Answer::NotYours,
        (_, outcome, ..) => {
            tracing::error!(user.id = %job.user_id, %outcome, "a turn of a batch came back neither opened nor refused; opening it on its own");
            Answer::Alone
        }
    }
}
