//! Database access shared by every module.
//!
//! Work done for one user runs in [`user_tx`]: a transaction under the
//! unprivileged `jarvis_user` role with `app.user_id` set, so the row-level
//! security policies of `migrations/0002_row_level_security.sql` hide every other
//! user's rows even if a query forgot its `owner_id` filter. Queries still filter
//! by owner themselves; the policies are the second line of defence.
//!
//! # Through a transaction-mode pooler
//!
//! `DATABASE_URL` may name PgBouncer in `pool_mode = transaction` (Supabase's
//! pooler on port 6543): each transaction may run on a different server
//! connection. So nothing the router does leaves state on a server connection
//! past a transaction, and nothing spans two transactions:
//!
//! - every query is built with [`query`], [`query_as`] or [`query_scalar`]
//!   (never `sqlx::query…`). They use the *unnamed* prepared statement, so
//!   nothing named is left for the next client of that server connection (sqlx's
//!   named `sqlx_s_N` statements collide there, cache or no cache). And they run
//!   in a transaction: sqlx prepares (Parse, Sync) and executes (Bind, Execute,
//!   Sync) in two round trips, which a pooler may hand to two server connections
//!   outside a transaction ("bind message supplies 2 parameters, but prepared
//!   statement \"\" requires 0", or someone else's statement run). On a
//!   transaction ([`user_tx`], `begin()`) a query runs as is; on the pool or a
//!   bare connection it runs in a transaction of its own ([`Target`]);
//! - session state is transaction-local (`set_config(.., true)`,
//!   `pg_advisory_xact_lock`); `LISTEN` and the migrator's session lock use the
//!   direct connection of `DATABASE_DIRECT_URL` ([`migrate`]);
//! - code holding a transaction passes it on rather than asking the pool for a
//!   second connection: behind a pooler with fewer server connections than
//!   concurrent requests, that second connection may never come.
//!
//! Those two costs (a parse per query, and a transaction around each query run on
//! the pool) are paid only behind a pooler: a router whose `DATABASE_DIRECT_URL`
//! differs from its `DATABASE_URL` (what a pooler needs for its migrations) says
//! so at start ([`set_pooled`]); straight to Postgres, queries use sqlx's cached
//! named statements and run as they are.

use std::time::Duration;

use sqlx::{
    Connection, PgConnection, PgPool, Postgres, Transaction,
    migrate::MigrateDatabase,
    pool::PoolConnection,
    postgres::{PgArguments, PgPoolOptions, PgQueryResult, PgRow},
};
use uuid::Uuid;

/// Whether `DATABASE_URL` is a transaction pooler (see the module documentation).
/// One router per process, so one database: a process-wide setting.
static POOLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says whether this process's `DATABASE_URL` is a transaction pooler; queries
/// built afterwards run accordingly.
pub fn set_pooled(pooled: bool) {
    POOLED.store(pooled, std::sync::atomic::Ordering::Relaxed);
}

fn pooled() -> bool {
    POOLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The role that row-level security applies to.
pub const USER_ROLE: &str = "jarvis_user";

/// Where a query runs: the pool (one checkout, in a transaction of its own) or
/// a connection the caller holds (a transaction's included).
pub enum Target<'c> {
    /// A connection of the pool, for this one query.
    Pool(&'c PgPool),
    /// A held connection.
    Conn(&'c mut PgConnection),
}

impl<'c> From<&'c PgPool> for Target<'c> {
    fn from(pool: &'c PgPool) -> Self {
        Target::Pool(pool)
    }
}

impl<'c> From<&'c mut PgConnection> for Target<'c> {
    fn from(conn: &'c mut PgConnection) -> Self {
        Target::Conn(conn)
    }
}

impl<'c> From<&'c mut PoolConnection<Postgres>> for Target<'c> {
    fn from(conn: &'c mut PoolConnection<Postgres>) -> Self {
        Target::Conn(&mut *conn)
    }
}

