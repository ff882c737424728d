//! The operator binary: parse config, start tracing, run the controller until a
//! shutdown signal.

use clap::Parser;
use operator::{config::Config, controller};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,operator=debug")),
        )
        .json()
        .init();
    let client = kube::Client::try_default().await?;
    tracing::info!(sandbox.image = %config.sandbox_image, "operator starting");
    controller::run(client, config.settings()).await?;
    Ok(())
}
