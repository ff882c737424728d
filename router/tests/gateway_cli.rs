//! End to end through the gateway with the real parts: the sandbox (its library,
//! the same code as its binary, on a unix socket) runs the real Claude Code CLI,
//! whose model calls go to this router's gateway, which forwards them to the fake
//! Anthropic API. A turn works and is metered; an exhausted quota reaches the
//! router as the sandbox's `error` event with the gateway's message.

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Parser;
use common::TestApp;
use futures::{SinkExt, StreamExt};
use router::workspaces::tokens;
use sandbox::testing::{FakeApi, Reply};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use uuid::Uuid;

/// Any single wait (the CLI takes about a second to start).
const WAIT: Duration = Duration::from_secs(60);

fn claude_bin() -> PathBuf {
    let path = std::env::var_os("JARVIS_CLAUDE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.tools/claude/node_modules/@anthropic-ai/claude-code/bin/claude.exe")
        });
    assert!(
        path.is_file(),
        "the Claude Code CLI is missing at {}: run scripts/install-claude.sh",
        path.display()
    );
    path
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>;

/// Sends one message and returns the turn's events up to `done` or `error`.
async fn turn(ws: &mut Ws, conversation: Uuid, content: &str) -> Vec<Value> {
    let frame = json!({"type": "message", "content": content, "conversation_id": conversation});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .expect("sent");
    let mut events = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the sandbox answers in time")
            .expect("the socket stays open")
            .expect("a frame");
        let Message::Text(text) = message else {
            continue;
        };
        let event: Value = serde_json::from_str(&text).expect("JSON event");
        let end = matches!(event["type"].as_str(), Some("done" | "error"));
        events.push(event);
        if end {
            return events;
        }
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_cli_turn_is_metered_and_an_exhausted_quota_reaches_the_sandbox_error(db: PgPool) {
    let fake = FakeApi::start().await.expect("fake starts");
    let url = fake.url();
    let app = TestApp::with_config(db, |c| {
        c.model_upstream = url;
        c.anthropic_api_key = Some("sk-ant-real".into());
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gateway = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(axum::serve(listener, app.sandbox.clone()).into_future());

    let user = app.register("a@example.com").await;
    let token = tokens::issue(&app.db, user.id).await.expect("token");
    let conversation = app.insert_conversation(user.id, "chat").await;

    let tmp = tempfile::tempdir().expect("tempdir");
    let socket = tmp.path().join("sandbox.sock");
    let config = sandbox::config::Config::try_parse_from([
        "sandbox".into(),
        format!("--listen=unix:{}", socket.display()),
        format!("--workspace-token={token}"),
        format!("--gateway-url={gateway}"),
        format!("--claude-bin={}", claude_bin().display()),
        format!("--workspace-dir={}", tmp.path().join("workspace").display()),
        format!("--state-dir={}", tmp.path().join("state").display()),
    ])
    .expect("sandbox config");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sandbox = tokio::spawn(sandbox::run::run(config, async move {
        let _ = stopped.await;
    }));
    let connected = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(stream) = tokio::net::UnixStream::connect(&socket).await {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the sandbox listens in time");
    let mut request = "ws://sandbox/ws".into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut ws, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, connected))
            .await
            .expect("handshake in time")
            .expect("handshake");

    fake.push(Reply::text(&["Hello ", "through the gateway"]));
    let events = turn(&mut ws, conversation, "hi").await;
    let last = events.last().expect("events");
    assert_eq!(last["type"], "done", "{events:#?}");
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "text")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert!(text.contains("through the gateway"), "{text}");
    let real_key_only = fake
        .message_requests()
        .iter()
        .all(|r| r.api_key.as_deref() == Some("sk-ant-real"));
    assert!(real_key_only, "the upstream saw only the real key");
    // The CLI's betas pass the gateway's list (unknown ones would be dropped).
    for r in fake.message_requests() {
        let betas = r.beta.unwrap_or_default();
        assert!(betas.contains("claude-code-20250219"), "{betas}");
        assert!(
            betas
                .split(',')
                .all(|b| router::http::gateway::policy::KNOWN_BETAS.contains(&b)),
            "{betas}"
        );
    }

    let metered = tokio::time::timeout(WAIT, async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "select count(*) from usage where owner_id = $1 and conversation_id = $2 and output_tokens > 0",
            )
            .bind(user.id)
            .bind(conversation)
            .fetch_one(&app.db)
            .await
            .expect("count");
            if n > 0 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the turn's usage is recorded");
    assert!(metered >= 1);

    sqlx::query("insert into usage (owner_id, model, input_tokens) values ($1, 'm', 1000000)")
        .bind(user.id)
        .execute(&app.db)
        .await
        .expect("quota used up");
    // Usage recorded elsewhere (not by this router's calls) counts once what the
    // gateway remembered of the account is read again (`http::standing`).
    tokio::time::sleep(router::http::standing::STANDING_TTL).await;
    let calls_before = fake.message_requests().len();
    let events = turn(&mut ws, conversation, "again").await;
    let last = events.last().expect("events");
    assert_eq!(last["type"], "error", "{events:#?}");
    assert_eq!(last["code"], "rate_limited");
    let message = last["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "Your free plan's monthly token quota (1,000,000) is used up; upgrade or wait until"
        ),
        "{message}"
    );
    assert_eq!(
        fake.message_requests().len(),
        calls_before,
        "nothing forwarded"
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(WAIT, sandbox).await;
}
