//! The hub: conversations, their numbered events, the router links and the
//! events waiting to be stored.
//!
//! Owns sequence numbers (persisted per conversation in the state directory so
//! they keep rising across restarts), the bounded replay buffer behind `resume`,
//! the router links (one per router replica; every numbered event fans out to
//! each, an unnumbered error goes to the link whose frame caused it) and the
//! outbox queue (the `outbox` module sends it). A turn's end is held back from
//! the links until the outbox stored it. Running turns and CLI processes are
//! `agents`' business; the HTTP requests are `router_api`'s.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde_json::Value;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use crate::{
    agents::Slot,
    outbox::{self, Outbox, Pace, Signals},
    protocol::{ErrorBody, SandboxFrame, ToolCall},
    router_api::{RouterApi, call_error},
    sessions::Sessions,
    translate::EventKind,
};

/// Turns of a conversation kept for `resume`.
pub const REPLAY_TURNS: usize = 4;
/// Conversations kept in memory (with their replay), at most, unless more have a CLI.
pub const CONVERSATIONS_KEPT: usize = 64;
/// Events of a conversation kept for `resume`, at most.
pub const REPLAY_EVENTS: usize = 4096;
/// Frames queued for one link at most; a link that falls further behind is closed
/// (the router reconnects and resumes).
pub const LINK_QUEUE: usize = 4096;
/// Events in one `replay` frame at most.
pub const REPLAY_CHUNK: usize = 256;

/// What a Jarvis tool call comes back with.
pub type CallResult = std::result::Result<Value, ErrorBody>;

/// Names one router link (WebSocket connection) of this sandbox.
pub type LinkId = u64;

/// One conversation's state.
#[derive(Debug, Default)]
pub(crate) struct Conversation {
    /// The last sequence number used.
    pub seq: u64,
    /// The last sequence number shown to the links (below `seq` while a turn's
    /// end waits to be stored).
    shown: u64,
    replay: VecDeque<SandboxFrame>,
    turns_kept: usize,
    /// Numbered frames not shown yet: a turn's end waiting to be stored, and
    /// whatever came after it.
    held: Vec<SandboxFrame>,
    /// The CLI process and running turn, if any.
    pub slot: Slot,
    /// The assistant message of the running turn (the router's `message_id`).
    pub message_id: Option<String>,
    /// The user's message of the running turn (the router's `prompt_id`).
    pub prompt_id: Option<String>,
    /// Logical time of the last use, for LRU eviction.
    pub last_used: u64,
}

