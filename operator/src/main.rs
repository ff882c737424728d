//! The operator binary: parse config, start tracing, run the controller and the
//! `/healthz` + `/metrics` endpoints until a shutdown signal.

use std::sync::Arc;

use clap::Parser;
use operator::{config::Config, controller, leader, metrics::Metrics, server};
use prometheus_client::registry::Registry;
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
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    // Configuration errors first, before anything is bound or connected.
    let scope = config.scope().map_err(anyhow::Error::msg)?;
    let pools = config.pool_namespaces(&scope).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    let client = kube::Client::try_default().await?;
    tracing::info!(listen = %config.listen, sandbox.image = %config.sandbox_image, "operator starting");
    tracing::info!(watch.namespaces = %scope, warm_pool.namespaces = %pools.join(","), "managing workspaces");
    let controller = controller::run_in(client.clone(), scope, config.settings(), metrics);
    let elector = leader::Elector::new(
        client,
        leader::Settings {
            name: leader::LEASE_NAME.to_owned(),
            namespace: config.lease_namespace.clone(),
            identity: config.identity.clone(),
            lease_duration: std::time::Duration::from_secs(15),
            renew_every: std::time::Duration::from_secs(5),
        },
    );
    let controller = async {
        if config.leader_elect {
            leader::run(&elector, controller).await??;
        } else {
            controller.await?;
        }
        anyhow::Ok(())
    };
    let server = server::serve(listener, Arc::new(registry));
    tokio::select! {
        result = controller => result?,
        result = server => result?,
    }
    Ok(())
}
