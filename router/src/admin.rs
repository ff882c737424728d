//! `router admin …`: the operators' command line, for running Jarvis without
//! Stripe (or fixing an account by hand). It talks to the same database as the
//! server (`DATABASE_URL`) and prints plain text tables.
//!
//! ```text
//! router admin users                   # every account: tier, subscription, disabled
//! router admin usage [USER]            # tokens and cost this month, per user
//! router admin grant USER TIER         # put USER on TIER, active, without Stripe
//! router admin revoke USER             # back to free, not active
//! router admin disable USER            # cut USER off at once: API, sockets, model calls, sign-ins
//! router admin enable USER
//! router admin egress [--user USER] [--since 1d] [--limit 100]
//!                                      # egress proxy connections, newest first
//! ```
//!
//! USER is an email address or a user id. A grant marks the state as set now
//! (`subscription_event_at`), so Stripe events older than the grant do not undo it.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use sqlx::PgPool;
use uuid::Uuid;

use crate::plans::Tier;

/// The admin command line.
#[derive(Debug, clap::Parser)]
#[command(name = "router admin", about = "Jarvis operators' commands")]
pub struct Admin {
    /// Postgres connection URL (the server's).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://localhost/jarvis"
    )]
    pub database_url: String,
    /// A direct (or session-mode) URL for the migrations; default: `DATABASE_URL`.
    #[arg(long, env = "DATABASE_DIRECT_URL")]
    pub database_direct_url: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// One admin command.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List every account.
    Users,
    /// Tokens and cost this calendar month (UTC), per user or for one.
    Usage {
        /// An email address or user id; all users when left out.
        user: Option<String>,
    },
    /// Put a user on a plan, active, without Stripe.
    Grant {
        /// An email address or user id.
        user: String,
        /// `free`, `pro` or `enterprise`.
        tier: String,
    },
    /// Take a user's plan away (back to `free`, not active).
    Revoke {
        /// An email address or user id.
        user: String,
    },
    /// Disable an account at once: its API calls, open sockets and model calls
    /// are refused or closed; its documents stay.
    Disable {
        /// An email address or user id.
        user: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// An email address or user id.
        user: String,
    },
    /// The egress proxy's connections (the audit), newest first, with the bytes
    /// of each and a total per user this month.
    Egress {
        /// An email address or user id; all users when left out.
        #[arg(long)]
        user: Option<String>,
        /// Only connections started this long ago or later (`1h`, `7d`).
        #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// At most this many connections.
        #[arg(long, default_value = "100")]
        limit: i64,
    },
}

/// Runs `command` against `db`; returns what to print.
pub async fn run(db: &PgPool, command: &Command) -> anyhow::Result<String> {
    match command {
        Command::Users => list_users(db).await,
        Command::Usage { user } => {
            let id = match user {
                Some(u) => Some(find_user(db, u).await?),
                None => None,
            };
            usage(db, id).await
        }
        Command::Grant { user, tier } => {
            let tier = Tier::from_name(tier)
                .with_context(|| format!("no plan is called `{tier}` (free, pro, enterprise)"))?;
            let id = find_user(db, user).await?;
            // language=PostgreSQL
            crate::db::query(
                "update users set tier = $2, subscription_active = true,
                     subscription_status = 'granted', subscription_event_at = now()
                 where id = $1",
            )
            .bind(id)
            .bind(tier.as_str())
            .execute(db)
            .await?;
            Ok(format!("{user}: granted {tier}\n"))
        }
        Command::Revoke { user } => {
            let id = find_user(db, user).await?;
            // language=PostgreSQL
            crate::db::query(
                "update users set tier = 'free', subscription_active = false,
                     subscription_status = 'revoked', subscription_event_at = now()
                 where id = $1",
            )
            .bind(id)
            .execute(db)
            .await?;
            Ok(format!("{user}: revoked (free, not active)\n"))
        }
        Command::Disable { user } => {
            let id = find_user(db, user).await?;
            // language=PostgreSQL
            crate::db::query(
                "update users set disabled_at = coalesce(disabled_at, now()) where id = $1",
            )
            .bind(id)
            .execute(db)
            .await?;
            // Every router closes the user's open sockets now; their API calls
            // are refused from the next request on (`http::extractor`).
            crate::http::sockets::notify_disabled(db, id).await?;
            Ok(format!("{user}: disabled\n"))
        }
        Command::Egress { user, since, limit } => {
            let id = match user {
                Some(u) => Some(find_user(db, u).await?),
                None => None,
            };
            egress(db, id, *since, *limit).await
        }
        Command::Enable { user } => {
            let id = find_user(db, user).await?;
            // language=PostgreSQL
            crate::db::query("update users set disabled_at = null where id = $1")
                .bind(id)
                .execute(db)
                .await?;
            Ok(format!("{user}: enabled\n"))
        }
    }
}

