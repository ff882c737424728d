//! Metering: reads the token counts out of an answer as it passes through the
//! gateway, and records one `usage` row when the answer ends or is cut off.
//!
//! The gateway hands every chunk it forwards to [`Meter::observe`] (a cheap
//! reference-counted copy); a task of the meter's own parses them — server-sent
//! events with the `sse-stream` crate, or a whole JSON message — so forwarding
//! never waits for metering. When the forwarded stream is dropped (the answer
//! ended, or the sandbox went away mid-answer) the task records what it saw. A
//! row that cannot be written is logged and counted
//! (`jarvis_gateway_usage_write_failures_total`), never retried (a failure after
//! the commit would record the call twice); a shutdown waits for the rows of the
//! calls that ended ([`Meters::drain`]).
//!
//! Counted: `message_start.message.usage` (input and cache tokens, the model) and
//! the last `message_delta.usage.output_tokens`. `usage.input_tokens` records all
//! input tokens, cached ones included; the cost (`pricing`) tells them apart, and
//! adds the fee of the web searches in `usage.server_tool_use` (server tools pass
//! the gateway only on plans that allow them).

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::{StreamExt, channel::mpsc};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::pricing::{self, Tokens};

/// Largest non-streaming answer the meter reads for its `usage` (the answer
/// itself is forwarded whatever its size).
const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;

/// Who the call is recorded for.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// The workspace token's user.
    pub owner_id: Uuid,
    /// The conversation the sandbox named; recorded only if it is the owner's.
    pub conversation_id: Option<Uuid>,
}

/// How the answer is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `text/event-stream` (`"stream": true`).
    EventStream,
    /// One JSON message.
    Json,
}

/// The gateway's meters: a count of the answers still passing or still writing
/// their row, so a shutdown can wait for them ([`Meters::drain`]).
#[derive(Default)]
pub struct Meters {
    open: Arc<Open>,
}

#[derive(Default)]
struct Open {
    count: AtomicUsize,
    none: Notify,
}

/// One meter's place in [`Meters`], given back when its task ends (however).
struct Opened(Arc<Open>);

impl Drop for Opened {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none.notify_waiters();
        }
    }
}

impl Meters {
    /// Starts metering an answer for `call`; the row goes to `db`, and `seen`
    /// hears what the answer used just before it is written.
    pub fn start(
        &self,
        db: PgPool,
        call: Call,
        encoding: Encoding,
        seen: impl FnOnce(&Seen) + Send + 'static,
    ) -> Meter {
        let on_seen = seen;
        let (chunks, rx) = mpsc::unbounded();
        self.open.count.fetch_add(1, Ordering::AcqRel);
        let opened = Opened(self.open.clone());
        tokio::spawn(async move {
            let _opened = opened;
            let seen = match encoding {
                Encoding::EventStream => read_events(rx).await,
                Encoding::Json => read_json(rx).await,
            };
            if let Some(seen) = seen {
                on_seen(&seen);
                record(&db, call, &seen).await;
            }
        });
        Meter { chunks }
    }

    /// Waits, at most `grace`, until no meter is open: every answer ended and
    /// its row written. `false` (logged) when some were still open.
    pub async fn drain(&self, grace: Duration) -> bool {
        let none_open = async {
            loop {
                let none = self.open.none.notified();
                if self.open.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                none.await;
            }
        };
        let drained = tokio::time::timeout(grace, none_open).await.is_ok();
        if !drained {
            tracing::warn!(
                open = self.open.count.load(Ordering::Acquire),
                "shutting down with model calls whose usage is not recorded yet"
            );
        }
        drained
    }
}

/// The observing end: hand it each forwarded chunk; dropping it ends the call.
pub struct Meter {
    chunks: mpsc::UnboundedSender<Bytes>,
}

impl Meter {
    /// Sees one chunk of the answer.
    pub fn observe(&self, chunk: &Bytes) {
        // The task only stops early if it panicked; forwarding goes on regardless.
        let _ = self.chunks.unbounded_send(chunk.clone());
    }
}

/// What one answer used.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The model that answered.
    pub model: String,
    /// Its token counts.
    pub tokens: Tokens,
    /// Web searches the provider ran for it (`server_tool_use.web_search_requests`).
    pub web_searches: u64,
}

async fn read_events(rx: mpsc::UnboundedReceiver<Bytes>) -> Option<Seen> {
    let mut events = sse_stream::SseStream::from_bytes_stream(rx.map(Ok::<_, Infallible>));
    let mut seen: Option<Seen> = None;
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let Some(data) = event.data.as_deref() else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        match value["type"].as_str() {
            Some("message_start") => {
                let message = &value["message"];
                let seen = seen.get_or_insert_with(Seen::default);
                seen.model = message["model"].as_str().unwrap_or_default().to_string();
                add_usage(seen, &message["usage"]);
            }
            Some("message_delta") => {
                if let Some(seen) = seen.as_mut() {
                    add_usage(seen, &value["usage"]);
                }
            }
            _ => {}
        }
    }
    seen
}

