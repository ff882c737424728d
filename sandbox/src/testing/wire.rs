//! The fake's wire format: Anthropic error bodies, the server-sent event stream of
//! a scripted answer, and the whole message for non-streaming requests.

use std::{convert::Infallible, time::Duration};

use axum::{
    Json,
    body::{Body, Bytes},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{Block, Reply};

pub(super) fn error_response(status: u16, kind: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, [("request-id", "req_fake")], Json(body)).into_response()
}

/// What the SSE body carries: events, or a pause.
pub(super) enum Chunk {
    Event(&'static str, Value),
    Pause(Duration),
}

pub(super) fn sse(chunks: Vec<Chunk>) -> Response {
    let stream = futures::stream::iter(chunks).then(|chunk| async move {
        let bytes = match chunk {
            Chunk::Event(name, data) => format!("event: {name}\ndata: {data}\n\n"),
            Chunk::Pause(pause) => {
                tokio::time::sleep(pause).await;
                String::new()
            }
        };
        Ok::<_, Infallible>(Bytes::from(bytes))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("request-id", "req_fake")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn message_start(model: &str) -> Chunk {
    Chunk::Event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": format!("msg_{}", uuid::Uuid::new_v4().simple()), "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    )
}

pub(super) fn events(model: &str, reply: Reply) -> Vec<Chunk> {
    let mut chunks = vec![message_start(model)];
    let blocks = match reply {
        Reply::Blocks(blocks) => blocks,
        Reply::MidStreamError => {
            chunks.push(Chunk::Event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ));
            return chunks;
        }
        Reply::Stall(pause) => {
            chunks.push(Chunk::Event("ping", json!({"type": "ping"})));
            chunks.push(Chunk::Pause(pause));
            vec![Block::Text(vec!["late".into()])]
        }
        Reply::Slow(deltas, pause) => {
            chunks.push(block_start(0, json!({"type": "text", "text": ""})));
            for delta in deltas {
                chunks.push(Chunk::Pause(pause));
                chunks.push(block_delta(0, json!({"type": "text_delta", "text": delta})));
            }
            chunks.push(Chunk::Event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            Vec::new()
        }
        // Turned into text by the handler, which has the request.
        Reply::Status(_) | Reply::Echo => Vec::new(),
    };
    let pause = Chunk::Pause(Duration::from_millis(5));
    for (index, block) in blocks.iter().enumerate() {
        match block {
            Block::Text(deltas) => {
                chunks.push(block_start(index, json!({"type": "text", "text": ""})));
                for delta in deltas {
                    chunks.push(block_delta(
                        index,
                        json!({"type": "text_delta", "text": delta}),
                    ));
                    chunks.push(Chunk::Pause(Duration::from_millis(5)));
                }
            }
            Block::ToolUse { id, name, input } => {
                chunks.push(block_start(
                    index,
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                ));
                let text = input.to_string();
                let middle = text
                    .char_indices()
                    .nth(text.chars().count() / 2)
                    .map_or(0, |(i, _)| i);
                for part in [&text[..middle], &text[middle..]] {
                    chunks.push(block_delta(
                        index,
                        json!({"type": "input_json_delta", "partial_json": part}),
                    ));
                }
            }
        }
        chunks.push(Chunk::Event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    chunks.push(pause);
    chunks.push(Chunk::Event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(&blocks), "stop_sequence": null},
               "usage": {"output_tokens": 5}}),
    ));
    chunks.push(Chunk::Event(
        "message_stop",
        json!({"type": "message_stop"}),
    ));
    chunks
}

fn block_start(index: usize, block: Value) -> Chunk {
    Chunk::Event(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": block}),
    )
}

fn block_delta(index: usize, delta: Value) -> Chunk {
    Chunk::Event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn stop_reason(blocks: &[Block]) -> &'static str {
    if blocks.iter().any(|b| matches!(b, Block::ToolUse { .. })) {
        "tool_use"
    } else {
        "end_turn"
    }
}

pub(super) fn whole_message(model: &str, blocks: &[Block]) -> Value {
    let content: Vec<Value> = blocks
        .iter()
        .map(|block| match block {
            Block::Text(deltas) => json!({"type": "text", "text": deltas.concat()}),
            Block::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        })
        .collect();
    json!({"id": format!("msg_{}", uuid::Uuid::new_v4().simple()), "type": "message", "role": "assistant",
           "model": model, "content": content, "stop_reason": stop_reason(blocks), "stop_sequence": null,
           "usage": {"input_tokens": 12, "output_tokens": 5}})
}
