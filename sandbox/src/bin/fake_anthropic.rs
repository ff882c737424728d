//! The fake Anthropic Messages API of `sandbox::testing` as a process: prints its
//! base URL on stdout, then serves until killed. Answers are queued with
//! `POST /_fake/replies` (see `sandbox::testing::Reply::from_json`).
//!
//!     cargo run -p sandbox --features test-support --bin fake-anthropic

use sandbox::testing::FakeApi;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let api = FakeApi::start().await?;
    println!("{}", api.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
