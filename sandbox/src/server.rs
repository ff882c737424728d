//! The router's WebSocket endpoint (`/ws`, bearer workspace token), the claim
//! of a warm pool sandbox (`POST /v1/claim`, bearer claim secret, body
//! `{"token": "<workspace token>"}`: 204, or 401 for another secret, 409 when
//! claimed already; with `--sync router`, 204 only once the user's files and
//! agent state are restored from the router, 503 when they could not be) and
//! `/healthz`.
//!
//! Owns authentication, frame size limits and parsing of router frames; hands
//! each valid frame to the hub or to `agents`. Several router connections (links,
//! one per router replica) may be open at once: each gets every numbered event.
//! Bad frames get an `error` on their own link and change nothing.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{
        State, WebSocketUpgrade,
        ws::{Message, WebSocket},
    },
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::{SinkExt, StreamExt};
use serde_json::Value;

use crate::{
    agents::{self, AgentSettings, TurnRequest},
    credentials::{ClaimError, Credentials},
    protocol::{RouterFrame, error_code},
    session::{Hub, Link, LinkId},
};

/// Largest router frame acted on; larger ones get a `frame_too_large` error.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Largest WebSocket message accepted at all (above it the connection drops).
pub const TRANSPORT_MAX_BYTES: usize = 4 << 20;

/// What the WebSocket endpoint needs.
#[derive(Clone)]
pub struct AppState {
    /// The hub.
    pub hub: Arc<Hub>,
    /// How turns start CLIs.
    pub settings: Arc<AgentSettings>,
    /// The workspace token the router must present (none yet: unclaimed).
    pub credentials: Arc<Credentials>,
}

/// The sandbox's HTTP routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/ws", get(connect_router))
        .route("/v1/claim", post(claim))
        .with_state(state)
}

async fn connect_router(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !state.credentials.is_token(bearer(&headers)) {
        let body = serde_json::json!({"error": {"code": "unauthorized", "message": "a valid workspace token is required"}});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    // Attached before the handshake's answer: the router gets every event
    // numbered after it saw the connection open (a failed upgrade drops the
    // link's receiver and the hub forgets it).
    let link = state.hub.attach();
    ws.max_message_size(TRANSPORT_MAX_BYTES)
        .max_frame_size(TRANSPORT_MAX_BYTES)
        .on_upgrade(move |socket| serve_router(socket, state, link))
}

/// What `Authorization: Bearer <…>` carries (empty when nothing).
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
}

/// What a claim hands over.
#[derive(serde::Deserialize)]
struct ClaimBody {
    token: String,
}

/// A warm pool sandbox becomes a workspace's: the claim secret it was started
/// with buys it the workspace token, once. The user's agent state is in its
/// state directory by now (the local router put it there; a pod restores it
/// from the router here, with the token just handed over): the session map is
/// read again.
async fn claim(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let error = |status: StatusCode, code: &str, message: String| {
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        (status, Json(body)).into_response()
    };
    let Ok(ClaimBody { token }) = serde_json::from_slice(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is {\"token\": \"…\"}".into(),
        );
    };
    match state.credentials.claim(bearer(&headers), &token) {
        Ok(()) => {
            if let Some(sync) = &state.settings.sync
                && let Err(e) = crate::run::restore_claimed(sync, &state.settings.spec).await
            {
                tracing::error!(error = %e, "a claimed sandbox could not restore its workspace");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "restore_failed",
                    e.to_string(),
                );
            }
            state.hub.sessions().reload();
            tracing::info!("claimed");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e @ ClaimError::Refused) => {
            error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
        }
        Err(e @ ClaimError::Claimed) => error(StatusCode::CONFLICT, "claimed", e.to_string()),
        Err(e @ ClaimError::EmptyToken) => {
            error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
    }
}

/// One router link: frames in go to the hub, the hub's frames for it go out.
async fn serve_router(socket: WebSocket, state: AppState, link: Link) {
    let (mut sink, mut stream) = socket.split();
    let Link {
        id: link,
        frames: mut outbound,
        closed,
    } = link;
    tracing::info!(link, "router connected");
    let mut writer = tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                frame = outbound.recv() => frame,
                () = closed.cancelled() => None,
            };
            let Some(frame) = frame else { break };
            let Ok(text) = serde_json::to_string(&frame) else {
                continue;
            };
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let reader_state = state.clone();
    let mut reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Text(text) => handle_text(&reader_state, link, text.as_str()),
                Message::Binary(_) => reader_state.hub.send_error(
                    link,
                    (None, None),
                    error_code::BAD_FRAME,
                    "frames are JSON text",
                ),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    });
    tokio::select! {
        _ = &mut writer => reader.abort(),
        _ = &mut reader => writer.abort(),
    }
    state.hub.detach(link);
    tracing::info!(link, "router disconnected");
}

