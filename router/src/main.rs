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
        let db = PgPoolOptions::new()
            .max_connections(2)
            .connect(&admin.database_url)
            .await
            .context("connecting to the database")?;
        router::MIGRATOR
            .run(&db)
            .await
            .context("running database migrations")?;
        print!("{}", router::admin::run(&db, &admin.command).await?);
        return Ok(());
    }
    let config = Config::parse();
    telemetry::init(&config.log_format);

    if !Postgres::database_exists(&config.database_url)
        .await
        .context("connecting to the database server")?
    {
        tracing::info!("creating the database");
        Postgres::create_database(&config.database_url)
            .await
            .context("creating the database")?;
    }
    let db = PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&config.database_url)
        .await
        .context("connecting to the database")?;
    router::MIGRATOR
        .run(&db)
        .await
        .context("running database migrations")?;

    let state = http::AppState::new(config, db).await?;
    http::serve(state).await
}
