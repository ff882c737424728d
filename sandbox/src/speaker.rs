//! Speaks an answer while it streams: each sentence the splitter completes
//! (`sentences`) becomes a `speak` call to the router at once, a few in flight,
//! and each reply becomes a `voice` event, in sentence order.
//!
//! Bounded: at most [`IN_FLIGHT`] calls at a time, at most the turn's character
//! budget spoken (the sentence that crosses it is cut, and the listener is told
//! the rest is in the text). The first failed call (plan without voice, engine
//! failure or timeout) becomes one `voice` event with its `error`, and nothing
//! more of the answer is spoken. The turn's `done` waits for [`Speaker::finish`],
//! so the browser knows when the audio is complete; the text never waits.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use futures::StreamExt;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{protocol::ToolCall, sentences::Sentences, session::Hub, translate::EventKind};

/// `speak` calls in flight at once per turn.
pub const IN_FLIGHT: usize = 2;
/// Characters of an answer spoken when the router does not say.
pub const DEFAULT_MAX_CHARS: usize = 2000;
/// Spoken after the last sentence that fits the budget.
pub const REST_IN_TEXT: &str = "The rest of the answer is in the text.";

/// The voice of one turn.
pub struct Speaker {
    sentences: Sentences,
    tx: Option<mpsc::UnboundedSender<String>>,
    budget: usize,
    exhausted: bool,
    stopped: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Speaker {
    /// Starts speaking for `conversation_id`, at most `max_chars` characters.
    pub fn start(hub: Arc<Hub>, conversation_id: String, max_chars: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        let stopped = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(speak_in_order(hub, conversation_id, rx, stopped.clone()));
        Self {
            sentences: Sentences::new(),
            tx: Some(tx),
            budget: max_chars,
            exhausted: false,
            stopped,
            task,
        }
    }

    /// A text delta of the answer.
    pub fn text(&mut self, delta: &str) {
        for sentence in self.sentences.push(delta) {
            self.queue(sentence);
        }
    }

    /// Nothing more is spoken (an interrupt); calls in flight still finish.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// The answer ended: speaks what is left and waits until every `voice`
    /// event of the turn is out.
    pub async fn finish(mut self) {
        for sentence in self.sentences.finish() {
            self.queue(sentence);
        }
        self.tx = None;
        if let Err(error) = (&mut self.task).await {
            tracing::warn!(%error, "the voice of a turn failed");
        }
    }

    fn queue(&mut self, sentence: String) {
        if self.exhausted || self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let chars = sentence.chars().count();
        let text = if chars <= self.budget {
            self.budget -= chars;
            sentence
        } else {
            self.exhausted = true;
            let fits = cut_at_word(&sentence, self.budget);
            if fits.is_empty() {
                REST_IN_TEXT.to_string()
            } else {
                format!("{fits}… {REST_IN_TEXT}")
            }
        };
        if let Some(tx) = &self.tx {
            let _ = tx.send(text);
        }
    }
}

/// The longest prefix of `text` within `max` characters that ends at a word.
fn cut_at_word(text: &str, max: usize) -> String {
    let prefix: String = text.chars().take(max).collect();
    match text.chars().nth(max) {
        None => return prefix,
        Some(next) if next.is_whitespace() => return prefix,
        Some(_) => {}
    }
    match prefix.rfind(' ') {
        Some(space) => prefix[..space].trim_end().to_string(),
        None => String::new(),
    }
}

enum Outcome {
    Spoken(EventKind),
    Failed(EventKind),
    Skipped,
}

async fn speak_in_order(
    hub: Arc<Hub>,
    conversation_id: String,
    rx: mpsc::UnboundedReceiver<String>,
    stopped: Arc<AtomicBool>,
) {
    let calls = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|sentence| (sentence, rx))
    })
    .map(|sentence| {
        let (hub, conversation_id, stopped) =
            (hub.clone(), conversation_id.clone(), stopped.clone());
        async move {
            if stopped.load(Ordering::SeqCst) {
                return Outcome::Skipped;
            }
            let call = ToolCall::Speak {
                text: sentence.clone(),
            };
            match hub.call(Some(conversation_id), call).await {
                Ok(reply) => Outcome::Spoken(EventKind::Voice {
                    url: reply["url"].as_str().unwrap_or_default().to_string(),
                    transcript: reply["transcript"]
                        .as_str()
                        .map_or(sentence, str::to_string),
                    error: None,
                }),
                Err(error) => Outcome::Failed(EventKind::Voice {
                    url: String::new(),
                    transcript: sentence,
                    error: Some(error),
                }),
            }
        }
    })
    .buffered(IN_FLIGHT);
    futures::pin_mut!(calls);
    let mut failed = false;
    while let Some(outcome) = calls.next().await {
        match outcome {
            Outcome::Spoken(event) if !failed => hub.emit(&conversation_id, event),
            Outcome::Failed(event) if !failed => {
                // One clear error per turn; the rest of the answer stays text.
                failed = true;
                stopped.store(true, Ordering::SeqCst);
                hub.emit(&conversation_id, event);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicUsize, time::Duration};

    use serde_json::json;

    use super::*;
    use crate::{
        protocol::SandboxFrame,
        router_api::RouterApi,
        session::Link,
        testing::{CallAnswer, FakeApi},
    };

    /// A router that answers each `speak` call after `delay(n)` ms (so later
    /// calls can finish first), or with an error for texts containing "fail";
    /// and the hub it is reached through.
    async fn router(delay: fn(usize) -> u64) -> (FakeApi, Arc<Hub>, tempfile::TempDir) {
        let api = FakeApi::start().await.expect("fake api");
        let calls = AtomicUsize::new(0);
        api.answer_calls(move |call| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let text = call["params"]["text"].as_str().unwrap_or_default();
            let answer = if text.contains("fail") {
                CallAnswer::error("voice_failed", "engine down")
            } else {
                CallAnswer::result(json!({"url": format!("/a/{text}"), "transcript": text}))
            };
            answer.after(Duration::from_millis(delay(n)))
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let client = RouterApi::new(&api.url(), "token");
        let hub = Hub::new(dir.path().into(), Duration::from_secs(5), client);
        (api, hub, dir)
    }

    /// The link's frames up to the turn's `done`.
    fn events(link: &mut Link) -> Vec<SandboxFrame> {
        std::iter::from_fn(|| link.frames.try_recv().ok())
            .take_while(|frame| !matches!(frame, SandboxFrame::Done { .. }))
            .collect()
    }

    fn transcripts(events: &[SandboxFrame]) -> Vec<(String, Option<String>)> {
        events
            .iter()
            .filter_map(|e| match e {
                SandboxFrame::Voice {
                    transcript, error, ..
                } => Some((transcript.clone(), error.as_ref().map(|e| e.code.clone()))),
                _ => None,
            })
            .collect()
    }

    async fn turn(deltas: &[&str], max_chars: usize, delay: fn(usize) -> u64) -> Vec<SandboxFrame> {
        let (_api, hub, _dir) = router(delay).await;
        let mut link = hub.attach();
        let mut speaker = Speaker::start(hub.clone(), "c".into(), max_chars);
        for delta in deltas {
            speaker.text(delta);
        }
        tokio::time::timeout(Duration::from_secs(10), speaker.finish())
            .await
            .expect("the voice finishes");
        hub.emit(
            "c",
            EventKind::Done {
                usage: Default::default(),
                stopped: false,
            },
        );
        events(&mut link)
    }

    #[tokio::test]
    async fn voice_events_come_in_sentence_order_even_when_later_ones_finish_first() {
        // The first call is the slowest.
        let events = turn(&["One. Two", ". Three"], 1000, |n| {
            if n == 1 { 300 } else { 10 }
        })
        .await;
        assert_eq!(
            transcripts(&events),
            vec![
                ("One.".into(), None),
                ("Two.".into(), None),
                ("Three".into(), None)
            ]
        );
    }

    #[tokio::test]
    async fn the_first_failure_is_one_voice_error_and_the_rest_is_not_spoken() {
        let events = turn(&["Fine. Then fail here. More. And more."], 1000, |_| 10).await;
        assert_eq!(
            transcripts(&events),
            vec![
                ("Fine.".into(), None),
                ("Then fail here.".into(), Some("voice_failed".into())),
            ]
        );
    }

    #[tokio::test]
    async fn after_a_stop_nothing_more_is_asked_for() {
        let (_api, hub, _dir) = router(|_| 1).await;
        let mut link = hub.attach();
        let mut speaker = Speaker::start(hub.clone(), "c".into(), 1000);
        speaker.text("Before the stop. ");
        speaker.stop();
        speaker.text("After the stop. And more.");
        tokio::time::timeout(Duration::from_secs(10), speaker.finish())
            .await
            .expect("the voice finishes");
        hub.emit(
            "c",
            EventKind::Done {
                usage: Default::default(),
                stopped: false,
            },
        );
        let events = events(&mut link);
        let spoken = transcripts(&events);
        assert!(
            spoken.iter().all(|(t, _)| t == "Before the stop."),
            "{spoken:?}"
        );
    }

    #[tokio::test]
    async fn the_budget_cuts_the_answer_and_says_the_rest_is_in_the_text() {
        let events = turn(
            &["Short one. This sentence is too long to fit. Never."],
            30,
            |_| 1,
        )
        .await;
        assert_eq!(
            transcripts(&events),
            vec![
                ("Short one.".into(), None),
                (format!("This sentence is too… {REST_IN_TEXT}"), None),
            ]
        );
    }
}