async fn read_json(mut rx: mpsc::UnboundedReceiver<Bytes>) -> Option<Seen> {
    let mut body = Vec::new();
    while let Some(chunk) = rx.next().await {
        if body.len() + chunk.len() > MAX_JSON_BYTES {
            tracing::warn!("answer too large to meter; its usage is not recorded");
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    let value: Value = serde_json::from_slice(&body).ok()?;
    let mut seen = Seen {
        model: value["model"].as_str()?.to_string(),
        ..Seen::default()
    };
    add_usage(&mut seen, &value["usage"]);
    Some(seen)
}

/// Takes the counts present in a `usage` object. They are running totals (a
/// later `message_delta` repeats and raises them), so the larger value wins.
fn add_usage(seen: &mut Seen, usage: &Value) {
    let take = |slot: &mut u64, value: &Value| {
        if let Some(n) = value.as_u64() {
            *slot = (*slot).max(n);
        }
    };
    let tokens = &mut seen.tokens;
    take(&mut tokens.input, &usage["input_tokens"]);
    take(
        &mut tokens.cache_write,
        &usage["cache_creation_input_tokens"],
    );
    take(&mut tokens.cache_read, &usage["cache_read_input_tokens"]);
    take(&mut tokens.output, &usage["output_tokens"]);
    take(
        &mut seen.web_searches,
        &usage["server_tool_use"]["web_search_requests"],
    );
}

async fn record(db: &PgPool, call: Call, seen: &Seen) {
    let cost = pricing::cost_micros(&seen.model, seen.tokens)
        .saturating_add(seen.web_searches.saturating_mul(pricing::WEB_SEARCH_MICROS));
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    // The conversation is kept only if it is the token's user's own.
    // language=PostgreSQL
    let inserted = crate::db::query(
        "insert into usage (owner_id, conversation_id, turn_id, model, input_tokens, output_tokens, cost_micros)
         values ($1, (select id from conversations where id = $2 and owner_id = $1),
                 (select id from messages where conversation_id = $2 and owner_id = $1
                    and role = 'assistant' order by position desc limit 1),
                 $3, $4, $5, $6)",
    )
    .bind(call.owner_id)
    .bind(call.conversation_id)
    .bind(&seen.model)
    .bind(as_i64(seen.tokens.all_input()))
    .bind(as_i64(seen.tokens.output))
    .bind(as_i64(cost))
    .execute(db)
    .await;
    match inserted {
        Ok(_) => tracing::info!(
            user.id = %call.owner_id,
            model = %seen.model,
            input_tokens = seen.tokens.all_input(),
            output_tokens = seen.tokens.output,
            web_searches = seen.web_searches,
            cost_micros = cost,
            "model call recorded"
        ),
        // Not retried: a failure after the commit would record the call twice.
        Err(error) => {
            crate::metrics::usage_write_failed();
            tracing::error!(%error, user.id = %call.owner_id, "recording usage failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn events_of(chunks: &[&str]) -> Option<Seen> {
        let (tx, rx) = mpsc::unbounded();
        for c in chunks {
            tx.unbounded_send(Bytes::from(c.to_string())).expect("open");
        }
        drop(tx);
        read_events(rx).await
    }

    #[tokio::test]
    async fn event_streams_give_input_cache_and_final_output_tokens() {
        let seen = events_of(&[
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",",
            "\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n",
        ])
        .await
        .expect("seen");
        assert_eq!(seen.model, "claude-x");
        assert_eq!(
            seen.tokens,
            Tokens {
                input: 10,
                cache_read: 100,
                output: 7,
                cache_write: 0
            }
        );
    }

    #[tokio::test]
    async fn web_searches_are_counted_from_the_server_tool_usage() {
        let seen = events_of(&[
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2,\"server_tool_use\":{\"web_search_requests\":3}}}\n\n",
        ])
        .await
        .expect("seen");
        assert_eq!(seen.web_searches, 3);
    }

    #[tokio::test]
    async fn a_stream_cut_before_message_start_records_nothing() {
        assert_eq!(
            events_of(&["event: ping\ndata: {}\n\n", "event: mess"]).await,
            None
        );
    }

    fn unreachable_db() -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://jarvis@127.0.0.1:1/none")
            .expect("lazy pool")
    }

    #[tokio::test]
    async fn a_shutdown_waits_for_answers_passing_and_survives_a_failed_row() {
        let meters = Meters::default();
        let call = Call {
            owner_id: Uuid::nil(),
            conversation_id: None,
        };
        let meter = meters.start(unreachable_db(), call, Encoding::EventStream, |_| {});
        meter.observe(&Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n",
        ));
        assert!(
            !meters.drain(Duration::from_millis(50)).await,
            "the answer is still passing"
        );
        drop(meter);
        // Its row cannot be written (no database): logged and counted, and the
        // meter ends all the same.
        assert!(meters.drain(Duration::from_secs(10)).await);
        assert!(meters.drain(Duration::from_millis(1)).await, "none left");
    }

    #[tokio::test]
    async fn whole_json_messages_give_their_usage() {
        let (tx, rx) = mpsc::unbounded();
        tx.unbounded_send(Bytes::from_static(
            br#"{"model":"m","usage":{"input_tokens":4,"output_tokens":2}}"#,
        ))
        .expect("open");
        drop(tx);
        let seen = read_json(rx).await.expect("seen");
        assert_eq!((seen.tokens.input, seen.tokens.output), (4, 2));
    }
}
