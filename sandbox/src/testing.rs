//! A fake Anthropic Messages API for tests (feature `test-support`), shared with
//! the router's tests.
//!
//! Speaks the real wire protocol: `POST /v1/messages` (any query, e.g.
//! `?beta=true`) answers with server-sent events — `message_start`,
//! `content_block_start`/`_delta`/`_stop` (text deltas and `input_json_delta` for
//! tool use), `message_delta`, `message_stop` — or, for `"stream": false`, one JSON
//! message; `POST /v1/messages/count_tokens` answers `{"input_tokens": N}`. Each
//! test scripts the answers as a queue of [`Reply`]s (an empty queue answers
//! "ok"), and every request is recorded for assertions. Like the real API, a call
//! without a key (`x-api-key`, or a bearer token) is refused with 401
//! `authentication_error` (and recorded). Tests in other languages
//! (the browser app's end-to-end run) start the `fake-anthropic` binary and queue
//! answers with `POST /_fake/replies` (see [`Reply::from_json`]).
//!
//! It also plays the router's HTTP routes a sandbox calls itself (its gateway
//! URL points here in the sandbox's tests): `POST /v1/workspace/events` stores
//! events idempotently by (conversation, seq) and records every post
//! ([`FakeApi::event_posts`], [`FakeApi::stored_events`]; [`FakeApi::fail_events`]
//! makes the next ones fail), and `POST /v1/workspace/calls` answers Jarvis tool
//! calls as [`FakeApi::answer_calls`] scripts them (recorded: [`FakeApi::calls`]).
//! These are not in [`FakeApi::requests`].

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{OriginalUri, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wire::{error_response, events, sse, whole_message};

/// One content block of a scripted answer.
#[derive(Debug, Clone)]
pub enum Block {
    /// Text, sent as these deltas.
    Text(Vec<String>),
    /// A tool call.
    ToolUse {
        /// The call's id (`toolu_…`).
        id: String,
        /// The tool's name.
        name: String,
        /// Its input.
        input: Value,
    },
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A successful message with these blocks.
    Blocks(Vec<Block>),
    /// An HTTP error (429, 529, 500, …) with an Anthropic error body.
    Status(u16),
    /// A stream that starts, then sends `event: error` (overloaded) and ends; the
    /// request right after it (the CLI's retry) gets a 529.
    MidStreamError,
    /// A stream that starts, then says nothing for this long, then answers "late".
    Stall(Duration),
    /// A text answer streamed as these deltas, with this pause before each.
    Slow(Vec<String>, Duration),
    /// A text answer saying what the user said in the conversation the request
    /// carries: `Heard: first | second` (see [`heard`]), so a test can tell what
    /// the model was shown.
    Echo,
}

impl Reply {
    /// A reply described in JSON: `{"text": ["deltas", …]}` (with `"delay_ms": N`,
    /// a pause of N ms before each delta), `{"tool_use": {"id", "name", "input"}}`,
    /// `{"stall_ms": N}`, `{"status": N}` or `{"echo": true}`. `None` for anything else.
    pub fn from_json(value: &Value) -> Option<Self> {
        if let Some(deltas) = value["text"].as_array() {
            let deltas: Vec<&str> = deltas.iter().filter_map(Value::as_str).collect();
            if let Some(ms) = value["delay_ms"].as_u64() {
                return Some(Self::Slow(
                    deltas.iter().map(|d| d.to_string()).collect(),
                    Duration::from_millis(ms),
                ));
            }
            return Some(Self::text(&deltas));
        }
        if let Some(call) = value.get("tool_use") {
            return Some(Self::tool_use(
                call["id"].as_str()?,
                call["name"].as_str()?,
                call.get("input")?.clone(),
            ));
        }
        if value["echo"] == true {
            return Some(Self::Echo);
        }
        if let Some(ms) = value["stall_ms"].as_u64() {
            return Some(Self::Stall(Duration::from_millis(ms)));
        }
        let status = u16::try_from(value["status"].as_u64()?).ok()?;
        Some(Self::Status(status))
    }

    /// A text answer streamed as these deltas.
    pub fn text(deltas: &[&str]) -> Self {
        Self::Blocks(vec![Block::Text(
            deltas.iter().map(|d| d.to_string()).collect(),
        )])
    }

    /// A single tool call.
    pub fn tool_use(id: &str, name: &str, input: Value) -> Self {
        Self::Blocks(vec![Block::ToolUse {
            id: id.into(),
            name: name.into(),
            input,
        }])
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Path and query.
    pub path: String,
    /// The `x-api-key` header, or the bearer token of `Authorization`.
    pub api_key: Option<String>,
    /// The `anthropic-beta` header.
    pub beta: Option<String>,
    /// The JSON body (`Null` if it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// Whether this is a `/v1/messages` call (not `count_tokens`).
    pub fn is_messages(&self) -> bool {
        self.path.starts_with("/v1/messages") && !self.path.contains("count_tokens")
    }
}

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    /// Set by a mid-stream error: the CLI's retry that follows fails too.
    fail_fallback: Mutex<bool>,
    requests: Mutex<Vec<RecordedRequest>>,
    workspace: workspace::Workspace,
}

/// A running fake API on `127.0.0.1`; stops when dropped.
pub struct FakeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl FakeApi {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/_fake/replies", post(push_replies))
            .route("/v1/workspace/events", post(workspace::events))
            .route("/v1/workspace/calls", post(workspace::calls))
            .fallback(not_found)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(Self {
            addr,
            shared,
            cancel,
        })
    }

    /// The base URL (`http://127.0.0.1:PORT`), for `ANTHROPIC_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues the answer to the next `/v1/messages` call.
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.replies).push_back(reply);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The `/v1/messages` requests so far.
    pub fn message_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_messages)
            .collect()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The real API's answer to a call that carries no key.
