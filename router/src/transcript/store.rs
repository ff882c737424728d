//! How a turn is stored: the router that takes a browser's message
//! opens the turn's rows ([`open_turn`]), takes them back when the sandbox refuses
//! the message ([`discard_turn`]), and the sandbox pushes the turn's numbered
//! events over HTTP, stored batch by batch ([`store_events`]).
//!
//! Storing is idempotent by (conversation, `seq`): each batch runs in one short
//! transaction that locks the conversation row first, so a retried batch, or the
//! same batch stored by two routers at once, is written exactly once.

use sandbox::protocol::SandboxFrame;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction, types::Json};
use uuid::Uuid;

use super::{Outcome, TranscriptError, browser_event, conversation_and_seq, title};
use crate::db;

/// The rows [`open_turn`] made for one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTurn {
    /// The conversation (made by this turn when `created_conversation`).
    pub conversation_id: Uuid,
    /// The user's message.
    pub user_message_id: Uuid,
    /// The empty, incomplete assistant message the turn's events are stored in:
    /// the `message_id` of the `message` frame sent to the sandbox.
    pub message_id: Uuid,
    /// This turn made the conversation (it was new).
    pub created_conversation: bool,
    /// The conversation's highest stored `seq` when the turn opened.
    pub last_seq: u64,
}

/// The user's message a turn opens with.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// What the user wrote.
    pub content: &'a str,
    /// Its events (the uploads it names).
    pub events: Value,
    /// A user message of the conversation this one takes the place of, with every
    /// message after it (regenerate, edit and resend).
    pub replaces: Option<Uuid>,
}

impl<'a> NewMessage<'a> {
    /// A message of text alone, replacing nothing.
    pub fn text(content: &'a str) -> Self {
        Self {
            content,
            events: Value::Array(Vec::new()),
            replaces: None,
        }
    }
}

/// What [`store_events`] did with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreOutcome {
    /// The conversation's highest stored `seq` after the batch.
    pub last_seq: u64,
    /// The batch ended the turn: `done` (complete) or a numbered `error` (incomplete).
    pub ended: Option<Outcome>,
    /// Events stored by this call.
    pub stored: usize,
    /// Events already stored (`seq` at or below the stored `last_seq`), skipped.
    pub duplicates: usize,
    /// Events not stored for another reason: unnumbered, of another conversation,
    /// with no assistant message in the conversation to hold them, or after the
    /// end of their answer's turn.
    pub ignored: usize,
}

