//! A live router for the benches that run real sandboxes: the local backend
//! (real `sandbox` processes under bubblewrap running the real Claude Code
//! CLI), the fake Anthropic API of `sandbox::testing` as the gateway's
//! upstream, and a browser's turn over `/ws`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use router::{
    config::{Config, UidRange},
    http::AppState,
    workspaces::Registry,
};
use sandbox::testing::FakeApi;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use uuid::Uuid;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Longest any one wait may take.
pub const WAIT: Duration = Duration::from_secs(600);

/// A router on a loopback port.
pub struct Jarvis {
    pub state: AppState,
    pub registry: Registry,
    /// `ws://…/ws`.
    pub url: String,
    /// The origin a browser of this router sends.
    pub origin: String,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub first_uid: u32,
}

/// A browser's view of one turn.
pub struct Turn {
    /// Connect → the first `text` frame.
    pub first_text: Duration,
    /// Connect → `done` (when read to the end).
    pub done: Option<Duration>,
    /// The answer's text as streamed (to the first text only, when not read to the end).
    pub text: String,
}

impl Jarvis {
    /// A router with the defaults, storage and workspaces under `dir`,
    /// sandboxes' uids from `first_uid`, then what `tweak` sets.
    pub async fn start(
        db_url: &str,
        dir: &Path,
        api: &FakeApi,
        first_uid: u32,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let exe = std::env::current_exe()?;
        let profile = exe
            .parent()
            .and_then(|d| d.parent())
            .context("target/<profile>")?;
        let sandbox_bin = profile.join("sandbox");
        anyhow::ensure!(
            sandbox_bin.is_file(),
            "build the sandbox first: cargo build --release -p sandbox ({} missing)",
            sandbox_bin.display()
        );
        let mut config = Config::defaults();
        config.database_url = db_url.to_string();
        config.storage = format!("file:{}", dir.join("storage").display());
        config.workspaces_dir = dir.join("workspaces");
        config.run_dir = dir.join("run");
        config.sandbox_bin = Some(sandbox_bin);
        config.claude_bin = std::fs::canonicalize(
            root.join(".tools/claude/node_modules/@anthropic-ai/claude-code/bin/claude.exe"),
        )?;
        config.jwt_secret = Some("bench-secret-bench-secret-bench-secret".into());
        config.model_upstream = api.url();
        config.anthropic_api_key = Some("sk-ant-bench".into());
        config.wake_timeout = WAIT;
        config.sandbox_uids = UidRange {
            first: first_uid,
            last: first_uid + 999,
        };
        tweak(&mut config);
        // A pool of its own: a connection one router leaves broken stays its own.
        let db = router::db::connect(db_url, 40).await?;
        let state = AppState::new(config, db.clone()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let registry = state.workspaces.clone();
        let server = tokio::spawn(router::http::serve_on(listener, state.clone()));
        let gateway = router::workspaces::gateway_socket(&state.config);
        wait_until(|| gateway.exists()).await?;
        Ok(Self {
            state,
            registry,
            url: format!("ws://{addr}/ws"),
            origin: format!("http://{addr}"),
            server,
            first_uid,
        })
    }

    /// A new built-in account: its id and access token.
    pub async fn user(&self, email: &str) -> anyhow::Result<(Uuid, String)> {
        let (id, email): (Uuid, String) = sqlx::query_as(
            "insert into users (email, password_hash) values ($1, 'x') returning id, email",
        )
        .bind(email)
        .fetch_one(&self.state.db)
        .await?;
        let token = self
            .state
            .auth
            .local()
            .context("built-in accounts")?
            .issue(id, &email)?;
        Ok((id, token))
    }

    /// Opens `/ws` as the holder of `token`, from the router's own origin.
    async fn open(&self, token: &str) -> anyhow::Result<Socket> {
        let mut request = self.url.as_str().into_client_request()?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("jarvis, bearer.{token}"))?,
        );
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(&self.origin)?);
        Ok(tokio_tungstenite::connect_async(request).await?.0)
    }

    /// Opens `/ws` and times it to the `ready` status (a wake, when the
    /// workspace sleeps).
    pub async fn until_ready(&self, token: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut ws = self.open(token).await?;
        let deadline = tokio::time::Instant::from_std(started) + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let frame: Value = serde_json::from_str(&t)?;
                    if frame["type"] == "status" && frame["state"] == "ready" {
                        let took = started.elapsed();
                        let _ = ws.close(None).await;
                        return Ok(took);
                    }
                    if frame["type"] == "error" {
                        bail!("{frame}");
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => bail!("no ready: {other:?}"),
            }
        }
    }

    /// Opens `/ws`, sends `content` in a new conversation and times it to the
    /// first text; then reads on to the turn's end when `finish`.
    pub async fn turn(&self, token: &str, content: &str, finish: bool) -> anyhow::Result<Turn> {
        let started = Instant::now();
        let mut ws = self.open(token).await?;
        let message = json!({"type": "message", "content": content});
        ws.send(Message::text(message.to_string())).await?;
        let (mut first_text, mut done, mut text) = (None, None, String::new());
        // One deadline for the whole turn: the router's pings would restart a
        // wait per frame forever.
        let deadline = tokio::time::Instant::from_std(started) + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let frame: Value = serde_json::from_str(&t)?;
                    match frame["type"].as_str() {
                        Some("text") => {
                            text.push_str(frame["delta"].as_str().unwrap_or(""));
                            if first_text.is_none() {
                                first_text = Some(started.elapsed());
                                if !finish {
                                    break;
                                }
                            }
                        }
                        Some("done") if first_text.is_some() => {
                            done = Some(started.elapsed());
                            break;
                        }
                        Some("error") => bail!("{frame}"),
                        _ => {}
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => bail!("no text: {other:?}"),
            }
        }
        let _ = ws.close(None).await;
        Ok(Turn {
            first_text: first_text.context("no text")?,
            done,
            text,
        })
    }

    /// Every sandbox of a user asleep, the server stopped.
    pub async fn stop(self) {
        self.registry.sleep_all().await;
        self.server.abort();
    }
}

/// Waits (at most [`WAIT`]) until `ready` holds.
pub async fn wait_until(ready: impl Fn() -> bool) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("waited too long")
}
