//! The router ⇄ sandbox protocol: JSON text frames over one WebSocket.
//!
//! Owns only the wire types (the router depends on this module); no logic lives here.
//! Sandbox → router events are the browser events of DESIGN.md plus a
//! `conversation_id` on each, so the router can relay them as they are, and
//! `replay` frames answering a `resume`. The Jarvis tools that need the router
//! go over HTTP (`POST /v1/workspace/calls`), not over a link: `call` and
//! `reply` frames stay here but are no longer used.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A frame the router sends to the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RouterFrame {
    /// A user message: starts a turn in `conversation_id` (a UUID the router chose).
    Message {
        /// What the user wrote.
        content: String,
        /// The conversation; also the CLI's session id.
        conversation_id: String,
        /// The user wants a spoken answer: the sandbox speaks the answer's text
        /// sentence by sentence (`speak` calls) as it streams.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        voice: Option<bool>,
        /// Characters of the answer spoken at most (the router's
        /// `JARVIS_VOICE_MAX_CHARS`); the sandbox's default when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        voice_max_chars: Option<u32>,
        /// Workspace paths (`uploads/…`) of the uploaded files the message names;
        /// the router resolved the browser's file ids to the user's own files.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachments: Option<Vec<String>>,
        /// The id of the assistant message the router opened for this turn: the
        /// sandbox names it when it stores the turn's events
        /// (`POST /v1/workspace/events`), on the turn's `turn` event, and on a
        /// refusal, so the router that opened it can take it back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        /// Turns the user's plan runs at once (`max_concurrent_turns`); the
        /// sandbox, which sees every turn of the workspace whichever router sent
        /// it, refuses a message past it with `too_many_turns`. No limit when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_turns: Option<u32>,
        /// The id of the user's message the router stored (a UUID): the CLI's
        /// prompt carries it as its `uuid`, so a later `replaces` can name the turn.
        /// A random one when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_id: Option<String>,
        /// The `prompt_id` of an earlier turn of this conversation: this message
        /// takes its place, and the agent forgets that turn and every turn after it
        /// (regenerate, edit and resend). Refused with `cannot_rewind` when the
        /// agent's memory of the conversation does not hold that prompt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
    },
    /// Stop the running turn of one conversation, or of every conversation.
    Interrupt {
        /// The conversation to stop; all running turns when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation_id: Option<String>,
    },
    /// Replay the kept events of `conversation_id` whose `seq` is above `after_seq`,
    /// to this router connection only, as `replay` frames (see
    /// [`SandboxFrame::Replay`]).
    Resume {
        /// The conversation to replay.
        conversation_id: String,
        /// The last sequence number the router has seen.
        after_seq: u64,
        /// Echoed on the `replay` frames that answer this request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// The router's answer to a `call`. No longer used: the sandbox answers it
    /// with an `unknown_type` error (tool calls go over HTTP).
    Reply {
        /// The `call_id` of the call being answered.
        call_id: String,
        /// The method's result on success.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// Why the call failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    },
}

/// A `{code, message}` pair, as in the router's HTTP errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

/// Token usage of one turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens the model read.
    pub input_tokens: u64,
    /// Output tokens the model wrote.
    pub output_tokens: u64,
}

