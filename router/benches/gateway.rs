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
//! Measured 2026-11-25 on the 2-core dev machine, dev profile (dependencies at
//! opt-level 2), while three other workspaces were compiling (load average ≈ 13,
//! so the tail is noisy):
//!
//! | path                  | p50     | p99      |
//! |-----------------------|---------|----------|
//! | through the gateway   | 2.44 ms | 25.81 ms |
//! | straight to upstream  | 0.62 ms | 4.05 ms  |
//! | ratio                 | 3.92×   | 6.37×    |
//!
//! The gateway adds about 1.8 ms at p50: two indexed Postgres queries (token,
//! then account with this month's token total) before the call is forwarded.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use router::{config::Config, http::AppState, workspaces::tokens};
use sandbox::testing::FakeApi;
use sqlx::{Connection, PgConnection, postgres::PgPoolOptions};

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

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/postgres".into());
    let mut admin = PgConnection::connect(&server)
        .await
        .context("connecting to Postgres")?;
    sqlx::query(&format!("drop database if exists {DB} with (force)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("create database {DB}"))
        .execute(&mut admin)
        .await?;
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    let db = PgPoolOptions::new()
        .max_connections(10)
        .connect(&format!("{base}/{DB}"))
        .await?;
    router::MIGRATOR.run(&db).await?;

    let fake = FakeApi::start().await?;
    let storage = tempfile::tempdir()?;
    let mut config = Config::defaults();
    config.storage = format!("file:{}", storage.path().display());
    config.model_upstream = fake.url();
    config.anthropic_api_key = Some("sk-bench".into());
    let state = AppState::new(config, db.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_url = format!("http://{}/v1/messages?beta=true", listener.local_addr()?);
    tokio::spawn(router::http::serve_on(listener, state));

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
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
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
    db.close().await;
    sqlx::query(&format!("drop database if exists {DB} with (force)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}
