//! Shared harness: a fake Messages API, the real `sandbox` binary driving the real
//! CLI, and a WebSocket client playing the router.
#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use sandbox::testing::FakeApi;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest},
};

/// Any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(60);
/// The workspace token the tests give the sandbox.
pub const TOKEN: &str = "ws-token-for-tests";

/// The CLI installed by `scripts/install-claude.sh` (or `JARVIS_CLAUDE_BIN`).
pub fn claude_bin() -> PathBuf {
    let path = std::env::var_os("JARVIS_CLAUDE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.tools/claude/node_modules/@anthropic-ai/claude-code/bin/claude.exe")
        });
    assert!(
        path.is_file(),
        "the Claude Code CLI is missing at {}: run scripts/install-claude.sh (or set JARVIS_CLAUDE_BIN)",
        path.display()
    );
    path
}

/// A fresh conversation id.
pub fn conversation() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A test's world: temp dirs and the fake upstream.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub api: FakeApi,
}

impl World {
    pub async fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let api = FakeApi::start().await.expect("fake api");
        Self { tmp, api }
    }

    pub fn workspace(&self) -> PathBuf {
        self.tmp.path().join("workspace")
    }

    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// Starts the sandbox with default flags plus `extra`.
    pub async fn sandbox(&self, extra: &[&str]) -> Sandbox {
        self.sandbox_with(extra, true).await
    }

    /// Starts the sandbox; `tcp` adds `--listen 127.0.0.1:0 --gateway-url <fake>`.
    pub async fn sandbox_with(&self, extra: &[&str], tcp: bool) -> Sandbox {
        self.start(extra, tcp, Some(TOKEN)).await
    }

    /// Starts a warm pool's sandbox: no workspace token, `--claim-secret
    /// secret`, and `extra` (no `--listen`/`--gateway-url` added).
    pub async fn unassigned_sandbox(&self, secret: &str, extra: &[&str]) -> Sandbox {
        let mut args = vec!["--claim-secret", secret];
        args.extend_from_slice(extra);
        self.start(&args, false, None).await
    }

    async fn start(&self, extra: &[&str], tcp: bool, token: Option<&str>) -> Sandbox {
        let log = self
            .tmp
            .path()
            .join(format!("sandbox-{}.log", uuid::Uuid::new_v4().simple()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_sandbox"));
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("RUST_LOG", "info,sandbox=debug,sandbox::cli=trace")
            .envs(token.map(|t| ("JARVIS_WORKSPACE_TOKEN", t)))
            // Secrets the sandbox's own environment may hold; none may reach the CLI.
            .env(
                "DATABASE_URL",
                "postgres://admin:db-secret-password@db/jarvis",
            )
            .env("ANTHROPIC_API_KEY", "sk-ant-real-secret-key")
            .env("STRIPE_SECRET_KEY", "sk_live_stripe_secret")
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-access-key")
            .args(if tcp {
                vec![
                    "--listen".to_string(),
                    "127.0.0.1:0".into(),
                    "--gateway-url".into(),
                    self.api.url(),
                ]
            } else {
                vec![]
            })
            .arg("--claude-bin")
            .arg(claude_bin())
            .arg("--workspace-dir")
            .arg(self.workspace())
            .arg("--state-dir")
            .arg(self.state())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start sandbox");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("sandbox ready in time")
            .expect("read ready line")
            .unwrap_or_else(|| panic!("sandbox exited before ready; log:\n{}", read(&log)));
        let ready: Value = serde_json::from_str(&ready).expect("ready line is JSON");
        let listen = ready["listen"].as_str().expect("listen").to_string();
        Sandbox { child, listen, log }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A running sandbox process.
pub struct Sandbox {
    pub child: Child,
    pub listen: String,
    pub log: PathBuf,
}

impl Sandbox {
    /// Connects as the router.
    pub async fn connect(&self) -> Router {
        let mut request = format!("ws://{}/ws", self.listen)
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {TOKEN}").parse().expect("header"),
        );
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("connect");
        Router {
            ws,
            log: self.log.clone(),
        }
    }

    /// Connects as the router over a unix socket (local mode).
    pub async fn connect_unix(&self, socket: &Path) -> Router<tokio::net::UnixStream> {
        let mut request = "ws://sandbox/ws".into_client_request().expect("request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {TOKEN}").parse().expect("header"),
        );
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .expect("connect unix");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
            .await
            .expect("connect in time")
            .expect("connect");
        Router {
            ws,
            log: self.log.clone(),
        }
    }

    /// The pids of the sandbox's children (the CLI processes).
    pub fn cli_pids(&self) -> Vec<u32> {
        let Some(pid) = self.child.id() else {
            return Vec::new();
        };
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|task| {
                std::fs::read_to_string(task.path().join("children"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    pub fn log(&self) -> String {
        read(&self.log)
    }

    /// Kills the sandbox at once (as a crash would).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The test's side of the router connection.
pub struct Router<S = MaybeTlsStream<TcpStream>> {
    pub ws: WebSocketStream<S>,
    log: PathBuf,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Router<S> {
    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Sends a user message (with a fresh `message_id`, as the router opens one).
    pub async fn message(&mut self, conversation_id: &str, content: &str) {
        self.message_with(conversation_id, content, json!({})).await;
    }

    /// Sends a user message with more fields (`message_id`, `max_turns`, …);
    /// a fresh `message_id` unless `extra` has one. Returns the `message_id`.
    pub async fn message_with(
        &mut self,
        conversation_id: &str,
        content: &str,
        extra: Value,
    ) -> String {
        let mut frame = json!({"type": "message", "conversation_id": conversation_id, "content": content, "message_id": uuid::Uuid::new_v4().to_string()});
        if let (Some(frame), Some(extra)) = (frame.as_object_mut(), extra.as_object()) {
            frame.extend(extra.clone());
        }
        let message_id = frame["message_id"].as_str().unwrap_or_default().to_string();
        self.send(frame).await;
        message_id
    }

    /// Sends `resume` and collects the `replay` frames up to the last one, plus
    /// the live frames of other types that came before it.
    pub async fn resume(
        &mut self,
        conversation_id: &str,
        after_seq: u64,
    ) -> (Vec<Value>, Vec<Value>) {
        let request_id = uuid::Uuid::new_v4().to_string();
        self.send(json!({"type": "resume", "conversation_id": conversation_id, "after_seq": after_seq, "request_id": request_id}))
            .await;
        let (mut replays, mut live) = (Vec::new(), Vec::new());
        loop {
            let frame = self.next().await;
            if frame["type"] != "replay" {
                live.push(frame);
                continue;
            }
            assert_eq!(frame["request_id"], request_id.as_str(), "{frame}");
            let last = frame["last"] == true;
            replays.push(frame);
            if last {
                return (replays, live);
            }
        }
    }

    /// The next frame, within `WAIT`.
    pub async fn next(&mut self) -> Value {
        self.next_within(WAIT).await
    }

    pub async fn next_within(&mut self, wait: Duration) -> Value {
        loop {
            let message = tokio::time::timeout(wait, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no frame within {wait:?}; sandbox log:\n{}",
                        tail(&read(&self.log))
                    )
                });
            match message {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str()).expect("frame is JSON");
                }
                Some(Ok(_)) => continue,
                other => panic!(
                    "connection ended: {other:?}; sandbox log:\n{}",
                    tail(&read(&self.log))
                ),
            }
        }
    }

    /// Frames until (and with) the one `stop` accepts.
    pub async fn until(&mut self, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next().await;
            let done = stop(&frame);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// Frames until the turn of `conversation_id` ends (`done` or a numbered `error`).
    pub async fn turn_end(&mut self, conversation_id: &str) -> Vec<Value> {
        let id = conversation_id.to_string();
        self.until(move |f| f["conversation_id"] == id.as_str() && ends_turn(f))
            .await
    }

    /// Sends a message and collects the turn's frames.
    pub async fn turn(&mut self, conversation_id: &str, content: &str) -> Vec<Value> {
        self.message(conversation_id, content).await;
        self.turn_end(conversation_id).await
    }
}

/// The events of `replay` frames, in order.
pub fn replayed(replays: &[Value]) -> Vec<Value> {
    replays
        .iter()
        .flat_map(|r| r["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The `seq`s of numbered frames.
pub fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["seq"].as_u64()).collect()
}

impl World {
    /// Waits until the fake stored the end of a turn of `conversation_id` with a
    /// seq above `after`; the stored events.
    pub async fn stored_turn(&self, conversation_id: &str, after: u64) -> Vec<Value> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let stored = self.api.stored_events(conversation_id);
            if stored
                .iter()
                .any(|e| ends_turn(e) && e["seq"].as_u64() > Some(after))
            {
                return stored;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the turn was not stored: {stored:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether a frame ends a turn.
pub fn ends_turn(frame: &Value) -> bool {
    frame["type"] == "done" || (frame["type"] == "error" && frame["seq"].is_u64())
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

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
