//! The Jarvis tool calls a sandbox makes over HTTP (`POST /v1/workspace/calls`):
//! `speak` goes to text to speech, the document tools to [`crate::tools`], a new
//! document only when it fits in the plan's storage.
//!
//! Every call carries a `call_id` the sandbox keeps when it retries, so a retry
//! is safe: a `save_document` already stored answers the same document
//! ([`crate::tools::call_document_id`]) without checking the quota again or
//! saving a second one. This module decides; the handler in
//! `http::workspace_events` only parses and answers.

use sandbox::protocol::{ErrorBody, ToolCall};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{storage::Storage, voice::Voice};

/// One tool call of a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The sandbox's id of this call, the same on every retry.
    pub call_id: Uuid,
    /// The conversation whose agent made the call, when it came from a turn.
    pub conversation_id: Option<Uuid>,
    /// The method and its parameters.
    pub call: ToolCall,
}

/// What answering a call needs of the router.
#[derive(Clone, Copy)]
pub struct Services<'a> {
    /// The database.
    pub db: &'a PgPool,
    /// Object storage (the quota counts what it holds).
    pub storage: &'a Storage,
    /// Text to speech, and the plans.
    pub voice: &'a Voice,
}

/// Answers `call` of `user`'s sandbox: the result, or the `{code, message}` of a
/// refusal (a tool-level answer the sandbox does not retry; `internal` for a
/// failure on the router's side).
pub async fn answer(services: Services<'_>, user: Uuid, call: Call) -> Result<Value, ErrorBody> {
    let Services { db, storage, voice } = services;
    if let ToolCall::Speak { text } = &call.call {
        return match voice.speak(user, text).await {
            Ok(spoken) => serde_json::to_value(spoken)
                .map_err(|_| body("internal", "the voice answer could not be encoded")),
            Err(error) => Err(error.body()),
        };
    }
    if let ToolCall::SaveDocument { content, .. } = &call.call {
        // A retry of a save that went through: the same answer, and no quota
        // check (the document is stored already).
        match crate::tools::saved_by_call(db, user, call.call_id).await {
            Ok(Some(saved)) => return Ok(saved),
            Ok(None) => {}
            Err(error) => return Err(error.body()),
        }
        // A new document is stored for the user too: one that does not fit in
        // their plan's storage is refused (an edit of an existing one is not).
        let room = crate::quota::room(db, storage, voice.plans(), user)
            .await
            .map_err(|error| {
                tracing::error!(user.id = %user, %error, "reading the storage quota failed");
                body("internal", "the document could not be saved; try again")
            })?;
        if !room.fits(content.len() as u64, 0) {
            return Err(body("quota_exceeded", &room.full_message()));
        }
    }
    let (method, params) = match serde_json::to_value(&call.call) {
        Ok(Value::Object(mut map)) => (
            map.remove("method")
                .and_then(|m| m.as_str().map(str::to_owned))
                .unwrap_or_default(),
            map.remove("params").unwrap_or(Value::Null),
        ),
        _ => return Err(body("invalid_params", "the call could not be read")),
    };
    crate::tools::handle_call(
        db,
        user,
        Some(call.call_id),
        call.conversation_id,
        &method,
        params,
    )
    .await
    .map_err(|e| e.body())
}

fn body(code: &str, message: &str) -> ErrorBody {
    ErrorBody {
        code: code.into(),
        message: message.into(),
    }
}
