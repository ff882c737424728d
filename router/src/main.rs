//! The router binary: read the configuration, prepare the database, serve.

use anyhow::Context;
use clap::Parser;
use router::{config::Config, http, telemetry};
use sqlx::{Postgres, migrate::MigrateDatabase, postgres::PgPoolOptions};

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
        let db = open_database(&admin.database_url, 2).await?;
        print!("{}", router::admin::run(&db, &admin.command).await?);
        return Ok(());
    }
    let config = Config::parse();
    telemetry::init(&config.log_format);
    // Held until the process ends: a second router on these directories stops here.
    let _data_lock = router::workspaces::lock_data_dirs(&config)?;

    if !Postgres::database_exists(&config.database_url)
        .await
        .context("connecting to the database server")?
    {
        tracing::info!("creating the database");
        Postgres::create_database(&config.database_url)
            .await
            .context("creating the database")?;
    }
    let db = open_database(&config.database_url, config.db_max_connections).await?;

    let state = http::AppState::new(config, db).await?;
    http::serve(state).await
}

/// Connects a pool of at most `max` connections and brings the schema up to date.
async fn open_database(url: &str, max: u32) -> anyhow::Result<sqlx::PgPool> {
    let db = PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
        .context("connecting to the database")?;
    router::MIGRATOR
        .run(&db)
        .await
        .context("running database migrations")?;
    Ok(db)
}
