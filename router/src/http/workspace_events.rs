//! What a sandbox pushes to the router over HTTP: the numbered events of its
//! turns, to be stored, and the Jarvis tool calls of its agents. Beside the
//! workspace sync and authenticated the same way (the workspace token as
//! `x-api-key` or bearer); everything stored or read is the token's user's.
//!
//! - `POST /v1/workspace/events` `{"batches":[{conversation_id, message_id?,
//!   events:[…]}], "running_turns": N}` → 200 `{"stored":[{conversation_id,
//!   last_seq}]}`. Each batch is stored exactly once by (conversation, `seq`)
//!   (`crate::transcript::Writer`: batches that arrive together are stored in one
//!   transaction, each as `crate::transcript::store_events` stores one); a batch of a conversation that is not
//!   the user's is skipped and logged (still 200, so it is not retried forever).
//!   An empty `batches` is a heartbeat. Either way the sandbox's running turns
//!   are noted on the user's hub (activity); a turn ended by `done` starts the
//!   after-turn file sync.
//! - `POST /v1/workspace/calls` `{call_id, conversation_id?, method, params}` →
//!   200 `{"result":…}` or 200 `{"error":{code, message}}` (`crate::calls`); a
//!   failure on the router's side is a 503, which the sandbox retries with the
//!   same `call_id` (a retried `save_document` saves one document).
//!
//! A malformed body is refused with 400 and changes nothing; a bad token with 401.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use sandbox::protocol::{SandboxFrame, ToolCall};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tracing::Instrument;
use uuid::Uuid;

use super::{AppState, Error, Result};
use crate::{
    calls,
    transcript::{Outcome, TranscriptError},
};

/// Largest body of either route, in bytes.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The sandboxes' routes (workspace token).
pub fn sandbox_router() -> Router<AppState> {
    Router::new()
        .route("/v1/workspace/events", post(events))
        .route("/v1/workspace/calls", post(call))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// `POST /v1/workspace/events`'s body.
#[derive(Debug, Deserialize)]
struct Report {
    /// The events to store, per conversation (empty for a heartbeat).
    batches: Vec<Batch>,
    /// Turns the sandbox runs now (all conversations).
    running_turns: u32,
}

/// One conversation's events.
#[derive(Debug, Deserialize)]
struct Batch {
    conversation_id: Uuid,
    #[serde(default)]
    message_id: Option<Uuid>,
    events: Vec<SandboxFrame>,
}

/// `POST /v1/workspace/calls`'s body: the `ToolCall` with its ids.
#[derive(Debug, Deserialize)]
struct CallBody {
    call_id: String,
    #[serde(default)]
    conversation_id: Option<Uuid>,
    #[serde(flatten)]
    call: ToolCall,
}

/// The body as `T`, or a 400 (413 past [`MAX_BODY_BYTES`]) saying what is wrong.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>, what: &str) -> Result<T> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge(format!("{what} is limited to {MAX_BODY_BYTES} bytes"))
        } else {
            Error::BadRequest(format!(
                "{what} could not be read: {}",
                rejection.body_text()
            ))
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadRequest(format!("{what} is malformed: {e}")))
}

/// Refuses a batch holding anything but numbered events of its conversation.
fn check(batch: &Batch) -> Result<()> {
    for event in &batch.events {
        let numbered = match event {
            SandboxFrame::Turn {
                conversation_id, ..
            }
            | SandboxFrame::Text {
                conversation_id, ..
            }
            | SandboxFrame::ToolUse {
                conversation_id, ..
            }
            | SandboxFrame::ToolResult {
                conversation_id, ..
            }
            | SandboxFrame::Document {
                conversation_id, ..
            }
            | SandboxFrame::Voice {
                conversation_id, ..
            }
            | SandboxFrame::Done {
                conversation_id, ..
            }
            | SandboxFrame::Error {
                seq: Some(_),
                conversation_id: Some(conversation_id),
                ..
            } => Some(conversation_id),
            _ => None,
        };
        match numbered {
            Some(c) if c.parse::<Uuid>().ok() == Some(batch.conversation_id) => {}
            Some(c) => {
                return Err(Error::BadRequest(format!(
                    "the batch of conversation {} holds an event of conversation {:?}",
                    batch.conversation_id,
                    c.chars().take(64).collect::<String>()
                )));
            }
            None => {
                return Err(Error::BadRequest(format!(
                    "the batch of conversation {} holds an event without a seq and conversation_id",
                    batch.conversation_id
                )));
            }
        }
    }
    Ok(())
}

async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let owner = super::workspace_sync::owner(&state, &headers).await?;
    let report: Report = parse(body, "the events report")?;
    for batch in &report.batches {
        check(batch)?;
    }
    let mut stored = Vec::with_capacity(report.batches.len());
    let mut done = false;
    for batch in report.batches {
        let started = std::time::Instant::now();
        let events = batch.events.len();
        let result = state
            .workspaces
            .events()
            .store(
                owner,
                batch.conversation_id,
                batch.message_id,
                batch.events.into(),
            )
            .instrument(tracing::debug_span!("store_events", events))
            .await;
        crate::metrics::turn_db("store_events", started.elapsed());
        match result {
            Ok(outcome) => {
                state
                    .metrics
                    .count_workspace_events("stored", outcome.stored);
                state
                    .metrics
                    .count_workspace_events("duplicate", outcome.duplicates);
                state
                    .metrics
                    .count_workspace_events("ignored", outcome.ignored);
                done |= outcome.ended == Some(Outcome::Complete);
                stored.push(json!({
                    "conversation_id": batch.conversation_id,
                    "last_seq": outcome.last_seq,
                }));
            }
            Err(TranscriptError::NotYours(conversation)) => {
                tracing::warn!(user.id = %owner, conversation.id = %conversation, events, "a sandbox pushed events of a conversation that is not its user's: skipped");
                state.metrics.count_workspace_events("foreign", events);
            }
            // Batches stored before this one are stored once more as duplicates
            // when the sandbox retries: nothing changes.
            Err(TranscriptError::Db(error)) => return Err(error.into()),
            // Only opening a turn replaces messages.
            Err(error @ TranscriptError::CannotReplace(_)) => {
                return Err(anyhow::Error::new(error).into());
            }
        }
    }
    let hub = state.workspaces.hub(owner);
    hub.sandbox_reported(report.running_turns as usize);
    if done {
        tokio::spawn(async move { crate::proxy::sync_after_turn(&hub).await });
    }
    Ok(Json(json!({ "stored": stored })).into_response())
}

async fn call(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let owner = super::workspace_sync::owner(&state, &headers).await?;
    let body: CallBody = parse(body, "the call")?;
    let call_id = body.call_id.parse::<Uuid>().map_err(|_| {
        Error::BadRequest(format!(
            "call_id {:?} is not a UUID",
            body.call_id.chars().take(64).collect::<String>()
        ))
    })?;
    let services = calls::Services {
        db: &state.db,
        storage: &state.storage,
        voice: &state.voice,
    };
    let call = calls::Call {
        call_id,
        conversation_id: body.conversation_id,
        call: body.call,
    };
    let answer: Value = match calls::answer(services, owner, call).await {
        Ok(result) => json!({ "result": result }),
        // A failure on our side is worth a retry (the call is idempotent).
        Err(error) if error.code == "internal" => return Err(Error::Unavailable(error.message)),
        Err(error) => json!({ "error": error }),
    };
    Ok(Json(answer).into_response())
}