fn missing_key() -> Response {
    error_response(401, "authentication_error", "x-api-key header is required")
}

fn record(
    shared: &Shared,
    uri: &OriginalUri,
    headers: &HeaderMap,
    body: &Bytes,
) -> RecordedRequest {
    let request = parse(uri, headers, body);
    lock(&shared.requests).push(request.clone());
    request
}

fn parse(uri: &OriginalUri, headers: &HeaderMap, body: &Bytes) -> RecordedRequest {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let api_key = header("x-api-key").or_else(|| {
        header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
    });
    let path = uri
        .0
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    RecordedRequest {
        path,
        api_key: api_key.filter(|k| !k.trim().is_empty()),
        beta: header("anthropic-beta"),
        body,
    }
}

async fn count_tokens(
    State(shared): State<Arc<Shared>>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if record(&shared, &uri, &headers, &body).api_key.is_none() {
        return missing_key();
    }
    Json(json!({"input_tokens": 12})).into_response()
}

/// Queues the replies of a JSON array (or one reply); 400 names the bad one.
async fn push_replies(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let items = match body {
        Value::Array(items) => items,
        one => vec![one],
    };
    let mut replies = Vec::with_capacity(items.len());
    for item in &items {
        match Reply::from_json(item) {
            Some(reply) => replies.push(reply),
            None => {
                return error_response(
                    400,
                    "invalid_request_error",
                    &format!("not a reply: {item}"),
                );
            }
        }
    }
    let queued = replies.len();
    lock(&shared.replies).extend(replies);
    Json(json!({"queued": queued})).into_response()
}

async fn not_found(
    State(shared): State<Arc<Shared>>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, &uri, &headers, &body);
    error_response(404, "not_found_error", "no such endpoint in the fake")
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded = record(&shared, &uri, &headers, &body);
    if recorded.api_key.is_none() {
        return missing_key();
    }
    let request = recorded.body;
    if std::mem::take(&mut *lock(&shared.fail_fallback)) {
        return error_response(529, "overloaded_error", "Overloaded");
    }
    let reply = lock(&shared.replies)
        .pop_front()
        .unwrap_or_else(|| Reply::text(&["ok"]));
    if matches!(reply, Reply::MidStreamError) {
        *lock(&shared.fail_fallback) = true;
    }
    let reply = match reply {
        Reply::Echo => Reply::text(&[&heard(&request)]),
        other => other,
    };
    let model = request["model"]
        .as_str()
        .unwrap_or("claude-fake")
        .to_string();
    let streaming = request["stream"] == true;
    match reply {
        Reply::Status(status) => {
            let kind = match status {
                429 => "rate_limit_error",
                529 => "overloaded_error",
                400 => "invalid_request_error",
                401 => "authentication_error",
                _ => "api_error",
            };
            error_response(status, kind, &format!("fake upstream answered {status}"))
        }
        Reply::Blocks(blocks) if !streaming => Json(whole_message(&model, &blocks)).into_response(),
        Reply::MidStreamError if !streaming => {
            error_response(529, "overloaded_error", "Overloaded")
        }
        Reply::Slow(deltas, _) if !streaming => {
            Json(whole_message(&model, &[Block::Text(deltas)])).into_response()
        }
        Reply::Stall(_) if !streaming => {
            Json(whole_message(&model, &[Block::Text(vec!["late".into()])])).into_response()
        }
        reply => sse(events(&model, reply)),
    }
}

/// What the user said in the conversation a `/v1/messages` request carries: the
/// text blocks of its user turns, in order, joined by ` | ` after `Heard: `.
/// Tool results and the client's own notes (text in `<…>` tags, such as system
/// reminders) are left out.
pub fn heard(request: &Value) -> String {
    let said: Vec<&str> = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| match &m["content"] {
            Value::String(text) => vec![text.as_str()],
            Value::Array(blocks) => blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect(),
            _ => Vec::new(),
        })
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.starts_with('<'))
        .collect();
    format!("Heard: {}", said.join(" | "))
}

mod wire;
mod workspace;

pub use workspace::{CallAnswer, CallAnswerer, EventsPost};

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Reply, heard};

    #[test]
    fn echo_hears_the_user_turns_without_tool_results_or_client_notes() {
        let request = json!({"messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                {"type": "text", "text": "first question"},
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "an answer"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
            {"role": "user", "content": " second question "},
        ]});
        assert_eq!(heard(&request), "Heard: first question | second question");
        assert!(matches!(
            Reply::from_json(&json!({"echo": true})),
            Some(Reply::Echo)
        ));
    }
}