impl Conversation {
    /// Keeps a frame for replay: the last `REPLAY_TURNS` whole turns, at most
    /// `REPLAY_EVENTS` frames.
    fn keep(&mut self, frame: SandboxFrame) {
        if let Some(seq) = frame_seq(&frame) {
            self.shown = self.shown.max(seq);
        }
        let is_turn = matches!(frame, SandboxFrame::Turn { .. });
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

/// The hub's side of one link.
#[derive(Debug)]
struct LinkSender {
    frames: mpsc::Sender<SandboxFrame>,
    closed: CancellationToken,
}

impl LinkSender {
    /// Queues a frame; `false` (and the link is closed) when the link is gone or
    /// fell [`LINK_QUEUE`] frames behind.
    fn deliver(&self, id: LinkId, frame: SandboxFrame) -> bool {
        match self.frames.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(link = id, "a router link fell behind; closing it");
                self.closed.cancel();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// A router link's end: the frames to send it, and a token cancelled when the hub
/// closed the link (it fell behind).
#[derive(Debug)]
pub struct Link {
    /// The link's id (for [`Hub::detach`] and the frames it caused).
    pub id: LinkId,
    /// The frames to write to the link, in order.
    pub frames: mpsc::Receiver<SandboxFrame>,
    /// Cancelled when the hub closed the link.
    pub closed: CancellationToken,
}

#[derive(Debug, Default)]
pub(crate) struct HubState {
    links: BTreeMap<LinkId, LinkSender>,
    next_link: LinkId,
    pub conversations: HashMap<String, Conversation>,
    pub clock: u64,
    pub(crate) outbox: Outbox,
}

/// Sends `frame` to every link, dropping those that are gone or behind.
fn fan_out(links: &mut BTreeMap<LinkId, LinkSender>, frame: &SandboxFrame) {
    links.retain(|id, link| link.deliver(*id, frame.clone()));
}

/// Shared by the WebSocket server, the MCP server, the turn tasks and the outbox.
pub struct Hub {
    state: Mutex<HubState>,
    state_dir: PathBuf,
    call_timeout: Duration,
    api: Option<RouterApi>,
    signals: Signals,
    pace: Pace,
    sessions: Arc<Sessions>,
}

impl Hub {
    /// A hub keeping conversation state under `state_dir/jarvis/conversations`,
    /// reaching the router's HTTP API through `api` (storing events, tool calls).
    /// Without `api` nothing is stored and every tool call fails.
    pub fn new(state_dir: PathBuf, call_timeout: Duration, api: Option<RouterApi>) -> Arc<Self> {
        Self::paced(state_dir, call_timeout, api, Pace::default())
    }

    /// [`Hub::new`] with the outbox's timing.
    pub fn paced(
        state_dir: PathBuf,
        call_timeout: Duration,
        api: Option<RouterApi>,
        pace: Pace,
    ) -> Arc<Self> {
        let sessions = Arc::new(Sessions::load(&state_dir));
        Self::build(state_dir, call_timeout, api, pace, sessions)
    }

    /// [`Hub::new`] sharing `sessions` (the gateway forwarder's too).
    pub fn with_sessions(
        state_dir: PathBuf,
        call_timeout: Duration,
        api: Option<RouterApi>,
        sessions: Arc<Sessions>,
    ) -> Arc<Self> {
        Self::build(state_dir, call_timeout, api, Pace::default(), sessions)
    }

    fn build(
        state_dir: PathBuf,
        call_timeout: Duration,
        api: Option<RouterApi>,
        pace: Pace,
        sessions: Arc<Sessions>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(HubState::default()),
            state_dir: state_dir.join("jarvis").join("conversations"),
            call_timeout,
            api,
            signals: Signals::default(),
            pace,
            sessions,
        })
    }

    /// Which CLI session holds each conversation.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    pub(crate) fn pace(&self) -> Pace {
        self.pace
    }

    /// Starts sending queued events to the router (in the background, for the
    /// process's life); does nothing without a router API.
    pub fn start_outbox(self: &Arc<Self>) {
        if let Some(api) = self.api.clone() {
            tokio::spawn(outbox::run(self.clone(), api));
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn signals(&self) -> &Signals {
        &self.signals
    }

    /// A new router link: numbered events from now on, and the frames it causes.
    pub fn attach(&self) -> Link {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let closed = CancellationToken::new();
        let mut state = self.lock();
        state.next_link += 1;
        let id = state.next_link;
        state.links.insert(
            id,
            LinkSender {
                frames: tx,
                closed: closed.clone(),
            },
        );
        Link {
            id,
            frames: rx,
            closed,
        }
    }

    /// Forgets a link (its connection ended).
    pub fn detach(&self, link: LinkId) {
        self.lock().links.remove(&link);
    }

    /// Router links attached now.
    pub fn links(&self) -> usize {
        self.lock().links.len()
    }

    /// Sends a frame that is not numbered (errors a frame caused) to one link.
    pub fn send_to(&self, link: LinkId, frame: SandboxFrame) {
        let mut state = self.lock();
        if let Some(sender) = state.links.get(&link)
            && !sender.deliver(link, frame)
        {
            state.links.remove(&link);
        }
    }

    /// Sends an error that belongs to no turn to the link whose frame caused it;
    /// a refused message names its `conversation_id` and `message_id`.
    pub fn send_error(
        &self,
        link: LinkId,
        (conversation_id, message_id): (Option<String>, Option<String>),
        code: &str,
        message: impl Into<String>,
    ) {
        self.send_to(
            link,
            SandboxFrame::Error {
                seq: None,
                conversation_id,
                code: code.to_string(),
                message: message.into(),
                message_id,
            },
        );
    }

    /// Numbers an event of `conversation_id`, keeps it for replay, persists the
    /// sequence number, queues it for storing and sends it to every link.
    pub fn emit(&self, conversation_id: &str, event: EventKind) {
        self.number(&mut self.lock(), conversation_id, event, false);
    }

    /// Numbers a turn's last event and queues it for storing, but holds it back
    /// from the links (and what follows it) until [`Hub::release`]; its seq.
    pub(crate) fn emit_end(
        &self,
        state: &mut HubState,
        conversation_id: &str,
        event: EventKind,
    ) -> u64 {
        self.number(state, conversation_id, event, true)
    }

    fn number(
        &self,
        state: &mut HubState,
        conversation_id: &str,
        event: EventKind,
        hold: bool,
    ) -> u64 {
        let HubState {
            links,
            conversations,
            outbox,
            ..
        } = state;
        let conversation = conversation_entry(conversations, &self.state_dir, conversation_id);
        conversation.seq += 1;
        let seq = conversation.seq;
        let ends_turn = event.ends_turn();
        let mut frame = event.into_frame(seq, conversation_id.to_string());
        if let SandboxFrame::Turn {
            message_id,
            prompt_id,
            ..
        } = &mut frame
        {
            message_id.clone_from(&conversation.message_id);
            prompt_id.clone_from(&conversation.prompt_id);
        }
        if let Err(error) = persist_seq(&self.state_dir, conversation_id, seq) {
            tracing::warn!(%error, conversation.id = conversation_id, "could not persist seq");
        }
        if self.api.is_some() {
            let message_id = conversation.message_id.as_deref();
            if outbox.push(conversation_id, message_id, frame.clone(), ends_turn) {
                self.signals.wake.notify_one();
                if ends_turn {
                    self.signals.flush.notify_one();
                }
            }
        }
        if hold || !conversation.held.is_empty() {
            conversation.held.push(frame);
        } else {
            conversation.keep(frame.clone());
            fan_out(links, &frame);
        }
        seq
    }

    /// Waits until event `seq` of `conversation_id` was stored (or given up on),
    /// at most [`Pace::store_wait`]; at once without a router API.
    pub(crate) async fn wait_stored(&self, conversation_id: &str, seq: u64) {
        if self.api.is_none() {
            return;
        }
        let mut settled = self.signals.settled.subscribe();
        let deadline = tokio::time::Instant::now() + self.pace.store_wait;
        loop {
            if self.lock().outbox.is_settled(conversation_id, seq) {
                return;
            }
            match tokio::time::timeout_at(deadline, settled.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(
                        conversation.id = conversation_id,
                        seq,
                        "a turn's end is not stored yet; showing it anyway"
                    );
                    return;
                }
            }
        }
    }

    /// Waits (at most `timeout`) until every queued event was stored or given up
    /// on: before the process exits.
    pub async fn drain_outbox(&self, timeout: Duration) {
        if self.api.is_none() {
            return;
        }
        let mut settled = self.signals.settled.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.lock().outbox.queued() > 0 {
            self.signals.flush.notify_one();
            if !matches!(
                tokio::time::timeout_at(deadline, settled.changed()).await,
                Ok(Ok(()))
            ) {
                tracing::error!("events were left unstored at exit");
                return;
            }
        }
    }

    /// Shows the frames held back by [`Hub::emit_end`] to every link, in order.
    pub(crate) fn release(&self, state: &mut HubState, conversation_id: &str) {
        let HubState {
            links,
            conversations,
            ..
        } = state;
        let Some(conversation) = conversations.get_mut(conversation_id) else {
            return;
        };
        for frame in std::mem::take(&mut conversation.held) {
            conversation.keep(frame.clone());
            fan_out(links, &frame);
        }
    }

    /// Turns running now, in every conversation.
    pub fn running_turns(&self) -> usize {
        running_turns(&self.lock())
    }

    /// Answers a `resume` on `link` only: the kept events of `conversation_id`
    /// numbered above `after_seq`, as `replay` frames queued back to back under
    /// the lock (no live event comes between them).
    pub fn resume(
        &self,
        link: LinkId,
        conversation_id: &str,
        after_seq: u64,
        request_id: Option<String>,
    ) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let conversation =
            conversation_entry(&mut state.conversations, &self.state_dir, conversation_id);
        let Some(sender) = state.links.get(&link) else {
            return;
        };
        let last_seq = conversation.shown;
        let first_kept = conversation
            .replay
            .front()
            .and_then(frame_seq)
            .unwrap_or(last_seq + 1);
        let events: Vec<SandboxFrame> = conversation
            .replay
            .iter()
            .filter(|frame| frame_seq(frame).is_some_and(|seq| seq > after_seq))
            .cloned()
            .collect();
        let mut chunks: Vec<Vec<SandboxFrame>> =
            events.chunks(REPLAY_CHUNK).map(<[_]>::to_vec).collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        let count = chunks.len();
        for (index, events) in chunks.into_iter().enumerate() {
            let frame = SandboxFrame::Replay {
                request_id: request_id.clone(),
                conversation_id: conversation_id.to_string(),
                events,
                last_seq,
                first_kept,
                last: index + 1 == count,
            };
            if !sender.deliver(link, frame) {
                state.links.remove(&link);
                return;
            }
        }
    }

    /// Carries out a Jarvis tool call through the router (HTTP, retried until the
    /// call timeout).
    pub async fn call(&self, conversation_id: Option<String>, call: ToolCall) -> CallResult {
        match &self.api {
            Some(api) => api.call(conversation_id, &call, self.call_timeout).await,
            None => Err(ErrorBody {
                code: call_error::ROUTER_UNAVAILABLE.into(),
                message: "this sandbox has no router to call".into(),
            }),
        }
    }

    /// The directory with the conversations' persisted state.
    pub fn conversations_dir(&self) -> &PathBuf {
        &self.state_dir
    }
}

/// Turns running now, in every conversation: a turn whose end is held back
/// until it is stored has ended (the router learns so from the stored end; it
/// would otherwise keep counting a turn that no later report takes back).
pub(crate) fn running_turns(state: &HubState) -> usize {
    state
        .conversations
        .values()
        .filter(|c| c.slot.running() && c.held.is_empty())
        .count()
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
        .or_insert_with(|| {
            let seq = load_seq(dir, conversation_id);
            Conversation {
                seq,
                shown: seq,
                ..Conversation::default()
            }
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

/// The `seq` of a numbered frame.
pub(crate) fn frame_seq(frame: &SandboxFrame) -> Option<u64> {
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

    fn seqs(link: &mut Link) -> Vec<u64> {
        std::iter::from_fn(|| link.frames.try_recv().ok())
            .filter_map(|f| frame_seq(&f))
            .collect()
    }

    fn hub(dir: &tempfile::TempDir) -> Arc<Hub> {
        Hub::new(dir.path().into(), Duration::from_secs(1), None)
    }

    fn replays(link: &mut Link) -> Vec<SandboxFrame> {
        std::iter::from_fn(|| link.frames.try_recv().ok()).collect()
    }

    #[test]
    fn seq_rises_and_survives_a_new_hub() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = hub(&dir);
        let mut link = hub.attach();
        hub.emit("c", EventKind::Turn);
        hub.emit("c", EventKind::Text { delta: "a".into() });
        assert_eq!(seqs(&mut link), vec![1, 2]);
        let hub = self::hub(&dir);
        let mut link = hub.attach();
        hub.emit("c", EventKind::Turn);
        assert_eq!(seqs(&mut link), vec![3]);
    }

    #[test]
    fn old_idle_conversations_are_forgotten_but_keep_their_seq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = hub(&dir);
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
        let mut link = hub.attach();
        hub.emit("c0", EventKind::Turn);
        assert_eq!(seqs(&mut link), vec![2]);
    }

    #[test]
    fn every_link_gets_every_event_and_errors_go_to_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = hub(&dir);
        let (mut a, mut b) = (hub.attach(), hub.attach());
        hub.emit("c", EventKind::Turn);
        hub.send_error(b.id, (None, Some("m".into())), "bad_frame", "no");
        hub.emit("c", EventKind::Text { delta: "a".into() });
        assert_eq!(seqs(&mut a), vec![1, 2]);
        let frames = replays(&mut b);
        assert_eq!(frames.len(), 3);
        assert!(
            matches!(&frames[1], SandboxFrame::Error { seq: None, message_id: Some(m), .. } if m == "m")
        );
        drop(a);
        hub.emit("c", EventKind::Text { delta: "b".into() });
        assert_eq!(hub.links(), 1, "a closed link is removed");
    }

    #[test]
    fn a_link_that_falls_behind_is_closed_and_the_others_go_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = hub(&dir);
        let slow = hub.attach();
        let mut fast = hub.attach();
        for n in 0..=LINK_QUEUE {
            hub.emit("c", EventKind::Text { delta: "x".into() });
            if n % 100 == 0 {
                seqs(&mut fast);
            }
        }
        assert!(slow.closed.is_cancelled());
        assert_eq!(hub.links(), 1);
        hub.emit("c", EventKind::Turn);
        assert_eq!(seqs(&mut fast).last(), Some(&(LINK_QUEUE as u64 + 2)));
    }

