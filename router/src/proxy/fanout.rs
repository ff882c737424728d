//! Which of one user's browser connections on this router gets which event.
//!
//! Each browser has a bounded queue and, per conversation, a cursor: the highest
//! `seq` it was sent. A live event goes to a browser only above its cursor, so
//! nothing reaches a browser twice. A browser that resumes a conversation gets
//! nothing live of it until the sandbox's replay for its request has arrived in
//! full: the sandbox queues a replay's frames back to back on this router's link,
//! so live events that came before the replay are numbered at most its `last_seq`
//! (the replay holds them too) and those after it above. The browser so gets
//! exactly the events above its `after_seq`, in order, each once, then the live
//! ones — whatever the timing, with no help from the client.
//!
//! A browser that cannot keep up (its queue is full) is dropped: it may reconnect
//! and resume. A replay's frame takes one place in the queue however many events
//! it holds (at most the sandbox's chunk), so a long replay fits. Nothing here
//! waits or does I/O.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The `code` of the `error` frame telling a resuming browser that the sandbox no
/// longer keeps some of the events it asked for (they are in the stored
/// conversation, `GET /api/conversations/{id}`).
pub const RESUME_INCOMPLETE: &str = "resume_incomplete";

/// What a browser's queue holds: one event, or the events of one replay frame.
#[derive(Debug)]
pub enum Outgoing {
    /// One event (JSON text).
    One(Arc<str>),
    /// Several, in order.
    Many(Vec<Arc<str>>),
}

/// What a browser's queue holds, with when it was queued.
pub type Queued = (Outgoing, std::time::Instant);

/// One browser connection.
struct Browser {
    tx: mpsc::Sender<Queued>,
    dropped: CancellationToken,
    /// Highest `seq` sent, per conversation.
    cursors: HashMap<String, u64>,
    /// Conversations being resumed: the request's id and its `after_seq`.
    resuming: HashMap<String, (String, u64)>,
}

/// The browsers of one user on this router, and what each has been sent.
#[derive(Default)]
pub struct Fanout {
    next_id: u64,
    browsers: HashMap<u64, Browser>,
}

/// A replay's frame as the fan-out takes it: its `seq` and its JSON text.
pub type Numbered = (u64, Arc<str>);

impl Fanout {
    /// Adds a browser with a queue of `capacity` events; returns its id, the
    /// queue's receiving end, and the token cancelled when it is dropped.
    pub fn attach(&mut self, capacity: usize) -> (u64, mpsc::Receiver<Queued>, CancellationToken) {
        let (tx, rx) = mpsc::channel(capacity);
        let dropped = CancellationToken::new();
        self.next_id += 1;
        let id = self.next_id;
        self.browsers.insert(
            id,
            Browser {
                tx,
                dropped: dropped.clone(),
                cursors: HashMap::new(),
                resuming: HashMap::new(),
            },
        );
        (id, rx, dropped)
    }

    /// Removes a browser.
    pub fn detach(&mut self, id: u64) {
        self.browsers.remove(&id);
    }

    /// Browsers attached now.
    pub fn len(&self) -> usize {
        self.browsers.len()
    }

    /// Whether no browser is attached.
    pub fn is_empty(&self) -> bool {
        self.browsers.is_empty()
    }

    /// Browser `id` resumes `conversation` after `after_seq`: until the replay
    /// answering the returned request id has arrived, it gets nothing live of
    /// that conversation. `None` when there is no such browser.
    pub fn start_resume(&mut self, id: u64, conversation: &str, after_seq: u64) -> Option<String> {
        let browser = self.browsers.get_mut(&id)?;
        let request = uuid::Uuid::new_v4().to_string();
        browser
            .resuming
            .insert(conversation.to_owned(), (request.clone(), after_seq));
        browser.cursors.insert(conversation.to_owned(), after_seq);
        Some(request)
    }

    /// Gives up a resume whose request never reached the sandbox: the browser
    /// follows the conversation live again.
    pub fn cancel_resume(&mut self, id: u64, conversation: &str) {
        if let Some(browser) = self.browsers.get_mut(&id) {
            browser.resuming.remove(conversation);
        }
    }

    /// Every conversation each browser follows and the `seq` it reached (to
    /// resume them all on a new link to the sandbox).
    pub fn following(&self) -> Vec<(u64, String, u64)> {
        self.browsers
            .iter()
            .flat_map(|(id, b)| b.cursors.iter().map(move |(c, seq)| (*id, c.clone(), *seq)))
            .collect()
    }

