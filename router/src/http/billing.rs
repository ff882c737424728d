//! Billing routes: `POST /api/billing/checkout` and `POST /api/billing/portal`
//! for the signed-in user, and `POST /api/stripe/webhook` for Stripe.
//!
//! Checkout creates the user's Stripe customer on first use (kept in
//! `users.stripe_customer_id`) and a subscription-mode Checkout Session for the
//! chosen plan (`{"plan": "pro"}`, the default, or `"enterprise"`); the portal
//! opens the Customer Portal for that customer. Both answer `{"url"}` for the
//! browser to go to, and `403 billing_off` while billing is off.
//!
//! The webhook takes the raw body, checks `Stripe-Signature` against
//! `STRIPE_WEBHOOK_SECRET` (`billing::signature`) and applies the event
//! (`billing::events`). A forged, stale or malformed request is a 400 and changes
//! nothing; a repeat or an unknown type is a 200 and changes nothing.

use axum::{Json, Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AppState, Error, Result, extractor::AuthUser};
use crate::{
    billing::{
        client::{Checkout, Stripe, StripeError},
        events::{self, Event, Outcome},
        signature,
    },
    db,
    plans::Tier,
};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/billing/checkout", post(create_checkout))
        .route("/api/billing/portal", post(create_portal))
        .route("/api/stripe/webhook", post(receive_webhook))
}

/// Where the browser goes next.
#[derive(Debug, Serialize)]
pub struct Redirect {
    /// A Stripe-hosted page.
    pub url: String,
}

/// The body of a checkout request (may be empty or `{}`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutRequest {
    /// `pro` (the default) or `enterprise`.
    plan: Option<String>,
}

fn billing_off() -> Error {
    Error::Forbidden {
        code: "billing_off",
        message: "billing off: this server does not take payments, and every account is active"
            .into(),
    }
}

fn stripe_of(state: &AppState) -> Result<&Stripe> {
    state.stripe.as_ref().ok_or_else(billing_off)
}

/// A Stripe failure, for the browser: a 503 whose cause is logged here.
fn stripe_failed(error: StripeError) -> Error {
    tracing::error!(%error, "Stripe call failed");
    Error::Unavailable("the payment service is unavailable; please try again shortly".into())
}

/// The Account page the browser comes back to from Stripe: the configured
/// return URL, else the Account page of a configured origin (never of the
/// request's `Host`, which the client chooses).
fn return_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.billing_return_url {
        return url.clone();
    }
    format!(
        "{}/account",
        super::origin::return_base(&state.config, headers)
    )
}

async fn create_checkout(
    user: AuthUser,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Redirect>> {
    let stripe = stripe_of(&state)?;
    let request: CheckoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CheckoutRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::Invalid(e.to_string()))?
    };
    let name = request.plan.as_deref().unwrap_or("pro");
    let tier = Tier::from_name(name)
        .ok_or_else(|| Error::Invalid(format!("no plan is called `{name}`")))?;
    let price = state
        .plans
        .get(tier)
        .stripe_price
        .clone()
        .ok_or_else(|| Error::Invalid(format!("the {tier} plan cannot be bought")))?;

    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let (email, customer, active): (String, Option<String>, bool) = crate::db::query_as(
        "select email, stripe_customer_id, subscription_active and stripe_subscription_id is not null
         from users where id = $1",
    )
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("user"))?;
    tx.commit().await?;
    if active {
        return Err(Error::Conflict(
            "you already have a subscription; change it under Manage billing".into(),
        ));
    }
    let customer = match customer {
        Some(c) => c,
        None => {
            let created = stripe
                .create_customer(user.id, &email)
                .await
                .map_err(stripe_failed)?;
            // Concurrent checkouts got the same customer (same idempotency key);
            // the first to get here links it.
            let mut tx = db::user_tx(&state.db, user.id).await?;
            // language=PostgreSQL
            let (linked,): (Option<String>,) = crate::db::query_as(
                "update users set stripe_customer_id = coalesce(stripe_customer_id, $2)
                 where id = $1 returning stripe_customer_id",
            )
            .bind(user.id)
            .bind(&created)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            linked.unwrap_or(created)
        }
    };
    let back = return_url(&state, &headers);
    let success = format!("{back}?checkout=success");
    let cancel = format!("{back}?checkout=cancel");
    let url = stripe
        .create_checkout_session(&Checkout {
            customer: &customer,
            price: &price,
            user_id: user.id,
            tier: tier.as_str(),
            success_url: &success,
            cancel_url: &cancel,
        })
        .await
        .map_err(stripe_failed)?;
    tracing::info!(user.id = %user.id, %tier, "checkout session created");
    Ok(Json(Redirect { url }))
}

async fn create_portal(
    user: AuthUser,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Redirect>> {
    let stripe = stripe_of(&state)?;
    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let customer: Option<String> =
        crate::db::query_scalar("select stripe_customer_id from users where id = $1")
            .bind(user.id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(Error::NotFound("user"))?;
    tx.commit().await?;
    let customer = customer.ok_or_else(|| {
        Error::Conflict("there is no billing account yet; choose a plan first".into())
    })?;
    let url = stripe
        .create_portal_session(&customer, &return_url(&state, &headers))
        .await
        .map_err(stripe_failed)?;
    Ok(Json(Redirect { url }))
}

async fn receive_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    let secret = state
        .config
        .stripe_webhook_secret
        .as_deref()
        .ok_or_else(billing_off)?;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    signature::verify(header, &body, secret, now).map_err(|e| {
        tracing::warn!(error = %e, "Stripe webhook refused");
        Error::BadRequest(e.to_string())
    })?;
    let event: Event = serde_json::from_slice(&body)
        .map_err(|e| Error::BadRequest(format!("not a Stripe event: {e}")))?;
    let outcome = events::apply(&state.db, &state.plans, &event).await?;
    tracing::info!(event.id = %event.id, event.kind = %event.kind, ?outcome, "Stripe event");
    if let Outcome::Applied(user) = outcome {
        // What this router remembered of the account (`http::standing`) is
        // read again at once; other routers read it within `STANDING_TTL`.
        state.sockets.standing.forget(user);
    }
    Ok(Json(json!({
        "received": true,
        "duplicate": outcome == Outcome::Duplicate,
    })))
}
