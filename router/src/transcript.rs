//! Conversations stored as they stream: one [`Turn`] per user message.
//!
//! The proxy calls [`Turn::start`] when the browser sends a message (it creates the
//! conversation if new, the user message and an incomplete assistant message), then
//! [`Turn::record`] for every event the sandbox sends for that conversation, and
//! may await [`Turn::finish`]. `record` never waits on the database: it appends to an
//! in-memory buffer that a writer task flushes every [`FLUSH_INTERVAL`] in one
//! transaction (text appended to `content`, tool/document/voice/error events to
//! `events`, `conversations.last_seq` raised to the highest `seq` stored). A `done`
//! marks the message complete with its token counts; an `error`, or a `Turn` dropped
//! midway, leaves what arrived marked incomplete.
//!
//! This module does not relay frames or talk to sandboxes.

mod writer;

use std::sync::{Arc, Mutex};

use sandbox::protocol::SandboxFrame;
use serde_json::Value;
use sqlx::PgPool;
use tokio::{sync::Notify, task::JoinHandle};
use uuid::Uuid;

use crate::db;

/// How long events wait in memory before they are written (at most; a write that
/// fails is retried, so a database outage can stretch it).
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Longest conversation title taken from the first message, in characters.
pub const TITLE_CHARS: usize = 80;

/// Transcript failures.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// The conversation id belongs to another user.
    #[error("conversation {0} is not this user's")]
    NotYours(Uuid),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// How a turn ended, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `done` arrived: the answer is complete.
    Complete,
    /// An `error` arrived, or the turn was dropped before `done`: kept incomplete.
    Incomplete,
}

/// What the relay hands to the writer; shared behind a mutex held only to append.
#[derive(Default)]
struct Pending {
    /// Text deltas not yet written.
    text: String,
    /// Events (as the browser saw them, without `conversation_id`) not yet written.
    events: Vec<Value>,
    /// Highest `seq` recorded so far (written or not).
    max_seq: u64,
    /// `done`'s usage, once it arrived.
    done: Option<(u64, u64)>,
    /// `done` or `error` arrived, or the recorder was dropped: flush and stop.
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Notify,
}

/// The recorder of one turn: feed it the sandbox's events for its conversation.
pub struct Turn {
    conversation_id: Uuid,
    message_id: Uuid,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<Outcome>>,
}

impl Turn {
    /// Stores the user's message and an empty, incomplete assistant message, creating
    /// the conversation (titled from `content`) when `conversation_id` is new; then
    /// starts the writer task. Fails with [`TranscriptError::NotYours`] when the id is
    /// another user's conversation. Call it before sending the message to the sandbox.
    pub async fn start(
        db: &PgPool,
        user_id: Uuid,
        conversation_id: Uuid,
        content: &str,
    ) -> Result<Self, TranscriptError> {
        Self::start_with(
            db,
            user_id,
            conversation_id,
            content,
            Value::Array(Vec::new()),
        )
        .await
    }

