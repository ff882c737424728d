//! Benchmark (not a test): Stripe webhook handling throughput through the real
//! router on a socket: 10,000 distinct signed events (`customer.subscription.updated`
//! for 100 customers, statuses alternating, each newer than the last), then the
//! same 10,000 replayed (answered 200, nothing applied), against `GET /healthz`
//! as the baseline of the same run. 8 concurrent senders each.
//!
//!     cargo bench -p router --bench webhooks
//!
//! Uses `DATABASE_URL`'s server (default `postgres://postgres@127.0.0.1/postgres`)
//! and (re)creates the database `jarvis_bench_webhooks` there. Each webhook is
//! signature check (HMAC-SHA256) + JSON parse + one transaction: insert into
//! `stripe_events` and, for a new event, one `update users`.
//!
//! Measured 2026-11-25 on the 2-core dev machine, bench profile, under `nice`,
//! while two other workspaces were compiling (absolute figures are noisy; the
//! ratios are of the same run):
//!
//! | run                   | requests/s | p50     | p99      | throughput vs /healthz |
//! |-----------------------|------------|---------|----------|------------------------|
//! | `GET /healthz`        | 11,784     | 0.39 ms | 8.07 ms  | 1.00×                  |
//! | 10,000 distinct       | 1,028      | 6.98 ms | 23.48 ms | 0.09×                  |
//! | 10,000 replays        | 2,488      | 2.71 ms | 10.92 ms | 0.21×                  |
//!
//! Replays vs distinct: 2.42× the throughput, 0.39× the p50. A replay costs one
//! `insert … on conflict do nothing` in a transaction; a distinct event adds the
//! `update users` and the commit of both. About 1,000 distinct events a second on
//! this machine is far above what Stripe sends any one account.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use router::{billing::signature, config::Config, http::AppState};
use support::{BenchDb, ms, pct};

mod support;

const EVENTS: usize = 10_000;
const CUSTOMERS: usize = 100;
const SENDERS: usize = 8;
const DB: &str = "jarvis_bench_webhooks";
const SECRET: &str = "whsec_bench";

/// One request of a run: a URL, and a body with its signature for webhooks.
#[derive(Clone)]
struct Job {
    body: Option<(String, String)>,
}

struct Run {
    per_second: f64,
    latencies: Vec<Duration>,
}

async fn run(client: &reqwest::Client, base: &str, jobs: Vec<Job>) -> anyhow::Result<Run> {
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (jobs, next, client) = (jobs.clone(), next.clone(), client.clone());
        let (webhook, health) = (
            format!("{base}/api/stripe/webhook"),
            format!("{base}/healthz"),
        );
        senders.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let t = Instant::now();
                let response = match &job.body {
                    Some((body, sig)) => {
                        client
                            .post(&webhook)
                            .header("content-type", "application/json")
                            .header("stripe-signature", sig)
                            .body(body.clone())
                            .send()
                            .await?
                    }
                    None => client.get(&health).send().await?,
                };
                let status = response.status();
                response.bytes().await?;
                anyhow::ensure!(status.is_success(), "request {i}: {status}");
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for s in senders {
        latencies.extend(s.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Run {
        per_second: jobs.len() as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}

/// The signed events: `n` distinct ones, newer and newer.
fn events(n: usize, t0: i64) -> Vec<(String, i64)> {
    (0..n)
        .map(|i| {
            let status = if i % 2 == 0 { "active" } else { "past_due" };
            let body = serde_json::json!({
                "id": format!("evt_bench_{i:06}"), "object": "event",
                "type": "customer.subscription.updated", "created": t0 + i as i64,
                "data": {"object": {
                    "id": format!("sub_bench_{:03}", i % CUSTOMERS), "object": "subscription",
                    "customer": format!("cus_bench_{:03}", i % CUSTOMERS), "status": status,
                    "items": {"data": [{"price": {"id": "price_bench_pro"}}]}
                }}
            });
            (body.to_string(), t0 + i as i64)
        })
        .collect()
}

fn signed(events: &[(String, i64)]) -> Vec<Job> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    events
        .iter()
        .map(|(body, _)| Job {
            body: Some((body.clone(), signature::sign(body.as_bytes(), SECRET, now))),
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bench_db = BenchDb::fresh(DB, 10).await?;
    let db = bench_db.pool.clone();
    for c in 0..CUSTOMERS {
        sqlx::query(
            "insert into users (email, password_hash, stripe_customer_id) values ($1, 'x', $2)",
        )
        .bind(format!("bench{c}@example.com"))
        .bind(format!("cus_bench_{c:03}"))
        .execute(&db)
        .await?;
    }

    let storage = tempfile::tempdir()?;
    let mut config = Config::defaults();
    config.storage = format!("file:{}", storage.path().display());
    config.stripe_secret_key = Some("sk_test_bench".into());
    config.stripe_webhook_secret = Some(SECRET.into());
    config.stripe_price_pro = Some("price_bench_pro".into());
    let state = AppState::new(config, db.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(router::http::serve_on(listener, state));

    let client = reqwest::Client::new();
    let health = |n| vec![Job { body: None }; n];
    // Warm-up: connections, the pool, the code paths (events not reused later).
    run(&client, &url, health(500)).await?;
    run(&client, &url, signed(&events(200, 1_700_000_000))).await?;
    sqlx::query("delete from stripe_events")
        .execute(&db)
        .await?;
    sqlx::query("update users set subscription_event_at = null")
        .execute(&db)
        .await?;

    let distinct_events = events(EVENTS, 1_800_000_000);
    let baseline = run(&client, &url, health(EVENTS)).await?;
    let distinct = run(&client, &url, signed(&distinct_events)).await?;
    let replays = run(&client, &url, signed(&distinct_events)).await?;

    let recorded: i64 = sqlx::query_scalar("select count(*) from stripe_events")
        .fetch_one(&db)
        .await?;
    anyhow::ensure!(recorded as usize == EVENTS, "{recorded} events recorded");
    // Each customer's newest event decides: even customers end active, odd past_due.
    let active: i64 = sqlx::query_scalar("select count(*) from users where subscription_active")
        .fetch_one(&db)
        .await?;
    anyhow::ensure!(
        active as usize == CUSTOMERS / 2,
        "{active} users active after the run"
    );

    println!("{EVENTS} requests each, {SENDERS} concurrent senders:");
    for (name, r) in [
        ("GET /healthz", &baseline),
        ("distinct events", &distinct),
        ("replayed events", &replays),
    ] {
        println!(
            "  {name:<16} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  throughput vs /healthz {:.2}x",
            r.per_second,
            ms(pct(&r.latencies, 0.5)),
            ms(pct(&r.latencies, 0.99)),
            r.per_second / baseline.per_second,
        );
    }
    println!(
        "replays vs distinct: throughput {:.2}x, p50 {:.2}x",
        replays.per_second / distinct.per_second,
        ms(pct(&replays.latencies, 0.5)) / ms(pct(&distinct.latencies, 0.5)),
    );
    bench_db.drop().await
}
