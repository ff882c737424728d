//! Applies Stripe webhook events to `users`, each event once.
//!
//! Handled: `checkout.session.completed`, `customer.subscription.created` /
//! `updated` / `deleted`, `invoice.paid`, `invoice.payment_failed`; every other
//! type is recorded and ignored. An event's id goes into `stripe_events` in the
//! same transaction as its effect, so a repeat (Stripe retries, replays) changes
//! nothing, and a failure leaves the event unrecorded for Stripe to retry.
//!
//! Stripe does not deliver in order, so each user keeps the `created` time of the
//! event that last set their subscription state (`subscription_event_at`); an
//! older event is recorded but does not change the state. At the same second a
//! later arrival wins, except `incomplete` (a subscription's first state), which
//! never overrides another state of the same second.
//!
//! `active` and `trialing` give paid access; every other status (`past_due`,
//! `unpaid`, `canceled`, `incomplete`, `paused`, …) ends it at once. The tier
//! comes from the subscription's price (`plans`); a deleted subscription drops to
//! `free`. Users are found by their Stripe customer id only (checkout by the user
//! id it was created for, and only if the customer matches), so an event never
//! reaches another user's row. Both the pinned API version's shapes and older
//! ones are read (`current_period_end` on the item or the subscription; an
//! invoice's subscription under `parent.subscription_details` or at the top).

use serde::Deserialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::plans::{Plans, Tier};

/// An event as Stripe sends it (only what billing reads).
#[derive(Debug, Deserialize)]
pub struct Event {
    /// `evt_…`, unique per event.
    pub id: String,
    /// `customer.subscription.updated`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// When Stripe created the event (unix seconds).
    pub created: i64,
    /// The object the event is about.
    pub data: EventData,
}

/// An event's `data`.
#[derive(Debug, Deserialize)]
pub struct EventData {
    /// The object (a subscription, an invoice, a checkout session).
    pub object: Value,
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was seen before; nothing changed.
    Duplicate,
    /// It changed this user's subscription state.
    Applied(Uuid),
    /// It was recorded, but changed nothing (an unknown type, an older state,
    /// or no user it belongs to).
    Ignored,
}

/// The subscription state an event sets.
#[derive(Debug, Default)]
struct Change {
    status: String,
    tier: Option<Tier>,
    subscription: Option<String>,
    period_end: Option<i64>,
}

/// Records `event` and applies it, in one transaction.
pub async fn apply(db: &PgPool, plans: &Plans, event: &Event) -> sqlx::Result<Outcome> {
    let mut tx = db.begin().await?;
    // language=PostgreSQL
    let fresh = crate::db::query(
        "insert into stripe_events (id, type) values ($1, $2) on conflict do nothing",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(Outcome::Duplicate);
    }
    let object = &event.data.object;
    let at =
        OffsetDateTime::from_unix_timestamp(event.created).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let changed = match event.kind.as_str() {
        "checkout.session.completed" => checkout_completed(&mut tx, plans, object, at).await?,
        "customer.subscription.created" | "customer.subscription.updated" => {
            let change = subscription_change(plans, object, false);
            by_customer(&mut tx, object, change, at).await?
        }
        "customer.subscription.deleted" => {
            let change = subscription_change(plans, object, true);
            by_customer(&mut tx, object, change, at).await?
        }
        "invoice.paid" => {
            let change = Change {
                status: "active".into(),
                subscription: invoice_subscription(object),
                ..Change::default()
            };
            by_customer(&mut tx, object, change, at).await?
        }
        "invoice.payment_failed" => {
            let change = Change {
                status: "past_due".into(),
                subscription: invoice_subscription(object),
                ..Change::default()
            };
            by_customer(&mut tx, object, change, at).await?
        }
        _ => None,
    };
    tx.commit().await?;
    Ok(changed.map_or(Outcome::Ignored, Outcome::Applied))
}

/// Whether a subscription status gives paid access.
pub fn is_paid(status: &str) -> bool {
    matches!(status, "active" | "trialing")
}

fn subscription_change(plans: &Plans, sub: &Value, deleted: bool) -> Change {
    let item = &sub["items"]["data"][0];
    let price = item["price"]["id"]
        .as_str()
        .or_else(|| item["plan"]["id"].as_str());
    Change {
        status: if deleted {
            "canceled".into()
        } else {
            sub["status"].as_str().unwrap_or("incomplete").to_string()
        },
        tier: if deleted {
            Some(Tier::Free)
        } else {
            price.and_then(|p| plans.tier_of_price(p))
        },
        subscription: sub["id"].as_str().map(str::to_string),
        period_end: item["current_period_end"]
            .as_i64()
            .or_else(|| sub["current_period_end"].as_i64()),
    }
}

