//! The audit of the egress proxy: one `egress_connections` row per connection
//! (written when it ends, or at once when it is refused), the workspace's
//! approvals, and the `/metrics` counters.

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::policy::{Approval, Pattern};
use crate::metrics::{EgressBytesLabels, EgressDecisionLabels, Metrics};

/// How a connection was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admitted by the policy.
    Allowed,
    /// Refused by the policy, the deny-list, a loop or the cap.
    Denied,
    /// Admitted, but the name did not resolve or no address answered.
    Failed,
}

impl Decision {
    /// The stored and counted name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

/// One audited connection.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The workspace's user.
    pub owner_id: Uuid,
    /// The host asked for (normalized when it could be).
    pub host: String,
    /// The port asked for.
    pub port: u16,
    /// The decision.
    pub decision: Decision,
    /// `plan` / `approved`, or the refusal's reason.
    pub reason: String,
    /// Bytes sent to the upstream.
    pub bytes_up: u64,
    /// Bytes received from the upstream.
    pub bytes_down: u64,
    /// When the request came.
    pub started_at: OffsetDateTime,
    /// When the connection ended (or was refused).
    pub ended_at: OffsetDateTime,
}

/// One row of `egress_connections` as read back.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct Row {
    /// The host.
    pub host: String,
    /// The port.
    pub port: i32,
    /// `allowed`, `denied` or `failed`.
    pub decision: String,
    /// Why.
    pub reason: String,
    /// Bytes sent upstream.
    pub bytes_up: i64,
    /// Bytes received.
    pub bytes_down: i64,
    /// Start.
    pub started_at: OffsetDateTime,
    /// End.
    pub ended_at: OffsetDateTime,
}

/// Counts a decision in `jarvis_egress_decisions_total`.
pub fn count_decision(metrics: &Metrics, decision: Decision) {
    metrics
        .egress_decisions
        .get_or_create(&EgressDecisionLabels {
            decision: decision.as_str().to_string(),
        })
        .inc();
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Writes `conn`'s row (for its user, under row-level security) and counts its
/// bytes. A failure is logged: the connection itself is over either way.
pub async fn record(db: &PgPool, metrics: &Metrics, conn: &Connection) {
    for (direction, n) in [("up", conn.bytes_up), ("down", conn.bytes_down)] {
        if n > 0 {
            metrics
                .egress_bytes
                .get_or_create(&EgressBytesLabels {
                    direction: direction.to_string(),
                })
                .inc_by(n);
        }
    }
    if let Err(error) = insert(db, conn).await {
        tracing::error!(%error, owner_id = %conn.owner_id, host = %conn.host, "writing the egress audit row");
    }
}

async fn insert(db: &PgPool, conn: &Connection) -> sqlx::Result<()> {
    let mut tx = crate::db::user_tx(db, conn.owner_id).await?;
    // language=PostgreSQL
    crate::db::query(
        "insert into egress_connections
             (owner_id, host, port, decision, reason, bytes_up, bytes_down, started_at, ended_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(conn.owner_id)
    .bind(&conn.host)
    .bind(i32::from(conn.port))
    .bind(conn.decision.as_str())
    .bind(&conn.reason)
    .bind(to_i64(conn.bytes_up))
    .bind(to_i64(conn.bytes_down))
    .bind(conn.started_at)
    .bind(conn.ended_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// `user_id`'s latest connections, newest first (as that user: row-level security applies).
pub async fn recent(db: &PgPool, user_id: Uuid, limit: i64) -> sqlx::Result<Vec<Row>> {
    let mut tx = crate::db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let rows = crate::db::query_as(
        "select host, port, decision, reason, bytes_up, bytes_down, started_at, ended_at
         from egress_connections where owner_id = $1
         order by started_at desc, id desc limit $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// What the policy needs about a user: their plan tier and their workspace's approvals.
pub async fn policy_inputs(
    db: &PgPool,
    user_id: Uuid,
) -> sqlx::Result<(crate::plans::Tier, Vec<Approval>)> {
    let mut tx = crate::db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let tier: Option<String> = crate::db::query_scalar("select tier from users where id = $1")
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    // language=PostgreSQL
    let rows: Vec<(String, String)> =
        crate::db::query_as("select pattern, decision from egress_approvals where owner_id = $1")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let approvals = rows
        .into_iter()
        .filter_map(|(pattern, decision)| match Pattern::parse(&pattern) {
            Ok(pattern) => Some(Approval {
                pattern,
                allow: decision == "allow",
            }),
            Err(error) => {
                tracing::warn!(%error, %user_id, "skipping a malformed egress approval");
                None
            }
        })
        .collect();
    let tier = crate::plans::Tier::parse(tier.as_deref().unwrap_or("free"));
    Ok((tier, approvals))
}

/// Records `user_id`'s decision about `pattern` (allow always, or deny), replacing
/// an earlier one.
pub async fn set_approval(
    db: &PgPool,
    user_id: Uuid,
    pattern: &Pattern,
    allow: bool,
) -> sqlx::Result<()> {
    let mut tx = crate::db::user_tx(db, user_id).await?;
    set_approval_in(&mut tx, user_id, pattern, allow).await?;
    tx.commit().await
}

/// [`set_approval`] inside `tx` (a transaction of `user_id`'s: the browser's
/// answer to the approval prompt, `super::ask`).
pub async fn set_approval_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    user_id: Uuid,
    pattern: &Pattern,
    allow: bool,
) -> sqlx::Result<()> {
    // language=PostgreSQL
    crate::db::query(
        "insert into egress_approvals (owner_id, pattern, decision) values ($1, $2, $3)
         on conflict (owner_id, pattern) do update set decision = excluded.decision",
    )
    .bind(user_id)
    .bind(pattern.to_string())
    .bind(if allow { "allow" } else { "deny" })
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The month's bytes (UTC calendar month, both ways) of `user_id`'s connections
/// that ended.
pub async fn month_bytes(db: &PgPool, user_id: Uuid) -> sqlx::Result<u64> {
    let mut tx = crate::db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let n: i64 = crate::db::query_scalar(
        "select coalesce(sum(bytes_up + bytes_down), 0)::bigint from egress_connections
         where owner_id = $1 and started_at >= date_trunc('month', now(), 'UTC')",
    )
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
