//! Several router links and the sandbox's own storing: every link gets every
//! event, a resume is answered exactly on its link, refusals go to the link that
//! caused them, and turns are stored over HTTP exactly once, also with no link
//! attached, the end shown only once stored.

mod common;

use std::collections::BTreeSet;

use common::*;
use sandbox::testing::{CallAnswer, Reply};
use serde_json::{Value, json};

/// Unnumbered errors among `frames`.
fn refusals(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "error" && f.get("seq").is_none())
        .collect()
}

fn contiguous(seqs: &[u64], from: u64, to: u64) -> bool {
    seqs.iter().copied().eq(from..=to)
}

#[tokio::test]
async fn two_links_both_get_every_event_in_order() {
    let world = World::new().await;
    world.api.push(Reply::text(&["Hel", "lo ", "both"]));
    let sandbox = world.sandbox(&[]).await;
    let (mut a, mut b) = (sandbox.connect().await, sandbox.connect().await);
    let id = conversation();
    let message_id = a.message_with(&id, "hello", json!({})).await;
    let seen_by_a = a.turn_end(&id).await;
    let seen_by_b = b.turn_end(&id).await;

    assert_eq!(seen_by_a, seen_by_b);
    assert_eq!(text(&seen_by_a), "Hello both");
    assert_eq!(seen_by_a[0]["type"], "turn");
    assert_eq!(seen_by_a[0]["message_id"], message_id.as_str());
    let seqs = seqs(&seen_by_a);
    assert_eq!(seqs.len(), seen_by_a.len(), "{seen_by_a:?}");
    assert!(contiguous(&seqs, 1, seqs.len() as u64), "{seqs:?}");
}

#[tokio::test]
async fn a_resume_mid_turn_replays_exactly_once_then_goes_live() {
    let world = World::new().await;
    let deltas: Vec<String> = (0..120).map(|n| format!("w{n} ")).collect();
    let deltas: Vec<&str> = deltas.iter().map(String::as_str).collect();
    world.api.push(Reply::text(&deltas));
    let sandbox = world.sandbox(&[]).await;
    let (mut a, mut b) = (sandbox.connect().await, sandbox.connect().await);
    let id = conversation();
    a.message(&id, "stream a lot").await;
    // B has seen a few events live (it was attached) and then resumes as if it
    // had only the first two.
    let mut seen_live = b.until(|f| f["seq"].as_u64() >= Some(4)).await;
    let after_seq = 2;
    let (replays, before) = b.resume(&id, after_seq).await;
    seen_live.extend(before);
    let end = replays.last().expect("replay");
    let last_seq = end["last_seq"].as_u64().expect("last_seq");
    assert_eq!(end["first_kept"], 1, "{end}");
    assert!(
        seqs(&seen_live).iter().all(|seq| *seq <= last_seq),
        "live events before the replay are at most last_seq {last_seq}: {seen_live:?}"
    );
    let mut frames = replayed(&replays);
    if !frames.iter().any(ends_turn) {
        frames.extend(b.turn_end(&id).await);
    }
    let got = seqs(&frames);
    let done = *got.last().expect("events");
    assert!(
        contiguous(&got, after_seq + 1, done),
        "exactly the events above after_seq, once, in order: {got:?}"
    );
    assert!(got.len() > 100, "{got:?}");

    let seen_by_a = a.turn_end(&id).await;
    assert!(
        seen_by_a.iter().all(|f| f["type"] != "replay"),
        "{seen_by_a:?}"
    );
    assert!(contiguous(&seqs(&seen_by_a), 1, done));
    let mut all: Vec<Value> = seen_by_a
        .iter()
        .filter(|f| f["seq"].as_u64() > Some(after_seq))
        .cloned()
        .collect();
    all.retain(|f| f["seq"].as_u64().is_some());
    assert_eq!(
        all, frames,
        "the replay and the live events are the turn's events"
    );
}

