//! Benchmark (not a test): warm wake (`JARVIS_WARM_POOL`), first text.
//!
//!     cargo build --release -p sandbox && cargo bench -p router --bench warm
//!
//! Real `sandbox` processes under bubblewrap (the local backend) running the
//! real Claude Code CLI; the fake Anthropic API of `sandbox::testing` as the
//! gateway's upstream. Every time is a browser's: open `/ws`, send a message in
//! a new conversation, until the first `text` frame.
//!
//! 1. Sleeping vs awake, with a pool of 1, one user, `ROUNDS` times: put the
//!    workspace to sleep, let the pool refill, time it (the wake claims the
//!    warm sandbox); then time it again while it is awake (its spare CLI takes
//!    the new conversation). Each measurement waits `SETTLE` first, so the
//!    spare CLI started after the previous turn has finished starting.
//! 2. Burst: `BURST` fresh users send their first message at once, against a
//!    router without a pool (every wake starts a sandbox, every first message a
//!    CLI) and one whose pool holds `BURST` warm sandboxes.
//!
//! Needs root (sandboxes run as uids of their own) and the CLI installed
//! (`scripts/install-claude.sh`). Uses `DATABASE_URL`'s server and (re)creates
//! `jarvis_bench_warm`.
//!
//! Measured 2026-12-07 on the 2-core dev machine, quiet at the start (load 0.0),
//! release profile, one run:
//!
//! | case                                 | p50          | p99          |
//! |--------------------------------------|--------------|--------------|
//! | asleep, pool of 1 (10 wakes)         |     163.2 ms |     176.6 ms |
//! | awake (baseline)                     |     124.8 ms |     167.6 ms |
//! | asleep / awake                       |      1.31×   |      1.05×   |
//! | 50 at once, no pool                  |   24800.4 ms |   26023.6 ms |
//! | 50 at once, pool of 50               |    6186.0 ms |    7336.3 ms |
//! | no pool / pool                       |      4.01×   |      3.55×   |
//!
//! (The same day in the dev profile, load ~10: 1.57× and 1.55×; 29.9 s and
//! 8.2 s at 50.) A burst of 50 first messages without a pool is all CLI starts
//! on two cores; with a pool of 50 every wake claims a started sandbox and what
//! is left is the 50 turns' own CPU.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use router::{
    config::{Config, UidRange},
    http::AppState,
    workspaces::Registry,
};
use sandbox::testing::{FakeApi, Reply};
use serde_json::{Value, json};
use support::{BenchDb, ms, pct};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use uuid::Uuid;

mod support;

const ROUNDS: usize = 10;
const BURST: usize = 50;
const SETTLE: Duration = Duration::from_secs(3);
const DB: &str = "jarvis_bench_warm";
/// Longest any one wait may take.
const WAIT: Duration = Duration::from_secs(300);

/// A router on a loopback port.
struct Jarvis {
    state: AppState,
    registry: Registry,
    url: String,
    origin: String,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    first_uid: u32,
}

impl Jarvis {
    async fn start(
        db_url: &str,
        dir: &Path,
        api: &FakeApi,
        pool: usize,
        first_uid: u32,
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
        config.warm_pool = pool;
        config.sandbox_uids = UidRange {
            first: first_uid,
            last: first_uid + 999,
        };
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

    async fn user(&self, email: &str) -> anyhow::Result<(Uuid, String)> {
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

    /// Waits until the pool holds `slots` warm sandboxes, then `settle` more
    /// (their CLIs finish starting).
    async fn pool_full(&self, slots: usize, settle: Duration) -> anyhow::Result<()> {
        let registry = self.registry.clone();
        wait_until(move || registry.warm_slots() >= slots).await?;
        tokio::time::sleep(settle).await;
        Ok(())
    }

    /// Opens `/ws`, sends a message in a new conversation and returns the time
    /// until its first text; then reads on to the turn's end when `finish`.
    async fn first_text(&self, token: &str, finish: bool) -> anyhow::Result<Duration> {
        let mut request = self.url.as_str().into_client_request()?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("jarvis, bearer.{token}"))?,
        );
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(&self.origin)?);
        let started = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
        let message = json!({"type": "message", "content": "hello"});
        ws.send(Message::text(message.to_string())).await?;
        let mut took = None;
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let frame: Value = serde_json::from_str(&t)?;
                    match frame["type"].as_str() {
                        Some("text") if took.is_none() => {
                            took = Some(started.elapsed());
                            if !finish {
                                break;
                            }
                        }
                        Some("done") if took.is_some() => break,
                        Some("error") => bail!("{frame}"),
                        _ => {}
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => bail!("no text: {other:?}"),
            }
        }
        let _ = ws.close(None).await;
        took.context("no text")
    }

    /// Every sandbox of a user asleep, the server stopped.
    async fn stop(self) {
        self.registry.sleep_all().await;
        self.server.abort();
    }
}