fn invoice_subscription(invoice: &Value) -> Option<String> {
    invoice["parent"]["subscription_details"]["subscription"]
        .as_str()
        .or_else(|| invoice["subscription"].as_str())
        .map(str::to_string)
}

/// Applies `change` to the user whose Stripe customer the object names, when the
/// event is not older than their state and is about their subscription (or they
/// have none in force).
async fn by_customer(
    tx: &mut Transaction<'static, Postgres>,
    object: &Value,
    change: Change,
    at: OffsetDateTime,
) -> sqlx::Result<Option<Uuid>> {
    let Some(customer) = object["customer"].as_str() else {
        return Ok(None);
    };
    // language=PostgreSQL
    crate::db::query_scalar(
        "update users set
             subscription_status = $2,
             subscription_active = $3,
             tier = coalesce($4, tier),
             stripe_subscription_id = coalesce($5, stripe_subscription_id),
             current_period_end = coalesce(to_timestamp($6), current_period_end),
             subscription_event_at = $7
         where stripe_customer_id = $1
           and (subscription_event_at is null or subscription_event_at < $7
                or (subscription_event_at = $7 and $2 <> 'incomplete'))
           and ($5::text is null or stripe_subscription_id is null
                or stripe_subscription_id = $5 or not subscription_active)
         returning id",
    )
    .bind(customer)
    .bind(&change.status)
    .bind(is_paid(&change.status))
    .bind(change.tier.map(Tier::as_str))
    .bind(change.subscription.as_deref())
    .bind(change.period_end.map(|t| t as f64))
    .bind(at)
    .fetch_optional(&mut **tx)
    .await
}

/// A paid Checkout Session: links the customer and subscription to the user it
/// was created for and gives them the plan it was for.
async fn checkout_completed(
    tx: &mut Transaction<'static, Postgres>,
    plans: &Plans,
    session: &Value,
    at: OffsetDateTime,
) -> sqlx::Result<Option<Uuid>> {
    let paid = matches!(
        session["payment_status"].as_str(),
        Some("paid" | "no_payment_required")
    );
    let user: Option<Uuid> = session["client_reference_id"]
        .as_str()
        .and_then(|s| s.parse().ok());
    let tier = session["metadata"]["tier"]
        .as_str()
        .and_then(Tier::from_name)
        .filter(|t| plans.get(*t).stripe_price.is_some());
    let (Some(user), Some(customer), true) = (user, session["customer"].as_str(), paid) else {
        return Ok(None);
    };
    // language=PostgreSQL
    crate::db::query_scalar(
        "update users set
             stripe_customer_id = $2,
             stripe_subscription_id = coalesce($3, stripe_subscription_id),
             tier = coalesce($4, tier),
             subscription_status = 'active',
             subscription_active = true,
             subscription_event_at = $5
         where id = $1
           and (stripe_customer_id is null or stripe_customer_id = $2)
           and (subscription_event_at is null or subscription_event_at <= $5)
         returning id",
    )
    .bind(user)
    .bind(customer)
    .bind(session["subscription"].as_str())
    .bind(tier.map(Tier::as_str))
    .bind(at)
    .fetch_optional(&mut **tx)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subscriptions_map_their_price_to_a_tier_in_either_api_shape() {
        let plans = Plans::load(None, Some("price_pro"), None).expect("plans");
        let basil = json!({"id": "sub_1", "status": "past_due", "customer": "cus_1",
            "items": {"data": [{"price": {"id": "price_pro"}, "current_period_end": 1_900_000_000}]}});
        let c = subscription_change(&plans, &basil, false);
        assert_eq!(
            (c.status.as_str(), c.tier, c.period_end),
            ("past_due", Some(Tier::Pro), Some(1_900_000_000))
        );
        let older = json!({"id": "sub_1", "status": "active", "current_period_end": 7,
            "items": {"data": [{"plan": {"id": "price_unknown"}}]}});
        let c = subscription_change(&plans, &older, false);
        assert_eq!((c.tier, c.period_end), (None, Some(7)));
        let gone = subscription_change(&plans, &older, true);
        assert_eq!(
            (gone.status.as_str(), gone.tier),
            ("canceled", Some(Tier::Free))
        );
    }

    #[test]
    fn only_active_and_trialing_are_paid() {
        for s in ["active", "trialing"] {
            assert!(is_paid(s));
        }
        for s in ["past_due", "unpaid", "canceled", "incomplete", "paused"] {
            assert!(!is_paid(s));
        }
    }

    #[test]
    fn invoices_name_their_subscription_in_either_api_shape() {
        let basil = json!({"parent": {"subscription_details": {"subscription": "sub_a"}}});
        assert_eq!(invoice_subscription(&basil).as_deref(), Some("sub_a"));
        let older = json!({"subscription": "sub_b"});
        assert_eq!(invoice_subscription(&older).as_deref(), Some("sub_b"));
    }
}
