//! Uploads end to end: the real router on a socket, real local sandboxes under
//! bubblewrap running the real CLI, the fake model upstream scripting the
//! agent's tool calls.

mod common;

use std::time::Duration;

use common::{
    User,
    live::{Live, WAIT, of_type, wait_for},
};
use router::proxy::Status;
use sandbox::testing::Reply;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;

const BOUNDARY: &str = "jarvis-live-boundary-x81bd02";

fn multipart(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content) in files {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Uploads over HTTP; the `files` of the 201 answer.
async fn upload(live: &Live, user: &User, files: &[(&str, &[u8])]) -> Vec<Value> {
    let response = tokio::time::timeout(
        WAIT,
        reqwest::Client::new()
            .post(format!("{}/api/files", live.url))
            .bearer_auth(&user.access)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(multipart(files))
            .send(),
    )
    .await
    .expect("answered in time")
    .expect("sent");
    assert_eq!(response.status().as_u16(), 201);
    let body: Value = response.json().await.expect("JSON");
    body["files"].as_array().expect("files").clone()
}

/// The content of the first tool result of a turn.
fn first_result(frames: &[Value]) -> String {
    of_type(frames, "tool_result")
        .first()
        .and_then(|r| r["content"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no tool result: {frames:?}"))
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_attached_upload_is_read_by_the_agents_own_read_tool(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    let csv = b"region,total\nnorth,4242\nsouth,17\n";
    let files = upload(&live, &alice, &[("sales.csv", csv)]).await;
    let id = files[0]["id"].as_str().expect("id").to_string();
    // The awake workspace has it now, as the sandbox's own file.
    let copy = live.workspace(&alice).join("uploads/sales.csv");
    assert_eq!(std::fs::read(&copy).expect("copied"), csv);

    live.api.push(Reply::tool_use(
        "toolu_read",
        "Read",
        json!({"file_path": "/workspace/uploads/sales.csv"}),
    ));
    live.api.push(Reply::text(&["North sold 4242."]));
    a.send(json!({"type": "message", "content": "who sold most?", "attachments": [id]}))
        .await;
    let frames = a.turn().await;
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("done"))
    );
    let result = first_result(&frames);
    assert!(result.contains("north,4242"), "{result}");
    // The agent was told where the file is, before it called any tool.
    let first = live
        .api
        .message_requests()
        .into_iter()
        .map(|r| r.body.to_string())
        .find(|b| b.contains("who sold most?"))
        .expect("the turn's first model request");
    assert!(
        first.contains("in your working directory: uploads/sales.csv")
            && !first.contains("toolu_read"),
        "{first}"
    );
    // The message keeps its attachment.
    let conversation = frames[0]["conversation_id"].as_str().expect("conversation");
    let stored = live
        .app
        .get(&format!("/api/conversations/{conversation}"), &alice.access)
        .await;
    let user_message = stored.body["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "user"))
        .cloned()
        .expect("the user's message");
    assert_eq!(user_message["events"][0]["type"], "attachment");
    assert_eq!(user_message["events"][0]["filename"], "sales.csv");

    // Deleting the upload removes the workspace copy too.
    let deleted = reqwest::Client::new()
        .delete(format!("{}/api/files/{id}", live.url))
        .bearer_auth(&alice.access)
        .send()
        .await
        .expect("sent");
    assert_eq!(deleted.status().as_u16(), 204);
    assert!(!copy.exists(), "the workspace copy is gone");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn another_users_agent_cannot_see_or_attach_an_upload(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    let files = upload(&live, &alice, &[("diary.txt", b"alice-secret-9137")]).await;
    let id = files[0]["id"].as_str().expect("id").to_string();

    let mut b = live.browser(&bob.access).await;
    b.ready().await;
    b.send(json!({"type": "message", "content": "read it", "attachments": [id]}))
        .await;
    let refused = b.turn().await;
    let error = refused.last().expect("a frame");
    assert_eq!(error["type"], "error", "{refused:?}");
    assert_eq!(error["code"], "attachment_not_found");

    live.api.push(Reply::tool_use(
        "toolu_snoop",
        "Bash",
        json!({"command": "cat /workspace/uploads/diary.txt; ls -la /workspace /workspace/uploads; echo END", "description": "look"}),
    ));
    live.api.push(Reply::text(&["nothing"]));
    b.message("look for diary.txt", None).await;
    let output = first_result(&b.turn().await);
    assert!(output.contains("END"), "{output}");
    assert!(!output.contains("alice-secret-9137"), "{output}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn files_uploaded_while_the_workspace_sleeps_are_there_after_it_wakes(db: PgPool) {
    let live = Live::with_config(db, |c| c.idle_timeout = Duration::from_secs(1)).await;
    let alice = live.app.register("alice@example.com").await;
    // Never woken on this machine: the first wake restores it from storage.
    upload(
        &live,
        &alice,
        &[("before.txt", b"uploaded before any wake")],
    )
    .await;
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    drop(a);
    let hub = live.app.state.workspaces.hub(alice.id);
    wait_for(|| hub.status() == Status::Asleep).await;

    // Asleep, files on this machine: it is copied in at once.
    upload(&live, &alice, &[("asleep.txt", b"uploaded while asleep")]).await;
    assert_eq!(hub.status(), Status::Asleep);
    let uploads = live.workspace(&alice).join("uploads");
    assert_eq!(
        std::fs::read(uploads.join("asleep.txt")).expect("copied while asleep"),
        b"uploaded while asleep"
    );

    live.api.push(Reply::tool_use(
        "toolu_cat",
        "Bash",
        json!({"command": "cat /workspace/uploads/before.txt /workspace/uploads/asleep.txt; echo >> /workspace/uploads/asleep.txt && echo WRITABLE", "description": "read"}),
    ));
    live.api.push(Reply::text(&["both there"]));
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    a.message("read my uploads", None).await;
    let output = first_result(&a.turn().await);
    assert!(output.contains("uploaded before any wake"), "{output}");
    assert!(output.contains("uploaded while asleep"), "{output}");
    assert!(
        output.contains("WRITABLE"),
        "the copy is the agent's: {output}"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_connection_dropped_halfway_stores_nothing(db: PgPool) {
    let live = Live::start(db).await;
    let alice = live.app.register("alice@example.com").await;
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    let body = multipart(&[("big.bin", &vec![9u8; 40 * 1024 * 1024])]);
    let addr = live.url.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        alice.access,
        body.len()
    );
    socket.write_all(head.as_bytes()).await.expect("head");
    socket
        .write_all(&body[..16 * 1024 * 1024])
        .await
        .expect("first part");
    socket.flush().await.expect("flush");
    // The router is storing it (a multipart upload's staging file exists) …
    let uploads = live
        .app
        .storage_dir
        .path()
        .join(format!("users/{}/uploads", alice.id));
    let entries = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    wait_for(|| entries(&uploads) > 0).await;
    // … when the client goes away.
    drop(socket);
    wait_for(|| entries(&uploads) == 0).await;
    let rows: i64 = sqlx::query_scalar("select count(*) from files where owner_id = $1")
        .bind(alice.id)
        .fetch_one(&live.app.db)
        .await
        .expect("count");
    assert_eq!(rows, 0);
    assert_eq!(entries(&live.workspace(&alice).join("uploads")), 0);
    // The next upload works.
    let files = upload(&live, &alice, &[("small.txt", b"fine")]).await;
    assert_eq!(files[0]["filename"], "small.txt");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_client_still_sending_an_oversize_file_reads_the_413_and_nothing_is_stored(db: PgPool) {
    let live = Live::with_config(db, |c| c.max_upload_bytes = 64 * 1024).await;
    let alice = live.app.register("alice@example.com").await;
    let body = multipart(&[("huge.bin", &vec![1u8; 8 * 1024 * 1024])]);
    let response = tokio::time::timeout(
        WAIT,
        reqwest::Client::new()
            .post(format!("{}/api/files", live.url))
            .bearer_auth(&alice.access)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send(),
    )
    .await
    .expect("answered in time")
    .expect("the answer is readable, not a reset connection");
    assert_eq!(response.status().as_u16(), 413);
    let error: Value = response.json().await.expect("JSON error");
    assert_eq!(error["error"]["code"], "payload_too_large");
    let message = error["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("65536"), "{message}");
    let rows: i64 = sqlx::query_scalar("select count(*) from files where owner_id = $1")
        .bind(alice.id)
        .fetch_one(&live.app.db)
        .await
        .expect("count");
    assert_eq!(rows, 0);
    let uploads = live
        .app
        .storage_dir
        .path()
        .join(format!("users/{}/uploads", alice.id));
    let left = std::fs::read_dir(&uploads).map_or(0, |d| d.flatten().count());
    assert_eq!(left, 0);
}
