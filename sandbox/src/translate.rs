//! Translates the CLI's stream-json output lines into protocol events.
//!
//! Pure: one line in, zero or more outputs out; no I/O, no sequence numbers (the
//! session numbers the events). Only the top-level agent's stream is shown:
//! lines with a `parent_tool_use_id` belong to sub-agents, which are disabled anyway.

use std::collections::HashSet;

use serde_json::Value;

use crate::protocol::{SandboxFrame, Usage, error_code};

/// Longest tool result text passed on; the rest is cut (the CLI keeps the whole).
pub const MAX_TOOL_RESULT_CHARS: usize = 64 * 1024;

/// An event without its sequence number and conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// See [`SandboxFrame::Turn`].
    Turn,
    /// See [`SandboxFrame::Text`].
    Text { delta: String },
    /// See [`SandboxFrame::ToolUse`].
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// See [`SandboxFrame::ToolResult`].
    ToolResult {
        id: String,
        is_error: bool,
        content: String,
    },
    /// See [`SandboxFrame::Document`].
    Document { id: String, filename: String },
    /// See [`SandboxFrame::Voice`].
    Voice {
        url: String,
        transcript: String,
        error: Option<crate::protocol::ErrorBody>,
    },
    /// See [`SandboxFrame::Done`].
    Done { usage: Usage, stopped: bool },
    /// See [`SandboxFrame::Error`].
    Error { code: String, message: String },
}

impl EventKind {
    /// An error event with a code from [`error_code`].
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::Error {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// Whether this event ends a turn.
    pub fn ends_turn(&self) -> bool {
        matches!(self, Self::Done { .. } | Self::Error { .. })
    }

    /// The wire frame with its number and conversation.
    pub fn into_frame(self, seq: u64, conversation_id: String) -> SandboxFrame {
        match self {
            Self::Turn => SandboxFrame::Turn {
                seq,
                conversation_id,
                message_id: None,
                prompt_id: None,
            },
            Self::Text { delta } => SandboxFrame::Text {
                seq,
                conversation_id,
                delta,
            },
            Self::ToolUse { id, name, input } => SandboxFrame::ToolUse {
                seq,
                conversation_id,
                id,
                name,
                input,
            },
            Self::ToolResult {
                id,
                is_error,
                content,
            } => SandboxFrame::ToolResult {
                seq,
                conversation_id,
                id,
                is_error,
                content,
            },
            Self::Document { id, filename } => SandboxFrame::Document {
                seq,
                conversation_id,
                id,
                filename,
            },
            Self::Voice {
                url,
                transcript,
                error,
            } => SandboxFrame::Voice {
                seq,
                conversation_id,
                url,
                transcript,
                error,
            },
            Self::Done { usage, stopped } => SandboxFrame::Done {
                seq,
                conversation_id,
                usage,
                stopped,
            },
            Self::Error { code, message } => SandboxFrame::Error {
                seq: Some(seq),
                conversation_id: Some(conversation_id),
                code,
                message,
                message_id: None,
            },
        }
    }
}

/// What one CLI line means for the turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// An event for the router (the turn's last one when it [`EventKind::ends_turn`]).
    Event(EventKind),
    /// The `system`/`init` line: the MCP servers and whether each is connected.
    Init { mcp_servers: Vec<(String, String)> },
    /// The CLI asks its host something (a permission, a hook): the line to answer
    /// it with, a refusal, since nobody is there to decide.
    Refuse { response: String },
}

/// The per-turn translation state.
#[derive(Debug, Default)]
pub struct Translator {
    interrupted: bool,
    tool_uses: HashSet<String>,
}

impl Translator {
    /// A translator for a new turn.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the turn as interrupted: its error result then ends it with `done`.
    pub fn interrupted(&mut self) {
        self.interrupted = true;
    }

