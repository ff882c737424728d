//! `GET /ws`: the browser's WebSocket. Authenticates (access token from
//! `Authorization: Bearer` or the `bearer.<token>` subprotocol, answered with
//! `jarvis`), checks Origin, then attaches the connection to the user's hub
//! (`crate::proxy`), wakes the workspace (`status: waking → ready`) and relays.
//!
//! The connection keeps reading (pings, interrupts, a close) whatever its
//! workspace is doing: its frames are carried out in order by a task of their own,
//! so a message that waits for a slow wake never stalls the socket. That task
//! finishes what was sent when the browser goes: a turn belongs to the workspace,
//! not to the tab.
//!
//! Frames over [`MAX_FRAME_BYTES`] get an `error` and change nothing; so do
//! malformed ones, and frames past [`QUEUED_FRAMES`] not yet carried out. A ping every [`PING_EVERY`] keeps the connection honest: a
//! browser silent for two pings is closed. A browser the hub dropped for being too
//! slow is closed with 1013 (try again) and may resume.
//!
//! A user may hold `JARVIS_MAX_SOCKETS_PER_USER` sockets on one router; more are
//! refused with 429 before the upgrade. A socket whose account is disabled while
//! it is open gets an `account_disabled` error and is closed with 1008
//! ([`super::sockets`]).

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{
        State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket},
    },
    http::{HeaderMap, header},
    response::Response,
    routing::get,
};
use futures::{SinkExt, StreamExt};
use sandbox::protocol::RouterFrame;
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use super::{AppState, Error, extractor, origin, sockets::SocketSlot};
use crate::proxy::{Browser, CANNOT_REPLACE, Hub, Status, fanout::Outgoing, frame_text};

/// Largest frame a browser may send; larger ones get `frame_too_large`.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Frames past this size close the connection outright (memory bound).
const HARD_FRAME_BYTES: usize = 4 * MAX_FRAME_BYTES;
/// Read buffer of each browser connection (grows for larger frames).
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Frames of one connection received and not yet carried out, at most; past it
/// a frame gets `too_many_frames` and changes nothing.
pub const QUEUED_FRAMES: usize = 32;
/// How often the router pings the browser.
pub const PING_EVERY: Duration = Duration::from_secs(20);

/// The browser WebSocket route.
pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(open_socket))
}

/// A frame from the browser (DESIGN.md).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Message {
        content: String,
        #[serde(default)]
        conversation_id: Option<String>,
        #[serde(default)]
        voice: Option<bool>,
        #[serde(default)]
        attachments: Option<Vec<String>>,
        /// A user message of the conversation this one takes the place of
        /// (regenerate, edit and resend).
        #[serde(default)]
        replaces: Option<String>,
    },
    Interrupt {
        #[serde(default)]
        conversation_id: Option<String>,
    },
    Resume {
        conversation_id: String,
        after_seq: u64,
    },
    /// The user's answer to an `egress_request` (`crate::egress::ask`).
    EgressDecision { id: String, decision: String },
}

async fn open_socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Error> {
    if !origin::allowed(&state.config, &headers) {
        return Err(Error::Forbidden {
            code: "forbidden_origin",
            message: "this origin may not open a Jarvis connection".into(),
        });
    }
    let token = header_token(&headers)
        .or_else(|| subprotocol_token(&headers))
        .ok_or_else(|| {
            Error::unauthorized("send the access token as `Authorization: Bearer` or the `bearer.<token>` subprotocol")
        })?;
    let user = extractor::authenticate(&state, &token).await?;
    let cap = state.config.max_sockets_per_user;
    let slot = state
        .sockets
        .open(user, cap)
        .ok_or_else(|| Error::TooManyRequests {
            message: format!(
                "you have {cap} connections open, the most one account may have; close a tab and try again"
            ),
            retry_after: None,
        })?;
    Ok(upgrade
        .protocols(["jarvis"])
        // Browsers send small frames: a small read buffer keeps an idle
        // connection cheap (tungstenite's default is 128 KiB each).
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(HARD_FRAME_BYTES)
        .max_frame_size(HARD_FRAME_BYTES)
        .on_upgrade(move |socket| {
            run(state, user, socket, slot).instrument(tracing::info_span!("ws", user.id = %user))
        }))
}

fn header_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_string())
}

