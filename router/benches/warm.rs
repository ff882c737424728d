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
//! `cargo bench -p router --bench warm -- wake` runs only part 1, `-- burst`
//! only part 2.
//!
//! Needs root (sandboxes run as uids of their own) and the CLI installed
//! (`scripts/install-claude.sh`). Uses `DATABASE_URL`'s server and (re)creates
//! `jarvis_bench_warm`.
//!
//! Measured 2026-12-07 on the 2-core dev machine, release profile. First, 10
//! wakes a run, quiet at the start (load 0.0), one run:
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
//! Later the same day, 20 wakes a run (`-- wake`, load 0.2–1.8): with the
//! refill starting at once after a claim, asleep / awake 1.26× / 1.15×,
//! 1.13× / 1.32× (p50 / p99); with the refill starting 2 s after the claim
//! (`REFILL_PAUSE`, the warm pool now) 0.97× / 1.00×, 1.06× / 1.20×,
//! 0.97× / 0.95×, 1.03× / 0.84× (the last partly under a `cargo clippy`). The wake
//! itself is 6–13 ms: moving the user's files in 3–9 ms, the claim's one
//! statement 1–3 ms, the renames 1–3 ms, the claim request 0.5–1.5 ms (the
//! router's debug log). A claimed sandbox's CLI asks the model API exactly
//! what an awake one's asks (one request a turn, counted by the bench).
//! `-- burst` then: 50 at once 29.8 s p50 (30.0 s p99) without a pool, 5.7 s
//! (7.0 s) with a pool of 50, 5.27× (4.31×). Two runs more: 0.99× / 0.86× and
//! 0.98× / 0.97× asleep / awake; 20.7 s vs 5.2 s at 50, 4.01× (3.42×).
//!
//! (The same day in the dev profile, load ~10: 1.57× and 1.55×; 29.9 s and
//! 8.2 s at 50.) A burst of 50 first messages without a pool is all CLI starts
//! on two cores; with a pool of 50 every wake claims a started sandbox and what
//! is left is the 50 turns' own CPU.

use std::{sync::Arc, time::Duration};

use sandbox::testing::{FakeApi, Reply};
use support::{
    BenchDb,
    live::{Jarvis, wait_until},
    table_header, table_ratio, table_row,
};

mod support;

const ROUNDS: usize = 20;
const BURST: usize = 50;
const SETTLE: Duration = Duration::from_secs(3);
const DB: &str = "jarvis_bench_warm";

/// Waits until the pool holds `slots` warm sandboxes, then `settle` more
/// (their CLIs finish starting).
async fn pool_full(jarvis: &Jarvis, slots: usize, settle: Duration) -> anyhow::Result<()> {
    let registry = jarvis.registry.clone();
    wait_until(move || registry.warm_slots() >= slots).await?;
    tokio::time::sleep(settle).await;
    Ok(())
}

/// Connect and a message in a new conversation → its first text; read on to
/// the turn's end when `finish`.
async fn first_text(jarvis: &Jarvis, token: &str, finish: bool) -> anyhow::Result<Duration> {
    Ok(jarvis.turn(token, "hello", finish).await?.first_text)
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
        tokio::spawn(async move { first_text(&jarvis, &token, false).await })
    });
    let mut times = Vec::with_capacity(BURST);
    for run in futures::future::join_all(runs).await {
        times.push(run??);
    }
    times.sort();
    Ok(times)
}

/// A router under `dir/<tag>` with a pool of `pool` and no room limit (the
/// burst measures wakes, not waits for room, which `scale` measures), its pool
/// full, then [`burst`] against it.
async fn burst_against(
    db_url: &str,
    dir: &std::path::Path,
    api: &FakeApi,
    (tag, first_uid): (&str, u32),
    pool: usize,
) -> anyhow::Result<Vec<Duration>> {
    let jarvis = Arc::new(
        Jarvis::start(db_url, &dir.join(tag), api, first_uid, |c| {
            c.max_workspaces = Some(0);
            c.warm_pool = pool;
        })
        .await?,
    );
    if pool > 0 {
        pool_full(&jarvis, pool, Duration::from_secs(20)).await?;
    }
    let times = burst(&jarvis, api, tag).await?;
    if let Ok(jarvis) = Arc::try_unwrap(jarvis) {
        jarvis.stop().await;
    }
    Ok(times)
}

/// Part 1: one user's first text with their workspace asleep (a pool of 1) and
/// awake, `ROUNDS` times each, both sorted; and the model API requests of each
/// turn, asleep and awake.
async fn asleep_and_awake(
    db_url: &str,
    dir: &std::path::Path,
    api: &FakeApi,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, String)> {
    let one = Jarvis::start(db_url, &dir.join("one"), api, 1_911_000_000, |c| {
        c.warm_pool = 1
    })
    .await?;
    let (id, token) = one.user("warm@example.com").await?;
    let hub = one.registry.hub(id);
    pool_full(&one, 1, SETTLE).await?;
    first_text(&one, &token, true).await?; // warm-up
    // What the model API was asked per turn: a claimed sandbox's CLI must ask
    // no more than an awake one's.
    let asked = |from: usize| api.requests().len() - from;
    let (mut asleep, mut awake) = (Vec::new(), Vec::new());
    let (mut asked_asleep, mut asked_awake) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        one.registry.sleep(&hub).await?;
        pool_full(&one, 1, SETTLE).await?;
        let from = api.requests().len();
        asleep.push(first_text(&one, &token, true).await?);
        asked_asleep.push(asked(from));
        tokio::time::sleep(SETTLE).await;
        let from = api.requests().len();
        awake.push(first_text(&one, &token, true).await?);
        asked_awake.push(asked(from));
    }
    one.stop().await;
    asleep.sort();
    awake.sort();
    let asked = format!("asleep {asked_asleep:?}, awake {asked_awake:?}");
    Ok((asleep, awake, asked))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs (RUST_LOG) to stderr: why a wake failed, say.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let (wakes, bursts) = match only.as_deref() {
        None => (true, true),
        Some("wake") => (true, false),
        Some("burst") => (false, true),
        Some(other) => anyhow::bail!("no part {other:?}: `wake` or `burst`"),
    };
    let bench_db = BenchDb::fresh(DB, 40).await?;
    let db_url = bench_db.url.clone();
    let dir = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let api = FakeApi::start().await?;

    println!("\nconnect + message in a new conversation → first text\n");
    table_header();
    // The burst without a pool first, while nothing else has run; then part 1;
    // then the burst against a full pool.
    let cold = if bursts {
        burst_against(&db_url, dir.path(), &api, ("cold", 1_910_000_000), 0).await?
    } else {
        Vec::new()
    };
    let mut asked = None;
    if wakes {
        let (asleep, awake, requests) = asleep_and_awake(&db_url, dir.path(), &api).await?;
        asked = Some(requests);
        table_row(&format!("asleep, pool of 1 ({ROUNDS} wakes)"), &asleep);
        table_row("awake (baseline)", &awake);
        table_ratio("asleep / awake", &asleep, &awake);
    }
    if bursts {
        let warm = burst_against(&db_url, dir.path(), &api, ("warm", 1_912_000_000), BURST).await?;
        table_row(&format!("{BURST} at once, no pool"), &cold);
        table_row(&format!("{BURST} at once, pool of {BURST}"), &warm);
        table_ratio("no pool / pool", &cold, &warm);
    }
    if let Some(asked) = asked {
        println!("\nmodel API requests per turn: {asked}");
    }
    bench_db.drop().await?;
    Ok(())
}
