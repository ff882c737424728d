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
    // Registered now; served over HTTP in a later change.
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = std::sync::Arc::new(operator::metrics::Metrics::register(&mut registry));
    controller::run(client, config.settings(), metrics).await?;
    Ok(())
}