impl<'c, 't> From<&'c mut Transaction<'t, Postgres>> for Target<'c> {
    fn from(tx: &'c mut Transaction<'t, Postgres>) -> Self {
        Target::Conn(&mut *tx)
    }
}

/// Runs `$run` (a query method called on `$conn`) on `$target`: directly inside
/// a transaction, else in one of its own, so that sqlx's two round trips stay
/// on one server connection of a transaction pooler.
macro_rules! run_on {
    ($target:expr, |$conn:ident| $run:expr) => {
        match $target.into() {
            Target::Conn($conn) if $conn.is_in_transaction() || !pooled() => $run.await,
            Target::Pool(pool) if !pooled() => {
                let mut held = pool.acquire().await?;
                let $conn: &mut PgConnection = &mut held;
                $run.await
            }
            Target::Conn(conn) => {
                let mut tx = conn.begin().await?;
                let out = {
                    let $conn: &mut PgConnection = &mut tx;
                    $run.await?
                };
                tx.commit().await?;
                Ok(out)
            }
            Target::Pool(pool) => {
                let mut tx = pool.begin().await?;
                let out = {
                    let $conn: &mut PgConnection = &mut tx;
                    $run.await?
                };
                tx.commit().await?;
                Ok(out)
            }
        }
    };
}

/// A statement on the unnamed prepared statement (see the module
/// documentation); built by [`query`].
#[must_use = "a query does nothing until it is run"]
pub struct Query<'q> {
    inner: sqlx::query::Query<'q, Postgres, PgArguments>,
}

/// A query whose rows decode as `O`; built by [`query_as`].
#[must_use = "a query does nothing until it is run"]
pub struct QueryAs<'q, O> {
    inner: sqlx::query::QueryAs<'q, Postgres, O, PgArguments>,
}

/// A query whose rows are one value `O`; built by [`query_scalar`].
#[must_use = "a query does nothing until it is run"]
pub struct QueryScalar<'q, O> {
    inner: sqlx::query::QueryScalar<'q, Postgres, O, PgArguments>,
}

/// A statement (`sqlx::query`) that runs through a transaction pooler.
pub fn query(sql: &str) -> Query<'_> {
    Query {
        inner: sqlx::query(sql).persistent(!pooled()),
    }
}

/// A query (`sqlx::query_as`) that runs through a transaction pooler.
pub fn query_as<'q, O>(sql: &'q str) -> QueryAs<'q, O>
where
    O: for<'r> sqlx::FromRow<'r, PgRow>,
{
    QueryAs {
        inner: sqlx::query_as(sql).persistent(!pooled()),
    }
}

/// A query (`sqlx::query_scalar`) that runs through a transaction pooler.
pub fn query_scalar<'q, O>(sql: &'q str) -> QueryScalar<'q, O>
where
    (O,): for<'r> sqlx::FromRow<'r, PgRow>,
{
    QueryScalar {
        inner: sqlx::query_scalar(sql).persistent(!pooled()),
    }
}

impl<'q> Query<'q> {
    /// Binds the next parameter.
    pub fn bind<T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>>(self, value: T) -> Self {
        Self {
            inner: self.inner.bind(value),
        }
    }

    /// Runs the statement.
    pub async fn execute<'c>(self, on: impl Into<Target<'c>>) -> sqlx::Result<PgQueryResult> {
        let inner = self.inner;
        run_on!(on, |conn| inner.execute(conn))
    }
}

macro_rules! fetch_methods {
    ($name:ident, $($bound:tt)*) => {
        impl<'q, O> $name<'q, O>
        where
            O: Send + Unpin,
            $($bound)*
        {
            /// Binds the next parameter.
            pub fn bind<T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>>(
                self,
                value: T,
            ) -> Self {
                Self {
                    inner: self.inner.bind(value),
                }
            }

            /// The first row; an error when there is none.
            pub async fn fetch_one<'c>(self, on: impl Into<Target<'c>>) -> sqlx::Result<O> {
                let inner = self.inner;
                run_on!(on, |conn| inner.fetch_one(conn))
            }

            /// The first row, if any.
            pub async fn fetch_optional<'c>(
                self,
                on: impl Into<Target<'c>>,
            ) -> sqlx::Result<Option<O>> {
                let inner = self.inner;
                run_on!(on, |conn| inner.fetch_optional(conn))
            }

            /// Every row.
            pub async fn fetch_all<'c>(self, on: impl Into<Target<'c>>) -> sqlx::Result<Vec<O>> {
                let inner = self.inner;
                run_on!(on, |conn| inner.fetch_all(conn))
            }
        }
    };
}

