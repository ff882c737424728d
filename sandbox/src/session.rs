//! The hub: conversations, their numbered events, the router connection and the
//! Jarvis tool calls waiting for the router.
//!
//! Owns sequence numbers (persisted per conversation in the state directory so
//! they keep rising across restarts), the bounded replay buffer behind `resume`,
//! and routing of frames to whichever router connection is current. Running turns
//! and CLI processes are `agents`' business.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::{
    agents::Slot,
    protocol::{ErrorBody, SandboxFrame, ToolCall},
    translate::EventKind,
};

/// Turns of a conversation kept for `resume`.
pub const REPLAY_TURNS: usize = 4;
/// Conversations kept in memory (with their replay), at most, unless more have a CLI.
pub const CONVERSATIONS_KEPT: usize = 64;
/// Events of a conversation kept for `resume`, at most.
pub const REPLAY_EVENTS: usize = 4096;

/// What a Jarvis tool call comes back with.
pub type CallResult = std::result::Result<Value, ErrorBody>;

/// One conversation's state.
#[derive(Debug, Default)]
pub(crate) struct Conversation {
    /// The last sequence number used.
    pub seq: u64,
    replay: VecDeque<SandboxFrame>,
    turns_kept: usize,
    /// The CLI process and running turn, if any.
    pub slot: Slot,
    /// Logical time of the last use, for LRU eviction.
    pub last_used: u64,
}

