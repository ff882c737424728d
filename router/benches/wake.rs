//! Benchmark (not a test): how long a browser waits for a sleeping workspace.
//!
//!     cargo build --release -p sandbox && cargo bench -p router --bench wake
//!
//! 50 times: put the user's workspace to sleep, open `/ws` and time until the
//! `ready` status (a real `sandbox` process under bubblewrap, the local backend,
//! the token issued in Postgres, the router's link opened), against the baseline
//! of the same connection to a workspace that is already awake. Needs root (the
//! sandbox runs as `jarvis-sandbox`) and `scripts/setup.sh` done. Uses
//! `DATABASE_URL`'s server and (re)creates `jarvis_bench_wake`.
//!
//! Measured 2026-11-25 on the 2-core dev machine, `--profile dev`:
//!
//! | workspace        | p50      | p99      |
//! |------------------|----------|----------|
//! | asleep (wake)    | 18.91 ms | 25.27 ms |
//! | awake (baseline) |  1.06 ms |  1.40 ms |
//! | ratio            |  17.8×   |  18.0×   |

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::StreamExt;
use router::{config::Config, http::AppState};
use serde_json::Value;
use support::{BenchDb, ms, pct};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

mod support;

const WAKES: usize = 50;
const DB: &str = "jarvis_bench_wake";

/// Opens `/ws` and returns the time until `ready`.
async fn until_ready(url: &str, origin: &str, token: &str) -> anyhow::Result<Duration> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("jarvis, bearer.{token}"))?,
    );
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_str(origin)?);
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(120), ws.next()).await {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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

    let bench_db = BenchDb::fresh(DB, 10).await?;
    let (db, db_url) = (bench_db.pool.clone(), bench_db.url.clone());

    let dir = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let mut config = Config::defaults();
    config.database_url = db_url.clone();
    config.storage = format!("file:{}", dir.path().join("storage").display());
    config.workspaces_dir = dir.path().join("workspaces");
    config.run_dir = dir.path().join("run");
    config.sandbox_bin = Some(sandbox_bin);
    config.claude_bin =
        root.join(".tools/claude/node_modules/@anthropic-ai/claude-code/bin/claude.exe");
    config.jwt_secret = Some("bench-secret-bench-secret-bench-secret".into());
    let state = AppState::new(config, db.clone()).await?;
    let (id, email): (uuid::Uuid, String) = sqlx::query_as(
        "insert into users (email, password_hash) values ('wake@example.com', 'x') returning id, email",
    )
    .fetch_one(&db)
    .await?;
    let token = state
        .auth
        .local()
        .context("built-in accounts")?
        .issue(id, &email)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let registry = state.workspaces.clone();
    tokio::spawn(router::http::serve_on(listener, state));
    let url = format!("ws://{addr}/ws");
    let origin = format!("http://{addr}");
    let hub = registry.hub(id);

    // Warm up (page cache, first directories).
    until_ready(&url, &origin, &token).await?;
    let mut wakes = Vec::with_capacity(WAKES);
    let mut awake = Vec::with_capacity(WAKES);
    for _ in 0..WAKES {
        registry.sleep(&hub).await?;
        wakes.push(until_ready(&url, &origin, &token).await?);
        awake.push(until_ready(&url, &origin, &token).await?);
    }
    registry.sleep(&hub).await?;
    wakes.sort();
    awake.sort();
    println!("\n{WAKES} wakes, connect → ready\n");
    println!("| workspace        | p50        | p99        |");
    println!("|------------------|------------|------------|");
    for (name, t) in [("asleep (wake)", &wakes), ("awake (baseline)", &awake)] {
        println!(
            "| {name:<16} | {:>7.2} ms | {:>7.2} ms |",
            ms(pct(t, 0.5)),
            ms(pct(t, 0.99))
        );
    }
    println!(
        "| ratio            | {:>7.1}×   | {:>7.1}×   |",
        ms(pct(&wakes, 0.5)) / ms(pct(&awake, 0.5)),
        ms(pct(&wakes, 0.99)) / ms(pct(&awake, 0.99))
    );
    Ok(())
}
