//! Conversations stored as the sandbox streams them, one turn per user message.
//!
//! The router that takes a browser's message opens the turn's rows with
//! [`open_turn`] (the conversation if new, the user message and an empty,
//! incomplete assistant message; through an [`Opener`], which opens the turns
//! that arrive together in one batch) before the message goes to the sandbox, and takes
//! them back with [`discard_turn`] when the sandbox refuses it. A message sent in
//! the place of an earlier one (regenerate, edit and resend) hides that message and
//! those after it (`superseded_by`, migration 0011); taking it back shows them again. The sandbox then
//! stores the turn itself: it pushes its numbered events over HTTP
//! (`POST /v1/workspace/events`, `crate::http::workspace_events`) and each batch is
//! stored by [`store_events`] (through a [`Writer`], which stores the batches
//! that arrive together in one transaction), exactly once by (conversation, `seq`): text appended
//! to the answer's `content`, tool/document/voice/error events (as the browser saw
//! them, with `at`: the characters of the answer's text before them) to its
//! `events`, `conversations.last_seq` raised. A `done` marks the answer complete
//! with its token counts (one with nothing in it, stopped before its first word,
//! gets `[{"type":"stopped"}]`); a numbered `error` leaves what arrived marked
//! incomplete, as does a turn whose end never comes.
//!
//! This module does not relay frames or talk to sandboxes.

mod opener;
mod queue;
mod store;
mod writer;

pub use opener::Opener;
pub use queue::{MAX_BATCH, RUNNING_BATCHES};
pub use store::{NewMessage, OpenTurn, StoreOutcome, discard_turn, open_turn, store_events};
pub use writer::Writer;

use sandbox::protocol::SandboxFrame;
use serde_json::Value;
use uuid::Uuid;

/// Longest conversation title taken from the first message, in characters.
pub const TITLE_CHARS: usize = 60;

/// The title of a conversation whose first message has no words.
pub const UNTITLED: &str = "Untitled";

/// Transcript failures.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// The conversation id belongs to another user.
    #[error("conversation {0} is not this user's")]
    NotYours(Uuid),
    /// A `replaces` names no current user message of the conversation.
    #[error("message {0} is not a current user message of the conversation")]
    CannotReplace(Uuid),
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

/// A title from the first message: its first line with words (code fences
/// skipped), Markdown marks stripped, whitespace collapsed, cut at a word
/// boundary to at most [`TITLE_CHARS`] characters (an ellipsis included);
/// [`UNTITLED`] when nothing is left. The model is not asked: a title costs no
/// tokens.
pub fn title(content: &str) -> String {
    let line = content
        .lines()
        .filter(|l| !l.trim_start().starts_with("```") && !l.trim_start().starts_with("~~~"))
        .map(plain_line)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if line.chars().count() <= TITLE_CHARS {
        return if line.is_empty() {
            UNTITLED.to_string()
        } else {
            line
        };
    }
    // What fits with the ellipsis, back to the last whole word; a word longer
    // than that is cut.
    let room: String = line.chars().take(TITLE_CHARS - 1).collect();
    let whole = line.chars().nth(TITLE_CHARS - 1) == Some(' ');
    let cut = match room.rfind(' ') {
        _ if whole => room.as_str(),
        Some(i) if i > 0 => &room[..i],
        _ => room.as_str(),
    };
    let mut title = cut
        .trim_end_matches([' ', ',', ';', ':', '-', '.'])
        .to_string();
    title.push('…');
    title
}

/// One line without Markdown marks: heading, quote and list markers, emphasis,
/// code ticks, link and image syntax (their text kept); whitespace collapsed.
fn plain_line(line: &str) -> String {
    let mut rest = line.trim();
    // Block markers, possibly nested ("> - # x").
    loop {
        let before = rest;
        rest = rest
            .trim_start_matches('#')
            .trim_start_matches('>')
            .trim_start();
        for marker in ["- [ ] ", "- [x] ", "- ", "* ", "+ "] {
            if let Some(r) = rest.strip_prefix(marker) {
                rest = r.trim_start();
            }
        }
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits > 0
            && let Some(r) = rest[digits..]
                .strip_prefix(". ")
                .or_else(|| rest[digits..].strip_prefix(") "))
        {
            rest = r.trim_start();
        }
        if rest == before {
            break;
        }
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut out = String::with_capacity(rest.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' | '`' | '~' => {}
            // `_` marks emphasis only at a word's edge (snake_case stays).
            '_' if i == 0
                || i + 1 == chars.len()
                || !chars[i - 1].is_alphanumeric()
                || !chars[i + 1].is_alphanumeric() => {}
            '!' if chars.get(i + 1) == Some(&'[') => {}
            '[' | ']' => {}
            '(' if i > 0 && chars[i - 1] == ']' => {
                // A link's target: skipped up to its closing parenthesis.
                match chars[i..].iter().position(|&c| c == ')') {
                    Some(end) => i += end,
                    None => out.push(c),
                }
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
        i += 1;
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
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
    fn titles_are_the_first_line_without_markdown() {
        assert_eq!(title("  plan my\ttrip  \nand more"), "plan my trip");
        assert_eq!(
            title("\n\n## **Lisbon** _trip_ ideas\n"),
            "Lisbon trip ideas"
        );
        assert_eq!(
            title("> - see [the docs](https://x.y/z) and ![a cat](c.png)"),
            "see the docs and a cat"
        );
        assert_eq!(
            title("```rust\nfn main_loop() {}\n```"),
            "fn main_loop() {}"
        );
        assert_eq!(title("1. `snake_case` names"), "snake_case names");
        assert_eq!(title(" \n "), UNTITLED);
        assert_eq!(title("**  **"), UNTITLED);
    }

    #[test]
    fn long_titles_are_cut_at_a_word() {
        let long = title(&"word ".repeat(100));
        assert!(long.chars().count() <= TITLE_CHARS, "{long}");
        assert_eq!(long, format!("{}…", ["word"; 12].join(" ")));
        let cut = title(&format!("{} abcdefghij", "a".repeat(55)));
        assert_eq!(cut, format!("{}…", "a".repeat(55)));
        let one_word = title(&"x".repeat(100));
        assert_eq!(one_word.chars().count(), TITLE_CHARS);
        assert!(one_word.ends_with('…'));
        let exact = "é".repeat(TITLE_CHARS);
        assert_eq!(title(&exact), exact);
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