    /// Forgets every browser's cursors: a sandbox that lost its numbering (a fresh
    /// one without its state) numbers its events from 1 again.
    pub fn reset_cursors(&mut self) {
        for browser in self.browsers.values_mut() {
            browser.cursors.clear();
        }
    }

    /// A live event of `conversation` numbered `seq`: to every browser whose
    /// cursor is below it and that is not waiting for a replay of it.
    pub fn live(&mut self, conversation: &str, seq: u64, text: &Arc<str>) {
        self.retain_sending(|browser| {
            if browser.resuming.contains_key(conversation) {
                return None;
            }
            let cursor = browser.cursors.entry(conversation.to_owned()).or_insert(0);
            if seq <= *cursor {
                return None;
            }
            *cursor = seq;
            Some(vec![text.clone()])
        });
    }

    /// A replay frame answering `request`: its events above the browser's cursor
    /// go to the browser that asked (none other); with `last`, the browser follows
    /// the conversation live again from `last_seq`. When the sandbox no longer keeps
    /// events the browser asked for (`first_kept` above its `after_seq` + 1), the
    /// browser is told first ([`RESUME_INCOMPLETE`]).
    pub fn replay(
        &mut self,
        request: &str,
        conversation: &str,
        events: &[Numbered],
        (first_kept, last_seq, last): (u64, u64, bool),
    ) {
        let Some((id, browser)) = self.browsers.iter_mut().find(|(_, b)| {
            b.resuming
                .get(conversation)
                .is_some_and(|(r, _)| r == request)
        }) else {
            return;
        };
        let id = *id;
        let mut out = Vec::new();
        if let Some((_, after)) = browser.resuming.get_mut(conversation) {
            // Told once per request: the first frame that shows the gap.
            if first_kept > *after + 1 {
                out.push(gap_frame(conversation, *after, first_kept));
                *after = first_kept.saturating_sub(1);
            }
        }
        let cursor = browser.cursors.entry(conversation.to_owned()).or_insert(0);
        for (seq, text) in events {
            if *seq > *cursor {
                *cursor = *seq;
                out.push(text.clone());
            }
        }
        if last {
            *cursor = (*cursor).max(last_seq);
            browser.resuming.remove(conversation);
        }
        self.send_to(id, out);
    }

    /// Drops every browser, asking each to reconnect and resume (the link to
    /// the sandbox they were following is gone).
    pub fn reconnect_all(&mut self) {
        for (_, browser) in self.browsers.drain() {
            browser.dropped.cancel();
        }
    }

    /// Sends `text` to browser `id` only.
    pub fn to_one(&mut self, id: u64, text: Arc<str>) {
        self.send_to(id, vec![text]);
    }

    /// Sends `text` to every browser.
    pub fn to_all(&mut self, text: &Arc<str>) {
        self.retain_sending(|_| Some(vec![text.clone()]));
    }

    fn send_to(&mut self, id: u64, texts: Vec<Arc<str>>) {
        if texts.is_empty() {
            return;
        }
        let Some(browser) = self.browsers.get(&id) else {
            return;
        };
        if !try_send_all(browser, texts) {
            self.drop_browser(id);
        }
    }

    /// Sends each browser what `pick` returns for it; drops those that cannot
    /// keep up.
    fn retain_sending(&mut self, mut pick: impl FnMut(&mut Browser) -> Option<Vec<Arc<str>>>) {
        let mut slow = Vec::new();
        for (id, browser) in &mut self.browsers {
            if browser.tx.is_closed() {
                slow.push(*id);
                continue;
            }
            if let Some(texts) = pick(browser)
                && !try_send_all(browser, texts)
            {
                slow.push(*id);
            }
        }
        for id in slow {
            self.drop_browser(id);
        }
    }

    fn drop_browser(&mut self, id: u64) {
        if let Some(browser) = self.browsers.remove(&id)
            && !browser.tx.is_closed()
        {
            tracing::warn!(browser = id, "browser too slow; dropping its connection");
            browser.dropped.cancel();
        }
    }
}

/// Queues `texts` for `browser` (in one place of its queue); `false` when its
/// queue is full or closed.
fn try_send_all(browser: &Browser, mut texts: Vec<Arc<str>>) -> bool {
    let out = match texts.len() {
        0 => return true,
        1 => Outgoing::One(texts.remove(0)),
        _ => Outgoing::Many(texts),
    };
    browser
        .tx
        .try_send((out, std::time::Instant::now()))
        .is_ok()
}