    #[test]
    fn resume_replays_after_seq_to_its_link_only_and_keeps_few_turns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = hub(&dir);
        for _ in 0..REPLAY_TURNS + 2 {
            hub.emit("c", EventKind::Turn);
            hub.emit("c", EventKind::Text { delta: "a".into() });
        }
        let (mut link, mut other) = (hub.attach(), hub.attach());
        hub.resume(link.id, "c", 10, Some("r1".into()));
        let frames = replays(&mut link);
        let [
            SandboxFrame::Replay {
                request_id,
                events,
                last_seq,
                first_kept,
                last,
                ..
            },
        ] = frames.as_slice()
        else {
            panic!("one replay frame expected: {frames:?}");
        };
        assert_eq!(request_id.as_deref(), Some("r1"));
        let replayed: Vec<u64> = events.iter().filter_map(frame_seq).collect();
        assert_eq!(replayed, vec![11, 12]);
        assert_eq!((*last_seq, *first_kept, *last), (12, 5, true));
        assert!(
            replays(&mut other).is_empty(),
            "the other link gets no replay"
        );

        hub.resume(link.id, "c", 12, None);
        let frames = replays(&mut link);
        assert!(
            matches!(frames.as_slice(), [SandboxFrame::Replay { events, last: true, .. }] if events.is_empty()),
            "{frames:?}"
        );
        hub.resume(link.id, "new", 0, None);
        let frames = replays(&mut link);
        assert!(
            matches!(
                frames.as_slice(),
                [SandboxFrame::Replay {
                    last_seq: 0,
                    first_kept: 1,
                    last: true,
                    ..
                }]
            ),
            "{frames:?}"
        );
    }

    #[test]
    fn a_long_replay_comes_in_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = hub(&dir);
        hub.emit("c", EventKind::Turn);
        for _ in 0..600 {
            hub.emit("c", EventKind::Text { delta: "a".into() });
        }
        let mut link = hub.attach();
        hub.resume(link.id, "c", 0, None);
        let frames = replays(&mut link);
        let sizes: Vec<(usize, bool)> = frames
            .iter()
            .map(|f| match f {
                SandboxFrame::Replay { events, last, .. } => (events.len(), *last),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, vec![(256, false), (256, false), (89, true)]);
    }

    #[test]
    fn a_held_end_and_what_follows_wait_for_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = hub(&dir);
        let mut link = hub.attach();
        hub.emit("c", EventKind::Turn);
        let end = hub.emit_end(
            &mut hub.lock(),
            "c",
            EventKind::Done {
                usage: Default::default(),
                stopped: false,
            },
        );
        assert_eq!(end, 2);
        hub.emit(
            "c",
            EventKind::Text {
                delta: "late".into(),
            },
        );
        assert_eq!(seqs(&mut link), vec![1]);
        hub.resume(link.id, "c", 0, None);
        let frames = replays(&mut link);
        assert!(
            matches!(
                frames.as_slice(),
                [SandboxFrame::Replay { last_seq: 1, .. }]
            ),
            "held frames are not replayed yet: {frames:?}"
        );
        hub.release(&mut hub.lock(), "c");
        assert_eq!(seqs(&mut link), vec![2, 3]);
    }

    #[tokio::test]
    async fn without_a_router_calls_fail_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let failed = hub(&dir).call(None, ToolCall::ListDocuments {}).await;
        assert_eq!(
            failed.map_err(|e| e.code),
            Err(call_error::ROUTER_UNAVAILABLE.to_string())
        );
    }
}
