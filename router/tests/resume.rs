//! Turns belong to the workspace, seen with a plain WebSocket client (no
//! de-duplication on its side) against a real router, a real local sandbox and the
//! real CLI: a browser that drops mid-answer and resumes on a new connection gets
//! exactly the events after the last one it saw, in order, each once, while the
//! answer still streams; a turn whose tabs all closed runs to its end and is stored.

mod common;

use std::time::Duration;

use common::live::{Live, text};
use sandbox::testing::Reply;
use serde_json::{Value, json};
use sqlx::PgPool;

/// `[001] [002] … [n] ` as deltas.
fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("[{i:03}] ")).collect()
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["seq"].as_u64()).collect()
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_resume_while_the_answer_streams_gets_each_later_event_once_in_order(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let deltas = numbered(400);
    let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
    live.api.push(Reply::text(&refs));

    let mut first = live.browser(&alice.access).await;
    first.ready().await;
    first.message("count to 400", None).await;
    // Part of the answer, then the tab drops.
    let mut seen = Vec::new();
    while seen.iter().filter(|f: &&Value| f["type"] == "text").count() < 40 {
        seen.push(first.next().await.expect("a frame"));
    }
    let conversation = seen[0]["conversation_id"]
        .as_str()
        .expect("the turn event names the conversation")
        .to_owned();
    let after = *seqs(&seen).last().expect("numbered events");
    drop(first);

    // Another tab, open while the answer streams, follows it live.
    let mut watcher = live.browser(&alice.access).await;
    watcher.ready().await;

    let mut second = live.browser(&alice.access).await;
    second.ready().await;
    second
        .send(json!({"type": "resume", "conversation_id": conversation, "after_seq": after}))
        .await;
    let rest = second.turn().await;
    let numbers = seqs(&rest);
    let done = rest.last().expect("frames");
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(
        numbers.first(),
        Some(&(after + 1)),
        "starts right after after_seq"
    );
    assert_eq!(
        numbers,
        (after + 1..=numbers[numbers.len() - 1]).collect::<Vec<u64>>(),
        "every later event once, in order: no gap, no repeat"
    );
    assert_eq!(
        format!("{}{}", text(&seen), text(&rest)),
        deltas.concat(),
        "the answer is whole and each part once"
    );

    // The tab that followed live saw each event once, in order, to the end.
    let live_frames = watcher.turn().await;
    let watched = seqs(&live_frames);
    assert!(watched.windows(2).all(|w| w[1] == w[0] + 1), "{watched:?}");
    assert_eq!(watched.last(), numbers.last());
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_turn_whose_tabs_all_closed_runs_to_its_end_and_is_stored_once(db: PgPool) {
    let live = Live::with_config(db.clone(), |c| {
        // The reaper checks often; a running turn keeps the workspace awake.
        c.idle_timeout = Duration::from_millis(400);
    })
    .await;
    let alice = live.app.register("alice@example.com").await;
    let deltas = numbered(300);
    let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
    live.api.push(Reply::text(&refs));
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    browser.message("count to 300", None).await;
    let turn = browser.next().await.expect("the turn event");
    assert_eq!(turn["type"], "turn", "{turn}");
    drop(browser);

    let stored = common::live::stored_answer(&db, alice.id).await;
    assert_eq!(stored, deltas.concat(), "whole, each part once");
}
