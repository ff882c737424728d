//! Billing end to end: the router against a fake Stripe (`common::stripe`), a
//! fake Anthropic API (`sandbox::testing`) and webhooks signed with Stripe's real
//! scheme. Checkout → webhook → plan active → the configured quota applies at the
//! gateway; payment failure revokes access mid-session; replays and out-of-order
//! events end in the right state; forged webhooks change nothing.

mod common;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use common::{Reply, TestApp, stripe::FakeStripe};
use router::{
    billing::{client::Stripe, signature},
    workspaces::tokens,
};
use sandbox::testing::FakeApi;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const SECRET_KEY: &str = "sk_test_jarvis";
const WEBHOOK_SECRET: &str = "whsec_test_jarvis";
const PRICE_PRO: &str = "price_pro_monthly";
const PRICE_ENTERPRISE: &str = "price_enterprise_monthly";
/// A small pro quota so a test can reach it.
const PLANS: &str = r#"{"pro": {"monthly_tokens": 1000, "requests_per_minute": 100}}"#;

/// A router with billing on, Stripe at `stripe`, the model at `model`.
async fn billing_app(db: PgPool, stripe: &FakeStripe, model: Option<&FakeApi>) -> TestApp {
    let (stripe_url, model_url) = (stripe.url(), model.map(FakeApi::url));
    TestApp::with_config(db, |c| {
        c.stripe_secret_key = Some(SECRET_KEY.into());
        c.stripe_webhook_secret = Some(WEBHOOK_SECRET.into());
        c.stripe_api_base = stripe_url;
        c.stripe_price_pro = Some(PRICE_PRO.into());
        c.stripe_price_enterprise = Some(PRICE_ENTERPRISE.into());
        c.plans = Some(PLANS.into());
        if let Some(url) = model_url {
            c.model_upstream = url;
            c.anthropic_api_key = Some("sk-ant-test".into());
        }
    })
    .await
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({"id": id, "object": "event", "type": kind, "created": created,
           "livemode": false, "api_version": router::billing::client::API_VERSION,
           "data": {"object": object}})
}

fn subscription(id: &str, customer: &str, status: &str, price: &str) -> Value {
    json!({"id": id, "object": "subscription", "customer": customer, "status": status,
           "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": price},
                     "current_period_end": now() + 30 * 86400}]}})
}