fn subprotocol_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("bearer.").map(str::to_string))
        .filter(|t| !t.is_empty())
}

/// `{"type":"error","code","message"}` as text.
fn error_frame(code: &str, message: &str) -> Arc<str> {
    json!({"type": "error", "code": code, "message": message})
        .to_string()
        .into()
}

/// An `error` frame about a message sent in `conversation`.
fn error_in(code: &str, message: &str, conversation: Uuid) -> Arc<str> {
    json!({"type": "error", "code": code, "message": message, "conversation_id": conversation})
        .to_string()
        .into()
}

async fn run(state: AppState, user: Uuid, socket: WebSocket, slot: SocketSlot) {
    let registry = state.workspaces.clone();
    let hub = registry.hub(user);
    let browser = hub.attach();
    let id = browser.id;
    tracing::info!(connections = hub.connections(), "browser connected");
    let (sink, mut stream) = socket.split();
    let alive = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let cut_off = slot.cut_off.clone();
    let mut writer = tokio::spawn(write_loop(sink, browser, alive.clone(), cut_off.clone()));

    // Wake now, not at the first message: the browser shows `waking → ready`.
    {
        let (registry, hub) = (registry.clone(), hub.clone());
        tokio::spawn(async move {
            if let Err(error) = registry.ready(&hub).await {
                hub.send_to(id, error_frame("wake_failed", &wake_message(&error)));
            }
        });
    }

    // The egress proxy's open questions, for a tab that connects while one waits.
    {
        let (asker, hub) = (state.egress_asker.clone(), hub.clone());
        tokio::spawn(async move {
            for frame in asker.pending(user).await {
                hub.send_to(id, frame);
            }
        });
    }

    // Frames are carried out in order by their own task: the read loop never waits.
    // Boxed: the channel allocates its slots up front, a pointer each is cheap.
    let (frames, queued) = tokio::sync::mpsc::channel(QUEUED_FRAMES);
    tokio::spawn(carry_out(state.clone(), hub.clone(), id, queued).in_current_span());
    loop {
        let next = tokio::select! {
            biased;
            () = cut_off.cancelled() => break,
            next = stream.next() => next,
        };
        let Some(Ok(message)) = next else { break };
        let received = std::time::Instant::now();
        *alive.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                hub.send_to(id, error_frame("bad_frame", "frames are JSON text"));
                continue;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if text.len() > MAX_FRAME_BYTES {
            hub.send_to(
                id,
                error_frame("frame_too_large", "frames are at most 1 MiB"),
            );
            continue;
        }
        match serde_json::from_str::<ClientFrame>(&text) {
            // Answered at once, not behind a message waiting for a wake: a
            // connection of the agent waits for it.
            Ok(ClientFrame::EgressDecision {
                id: request,
                decision,
            }) => {
                let (asker, hub) = (state.egress_asker.clone(), hub.clone());
                tokio::spawn(
                    async move {
                        if let Some(error) =
                            egress_decision(&asker, user, &request, &decision).await
                        {
                            hub.send_to(id, error);
                        }
                    }
                    .in_current_span(),
                );
            }
            Ok(frame) => {
                if frames.try_send(Box::new((frame, received))).is_err() {
                    hub.send_to(
                        id,
                        error_frame(
                            "too_many_frames",
                            "too many frames wait to be carried out; this one was dropped",
                        ),
                    );
                }
            }
            Err(e) => hub.send_to(id, error_frame("bad_frame", &e.to_string())),
        }
        if writer.is_finished() {
            break;
        }
    }
    // The frames already received are still carried out.
    drop(frames);
    hub.detach(id);
    if cut_off.is_cancelled() {
        // Let the writer tell the browser why before the socket goes.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut writer).await;
    }
    writer.abort();
    drop(slot);
    tracing::info!("browser disconnected");
}

