//! A fake Stripe API on 127.0.0.1:0 that checks requests the way Stripe does:
//! `Authorization: Bearer sk_test_…`, the pinned `Stripe-Version`, a
//! form-encoded body with the fields each call needs, and `Idempotency-Key`
//! (the same key answers the same object; the same key with other parameters is
//! an error). It answers realistic customer, checkout.session and
//! billing_portal.session objects, and Stripe-shaped errors.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

/// One request the fake answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `/v1/customers`, …
    pub path: String,
    /// The decoded form fields, in order.
    pub form: Vec<(String, String)>,
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

impl Recorded {
    /// The value of form field `key`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// Idempotency key → (path + form, the object answered).
    idempotent: HashMap<String, (String, Value)>,
    customers: HashMap<String, Value>,
    next: u64,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeStripe {
    url: String,
    inner: Arc<Mutex<Inner>>,
    /// Prices it knows (`line_items[0][price]` must be one).
    prices: Arc<Vec<String>>,
}

impl FakeStripe {
    /// Starts the fake, knowing `prices`.
    pub async fn start(prices: &[&str]) -> Self {
        let fake = Self {
            url: String::new(),
            inner: Arc::default(),
            prices: Arc::new(prices.iter().map(|p| p.to_string()).collect()),
        };
        let app = Router::new()
            .route("/v1/{*path}", post(handle))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake Stripe binds");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, ..fake }
    }

    /// Its base URL, for `STRIPE_API_BASE`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().expect("lock").requests.clone()
    }

    /// The requests to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// How many customers exist.
    pub fn customer_count(&self) -> usize {
        self.inner.lock().expect("lock").customers.len()
    }
}

fn stripe_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"type": kind, "message": message}})),
    )
        .into_response()
}

async fn handle(
    State(fake): State<FakeStripe>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/{path}");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !header("authorization").is_some_and(|a| a.starts_with("Bearer sk_test_")) {
        return stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Invalid API Key provided",
        );
    }
    if header("stripe-version") != Some(router::billing::client::API_VERSION) {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "unexpected Stripe-Version",
        );
    }
    if !header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "body must be form-encoded",
        );
    }
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "malformed form body",
        );
    };
    let key = header("idempotency-key").map(str::to_string);
    let recorded = Recorded {
        path: path.clone(),
        form: form.clone(),
        idempotency_key: key.clone(),
    };
    let mut inner = fake.inner.lock().expect("lock");
    inner.requests.push(recorded.clone());
    let fingerprint = format!("{path}?{}", String::from_utf8_lossy(&body));
    if let Some(key) = &key
        && let Some((seen, object)) = inner.idempotent.get(key)
    {
        if *seen != fingerprint {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            );
        }
        return Json(object.clone()).into_response();
    }
    let field = |k: &str| recorded.field(k).map(str::to_string);
    let missing = |k: &str| {
        stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("Missing required param: {k}."),
        )
    };
    inner.next += 1;
    let n = inner.next;
    let object = match path.as_str() {
        "/v1/customers" => {
            let Some(email) = field("email") else {
                return missing("email");
            };
            let id = format!("cus_test{n:06}");
            let customer = json!({
                "id": id, "object": "customer", "email": email, "livemode": false,
                "created": 1_800_000_000, "metadata": {"user_id": field("metadata[user_id]")},
            });
            inner.customers.insert(id, customer.clone());
            customer
        }
        "/v1/checkout/sessions" => {
            for k in [
                "mode",
                "customer",
                "line_items[0][price]",
                "line_items[0][quantity]",
                "success_url",
                "cancel_url",
            ] {
                if field(k).is_none() {
                    return missing(k);
                }
            }
            if field("mode").as_deref() != Some("subscription") {
                return stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", "mode");
            }
            let customer = field("customer").unwrap_or_default();
            if !inner.customers.contains_key(&customer) {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("No such customer: '{customer}'"),
                );
            }
            let price = field("line_items[0][price]").unwrap_or_default();
            if !fake.prices.contains(&price) {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("No such price: '{price}'"),
                );
            }
            let id = format!("cs_test_{n:06}");
            json!({
                "id": id, "object": "checkout.session", "mode": "subscription",
                "customer": customer, "client_reference_id": field("client_reference_id"),
                "status": "open", "payment_status": "unpaid",
                "success_url": field("success_url"), "cancel_url": field("cancel_url"),
                "metadata": {"user_id": field("metadata[user_id]"), "tier": field("metadata[tier]")},
                "url": format!("https://checkout.stripe.com/c/pay/{id}"),
            })
        }
        "/v1/billing_portal/sessions" => {
            let Some(customer) = field("customer") else {
                return missing("customer");
            };
            if !inner.customers.contains_key(&customer) {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("No such customer: '{customer}'"),
                );
            }
            json!({
                "id": format!("bps_{n:06}"), "object": "billing_portal.session",
                "customer": customer, "return_url": field("return_url"),
                "url": format!("https://billing.stripe.com/p/session/test_{n:06}"),
            })
        }
        _ => {
            return stripe_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "Unrecognized request URL",
            );
        }
    };
    if let Some(key) = key {
        inner.idempotent.insert(key, (fingerprint, object.clone()));
    }
    Json(object).into_response()
}