impl Conversation {
    /// Keeps a frame for replay: the last `REPLAY_TURNS` whole turns, at most
    /// `REPLAY_EVENTS` frames.
    fn keep(&mut self, frame: SandboxFrame, is_turn: bool) {
        self.replay.push_back(frame);
        if is_turn {
            self.turns_kept += 1;
        }
        let mut dropping_turn = false;
        while let Some(front) = self.replay.front() {
            let front_is_turn = matches!(front, SandboxFrame::Turn { .. });
            let over_turns = self.turns_kept > REPLAY_TURNS;
            let rest_of_dropped = dropping_turn && !front_is_turn;
            if !(self.replay.len() > REPLAY_EVENTS || over_turns || rest_of_dropped) {
                break;
            }
            if front_is_turn {
                self.turns_kept -= 1;
                dropping_turn = over_turns;
            }
            self.replay.pop_front();
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct HubState {
    router: Option<mpsc::UnboundedSender<SandboxFrame>>,
    pub conversations: HashMap<String, Conversation>,
    pub clock: u64,
}

struct PendingCall {
    frame: SandboxFrame,
    reply: oneshot::Sender<CallResult>,
}

/// Shared by the WebSocket server, the MCP server and the turn tasks.
pub struct Hub {
    state: Mutex<HubState>,
    calls: Mutex<HashMap<String, PendingCall>>,
    state_dir: PathBuf,
    call_timeout: Duration,
}

impl Hub {
    /// A hub keeping conversation state under `state_dir/jarvis/conversations`.
    pub fn new(state_dir: PathBuf, call_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(HubState::default()),
            calls: Mutex::new(HashMap::new()),
            state_dir: state_dir.join("jarvis").join("conversations"),
            call_timeout,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_calls(&self) -> MutexGuard<'_, HashMap<String, PendingCall>> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes a new router connection the current one; the previous one's channel
    /// closes. Calls still waiting for a reply are sent again on the new one.
    pub fn attach(&self) -> mpsc::UnboundedReceiver<SandboxFrame> {
        let (tx, rx) = mpsc::unbounded_channel();
        for pending in self.lock_calls().values() {
            let _ = tx.send(pending.frame.clone());
        }
        self.lock().router = Some(tx);
        rx
    }

    /// Sends a frame that is not numbered (bad-frame errors, calls) to the router.
    pub fn send(&self, frame: SandboxFrame) {
        if let Some(router) = &self.lock().router {
            let _ = router.send(frame);
        }
    }

    /// Sends an error that belongs to no turn.
    pub fn send_error(
        &self,
        conversation_id: Option<String>,
        code: &str,
        message: impl Into<String>,
    ) {
        self.send(SandboxFrame::Error {
            seq: None,
            conversation_id,
            code: code.to_string(),
            message: message.into(),
            message_id: None,
        });
    }

    /// Numbers an event of `conversation_id`, keeps it for replay, persists the
    /// sequence number and sends it to the router.
    pub fn emit(&self, conversation_id: &str, event: EventKind) {
        self.emit_locked(&mut self.lock(), conversation_id, event);
    }

    /// [`Hub::emit`] under a lock the caller already holds.
    pub(crate) fn emit_locked(
        &self,
        state: &mut HubState,
        conversation_id: &str,
        event: EventKind,
    ) {
        let conversation =
            conversation_entry(&mut state.conversations, &self.state_dir, conversation_id);
        conversation.seq += 1;
        let is_turn = matches!(event, EventKind::Turn);
        let frame = event.into_frame(conversation.seq, conversation_id.to_string());
        if let Err(error) = persist_seq(&self.state_dir, conversation_id, conversation.seq) {
            tracing::warn!(%error, conversation.id = conversation_id, "could not persist seq");
        }
        conversation.keep(frame.clone(), is_turn);
        if let Some(router) = &state.router {
            let _ = router.send(frame);
        }
    }

    /// Sends the kept events of `conversation_id` numbered above `after_seq`.
    pub fn resume(&self, conversation_id: &str, after_seq: u64) {
        let mut state = self.lock();
        let state = &mut *state;
        let conversation =
            conversation_entry(&mut state.conversations, &self.state_dir, conversation_id);
        let Some(router) = &state.router else { return };
        for frame in &conversation.replay {
            if frame_seq(frame).is_some_and(|seq| seq > after_seq) {
                let _ = router.send(frame.clone());
            }
        }
    }

    /// Asks the router to carry out a Jarvis tool call and waits for its reply.
    pub async fn call(&self, conversation_id: Option<String>, call: ToolCall) -> CallResult {
        let call_id = uuid::Uuid::new_v4().to_string();
        let frame = SandboxFrame::Call {
            call_id: call_id.clone(),
            conversation_id,
            call,
        };
        let (tx, rx) = oneshot::channel();
        self.lock_calls().insert(
            call_id.clone(),
            PendingCall {
                frame: frame.clone(),
                reply: tx,
            },
        );
        self.send(frame);
        let outcome = tokio::time::timeout(self.call_timeout, rx).await;
        self.lock_calls().remove(&call_id);
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(ErrorBody {
                code: "router_unavailable".into(),
                message: "the router did not answer the call in time".into(),
            }),
        }
    }

    /// Hands the router's reply to the waiting call; `false` if none waits for it.
    pub fn reply(&self, call_id: &str, result: CallResult) -> bool {
        match self.lock_calls().remove(call_id) {
            Some(pending) => pending.reply.send(result).is_ok(),
            None => false,
        }
    }

    /// The directory with the conversations' persisted state.
    pub fn conversations_dir(&self) -> &PathBuf {
        &self.state_dir
    }
}

/// The conversation's entry, loading its persisted sequence number on first use.
/// Past `CONVERSATIONS_KEPT`, the least recently used conversations without a CLI
/// are forgotten first (their `seq` is on disk; only their replay goes).
pub(crate) fn conversation_entry<'a>(
    conversations: &'a mut HashMap<String, Conversation>,
    dir: &std::path::Path,
    conversation_id: &str,
) -> &'a mut Conversation {
    if !conversations.contains_key(conversation_id) {
        while conversations.len() >= CONVERSATIONS_KEPT {
            let oldest = conversations
                .iter()
                .filter(|(_, c)| !c.slot.alive())
                .min_by_key(|(_, c)| c.last_used)
                .map(|(id, _)| id.clone());
            let Some(oldest) = oldest else { break };
            conversations.remove(&oldest);
        }
    }
    conversations
        .entry(conversation_id.to_string())
        .or_insert_with(|| Conversation {
            seq: load_seq(dir, conversation_id),
            ..Conversation::default()
        })
}

fn state_file(dir: &std::path::Path, conversation_id: &str) -> PathBuf {
    dir.join(format!("{conversation_id}.json"))
}

fn load_seq(dir: &std::path::Path, conversation_id: &str) -> u64 {
    std::fs::read(state_file(dir, conversation_id))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|value| value["last_seq"].as_u64())
        .unwrap_or(0)
}

