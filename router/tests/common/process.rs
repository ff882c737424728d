//! The real `router` binary as a child process (what `scripts/run.sh` starts), and
//! a plain WebSocket client for it: for tests of what only a whole process shows
//! (a crash, a restart, two routers on one machine).

use std::{path::Path, process::Stdio, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

use super::live::{WAIT, claude_bin, sandbox_bin};

/// A router process and its base URL.
pub struct RouterProcess {
    pub child: Child,
    pub url: String,
}

/// A temporary data directory the sandbox user can reach (mode 0755).
pub fn data_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A free loopback port.
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    probe.local_addr().expect("addr").port()
}

/// The `router` binary set up on `port` with its data under `dir`, the database
/// at `db_url` and `upstream` as the model API; stdout discarded, stderr inherited.
pub fn router_command(db_url: &str, dir: &Path, upstream: &str, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_router"));
    command
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
        .env("JARVIS_SANDBOX_UIDS", {
            let uids = super::live::test_uids(dir);
            format!("{}-{}", uids.first, uids.last)
        })
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// Starts the real `router` binary on a free port and waits for `/readyz`.
pub async fn start_router(db_url: &str, dir: &Path, upstream: &str) -> RouterProcess {
    spawn_ready(|port| router_command(db_url, dir, upstream, port)).await
}

/// Spawns the router `command(port)` makes for a free `port` and waits for its
/// `/readyz`. A port found free may be taken by another test before the router
/// binds it: a router that exits before it is ready is started again on fresh
/// ports (the closure picks any other ports it binds), three times at most.
pub async fn spawn_ready(mut command: impl FnMut(u16) -> Command) -> RouterProcess {
    for attempt in 1..=3 {
        let port = free_port();
        let mut child = command(port).spawn().expect("the router binary starts");
        let url = format!("http://127.0.0.1:{port}");
        if ready_unless_exited(&mut child, &url).await {
            return RouterProcess { child, url };
        }
        eprintln!(
            "the router exited before it was ready (attempt {attempt}); again on other ports"
        );
    }
    panic!("the router exited before it was ready, three times");
}

/// Waits (bounded) until the router at `url` answers `/readyz` with success
/// (`true`) or `child` exits (`false`).
async fn ready_unless_exited(child: &mut tokio::process::Child, url: &str) -> bool {
    let client = reqwest::Client::new();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(r) = client.get(format!("{url}/readyz")).send().await
                && r.status().is_success()
            {
                return true;
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the router is ready in time")
}

/// Waits (bounded) until the router at `url` answers `/readyz` with success.
pub async fn wait_ready(url: &str) {
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
}

/// Registers a built-in account on the router at `url`; its access token.
pub async fn register(url: &str, email: &str) -> String {
    let registered: Value = reqwest::Client::new()
        .post(format!("{url}/api/auth/register"))
        .json(&json!({"email": email, "password": super::PASSWORD}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("JSON");
    registered["access_token"]
        .as_str()
        .expect("access token")
        .to_string()
}

/// A plain WebSocket client's connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/ws` as a browser does (bearer subprotocol, the router's own Origin).
pub async fn open(url: &str, token: &str) -> Ws {
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

/// The frames up to and including the first that `stop` accepts, within [`WAIT`]
/// in all (pings do not extend it, so a turn that never ends fails the test).
pub async fn until(ws: &mut Ws, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no matching frame in time; so far {frames:?}"));
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

/// Sends one JSON frame.
pub async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
}

/// Sends `frame` (a message) and returns the frames up to the turn's end
/// (`done` or `error`).
pub async fn turn(ws: &mut Ws, frame: Value) -> Vec<Value> {
    send(ws, frame).await;
    until(ws, |f| f["type"] == "done" || f["type"] == "error").await
}

/// The URL of the test's own database (same server as `DATABASE_URL`).
pub async fn database_url(db: &PgPool) -> String {
    let name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(db)
        .await
        .expect("database name");
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s);
    format!("{server}/{name}")
}