/// Carries out an `egress_decision`; the `error` frame to send when it changed nothing.
async fn egress_decision(
    asker: &crate::egress::ask::Asker,
    user: Uuid,
    request: &str,
    decision: &str,
) -> Option<Arc<str>> {
    use crate::egress::ask::{Answer, DecideError};
    let Ok(request) = request.parse::<Uuid>() else {
        return Some(error_frame(
            "egress_unknown",
            "no open network request has this id",
        ));
    };
    let answer = match decision {
        "once" => Answer::Once,
        "always" => Answer::Always,
        "deny" => Answer::Deny,
        _ => {
            return Some(error_frame(
                "bad_frame",
                "`decision` is `once`, `always` or `deny`",
            ));
        }
    };
    match asker.decide(user, request, answer).await {
        Ok(()) => None,
        Err(DecideError::Unknown) => Some(error_frame(
            "egress_unknown",
            &DecideError::Unknown.to_string(),
        )),
        Err(DecideError::Db(error)) => {
            tracing::error!(%error, "storing an egress decision");
            Some(error_frame(
                "unavailable",
                "your answer could not be stored; try again",
            ))
        }
    }
}

fn wake_message(error: &crate::workspaces::Error) -> String {
    match error {
        crate::workspaces::Error::Timeout => {
            "your workspace did not start in time; try again".into()
        }
        crate::workspaces::Error::AtCapacity => {
            "Jarvis is at capacity right now; try again in a minute".into()
        }
        _ => "your workspace could not be started; try again".into(),
    }
}

/// Carries out one connection's frames in order, to the last one received, also
/// after the browser went. Each came with when it was received.
async fn carry_out(
    state: AppState,
    hub: Arc<Hub>,
    id: u64,
    mut frames: tokio::sync::mpsc::Receiver<Box<(ClientFrame, std::time::Instant)>>,
) {
    while let Some(item) = frames.recv().await {
        let (frame, received) = *item;
        crate::metrics::frame_queue_waited(received.elapsed());
        handle(&state, &hub, id, frame, received)
            .instrument(tracing::debug_span!("frame"))
            .await;
    }
}

async fn handle(
    state: &AppState,
    hub: &Arc<Hub>,
    id: u64,
    frame: ClientFrame,
    received: std::time::Instant,
) {
    let registry = &state.workspaces;
    match frame {
        ClientFrame::Message {
            content,
            conversation_id,
            voice,
            attachments,
            replaces,
        } => {
            // From here to the sandbox the workspace is in use.
            let _starting = hub.starting_turn();
            let conversation = match conversation_id {
                None => Uuid::new_v4(),
                Some(c) => match c.parse::<Uuid>() {
                    Ok(c) => c,
                    Err(_) => {
                        hub.send_to(
                            id,
                            error_frame("bad_conversation_id", "conversation_id is not a UUID"),
                        );
                        return;
                    }
                },
            };
            let replaces = match replaces.map(|r| r.parse::<Uuid>()).transpose() {
                Ok(replaces) => replaces,
                Err(_) => {
                    let message = "replaces is not a message id";
                    hub.send_to(id, error_in(CANNOT_REPLACE, message, conversation));
                    return;
                }
            };
            let attachments = match attached(state, hub.user, attachments).await {
                Ok(a) => a,
                Err((code, message)) => {
                    hub.send_to(id, error_frame(code, &message));
                    return;
                }
            };
            // A wake is the workspace's time, not the router's: not counted.
            let waking = std::time::Instant::now();
            let link = match registry.ready(hub).await {
                Ok(link) => link,
                Err(error) => {
                    hub.send_to(id, error_frame("wake_failed", &wake_message(&error)));
                    return;
                }
            };
            let waking = waking.elapsed();
            let turn = match hub
                .begin_turn(
                    id,
                    (content, conversation.to_string(), replaces),
                    (voice, attachments),
                )
                .await
            {
                Ok(turn) => turn,
                Err(body) => {
                    hub.send_to(id, error_in(&body.code, &body.message, conversation));
                    return;
                }
            };
            if link.send(turn.frame).await {
                let router_time = received.elapsed().saturating_sub(waking);
                crate::metrics::turn_leg("to_sandbox", router_time);
            } else {
                hub.abandon_turn(&turn.message_id);
                hub.send_to(
                    id,
                    error_frame(
                        "agent_crashed",
                        "the agent's sandbox stopped; send your message again",
                    ),
                );
            }
        }
        ClientFrame::Interrupt { conversation_id } => {
            // Never wakes a workspace: with no link here nothing of this tab's
            // runs (every tab's connection joins the sandbox when it opens).
            let link = hub.link.lock().await.clone().filter(|l| l.is_alive());
            if let Some(link) = link {
                link.send(frame_text(&RouterFrame::Interrupt { conversation_id }))
                    .await;
            }
        }
        ClientFrame::Resume {
            conversation_id,
            after_seq,
        } => {
            let Ok(conversation) = conversation_id.parse::<Uuid>() else {
                hub.send_to(
                    id,
                    error_frame("bad_conversation_id", "conversation_id is not a UUID"),
                );
                return;
            };
            let conversation_id = conversation.to_string();
            match registry.ready(hub).await {
                Ok(link) => {
                    let Some(frame) = hub.start_resume(id, &conversation_id, after_seq) else {
                        return;
                    };
                    if !link.send(frame).await {
                        hub.cancel_resume(id, &conversation_id);
                    }
                }
                Err(error) => hub.send_to(id, error_frame("wake_failed", &wake_message(&error))),
            }
        }
        // Answered by the read loop as it arrives.
        ClientFrame::EgressDecision { .. } => {}
    }
}

