//! Login throttling, kept in Postgres so every router process shares it.
//!
//! Two kinds of key count failed logins: an account *from one client network*
//! ([`account_key`]: `account:<normalised email>|<network>`), and a client network
//! across all accounts ([`address_key`]). Past a key's free attempts every further
//! failure makes the key wait twice as long as the last (1 s, 2 s, 4 s, … at most
//! [`MAX_WAIT`]) before the next attempt is looked at; a failure-free
//! [`WINDOW`] forgets the count. Nothing is keyed by the account alone, so
//! failures from an attacker's network never keep the account's owner out from
//! theirs; guessing one account from many networks is slowed per network, and
//! by argon2's cost. While a key waits, attempts are refused without checking the
//! password (and don't count). A successful sign-in forgets its account key.

use std::{net::IpAddr, time::Duration};

use sqlx::PgPool;

/// Failures an account may have from one network before waits begin.
pub const ACCOUNT_FREE_ATTEMPTS: i32 = 5;
/// Failures a network may have across all accounts before waits begin (offices
/// and carrier NATs put many people behind one address).
pub const ADDRESS_FREE_ATTEMPTS: i32 = 20;
/// A failure-free stretch this long forgets a key's failures.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest wait between attempts.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// One throttle key and its free attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The key as stored.
    pub name: String,
    /// Failures before waits begin.
    pub free_attempts: i32,
}

/// The key of signing into the account of `email_normalized` from `ip`'s network.
pub fn account_key(email_normalized: &str, ip: IpAddr) -> Key {
    Key {
        name: format!("account:{email_normalized}|{}", network(ip)),
        free_attempts: ACCOUNT_FREE_ATTEMPTS,
    }
}

/// The key of `ip`'s network, whatever account it tries.
pub fn address_key(ip: IpAddr) -> Key {
    Key {
        name: format!("ip:{}", network(ip)),
        free_attempts: ADDRESS_FREE_ATTEMPTS,
    }
}

/// The unit one client is counted in: an IPv4 address, an IPv6 /64 (what one
/// subscriber is given, so rotating within it gains nothing).
pub fn network(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Seconds until every one of `keys` may be tried again, if any must wait.
pub async fn wait_for(db: &PgPool, keys: &[Key]) -> sqlx::Result<Option<u64>> {
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    // language=PostgreSQL
    let secs: Option<f64> = crate::db::query_scalar(
        "select extract(epoch from max(locked_until) - now())::float8 from login_throttle
         where key = any($1) and locked_until > now()",
    )
    .bind(&names)
    .fetch_one(db)
    .await?;
    Ok(secs.filter(|s| *s > 0.0).map(|s| s.ceil() as u64))
}

/// Counts a failed login against every key, setting the wait of those past
/// their free attempts.
pub async fn record_failure(db: &PgPool, keys: &[Key]) -> sqlx::Result<()> {
    for key in keys {
        // `window_start` is the last failure: a quiet WINDOW since then starts
        // afresh. One statement, so concurrent failures each count.
        // language=PostgreSQL
        crate::db::query(
            "insert into login_throttle as t (key, failures, window_start, locked_until)
             values ($1, 1, now(), case when 1 >= $2 then now() + interval '1 second' end)
             on conflict (key) do update set
                 failures = case when t.window_start < now() - $4 then 1 else t.failures + 1 end,
                 window_start = now(),
                 locked_until = (
                     select case when f >= $2 then now() + least($3::interval,
                                 interval '1 second' * power(2, least(f - $2, 20))) end
                     from (select case when t.window_start < now() - $4 then 1
                                       else t.failures + 1 end as f) as n
                 )",
        )
        .bind(&key.name)
        .bind(key.free_attempts)
        .bind(MAX_WAIT)
        .bind(WINDOW)
        .execute(db)
        .await?;
    }
    Ok(())
}

/// Deletes keys whose failures are forgotten anyway (quiet past [`WINDOW`], no
/// wait pending), so keys made up by the million (IPv6 networks, guessed
/// addresses) do not pile up. Returns how many went.
pub async fn prune(db: &PgPool) -> sqlx::Result<u64> {
    // language=PostgreSQL
    let done = crate::db::query(
        "delete from login_throttle where window_start < now() - $1
         and (locked_until is null or locked_until < now())",
    )
    .bind(WINDOW)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Forgets a key's failures after a successful login.
pub async fn clear(db: &PgPool, key: &Key) -> sqlx::Result<()> {
    // language=PostgreSQL
    crate::db::query("delete from login_throttle where key = $1")
        .bind(&key.name)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_normalised_account_and_the_network() {
        let v4: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(
            account_key("ada@example.com", v4).name,
            "account:ada@example.com|203.0.113.9"
        );
        // An IPv6 client is its /64: rotating addresses inside it gains nothing.
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(address_key(a), address_key(b));
        assert_eq!(address_key(a).name, "ip:2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().expect("ip");
        assert_eq!(address_key(mapped), address_key(v4));
    }
}