/// Stores the user's message (`events` on it: the uploads it names) and an empty,
/// incomplete assistant message in one transaction, creating the conversation
/// (titled from `content`) when `conversation_id` is new. With `replaces`, that
/// user message and every message after it are hidden (`superseded_by` the new
/// one). Fails with [`TranscriptError::NotYours`] when the id is another user's
/// conversation, with [`TranscriptError::CannotReplace`] when `replaces` is not a
/// current user message of it; either changes nothing.
pub async fn open_turn(
    db: &PgPool,
    user_id: Uuid,
    conversation_id: Uuid,
    message: NewMessage<'_>,
) -> Result<OpenTurn, TranscriptError> {
    let NewMessage {
        content,
        events,
        replaces,
    } = message;
    let mut tx = db::user_tx(db, user_id).await?;
    // Under RLS another user's row is invisible, but the primary key still
    // conflicts: the insert does nothing and the select below finds nothing.
    // language=PostgreSQL
    let created: Option<Uuid> = crate::db::query_scalar(
        "insert into conversations (id, owner_id, title) values ($1, $2, $3)
         on conflict (id) do nothing returning id",
    )
    .bind(conversation_id)
    .bind(user_id)
    .bind(title(content))
    .fetch_optional(&mut *tx)
    .await?;
    let last_seq = lock_conversation(&mut tx, user_id, conversation_id)
        .await?
        .ok_or(TranscriptError::NotYours(conversation_id))?;
    let replaced_from = match replaces {
        None => None,
        Some(replaced) => Some(
            // language=PostgreSQL
            crate::db::query_scalar::<i64>(
                "select position from messages where id = $1 and conversation_id = $2
                 and owner_id = $3 and role = 'user' and superseded_by is null",
            )
            .bind(replaced)
            .bind(conversation_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(TranscriptError::CannotReplace(replaced))?,
        ),
    };
    // language=PostgreSQL
    let user_message_id: Uuid = crate::db::query_scalar(
        "insert into messages (owner_id, conversation_id, role, content, events)
         values ($1, $2, 'user', $3, $4) returning id",
    )
    .bind(user_id)
    .bind(conversation_id)
    .bind(content)
    .bind(&events)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(position) = replaced_from {
        // language=PostgreSQL
        crate::db::query(
            "update messages set superseded_by = $3
             where conversation_id = $1 and owner_id = $2 and position >= $4
               and id <> $3 and superseded_by is null",
        )
        .bind(conversation_id)
        .bind(user_id)
        .bind(user_message_id)
        .bind(position)
        .execute(&mut *tx)
        .await?;
    }
    // language=PostgreSQL
    let message_id: Uuid = crate::db::query_scalar(
        "insert into messages (owner_id, conversation_id, role, complete)
         values ($1, $2, 'assistant', false) returning id",
    )
    .bind(user_id)
    .bind(conversation_id)
    .fetch_one(&mut *tx)
    .await?;
    // language=PostgreSQL
    crate::db::query("update conversations set updated_at = now() where id = $1")
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::debug!(user.id = %user_id, conversation.id = %conversation_id, message.id = %message_id, "turn opened");
    Ok(OpenTurn {
        conversation_id,
        user_message_id,
        message_id,
        created_conversation: created.is_some(),
        last_seq,
    })
}

/// Takes back a turn the sandbox refused: deletes its two messages, and the
/// conversation too when this turn made it and nothing else was stored in it
/// since. Rows that are not `user_id`'s are never touched.
pub async fn discard_turn(
    db: &PgPool,
    user_id: Uuid,
    turn: &OpenTurn,
) -> Result<(), TranscriptError> {
    let mut tx = db::user_tx(db, user_id).await?;
    // The lock orders this after (or before) any other turn opening in the
    // same conversation, so a message of theirs is never deleted with it.
    if lock_conversation(&mut tx, user_id, turn.conversation_id)
        .await?
        .is_none()
    {
        return Ok(());
    }
    // language=PostgreSQL
    crate::db::query(
        "delete from messages where id in ($1, $2) and conversation_id = $3 and owner_id = $4",
    )
    .bind(turn.user_message_id)
    .bind(turn.message_id)
    .bind(turn.conversation_id)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    if turn.created_conversation {
        // language=PostgreSQL
        crate::db::query(
            "delete from conversations c where c.id = $1 and c.owner_id = $2
             and not exists (select 1 from messages m where m.conversation_id = c.id)",
        )
        .bind(turn.conversation_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    tracing::debug!(user.id = %user_id, conversation.id = %turn.conversation_id, "refused turn discarded");
    Ok(())
}

/// Stores one batch of the sandbox's numbered events of `conversation_id`, in one
/// transaction that holds the conversation's row lock: events at or below the
/// stored `last_seq` are skipped (so a retried batch changes nothing), text deltas
/// are appended to the assistant message's `content`, other events (as the
/// browser saw them) to its `events`; `done` marks it complete with its token
/// counts, a numbered `error` leaves it incomplete; `last_seq` is raised.
///
/// The events go to `message_id` when it is an assistant message of this
/// conversation (a `turn` event naming one switches to it), else to the
/// conversation's newest assistant message. Once an answer's turn ended (`done`
/// or a numbered `error` stored, in this batch or before) nothing more is added
/// to it: later events are ignored until a `turn` event opens the next answer
/// (the one it names, else the conversation's newest). Fails with
/// [`TranscriptError::NotYours`] when the conversation is not `user_id`'s (or
/// does not exist), changing nothing.
pub async fn store_events(
    db: &PgPool,
    user_id: Uuid,
    conversation_id: Uuid,
    message_id: Option<Uuid>,
    events: &[SandboxFrame],
) -> Result<StoreOutcome, TranscriptError> {
    let mut tx = db::user_tx(db, user_id).await?;
    let stored_seq = lock_conversation(&mut tx, user_id, conversation_id)
        .await?
        .ok_or(TranscriptError::NotYours(conversation_id))?;
    let mut outcome = StoreOutcome {
        last_seq: stored_seq,
        ..StoreOutcome::default()
    };
    let mut numbered: Vec<(u64, &SandboxFrame)> = Vec::with_capacity(events.len());
    for frame in events {
        match conversation_and_seq(frame) {
            Some((c, seq)) if c.parse::<Uuid>().ok() == Some(conversation_id) => {
                numbered.push((seq, frame));
            }
            _ => outcome.ignored += 1,
        }
    }
    numbered.sort_by_key(|(seq, _)| *seq);

    let mut target = assistant_message(&mut tx, user_id, conversation_id, message_id).await?;
    let mut write = Write::default();
    for (seq, frame) in numbered {
        if seq <= outcome.last_seq {
            outcome.duplicates += 1;
            continue;
        }
        if let SandboxFrame::Turn {
            message_id: named, ..
        } = frame
        {
            // A new turn: its answer is the message it names, else (when the
            // current one has ended) the conversation's newest answer.
            let named = named.as_deref().and_then(|n| n.parse::<Uuid>().ok());
            let switch = match named {
                Some(named) => target.is_none_or(|t| t.id != named),
                None => target.is_none_or(|t| t.ended),
            };
            if switch {
                write.flush(&mut tx, user_id, target.map(|t| t.id)).await?;
                target = assistant_message(&mut tx, user_id, conversation_id, named).await?;
            }
        }
        let Some(answer) = target.as_mut().filter(|t| !t.ended) else {
            // No answer to hold it, or one whose turn already ended.
            outcome.ignored += 1;
            continue;
        };
        outcome.last_seq = seq;
        outcome.stored += 1;
        // Where in the answer's text the event came: the history shows text and
        // tool activity interleaved as they streamed.
        let at = answer.chars + write.text_chars;
        match frame {
            SandboxFrame::Turn { .. } => {}
            SandboxFrame::Text { delta, .. } => {
                write.text.push_str(delta);
                write.text_chars += delta.chars().count() as u64;
            }
            SandboxFrame::Done { usage, stopped, .. } => {
                // A stopped answer says so where it stopped.
                if *stopped {
                    write
                        .events
                        .push(placed(serde_json::json!({"type": "stopped"}), at));
                }
                write.done = Some((usage.input_tokens, usage.output_tokens));
                outcome.ended = Some(Outcome::Complete);
                answer.ended = true;
            }
            SandboxFrame::Error { .. } => {
                write.events.push(placed(browser_event(frame), at));
                outcome.ended = Some(Outcome::Incomplete);
                answer.ended = true;
            }
            _ => write.events.push(placed(browser_event(frame), at)),
        }
    }
    write.flush(&mut tx, user_id, target.map(|t| t.id)).await?;
    if outcome.last_seq > stored_seq {
        // language=PostgreSQL
        crate::db::query("update conversations set last_seq = $3 where id = $1 and owner_id = $2")
            .bind(conversation_id)
            .bind(user_id)
            .bind(clamp(outcome.last_seq))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if outcome.ignored > 0 {
        tracing::warn!(user.id = %user_id, conversation.id = %conversation_id, ignored = outcome.ignored, "events not stored: unnumbered, of another conversation, with no assistant message, or after their turn ended");
    }
    tracing::debug!(user.id = %user_id, conversation.id = %conversation_id, ?outcome, "events stored");
    Ok(outcome)
}

/// Locks `conversation_id`'s row if it is `user_id`'s and answers its `last_seq`.
async fn lock_conversation(
    tx: &mut Transaction<'static, Postgres>,
    user_id: Uuid,
    conversation_id: Uuid,
) -> sqlx::Result<Option<u64>> {
    // language=PostgreSQL
    let last_seq: Option<i64> = crate::db::query_scalar(
        "select last_seq from conversations where id = $1 and owner_id = $2 for update",
    )
    .bind(conversation_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(last_seq.map(|s| u64::try_from(s).unwrap_or(0)))
}

/// An assistant message events are stored in.
#[derive(Debug, Clone, Copy)]
struct Answer {
    id: Uuid,
    /// Its turn ended (`done` or a numbered `error` stored): nothing more is added.
    ended: bool,
    /// Characters of its stored `content`.
    chars: u64,
}

/// `event` with `at`: the number of characters of the answer's text before it.
fn placed(mut event: Value, at: u64) -> Value {
    if let Some(object) = event.as_object_mut() {
        object.insert("at".into(), Value::from(at));
    }
    event
}

/// `wanted` when it is an assistant message of the conversation, else the
/// conversation's newest assistant message; `None` when it has none.
async fn assistant_message(
    tx: &mut Transaction<'static, Postgres>,
    user_id: Uuid,
    conversation_id: Uuid,
    wanted: Option<Uuid>,
) -> sqlx::Result<Option<Answer>> {
    // Only numbered errors are stored in `events`, and each ends its turn.
    // language=PostgreSQL
    let found: Option<(Uuid, bool, i64)> = crate::db::query_as(
        "select id, complete or events @> '[{\"type\":\"error\"}]', char_length(content)::bigint from messages
         where conversation_id = $1 and owner_id = $2 and role = 'assistant'
         order by (id is not distinct from $3) desc, position desc limit 1",
    )
    .bind(conversation_id)
    .bind(user_id)
    .bind(wanted)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(wanted) = wanted
        && found.is_none_or(|(id, _, _)| id != wanted)
    {
        tracing::warn!(user.id = %user_id, conversation.id = %conversation_id, message.id = %wanted, "events name a message that is not this conversation's answer; storing them in its newest answer");
    }
    Ok(found.map(|(id, ended, chars)| Answer {
        id,
        ended,
        chars: u64::try_from(chars).unwrap_or(0),
    }))
}

/// What one batch appends to one message.
#[derive(Default)]
struct Write {
    text: String,
    /// Characters of `text`.
    text_chars: u64,
    events: Vec<Value>,
    done: Option<(u64, u64)>,
}

impl Write {
    /// Appends what gathered to `message` (if any) and starts over.
    async fn flush(
        &mut self,
        tx: &mut Transaction<'static, Postgres>,
        user_id: Uuid,
        message: Option<Uuid>,
    ) -> sqlx::Result<()> {
        let write = std::mem::take(self);
        let Some(message) = message else {
            return Ok(());
        };
        if write.text.is_empty() && write.events.is_empty() && write.done.is_none() {
            return Ok(());
        }
        let (input, output) = match write.done {
            Some((i, o)) => (Some(clamp(i)), Some(clamp(o))),
            None => (None, None),
        };
        // An answer that ends with nothing in it was stopped before its first
        // word: it is marked so (`{"type":"stopped"}`), not kept as an empty answer.
        // language=PostgreSQL
        crate::db::query(
            "update messages set content = content || $3,
                 events = case when $5 and content || $3 = '' and events || $4 = '[]'::jsonb
                     then '[{\"type\":\"stopped\"}]'::jsonb else events || $4 end,
                 complete = complete or $5,
                 input_tokens = coalesce($6, input_tokens), output_tokens = coalesce($7, output_tokens)
             where id = $1 and owner_id = $2",
        )
        .bind(message)
        .bind(user_id)
        .bind(&write.text)
        .bind(Json(&write.events))
        .bind(write.done.is_some())
        .bind(input)
        .bind(output)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