/// The uploads a message names (file ids), as the user's own files; an id that
/// is not one of their uploads refuses the message (`attachment_not_found`).
async fn attached(
    state: &AppState,
    user: Uuid,
    ids: Option<Vec<String>>,
) -> Result<Vec<crate::uploads::Attachment>, (&'static str, String)> {
    let ids = ids.unwrap_or_default();
    if ids.len() > crate::uploads::MAX_FILES_PER_REQUEST {
        return Err((
            "bad_frame",
            format!(
                "a message may name at most {} files",
                crate::uploads::MAX_FILES_PER_REQUEST
            ),
        ));
    }
    crate::uploads::attachments(&state.db, user, &ids)
        .await
        .map_err(|e| match e {
            crate::uploads::AttachmentError::NotFound(_) => ("attachment_not_found", e.to_string()),
            crate::uploads::AttachmentError::Db(error) => {
                tracing::error!(user.id = %user, %error, "reading attachments failed");
                (
                    "internal",
                    "your message could not be sent; try again".to_string(),
                )
            }
        })
}

async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut browser: Browser,
    alive: Arc<std::sync::Mutex<tokio::time::Instant>>,
    cut_off: tokio_util::sync::CancellationToken,
) {
    let status_text = |s: Status| match s {
        Status::Waking => Some(json!({"type": "status", "state": "waking"}).to_string()),
        Status::Ready => Some(json!({"type": "status", "state": "ready"}).to_string()),
        Status::Asleep | Status::Sleeping => None,
    };
    // A connection always shows `waking` before `ready` unless the workspace is
    // already up; later changes (a crash and a re-wake) are shown as they come.
    let mut shown = match *browser.status.borrow_and_update() {
        Status::Ready => Status::Ready,
        _ => Status::Waking,
    };
    if let Some(text) = status_text(shown)
        && sink.send(Message::text(text)).await.is_err()
    {
        return;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            biased;
            () = cut_off.cancelled() => {
                let refusal = crate::limits::Refusal::Disabled.to_string();
                let _ = sink.send(Message::text(error_frame("account_disabled", &refusal).as_ref())).await;
                let _ = sink.send(Message::Close(Some(CloseFrame {
                    code: 1008,
                    reason: "account disabled".into(),
                }))).await;
                return;
            }
            () = browser.dropped.cancelled() => {
                let _ = sink.send(Message::Close(Some(CloseFrame {
                    code: 1013,
                    reason: "reconnect and resume".into(),
                }))).await;
                return;
            }
            changed = browser.status.changed() => {
                if changed.is_err() { return; }
                let now = *browser.status.borrow_and_update();
                if now == shown { continue; }
                shown = now;
                if let Some(text) = status_text(now)
                    && sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            event = browser.rx.recv() => match event {
                Some((Outgoing::One(text), queued)) => {
                    let sent = sink.send(Message::text(text.as_ref())).await;
                    crate::metrics::browser_queue_waited(queued.elapsed());
                    if sent.is_err() { return }
                }
                // Written out together: one flush for the lot.
                Some((Outgoing::Many(texts), queued)) => {
                    for text in texts {
                        if sink.feed(Message::text(text.as_ref())).await.is_err() { return }
                    }
                    if sink.flush().await.is_err() { return }
                    crate::metrics::browser_queue_waited(queued.elapsed());
                }
                None => return,
            },
            _ = ping.tick() => {
                let last = *alive.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() > 2 * PING_EVERY + Duration::from_secs(5) {
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() { return; }
            }
        }
    }
}