/// Validates and carries out one text frame from the router link `link`.
pub fn handle_text(state: &AppState, link: LinkId, text: &str) {
    let hub = &state.hub;
    let refuse = |code: &str, message: String| hub.send_error(link, (None, None), code, message);
    if text.len() > MAX_FRAME_BYTES {
        return refuse(
            error_code::FRAME_TOO_LARGE,
            format!("frames are limited to {MAX_FRAME_BYTES} bytes"),
        );
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => return refuse(error_code::BAD_FRAME, format!("not JSON: {error}")),
    };
    match value["type"].as_str() {
        Some("message" | "interrupt" | "resume") => {}
        Some(other) => {
            // `reply` too: tool calls go over HTTP now.
            let other: String = other.chars().take(64).collect();
            return refuse(
                error_code::UNKNOWN_TYPE,
                format!("unknown frame type {other:?}"),
            );
        }
        None => {
            return refuse(
                error_code::BAD_FRAME,
                "a frame needs a string \"type\"".into(),
            );
        }
    }
    let frame: RouterFrame = match serde_json::from_value(value) {
        Ok(frame) => frame,
        Err(error) => return refuse(error_code::BAD_FRAME, error.to_string()),
    };
    match frame {
        RouterFrame::Message {
            content,
            conversation_id,
            voice,
            voice_max_chars,
            attachments,
            message_id,
            max_turns,
            prompt_id,
            replaces,
        } => {
            if !is_canonical_uuid(&conversation_id) {
                return hub.send_error(
                    link,
                    (None, message_id),
                    error_code::BAD_CONVERSATION_ID,
                    "conversation_id must be a lowercase hyphenated UUID",
                );
            }
            if [&prompt_id, &replaces]
                .into_iter()
                .flatten()
                .any(|id| !is_canonical_uuid(id))
            {
                return hub.send_error(
                    link,
                    (Some(conversation_id), message_id),
                    error_code::BAD_FRAME,
                    "prompt_id and replaces must be lowercase hyphenated UUIDs",
                );
            }
            if content.trim().is_empty() {
                return hub.send_error(
                    link,
                    (Some(conversation_id), message_id),
                    error_code::BAD_FRAME,
                    "content is empty",
                );
            }
            let voice = voice.unwrap_or(false).then(|| {
                voice_max_chars.map_or(crate::speaker::DEFAULT_MAX_CHARS, |max| max as usize)
            });
            let attachments = attachments.unwrap_or_default();
            let content = prompt(content, voice.is_some(), attachments.clone());
            agents::start_turn(
                hub.clone(),
                state.settings.clone(),
                TurnRequest {
                    conversation_id,
                    content,
                    attachments,
                    voice,
                    message_id,
                    prompt_id,
                    replaces,
                    max_turns,
                    link,
                },
            );
        }
        RouterFrame::Interrupt { conversation_id } => {
            agents::interrupt(hub, conversation_id.as_deref())
        }
        RouterFrame::Resume {
            conversation_id,
            after_seq,
            request_id,
        } => {
            if !is_canonical_uuid(&conversation_id) {
                return refuse(
                    error_code::BAD_CONVERSATION_ID,
                    "conversation_id must be a lowercase hyphenated UUID".into(),
                );
            }
            hub.resume(link, &conversation_id, after_seq, request_id);
        }
        RouterFrame::Reply { .. } => refuse(
            error_code::UNKNOWN_TYPE,
            "reply frames are no longer used: tool calls go over HTTP".into(),
        ),
    }
}

fn is_canonical_uuid(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok_and(|id| id.hyphenated().to_string() == text)
}

/// The text the CLI gets: the user's words plus what the router flagged.
fn prompt(content: String, voice: bool, attachments: Vec<String>) -> String {
    let mut prompt = content;
    if !attachments.is_empty() {
        prompt.push_str(&format!(
            "\n\n[The user attached these files, in your working directory: {}. Open them with the Read tool (it reads text, images and PDFs).]",
            attachments.join(", ")
        ));
    }
    if voice {
        // The sandbox speaks the answer itself, sentence by sentence.
        prompt.push_str("\n\n[Your answer will also be read aloud to the user (no need to call the speak tool): prefer short sentences, and keep code and tables to a minimum.]");
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_the_workspace_token_is_accepted() {
        let authorized = |headers: &HeaderMap, token: &str| {
            Credentials::assigned(token).is_token(bearer(headers))
        };
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, "secret"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
        assert!(!authorized(&headers, "secret"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        assert!(authorized(&headers, "secret"));
        assert!(!authorized(&headers, ""));
    }

    #[test]
    fn conversation_ids_must_be_canonical_uuids() {
        assert!(is_canonical_uuid("0b7e6c1e-1111-4000-8000-000000000000"));
        assert!(!is_canonical_uuid("0B7E6C1E-1111-4000-8000-000000000000"));
        assert!(!is_canonical_uuid("../../etc/passwd"));
    }

    #[test]
    fn voice_and_attachments_are_told_to_the_agent() {
        let text = prompt("hi".into(), true, vec!["uploads/a.csv".into()]);
        assert!(text.starts_with("hi"));
        assert!(text.contains("uploads/a.csv") && text.contains("read aloud"));
        assert!(
            text.contains("no need to call the speak tool"),
            "the sandbox speaks, not the agent"
        );
        assert_eq!(prompt("hi".into(), false, vec![]), "hi");
    }
}