    /// Translates one stdout line of the CLI. Lines that are not JSON are ignored.
    pub fn line(&mut self, line: &str) -> Vec<Output> {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            return Vec::new();
        };
        if !value["parent_tool_use_id"].is_null() {
            return Vec::new();
        }
        match value["type"].as_str() {
            Some("stream_event") => text_delta(&value["event"]).into_iter().collect(),
            Some("assistant") => self.tool_uses(&value),
            Some("user") => tool_results(&value),
            Some("result") => vec![Output::Event(self.result(&value))],
            Some("system") if value["subtype"] == "init" => vec![init(&value)],
            Some("control_request") => vec![refuse(&value)],
            _ => Vec::new(),
        }
    }

    fn tool_uses(&mut self, value: &Value) -> Vec<Output> {
        blocks(&value["message"]["content"])
            .filter(|block| block["type"] == "tool_use")
            .filter_map(|block| {
                let id = block["id"].as_str()?.to_string();
                let name = block["name"].as_str()?.to_string();
                self.tool_uses.insert(id.clone()).then(|| {
                    Output::Event(EventKind::ToolUse {
                        id,
                        name,
                        input: block["input"].clone(),
                    })
                })
            })
            .collect()
    }

    fn result(&self, value: &Value) -> EventKind {
        let usage = Usage {
            input_tokens: value["usage"]["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: value["usage"]["output_tokens"].as_u64().unwrap_or(0),
        };
        if value["is_error"] != true || self.interrupted {
            return EventKind::Done {
                usage,
                stopped: self.interrupted,
            };
        }
        let message = value["result"]
            .as_str()
            .map(str::to_string)
            .or_else(|| value["errors"].as_array().map(|e| format!("{e:?}")))
            .unwrap_or_else(|| "the agent failed".to_string());
        let code = match value["api_error_status"].as_u64() {
            Some(429) => error_code::RATE_LIMITED,
            Some(529) => error_code::OVERLOADED,
            Some(_) => error_code::UPSTREAM_ERROR,
            None if value["terminal_reason"] == "api_error" => error_code::UPSTREAM_ERROR,
            None => error_code::AGENT_ERROR,
        };
        EventKind::error(code, message)
    }
}

fn text_delta(event: &Value) -> Option<Output> {
    if event["type"] != "content_block_delta" || event["delta"]["type"] != "text_delta" {
        return None;
    }
    let delta = event["delta"]["text"].as_str()?;
    Some(Output::Event(EventKind::Text {
        delta: delta.to_string(),
    }))
}

fn tool_results(value: &Value) -> Vec<Output> {
    blocks(&value["message"]["content"])
        .filter(|block| block["type"] == "tool_result")
        .filter_map(|block| {
            let id = block["tool_use_id"].as_str()?.to_string();
            let is_error = block["is_error"].as_bool().unwrap_or(false);
            let content = truncate(result_text(&block["content"]));
            Some(Output::Event(EventKind::ToolResult {
                id,
                is_error,
                content,
            }))
        })
        .collect()
}

fn init(value: &Value) -> Output {
    let mcp_servers = value["mcp_servers"]
        .as_array()
        .map(|servers| {
            servers
                .iter()
                .map(|s| {
                    let name = s["name"].as_str().unwrap_or_default().to_string();
                    (name, s["status"].as_str().unwrap_or_default().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    Output::Init { mcp_servers }
}

fn refuse(value: &Value) -> Output {
    let subtype = value["request"]["subtype"].as_str().unwrap_or("unknown");
    let response = serde_json::json!({"type": "control_response", "response": {
        "subtype": "error",
        "request_id": value["request_id"],
        "error": format!("the Jarvis sandbox does not answer {subtype} requests"),
    }});
    Output::Refuse {
        response: response.to_string(),
    }
}

fn blocks(content: &Value) -> impl Iterator<Item = &Value> {
    content.as_array().into_iter().flatten()
}

/// A tool result's content as text: a string as it is, text blocks joined.
fn result_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_TOOL_RESULT_CHARS {
        let mut end = MAX_TOOL_RESULT_CHARS;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n[… cut]");
    }
    text
}

#[cfg(test)]
mod tests;
