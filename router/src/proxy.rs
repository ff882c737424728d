//! The relay between one user's browser connections and their sandbox: a [`Hub`]
//! per user. Every browser tab of the user shares the one sandbox link; every
//! sandbox event goes to every tab (a replay after `resume` only to the tab that
//! asked). Each tab has a bounded queue: a tab that cannot keep up is dropped (it
//! can reconnect and resume) rather than buffered without bound.
//!
//! Waking and sleeping are the registry's decisions (`workspaces::registry`); the
//! browser socket is `http::ws`'s. The hooks to the tool, transcript and sync
//! modules are the small functions in `hooks`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use sandbox::protocol::{RouterFrame, SandboxFrame, error_code};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod hooks;
/// The router's WebSocket to a sandbox.
pub mod link;

use hooks::Recorder;
pub use hooks::{Context, sync_after_turn};
pub use link::Link;

/// Events queued for one browser at most; past that the browser is dropped.
pub const BROWSER_QUEUE: usize = 512;

/// Where a user's workspace is, as the browser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing runs.
    Asleep,
    /// The sandbox is starting.
    Waking,
    /// The sandbox is connected.
    Ready,
    /// The sandbox is being stopped and its files stored.
    Sleeping,
}

/// One browser connection's side of the hub.
pub struct Browser {
    /// Its id within the hub.
    pub id: u64,
    /// Events (JSON text) to send to it.
    pub rx: mpsc::Receiver<Arc<str>>,
    /// Cancelled when the hub drops it (too slow).
    pub dropped: CancellationToken,
    /// The workspace's status, for `status` frames.
    pub status: watch::Receiver<Status>,
}

struct Slot {
    tx: mpsc::Sender<Arc<str>>,
    dropped: CancellationToken,
}

#[derive(Default)]
struct Shared {
    next_id: u64,
    browsers: HashMap<u64, Slot>,
    /// Conversations with a running turn, with their transcript recorders.
    running: HashMap<String, Option<Recorder>>,
    /// Highest `seq` relayed live per conversation: anything at or below is a replay.
    last_seq: HashMap<String, u64>,
    /// Browsers that asked to resume each conversation.
    resumers: HashMap<String, HashSet<u64>>,
}

/// Everything about one user's workspace the router holds in memory.
pub struct Hub {
    /// Whose workspace.
    pub user: Uuid,
    /// The router's services the hooks use.
    pub(crate) ctx: Arc<Context>,
    /// The sandbox link; its lock also serialises wake and sleep of this user.
    pub(crate) link: tokio::sync::Mutex<Option<Link>>,
    pub(crate) status: watch::Sender<Status>,
    /// Held while the workspace's files are stored: one sync at a time per user.
    pub(crate) sync: tokio::sync::Mutex<()>,
    shared: Mutex<Shared>,
    last_activity: Mutex<Instant>,
    /// Turns the sandbox said it runs, in its last report over HTTP
    /// (`POST /v1/workspace/events`): it counts every turn of the workspace,
    /// whichever router relays it and with no browser open.
    sandbox_turns: std::sync::atomic::AtomicUsize,
}

