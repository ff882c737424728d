//! The router process dies mid-turn (SIGKILL: no graceful anything) and starts
//! again on the same database, storage and disk: nothing stored is lost, the cut
//! turn is kept marked incomplete, and the conversation goes on.

mod common;

use std::{path::Path, process::Stdio, time::Duration};

use common::live::{WAIT, claude_bin, sandbox_bin, text};
use futures::{SinkExt, StreamExt};
use sandbox::testing::{FakeApi, Reply};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

struct RouterProcess {
    child: Child,
    url: String,
}

/// Starts the real `router` binary on a free port and waits for `/readyz`.
async fn start_router(db_url: &str, dir: &Path, upstream: &str) -> RouterProcess {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().expect("addr").port()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_router"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("JARVIS_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "JARVIS_STORAGE",
            format!("file:{}", dir.join("storage").display()),
        )
        .env("JARVIS_WORKSPACES_DIR", dir.join("workspaces"))
        .env("JARVIS_RUN_DIR", dir.join("run"))
        .env("JARVIS_SANDBOX_BIN", sandbox_bin())
        .env("JARVIS_CLAUDE_BIN", claude_bin())
        .env("JARVIS_MODEL_UPSTREAM", upstream)
        .env("ANTHROPIC_API_KEY", "sk-ant-test-key")
        .env("JARVIS_WAKE_TIMEOUT", "90s")
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the router binary starts");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(r) = client.get(format!("{url}/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the router is ready in time");
    RouterProcess { child, url }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str, token: &str) -> Ws {
    let mut request = format!("{}/ws", url.replacen("http", "ws", 1))
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("jarvis, bearer.{token}")).expect("header"),
    );
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_str(url).expect("origin"));
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the WebSocket opens");
    ws
}

async fn until(ws: &mut Ws, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time");
        match message {
            Some(Ok(Message::Text(t))) => {
                let frame: Value = serde_json::from_str(&t).expect("JSON");
                let last = stop(&frame);
                frames.push(frame);
                if last {
                    return frames;
                }
            }
            Some(Ok(_)) => {}
            _ => panic!("connection closed; so far {frames:?}"),
        }
    }
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
}

/// The URL of the test's own database (same server as `DATABASE_URL`).
async fn database_url(db: &PgPool) -> String {
    let name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(db)
        .await
        .expect("database name");
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s);
    format!("{server}/{name}")
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_router_killed_mid_turn_loses_no_stored_message(db: PgPool) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let api = FakeApi::start().await.expect("fake api");
    let db_url = database_url(&db).await;
    let mut router = start_router(&db_url, dir.path(), &api.url()).await;

    let client = reqwest::Client::new();
    let registered: Value = client
        .post(format!("{}/api/auth/register", router.url))
        .json(&json!({"email": "alice@example.com", "password": common::PASSWORD}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("JSON");
    let token = registered["access_token"]
        .as_str()
        .expect("access token")
        .to_string();

    // A finished turn, then one the router dies in the middle of.
    api.push(Reply::text(&["first ", "answer"]));
    api.push(Reply::Stall(Duration::from_secs(600)));
    let mut ws = open(&router.url, &token).await;
    until(&mut ws, |f| f["type"] == "status" && f["state"] == "ready").await;
    send(
        &mut ws,
        json!({"type": "message", "content": "first question"}),
    )
    .await;
    let first = until(&mut ws, |f| f["type"] == "done" || f["type"] == "error").await;
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
    send(
        &mut ws,
        json!({"type": "message", "content": "third question", "conversation_id": conversation}),
    )
    .await;
    let third = until(&mut ws, |f| f["type"] == "done" || f["type"] == "error").await;
    assert_eq!(text(&third), "back again", "{third:?}");
    let count: i64 =
        sqlx::query_scalar("select count(*) from messages where conversation_id = $1::uuid")
            .bind(&conversation)
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(count, 6);
}
