//! Warm wake (issue 20) on the local backend: the real `sandbox` under
//! bubblewrap with the real Claude Code CLI, and the fake Anthropic API. With
//! `JARVIS_WARM_POOL=1` a waking user claims the pre-started sandbox (its uid
//! becomes the workspace's), a new conversation's first message is answered by
//! the spare CLI that was already running, the user's files and a conversation
//! from before the sleep are there after a warm wake, a wake that finds the
//! pool empty takes the usual path, and the agent's shell never sees the
//! workspace token.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{
    User,
    live::{Live, of_type, text, wait_for},
};
use router::proxy::Status;
use sandbox::testing::Reply;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// The uids warm slots hold now.
async fn reserved_uids(live: &Live) -> Vec<i64> {
    sqlx::query_scalar("select host_uid from warm_slots")
        .fetch_all(&live.app.db)
        .await
        .expect("warm slots")
}

async fn host_uid(live: &Live, user: &User) -> i64 {
    sqlx::query_scalar("select host_uid from workspaces where owner_id = $1")
        .bind(user.id)
        .fetch_one(&live.app.db)
        .await
        .expect("the workspace's uid")
}

/// The conversation → CLI session map of `user`'s agent state.
fn sessions(live: &Live, user: &User) -> Value {
    let path = live
        .tmp
        .path()
        .join("workspaces")
        .join(user.id.to_string())
        .join("state/jarvis/sessions.json");
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

fn conversation_of(frames: &[Value]) -> String {
    frames
        .iter()
        .find_map(|f| f["conversation_id"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no conversation id: {frames:?}"))
}

/// Asserts that `conversation`'s history lives in a CLI session of its own (a
/// spare CLI took its first message).
fn answered_by_a_spare(live: &Live, user: &User, conversation: &str) {
    let map = sessions(live, user);
    let session = map[conversation]
        .as_str()
        .unwrap_or_else(|| panic!("{conversation} has no spare session: {map}"));
    assert_ne!(session, conversation);
    assert!(Uuid::parse_str(session).is_ok(), "{session}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_sleeping_user_wakes_into_a_warm_sandbox_with_files_history_and_no_token_in_reach(
    db: PgPool,
) {
    let live = Live::with_config(db, |c| c.warm_pool = 1).await;
    let registry = live.app.state.workspaces.clone();
    wait_for(|| registry.warm_slots() == 1).await;
    let first_slot = reserved_uids(&live).await;
    assert_eq!(first_slot.len(), 1);

    // Two users wake at once: one claims the one slot, the other finds the pool
    // empty and gets a sandbox started as without a pool. Both are answered.
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;
    let (mut a, mut b) = (
        live.browser(&alice.access).await,
        live.browser(&bob.access).await,
    );
    a.message("hello one", None).await;
    b.message("hello bob", None).await;
    let (first, bobs) = tokio::join!(a.turn(), b.turn());
    assert_eq!(text(&first), "ok", "{first:?}");
    assert_eq!(text(&bobs), "ok", "{bobs:?}");
    let c1 = conversation_of(&first);
    let claimed: Vec<bool> = [host_uid(&live, &alice).await, host_uid(&live, &bob).await]
        .iter()
        .map(|uid| first_slot.contains(uid))
        .collect();
    assert_eq!(
        claimed.iter().filter(|c| **c).count(),
        1,
        "exactly one wake claimed the slot: {claimed:?}"
    );
    let warm_one = if claimed[0] { &alice } else { &bob };
    let warm_conversation = if claimed[0] {
        c1.clone()
    } else {
        conversation_of(&bobs)
    };
    answered_by_a_spare(&live, warm_one, &warm_conversation);

    // Alice's files on the host, then she sleeps.
    std::fs::write(live.workspace(&alice).join("notes.txt"), "before the sleep").expect("write");
    drop(a);
    let hub = registry.hub(alice.id);
    registry.sleep(&hub).await.expect("sleeps");
    wait_for(|| hub.status() == Status::Asleep).await;
    wait_for(|| registry.warm_slots() == 1).await;
    let second_slot = reserved_uids(&live).await;
    assert_eq!(second_slot.len(), 1);

    // Her wake claims the refilled slot: her uid is its uid now.
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    let uid = host_uid(&live, &alice).await;
    assert_eq!(vec![uid], second_slot, "the wake claimed the warm slot");
    let notes = live.workspace(&alice).join("notes.txt");
    assert_eq!(
        std::fs::read_to_string(&notes).expect("her file is there"),
        "before the sleep"
    );
    assert_eq!(
        i64::from(std::fs::metadata(&notes).expect("stat").uid()),
        uid
    );

    // The conversation from before the sleep goes on with its history.
    live.api.push(Reply::Echo);
    a.message("hello two", Some(&c1)).await;
    let resumed = a.turn().await;
    let heard = text(&resumed);
    assert!(
        heard.starts_with("Heard: ") && heard.contains("hello one | hello two"),
        "{resumed:?}"
    );

    // A new conversation is answered by the spare CLI that was running.
    live.api.push(Reply::tool_use(
        "toolu_env",
        "Bash",
        json!({"command": "env", "description": "environment"}),
    ));
    live.api.push(Reply::text(&["seen"]));
    a.message("what is in your environment?", None).await;
    let frames = a.turn().await;
    answered_by_a_spare(&live, &alice, &conversation_of(&frames));
    let env = of_type(&frames, "tool_result")
        .first()
        .and_then(|r| r["content"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no tool result: {frames:?}"));
    assert!(
        env.contains("ANTHROPIC_API_KEY=jarvis-sandbox-placeholder"),
        "{env}"
    );
    assert!(
        !env.contains("jw_"),
        "the workspace token is in reach: {env}"
    );
}
