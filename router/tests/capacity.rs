//! The machine's room for awake workspaces (`JARVIS_MAX_WORKSPACES`) end to
//! end: a real router, real local sandboxes under bubblewrap running the real
//! CLI, the fake model upstream.

mod common;

use std::time::Duration;

use common::live::{Live, of_type, stored_answer, text, wait_for};
use router::{proxy::Status, workspaces::capacity::MIN_IDLE};
use sandbox::testing::Reply;
use serde_json::json;
use sqlx::PgPool;

/// Whether `user`'s jail (the bubblewrap process of their workspace) runs.
fn sandbox_runs(user: uuid::Uuid) -> bool {
    let needle = format!("{user}/workspace");
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("bwrap") && cmdline.contains(&needle)
        })
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_wake_past_the_limit_puts_the_least_recently_used_idle_workspace_to_sleep(db: PgPool) {
    let live = Live::with_config(db, |c| c.max_workspaces = Some(2)).await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;
    let carol = live.app.register("carol@example.com").await;

    live.api.push(Reply::tool_use(
        "toolu_w",
        "Write",
        json!({"file_path": "/workspace/notes.txt", "content": "kept while asleep"}),
    ));
    live.api.push(Reply::text(&["written"]));
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("write notes", None).await;
    assert_eq!(
        a.turn().await.last().map(|f| f["type"].clone()),
        Some(json!("done"))
    );
    drop(a);

    live.api.push(Reply::text(&["hi ", "Bob"]));
    let mut b = live.browser(&bob.access).await;
    b.ready().await;
    b.message("hi", None).await;
    assert_eq!(text(&b.turn().await), "hi Bob");
    // Bob keeps his tab open; both are idle long enough to be put to sleep.
    tokio::time::sleep(MIN_IDLE + Duration::from_millis(500)).await;
    assert_eq!(live.app.state.workspaces.capacity(), Some((2, 2)));

    live.api.push(Reply::text(&["hi ", "Carol"]));
    let mut c = live.browser(&carol.access).await;
    c.ready().await;
    c.message("hi", None).await;
    assert_eq!(text(&c.turn().await), "hi Carol");

    // Alice's was the one nobody had open: asleep, its sandbox stopped, its
    // files stored. Bob's stays awake.
    let registry = &live.app.state.workspaces;
    wait_for(|| registry.hub(alice.id).status() == Status::Asleep).await;
    assert!(!sandbox_runs(alice.id));
    assert_eq!(registry.hub(bob.id).status(), Status::Ready);
    assert!(sandbox_runs(bob.id) && sandbox_runs(carol.id));
    assert_eq!(registry.capacity(), Some((2, 2)));
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from files where owner_id = $1 and path like '%notes.txt'",
    )
    .bind(alice.id)
    .fetch_one(&live.app.db)
    .await
    .expect("files");
    assert_eq!(
        stored, 1,
        "alice's file is stored when her workspace sleeps"
    );

    // Bob's open tab still works: his next message is answered by his own
    // sandbox, or by a new one if his was the next to go.
    live.api.push(Reply::text(&["again"]));
    b.message("again", None).await;
    assert_eq!(text(&b.turn().await), "again");
    assert_eq!(registry.capacity().map(|(_, awake)| awake), Some(2));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_wake_waits_for_a_turn_to_end_and_past_the_wait_is_told_the_machine_is_full(db: PgPool) {
    let live = Live::with_config(db, |c| {
        c.max_workspaces = Some(1);
        c.capacity_wait = Duration::from_secs(2);
    })
    .await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;

    live.api.push(Reply::Stall(Duration::from_secs(6)));
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("take your time", None).await;
    a.until(|f| f["type"] == "turn").await;

    // Alice's turn holds the only slot: Bob's wake waits, then is refused.
    let mut b = live.browser(&bob.access).await;
    let frames = b.until(|f| f["type"] == "error").await;
    assert_eq!(frames[0]["state"], "waking", "{frames:?}");
    let error = frames.last().expect("the error");
    assert_eq!(error["code"], "wake_failed", "{error}");
    assert!(
        error["message"].as_str().unwrap_or("").contains("capacity"),
        "{error}"
    );
    assert!(!sandbox_runs(bob.id));

    // Alice's turn was never touched.
    let frames = a.turn().await;
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("done")),
        "{frames:?}"
    );
    assert!(text(&frames).contains("late"), "{frames:?}");
    assert!(stored_answer(&live.app.db, alice.id).await.contains("late"));

    // Once her workspace has been idle a while, Bob's message takes its room.
    tokio::time::sleep(MIN_IDLE).await;
    live.api.push(Reply::text(&["room ", "made"]));
    b.message("now?", None).await;
    let frames = b.turn().await;
    assert_eq!(text(&frames), "room made", "{frames:?}");
    assert!(of_type(&frames, "error").is_empty(), "{frames:?}");
    let registry = &live.app.state.workspaces;
    assert_eq!(registry.hub(alice.id).status(), Status::Asleep);
    assert!(!sandbox_runs(alice.id));
    assert_eq!(registry.capacity(), Some((1, 1)));
    drop(a);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_message_on_its_way_keeps_its_workspace_from_being_put_to_sleep(db: PgPool) {
    let live = Live::with_config(db, |c| {
        c.max_workspaces = Some(1);
        c.capacity_wait = Duration::from_secs(2);
    })
    .await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    tokio::time::sleep(MIN_IDLE + Duration::from_millis(500)).await;

    // Alice's message is between her tab and her sandbox (waiting for its
    // rows, say): her idle workspace is not Bob's to take.
    let registry = &live.app.state.workspaces;
    let on_its_way = registry.hub(alice.id).starting_turn();
    let mut b = live.browser(&bob.access).await;
    let frames = b.until(|f| f["type"] == "error").await;
    assert_eq!(
        frames.last().map(|f| f["code"].clone()),
        Some(json!("wake_failed"))
    );
    assert_eq!(registry.hub(alice.id).status(), Status::Ready);
    assert!(sandbox_runs(alice.id));

    // Once it has gone, hers is the idle one that makes room.
    drop(on_its_way);
    tokio::time::sleep(MIN_IDLE).await;
    live.api.push(Reply::text(&["bob's"]));
    b.message("hi", None).await;
    assert_eq!(text(&b.turn().await), "bob's");
    assert_eq!(registry.hub(alice.id).status(), Status::Asleep);
    drop(a);
}
