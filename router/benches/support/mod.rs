//! What the router's benchmarks share: a fresh database on `DATABASE_URL`'s server
//! and the percentile arithmetic. Each bench uses part of it.
#![allow(dead_code)]

use std::time::Duration;

pub mod live;

use anyhow::Context;
use sqlx::{Connection, PgConnection, PgPool};

/// A database (re)created for one benchmark run; [`BenchDb::drop`] removes it.
pub struct BenchDb {
    /// A pool on it.
    pub pool: PgPool,
    /// Its URL (for a child process).
    pub url: String,
    name: String,
    admin: PgConnection,
}

impl BenchDb {
    /// Drops and creates `name` on `DATABASE_URL`'s server (default
    /// `postgres://postgres@127.0.0.1/postgres`) and runs the migrations.
    pub async fn fresh(name: &str, max_connections: u32) -> anyhow::Result<Self> {
        let server = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/postgres".into());
        let mut admin = PgConnection::connect(&server)
            .await
            .context("connecting to Postgres")?;
        sqlx::query(&format!("drop database if exists {name} with (force)"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await?;
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        // The router's own pool settings, so a bench measures what it runs with.
        let pool = router::db::connect(&url, max_connections).await?;
        router::MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            url,
            name: name.to_string(),
            admin,
        })
    }

    /// Closes the pool and drops the database.
    pub async fn drop(mut self) -> anyhow::Result<()> {
        self.pool.close().await;
        sqlx::query(&format!(
            "drop database if exists {} with (force)",
            self.name
        ))
        .execute(&mut self.admin)
        .await?;
        Ok(())
    }
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len().saturating_sub(1))]
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A results table of p50 and p99 (the `warm` and `scale` benches): its header.
pub fn table_header() {
    println!("| case                                     | p50           | p99           |");
    println!("|------------------------------------------|---------------|---------------|");
}

/// A table row: sorted `times` at p50 and p99, in milliseconds.
pub fn table_row(name: &str, times: &[Duration]) {
    println!(
        "| {name:<40} | {:>10.1} ms | {:>10.1} ms |",
        ms(pct(times, 0.5)),
        ms(pct(times, 0.99))
    );
}

/// A table row: `a` over `b` at p50 and p99 (both sorted).
pub fn table_ratio(name: &str, a: &[Duration], b: &[Duration]) {
    println!(
        "| {name:<40} | {:>10.2}×   | {:>10.2}×   |",
        ms(pct(a, 0.5)) / ms(pct(b, 0.5)),
        ms(pct(a, 0.99)) / ms(pct(b, 0.99))
    );
}
