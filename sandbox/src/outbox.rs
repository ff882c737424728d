//! The outbox: the sandbox stores its turns itself, over HTTP, not over a link.
//!
//! Every numbered event is queued here (by the hub, under its lock, so the queue
//! is in seq order) and POSTed to the router (`/v1/workspace/events`) in batches:
//! every [`BATCH_WINDOW`], or at once when a batch holds a turn's end. A failed
//! POST (no answer, 5xx) is tried again with backoff, more events added to the
//! same batch; the router stores idempotently by (conversation, seq). A 400 drops
//! the batch, a 401 drops it after a few attempts (both logged). While turns run
//! an empty POST (a heartbeat) goes out at least every [`HEARTBEAT`]. Events
//! stored (or given up on) are *settled*: the hub waits for a turn's end to be
//! settled before it shows it to the links.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::{
    protocol::SandboxFrame,
    router_api::{EVENTS_PATH, MAX_BACKOFF, RouterApi},
    session::{Hub, frame_seq},
};

/// How long events wait for more to join their batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(250);
/// While turns run, the longest time without a POST.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events queued at most; text deltas beyond it are not stored (logged), other
/// events beyond twice as many neither.
pub const MAX_QUEUED: usize = 100_000;
/// Events in one POST at most.
pub const MAX_PER_POST: usize = 2_000;
/// How long a turn's end waits for its batch to be stored before it is shown anyway.
pub const STORE_WAIT: Duration = Duration::from_secs(30);
/// The outbox's timing (the constants above; shorter in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// See [`BATCH_WINDOW`].
    pub window: Duration,
    /// See [`HEARTBEAT`].
    pub heartbeat: Duration,
    /// See [`STORE_WAIT`].
    pub store_wait: Duration,
    /// The first pause after a failed POST (doubling up to [`MAX_BACKOFF`]).
    pub first_backoff: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            window: BATCH_WINDOW,
            heartbeat: HEARTBEAT,
            store_wait: STORE_WAIT,
            first_backoff: FIRST_BACKOFF,
        }
    }
}

/// One POST's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of a batch the router refuses with 401 before it is dropped.
const UNAUTHORIZED_ATTEMPTS: u32 = 3;
/// The first pause after a failed POST.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Events of one conversation and turn, in seq order (the request's `batches[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Batch {
    /// The conversation.
    pub conversation_id: String,
    /// The assistant message of the turn the events belong to.
    pub message_id: Option<String>,
    /// Numbered frames of the conversation.
    pub events: Vec<SandboxFrame>,
}

/// The events waiting to be stored.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pending: Vec<Batch>,
    /// Events pending or in flight.
    queued: usize,
    /// A turn's end is pending: send without waiting for the window.
    urgent: bool,
    dropped: u64,
    /// Per conversation, the highest seq stored or given up on.
    settled: HashMap<String, u64>,
}

