//! One router per data directory: a second router started on the same machine
//! and directories refuses to start, names the running one, and leaves it
//! serving (its gateway socket untouched, so its chats still reach the model).

mod common;

use std::{process::Stdio, time::Duration};

use common::{
    live::text,
    process::{
        data_dir, database_url, free_port, open, register, router_command, start_router, turn,
    },
};
use sandbox::testing::{FakeApi, Reply};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_second_router_on_the_same_data_directory_exits_and_the_first_keeps_serving(db: PgPool) {
    let dir = data_dir();
    let api = FakeApi::start().await.expect("fake api");
    let db_url = database_url(&db).await;
    let first = start_router(&db_url, dir.path(), &api.url()).await;
    let first_pid = first.child.id().expect("the first router runs");
    let socket = dir.path().join("run/gateway.sock");
    let socket_inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(&socket).expect("the first router's gateway socket"),
    );

    // The second router: same directories, another port.
    let second = router_command(&db_url, dir.path(), &api.url(), free_port())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the second router starts");
    let output = tokio::time::timeout(Duration::from_secs(30), second.wait_with_output())
        .await
        .expect("the second router exits by itself")
        .expect("its output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must fail: {stderr}");
    assert!(
        stderr.contains(&format!(
            "another router (pid {first_pid}, serving {})",
            first.url
        )),
        "the message names the running router: {stderr}"
    );
    assert!(
        stderr.contains(&dir.path().join("run").display().to_string()),
        "and the directory: {stderr}"
    );

    // The first one's socket is the one it bound, and a whole chat turn works.
    let inode_now =
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&socket).expect("socket"));
    assert_eq!(
        inode_now, socket_inode,
        "the gateway socket was not rebound"
    );
    let token = register(&first.url, "alice@example.com").await;
    api.push(Reply::text(&["still ", "here"]));
    let mut ws = open(&first.url, &token).await;
    let frames = turn(
        &mut ws,
        json!({"type": "message", "content": "are you there?"}),
    )
    .await;
    assert_eq!(text(&frames), "still here", "{frames:?}");
}