fn persist_seq(dir: &std::path::Path, conversation_id: &str, seq: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = state_file(dir, conversation_id);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::json!({ "last_seq": seq }).to_string())?;
    std::fs::rename(tmp, path)
}

fn frame_seq(frame: &SandboxFrame) -> Option<u64> {
    match frame {
        SandboxFrame::Turn { seq, .. }
        | SandboxFrame::Text { seq, .. }
        | SandboxFrame::ToolUse { seq, .. }
        | SandboxFrame::ToolResult { seq, .. }
        | SandboxFrame::Document { seq, .. }
        | SandboxFrame::Voice { seq, .. }
        | SandboxFrame::Done { seq, .. } => Some(*seq),
        SandboxFrame::Error { seq, .. } => *seq,
        SandboxFrame::Call { .. } | SandboxFrame::Replay { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(rx: &mut mpsc::UnboundedReceiver<SandboxFrame>) -> Vec<u64> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|f| frame_seq(&f))
            .collect()
    }

    #[test]
    fn seq_rises_and_survives_a_new_hub() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = Hub::new(dir.path().into(), Duration::from_secs(1));
        let mut rx = hub.attach();
        hub.emit("c", EventKind::Turn);
        hub.emit("c", EventKind::Text { delta: "a".into() });
        assert_eq!(texts(&mut rx), vec![1, 2]);
        let hub = Hub::new(dir.path().into(), Duration::from_secs(1));
        let mut rx = hub.attach();
        hub.emit("c", EventKind::Turn);
        assert_eq!(texts(&mut rx), vec![3]);
    }

    #[test]
    fn old_idle_conversations_are_forgotten_but_keep_their_seq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = Hub::new(dir.path().into(), Duration::from_secs(1));
        for n in 0..CONVERSATIONS_KEPT + 10 {
            hub.emit(&format!("c{n}"), EventKind::Turn);
            hub.lock()
                .conversations
                .get_mut(&format!("c{n}"))
                .expect("kept")
                .last_used = n as u64;
        }
        assert_eq!(hub.lock().conversations.len(), CONVERSATIONS_KEPT);
        assert!(!hub.lock().conversations.contains_key("c0"));
        let mut rx = hub.attach();
        hub.emit("c0", EventKind::Turn);
        assert_eq!(texts(&mut rx), vec![2]);
    }

    #[test]
    fn resume_replays_after_seq_and_keeps_few_turns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = Hub::new(dir.path().into(), Duration::from_secs(1));
        for _ in 0..REPLAY_TURNS + 2 {
            hub.emit("c", EventKind::Turn);
            hub.emit("c", EventKind::Text { delta: "a".into() });
        }
        let mut rx = hub.attach();
        hub.resume("c", 10);
        assert_eq!(texts(&mut rx), vec![11, 12]);
        hub.resume("c", 0);
        let kept = texts(&mut rx);
        assert_eq!(kept.len(), REPLAY_TURNS * 2);
        assert_eq!(kept.first(), Some(&5));
    }

    #[tokio::test]
    async fn calls_wait_for_their_reply_and_time_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = Hub::new(dir.path().into(), Duration::from_millis(200));
        let mut rx = hub.attach();
        let waiting = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.call(None, ToolCall::ListDocuments {}).await })
        };
        let Some(SandboxFrame::Call { call_id, .. }) = rx.recv().await else {
            panic!("expected a call");
        };
        assert!(hub.reply(&call_id, Ok(serde_json::json!([]))));
        assert_eq!(waiting.await.expect("join"), Ok(serde_json::json!([])));
        assert!(!hub.reply("nobody", Ok(Value::Null)));
        let timed_out = hub.call(None, ToolCall::ListDocuments {}).await;
        assert_eq!(
            timed_out.map_err(|e| e.code),
            Err("router_unavailable".to_string())
        );
    }
}
