//! A live Jarvis: the router on a TCP socket (its model gateway on the unix
//! socket bound into every jail, and on a second TCP socket, `JARVIS_SANDBOX_LISTEN`,
//! for pods), real `sandbox` processes under bubblewrap
//! running the real Claude Code CLI, and the fake Anthropic API of
//! `sandbox::testing` as the gateway's upstream. Plus a WebSocket browser.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use router::config::Config;
use sandbox::testing::FakeApi;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use super::{TestApp, User};

/// Any single wait in these tests (the CLI starts in about a second when idle,
/// much longer on a loaded machine).
pub const WAIT: Duration = Duration::from_secs(90);

/// The `sandbox` binary cargo built beside this test binary (`target/<profile>/sandbox`).
pub fn sandbox_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("sandbox");
    assert!(
        bin.is_file(),
        "the sandbox binary is missing at {}: run `cargo build -p sandbox --bin sandbox` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The CLI installed by `scripts/install-claude.sh` (or `JARVIS_CLAUDE_BIN`).
pub fn claude_bin() -> PathBuf {
    let path = std::env::var_os("JARVIS_CLAUDE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.tools/claude/node_modules/@anthropic-ai/claude-code/bin/claude.exe")
        });
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    assert!(
        path.is_file(),
        "the Claude Code CLI is missing at {}: run scripts/install-claude.sh",
        path.display()
    );
    path
}

/// The running router and what it talks to.
pub struct Live {
    pub app: TestApp,
    pub api: FakeApi,
    /// The public listener.
    pub url: String,
    /// The sandboxes' listener (`JARVIS_SANDBOX_LISTEN`): the gateway URL of pods.
    pub sandbox_url: String,
    pub tmp: tempfile::TempDir,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Live {
    /// Starts a router with default settings.
    pub async fn start(db: PgPool) -> Self {
        Self::with_config(db, |_| {}).await
    }

    /// Starts a router whose configuration `tweak` adjusts.
    pub async fn with_config(db: PgPool, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::with_state(db, tweak, |_| {}).await
    }

    /// Starts a router whose configuration `tweak` adjusts and whose state
    /// `tweak_state` adjusts before it serves (the egress proxy's resolver, say).
    pub async fn with_state(
        db: PgPool,
        tweak: impl FnOnce(&mut Config),
        tweak_state: impl FnOnce(&mut router::http::AppState),
    ) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        // The sandbox user must be able to reach the directories bound into jails.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod tempdir");
        let api = FakeApi::start().await.expect("fake api");
        let (sandbox, claude) = (sandbox_bin(), claude_bin());
        let root = tmp.path().to_path_buf();
        let upstream = api.url();
        let sandbox_addr =
            std::net::SocketAddr::from(([127, 0, 0, 1], super::process::free_port()));
        let app = TestApp::with_config(db, |c| {
            c.sandbox_listen = Some(sandbox_addr);
            c.workspaces_dir = root.join("workspaces");
            c.run_dir = root.join("run");
            c.sandbox_bin = Some(sandbox);
            c.claude_bin = claude;
            c.model_upstream = upstream;
            c.anthropic_api_key = Some("sk-ant-test-key".into());
            c.wake_timeout = WAIT;
            c.sandbox_uids = test_uids(&root);
            tweak(c);
        })
        .await;
        let mut app = app;
        tweak_state(&mut app.state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(router::http::serve_on(listener, app.state.clone()));
        // Only local sandboxes reach the gateway through its unix socket.
        if app.state.config.backend == router::config::Backend::Local {
            let socket = router::workspaces::gateway_socket(&app.state.config);
            wait_for(|| socket.exists()).await;
        }
        wait_for(|| std::net::TcpStream::connect(sandbox_addr).is_ok()).await;
        Self {
            app,
            api,
            url,
            sandbox_url: format!("http://{sandbox_addr}"),
            tmp,
            server,
        }
    }

    /// A user's workspace directory on the host.
    pub fn workspace(&self, user: &User) -> PathBuf {
        self.tmp
            .path()
            .join("workspaces")
            .join(user.id.to_string())
            .join("workspace")
    }

    /// Opens `/ws` as a browser would (subprotocols, same Origin).
    pub async fn browser(&self, token: &str) -> Browser {
        self.browser_with(token, Some(&self.url.clone()))
            .await
            .expect("the WebSocket opens")
    }

    /// Opens `/ws` with `origin`; the handshake's error when refused.
    pub async fn browser_with(
        &self,
        token: &str,
        origin: Option<&str>,
    ) -> Result<Browser, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("{}/ws", self.url.replacen("http", "ws", 1))
            .into_client_request()
            .expect("request");
        let headers = request.headers_mut();
        headers.insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("jarvis, bearer.{token}")).expect("header"),
        );
        if let Some(origin) = origin {
            headers.insert("origin", HeaderValue::from_str(origin).expect("origin"));
        }
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake in time")?;
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("jarvis")
        );
        Ok(Browser { ws })
    }
}

