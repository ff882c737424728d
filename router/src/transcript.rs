//! Conversations stored as the sandbox streams them, one turn per user message.
//!
//! The router that takes a browser's message opens the turn's rows with
//! [`open_turn`] (the conversation if new, the user message and an empty,
//! incomplete assistant message) before the message goes to the sandbox, and takes
//! them back with [`discard_turn`] when the sandbox refuses it. The sandbox then
//! stores the turn itself: it pushes its numbered events over HTTP
//! (`POST /v1/workspace/events`, `crate::http::workspace_events`) and each batch is
//! stored by [`store_events`], exactly once by (conversation, `seq`): text appended
//! to the answer's `content`, tool/document/voice/error events (as the browser saw
//! them, with `at`: the characters of the answer's text before them) to its
//! `events`, `conversations.last_seq` raised. A `done` marks the answer complete
//! with its token counts (one with nothing in it, stopped before its first word,
//! gets `[{"type":"stopped"}]`); a numbered `error` leaves what arrived marked
//! incomplete, as does a turn whose end never comes.
//!
//! This module does not relay frames or talk to sandboxes.

mod store;

pub use store::{OpenTurn, StoreOutcome, discard_turn, open_turn, store_events};

use sandbox::protocol::SandboxFrame;
use serde_json::Value;
use uuid::Uuid;

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
    /// A numbered `error` arrived: what arrived before it is kept, incomplete.
    Incomplete,
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