async fn wait_until(ready: impl Fn() -> bool) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("waited too long")
}

/// `BURST` fresh users' first messages at once; their times, sorted.
async fn burst(jarvis: &Arc<Jarvis>, api: &FakeApi, tag: &str) -> anyhow::Result<Vec<Duration>> {
    // Long answers: no turn ends (and no sandbox starts its next spare CLI)
    // before every user has seen a first text.
    for _ in 0..BURST {
        api.push(Reply::Slow(
            vec!["x".into(); 600],
            Duration::from_millis(100),
        ));
    }
    let mut users = Vec::with_capacity(BURST);
    for i in 0..BURST {
        let (id, token) = jarvis.user(&format!("{tag}{i}@example.com")).await?;
        // Each user's host uid given beforehand: fifty first wakes at once
        // would race for uids (`uids::of_workspace` gives up after 8 tries).
        sqlx::query("insert into workspaces (owner_id, host_uid) values ($1, $2)")
            .bind(id)
            .bind(i64::from(jarvis.first_uid) + 100 + i as i64)
            .execute(&jarvis.state.db)
            .await?;
        users.push(token);
    }
    let runs = users.into_iter().map(|token| {
        let jarvis = jarvis.clone();
        tokio::spawn(async move { jarvis.first_text(&token, false).await })
    });
    let mut times = Vec::with_capacity(BURST);
    for run in futures::future::join_all(runs).await {
        times.push(run??);
    }
    times.sort();
    Ok(times)
}

fn row(name: &str, times: &[Duration]) {
    println!(
        "| {name:<36} | {:>9.1} ms | {:>9.1} ms |",
        ms(pct(times, 0.5)),
        ms(pct(times, 0.99))
    );
}

fn ratio(name: &str, a: &[Duration], b: &[Duration]) {
    println!(
        "| {name:<36} | {:>9.2}×   | {:>9.2}×   |",
        ms(pct(a, 0.5)) / ms(pct(b, 0.5)),
        ms(pct(a, 0.99)) / ms(pct(b, 0.99))
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs (RUST_LOG) to stderr: why a wake failed, say.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let bench_db = BenchDb::fresh(DB, 40).await?;
    let db_url = bench_db.url.clone();
    let dir = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let api = FakeApi::start().await?;

    // 2a. The burst without a pool (first: nothing else runs yet).
    let cold =
        Arc::new(Jarvis::start(&db_url, &dir.path().join("cold"), &api, 0, 1_910_000_000).await?);
    let cold_burst = burst(&cold, &api, "cold").await?;
    row(&format!("{BURST} at once, no pool"), &cold_burst);
    if let Ok(cold) = Arc::try_unwrap(cold) {
        cold.stop().await;
    }

    // 1. Sleeping vs awake with a pool of 1.
    let one = Jarvis::start(&db_url, &dir.path().join("one"), &api, 1, 1_911_000_000).await?;
    let (id, token) = one.user("warm@example.com").await?;
    let hub = one.registry.hub(id);
    one.pool_full(1, SETTLE).await?;
    one.first_text(&token, true).await?; // warm-up
    let (mut asleep, mut awake) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        one.registry.sleep(&hub).await?;
        one.pool_full(1, SETTLE).await?;
        asleep.push(one.first_text(&token, true).await?);
        tokio::time::sleep(SETTLE).await;
        awake.push(one.first_text(&token, true).await?);
    }
    asleep.sort();
    awake.sort();
    row(&format!("asleep, pool of 1 ({ROUNDS} wakes)"), &asleep);
    row("awake (baseline)", &awake);
    one.stop().await;

    // 2b. The burst against a full pool.
    let warm = Arc::new(
        Jarvis::start(
            &db_url,
            &dir.path().join("warm"),
            &api,
            BURST,
            1_912_000_000,
        )
        .await?,
    );
    warm.pool_full(BURST, Duration::from_secs(20)).await?;
    let warm_burst = burst(&warm, &api, "warm").await?;
    if let Ok(warm) = Arc::try_unwrap(warm) {
        warm.stop().await;
    }

    println!("\nconnect + message in a new conversation → first text\n");
    println!("| case                                 | p50          | p99          |");
    println!("|--------------------------------------|--------------|--------------|");
    row(&format!("asleep, pool of 1 ({ROUNDS} wakes)"), &asleep);
    row("awake (baseline)", &awake);
    ratio("asleep / awake", &asleep, &awake);
    row(&format!("{BURST} at once, no pool"), &cold_burst);
    row(&format!("{BURST} at once, pool of {BURST}"), &warm_burst);
    ratio("no pool / pool", &cold_burst, &warm_burst);
    bench_db.drop().await?;
    Ok(())
}