#[tokio::test]
async fn refusals_go_only_to_the_sending_link() {
    let world = World::new().await;
    world
        .api
        .push(Reply::Stall(std::time::Duration::from_secs(3)));
    let sandbox = world.sandbox(&["--max-agents", "2"]).await;
    let (mut a, mut b) = (sandbox.connect().await, sandbox.connect().await);
    let (first, second) = (conversation(), conversation());
    a.message_with(&first, "think", json!({"max_turns": 1}))
        .await;
    let turn = b.next().await;
    assert_eq!(turn["type"], "turn", "{turn}");

    let busy = b
        .message_with(&first, "again", json!({"max_turns": 1}))
        .await;
    let refused = b.next().await;
    assert_eq!(
        (
            refused["code"].as_str(),
            refused["conversation_id"].as_str()
        ),
        (Some("turn_in_progress"), Some(first.as_str())),
        "{refused}"
    );
    assert_eq!(refused["message_id"], busy.as_str());
    let over = b
        .message_with(&second, "other", json!({"max_turns": 1}))
        .await;
    let refused = b.next().await;
    assert_eq!(
        (
            refused["code"].as_str(),
            refused["conversation_id"].as_str()
        ),
        (Some("too_many_turns"), Some(second.as_str())),
        "{refused}"
    );
    assert_eq!(refused["message_id"], over.as_str());
    assert!(refused.get("seq").is_none());

    let seen_by_a = a.turn_end(&first).await;
    assert!(refusals(&seen_by_a).is_empty(), "{seen_by_a:?}");
    assert_eq!(text(&seen_by_a), "late");
    let rest = b.turn_end(&first).await;
    assert!(refusals(&rest).is_empty(), "{rest:?}");

    // The turn ended: the workspace has room again.
    world.api.push(Reply::text(&["room"]));
    b.message_with(&second, "other", json!({"max_turns": 1}))
        .await;
    let frames = b.turn_end(&second).await;
    assert_eq!(text(&frames), "room", "{frames:?}");
}

#[tokio::test]
async fn events_are_stored_once_despite_failures_and_the_end_shows_after_storing() {
    let world = World::new().await;
    world.api.fail_events(&[500, 502, 500]);
    world.api.push(Reply::text(&["stored ", "once"]));
    let sandbox = world.sandbox(&[]).await;
    let mut link = sandbox.connect().await;
    let id = conversation();
    let message_id = link.message_with(&id, "store this", json!({})).await;
    let frames = link.turn_end(&id).await;
    let done = frames.last().and_then(|f| f["seq"].as_u64()).expect("end");
    assert_eq!(frames.last().expect("end")["type"], "done");

    // The link saw the end: the post holding it was answered 200 before.
    let posts = world.api.event_posts();
    let failed = posts.iter().filter(|p| p.status != 200).count();
    assert_eq!(failed, 3, "{posts:?}");
    let stored: Vec<u64> = posts
        .iter()
        .filter(|p| p.status == 200)
        .flat_map(|p| p.seqs(&id))
        .collect();
    assert!(stored.contains(&done), "{posts:?}");
    let unique: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "stored twice: {stored:?}");
    assert!(contiguous(&stored, 1, done), "{stored:?}");
    assert_eq!(world.api.stored_events(&id), frames);
    assert!(
        world
            .api
            .stored_message_ids(&id)
            .values()
            .all(|m| m.as_deref() == Some(message_id.as_str()))
    );
}

#[tokio::test]
async fn a_turn_with_no_link_runs_to_its_end_and_is_stored() {
    let world = World::new().await;
    world.api.push(Reply::tool_use(
        "toolu_s",
        "mcp__jarvis__save_document",
        json!({"filename": "alone.md", "content": "# Alone", "type": "markdown"}),
    ));
    world.api.push(Reply::text(&["Saved ", "alone."]));
    world
        .api
        .answer_calls(|_| CallAnswer::result(json!({"id": "doc-9", "filename": "alone.md"})));
    let sandbox = world.sandbox(&[]).await;
    let mut link = sandbox.connect().await;
    let id = conversation();
    link.message(&id, "save it and tell me").await;
    link.ws.close(None).await.expect("close");
    drop(link);

    let stored = world.stored_turn(&id, 0).await;
    assert_eq!(stored.last().expect("end")["type"], "done", "{stored:?}");
    assert_eq!(text(&stored), "Saved alone.");
    let documents = of_type(&stored, "document");
    assert_eq!(documents.len(), 1, "{stored:?}");
    assert_eq!(documents[0]["id"], "doc-9");
    let calls = world.api.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["method"], "save_document");

    // A router that comes back finds the whole turn.
    let mut back = sandbox.connect().await;
    let (replays, _) = back.resume(&id, 0).await;
    assert_eq!(replayed(&replays), stored);
}
