//! The router binary: read the configuration, prepare the database, serve.

use anyhow::Context;
use clap::Parser;
use router::db;
use router::{config::Config, http, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A missing .env is fine; a malformed one is not.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        return Err(e).context("reading .env");
    }
    // `router admin …`: the operators' commands, then exit.
    if std::env::args().nth(1).as_deref() == Some("admin") {
        let admin = router::admin::Admin::parse_from(std::env::args().skip(1));
        db::migrate(
            admin
                .database_direct_url
                .as_deref()
                .unwrap_or(&admin.database_url),
        )
        .await?;
        db::set_pooled(
            admin
                .database_direct_url
                .as_deref()
                .is_some_and(|direct| direct != admin.database_url),
        );
        let db = db::connect(&admin.database_url, 2)
            .await
            .context("connecting to the database")?;
        print!("{}", router::admin::run(&db, &admin.command).await?);
        return Ok(());
    }
    let config = Config::parse();
    telemetry::init(&config.log_format);
    // Held until the process ends: a second router on these directories stops here.
    let _data_lock = router::workspaces::lock_data_dirs(&config)?;

    // Migrations over the direct connection: a transaction pooler cannot hold
    // the migrator's session lock.
    db::migrate(config.direct_database_url()).await?;
    let db = db::connect(&config.database_url, config.db_max_connections)
        .await
        .context("connecting to the database")?;

    let state = http::AppState::new(config, db).await?;
    // Said at start, not at the first upload; `/readyz` fails until it is fixed.
    if let Err(error) = state.storage.check().await {
        tracing::error!(%error, "object storage is not usable (JARVIS_STORAGE)");
    }
    http::serve(state).await
}