impl Outbox {
    /// Queues a numbered frame; `false` when it was dropped (the queue is full).
    pub(crate) fn push(
        &mut self,
        conversation_id: &str,
        message_id: Option<&str>,
        frame: SandboxFrame,
        ends_turn: bool,
    ) -> bool {
        let over = self.queued >= MAX_QUEUED;
        if (over && matches!(frame, SandboxFrame::Text { .. })) || self.queued >= 2 * MAX_QUEUED {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::error!(
                    dropped = self.dropped,
                    queued = self.queued,
                    "the outbox is full: events are not stored"
                );
            }
            return false;
        }
        self.queued += 1;
        self.urgent |= ends_turn;
        merge(
            &mut self.pending,
            vec![Batch {
                conversation_id: conversation_id.to_string(),
                message_id: message_id.map(str::to_string),
                events: vec![frame],
            }],
        );
        true
    }

    /// Whether nothing waits to be sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Events pending or in flight.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Whether a turn's end waits to be sent.
    pub(crate) fn urgent(&self) -> bool {
        self.urgent
    }

    /// Takes up to `max` pending events, oldest first (they stay counted as queued
    /// until [`Outbox::settle`]).
    pub(crate) fn take(&mut self, max: usize) -> Vec<Batch> {
        let mut taken = Vec::new();
        let mut room = max;
        while room > 0 && !self.pending.is_empty() {
            let first = &mut self.pending[0];
            if first.events.len() <= room {
                room -= first.events.len();
                taken.push(self.pending.remove(0));
            } else {
                let rest = first.events.split_off(room);
                let head = std::mem::replace(&mut first.events, rest);
                taken.push(Batch {
                    conversation_id: first.conversation_id.clone(),
                    message_id: first.message_id.clone(),
                    events: head,
                });
                room = 0;
            }
        }
        if self.pending.is_empty() {
            self.urgent = false;
        }
        taken
    }

    /// Marks sent events as stored (or given up on).
    pub(crate) fn settle(&mut self, batches: &[Batch]) {
        for batch in batches {
            self.queued = self.queued.saturating_sub(batch.events.len());
            if let Some(seq) = batch.events.iter().filter_map(frame_seq).max() {
                let settled = self
                    .settled
                    .entry(batch.conversation_id.clone())
                    .or_default();
                *settled = (*settled).max(seq);
            }
        }
    }

    /// Whether the event `seq` of `conversation_id` was stored or given up on.
    pub(crate) fn is_settled(&self, conversation_id: &str, seq: u64) -> bool {
        self.settled.get(conversation_id).is_some_and(|s| *s >= seq)
    }
}

/// Appends `more` to `into`, joining a batch to the last one of its conversation
/// when that is the same turn, so each conversation's events stay in seq order.
pub(crate) fn merge(into: &mut Vec<Batch>, more: Vec<Batch>) {
    for batch in more {
        let last = into
            .iter_mut()
            .rev()
            .find(|b| b.conversation_id == batch.conversation_id);
        match last {
            Some(last) if last.message_id == batch.message_id => last.events.extend(batch.events),
            _ => into.push(batch),
        }
    }
}

fn count(batches: &[Batch]) -> usize {
    batches.iter().map(|b| b.events.len()).sum()
}

