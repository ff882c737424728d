//! Benchmark (not a test): how long a browser waits for a sleeping workspace.
//!
//!     cargo build --release -p sandbox && cargo bench -p router --bench wake
//!
//! 50 times: put the user's workspace to sleep, open `/ws` and time until the
//! `ready` status (a real `sandbox` process under bubblewrap, the local backend,
//! the token issued in Postgres, the router's link opened; no warm pool), against
//! the baseline of the same connection to a workspace that is already awake.
//! Needs root (the sandbox runs as a uid of its own) and `scripts/setup.sh` done.
//! Uses `DATABASE_URL`'s server and (re)creates `jarvis_bench_wake`.
//!
//! Measured on the 2-core dev machine, 2026-11-25 in `--profile dev` and
//! 2026-12-07 in release:
//!
//! | workspace        | p50 dev  | p99 dev  | p50 release | p99 release |
//! |------------------|----------|----------|-------------|-------------|
//! | asleep (wake)    | 18.91 ms | 25.27 ms |    10.1 ms  |    14.5 ms  |
//! | awake (baseline) |  1.06 ms |  1.40 ms |     0.5 ms  |     1.3 ms  |
//! | ratio            |  17.8×   |  18.0×   |    20.0×    |    11.5×    |
//!
//! The CLI is not started here: it starts at the first message (or is a
//! warm pool's spare, `--bench warm`).

use sandbox::testing::FakeApi;
use support::{BenchDb, live::Jarvis, table_header, table_ratio, table_row};

mod support;

const WAKES: usize = 50;
const DB: &str = "jarvis_bench_wake";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bench_db = BenchDb::fresh(DB, 10).await?;
    let dir = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    // No turn is sent: the model API is only the router's configured upstream.
    let api = FakeApi::start().await?;
    let jarvis = Jarvis::start(&bench_db.url, dir.path(), &api, 1_913_000_000, |_| {}).await?;
    let (id, token) = jarvis.user("wake@example.com").await?;
    let hub = jarvis.registry.hub(id);

    // Warm up (page cache, first directories).
    jarvis.until_ready(&token).await?;
    let mut wakes = Vec::with_capacity(WAKES);
    let mut awake = Vec::with_capacity(WAKES);
    for _ in 0..WAKES {
        jarvis.registry.sleep(&hub).await?;
        wakes.push(jarvis.until_ready(&token).await?);
        awake.push(jarvis.until_ready(&token).await?);
    }
    jarvis.stop().await;
    wakes.sort();
    awake.sort();
    println!("\n{WAKES} wakes, connect → ready\n");
    table_header();
    table_row("asleep (wake)", &wakes);
    table_row("awake (baseline)", &awake);
    table_ratio("ratio", &wakes, &awake);
    bench_db.drop().await?;
    Ok(())
}
