//! Database access shared by every module.
//!
//! Work done for one user runs in [`user_tx`]: a transaction under the
//! unprivileged `jarvis_user` role with `app.user_id` set, so the row-level
//! security policies of `migrations/0002_row_level_security.sql` hide every other
//! user's rows even if a query forgot its `owner_id` filter. Queries still filter
//! by owner themselves; the policies are the second line of defence. `BEGIN` and
//! those settings go to the server in one message. A read that binds no text
//! from a person (a page of a list) is cheaper still as [`user_rows`]: settings
//! and query in one message, which the server runs as one implicit transaction,
//! so the whole read is one round trip. Straight to Postgres that query is
//! prepared once per connection and executed by name, so it is not parsed and
//! planned again on every read.
//!
//! # Through a transaction-mode pooler
//!
//! `DATABASE_URL` may name PgBouncer in `pool_mode = transaction` (Supabase's
//! pooler on port 6543): each transaction may run on a different server
//! connection. So nothing the router does leaves state on a server connection
//! past a transaction, and nothing spans two transactions:
//!
//! - every query is built with [`query`], [`query_as`] or [`query_scalar`]
//!   (never `sqlx::query…`), or is a [`user_rows`] read (one message of the
//!   simple protocol: no prepared statement, one transaction). The builders use
//!   the *unnamed* prepared statement, so
//!   nothing named is left for the next client of that server connection (sqlx's
//!   named `sqlx_s_N` statements collide there, cache or no cache). And they run
//!   in a transaction: sqlx prepares (Parse, Sync) and executes (Bind, Execute,
//!   Sync) in two round trips, which a pooler may hand to two server connections
//!   outside a transaction ("bind message supplies 2 parameters, but prepared
//!   statement \"\" requires 0", or someone else's statement run). On a
//!   transaction ([`user_tx`], `begin()`) a query runs as is; on the pool or a
//!   bare connection it runs in a transaction of its own ([`Target`]);
//! - session state is transaction-local (`set local`, `set_config(.., true)`,
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
                let mut held = acquire(pool).await?;
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
                let mut tx = Transaction::begin(acquire(pool).await?, None).await?;
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

/// Begins a transaction that sees only `user_id`'s rows. `BEGIN` and the
/// settings row-level security needs go in one message: one round trip.
pub async fn user_tx(db: &PgPool, user_id: Uuid) -> sqlx::Result<Transaction<'static, Postgres>> {
    // What `PgPool::begin_with` does, with the wait for the connection noted.
    Transaction::begin(
        acquire(db).await?,
        Some(format!("begin; {}", as_user(user_id)).into()),
    )
    .await
}

/// Begins a transaction under the role row-level security applies to, with no
/// user set: it sees no one's rows until a statement of it sets `app.user_id`
/// (as `open_turns` does for each turn). `BEGIN` and the role switch go in one
/// message.
pub async fn unprivileged_tx(db: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    Transaction::begin(
        acquire(db).await?,
        Some(format!("begin; set local role {USER_ROLE}").into()),
    )
    .await
}

/// A connection of `db`, noting how long it took to get one
/// (`jarvis_db_pool_wait_seconds`: the wait for a free one, or for a new one to
/// connect, and the ping of one idle for long).
pub async fn acquire(db: &PgPool) -> sqlx::Result<PoolConnection<Postgres>> {
    let started = std::time::Instant::now();
    let conn = db.acquire().await;
    crate::metrics::pool_waited(started.elapsed());
    conn
}

/// The statements that make the rest of a transaction `user_id`'s: the role
/// row-level security applies to, and the user its policies compare with.
/// `set local` ends with the transaction, so a pooled connection never carries
/// one user's identity into the next request. A UUID's text carries no SQL.
fn as_user(user_id: Uuid) -> String {
    format!("set local role {USER_ROLE}; set local app.user_id = '{user_id}'")
}

/// A value written into the text of a [`UserRows`] query: only types whose text
/// cannot carry SQL (no strings: a query with text from a person binds it in a
/// [`user_tx`]).
pub trait Literal {
    /// This value as a typed SQL literal.
    fn literal(&self) -> String;
}

impl Literal for Uuid {
    fn literal(&self) -> String {
        format!("'{self}'::uuid")
    }
}

impl Literal for i64 {
    fn literal(&self) -> String {
        format!("'{self}'::int8")
    }
}

/// A read of one user's rows in one round trip and one short transaction; built
/// by [`user_rows`].
#[must_use = "a query does nothing until it is run"]
pub struct UserRows<'q> {
    user_id: Uuid,
    sql: &'q str,
    literals: Vec<String>,
}

/// A read of `user_id`'s rows sent as one message: [`user_tx`]'s settings, then
/// `sql`, which the server runs as one implicit transaction (committed when the
/// message is done, rolled back on an error) and plans after the role switch,
/// so row-level security applies to it as in a [`user_tx`]. That costs one round
/// trip where a [`user_tx`] costs three (begin, query, commit) and four behind a
/// pooler, and leaves nothing on the connection either way.
///
/// Straight to Postgres (not behind a pooler) `sql` is prepared once per
/// connection and each read executes it by name in that one message, with the
/// [`Literal`]s as its arguments; behind a pooler, which may hand the next
/// message to a server connection that never saw the `PREPARE`, the text is sent
/// whole each time, and one message has no parameters: `$1`, `$2`… in `sql`
/// (outside quotes) are replaced by the [`Literal`]s bound in that order. Rows come as text and
/// decode as usual (the connection's `TimeZone` is UTC and `DateStyle` ISO:
/// sqlx sets both when it connects, and a pooler keeps them per client).
pub fn user_rows(user_id: Uuid, sql: &str) -> UserRows<'_> {
    UserRows {
        user_id,
        sql,
        literals: Vec::new(),
    }
}