/// What the sender is told when events are queued or settled.
#[derive(Debug)]
pub(crate) struct Signals {
    /// Something was queued.
    pub wake: tokio::sync::Notify,
    /// A turn's end was queued.
    pub flush: tokio::sync::Notify,
    /// Bumped whenever events settle.
    pub settled: tokio::sync::watch::Sender<u64>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            wake: tokio::sync::Notify::new(),
            flush: tokio::sync::Notify::new(),
            settled: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// What became of one POST.
enum Posted {
    Stored,
    Retry,
    Dropped,
}

/// Sends the hub's queued events to the router, forever.
pub async fn run(hub: Arc<Hub>, api: RouterApi) {
    let signals = hub.signals();
    let pace = hub.pace();
    let mut inflight: Vec<Batch> = Vec::new();
    let mut pause = pace.first_backoff;
    let mut unauthorized = 0;
    let mut last_post = Instant::now();
    loop {
        if inflight.is_empty() {
            let (empty, urgent) = {
                let state = hub.lock();
                (state.outbox.is_empty(), state.outbox.urgent())
            };
            if empty {
                let heartbeat = last_post + pace.heartbeat;
                if hub.running_turns() == 0 {
                    signals.wake.notified().await;
                    continue;
                }
                if Instant::now() < heartbeat {
                    tokio::select! {
                        () = signals.wake.notified() => {}
                        () = tokio::time::sleep_until(heartbeat) => {}
                    }
                    continue;
                }
            } else if !urgent {
                tokio::select! {
                    () = tokio::time::sleep(pace.window) => {}
                    () = signals.flush.notified() => {}
                }
            }
        }
        let room = MAX_PER_POST.saturating_sub(count(&inflight));
        merge(&mut inflight, hub.lock().outbox.take(room));
        let body = json!({"batches": inflight, "running_turns": hub.running_turns()});
        last_post = Instant::now();
        let posted = match api.post(EVENTS_PATH, &body, REQUEST_TIMEOUT).await {
            Ok(_) => Posted::Stored,
            Err(failure) if failure.is_retryable() => {
                tracing::warn!(error = %failure, events = count(&inflight), "storing events failed; trying again");
                Posted::Retry
            }
            Err(failure) if failure.is_unauthorized() => {
                unauthorized += 1;
                if unauthorized < UNAUTHORIZED_ATTEMPTS {
                    tracing::warn!("the router refused the workspace token; trying again");
                    Posted::Retry
                } else {
                    tracing::error!(
                        events = count(&inflight),
                        "the router refuses the workspace token: dropping these events"
                    );
                    Posted::Dropped
                }
            }
            Err(failure) => {
                tracing::error!(error = %failure, events = count(&inflight), "the router refused the events: dropping them");
                Posted::Dropped
            }
        };
        match posted {
            Posted::Retry => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
            Posted::Stored | Posted::Dropped => {
                pause = pace.first_backoff;
                unauthorized = 0;
                hub.lock().outbox.settle(&inflight);
                inflight.clear();
                signals.settled.send_modify(|generation| *generation += 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        testing::{EventsPost, FakeApi},
        translate::EventKind,
    };

    const QUICK: Pace = Pace {
        window: Duration::from_millis(20),
        heartbeat: Duration::from_millis(50),
        store_wait: Duration::from_secs(30),
        first_backoff: Duration::from_millis(10),
    };

    async fn hub(api: &FakeApi, dir: &tempfile::TempDir) -> Arc<Hub> {
        let client = RouterApi::new(&api.url(), "token");
        let hub = Hub::paced(dir.path().into(), Duration::from_secs(5), client, QUICK);
        hub.start_outbox();
        hub
    }

    /// Waits (bounded) until the fake has seen posts that `enough` accepts.
    async fn posts_until(api: &FakeApi, enough: impl Fn(&[EventsPost]) -> bool) -> Vec<EventsPost> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let posts = api.event_posts();
            if enough(&posts) {
                return posts;
            }
            assert!(Instant::now() < deadline, "{posts:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn statuses(posts: &[EventsPost]) -> Vec<u16> {
        posts.iter().map(|p| p.status).collect()
    }

    #[tokio::test]
    async fn failed_posts_are_retried_and_refused_ones_dropped() {
        let api = FakeApi::start().await.expect("fake");
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = hub(&api, &dir).await;
        api.fail_events(&[500, 400]);
        hub.emit("c", EventKind::Turn);
        hub.emit("c", EventKind::Text { delta: "a".into() });
        let posts = posts_until(&api, |p| p.len() >= 2).await;
        assert_eq!(statuses(&posts), vec![500, 400]);
        assert_eq!(posts[1].seqs("c"), vec![1, 2], "the same batch again");

        api.fail_events(&[401, 401, 401]);
        hub.emit("c", EventKind::Text { delta: "b".into() });
        let posts = posts_until(&api, |p| p.len() >= 5).await;
        assert_eq!(statuses(&posts[2..]), vec![401, 401, 401]);
        assert_eq!(posts[4].seqs("c"), vec![3]);

        hub.emit("c", EventKind::Text { delta: "c".into() });
        let posts = posts_until(&api, |p| p.iter().any(|p| p.status == 200)).await;
        assert_eq!(
            posts[5].seqs("c"),
            vec![4],
            "dropped events are not sent again"
        );
        let stored: Vec<_> = api
            .stored_events("c")
            .iter()
            .map(|e| e["seq"].clone())
            .collect();
        assert_eq!(stored, vec![serde_json::json!(4)]);
    }

    #[tokio::test]
    async fn a_turns_end_is_shown_once_stored() {
        let api = FakeApi::start().await.expect("fake");
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = hub(&api, &dir).await;
        let mut link = hub.attach();
        api.fail_events(&[503, 503]);
        hub.emit("c", EventKind::Turn);
        let end = EventKind::Done {
            usage: Default::default(),
            stopped: false,
        };
        let seq = hub.emit_end(&mut hub.lock(), "c", end);
        hub.wait_stored("c", seq).await;
        let posts = api.event_posts();
        assert_eq!(statuses(&posts), vec![503, 503, 200]);
        assert_eq!(posts[2].seqs("c"), vec![1, 2]);
        hub.release(&mut hub.lock(), "c");
        let shown: Vec<u64> = std::iter::from_fn(|| link.frames.try_recv().ok())
            .filter_map(|f| frame_seq(&f))
            .collect();
        assert_eq!(shown, vec![1, 2]);
    }

    #[tokio::test]
    async fn heartbeats_go_out_while_a_turn_runs() {
        let api = FakeApi::start().await.expect("fake");
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = hub(&api, &dir).await;
        hub.emit("c", EventKind::Turn);
        if let Some(conversation) = hub.lock().conversations.get_mut("c") {
            conversation.slot.start_for_test();
        }
        let posts = posts_until(&api, |p| p.len() >= 4).await;
        for heartbeat in &posts[1..] {
            assert_eq!(heartbeat.body["batches"], serde_json::json!([]));
            assert_eq!(heartbeat.body["running_turns"], 1);
        }
        assert_eq!(posts[0].seqs("c"), vec![1]);
    }

    fn text(seq: u64, conversation: &str) -> SandboxFrame {
        SandboxFrame::Text {
            seq,
            conversation_id: conversation.into(),
            delta: "x".into(),
        }
    }

    fn seqs(batches: &[Batch]) -> Vec<(String, Option<String>, Vec<u64>)> {
        batches
            .iter()
            .map(|b| {
                let seqs = b.events.iter().filter_map(frame_seq).collect();
                (b.conversation_id.clone(), b.message_id.clone(), seqs)
            })
            .collect()
    }

    #[test]
    fn events_group_by_conversation_and_turn_in_order() {
        let mut outbox = Outbox::default();
        outbox.push("a", Some("m1"), text(1, "a"), false);
        outbox.push("b", Some("m2"), text(1, "b"), false);
        outbox.push("a", Some("m1"), text(2, "a"), true);
        outbox.push("a", Some("m3"), text(3, "a"), false);
        assert!(outbox.urgent());
        let taken = outbox.take(3);
        assert_eq!(
            seqs(&taken),
            vec![
                ("a".into(), Some("m1".into()), vec![1, 2]),
                ("b".into(), Some("m2".into()), vec![1]),
            ]
        );
        assert!(!outbox.is_settled("a", 2));
        outbox.settle(&taken);
        assert!(outbox.is_settled("a", 2) && !outbox.is_settled("a", 3));
        let rest = outbox.take(10);
        assert_eq!(seqs(&rest), vec![("a".into(), Some("m3".into()), vec![3])]);
        assert!(outbox.is_empty() && !outbox.urgent());
    }

    #[test]
    fn a_big_batch_is_split_in_order() {
        let mut outbox = Outbox::default();
        for seq in 1..=5 {
            outbox.push("a", None, text(seq, "a"), false);
        }
        let mut first = outbox.take(2);
        assert_eq!(seqs(&first)[0].2, vec![1, 2]);
        merge(&mut first, outbox.take(2));
        assert_eq!(seqs(&first), vec![("a".into(), None, vec![1, 2, 3, 4])]);
        assert_eq!(seqs(&outbox.take(9))[0].2, vec![5]);
    }

    #[test]
    fn past_the_limit_text_is_dropped_but_a_turn_end_is_kept() {
        let mut outbox = Outbox::default();
        for seq in 0..MAX_QUEUED as u64 {
            assert!(outbox.push("a", None, text(seq, "a"), false));
        }
        assert!(!outbox.push("a", None, text(1, "a"), false));
        let done = SandboxFrame::Done {
            seq: 7,
            conversation_id: "a".into(),
            usage: Default::default(),
            stopped: false,
        };
        assert!(outbox.push("a", None, done, true));
    }
}
