//! The relay between one user's browser connections on this router and their
//! sandbox: a [`Hub`] per user. Every browser tab of the user on this router shares
//! the router's one link to the sandbox; which tab gets which event is
//! [`fanout`]'s: live events to every tab once each, a replay after `resume` only
//! to the tab that asked, exactly the events above its `after_seq`.
//!
//! The hub holds nothing another router replica needs. The sandbox accepts a link
//! from every replica and sends each the same numbered events; it stores its turns
//! and answers its tool calls over HTTP with any replica
//! (`http::workspace_events`), so a turn runs to its end and is stored once
//! whatever happens to the browsers and routers relaying it. This router opens a
//! turn's rows when one of its browsers sends a message, and takes them back when
//! the sandbox refuses it.
//!
//! Waking and sleeping are the registry's decisions (`workspaces::registry`); the
//! browser socket is `http::ws`'s.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use sandbox::protocol::{ErrorBody, RouterFrame, SandboxFrame, error_code};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Which browser gets which event.
pub mod fanout;
mod hooks;
/// The router's WebSocket to a sandbox.
pub mod link;

pub use hooks::{CANNOT_REPLACE, Context, sync_after_turn};
pub use link::Link;

use crate::transcript::{self, OpenTurn};

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
    /// Events (JSON text) to send to it, with when each was queued.
    pub rx: mpsc::Receiver<fanout::Queued>,
    /// Cancelled when the hub drops it (too slow).
    pub dropped: CancellationToken,
    /// The workspace's status, for `status` frames.
    pub status: watch::Receiver<Status>,
}

/// What to tell a user whose plan's concurrent turns (`max_concurrent_turns`,
/// which the sandbox applies to every turn of the workspace, whichever router
/// sent it) are all taken.
fn too_many_turns(plans: &crate::plans::Plans, tier: crate::plans::Tier) -> String {
    let max = plans.get(tier).max_concurrent_turns;
    format!(
        "your {tier} plan runs {max} answer{s} at a time; wait for the running one to finish or stop it",
        s = if max == 1 { "" } else { "s" }
    )
}

/// A turn this router opened and sent, until the sandbox starts or refuses it.
struct Pending {
    /// The browser that sent the message.
    browser: u64,
    /// Its rows (with the user's plan, for what to tell the browser when the
    /// plan's concurrent turns are all taken).
    open: OpenTurn,
}

#[derive(Default)]
struct Turns {
    /// Conversations whose turn runs, as the live events show.
    running: HashSet<String>,
    /// Turns sent and not yet started, by `message_id`.
    pending: HashMap<String, Pending>,
    /// Conversations whose running turn has sent no text yet (the router's
    /// time on its first text is measured).
    awaiting_text: HashSet<String>,
}

/// Everything about one user's workspace this router holds in memory.
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
    fanout: Mutex<fanout::Fanout>,
    turns: Mutex<Turns>,
    last_activity: Mutex<Instant>,
    /// Turns the sandbox said it runs, in its last report over HTTP
    /// (`POST /v1/workspace/events`) to this router, and when: it counts every
    /// turn of the workspace, whichever router relays it and with no browser
    /// open. Its reports go to any replica, so a report older than
    /// [`SANDBOX_REPORT_TTL`] says nothing any more (the one that says the turns
    /// ended may have gone to another replica).
    sandbox_turns: Mutex<(usize, Instant)>,
    /// Messages on their way to a turn: received, waiting for the wake or
    /// their rows, not yet sent (see [`Hub::starting_turn`]).
    starting: Arc<std::sync::atomic::AtomicUsize>,
}