fetch_methods!(QueryAs, O: for<'r> sqlx::FromRow<'r, PgRow>);
fetch_methods!(QueryScalar, (O,): for<'r> sqlx::FromRow<'r, PgRow>);

/// Connects a pool of at most `max` connections to `url` (Postgres or a pooler,
/// transaction-mode included: see the module documentation).
pub async fn connect(url: &str, max: u32) -> sqlx::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection it hands out by default: a round trip
        // before every query. Only a connection idle long enough to have been
        // dropped on the way (a restarted server, a pooler's idle timeout) is
        // pinged; a dead one is closed and another taken.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < PING_AFTER_IDLE {
                    return Ok(true);
                }
                Ok(conn.ping().await.is_ok())
            })
        })
        .connect(url)
        .await
}

/// How long a pooled connection may sit idle before it is pinged on its way out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(10);

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The server did not answer or refused the connection.
    #[error("connecting to the database server: {0}")]
    Connect(#[source] sqlx::Error),
    /// The database did not exist and could not be created.
    #[error("creating the database: {0}")]
    Create(#[source] sqlx::Error),
    /// A migration failed.
    #[error("running database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Creates the database at `direct_url` if missing and runs the migrations over
/// one direct (or session-mode) connection. Routers starting together take
/// turns: the migrator holds a session advisory lock on that connection, and the
/// connection is closed (the lock released) before this returns.
pub async fn migrate(direct_url: &str) -> Result<(), MigrateError> {
    if !Postgres::database_exists(direct_url)
        .await
        .map_err(MigrateError::Connect)?
    {
        tracing::info!("creating the database");
        match Postgres::create_database(direct_url).await {
            Ok(()) => {}
            // Another router created it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(MigrateError::Create(e)),
        }
    }
    let mut conn = PgConnection::connect(direct_url)
        .await
        .map_err(MigrateError::Connect)?;
    let ran = crate::MIGRATOR.run(&mut conn).await;
    // Closing ends the session, and with it the migrator's lock, whatever happened.
    if let Err(error) = conn.close().await {
        tracing::warn!(%error, "closing the migration connection");
    }
    Ok(ran?)
}

/// Begins a transaction that sees only `user_id`'s rows.
pub async fn user_tx(db: &PgPool, user_id: Uuid) -> sqlx::Result<Transaction<'static, Postgres>> {
    let mut tx = db.begin().await?;
    // `set_config(.., true)` is `SET LOCAL`: both end with the transaction, so a
    // pooled connection never carries one user's identity into the next request.
    // language=PostgreSQL
    query("select set_config('role', $1, true), set_config('app.user_id', $2, true)")
        .bind(USER_ROLE)
        .bind(user_id.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    /// Every query of the router goes through this module's builders: one
    /// `sqlx::query…` elsewhere breaks the router behind a transaction pooler.
    #[test]
    fn every_query_is_built_here() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("src dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && path != src.join("db.rs") {
                    let text = std::fs::read_to_string(&path).expect("source");
                    for (n, line) in text.lines().enumerate() {
                        let found = ["sqlx::query(", "sqlx::query_as", "sqlx::query_scalar"]
                            .iter()
                            .any(|p| line.contains(p));
                        if found {
                            offenders.push(format!("{}:{}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "use crate::db::query/query_as/query_scalar (unnamed statements, run in a \
             transaction: see db.rs) instead of sqlx's at {offenders:?}"
        );
    }
}