/// Host uids of one test router's sandboxes, its own: tests run at once, each on
/// a database of its own that would otherwise hand out the same first uid, and a
/// uid's process limit is the kernel's, shared by every sandbox that has it.
/// Derived from the test's data directory, so a restarted router gets the same.
pub fn test_uids(data_dir: &Path) -> router::config::UidRange {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    let slot = (hasher.finish() % 800_000) as u32;
    let first = 1_000_000_000 + slot * 1_000;
    router::config::UidRange {
        first,
        last: first + 999,
    }
}

/// Waits (bounded) until `ready` holds.
pub async fn wait_for(ready: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition met in time");
}

/// A browser's WebSocket.
pub struct Browser {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Browser {
    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }

    /// Sends a user message (new conversation when `conversation` is `None`).
    pub async fn message(&mut self, content: &str, conversation: Option<&str>) {
        let mut frame = json!({"type": "message", "content": content});
        if let Some(c) = conversation {
            frame["conversation_id"] = json!(c);
        }
        self.send(frame).await;
    }

    /// The next JSON frame (pings skipped); `None` when the connection closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(&text).expect("JSON frame"));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Frames up to and including the first that `stop` accepts, within [`WAIT`]
    /// in all (pings do not extend it).
    pub async fn until(&mut self, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.next())
                .await
                .unwrap_or_else(|_| panic!("no matching frame in time; so far: {frames:?}"))
                .unwrap_or_else(|| panic!("connection closed; so far: {frames:?}"));
            let last = stop(&frame);
            frames.push(frame);
            if last {
                return frames;
            }
        }
    }

    /// Asserts that this connection woke the workspace: its first frames are
    /// `status: waking`, then `status: ready`.
    pub async fn woke(&mut self) {
        for state in ["waking", "ready"] {
            let frame = self.next().await;
            assert_eq!(
                frame
                    .as_ref()
                    .map(|f| (f["type"].clone(), f["state"].clone())),
                Some((json!("status"), json!(state))),
                "{frame:?}"
            );
        }
    }

    /// Waits for `status: ready`; an error frame first fails the test.
    pub async fn ready(&mut self) -> Vec<Value> {
        let frames = self
            .until(|f| (f["type"] == "status" && f["state"] == "ready") || f["type"] == "error")
            .await;
        assert_eq!(
            frames.last().map(|f| f["type"].clone()),
            Some(Value::from("status")),
            "the workspace did not wake: {frames:?}"
        );
        frames
    }

    /// Frames until the end of a turn (`done` or an `error`).
    pub async fn turn(&mut self) -> Vec<Value> {
        self.until(|f| f["type"] == "done" || f["type"] == "error")
            .await
    }
}

/// The frames of one type.
pub fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

/// The streamed text of a turn.
pub fn text(frames: &[Value]) -> String {
    of_type(frames, "text")
        .iter()
        .filter_map(|f| f["delta"].as_str())
        .collect()
}

/// The user's one answer once it is stored complete (waits, bounded by [`WAIT`]).
pub async fn stored_answer(db: &sqlx::PgPool, user: uuid::Uuid) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            let row: Option<(String, bool)> = sqlx::query_as(
                "select content, complete from messages where owner_id = $1 and role = 'assistant'",
            )
            .bind(user)
            .fetch_optional(db)
            .await
            .expect("query");
            if let Some((content, true)) = row {
                return content;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the answer is stored complete in time")
}