/// A message on its way to becoming a turn: while held, the hub counts as
/// running a turn, so its workspace is neither idle nor put to sleep to make
/// room however long the wake or the turn's rows take.
pub struct StartingTurn(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for StartingTurn {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long a sandbox's report of running turns holds: past three of its
/// heartbeats (every 15 s while a turn runs), the turns are not counted here.
pub const SANDBOX_REPORT_TTL: std::time::Duration = std::time::Duration::from_secs(45);

/// What a browser's message becomes: the frame for the sandbox and the turn's
/// assistant message.
pub struct TurnStart {
    /// The `message` frame, as JSON text.
    pub frame: String,
    /// The assistant message the turn is stored in.
    pub message_id: String,
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
            fanout: Mutex::default(),
            turns: Mutex::default(),
            last_activity: Mutex::new(Instant::now()),
            sandbox_turns: Mutex::new((0, Instant::now())),
            starting: Arc::default(),
        }
    }

    fn fanout(&self) -> std::sync::MutexGuard<'_, fanout::Fanout> {
        self.fanout.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn turns(&self) -> std::sync::MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
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
        self.fanout().len()
    }

    /// Whether any turn is running (relayed here, sent from here, or reported by
    /// the sandbox).
    pub fn turn_running(&self) -> bool {
        let turns = self.turns();
        let report = *self.sandbox_turns.lock().unwrap_or_else(|e| e.into_inner());
        !turns.running.is_empty()
            || !turns.pending.is_empty()
            || self.starting.load(std::sync::atomic::Ordering::SeqCst) > 0
            || reports_running(report, Instant::now())
    }

    /// Marks a message on its way to a turn until the guard drops (after it
    /// was sent to the sandbox, or refused).
    pub fn starting_turn(&self) -> StartingTurn {
        self.starting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        StartingTurn(self.starting.clone())
    }

    /// Notes what the sandbox reported over HTTP: it runs `running_turns` turns
    /// now. Counts as activity (the idle clock restarts).
    pub fn sandbox_reported(&self, running_turns: usize) {
        *self.sandbox_turns.lock().unwrap_or_else(|e| e.into_inner()) =
            (running_turns, Instant::now());
        self.touch();
    }

    /// The current status.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Attaches a browser connection.
    pub fn attach(&self) -> Browser {
        let (id, rx, dropped) = self.fanout().attach(BROWSER_QUEUE);
        self.touch();
        Browser {
            id,
            rx,
            dropped,
            status: self.status.subscribe(),
        }
    }

    /// Detaches a browser connection. Its turns run on.
    pub fn detach(&self, id: u64) {
        self.fanout().detach(id);
        self.touch();
    }

    /// Opens the turn a browser asked for (its rows: the user's message and an
    /// empty assistant message) and returns the frame to send to the sandbox.
    /// With `replaces` (a user message of the conversation) the new message takes
    /// its place: it and the messages after it are hidden, and the agent is told to
    /// forget them. `voice` is the message's own choice; without one the answer
    /// is spoken when the user's `voice_answers` setting says so and their plan
    /// has voice. The sandbox is told the plan's concurrent turns. The plan and
    /// the setting are read with the turn's rows, in the same statement.
    pub async fn begin_turn(
        &self,
        browser: u64,
        (content, conversation_id, replaces): (String, String, Option<Uuid>),
        (voice, attachments): (Option<bool>, Vec<crate::uploads::Attachment>),
    ) -> Result<TurnStart, ErrorBody> {
        let open = hooks::start_turn(
            &self.ctx,
            self.user,
            &conversation_id,
            (&content, &attachments),
            replaces,
        )
        .await?;
        let message_id = open.message_id.to_string();
        let plan = self.ctx.voice.plans().get(open.tier);
        let max_turns = plan.max_concurrent_turns;
        // An explicit `voice: true` goes to the sandbox even without voice, so the
        // browser gets the clear `voice_unavailable` beside the text answer.
        let voice = voice.or_else(|| {
            (open.voice_answers && plan.voice && self.ctx.voice.has_engine()).then_some(true)
        });
        // The sandbox gets the files' workspace paths, which its agent can open.
        let attachments =
            (!attachments.is_empty()).then(|| attachments.into_iter().map(|a| a.path).collect());
        self.turns()
            .pending
            .insert(message_id.clone(), Pending { browser, open });
        self.touch();
        let voice_max_chars = (voice == Some(true))
            .then(|| u32::try_from(self.ctx.voice.settings().max_chars).unwrap_or(u32::MAX));
        let frame = frame_text(&RouterFrame::Message {
            content,
            conversation_id,
            voice,
            voice_max_chars,
            attachments,
            message_id: Some(message_id.clone()),
            max_turns: Some(max_turns),
            prompt_id: Some(open.user_message_id.to_string()),
            replaces: replaces.map(|id| id.to_string()),
        });
        Ok(TurnStart { frame, message_id })
    }

    /// Takes back a turn that never reached the sandbox: its rows go.
    pub fn abandon_turn(self: &Arc<Self>, message_id: &str) {
        let pending = self.turns().pending.remove(message_id);
        if let Some(pending) = pending {
            self.discard(pending.open);
        }
    }

    fn discard(self: &Arc<Self>, open: OpenTurn) {
        let hub = self.clone();
        tokio::spawn(async move { hub.take_back(open).await });
    }

    /// Deletes a refused turn's rows (the messages it replaced come back).
    async fn take_back(&self, open: OpenTurn) {
        if let Err(error) = transcript::discard_turn(&self.ctx.db, self.user, &open).await {
            tracing::warn!(user.id = %self.user, %error, "taking back a refused turn failed");
        }
    }

    /// Forgets what each browser was sent: a new sandbox link may number its
    /// events afresh (a sandbox that lost its state).
    pub(crate) fn reset_seqs(&self) {
        self.fanout().reset_cursors();
    }

    /// Browser `id` resumes `conversation_id` after `after_seq`: returns the
    /// `resume` frame for the sandbox; until its replay arrives, the browser gets
    /// nothing live of that conversation.
    pub fn start_resume(&self, id: u64, conversation_id: &str, after_seq: u64) -> Option<String> {
        let request_id = self.fanout().start_resume(id, conversation_id, after_seq)?;
        Some(frame_text(&RouterFrame::Resume {
            conversation_id: conversation_id.to_owned(),
            after_seq,
            request_id: Some(request_id),
        }))
    }

    /// The resume of `conversation_id` by browser `id` could not be sent.
    pub fn cancel_resume(&self, id: u64, conversation_id: &str) {
        self.fanout().cancel_resume(id, conversation_id);
    }

    /// Sends `text` to one browser (dropping it if it cannot keep up).
    pub fn send_to(&self, id: u64, text: Arc<str>) {
        self.fanout().to_one(id, text);
    }

    /// Sends `text` to every browser of the user on this router.
    pub fn send_to_all(&self, text: &Arc<str>) {
        self.fanout().to_all(text);
    }

    /// Handles one frame from the sandbox, read off the link at `received`.
    pub(crate) fn on_sandbox_frame(self: &Arc<Self>, frame: SandboxFrame, received: Instant) {
        self.touch();
        match frame {
            SandboxFrame::Replay {
                request_id,
                conversation_id,
                events,
                last_seq,
                first_kept,
                last,
            } => {
                let Some(request) = request_id else { return };
                // Only numbered events of the conversation replayed: a frame of
                // another one in a replay is dropped, not shown in this one.
                let numbered: Vec<fanout::Numbered> = events
                    .iter()
                    .filter_map(|e| {
                        let (conversation, seq) = conversation_and_seq(e)?;
                        (conversation == conversation_id).then_some(())?;
                        Some((seq, frame_json(e)?))
                    })
                    .collect();
                self.fanout().replay(
                    &request,
                    &conversation_id,
                    &numbered,
                    (first_kept, last_seq, last),
                );
            }
            // A message this router sent, refused: its rows go, and the browser
            // that sent it is told.
            SandboxFrame::Error {
                seq: None,
                message_id: Some(message_id),
                conversation_id,
                code,
                message,
            } => {
                let pending = self.turns().pending.remove(&message_id);
                let Some(pending) = pending else { return };
                let message = if code == error_code::TOO_MANY_TURNS {
                    too_many_turns(self.ctx.voice.plans(), pending.open.tier)
                } else {
                    message
                };
                let text: Arc<str> = json!({
                    "type": "error",
                    "code": code,
                    "conversation_id": conversation_id,
                    "message": message,
                })
                .to_string()
                .into();
                // Told once its rows are back as they were: a browser that reloads
                // the conversation on a refused edit sees the messages it replaced.
                let (hub, browser) = (self.clone(), pending.browser);
                tokio::spawn(async move {
                    hub.take_back(pending.open).await;
                    hub.send_to(browser, text);
                });
            }
            // Jarvis tool calls come over HTTP (`http::workspace_events`).
            SandboxFrame::Call { .. } => {}
            frame => {
                let Some(text) = frame_json(&frame) else {
                    return;
                };
                let Some((conversation, seq)) = conversation_and_seq(&frame) else {
                    // An error about a frame, outside any turn.
                    self.send_to_all(&text);
                    return;
                };
                let first_text = {
                    let mut turns = self.turns();
                    match &frame {
                        SandboxFrame::Turn { message_id, .. } => {
                            if let Some(m) = message_id {
                                turns.pending.remove(m);
                            }
                            turns.running.insert(conversation.to_owned());
                            turns.awaiting_text.insert(conversation.to_owned());
                            false
                        }
                        SandboxFrame::Text { .. } => turns.awaiting_text.remove(conversation),
                        SandboxFrame::Done { .. } | SandboxFrame::Error { .. } => {
                            turns.running.remove(conversation);
                            turns.awaiting_text.remove(conversation);
                            false
                        }
                        _ => false,
                    }
                };
                self.fanout().live(conversation, seq, &text);
                if first_text {
                    crate::metrics::turn_leg("to_browser", received.elapsed());
                }
            }
        }
    }

    /// Forgets every running turn (the sandbox was put to sleep: what it had
    /// stored of them stays, marked incomplete). On a backend where this router
    /// decides sleep (local) the sandbox is gone: each turn's browsers are told,
    /// so none waits on a turn that stopped.
    pub(crate) async fn end_turns(&self) {
        let stopped = self.take_turns();
        if self.ctx.backend.sleeps_idle() {
            self.tell_stopped(stopped);
        }
    }

    /// Every running or sent turn's conversation, forgotten.
    fn take_turns(&self) -> Vec<String> {
        let mut turns = self.turns();
        turns.awaiting_text.clear();
        let mut stopped: Vec<String> = turns.running.drain().collect();
        for (_, pending) in turns.pending.drain() {
            let conversation = pending.open.conversation_id.to_string();
            if !stopped.contains(&conversation) {
                stopped.push(conversation);
            }
        }
        stopped
    }

    /// Tells every browser that the turns of `conversations` stopped with the sandbox.
    fn tell_stopped(&self, conversations: Vec<String>) {
        for conversation in conversations {
            let text: Arc<str> = json!({
                "type": "error",
                "conversation_id": conversation,
                "code": error_code::AGENT_CRASHED,
                "message": "the agent's sandbox stopped; send your message again",
            })
            .to_string()
            .into();
            self.send_to_all(&text);
        }
    }

    /// The sandbox link closed without this router closing it. On a backend where
    /// this router decides sleep (local), the sandbox is gone: every running turn
    /// ends with an error, the sandbox is reaped and the next message wakes a
    /// fresh one. Otherwise (kubernetes: another replica, or the pod, may still
    /// run it) every browser here is closed with 1012 so it reconnects, joins or
    /// wakes the workspace, and resumes where it was.
    pub(crate) fn on_link_lost(self: &Arc<Self>) {
        tracing::warn!(user.id = %self.user, "sandbox connection lost");
        self.status.send_replace(Status::Asleep);
        let stopped = self.take_turns();
        if !self.ctx.backend.sleeps_idle() {
            self.fanout().reconnect_all();
            return;
        }
        self.tell_stopped(stopped);
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

/// Whether a sandbox's report `(running turns, when)` still says turns run at `now`.
fn reports_running((running, at): (usize, Instant), now: Instant) -> bool {
    running > 0 && now.saturating_duration_since(at) < SANDBOX_REPORT_TTL
}

/// A sandbox frame as the browser gets it (JSON text).
fn frame_json(frame: &SandboxFrame) -> Option<Arc<str>> {
    serde_json::to_string(frame).ok().map(Arc::from)
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

    #[test]
    fn a_sandbox_report_of_running_turns_holds_for_a_while_only() {
        let at = Instant::now();
        assert!(reports_running((1, at), at));
        assert!(reports_running((2, at), at + SANDBOX_REPORT_TTL / 2));
        assert!(
            !reports_running((1, at), at + SANDBOX_REPORT_TTL),
            "the report that the turn ended may have gone to another replica"
        );
        assert!(!reports_running((0, at), at));
    }
}
