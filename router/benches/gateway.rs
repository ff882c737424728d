//! Benchmark (not a test): time to first byte of a streamed answer through the
//! model gateway vs. straight from the fake upstream (`sandbox::testing`), over
//! 200 requests each, interleaved, one at a time.
//!
//!     cargo bench -p router --bench gateway
//!
//! Uses `DATABASE_URL`'s server (default `postgres://postgres@127.0.0.1/postgres`)
//! and (re)creates the database `jarvis_bench_gateway` there. The gateway's time
//! includes everything it does per call: token check, account and quota query,
//! rate limit (in-process), forwarding, and metering.
//!
//! Measured 2026-12-07 on the 2-core dev machine, quiet, release profile, three
//! runs (before: the same day's main, while other builds ran):
//!
//! | path                  | p50           | p99           |
//! |-----------------------|---------------|---------------|
//! | through the gateway   | 0.52–0.57 ms  | 1.63–1.91 ms  |
//! | straight to upstream  | 0.32–0.36 ms  | 0.56–0.72 ms  |
//! | added at p50          | 0.20–0.22 ms  | (before: 0.73 ms) |
//!
//! A turn's first call reads the token's user and account (one indexed query,
//! this month's token total included); later calls within 2 s use what that read
//! found (`http::standing`: a remembered account only admits, never refuses), so
//! what is left is the extra hop.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use router::{config::Config, http::AppState, workspaces::tokens};
use sandbox::testing::FakeApi;
use support::{BenchDb, ms, pct};

mod support;

const REQUESTS: usize = 200;
const DB: &str = "jarvis_bench_gateway";

/// Sends one streaming call and returns the time until the first body byte.
async fn first_byte(client: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<Duration> {
    let body = serde_json::json!({
        "model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hello"}]
    });
    let started = Instant::now();
    let response = client
        .post(url)
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    let mut stream = response.bytes_stream();
    let first = stream.next().await.context("empty answer")??;
    let elapsed = started.elapsed();
    anyhow::ensure!(!first.is_empty());
    while let Some(chunk) = stream.next().await {
        chunk?;
    }
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bench_db = BenchDb::fresh(DB, 10).await?;
    let db = bench_db.pool.clone();

    let fake = FakeApi::start().await?;
    let storage = tempfile::tempdir()?;
    let mut config = Config::defaults();
    config.storage = format!("file:{}", storage.path().display());
    config.model_upstream = fake.url();
    config.anthropic_api_key = Some("sk-bench".into());
    let state = AppState::new(config, db.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_url = format!("http://{}/v1/messages?beta=true", listener.local_addr()?);
    // The sandboxes' listener (`JARVIS_SANDBOX_LISTEN`): the public one has no `/v1`.
    tokio::spawn(router::http::serve_sandbox_tcp(listener, state));

    // An enterprise user: its rate limit (600/min) leaves the run unthrottled.
    let user: uuid::Uuid = sqlx::query_scalar(
        "insert into users (email, password_hash, tier) values ('bench@example.com', 'x', 'enterprise') returning id",
    )
    .fetch_one(&db)
    .await?;
    let token = tokens::issue(&db, user).await?;
    let direct_url = format!("{}/v1/messages?beta=true", fake.url());

    let client = reqwest::Client::new();
    for _ in 0..10 {
        first_byte(&client, &gateway_url, &token).await?;
        first_byte(&client, &direct_url, "sk-bench").await?;
    }
    let (mut through, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..REQUESTS {
        through.push(first_byte(&client, &gateway_url, &token).await?);
        direct.push(first_byte(&client, &direct_url, "sk-bench").await?);
    }
    through.sort();
    direct.sort();
    println!("time to first byte of a streamed answer, {REQUESTS} requests each:");
    for (name, run) in [
        ("through the gateway", &through),
        ("straight to upstream", &direct),
    ] {
        println!(
            "  {name:<21} p50 {:.2} ms  p99 {:.2} ms",
            ms(pct(run, 0.5)),
            ms(pct(run, 0.99))
        );
    }
    println!(
        "ratio gateway/direct: p50 {:.2}x  p99 {:.2}x  (added p50 {:.2} ms)",
        ms(pct(&through, 0.5)) / ms(pct(&direct, 0.5)),
        ms(pct(&through, 0.99)) / ms(pct(&direct, 0.99)),
        ms(pct(&through, 0.5)) - ms(pct(&direct, 0.5)),
    );
    bench_db.drop().await
}