impl Hub {
    /// A hub for `user`, asleep.
    pub fn new(user: Uuid, ctx: Arc<Context>) -> Self {
        Self {
            user,
            ctx,
            link: tokio::sync::Mutex::new(None),
            status: watch::channel(Status::Asleep).0,
            sync: tokio::sync::Mutex::new(()),
            shared: Mutex::default(),
            last_activity: Mutex::new(Instant::now()),
            sandbox_turns: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes activity now (idle sleep counts from the last one).
    pub fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.ctx.backend.touch(self.user);
    }

    /// When the workspace was last active.
    pub fn last_activity(&self) -> Instant {
        *self.last_activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Browser connections attached now.
    pub fn connections(&self) -> usize {
        self.shared().browsers.len()
    }

    /// Whether any turn is running (relayed here, or reported by the sandbox).
    pub fn turn_running(&self) -> bool {
        !self.shared().running.is_empty()
            || self
                .sandbox_turns
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
    }

    /// Notes what the sandbox reported over HTTP: it runs `running_turns` turns
    /// now. Counts as activity (the idle clock restarts).
    pub fn sandbox_reported(&self, running_turns: usize) {
        self.sandbox_turns
            .store(running_turns, std::sync::atomic::Ordering::Relaxed);
        self.touch();
    }

    /// How many turns are running.
    pub fn running_turns(&self) -> usize {
        self.shared().running.len()
    }

    /// The current status.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Attaches a browser connection.
    pub fn attach(&self) -> Browser {
        let (tx, rx) = mpsc::channel(BROWSER_QUEUE);
        let dropped = CancellationToken::new();
        let id = {
            let mut shared = self.shared();
            shared.next_id += 1;
            let id = shared.next_id;
            shared.browsers.insert(
                id,
                Slot {
                    tx,
                    dropped: dropped.clone(),
                },
            );
            id
        };
        self.touch();
        Browser {
            id,
            rx,
            dropped,
            status: self.status.subscribe(),
        }
    }

    /// Detaches a browser connection.
    pub fn detach(&self, id: u64) {
        let mut shared = self.shared();
        shared.browsers.remove(&id);
        for set in shared.resumers.values_mut() {
            set.remove(&id);
        }
        drop(shared);
        self.touch();
    }

    /// Starts the transcript of a turn the browser asked for and marks it running.
    /// Returns the frame to send to the sandbox.
    pub async fn begin_turn(
        &self,
        content: String,
        conversation_id: String,
        voice: Option<bool>,
        attachments: Vec<crate::uploads::Attachment>,
    ) -> Result<String, sandbox::protocol::ErrorBody> {
        let recorder = hooks::start_turn(
            &self.ctx,
            self.user,
            &conversation_id,
            &content,
            &attachments,
        )
        .await?;
        // The sandbox gets the files' workspace paths, which its agent can open.
        let attachments =
            (!attachments.is_empty()).then(|| attachments.into_iter().map(|a| a.path).collect());
        self.shared()
            .running
            .insert(conversation_id.clone(), recorder);
        self.touch();
        let voice_max_chars = (voice == Some(true))
            .then(|| u32::try_from(self.ctx.voice.settings().max_chars).unwrap_or(u32::MAX));
        Ok(frame_text(&RouterFrame::Message {
            content,
            conversation_id,
            voice,
            voice_max_chars,
            attachments,
            message_id: None,
            max_turns: None,
        }))
    }

    /// Forgets a turn that could not be sent.
    pub fn abandon_turn(&self, conversation_id: &str) {
        self.shared().running.remove(conversation_id);
    }

    /// Forgets which `seq` each conversation reached: a new sandbox link numbers
    /// its events itself (what a browser already has it drops by `seq`).
    pub(crate) fn reset_seqs(&self) {
        self.shared().last_seq.clear();
    }

    /// Notes that browser `id` resumes `conversation_id`: replayed events go to it.
    pub fn want_replay(&self, id: u64, conversation_id: &str) {
        self.shared()
            .resumers
            .entry(conversation_id.to_string())
            .or_default()
            .insert(id);
    }

    /// Sends `text` to one browser (dropping it if it cannot keep up).
    pub fn send_to(&self, id: u64, text: Arc<str>) {
        let mut shared = self.shared();
        deliver(&mut shared, Some(&[id].into_iter().collect()), &text);
    }

    /// Handles one frame from the sandbox.
    pub(crate) fn on_sandbox_frame(self: &Arc<Self>, frame: SandboxFrame, link: &Link) {
        if let SandboxFrame::Call {
            call_id,
            conversation_id,
            call,
        } = frame
        {
            let (hub, link) = (self.clone(), link.clone());
            tokio::spawn(async move {
                let (result, error) =
                    match hooks::answer_call(&hub.ctx, hub.user, conversation_id, call).await {
                        Ok(v) => (Some(v), None),
                        Err(e) => (None, Some(e)),
                    };
                let reply = RouterFrame::Reply {
                    call_id,
                    result,
                    error,
                };
                link.send(frame_text(&reply)).await;
            });
            return;
        }
        self.touch();
        let text: Arc<str> = match serde_json::to_string(&frame) {
            Ok(t) => t.into(),
            Err(_) => return,
        };
        let mut shared = self.shared();
        let Some((conversation, seq)) = conversation_and_seq(&frame) else {
            // A frame error about a message that never became a turn.
            if let SandboxFrame::Error {
                conversation_id: Some(c),
                code,
                ..
            } = &frame
                && code != error_code::TURN_IN_PROGRESS
            {
                shared.running.remove(c);
            }
            deliver(&mut shared, None, &text);
            return;
        };
        let last = shared.last_seq.get(conversation).copied().unwrap_or(0);
        if seq <= last {
            let to = shared
                .resumers
                .get(conversation)
                .cloned()
                .unwrap_or_default();
            deliver(&mut shared, Some(&to), &text);
            return;
        }
        shared.last_seq.insert(conversation.to_string(), seq);
        if let Some(Some(recorder)) = shared.running.get(conversation) {
            hooks::record(recorder, &frame);
        }
        match &frame {
            SandboxFrame::Turn { .. } => {
                shared
                    .running
                    .entry(conversation.to_string())
                    .or_insert(None);
            }
            SandboxFrame::Done { .. } | SandboxFrame::Error { .. } => {
                // The end of a turn reaches the browsers once it is stored: what a
                // user saw finish survives a router crash.
                let recorder = shared.running.remove(conversation).flatten();
                drop(shared);
                let done = matches!(frame, SandboxFrame::Done { .. });
                let hub = self.clone();
                tokio::spawn(async move {
                    if let Some(recorder) = recorder {
                        recorder.finish().await;
                    }
                    deliver(&mut hub.shared(), None, &text);
                    if done {
                        hooks::sync_after_turn(&hub).await;
                    }
                });
                return;
            }
            _ => {}
        }
        deliver(&mut shared, None, &text);
    }

    /// Ends every running turn (the sandbox is being put to sleep) and waits until
    /// what arrived of each is stored, marked incomplete.
    pub(crate) async fn end_turns(&self) {
        let recorders: Vec<Recorder> = self
            .shared()
            .running
            .drain()
            .filter_map(|(_, recorder)| recorder)
            .collect();
        for recorder in recorders {
            recorder.finish().await;
        }
    }

    /// The sandbox went away without being put to sleep: every running turn ends
    /// with an error, and the next message wakes a fresh sandbox.
    pub(crate) fn on_link_lost(self: &Arc<Self>) {
        tracing::warn!(user.id = %self.user, "sandbox connection lost");
        self.status.send_replace(Status::Asleep);
        let mut shared = self.shared();
        let running: Vec<String> = shared.running.drain().map(|(c, _)| c).collect();
        for conversation in running {
            let text: Arc<str> = json!({
                "type": "error",
                "conversation_id": conversation,
                "code": error_code::AGENT_CRASHED,
                "message": "the agent's sandbox stopped; send your message again",
            })
            .to_string()
            .into();
            deliver(&mut shared, None, &text);
        }
        drop(shared);
        let hub = self.clone();
        tokio::spawn(async move {
            let mut link = hub.link.lock().await;
            if link.as_ref().is_some_and(|l| !l.is_alive()) {
                *link = None;
                if let Err(error) = hub.ctx.backend.sleep(hub.user).await {
                    tracing::warn!(user.id = %hub.user, %error, "reaping the sandbox failed");
                }
            }
        });
    }
}

/// Sends `text` to the browsers in `to` (all when `None`); drops those whose queue is full.
fn deliver(shared: &mut Shared, to: Option<&HashSet<u64>>, text: &Arc<str>) {
    shared.browsers.retain(|id, slot| {
        if to.is_some_and(|to| !to.contains(id)) {
            return true;
        }
        match slot.tx.try_send(text.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(browser = id, "browser too slow; dropping its connection");
                slot.dropped.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}

fn conversation_and_seq(frame: &SandboxFrame) -> Option<(&str, u64)> {
    match frame {
        SandboxFrame::Turn {
            seq,
            conversation_id,
            ..
        }
        | SandboxFrame::Text {
            seq,
            conversation_id,
            ..
        }
        | SandboxFrame::ToolUse {
            seq,
            conversation_id,
            ..
        }
        | SandboxFrame::ToolResult {
            seq,
            conversation_id,
            ..
        }
        | SandboxFrame::Document {
            seq,
            conversation_id,
            ..
        }
        | SandboxFrame::Voice {
            seq,
            conversation_id,
            ..
        }
        | SandboxFrame::Done {
            seq,
            conversation_id,
            ..
        } => Some((conversation_id, *seq)),
        SandboxFrame::Error {
            seq: Some(seq),
            conversation_id: Some(conversation_id),
            ..
        } => Some((conversation_id, *seq)),
        _ => None,
    }
}

/// A router frame as JSON text.
pub fn frame_text(frame: &RouterFrame) -> String {
    serde_json::to_string(frame).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(shared: &mut Shared, id: u64) -> (mpsc::Receiver<Arc<str>>, CancellationToken) {
        let (tx, rx) = mpsc::channel(BROWSER_QUEUE);
        let dropped = CancellationToken::new();
        shared.browsers.insert(
            id,
            Slot {
                tx,
                dropped: dropped.clone(),
            },
        );
        (rx, dropped)
    }

    #[test]
    fn a_browser_that_stops_reading_is_dropped_and_the_others_keep_their_stream() {
        let mut shared = Shared::default();
        let (_stuck_rx, stuck) = slot(&mut shared, 1);
        let (mut reader_rx, reader) = slot(&mut shared, 2);
        let mut read = 0;
        for i in 0..BROWSER_QUEUE + 10 {
            deliver(&mut shared, None, &Arc::from(format!("event {i}")));
            while reader_rx.try_recv().is_ok() {
                read += 1;
            }
        }
        assert!(stuck.is_cancelled(), "the stuck browser is told to go");
        assert!(
            !shared.browsers.contains_key(&1),
            "and holds no queue any more"
        );
        assert!(!reader.is_cancelled());
        assert_eq!(
            read,
            BROWSER_QUEUE + 10,
            "the reading browser got every event"
        );
    }

    #[test]
    fn a_replay_goes_only_to_the_browser_that_asked() {
        let mut shared = Shared::default();
        let (mut asker, _) = slot(&mut shared, 1);
        let (mut other, _) = slot(&mut shared, 2);
        let to: HashSet<u64> = [1].into_iter().collect();
        deliver(&mut shared, Some(&to), &Arc::from("replayed"));
        assert_eq!(asker.try_recv().ok().as_deref(), Some("replayed"));
        assert!(other.try_recv().is_err());
    }
}