    /// [`Turn::start`], with `events` stored on the user's message (the uploads
    /// it names: `{"type":"attachment","id","filename","path"}`).
    pub async fn start_with(
        db: &PgPool,
        user_id: Uuid,
        conversation_id: Uuid,
        content: &str,
        events: Value,
    ) -> Result<Self, TranscriptError> {
        let mut tx = db::user_tx(db, user_id).await?;
        // Under RLS another user's row is invisible, but the primary key still
        // conflicts: the insert does nothing and the select below finds nothing.
        // language=PostgreSQL
        sqlx::query(
            "insert into conversations (id, owner_id, title) values ($1, $2, $3)
             on conflict (id) do nothing",
        )
        .bind(conversation_id)
        .bind(user_id)
        .bind(title(content))
        .execute(&mut *tx)
        .await?;
        // language=PostgreSQL
        let last_seq: Option<i64> = sqlx::query_scalar(
            "select last_seq from conversations where id = $1 and owner_id = $2 for update",
        )
        .bind(conversation_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(last_seq) = last_seq else {
            return Err(TranscriptError::NotYours(conversation_id));
        };
        // language=PostgreSQL
        sqlx::query(
            "insert into messages (owner_id, conversation_id, role, content, events)
             values ($1, $2, 'user', $3, $4)",
        )
        .bind(user_id)
        .bind(conversation_id)
        .bind(content)
        .bind(&events)
        .execute(&mut *tx)
        .await?;
        // language=PostgreSQL
        let message_id: Uuid = sqlx::query_scalar(
            "insert into messages (owner_id, conversation_id, role, complete)
             values ($1, $2, 'assistant', false) returning id",
        )
        .bind(user_id)
        .bind(conversation_id)
        .fetch_one(&mut *tx)
        .await?;
        // language=PostgreSQL
        sqlx::query("update conversations set updated_at = now() where id = $1")
            .bind(conversation_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::debug!(user.id = %user_id, conversation.id = %conversation_id, "turn started");
        Ok(Self::spawn(
            db.clone(),
            user_id,
            conversation_id,
            message_id,
            u64::try_from(last_seq).unwrap_or(0),
        ))
    }

    /// Continues the conversation's newest assistant message if it is incomplete
    /// (e.g. a router restarted mid-turn and the sandbox's turn goes on): events at
    /// or below the stored `last_seq` are ignored, later ones appended. `None` when
    /// there is no such message or the conversation is not `user_id`'s.
    pub async fn attach(
        db: &PgPool,
        user_id: Uuid,
        conversation_id: Uuid,
    ) -> Result<Option<Self>, TranscriptError> {
        let mut tx = db::user_tx(db, user_id).await?;
        // language=PostgreSQL
        let row: Option<(Uuid, bool, i64)> = sqlx::query_as(
            "select m.id, m.complete, c.last_seq from conversations c
             join messages m on m.conversation_id = c.id and m.role = 'assistant'
             where c.id = $1 and c.owner_id = $2 and m.owner_id = $2
             order by m.position desc limit 1",
        )
        .bind(conversation_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match row {
            Some((message_id, false, last_seq)) => Some(Self::spawn(
                db.clone(),
                user_id,
                conversation_id,
                message_id,
                u64::try_from(last_seq).unwrap_or(0),
            )),
            _ => None,
        })
    }

    fn spawn(
        db: PgPool,
        user_id: Uuid,
        conversation_id: Uuid,
        message_id: Uuid,
        last_seq: u64,
    ) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                max_seq: last_seq,
                ..Pending::default()
            }),
            wake: Notify::new(),
        });
        let writer = tokio::spawn(writer::run(
            writer::Target {
                db,
                user_id,
                conversation_id,
                message_id,
            },
            shared.clone(),
        ));
        Self {
            conversation_id,
            message_id,
            shared,
            writer: Some(writer),
        }
    }

    /// The conversation this turn belongs to.
    pub fn conversation_id(&self) -> Uuid {
        self.conversation_id
    }

    /// The id of the assistant message being written.
    pub fn message_id(&self) -> Uuid {
        self.message_id
    }

    /// Records one event of the sandbox; never blocks on the database. Events of
    /// another conversation, frames without a `seq` (`call`, frame errors), and
    /// events at or below a `seq` already recorded (a replay after `resume`) are
    /// ignored, as is anything after `done`/`error`.
    pub fn record(&self, frame: &SandboxFrame) {
        let Some((conversation, seq)) = conversation_and_seq(frame) else {
            return;
        };
        if conversation.parse::<Uuid>().ok() != Some(self.conversation_id) {
            tracing::warn!(conversation.id = %self.conversation_id, "event of another conversation not recorded");
            return;
        }
        {
            let mut p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if p.closed || seq <= p.max_seq {
                return;
            }
            p.max_seq = seq;
            match frame {
                SandboxFrame::Turn { .. } => {}
                SandboxFrame::Text { delta, .. } => p.text.push_str(delta),
                SandboxFrame::Done { usage, .. } => {
                    p.done = Some((usage.input_tokens, usage.output_tokens));
                    p.closed = true;
                }
                SandboxFrame::Error { .. } => {
                    p.events.push(browser_event(frame));
                    p.closed = true;
                }
                _ => p.events.push(browser_event(frame)),
            }
        }
        self.shared.wake.notify_one();
    }

    /// Waits until everything recorded is stored: after `done`/`error`, or (when
    /// neither came) ends the turn incomplete. Returns how it ended.
    pub async fn finish(mut self) -> Outcome {
        self.close();
        match self.writer.take() {
            Some(writer) => writer.await.unwrap_or(Outcome::Incomplete),
            None => Outcome::Incomplete,
        }
    }

    fn close(&self) {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.shared.wake.notify_one();
    }
}

