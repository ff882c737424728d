//! `GET /api/plans`: the plans anyone may sign up for, with their prices and
//! limits (the plans table, `crate::plans`), for the landing page and sign-up.
//! Public: no account needed, nothing about any user.
//!
//! ```json
//! {"billing": false, "currency": "usd",
//!  "plans": [{"tier": "free", "price_cents": 0, "purchasable": false,
//!             "limits": {"model": true, "requests_per_minute": 20, "monthly_tokens": 1000000,
//!                        "max_concurrent_turns": 1, "voice": true, "storage_bytes": 1073741824}},
//!            …]}
//! ```
//!
//! Cheapest first. `price_cents` is `null` for a plan priced on request;
//! `purchasable` says whether `POST /api/billing/checkout` can sell it here (billing on
//! and a Stripe price configured); with `billing` false no plan is.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;

use super::{AppState, usage::LimitsView};
use crate::plans::Tier;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/plans", get(list_plans))
}

/// One plan as the landing page shows it.
#[derive(Debug, Serialize)]
pub struct PlanView {
    /// `free`, `pro`, `enterprise`.
    pub tier: Tier,
    /// US cents a month; `null` is on request.
    pub price_cents: Option<u64>,
    /// Whether checkout can sell it on this server now.
    pub purchasable: bool,
    /// What it includes.
    pub limits: LimitsView,
}

/// Every plan, and whether this server takes payments.
#[derive(Debug, Serialize)]
pub struct PlansView {
    /// Whether billing is on (a Stripe key is configured).
    pub billing: bool,
    /// The currency of the prices (ISO 4217, lowercase as Stripe writes it).
    pub currency: &'static str,
    /// Cheapest first.
    pub plans: Vec<PlanView>,
}

async fn list_plans(State(state): State<AppState>) -> Json<PlansView> {
    let billing = state.config.billing_enabled();
    let sells = billing && state.stripe.is_some();
    let plans = Tier::ALL
        .into_iter()
        .map(|tier| {
            let plan = state.plans.get(tier);
            PlanView {
                tier,
                price_cents: plan.price_cents,
                purchasable: sells && tier != Tier::Free && plan.stripe_price.is_some(),
                limits: LimitsView::of(plan, billing),
            }
        })
        .collect();
    Json(PlansView {
        billing,
        currency: "usd",
        plans,
    })
}