impl UserRows<'_> {
    /// Binds the next parameter.
    pub fn bind(mut self, value: impl Literal) -> Self {
        self.literals.push(value.literal());
        self
    }

    /// Every row, each decoded as `O`.
    pub async fn fetch_all<O>(self, db: &PgPool) -> sqlx::Result<Vec<O>>
    where
        O: for<'r> sqlx::FromRow<'r, PgRow>,
    {
        let rows = if pooled() {
            let sql = format!(
                "{}; {}",
                as_user(self.user_id),
                inline(self.sql, &self.literals)?
            );
            raw_rows(&mut *acquire(db).await?, &sql).await?
        } else {
            self.fetch_prepared(db).await?
        };
        rows.iter().map(O::from_row).collect()
    }

    /// Straight to Postgres: the query is a statement prepared on the
    /// connection (`PREPARE`, the first time a connection runs it) and each read
    /// sends the settings and `EXECUTE name(literals)` in one message, so the
    /// server neither parses nor plans the query again. Row-level security still
    /// applies: a prepared plan records the role it was made for and is made
    /// again when run under another, and the policies read `app.user_id` when the
    /// plan runs, not when it is made.
    async fn fetch_prepared(&self, db: &PgPool) -> sqlx::Result<Vec<PgRow>> {
        let name = statement_name(self.sql);
        let args = if self.literals.is_empty() {
            String::new()
        } else {
            format!("({})", self.literals.join(", "))
        };
        let settings = as_user(self.user_id);
        let mut conn = acquire(db).await?;
        let execute = format!("{settings}; execute {name}{args}");
        let first = raw_rows(&mut conn, &execute).await;
        // Not prepared on this connection yet (SQLSTATE 26000): prepare it in
        // the same message, under the role it will run as. `PREPARE` outlives
        // the (committed) implicit transaction.
        let unprepared = matches!(
            &first,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("26000")
        );
        if !unprepared {
            return first;
        }
        let prepare = format!(
            "{settings}; prepare {name} as {}; execute {name}{args}",
            self.sql
        );
        raw_rows(&mut conn, &prepare).await
    }
}

/// The rows of `sql` (statements of the simple protocol) on `conn`, as a boxed
/// future of a named lifetime: `RawSql::fetch_all` on a connection inside an
/// `async fn` makes its future not `Send` (an executor bound not general
/// enough), and handlers' futures must be.
fn raw_rows<'c>(
    conn: &'c mut PgConnection,
    sql: &'c str,
) -> futures::future::BoxFuture<'c, sqlx::Result<Vec<PgRow>>> {
    sqlx::Executor::fetch_all(conn, sqlx::raw_sql(sql))
}

/// The name of `sql`'s prepared statement: the same text, the same name, on
/// every connection of this process (`jarvis_` and a hash of the text, apart
/// from sqlx's own `sqlx_s_N`).
fn statement_name(sql: &str) -> String {
    // FNV-1a: stable, and enough to tell a process's few queries apart.
    let hash = sql.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("jarvis_{hash:016x}")
}

/// `sql` with each `$n` outside single quotes replaced by `literals[n - 1]`.
fn inline(sql: &str, literals: &[String]) -> sqlx::Result<String> {
    let mut out =
        String::with_capacity(sql.len() + literals.iter().map(String::len).sum::<usize>());
    let mut quoted = false;
    let mut chars = sql.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        let digits = chars.peek().is_some_and(|(_, d)| d.is_ascii_digit());
        if c != '$' || quoted || !digits {
            out.push(c);
            continue;
        }
        let mut end = at + 1;
        while let Some((i, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
            end = i + d.len_utf8();
            chars.next();
        }
        let literal = sql[at + 1..end]
            .parse::<usize>()
            .ok()
            .and_then(|n| literals.get(n.checked_sub(1)?))
            .ok_or_else(|| {
                sqlx::Error::Protocol(format!(
                    "{} has no value bound (bound: {})",
                    &sql[at..end],
                    literals.len()
                ))
            })?;
        out.push_str(literal);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_the_bound_literals() {
        let id = Uuid::nil();
        let sql = inline(
            "select 1 from t where a = $1 and b = $10 and c = '$2' limit $2",
            &[
                id.literal(),
                7_i64.literal(),
                "x".into(),
                "x".into(),
                "x".into(),
                "x".into(),
                "x".into(),
                "x".into(),
                "x".into(),
                (-3_i64).literal(),
            ],
        )
        .expect("inline");
        assert_eq!(
            sql,
            "select 1 from t where a = '00000000-0000-0000-0000-000000000000'::uuid \
             and b = '-3'::int8 and c = '$2' limit '7'::int8"
        );
    }

    #[test]
    fn a_placeholder_without_a_value_is_an_error() {
        assert!(inline("select $2", &[1_i64.literal()]).is_err());
        assert!(inline("select $0", &[1_i64.literal()]).is_err());
    }

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