impl Drop for Turn {
    /// A turn dropped midway (browser gone, router shutting down) still gets what
    /// arrived written, marked incomplete, by its writer task.
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.close();
        }
    }
}

/// The conversation's highest stored event `seq` (0 before any event), or `None`
/// when it is not one of `user_id`'s conversations. A reconnecting proxy resumes
/// the sandbox's stream after it.
pub async fn last_seq(
    db: &PgPool,
    user_id: Uuid,
    conversation_id: Uuid,
) -> Result<Option<u64>, TranscriptError> {
    let mut tx = db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let seq: Option<i64> =
        sqlx::query_scalar("select last_seq from conversations where id = $1 and owner_id = $2")
            .bind(conversation_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(seq.map(|s| u64::try_from(s).unwrap_or(0)))
}

/// A title from the first message: whitespace collapsed, at most [`TITLE_CHARS`].
pub fn title(content: &str) -> String {
    let words: Vec<&str> = content.split_whitespace().collect();
    let joined = words.join(" ");
    let mut title: String = joined.chars().filter(|c| !c.is_control()).collect();
    if title.chars().count() > TITLE_CHARS {
        title = title.chars().take(TITLE_CHARS - 1).collect::<String>();
        title = title.trim_end().to_string();
        title.push('…');
    }
    if title.is_empty() {
        "New conversation".to_string()
    } else {
        title
    }
}

fn conversation_and_seq(frame: &SandboxFrame) -> Option<(&str, u64)> {
    type F = SandboxFrame;
    let (conversation_id, seq) = match frame {
        F::Turn {
            seq,
            conversation_id,
            ..
        }
        | F::Text {
            seq,
            conversation_id,
            ..
        }
        | F::ToolUse {
            seq,
            conversation_id,
            ..
        }
        | F::ToolResult {
            seq,
            conversation_id,
            ..
        }
        | F::Document {
            seq,
            conversation_id,
            ..
        }
        | F::Voice {
            seq,
            conversation_id,
            ..
        }
        | F::Done {
            seq,
            conversation_id,
            ..
        } => (conversation_id, seq),
        F::Error {
            seq: Some(seq),
            conversation_id: Some(conversation_id),
            ..
        } => (conversation_id, seq),
        F::Error { .. } | F::Call { .. } | F::Replay { .. } => return None,
    };
    Some((conversation_id.as_str(), *seq))
}

/// The event as the browser got it (DESIGN.md), i.e. without `conversation_id`.
fn browser_event(frame: &SandboxFrame) -> Value {
    let mut value = serde_json::to_value(frame).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.remove("conversation_id");
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_one_line_and_capped() {
        assert_eq!(title("  plan my\n\ttrip  "), "plan my trip");
        assert_eq!(title(" \n "), "New conversation");
        let long = title(&"word ".repeat(100));
        assert_eq!(long.chars().count(), TITLE_CHARS);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn browser_events_carry_no_conversation_id() {
        let v = browser_event(&SandboxFrame::Document {
            seq: 3,
            conversation_id: Uuid::nil().to_string(),
            id: "d".into(),
            filename: "a.md".into(),
        });
        assert_eq!(
            v,
            serde_json::json!({"type":"document","seq":3,"id":"d","filename":"a.md"})
        );
    }
}