/// A frame the sandbox sends to the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SandboxFrame {
    /// First event of every turn.
    Turn {
        /// Sequence number, per conversation, strictly increasing.
        seq: u64,
        /// The conversation this turn belongs to.
        conversation_id: String,
        /// The assistant message the turn's answer is stored in (the router's
        /// `message_id` of the `message` that started it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        /// The user's message that started the turn (the `message`'s `prompt_id`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_id: Option<String>,
    },
    /// A piece of the assistant's answer, as it streams.
    Text {
        /// Sequence number.
        seq: u64,
        /// The conversation.
        conversation_id: String,
        /// The new text.
        delta: String,
    },
    /// The agent called a tool.
    ToolUse {
        /// Sequence number.
        seq: u64,
        /// The conversation.
        conversation_id: String,
        /// The tool call's id (matches the `tool_result`).
        id: String,
        /// The tool's name (`Write`, `Bash`, `mcp__jarvis__save_document`, …).
        name: String,
        /// The tool's input.
        input: Value,
    },
    /// A tool's result.
    ToolResult {
        /// Sequence number.
        seq: u64,
        /// The conversation.
        conversation_id: String,
        /// The id of the `tool_use` this answers.
        id: String,
        /// The tool failed.
        is_error: bool,
        /// The result as text.
        content: String,
    },
    /// The agent saved or updated a document.
    Document {
        /// Sequence number.
        seq: u64,
        /// The conversation.
        conversation_id: String,
        /// The document's id (as the router's `reply` gave it).
        id: String,
        /// The document's file name.
        filename: String,
    },
    /// The agent spoke: an audio file made by the router. A spoken answer's
    /// sentences come as several, in order, before the turn's `done`.
    Voice {
        /// Sequence number.
        seq: u64,
        /// The conversation.
        conversation_id: String,
        /// Where the audio is (empty when `error` is set).
        url: String,
        /// What was said (or, with `error`, what could not be said).
        transcript: String,
        /// Why this part was not spoken (`voice_unavailable`, `voice_failed`,
        /// …); the turn goes on, and the rest of the answer is not spoken.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    },
    /// The turn ended normally (also after an interrupt).
    Done {
        /// Sequence number.
        seq: u64,
        /// The conversation.
        conversation_id: String,
        /// Tokens used by the turn.
        usage: Usage,
        /// The user stopped the turn (an `interrupt`): the answer ends where it was.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stopped: bool,
    },
    /// Something failed. Inside a turn it carries `seq` and `conversation_id` and ends
    /// the turn; for a bad frame it carries neither.
    Error {
        /// Sequence number, when the error belongs to a conversation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// The conversation, when the error belongs to one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation_id: Option<String>,
        /// A stable, machine-readable code (see `ErrorCode`).
        code: String,
        /// A human-readable explanation.
        message: String,
        /// On a refused `message` (no `seq`): the `message_id` it carried.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    /// The answer to a `resume`, sent to the router connection that asked and to
    /// no other: the kept events of `conversation_id` numbered above its
    /// `after_seq`, in order, in one or more frames sent back to back (no live
    /// event comes between them). Live events sent before the first of them are
    /// numbered at most `last_seq`; those after the one with `last: true`, above it.
    Replay {
        /// The `request_id` of the `resume` answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// The conversation replayed.
        conversation_id: String,
        /// The events (numbered frames of this conversation), in order.
        events: Vec<SandboxFrame>,
        /// The conversation's last `seq` when the replay was taken.
        last_seq: u64,
        /// The lowest `seq` the sandbox still kept: events above `after_seq` but
        /// below it are gone (the client reads them from the stored transcript).
        first_kept: u64,
        /// This is the replay's last frame.
        last: bool,
    },
    /// A Jarvis tool needs the router; answer with a `reply` of the same `call_id`.
    /// No longer sent: tool calls go over HTTP (`POST /v1/workspace/calls`, the
    /// same fields without `type`).
    Call {
        /// Unique id of this call.
        call_id: String,
        /// The conversation whose agent made the call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation_id: Option<String>,
        /// Method and parameters.
        #[serde(flatten)]
        call: ToolCall,
    },
}

/// The kind of a document the agent saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentType {
    /// Plain text.
    Text,
    /// Markdown.
    Markdown,
    /// Source code.
    Code,
}

/// A Jarvis tool call forwarded to the router: `method` and `params`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum ToolCall {
    /// Save a new document. Reply: `{id, filename}`.
    SaveDocument {
        /// The document's file name.
        filename: String,
        /// Its content.
        content: String,
        /// Its kind.
        #[serde(rename = "type")]
        kind: DocumentType,
    },
    /// List the user's documents. Reply: any JSON (shown to the agent).
    ListDocuments {},
    /// Search the user's documents. Reply: any JSON.
    SearchDocuments {
        /// What to look for.
        query: String,
    },
    /// Read one document. Reply: any JSON.
    ReadDocument {
        /// The document's id.
        id: String,
    },
    /// Replace a document's content. Reply: `{id, filename}`.
    UpdateDocument {
        /// The document's id.
        id: String,
        /// The new content.
        content: String,
    },
    /// Speak a text. Reply: `{url}` of the audio the router made.
    Speak {
        /// What to say.
        text: String,
    },
}

/// The `code`s of `error` events the sandbox sends.
pub mod error_code {
    /// A frame that is not JSON or lacks fields.
    pub const BAD_FRAME: &str = "bad_frame";
    /// A frame whose `type` is unknown.
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// A frame over the size limit.
    pub const FRAME_TOO_LARGE: &str = "frame_too_large";
    /// A `conversation_id` that is not a UUID.
    pub const BAD_CONVERSATION_ID: &str = "bad_conversation_id";
    /// A message for a conversation whose turn is still running.
    pub const TURN_IN_PROGRESS: &str = "turn_in_progress";
    /// Every agent slot is busy with a running turn.
    pub const TOO_MANY_AGENTS: &str = "too_many_agents";
    /// A `reply` to no pending call (no longer sent: `reply` is an unknown type).
    pub const UNKNOWN_CALL: &str = "unknown_call";
    /// The model API refused with 429.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The model API is overloaded (529).
    pub const OVERLOADED: &str = "overloaded";
    /// Any other model API failure.
    pub const UPSTREAM_ERROR: &str = "upstream_error";
    /// The CLI exited mid-turn.
    pub const AGENT_CRASHED: &str = "agent_crashed";
    /// The CLI said nothing for too long mid-turn.
    pub const AGENT_TIMEOUT: &str = "agent_timeout";
    /// The CLI could not be started.
    pub const AGENT_START_FAILED: &str = "agent_start_failed";
    /// The CLI ended the turn with an error of its own.
    pub const AGENT_ERROR: &str = "agent_error";
    /// The workspace runs as many turns as the plan allows (`max_turns`).
    pub const TOO_MANY_TURNS: &str = "too_many_turns";
    /// A `replaces` the agent cannot honour: its memory of the conversation does
    /// not hold that prompt (it never reached the agent, or predates prompt ids).
    pub const CANNOT_REWIND: &str = "cannot_rewind";
}

#[cfg(test)]
mod tests;
