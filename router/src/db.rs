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
//! connection. So the router's queries never leave anything on a server
//! connection that outlives a transaction:
//!
//! - every query is built with [`query`], [`query_as`] or [`query_scalar`] (not
//!   `sqlx::query…`), which use the *unnamed* prepared statement: nothing named
//!   is left behind for the next client of that server connection (sqlx's named
//!   `sqlx_s_N` statements collide there, cache or no cache);
//! - sqlx prepares and executes a statement in two round trips, and a pooler may
//!   hand the second one to another server connection between them. A pool made
//!   by [`connect`] with [`Pooling::Transaction`] therefore opens a transaction
//!   whenever it hands a connection out and commits it when the connection comes
//!   back, so whatever one checkout runs stays on one server connection;
//! - session state is transaction-local (`set_config(.., true)`, advisory
//!   `pg_advisory_xact_lock`); `LISTEN` and the migrator's session lock use the
//!   direct connection of `DATABASE_DIRECT_URL` ([`migrate`]).

use std::time::Duration;

use sqlx::{
    Connection, Executor, PgConnection, PgPool, Postgres, Transaction,
    migrate::MigrateDatabase,
    postgres::{PgArguments, PgPoolOptions, PgRow},
    query::{Query, QueryAs, QueryScalar},
};
use uuid::Uuid;

/// The role that row-level security applies to.
pub const USER_ROLE: &str = "jarvis_user";

/// A query on the unnamed prepared statement (see the module documentation).
pub fn query(sql: &str) -> Query<'_, Postgres, PgArguments> {
    sqlx::query(sql).persistent(false)
}

/// [`sqlx::query_as`] on the unnamed prepared statement.
pub fn query_as<'q, O>(sql: &'q str) -> QueryAs<'q, Postgres, O, PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, PgRow>,
{
    sqlx::query_as(sql).persistent(false)
}

/// [`sqlx::query_scalar`] on the unnamed prepared statement.
pub fn query_scalar<'q, O>(sql: &'q str) -> QueryScalar<'q, Postgres, O, PgArguments>
where
    (O,): for<'r> sqlx::FromRow<'r, PgRow>,
{
    sqlx::query_scalar(sql).persistent(false)
}

/// What stands between the router and Postgres on the pooled path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Postgres itself, or a session-mode pooler.
    Session,
    /// A transaction-mode pooler: every checkout of the pool runs in one
    /// transaction (see the module documentation).
    Transaction,
}

/// Connects a pool of at most `max` connections to `url`.
pub async fn connect(url: &str, max: u32, pooling: Pooling) -> sqlx::Result<PgPool> {
    let options = PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5));
    let options = match pooling {
        Pooling::Session => options,
        Pooling::Transaction => options
            // Outside a transaction the pooler releases the server connection after
            // every Sync; `BEGIN` holds it until the checkout ends.
            .after_connect(|conn, _| Box::pin(async move { begin_checkout(conn).await }))
            .before_acquire(|conn, _| {
                Box::pin(async move { begin_checkout(conn).await.map(|()| true) })
            })
            .after_release(|conn, _| {
                Box::pin(async move {
                    // Ends the checkout's transaction; when the code committed its
                    // own (`begin()` … `commit()`), Postgres only warns.
                    conn.execute("commit").await?;
                    Ok(true)
                })
            }),
    };
    options.connect(url).await
}

/// Opens the transaction of one checkout of a [`Pooling::Transaction`] pool.
async fn begin_checkout(conn: &mut PgConnection) -> sqlx::Result<()> {
    // The simple protocol: no statement is prepared. A later `begin()` of the
    // code runs inside it (Postgres warns and goes on) and its `commit()` or
    // `rollback()` ends it.
    conn.execute("begin").await.map(|_| ())
}

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
