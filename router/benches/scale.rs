//! Benchmark (not a test): `USERS` users at once on this one machine.
//!
//!     cargo build --release -p sandbox && cargo bench -p router --bench scale
//!
//! Real `sandbox` processes under bubblewrap (the local backend) running the
//! real Claude Code CLI; the fake Anthropic API of `sandbox::testing` as the
//! gateway's upstream, answering each request with what its user said
//! (`Reply::Echo`), so every answer is checked to be its own user's.
//!
//! 1. Baseline: one user alone, `ALONE` times (a fresh user each time):
//!    connect, first message, to its first text and to `done`.
//! 2. `USERS` fresh users connect and send their first message at once, each
//!    reading its answer to the end. The router has the machine's default room
//!    for awake workspaces (`JARVIS_MAX_WORKSPACES` unset: one per 256 MiB of
//!    memory; set it to override): past it a wake puts an idle workspace to
//!    sleep or waits for one.
//!
//! Reported: first text and `done`, p50 and p99, and their ratio to the user
//! alone; the most workspaces awake at once; memory per active user all in,
//! two ways at the moment the sandboxes took the most memory: the proportional set size
//! (PSS: shared pages split among their users) of every process of a sandbox
//! uid, divided by the sandboxes, and the drop of `MemAvailable` since before
//! the burst, divided likewise; this process's peak RSS (the router, and the
//! bench's `USERS` browsers and fake API beside it).
//!
//! Needs root (sandboxes run as uids of their own) and the CLI installed
//! (`scripts/install-claude.sh`). Uses `DATABASE_URL`'s server and (re)creates
//! `jarvis_bench_scale`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use sandbox::testing::{FakeApi, Reply};
use support::{BenchDb, live::Jarvis, table_header, table_ratio, table_row};

mod support;

const USERS: usize = 200;
const ALONE: usize = 5;
const DB: &str = "jarvis_bench_scale";
const FIRST_UID: u32 = 1_920_000_000;

/// What one look at the machine saw.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    /// Sandboxes running (a `sandbox` process per awake workspace).
    sandboxes: usize,
    /// Summed PSS of the sandbox uids' processes, bytes.
    pss: u64,
    /// `MemAvailable`, bytes.
    available: u64,
    /// This process's RSS, bytes.
    rss: u64,
}

/// `key`'s value in kB of a `/proc` file in `Key: N kB` lines, as bytes.
fn kb(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// A look at the sandboxes of uids `first..first + 1000` and at this process.
fn sample(first: u32) -> Sample {
    let mut out = Sample::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok());
        if !uid.is_some_and(|uid| (first..first + 1000).contains(&uid)) {
            continue;
        }
        if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            out.pss += kb(&rollup, "Pss:").unwrap_or(0);
        }
        if status.lines().next() == Some("Name:\tsandbox") {
            out.sandboxes += 1;
        }
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    out.available = kb(&meminfo, "MemAvailable:").unwrap_or(0);
    let own = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    out.rss = kb(&own, "VmRSS:").unwrap_or(0);
    out
}

/// One user's first message; checks the answer is what it said.
async fn one_user(jarvis: &Jarvis, n: usize, tag: &str) -> anyhow::Result<(Duration, Duration)> {
    let (_, token) = jarvis.user(&format!("{tag}{n}@example.com")).await?;
    let said = format!("I am user {tag}{n}.");
    let turn = jarvis.turn(&token, &said, true).await?;
    anyhow::ensure!(
        turn.text == format!("Heard: {said}"),
        "user {tag}{n} got another answer: {:?}",
        turn.text
    );
    let done = turn.done.ok_or_else(|| anyhow::anyhow!("no done"))?;
    Ok((turn.first_text, done))
}