/// The id of the user named by email (in its normalised form, like sign-in) or id.
async fn find_user(db: &PgPool, user: &str) -> anyhow::Result<Uuid> {
    // language=PostgreSQL
    let found: Option<Uuid> = match user.parse::<Uuid>() {
        Ok(id) => {
            crate::db::query_scalar("select id from users where id = $1")
                .bind(id)
                .fetch_optional(db)
                .await?
        }
        Err(_) => {
            // Supabase users' rows are written without the form; give them one.
            crate::auth::email::backfill(db).await?;
            crate::db::query_scalar("select id from users where email_normalized = $1")
                .bind(crate::auth::email::normalize(user))
                .fetch_optional(db)
                .await?
        }
    };
    match found {
        Some(id) => Ok(id),
        None => bail!("no user {user}"),
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    tier: String,
    subscription_active: bool,
    subscription_status: Option<String>,
    disabled: bool,
}

async fn list_users(db: &PgPool) -> anyhow::Result<String> {
    // language=PostgreSQL
    let rows: Vec<UserRow> = crate::db::query_as(
        "select id, email, tier, subscription_active, subscription_status,
                disabled_at is not null as disabled
         from users order by created_at, email",
    )
    .fetch_all(db)
    .await?;
    let mut out = format!(
        "{:<36}  {:<32}  {:<10}  {:<6}  {:<10}  {}\n",
        "id", "email", "tier", "active", "status", "disabled"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<36}  {:<32}  {:<10}  {:<6}  {:<10}  {}",
            r.id,
            r.email,
            r.tier,
            if r.subscription_active { "yes" } else { "no" },
            r.subscription_status.as_deref().unwrap_or("-"),
            if r.disabled { "yes" } else { "no" },
        );
    }
    Ok(out)
}

async fn usage(db: &PgPool, user: Option<Uuid>) -> anyhow::Result<String> {
    // language=PostgreSQL
    let rows: Vec<(String, String, i64, i64, i64)> = crate::db::query_as(
        "select u.email, to_char(now() at time zone 'UTC', 'YYYY-MM'),
                coalesce(sum(g.input_tokens), 0)::bigint,
                coalesce(sum(g.output_tokens), 0)::bigint,
                coalesce(sum(g.cost_micros), 0)::bigint
         from users u
         left join usage g on g.owner_id = u.id
                          and g.created_at >= date_trunc('month', now(), 'UTC')
         where $1::uuid is null or u.id = $1
         group by u.id order by u.email",
    )
    .bind(user)
    .fetch_all(db)
    .await?;
    let mut out = format!(
        "{:<32}  {:<7}  {:>14}  {:>14}  {:>12}\n",
        "email", "month", "input_tokens", "output_tokens", "cost_usd"
    );
    for (email, month, input, output, cost) in rows {
        let _ = writeln!(
            out,
            "{email:<32}  {month:<7}  {input:>14}  {output:>14}  {:>12.6}",
            cost as f64 / 1e6
        );
    }
    Ok(out)
}

#[derive(sqlx::FromRow)]
struct EgressRow {
    email: String,
    host: String,
    port: i32,
    decision: String,
    reason: String,
    bytes_up: i64,
    bytes_down: i64,
    started_at: time::OffsetDateTime,
    seconds: f64,
}

async fn egress(
    db: &PgPool,
    user: Option<Uuid>,
    since: std::time::Duration,
    limit: i64,
) -> anyhow::Result<String> {
    let since_ms = i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
    // language=PostgreSQL
    let rows: Vec<EgressRow> = crate::db::query_as(
        "select u.email, e.host, e.port, e.decision, e.reason, e.bytes_up, e.bytes_down,
                e.started_at,
                extract(epoch from e.ended_at - e.started_at)::float8 as seconds
         from egress_connections e join users u on u.id = e.owner_id
         where ($1::uuid is null or e.owner_id = $1)
           and e.started_at >= now() - $2::float8 * interval '1 millisecond'
         order by e.started_at desc, e.id desc
         limit $3",
    )
    .bind(user)
    .bind(since_ms)
    .bind(limit.max(0))
    .fetch_all(db)
    .await?;
    let mut out = format!(
        "{:<25}  {:<28}  {:<32}  {:>5}  {:<7}  {:<20}  {:>12}  {:>12}  {:>8}\n",
        "started (UTC)",
        "email",
        "host",
        "port",
        "result",
        "reason",
        "bytes_up",
        "bytes_down",
        "seconds"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<25}  {:<28}  {:<32}  {:>5}  {:<7}  {:<20}  {:>12}  {:>12}  {:>8.1}",
            r.started_at
                .replace_nanosecond(0)
                .unwrap_or(r.started_at)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            r.email,
            r.host,
            r.port,
            r.decision,
            r.reason,
            r.bytes_up,
            r.bytes_down,
            r.seconds,
        );
    }
    // language=PostgreSQL
    let totals: Vec<(String, i64, i64)> = crate::db::query_as(
        "select u.email, count(*)::bigint, coalesce(sum(e.bytes_up + e.bytes_down), 0)::bigint
         from egress_connections e join users u on u.id = e.owner_id
         where ($1::uuid is null or e.owner_id = $1)
           and e.started_at >= date_trunc('month', now(), 'UTC')
         group by u.email order by u.email",
    )
    .bind(user)
    .fetch_all(db)
    .await?;
    let _ = writeln!(out, "\nthis month (UTC): connections, bytes both ways");
    for (email, n, bytes) in totals {
        let _ = writeln!(out, "{email:<28}  {n:>8}  {bytes:>14}");
    }
    Ok(out)
}
