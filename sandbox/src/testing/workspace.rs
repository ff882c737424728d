//! The router's routes a sandbox calls over HTTP, as the fake plays them:
//! `POST /v1/workspace/events` (stores numbered events idempotently by
//! conversation and seq, like the router) and `POST /v1/workspace/calls`
//! (answers Jarvis tool calls as the test scripts them).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json,
    body::Bytes,
    extract::{OriginalUri, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{Shared, lock, missing_key, parse};

/// How the fake answers one `POST /v1/workspace/calls`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallAnswer {
    /// The HTTP status (200 for results and tool-level errors).
    pub status: u16,
    /// The JSON body.
    pub body: Value,
    /// How long the fake waits before it answers.
    pub delay: Duration,
}

impl CallAnswer {
    /// 200 `{"result": value}`.
    pub fn result(value: Value) -> Self {
        Self {
            status: 200,
            body: json!({ "result": value }),
            delay: Duration::ZERO,
        }
    }

    /// 200 `{"error": {code, message}}`: a tool-level refusal.
    pub fn error(code: &str, message: &str) -> Self {
        Self {
            status: 200,
            body: json!({"error": {"code": code, "message": message}}),
            delay: Duration::ZERO,
        }
    }

    /// Another status, with an error body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: json!({"error": {"code": "fake", "message": format!("the fake answered {status}")}}),
            delay: Duration::ZERO,
        }
    }

    /// The same answer, after `delay`.
    pub fn after(self, delay: Duration) -> Self {
        Self { delay, ..self }
    }
}

/// Answers calls: gets the request body (`call_id`, `conversation_id`,
/// `method`, `params`).
pub type CallAnswerer = Arc<dyn Fn(&Value) -> CallAnswer + Send + Sync>;

/// A `POST /v1/workspace/events` the fake received.
#[derive(Debug, Clone)]
pub struct EventsPost {
    /// What the fake answered.
    pub status: u16,
    /// The request body (`batches`, `running_turns`).
    pub body: Value,
}

impl EventsPost {
    /// The `seq`s of the events of `conversation_id` this post carried, in order.
    pub fn seqs(&self, conversation_id: &str) -> Vec<u64> {
        batches(&self.body)
            .filter(|b| b["conversation_id"] == conversation_id)
            .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["seq"].as_u64())
            .collect()
    }
}

fn batches(body: &Value) -> impl Iterator<Item = &Value> {
    body["batches"].as_array().into_iter().flatten()
}

/// One conversation's stored events by seq, each with its batch's `message_id`.
type StoredEvents = BTreeMap<u64, (Option<String>, Value)>;

/// The fake's workspace side.
#[derive(Default)]
pub(super) struct Workspace {
    answerer: Mutex<Option<CallAnswerer>>,
    calls: Mutex<Vec<Value>>,
    event_statuses: Mutex<VecDeque<u16>>,
    posts: Mutex<Vec<EventsPost>>,
    /// Stored events by conversation.
    stored: Mutex<BTreeMap<String, StoredEvents>>,
}

impl super::FakeApi {
    /// Answers the next `/v1/workspace/calls` with `answer` (replacing any
    /// answerer before); unanswered calls get a `not_scripted` tool error.
    pub fn answer_calls(&self, answer: impl Fn(&Value) -> CallAnswer + Send + Sync + 'static) {
        *lock(&self.shared.workspace.answerer) = Some(Arc::new(answer));
    }

    /// The bodies of the `/v1/workspace/calls` requests so far.
    pub fn calls(&self) -> Vec<Value> {
        lock(&self.shared.workspace.calls).clone()
    }

    /// Answers the next `/v1/workspace/events` posts with these statuses (and
    /// stores nothing of them); 200 after them.
    pub fn fail_events(&self, statuses: &[u16]) {
        lock(&self.shared.workspace.event_statuses).extend(statuses);
    }

    /// Every `/v1/workspace/events` post so far, with the fake's answer.
    pub fn event_posts(&self) -> Vec<EventsPost> {
        lock(&self.shared.workspace.posts).clone()
    }

    /// The events stored for `conversation_id`, in seq order, each once.
    pub fn stored_events(&self, conversation_id: &str) -> Vec<Value> {
        lock(&self.shared.workspace.stored)
            .get(conversation_id)
            .map(|events| events.values().map(|(_, event)| event.clone()).collect())
            .unwrap_or_default()
    }

    /// The `message_id` each stored event of `conversation_id` came with, by seq.
    pub fn stored_message_ids(&self, conversation_id: &str) -> BTreeMap<u64, Option<String>> {
        lock(&self.shared.workspace.stored)
            .get(conversation_id)
            .map(|events| {
                events
                    .iter()
                    .map(|(seq, (message_id, _))| (*seq, message_id.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub(super) async fn events(
    State(shared): State<Arc<Shared>>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = parse(&uri, &headers, &body);
    if request.api_key.is_none() {
        return missing_key();
    }
    let workspace = &shared.workspace;
    let status = lock(&workspace.event_statuses).pop_front().unwrap_or(200);
    if status != 200 || !request.body["batches"].is_array() {
        let status = if status == 200 { 400 } else { status };
        lock(&workspace.posts).push(EventsPost {
            status,
            body: request.body,
        });
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            Json(json!({"error": {"code": "fake", "message": "not stored"}})),
        )
            .into_response();
    }
    let mut answer = Vec::new();
    {
        let mut stored = lock(&workspace.stored);
        for batch in batches(&request.body) {
            let conversation = batch["conversation_id"].as_str().unwrap_or_default();
            let message_id = batch["message_id"].as_str().map(str::to_string);
            let events = stored.entry(conversation.to_string()).or_default();
            for event in batch["events"].as_array().into_iter().flatten() {
                let last = events.keys().next_back().copied().unwrap_or(0);
                match event["seq"].as_u64() {
                    Some(seq) if seq > last => {
                        events.insert(seq, (message_id.clone(), event.clone()));
                    }
                    _ => {}
                }
            }
            let last_seq = events.keys().next_back().copied().unwrap_or(0);
            answer.push(json!({"conversation_id": conversation, "last_seq": last_seq}));
        }
        // Recorded while the store is locked: a client that saw the effect of
        // this answer finds the post here.
        lock(&workspace.posts).push(EventsPost {
            status: 200,
            body: request.body,
        });
    }
    Json(json!({ "stored": answer })).into_response()
}

pub(super) async fn calls(
    State(shared): State<Arc<Shared>>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = parse(&uri, &headers, &body);
    if request.api_key.is_none() {
        return missing_key();
    }
    lock(&shared.workspace.calls).push(request.body.clone());
    let answerer = lock(&shared.workspace.answerer).clone();
    let answer = match answerer {
        Some(answer) => answer(&request.body),
        None => CallAnswer::error("not_scripted", "the fake has no answer for this call"),
    };
    tokio::time::sleep(answer.delay).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(answer.body)).into_response()
}
