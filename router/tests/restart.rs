//! The router process dies mid-turn (SIGKILL: no graceful anything) and starts
//! again on the same database, storage and disk: nothing stored is lost, the cut
//! turn is kept marked incomplete, and the conversation goes on.

mod common;

use std::time::Duration;

use common::{
    live::{WAIT, text},
    process::{data_dir, database_url, open, register, send, start_router, turn, until},
};
use sandbox::testing::{FakeApi, Reply};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_router_killed_mid_turn_loses_no_stored_message(db: PgPool) {
    let dir = data_dir();
    let api = FakeApi::start().await.expect("fake api");
    let db_url = database_url(&db).await;
    let mut router = start_router(&db_url, dir.path(), &api.url()).await;

    let token = register(&router.url, "alice@example.com").await;

    // A finished turn, then one the router dies in the middle of.
    api.push(Reply::text(&["first ", "answer"]));
    api.push(Reply::Stall(Duration::from_secs(600)));
    let mut ws = open(&router.url, &token).await;
    until(&mut ws, |f| f["type"] == "status" && f["state"] == "ready").await;
    let first = turn(
        &mut ws,
        json!({"type": "message", "content": "first question"}),
    )
    .await;
    assert_eq!(text(&first), "first answer", "{first:?}");
    let conversation = first[0]["conversation_id"]
        .as_str()
        .expect("conversation")
        .to_string();
    send(
        &mut ws,
        json!({"type": "message", "content": "second question", "conversation_id": conversation}),
    )
    .await;
    until(&mut ws, |f| f["type"] == "turn").await;
    // Mid-turn: the second model call is in flight (and stalls).
    tokio::time::timeout(WAIT, async {
        while api.message_requests().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the second model call in time");
    router.child.start_kill().expect("kill");
    let _ = router.child.wait().await;
    drop(ws);

    // Everything stored before the crash is there, the cut turn marked incomplete.
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "select role, content, complete from messages where conversation_id = $1::uuid order by position",
    )
    .bind(&conversation)
    .fetch_all(&db)
    .await
    .expect("messages");
    assert_eq!(
        rows,
        vec![
            ("user".into(), "first question".into(), true),
            ("assistant".into(), "first answer".into(), true),
            ("user".into(), "second question".into(), true),
            ("assistant".into(), String::new(), false),
        ]
    );

    // A new router process: same account, same conversation, it goes on.
    let router = start_router(&db_url, dir.path(), &api.url()).await;
    api.push(Reply::text(&["back ", "again"]));
    let mut ws = open(&router.url, &token).await;
    until(&mut ws, |f| f["type"] == "status" && f["state"] == "ready").await;
    let third = turn(
        &mut ws,
        json!({"type": "message", "content": "third question", "conversation_id": conversation}),
    )
    .await;
    assert_eq!(text(&third), "back again", "{third:?}");
    let count: i64 =
        sqlx::query_scalar("select count(*) from messages where conversation_id = $1::uuid")
            .bind(&conversation)
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(count, 6);
}
