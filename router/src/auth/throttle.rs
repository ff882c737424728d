//! Login throttling, kept in Postgres so every router process shares it.
//!
//! Each key (`account:<email>`, `ip:<address>`) counts failed logins in a window
//! of [`WINDOW`]; the [`MAX_FAILURES`]th failure locks the key for [`LOCK`]. While
//! locked, attempts are refused without checking the password (and don't count).

use std::time::Duration;

use sqlx::PgPool;

/// Failures within [`WINDOW`] that lock a key.
pub const MAX_FAILURES: i32 = 10;
/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long a lock lasts.
pub const LOCK: Duration = Duration::from_secs(15 * 60);

/// The throttle key of an account.
pub fn account_key(email: &str) -> String {
    format!("account:{}", email.to_lowercase())
}

/// The throttle key of a client address.
pub fn ip_key(ip: std::net::IpAddr) -> String {
    format!("ip:{ip}")
}

/// Seconds until the first of `keys` that is locked opens again, if any is.
pub async fn locked_for(db: &PgPool, keys: &[String]) -> sqlx::Result<Option<u64>> {
    // language=PostgreSQL
    let secs: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from max(locked_until) - now())::float8 from login_throttle
         where key = any($1) and locked_until > now()",
    )
    .bind(keys)
    .fetch_one(db)
    .await?;
    Ok(secs.filter(|s| *s > 0.0).map(|s| s.ceil() as u64))
}

/// Counts a failed login against every key.
pub async fn record_failure(db: &PgPool, keys: &[String]) -> sqlx::Result<()> {
    // language=PostgreSQL
    sqlx::query(
        "insert into login_throttle as t (key, failures, window_start)
         select k, 1, now() from unnest($1::text[]) as k
         on conflict (key) do update set
             failures = case when t.window_start < now() - $2 then 1 else t.failures + 1 end,
             window_start = case when t.window_start < now() - $2 then now() else t.window_start end,
             locked_until = case
                 when (case when t.window_start < now() - $2 then 1 else t.failures + 1 end) >= $3
                 then now() + $4 else t.locked_until end",
    )
    .bind(keys)
    .bind(WINDOW)
    .bind(MAX_FAILURES)
    .bind(LOCK)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets an account's failures after a successful login (addresses keep theirs).
pub async fn clear(db: &PgPool, key: &str) -> sqlx::Result<()> {
    // language=PostgreSQL
    sqlx::query("delete from login_throttle where key = $1")
        .bind(key)
        .execute(db)
        .await?;
    Ok(())
}
