//! `GET /api/usage`: the signed-in user's tokens and cost this calendar month
//! (UTC), from the gateway's `usage` rows, with their plan and its limits.
//!
//! ```json
//! {"month": "2026-11", "input_tokens": 1200, "output_tokens": 300,
//!  "cost_micros": 8100, "quota": 1000000, "limit_tokens": 1000000,
//!  "plan": "free", "limits": {"requests_per_minute": 20, "monthly_tokens": 1000000,
//!  "max_concurrent_turns": 1, "voice": true},
//!  "subscription_active": true, "subscription_status": null, "billing": false,
//!  "storage_used": 52000, "storage_quota": 1073741824, "price_cents": 0,
//!  "egress_bytes": 1048576}
//! ```
//!
//! `storage_used` is every byte the storage quota counts (`crate::quota`).
//! `egress_bytes` is what the sandbox moved through the egress proxy this month,
//! both ways, in connections that ended (`egress_connections`); its limit is
//! `limits.egress_bytes_per_month`, and `limits.egress_bandwidth_bytes_per_second`
//! the rate its connections share.
//!
//! `quota` (and `limit_tokens`, the name the Account page reads) is `null` when
//! unlimited. Only the caller's rows are read, inside their row-level-security
//! transaction.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;

use super::{AppState, Error, Result, extractor::AuthUser};
use crate::{
    db,
    plans::{Plan, Tier},
    quota,
};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/usage", get(get_usage))
}

/// A plan's limits as the browser sees them.
#[derive(Debug, Serialize)]
pub struct LimitsView {
    /// Whether the plan may call the model (with billing on; with it off every
    /// plan may).
    pub model: bool,
    /// Model requests per minute.
    pub requests_per_minute: u32,
    /// Tokens per calendar month; `null` is unlimited.
    pub monthly_tokens: Option<u64>,
    /// Turns running at once.
    pub max_concurrent_turns: u32,
    /// Whether spoken answers are on.
    pub voice: bool,
    /// Bytes of files the user may keep; `null` is unlimited.
    pub storage_bytes: Option<u64>,
    /// Bytes through the egress proxy per calendar month; `null` is unlimited.
    pub egress_bytes_per_month: Option<u64>,
    /// Bytes per second through the egress proxy, all of the workspace's
    /// connections together; `null` is unlimited.
    pub egress_bandwidth_bytes_per_second: Option<u64>,
}

impl LimitsView {
    /// `plan`'s limits; with billing off every plan may call the model.
    pub fn of(plan: &Plan, billing: bool) -> Self {
        Self {
            model: plan.model || !billing,
            requests_per_minute: plan.requests_per_minute,
            monthly_tokens: plan.monthly_tokens,
            max_concurrent_turns: plan.max_concurrent_turns,
            voice: plan.voice,
            storage_bytes: plan.storage_bytes,
            egress_bytes_per_month: plan.egress_bytes_per_month,
            egress_bandwidth_bytes_per_second: plan.egress_bandwidth_bytes_per_second,
        }
    }
}

/// This month's usage.
#[derive(Debug, Serialize)]
pub struct UsageView {
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Input tokens (cached ones included).
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cost in millionths of a US dollar.
    pub cost_micros: i64,
    /// The plan's monthly token quota; `null` is unlimited.
    pub quota: Option<u64>,
    /// The same as `quota` (the Account page's name for it).
    pub limit_tokens: Option<u64>,
    /// The tier: `free`, `pro`, `enterprise`.
    pub plan: Tier,
    /// The plan's limits.
    pub limits: LimitsView,
    /// Whether the user may use the agent (always true while billing is off).
    pub subscription_active: bool,
    /// Stripe's status of their subscription, if any.
    pub subscription_status: Option<String>,
    /// Whether billing is on.
    pub billing: bool,
    /// Bytes the user stores now (every kind, as the storage quota counts them).
    pub storage_used: u64,
    /// The plan's storage quota in bytes; `null` is unlimited (= `limits.storage_bytes`).
    pub storage_quota: Option<u64>,
    /// What the plan costs a month in US cents; `null` is on request.
    pub price_cents: Option<u64>,
    /// Bytes through the egress proxy this month, both ways (connections that ended).
    pub egress_bytes: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    month: String,
    tier: String,
    subscription_active: bool,
    subscription_status: Option<String>,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
    egress_bytes: i64,
}

async fn get_usage(user: AuthUser, State(state): State<AppState>) -> Result<Json<UsageView>> {
    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let row: Row = crate::db::query_as(
        "select to_char(now() at time zone 'UTC', 'YYYY-MM') as month,
                u.tier, u.subscription_active, u.subscription_status,
                coalesce(sum(g.input_tokens), 0)::bigint as input_tokens,
                coalesce(sum(g.output_tokens), 0)::bigint as output_tokens,
                coalesce(sum(g.cost_micros), 0)::bigint as cost_micros,
                (select coalesce(sum(e.bytes_up + e.bytes_down), 0)::bigint
                 from egress_connections e
                 where e.owner_id = u.id
                   and e.started_at >= date_trunc('month', now(), 'UTC')) as egress_bytes
         from users u
         left join usage g on g.owner_id = u.id
                          and g.created_at >= date_trunc('month', now(), 'UTC')
         where u.id = $1
         group by u.id",
    )
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("user"))?;
    tx.commit().await?;
    let room = quota::room(&state.db, &state.storage, &state.plans, user.id).await?;
    let tier = Tier::parse(&row.tier);
    let plan = state.plans.get(tier);
    let billing = state.config.billing_enabled();
    Ok(Json(UsageView {
        month: row.month,
        input_tokens: row.input_tokens,
        output_tokens: row.output_tokens,
        cost_micros: row.cost_micros,
        quota: plan.monthly_tokens,
        limit_tokens: plan.monthly_tokens,
        plan: tier,
        limits: LimitsView::of(plan, billing),
        subscription_active: row.subscription_active || !billing,
        subscription_status: row.subscription_status,
        billing,
        storage_used: room.used,
        storage_quota: room.quota,
        price_cents: plan.price_cents,
        egress_bytes: row.egress_bytes,
    }))
}