fn gap_frame(conversation: &str, after: u64, first_kept: u64) -> Arc<str> {
    serde_json::json!({
        "type": "error",
        "code": RESUME_INCOMPLETE,
        "conversation_id": conversation,
        "message": format!(
            "events {} to {} of this conversation are no longer kept live; reload the \
             conversation to see them",
            after + 1,
            first_kept - 1
        ),
    })
    .to_string()
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::Receiver<Queued>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .flat_map(|(out, _)| match out {
                Outgoing::One(t) => vec![t.to_string()],
                Outgoing::Many(ts) => ts.iter().map(|t| t.to_string()).collect(),
            })
            .collect()
    }

    fn ev(seq: u64) -> Numbered {
        (seq, Arc::from(format!("e{seq}")))
    }

    fn names(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|s| format!("e{s}")).collect()
    }

    #[test]
    fn live_events_reach_every_browser_once() {
        let mut f = Fanout::default();
        let (_, mut a, _) = f.attach(64);
        let (_, mut b, _) = f.attach(64);
        for seq in [1, 2, 2, 3] {
            f.live("c", seq, &ev(seq).1);
        }
        assert_eq!(drain(&mut a), names(1..=3));
        assert_eq!(drain(&mut b), names(1..=3));
    }

    #[test]
    fn a_resume_racing_live_events_gets_each_event_above_after_seq_once_in_order() {
        let mut f = Fanout::default();
        let (id, mut rx, _) = f.attach(64);
        let (_, mut other, _) = f.attach(64);
        f.live("c", 1, &ev(1).1);
        drain(&mut rx);
        // The browser reconnected having shown up to 3 (on another router, say).
        let request = f.start_resume(id, "c", 3).expect("attached");
        // Live events the sandbox sent before it took the replay: held back.
        for seq in 2..=6 {
            f.live("c", seq, &ev(seq).1);
        }
        assert!(drain(&mut rx).is_empty(), "nothing live before the replay");
        // The replay (4..=6) in two chunks, then live events above it.
        f.replay(&request, "c", &[ev(4), ev(5)], (1, 6, false));
        f.replay(&request, "c", &[ev(6)], (1, 6, true));
        for seq in 7..=8 {
            f.live("c", seq, &ev(seq).1);
        }
        assert_eq!(drain(&mut rx), names(4..=8));
        assert_eq!(drain(&mut other), names(1..=8), "the other tab only live");
    }

    #[test]
    fn a_replay_goes_only_to_the_browser_that_asked_and_other_conversations_flow() {
        let mut f = Fanout::default();
        let (id, mut asker, _) = f.attach(64);
        let (_, mut other, _) = f.attach(64);
        let request = f.start_resume(id, "c", 0).expect("attached");
        f.live("d", 1, &Arc::from("d1"));
        f.replay(&request, "c", &[ev(1)], (1, 1, true));
        f.replay("someone else's", "c", &[ev(1)], (1, 1, true));
        assert_eq!(drain(&mut asker), vec!["d1".to_string(), "e1".to_string()]);
        assert_eq!(drain(&mut other), vec!["d1".to_string()]);
    }

    #[test]
    fn a_replay_missing_evicted_events_says_so_first() {
        let mut f = Fanout::default();
        let (id, mut rx, _) = f.attach(64);
        let request = f.start_resume(id, "c", 2).expect("attached");
        f.replay(&request, "c", &[ev(10), ev(11)], (10, 11, true));
        let got = drain(&mut rx);
        assert!(got[0].contains(RESUME_INCOMPLETE) && got[0].contains("events 3 to 9"));
        assert_eq!(got[1..], names(10..=11));
    }

    #[test]
    fn a_replay_longer_than_the_queue_fits() {
        let mut f = Fanout::default();
        let (id, mut rx, dropped) = f.attach(4);
        let request = f.start_resume(id, "c", 0).expect("attached");
        let events: Vec<Numbered> = (1..=256).map(ev).collect();
        f.replay(&request, "c", &events[..128], (1, 256, false));
        f.replay(&request, "c", &events[128..], (1, 256, true));
        assert!(!dropped.is_cancelled());
        assert_eq!(drain(&mut rx), names(1..=256));
    }

    #[test]
    fn a_browser_that_stops_reading_is_dropped_and_the_others_keep_their_stream() {
        let mut f = Fanout::default();
        let (_, _stuck_rx, stuck) = f.attach(8);
        let (_, mut reader, kept) = f.attach(8);
        let mut read = 0;
        for seq in 1..=20 {
            f.live("c", seq, &ev(seq).1);
            read += drain(&mut reader).len();
        }
        assert!(stuck.is_cancelled(), "the stuck browser is told to go");
        assert_eq!(f.len(), 1, "and holds no queue any more");
        assert!(!kept.is_cancelled());
        assert_eq!(read, 20, "the reading browser got every event");
    }
}