const MIB: f64 = 1024.0 * 1024.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let bench_db = BenchDb::fresh(DB, 40).await?;
    let dir = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let api = FakeApi::start().await?;
    for _ in 0..(USERS + ALONE) * 4 {
        api.push(Reply::Echo);
    }
    let max_workspaces = std::env::var("JARVIS_MAX_WORKSPACES")
        .ok()
        .and_then(|v| v.parse().ok());
    let jarvis = Arc::new(
        Jarvis::start(&bench_db.url, dir.path(), &api, FIRST_UID, |c| {
            c.max_workspaces = max_workspaces;
        })
        .await?,
    );
    let room = jarvis.registry.capacity();
    eprintln!("room for awake workspaces (max, awake): {room:?}");

    // 1. One user alone, each a fresh one (a wake and a CLI start each).
    let (mut alone_first, mut alone_done) = (Vec::new(), Vec::new());
    for n in 0..ALONE {
        let (first, done) = one_user(&jarvis, n, "alone").await?;
        alone_first.push(first);
        alone_done.push(done);
    }
    alone_first.sort();
    alone_done.sort();
    jarvis.registry.sleep_all().await;

    // 2. The burst, with the machine watched once a second.
    let before = sample(FIRST_UID);
    let peak = Arc::new(Mutex::new((before, 0usize, before.rss)));
    let watching = {
        let (peak, jarvis) = (peak.clone(), jarvis.clone());
        tokio::spawn(async move {
            loop {
                let now = tokio::task::spawn_blocking(|| sample(FIRST_UID))
                    .await
                    .unwrap_or_default();
                let awake = jarvis.registry.capacity().map_or(0, |(_, awake)| awake);
                {
                    let mut peak = peak.lock().unwrap_or_else(|e| e.into_inner());
                    if now.pss > peak.0.pss {
                        peak.0 = now;
                    }
                    peak.1 = peak.1.max(awake);
                    peak.2 = peak.2.max(now.rss);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let started = std::time::Instant::now();
    let runs = (0..USERS).map(|n| {
        let jarvis = jarvis.clone();
        tokio::spawn(async move { one_user(&jarvis, n, "u").await })
    });
    let (mut first, mut done, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for run in futures::future::join_all(runs).await {
        match run? {
            Ok((f, d)) => {
                first.push(f);
                done.push(d);
            }
            Err(error) => failed.push(error.to_string()),
        }
    }
    let whole = started.elapsed();
    watching.abort();
    first.sort();
    done.sort();
    let (at_peak, most_awake, peak_rss) = *peak.lock().unwrap_or_else(|e| e.into_inner());
    let sandboxes = at_peak.sandboxes.max(1) as f64;
    let after = jarvis.registry.capacity();
    let metrics = jarvis.state.metrics.render();
    let counted = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let put_to_sleep = counted("jarvis_workspace_capacity_sleeps_total");
    let waits = counted("jarvis_workspace_capacity_wait_seconds_count");

    println!("\n{USERS} users' first messages at once, room {room:?} (max, awake now)\n");
    table_header();
    table_row(&format!("alone ({ALONE}), first text"), &alone_first);
    table_row(&format!("alone ({ALONE}), done"), &alone_done);
    if !first.is_empty() {
        table_row(&format!("{USERS} at once, first text"), &first);
        table_row(&format!("{USERS} at once, done"), &done);
        table_ratio("at once / alone, first text", &first, &alone_first);
    }
    println!(
        "\nanswered {} of {USERS} (each its own), in {:.1} s; failed: {}",
        first.len(),
        whole.as_secs_f64(),
        failed.len()
    );
    for error in failed.iter().take(5) {
        println!("  {error}");
    }
    println!(
        "most workspaces awake at once: {most_awake} (room {room:?}, after: {after:?}); \
         {waits} wakes found no room, {put_to_sleep} workspaces put to sleep to make it"
    );
    println!(
        "at the sandboxes' most memory ({} running): PSS per sandbox {:.1} MiB; MemAvailable drop per sandbox {:.1} MiB",
        at_peak.sandboxes,
        at_peak.pss as f64 / MIB / sandboxes,
        before.available.saturating_sub(at_peak.available) as f64 / MIB / sandboxes,
    );
    println!(
        "this process (router + {USERS} browsers + fake API): RSS {:.1} MiB before, peak {:.1} MiB",
        before.rss as f64 / MIB,
        peak_rss as f64 / MIB
    );
    if let Ok(jarvis) = Arc::try_unwrap(jarvis) {
        jarvis.stop().await;
    }
    bench_db.drop().await?;
    anyhow::ensure!(failed.is_empty(), "{} users got no answer", failed.len());
    Ok(())
}
