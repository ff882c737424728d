//! Benchmark (not a test): the sandbox's start-up, first-text latency and memory,
//! each next to the CLI's own start-up measured in the same run.
//!
//! Run: `cargo bench -p sandbox --bench startup` (needs scripts/install-claude.sh).
//! The fake upstream answers instantly, so the times are the sandbox's and the CLI's.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::*;
use sandbox::testing::{FakeApi, Reply};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const RUNS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run());
}

/// The CLI alone: spawn → first streamed text delta, headless as the sandbox runs it.
async fn cli_startup(api: &FakeApi, dir: &std::path::Path) -> Duration {
    api.push(Reply::text(&["hi"]));
    std::fs::create_dir_all(dir.join("home")).expect("home");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(claude_bin())
        .args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ])
        .args([
            "--include-partial-messages",
            "--tools",
            "Read,Write,Edit,Bash,Glob,Grep",
        ])
        .env_clear()
        .env("HOME", dir.join("home"))
        .env("PATH", "/usr/bin:/bin")
        .env("ANTHROPIC_BASE_URL", api.url())
        .env("ANTHROPIC_API_KEY", "bench")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn CLI");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"hi\"}}\n")
        .await
        .expect("write");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first_text = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"text_delta\"") {
                return started.elapsed();
            }
        }
        panic!("the CLI ended without text");
    })
    .await
    .expect("CLI answered in time");
    drop(stdin);
    let _ = child.kill().await;
    first_text
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn first_text(router: &mut Router, id: &str, content: &str) -> Duration {
    let started = Instant::now();
    router.message(id, content).await;
    let frames = router.until(|f| f["type"] == "text" || ends_turn(f)).await;
    let elapsed = started.elapsed();
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some("text".into()),
        "{frames:?}"
    );
    router.turn_end(id).await;
    elapsed
}

#[derive(Default)]
struct Samples {
    cli_start: Vec<f64>,
    ready: Vec<f64>,
    first_text_cold: Vec<f64>,
    first_text_warm: Vec<f64>,
    rss_idle: Vec<f64>,
    rss_turn: Vec<f64>,
    cli_rss_turn: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

async fn run() {
    let mut samples = Samples::default();
    for _ in 0..RUNS {
        let world = World::new().await;
        let cli = cli_startup(&world.api, &world.tmp.path().join("cli")).await;
        samples.cli_start.push(cli.as_secs_f64() * 1000.0);

        let started = Instant::now();
        let sandbox = world.sandbox(&[]).await;
        samples.ready.push(started.elapsed().as_secs_f64() * 1000.0);
        let pid = sandbox.child.id().expect("pid");
        let mut router = sandbox.connect().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        samples.rss_idle.push(rss_kib(pid) as f64 / 1024.0);

        let id = conversation();
        world.api.push(Reply::text(&["cold"]));
        samples
            .first_text_cold
            .push(first_text(&mut router, &id, "hi").await.as_secs_f64() * 1000.0);

        world.api.push(Reply::Stall(Duration::from_millis(1500)));
        router.message(&id, "take your time").await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        samples.rss_turn.push(rss_kib(pid) as f64 / 1024.0);
        let cli_rss: u64 = sandbox.cli_pids().into_iter().map(rss_kib).sum();
        samples.cli_rss_turn.push(cli_rss as f64 / 1024.0);
        router.turn_end(&id).await;

        world.api.push(Reply::text(&["warm"]));
        samples
            .first_text_warm
            .push(first_text(&mut router, &id, "again").await.as_secs_f64() * 1000.0);
        sandbox.kill().await;
    }
    let cli = median(&samples.cli_start);
    let cli_rss = median(&samples.cli_rss_turn);
    println!("sandbox benchmark, median of {RUNS} runs (fake upstream answers instantly)");
    println!("{:<44} {:>10} {:>22}", "measure", "value", "ratio");
    println!(
        "{:<44} {:>7.0} ms {:>22}",
        "CLI start-up (spawn -> first text delta)", cli, "1.00 (baseline)"
    );
    for (name, values) in [
        ("sandbox start -> ready", &samples.ready),
        (
            "message -> first text, new conversation",
            &samples.first_text_cold,
        ),
        ("message -> first text, warm CLI", &samples.first_text_warm),
    ] {
        let value = median(values);
        println!("{name:<44} {value:>7.0} ms {:>15.3} x CLI", value / cli);
    }
    for (name, values) in [
        ("sandbox RSS idle", &samples.rss_idle),
        ("sandbox RSS during a turn", &samples.rss_turn),
    ] {
        let value = median(values);
        println!(
            "{name:<44} {value:>7.1} MB {:>11.3} x CLI RSS",
            value / cli_rss
        );
    }
    println!(
        "{:<44} {cli_rss:>7.1} MB",
        "CLI RSS during a turn (counted apart)"
    );
}