fn invoice(customer: &str, sub: &str) -> Value {
    json!({"id": "in_1", "object": "invoice", "customer": customer,
           "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub}}})
}

/// POSTs `body` to the webhook with `signature` as `Stripe-Signature`.
async fn post_webhook(app: &TestApp, body: &[u8], signature: Option<String>) -> Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/api/stripe/webhook")
        .header("content-type", "application/json");
    if let Some(s) = signature {
        req = req.header("stripe-signature", s);
    }
    app.call(req.body(Body::from(body.to_vec())).expect("request"))
        .await
}

/// Sends `event` signed the way Stripe signs it, now.
async fn deliver(app: &TestApp, event: &Value) -> Reply {
    let body = event.to_string();
    let header = signature::sign(body.as_bytes(), WEBHOOK_SECRET, now());
    post_webhook(app, body.as_bytes(), Some(header)).await
}

async fn deliver_ok(app: &TestApp, event: &Value) -> Value {
    let reply = deliver(app, event).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

/// (tier, subscription_active, subscription_status) of `user`.
async fn state_of(db: &PgPool, user: Uuid) -> (String, bool, Option<String>) {
    sqlx::query_as("select tier, subscription_active, subscription_status from users where id = $1")
        .bind(user)
        .fetch_one(db)
        .await
        .expect("user row")
}

async fn link_customer(db: &PgPool, user: Uuid, customer: &str) {
    sqlx::query("update users set stripe_customer_id = $2 where id = $1")
        .bind(user)
        .bind(customer)
        .execute(db)
        .await
        .expect("customer linked");
}

/// One model call through the gateway with `token`.
async fn model_call(app: &TestApp, token: &str) -> Reply {
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "stream": false,
                      "messages": [{"role": "user", "content": "hello"}]});
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages")
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", token)
        .body(Body::from(body.to_string()))
        .expect("request");
    app.call_sandbox(req).await
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn billing_off_answers_a_clear_error_and_everyone_is_active(db: PgPool) {
    let app = TestApp::new(db).await;
    let user = app.register("a@example.com").await;
    for path in ["/api/billing/checkout", "/api/billing/portal"] {
        let reply = app
            .send(Method::POST, path, Some(&user.access), Some(json!({})))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(reply.code(), "billing_off", "{path}");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("billing off"),
            "{}",
            reply.body
        );
    }
    let webhook = deliver(&app, &event("evt_1", "invoice.paid", now(), json!({}))).await;
    assert_eq!(webhook.code(), "billing_off");
    let usage = app.get("/api/usage", &user.access).await;
    assert_eq!(usage.status, StatusCode::OK);
    assert_eq!(usage.body["billing"], false);
    assert_eq!(usage.body["subscription_active"], true);
    assert_eq!(usage.body["plan"], "free");
    assert_eq!(usage.body["quota"], 1_000_000);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn usage_counts_this_months_egress_bytes_against_the_plans_limit(db: PgPool) {
    let app = TestApp::with_config(db.clone(), |c| {
        c.plans = Some(
            r#"{"free": {"egress_bytes_per_month": 5000, "egress_bandwidth_bytes_per_second": 4096}}"#
                .into(),
        );
    })
    .await;
    let user = app.register("alice@example.com").await;
    let other = app.register("bob@example.com").await;
    for (owner, up, down, started) in [
        (user.id, 100_i64, 2000_i64, "now()"),
        (user.id, 10, 0, "now()"),
        // Last month's bytes and another user's do not count.
        (
            user.id,
            999,
            999,
            "date_trunc('month', now(), 'UTC') - interval '1 day'",
        ),
        (other.id, 777, 777, "now()"),
    ] {
        sqlx::query(&format!(
            "insert into egress_connections
                 (owner_id, host, port, decision, reason, bytes_up, bytes_down, started_at, ended_at)
             values ($1, 'pypi.org', 443, 'allowed', 'plan', $2, $3, {started}, {started})"
        ))
        .bind(owner)
        .bind(up)
        .bind(down)
        .execute(&db)
        .await
        .expect("audit row");
    }
    let usage = app.get("/api/usage", &user.access).await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.body);
    assert_eq!(usage.body["egress_bytes"], 2110);
    assert_eq!(usage.body["limits"]["egress_bytes_per_month"], 5000);
    assert_eq!(
        usage.body["limits"]["egress_bandwidth_bytes_per_second"],
        4096
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_plans_and_their_prices_are_public_and_say_what_can_be_bought(db: PgPool) {
    // Billing off, a price changed in the plans table: shown, but nothing is for sale.
    let app = TestApp::with_config(db.clone(), |c| {
        c.plans = Some(r#"{"pro": {"price_cents": 1234, "storage_bytes": 7}}"#.into());
    })
    .await;
    let plans = app.send(Method::GET, "/api/plans", None, None).await;
    assert_eq!(
        plans.status,
        StatusCode::OK,
        "no account needed: {}",
        plans.body
    );
    assert_eq!(plans.body["billing"], false);
    assert_eq!(plans.body["currency"], "usd");
    let tiers: Vec<&str> = plans.body["plans"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["tier"].as_str())
        .collect();
    assert_eq!(tiers, ["free", "pro", "enterprise"]);
    let pro = &plans.body["plans"][1];
    assert_eq!(pro["price_cents"], 1234);
    assert_eq!(pro["purchasable"], false);
    assert_eq!(pro["limits"]["storage_bytes"], 7);
    assert_eq!(pro["limits"]["monthly_tokens"], 20_000_000);
    assert_eq!(plans.body["plans"][0]["price_cents"], 0);
    assert_eq!(plans.body["plans"][2]["price_cents"], Value::Null);
    assert_eq!(
        plans.body["plans"][0]["limits"]["model"], true,
        "with billing off every plan calls the model"
    );
    // Billing on: the paid plans with a Stripe price can be bought; free cannot,
    // and (by default) leaves the model to paid plans.
    let stripe = FakeStripe::start(&[PRICE_PRO, PRICE_ENTERPRISE]).await;
    let app = billing_app(db, &stripe, None).await;
    let plans = app.send(Method::GET, "/api/plans", None, None).await;
    assert_eq!(plans.body["billing"], true);
    let purchasable: Vec<bool> = plans.body["plans"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["purchasable"] == true)
        .collect();
    assert_eq!(purchasable, [false, true, true]);
    assert_eq!(plans.body["plans"][0]["limits"]["model"], false);
    assert!(
        !plans.body.to_string().contains(PRICE_PRO),
        "Stripe's price ids stay private"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn checkout_makes_one_customer_and_a_subscription_session_like_stripe_wants(db: PgPool) {
    let stripe = FakeStripe::start(&[PRICE_PRO, PRICE_ENTERPRISE]).await;
    let app = billing_app(db, &stripe, None).await;
    let user = app.register("buyer@example.com").await;
    let checkout = |plan: Option<&str>| {
        let body = plan.map_or(json!({}), |p| json!({"plan": p}));
        app.send(
            Method::POST,
            "/api/billing/checkout",
            Some(&user.access),
            Some(body),
        )
    };

    let first = checkout(None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(
        first.body["url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("https://checkout.stripe.com/")
    );
    let second = checkout(Some("enterprise")).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(stripe.customer_count(), 1, "the customer is reused");

    let customers = stripe.requests_to("/v1/customers");
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].field("email"), Some("buyer@example.com"));
    let id = user.id.to_string();
    assert_eq!(customers[0].field("metadata[user_id]"), Some(id.as_str()));
    let sessions = stripe.requests_to("/v1/checkout/sessions");
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].field("mode"), Some("subscription"));
    assert_eq!(sessions[0].field("line_items[0][price]"), Some(PRICE_PRO));
    assert_eq!(sessions[0].field("line_items[0][quantity]"), Some("1"));
    assert_eq!(sessions[0].field("client_reference_id"), Some(id.as_str()));
    assert_eq!(sessions[0].field("metadata[tier]"), Some("pro"));
    assert_eq!(
        sessions[1].field("line_items[0][price]"),
        Some(PRICE_ENTERPRISE)
    );
    let customer: Option<String> =
        sqlx::query_scalar("select stripe_customer_id from users where id = $1")
            .bind(user.id)
            .fetch_one(&app.db)
            .await
            .expect("row");
    assert_eq!(sessions[0].field("customer"), customer.as_deref());
    assert_ne!(sessions[0].idempotency_key, sessions[1].idempotency_key);
    assert!(
        sessions[0]
            .field("success_url")
            .is_some_and(|u| u.ends_with("/account?checkout=success"))
    );

    let portal = app
        .send(
            Method::POST,
            "/api/billing/portal",
            Some(&user.access),
            None,
        )
        .await;
    assert_eq!(portal.status, StatusCode::OK, "{}", portal.body);
    assert!(
        portal.body["url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("https://billing.stripe.com/")
    );
    assert_eq!(
        stripe.requests_to("/v1/billing_portal/sessions")[0].field("customer"),
        customer.as_deref()
    );

    for (body, why) in [
        (json!({"plan": "free"}), "free cannot be bought"),
        (json!({"plan": "gold"}), "no such plan"),
    ] {
        let refused = app
            .send(
                Method::POST,
                "/api/billing/checkout",
                Some(&user.access),
                Some(body),
            )
            .await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{why}");
    }
    let anonymous = app
        .send(Method::POST, "/api/billing/checkout", None, Some(json!({})))
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn stripe_sends_the_browser_back_only_to_a_trusted_origin(db: PgPool) {
    let stripe = FakeStripe::start(&[PRICE_PRO, PRICE_ENTERPRISE]).await;
    let app = billing_app(db, &stripe, None).await;
    let user = app.register("a@example.com").await;
    for (origin, plan) in [
        ("https://evil.example", "pro"),
        ("http://localhost:8080", "enterprise"),
    ] {
        let request = Request::post("/api/billing/checkout")
            .header("authorization", format!("Bearer {}", user.access))
            .header("content-type", "application/json")
            .header("origin", origin)
            .body(Body::from(json!({"plan": plan}).to_string()))
            .expect("request");
        let reply = app.call(request).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let sessions = stripe.requests_to("/v1/checkout/sessions");
    let returns: Vec<&str> = sessions
        .iter()
        .filter_map(|s| s.field("success_url"))
        .collect();
    assert_eq!(returns.len(), 2, "{returns:?}");
    assert!(!returns[0].contains("evil.example"), "{returns:?}");
    assert!(
        returns[1].starts_with("http://localhost:8080/account"),
        "{returns:?}"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn concurrent_checkouts_of_one_user_make_one_customer(db: PgPool) {
    let stripe = FakeStripe::start(&[PRICE_PRO]).await;
    let app = billing_app(db, &stripe, None).await;
    let user = app.register("a@example.com").await;
    let checkout = || {
        app.send(
            Method::POST,
            "/api/billing/checkout",
            Some(&user.access),
            Some(json!({})),
        )
    };
    let (a, b) = tokio::join!(checkout(), checkout());
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(stripe.customer_count(), 1);
    let linked: Option<String> =
        sqlx::query_scalar("select stripe_customer_id from users where id = $1")
            .bind(user.id)
            .fetch_one(&app.db)
            .await
            .expect("row");
    for session in stripe.requests_to("/v1/checkout/sessions") {
        assert_eq!(session.field("customer"), linked.as_deref());
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_same_idempotency_key_gets_the_same_object(db: PgPool) {
    let _ = db;
    let fake = FakeStripe::start(&[PRICE_PRO]).await;
    let stripe = Stripe::new(&fake.url(), SECRET_KEY).expect("client");
    let user = Uuid::new_v4();
    let a = stripe
        .create_customer(user, "x@example.com")
        .await
        .expect("created");
    let b = stripe
        .create_customer(user, "x@example.com")
        .await
        .expect("created");
    assert_eq!(a, b);
    assert_eq!(fake.customer_count(), 1);
    assert_eq!(fake.requests().len(), 2);
    let other = stripe
        .create_customer(Uuid::new_v4(), "x@example.com")
        .await
        .expect("created");
    assert_ne!(a, other);

    let wrong_key = Stripe::new(&fake.url(), "sk_live_nope").expect("client");
    let refused = wrong_key
        .create_customer(Uuid::new_v4(), "y@example.com")
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("401"), "{refused}");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn checkout_then_webhook_activates_the_plan_and_its_quota_applies(db: PgPool) {
    let stripe = FakeStripe::start(&[PRICE_PRO, PRICE_ENTERPRISE]).await;
    let model = FakeApi::start().await.expect("fake model");
    let app = billing_app(db, &stripe, Some(&model)).await;
    let user = app.register("a@example.com").await;
    app.verify_email(user.id).await;
    let token = tokens::issue(&app.db, user.id).await.expect("token");

    // On the free plan before paying: the default plans table leaves the model
    // to paid plans while billing is on (finding 4: it used to answer).
    let before = model_call(&app, &token).await;
    assert_eq!(before.status, StatusCode::FORBIDDEN, "{}", before.body);
    assert_eq!(
        before.body["error"]["message"],
        "your free plan does not include the model: upgrade under Account → Upgrade plan"
    );
    let usage = app.get("/api/usage", &user.access).await;
    assert_eq!(usage.body["limits"]["model"], false);

    let checkout = app
        .send(
            Method::POST,
            "/api/billing/checkout",
            Some(&user.access),
            Some(json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(checkout.status, StatusCode::OK, "{}", checkout.body);
    let session = &stripe.requests_to("/v1/checkout/sessions")[0];
    let customer = session.field("customer").expect("customer").to_string();
    let completed = json!({
        "id": "cs_test_1", "object": "checkout.session", "mode": "subscription",
        "customer": customer, "subscription": "sub_1", "status": "complete",
        "payment_status": "paid", "client_reference_id": user.id,
        "metadata": {"user_id": user.id, "tier": "pro"},
    });
    deliver_ok(
        &app,
        &event("evt_c", "checkout.session.completed", now(), completed),
    )
    .await;
    assert_eq!(
        state_of(&app.db, user.id).await,
        ("pro".into(), true, Some("active".into()))
    );
    let me = app.get("/api/me", &user.access).await;
    assert_eq!(
        (
            me.body["tier"].clone(),
            me.body["subscription_active"].clone()
        ),
        (json!("pro"), json!(true))
    );

    let after = model_call(&app, &token).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    // The configured pro quota (1,000 tokens) applies, not the default.
    sqlx::query(
        "insert into usage (owner_id, model, input_tokens, output_tokens) values ($1, 'm', 990, 10)",
    )
    .bind(user.id)
    .execute(&app.db)
    .await
    .expect("usage");
    let usage = app.get("/api/usage", &user.access).await;
    assert_eq!(usage.body["plan"], "pro");
    assert_eq!(usage.body["limits"]["model"], true);
    assert_eq!(usage.body["quota"], 1000);
    assert_eq!(usage.body["limits"]["requests_per_minute"], 100);
    // Usage recorded elsewhere (another router's calls) counts within the time
    // a router remembers an account.
    let over = common::refused_soon(|| model_call(&app, &token)).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.body);
    assert!(
        over.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Your pro plan's monthly token quota (1,000) is used up"),
        "{}",
        over.body
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn payment_failure_revokes_access_mid_session_and_documents_stay_readable(db: PgPool) {
    let stripe = FakeStripe::start(&[PRICE_PRO]).await;
    let model = FakeApi::start().await.expect("fake model");
    let app = billing_app(db, &stripe, Some(&model)).await;
    let user = app.register("a@example.com").await;
    app.verify_email(user.id).await;
    let token = tokens::issue(&app.db, user.id).await.expect("token");
    link_customer(&app.db, user.id, "cus_a").await;
    let doc = app.insert_document(user.id, "notes.md", "# mine").await;
    let t = now() - 600;

    deliver_ok(
        &app,
        &event(
            "evt_1",
            "customer.subscription.created",
            t,
            subscription("sub_a", "cus_a", "active", PRICE_PRO),
        ),
    )
    .await;
    deliver_ok(
        &app,
        &event("evt_2", "invoice.paid", t + 1, invoice("cus_a", "sub_a")),
    )
    .await;
    assert_eq!(model_call(&app, &token).await.status, StatusCode::OK);

    deliver_ok(
        &app,
        &event(
            "evt_3",
            "invoice.payment_failed",
            t + 100,
            invoice("cus_a", "sub_a"),
        ),
    )
    .await;
    let refused = model_call(&app, &token).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.body["error"]["type"], "permission_error");
    assert_eq!(
        refused.body["error"]["message"],
        "your subscription is not active (payment past due): update your payment method under Account → Manage billing"
    );
    assert_eq!(refused.headers["x-should-retry"], "false");
    let read = app
        .get(&format!("/api/documents/{doc}"), &user.access)
        .await;
    assert_eq!(read.status, StatusCode::OK, "documents stay readable");

    for (id, status) in [("evt_4", "unpaid"), ("evt_5", "canceled")] {
        deliver_ok(
            &app,
            &event(
                id,
                "customer.subscription.updated",
                t + 200,
                subscription("sub_a", "cus_a", status, PRICE_PRO),
            ),
        )
        .await;
        assert_eq!(
            model_call(&app, &token).await.status,
            StatusCode::FORBIDDEN,
            "{status}"
        );
    }
    // Paying again (a newer event) restores access.
    deliver_ok(
        &app,
        &event(
            "evt_6",
            "customer.subscription.updated",
            t + 300,
            subscription("sub_a", "cus_a", "active", PRICE_PRO),
        ),
    )
    .await;
    assert_eq!(model_call(&app, &token).await.status, StatusCode::OK);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn replayed_and_out_of_order_events_end_in_the_right_state(db: PgPool) {
    let stripe = FakeStripe::start(&[PRICE_PRO]).await;
    let app = billing_app(db, &stripe, None).await;
    let user = app.register("a@example.com").await;
    link_customer(&app.db, user.id, "cus_a").await;
    let t = now() - 1000;
    let created = event(
        "evt_created",
        "customer.subscription.created",
        t,
        subscription("sub_a", "cus_a", "active", PRICE_PRO),
    );
    let past_due = event(
        "evt_past_due",
        "customer.subscription.updated",
        t + 20,
        subscription("sub_a", "cus_a", "past_due", PRICE_PRO),
    );
    let paid_late = event(
        "evt_paid_old",
        "invoice.paid",
        t + 10,
        invoice("cus_a", "sub_a"),
    );
    let deleted = event(
        "evt_deleted",
        "customer.subscription.deleted",
        t + 40,
        subscription("sub_a", "cus_a", "canceled", PRICE_PRO),
    );
    let stale_active = event(
        "evt_active_old",
        "customer.subscription.updated",
        t + 30,
        subscription("sub_a", "cus_a", "active", PRICE_PRO),
    );

    // Newest first: the later state stands, the older ones are recorded only.
    deliver_ok(&app, &past_due).await;
    deliver_ok(&app, &created).await;
    deliver_ok(&app, &paid_late).await;
    assert_eq!(
        state_of(&app.db, user.id).await,
        ("pro".into(), false, Some("past_due".into())),
        "the tier comes from the price, the state from the newest event"
    );
    let replay = deliver_ok(&app, &past_due).await;
    assert_eq!(replay["duplicate"], true);

    deliver_ok(&app, &deleted).await;
    deliver_ok(&app, &stale_active).await;
    for e in [&created, &past_due, &paid_late, &deleted, &stale_active] {
        assert_eq!(deliver_ok(&app, e).await["duplicate"], true);
    }
    assert_eq!(
        state_of(&app.db, user.id).await,
        ("free".into(), false, Some("canceled".into()))
    );
    let recorded: i64 = sqlx::query_scalar("select count(*) from stripe_events")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(recorded, 5);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_incomplete_state_never_overrides_another_of_the_same_second(db: PgPool) {
    let stripe = FakeStripe::start(&[PRICE_PRO]).await;
    let app = billing_app(db, &stripe, None).await;
    let user = app.register("a@example.com").await;
    link_customer(&app.db, user.id, "cus_a").await;
    let t = now() - 1000;
    // Same second: `incomplete` (the first state) never overrides a later one.
    deliver_ok(
        &app,
        &event(
            "evt_1",
            "customer.subscription.updated",
            t,
            subscription("sub_a", "cus_a", "active", PRICE_PRO),
        ),
    )
    .await;
    deliver_ok(
        &app,
        &event(
            "evt_0",
            "customer.subscription.created",
            t,
            subscription("sub_a", "cus_a", "incomplete", PRICE_PRO),
        ),
    )
    .await;
    assert_eq!(
        state_of(&app.db, user.id).await,
        ("pro".into(), true, Some("active".into()))
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn forged_stale_and_malformed_webhooks_are_refused_and_change_nothing(db: PgPool) {
    let stripe = FakeStripe::start(&[PRICE_PRO]).await;
    let app = billing_app(db, &stripe, None).await;
    let user = app.register("a@example.com").await;
    link_customer(&app.db, user.id, "cus_a").await;
    let body = event(
        "evt_1",
        "customer.subscription.updated",
        now(),
        subscription("sub_a", "cus_a", "active", PRICE_PRO),
    )
    .to_string();
    let bytes = body.as_bytes();
    let good = signature::sign(bytes, WEBHOOK_SECRET, now());
    let tampered = body.replace("cus_a", "cus_b");
    let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("no signature", bytes.to_vec(), None),
        ("tampered body", tampered.into_bytes(), Some(good.clone())),
        (
            "wrong secret",
            bytes.to_vec(),
            Some(signature::sign(bytes, "whsec_attacker", now())),
        ),
        (
            "stale timestamp",
            bytes.to_vec(),
            Some(signature::sign(bytes, WEBHOOK_SECRET, now() - 301)),
        ),
        (
            "future timestamp",
            bytes.to_vec(),
            Some(signature::sign(bytes, WEBHOOK_SECRET, now() + 301)),
        ),
        ("garbage header", bytes.to_vec(), Some("t=abc,v1=zz".into())),
        (
            "malformed body",
            b"{not json".to_vec(),
            Some(signature::sign(b"{not json", WEBHOOK_SECRET, now())),
        ),
        (
            "not an event",
            br#"{"id":"evt_x"}"#.to_vec(),
            Some(signature::sign(br#"{"id":"evt_x"}"#, WEBHOOK_SECRET, now())),
        ),
    ];
    for (why, payload, header) in cases {
        let reply = post_webhook(&app, &payload, header).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{why}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "bad_request", "{why}");
    }
    assert_eq!(
        state_of(&app.db, user.id).await,
        ("free".into(), false, None)
    );
    let recorded: i64 = sqlx::query_scalar("select count(*) from stripe_events")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(recorded, 0);
    // The genuine one still works afterwards.
    assert_eq!(
        post_webhook(&app, bytes, Some(good)).await.status,
        StatusCode::OK
    );
    assert!(state_of(&app.db, user.id).await.1);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn unknown_event_types_are_acknowledged_and_ignored(db: PgPool) {
    let stripe = FakeStripe::start(&[PRICE_PRO]).await;
    let app = billing_app(db, &stripe, None).await;
    let user = app.register("a@example.com").await;
    link_customer(&app.db, user.id, "cus_a").await;
    let reply = deliver_ok(
        &app,
        &event(
            "evt_u",
            "customer.tax_id.created",
            now(),
            json!({"customer": "cus_a", "status": "active"}),
        ),
    )
    .await;
    assert_eq!(reply["received"], true);
    assert_eq!(
        state_of(&app.db, user.id).await,
        ("free".into(), false, None)
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn events_never_touch_another_users_row(db: PgPool) {
    let stripe = FakeStripe::start(&[PRICE_PRO]).await;
    let app = billing_app(db, &stripe, None).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    link_customer(&app.db, alice.id, "cus_alice").await;
    link_customer(&app.db, bob.id, "cus_bob").await;
    let t = now() - 100;

    deliver_ok(
        &app,
        &event(
            "evt_1",
            "customer.subscription.created",
            t,
            subscription("sub_alice", "cus_alice", "active", PRICE_PRO),
        ),
    )
    .await;
    // A checkout naming bob but carrying alice's customer is not applied to bob.
    let crossed = json!({"id": "cs_x", "object": "checkout.session", "customer": "cus_alice",
        "subscription": "sub_alice", "payment_status": "paid", "client_reference_id": bob.id,
        "metadata": {"tier": "pro"}});
    deliver_ok(
        &app,
        &event("evt_2", "checkout.session.completed", t + 1, crossed),
    )
    .await;
    // An event for a customer nobody has changes nobody.
    deliver_ok(
        &app,
        &event(
            "evt_3",
            "invoice.payment_failed",
            t + 2,
            invoice("cus_stranger", "sub_x"),
        ),
    )
    .await;
    assert_eq!(
        state_of(&app.db, alice.id).await,
        ("pro".into(), true, Some("active".into()))
    );
    assert_eq!(
        state_of(&app.db, bob.id).await,
        ("free".into(), false, None)
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn usage_is_the_callers_own_this_month(db: PgPool) {
    let stripe = FakeStripe::start(&[PRICE_PRO]).await;
    let app = billing_app(db, &stripe, None).await;
    let alice = app.register("alice@example.com").await;
    let bob = app.register("bob@example.com").await;
    sqlx::query(
        "insert into usage (owner_id, model, input_tokens, output_tokens, cost_micros, created_at) values
         ($1, 'm', 100, 10, 500, now()), ($1, 'm', 20, 2, 70, now()),
         ($1, 'm', 9999, 9999, 9999, now() - interval '40 days'),
         ($2, 'm', 7777, 7777, 7777, now())",
    )
    .bind(alice.id)
    .bind(bob.id)
    .execute(&app.db)
    .await
    .expect("usage");
    let reply = app.get("/api/usage", &alice.access).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let month = time::OffsetDateTime::now_utc();
    assert_eq!(
        reply.body["month"],
        format!("{}-{:02}", month.year(), u8::from(month.month()))
    );
    assert_eq!(reply.body["input_tokens"], 120);
    assert_eq!(reply.body["output_tokens"], 12);
    assert_eq!(reply.body["cost_micros"], 570);
    assert_eq!(reply.body["plan"], "free");
    assert_eq!(reply.body["quota"], 1_000_000);
    assert_eq!(reply.body["limit_tokens"], 1_000_000);
    assert_eq!(reply.body["subscription_active"], false);
    assert_eq!(reply.body["billing"], true);
    assert_eq!(
        app.send(Method::GET, "/api/usage", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// A router with billing on, the model at `model`, a free plan that includes the
/// model (so only verification is in the way), and mail through `smtp` if given.
async fn open_free_plan_app(
    db: PgPool,
    model: &FakeApi,
    smtp: Option<&common::smtp::FakeSmtp>,
) -> TestApp {
    let (model_url, smtp_url) = (model.url(), smtp.map(common::smtp::FakeSmtp::url));
    TestApp::with_config(db, |c| {
        c.stripe_secret_key = Some(SECRET_KEY.into());
        c.stripe_webhook_secret = Some(WEBHOOK_SECRET.into());
        c.plans = Some(r#"{"free": {"model": true}}"#.into());
        c.model_upstream = model_url;
        c.anthropic_api_key = Some("sk-ant-test".into());
        c.smtp_url = smtp_url;
        c.public_url = Some("https://jarvis.example.com".into());
    })
    .await
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_unverified_account_is_refused_by_the_gateway_until_its_link_is_opened(db: PgPool) {
    let model = FakeApi::start().await.expect("fake model");
    let smtp = common::smtp::FakeSmtp::start().await;
    let app = open_free_plan_app(db, &model, Some(&smtp)).await;
    let user = app.register("new@example.com").await;
    let token = tokens::issue(&app.db, user.id).await.expect("token");
    let refused = model_call(&app, &token).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.body["error"]["type"], "permission_error");
    assert_eq!(
        refused.body["error"]["message"],
        "verify your email address first: open the link we emailed you, or ask for a new one under Account"
    );
    assert_eq!(refused.headers["x-should-retry"], "false");
    assert!(
        model.message_requests().is_empty(),
        "nothing reached the model"
    );

    let body = smtp.wait_for(1).await[0].body();
    let link = body
        .split_whitespace()
        .find(|w| w.starts_with("https://jarvis.example.com/api/auth/verify?token="))
        .expect("a link")
        .trim_start_matches("https://jarvis.example.com")
        .to_string();
    let opened = app.send(Method::GET, &link, None, None).await;
    assert_eq!(opened.status, StatusCode::OK);
    let after = model_call(&app, &token).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn billing_without_smtp_refuses_the_model_naming_the_missing_variable(db: PgPool) {
    let model = FakeApi::start().await.expect("fake model");
    let app = open_free_plan_app(db, &model, None).await;
    let user = app.register("new@example.com").await;
    let token = tokens::issue(&app.db, user.id).await.expect("token");
    let refused = model_call(&app, &token).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("JARVIS_SMTP_URL"),
        "{}",
        refused.body
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn with_billing_off_verification_is_optional(db: PgPool) {
    let model = FakeApi::start().await.expect("fake model");
    let model_url = model.url();
    let app = TestApp::with_config(db, |c| {
        c.model_upstream = model_url;
        c.anthropic_api_key = Some("sk-ant-test".into());
    })
    .await;
    let user = app.register("new@example.com").await;
    let token = tokens::issue(&app.db, user.id).await.expect("token");
    assert_eq!(model_call(&app, &token).await.status, StatusCode::OK);
    let usage = app.get("/api/usage", &user.access).await;
    assert_eq!(usage.body["limits"]["model"], true);
}
