//! Sign-up throttling per client address and per network (IPv4 /24, IPv6 /64),
//! kept in Postgres (`signup_throttle`) so every router replica counts together.
//!
//! Each key counts in a fixed window of [`WINDOW`] from its first count. A
//! sign-up is counted inside the transaction that creates the account, so one
//! refused for another reason (the address is taken) rolls its count back, and
//! concurrent sign-ups from one network queue on the key's row instead of
//! slipping past the limit together. The same counters rate verification mail
//! per user ([`count`]).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use sqlx::{PgConnection, PgPool};

/// The window sign-ups are counted in.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// The sign-up limits (`JARVIS_SIGNUPS_PER_ADDRESS_PER_HOUR`,
/// `JARVIS_SIGNUPS_PER_NETWORK_PER_HOUR`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Accounts per client address per window.
    pub per_address: u32,
    /// Accounts per client network per window.
    pub per_network: u32,
}

/// A sign-up refused: who has made too many, and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `your address (…)` or `your network (…)`.
    pub from: String,
    /// The limit that was reached.
    pub limit: u32,
    /// Seconds until the window ends.
    pub retry_after: u64,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "too many accounts were created from {} in the last hour (at most {}); try again in {} minutes",
            self.from,
            self.limit,
            self.retry_after.div_ceil(60).max(1)
        )
    }
}

/// The network of `ip`: its /24 (IPv4) or /64 (IPv6), written as a CIDR.
pub fn network(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{}/24", Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// The counters a sign-up from `ip` goes against: (key, limit, who for people).
fn keys(ip: IpAddr, limits: Limits) -> [(String, u32, String); 2] {
    let ip = ip.to_canonical();
    let net = network(ip);
    [
        (
            format!("signup:addr:{ip}"),
            limits.per_address,
            format!("your address ({ip})"),
        ),
        (
            format!("signup:net:{net}"),
            limits.per_network,
            format!("your network ({net})"),
        ),
    ]
}

/// Whether a sign-up from `ip` would be refused now, without counting it (so a
/// refused request costs no password hashing).
pub async fn check(db: &PgPool, ip: IpAddr, limits: Limits) -> sqlx::Result<Result<(), Refused>> {
    for (key, limit, from) in keys(ip, limits) {
        // language=PostgreSQL
        let row: Option<(i32, f64)> = crate::db::query_as(
            "select count, extract(epoch from window_start + $2 - now())::float8
             from signup_throttle where key = $1 and window_start > now() - $2",
        )
        .bind(&key)
        .bind(WINDOW)
        .fetch_optional(db)
        .await?;
        if let Some((count, left)) = row
            && u32::try_from(count).unwrap_or(0) >= limit
        {
            return Ok(Err(Refused {
                from,
                limit,
                retry_after: left.max(1.0).ceil() as u64,
            }));
        }
    }
    Ok(Ok(()))
}

/// Counts a sign-up from `ip` inside the caller's transaction; refused (and the
/// caller should roll back) once a counter passes its limit.
pub async fn record(
    tx: &mut PgConnection,
    ip: IpAddr,
    limits: Limits,
) -> sqlx::Result<Result<(), Refused>> {
    for (key, limit, from) in keys(ip, limits) {
        if let Err(retry_after) = count(&mut *tx, &key, limit, WINDOW).await? {
            return Ok(Err(Refused {
                from,
                limit,
                retry_after,
            }));
        }
    }
    Ok(Ok(()))
}

/// Counts one event against `key` in a fixed `window`; `Err(seconds until the
/// window ends)` when that makes more than `limit`.
pub async fn count(
    conn: &mut PgConnection,
    key: &str,
    limit: u32,
    window: Duration,
) -> sqlx::Result<Result<(), u64>> {
    // language=PostgreSQL
    let (count, left): (i32, f64) = crate::db::query_as(
        "insert into signup_throttle as t (key, count, window_start) values ($1, 1, now())
         on conflict (key) do update set
             count = case when t.window_start <= now() - $2 then 1 else t.count + 1 end,
             window_start = case when t.window_start <= now() - $2 then now() else t.window_start end
         returning count, extract(epoch from window_start + $2 - now())::float8",
    )
    .bind(key)
    .bind(window)
    .fetch_one(conn)
    .await?;
    if u32::try_from(count).unwrap_or(u32::MAX) > limit {
        return Ok(Err(left.max(1.0).ceil() as u64));
    }
    Ok(Ok(()))
}

/// Deletes counters whose window ended over a day ago (the longest window any
/// caller uses is [`WINDOW`]). Returns how many went.
pub async fn prune(db: &PgPool) -> sqlx::Result<u64> {
    // language=PostgreSQL
    let done = crate::db::query(
        "delete from signup_throttle where window_start < now() - interval '1 day'",
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_ipv4_slash_24_and_ipv6_slash_64() {
        let v4: IpAddr = "203.0.113.77".parse().expect("ip");
        assert_eq!(network(v4), "203.0.113.0/24");
        let v6: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        assert_eq!(network(v6), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().expect("ip");
        assert_eq!(network(mapped), "203.0.113.0/24");
    }

    #[test]
    fn a_refusal_says_who_and_when() {
        let r = Refused {
            from: "your network (203.0.113.0/24)".into(),
            limit: 50,
            retry_after: 61,
        };
        assert_eq!(
            r.to_string(),
            "too many accounts were created from your network (203.0.113.0/24) in the last hour (at most 50); try again in 2 minutes"
        );
    }
}
