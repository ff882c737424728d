//! Numbered sandbox frames of one conversation, as a sandbox sends them, and the
//! browser's view of them: for tests of how turns are stored.

use sandbox::protocol::{SandboxFrame, Usage};
use serde_json::{Value, json};
use uuid::Uuid;

/// The frames of a turn in `conversation`, numbered on from where it starts.
pub struct Frames {
    conversation: String,
    /// The last `seq` used.
    pub seq: u64,
}

impl Frames {
    /// Frames numbered from 1.
    pub fn new(conversation: Uuid) -> Self {
        Self::from(conversation, 1)
    }
    /// Frames numbered from `first`.
    pub fn from(conversation: Uuid, first: u64) -> Self {
        Self {
            conversation: conversation.to_string(),
            seq: first - 1,
        }
    }
    pub fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
    /// A `turn` event.
    pub fn turn(&mut self) -> SandboxFrame {
        self.turn_of(None)
    }
    /// A `turn` event naming the assistant message it is stored in.
    pub fn turn_of(&mut self, message: Option<Uuid>) -> SandboxFrame {
        SandboxFrame::Turn {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            message_id: message.map(|m| m.to_string()),
            prompt_id: None,
        }
    }
    pub fn text(&mut self, delta: &str) -> SandboxFrame {
        SandboxFrame::Text {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            delta: delta.into(),
        }
    }
    pub fn tool_use(&mut self) -> SandboxFrame {
        SandboxFrame::ToolUse {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            id: "toolu_1".into(),
            name: "Write".into(),
            input: json!({"file_path": "/workspace/a.py", "content": "print(1)"}),
        }
    }
    pub fn tool_result(&mut self) -> SandboxFrame {
        SandboxFrame::ToolResult {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            id: "toolu_1".into(),
            is_error: false,
            content: "File created".into(),
        }
    }
    pub fn document(&mut self) -> SandboxFrame {
        SandboxFrame::Document {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            id: Uuid::nil().to_string(),
            filename: "plan.md".into(),
        }
    }
    pub fn done(&mut self, input: u64, output: u64) -> SandboxFrame {
        SandboxFrame::Done {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
            },
            stopped: false,
        }
    }
    /// The `done` of a turn the user stopped.
    pub fn stopped(&mut self) -> SandboxFrame {
        SandboxFrame::Done {
            seq: self.next(),
            conversation_id: self.conversation.clone(),
            usage: Usage::default(),
            stopped: true,
        }
    }
    pub fn error(&mut self) -> SandboxFrame {
        SandboxFrame::Error {
            seq: Some(self.next()),
            conversation_id: Some(self.conversation.clone()),
            code: "agent_crashed".into(),
            message: "the agent stopped".into(),
            message_id: None,
        }
    }
}

/// The browser's view of an event (what the router relays, minus `conversation_id`).
pub fn seen(frame: &SandboxFrame) -> Value {
    let mut v = serde_json::to_value(frame).expect("json");
    v.as_object_mut().expect("object").remove("conversation_id");
    v
}

/// A stored event: as the browser saw it, with `at`, the characters of the
/// answer's text before it.
pub fn stored(frame: &SandboxFrame, at: u64) -> Value {
    let mut v = seen(frame);
    v.as_object_mut()
        .expect("object")
        .insert("at".into(), Value::from(at));
    v
}
