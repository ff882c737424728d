//! A small Stripe API client over reqwest: the three calls billing makes
//! (create a customer, a Checkout Session, a Customer Portal session).
//!
//! Requests are form-encoded the way Stripe expects (nested fields as
//! `line_items[0][price]`), authenticated with the secret key as a bearer token,
//! pinned to [`API_VERSION`] with `Stripe-Version`, and carry an
//! `Idempotency-Key`: a retry (one, on a connection error or a 5xx) reuses it, so
//! Stripe creates the object once. Creating a user's customer uses a key derived
//! from the user id, so concurrent checkouts of one user make one customer.
//! `STRIPE_API_BASE` points the client elsewhere (tests run a fake Stripe).

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

/// The Stripe API version every request is pinned to.
pub const API_VERSION: &str = "2025-03-31.basil";

/// A failed Stripe call.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe could not be reached.
    #[error("cannot reach Stripe: {0}")]
    Http(#[from] reqwest::Error),
    /// Stripe answered an error.
    #[error("Stripe answered {status}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// Stripe's `error.message`.
        message: String,
    },
    /// The answer lacked a field.
    #[error("Stripe's answer has no `{0}`")]
    Shape(&'static str),
}

/// The Stripe API, as billing uses it.
#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// What a Checkout Session is for.
#[derive(Debug)]
pub struct Checkout<'a> {
    /// The user's Stripe customer.
    pub customer: &'a str,
    /// The plan's Stripe price.
    pub price: &'a str,
    /// The user (becomes `client_reference_id` and metadata).
    pub user_id: Uuid,
    /// The plan's tier name (metadata).
    pub tier: &'a str,
    /// Where Stripe sends the browser after paying.
    pub success_url: &'a str,
    /// Where Stripe sends the browser on cancel.
    pub cancel_url: &'a str,
}

impl Stripe {
    /// A client for the API at `base` with the secret `key`.
    pub fn new(base: &str, key: &str) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
        })
    }

    /// Creates the Stripe customer of `user_id` (once: the idempotency key is the user's).
    pub async fn create_customer(&self, user_id: Uuid, email: &str) -> Result<String, StripeError> {
        let user = user_id.to_string();
        let form = [("email", email), ("metadata[user_id]", user.as_str())];
        let customer = self
            .post(
                "/v1/customers",
                &form,
                &format!("jarvis-customer-{user_id}"),
            )
            .await?;
        id_of(&customer)
    }

    /// Creates a subscription-mode Checkout Session; returns its URL.
    pub async fn create_checkout_session(&self, c: &Checkout<'_>) -> Result<String, StripeError> {
        let user = c.user_id.to_string();
        let form = [
            ("mode", "subscription"),
            ("customer", c.customer),
            ("client_reference_id", user.as_str()),
            ("line_items[0][price]", c.price),
            ("line_items[0][quantity]", "1"),
            ("metadata[user_id]", user.as_str()),
            ("metadata[tier]", c.tier),
            ("subscription_data[metadata][user_id]", user.as_str()),
            ("subscription_data[metadata][tier]", c.tier),
            ("success_url", c.success_url),
            ("cancel_url", c.cancel_url),
        ];
        let session = self
            .post(
                "/v1/checkout/sessions",
                &form,
                &format!("jarvis-checkout-{}", Uuid::new_v4()),
            )
            .await?;
        url_of(&session)
    }

    /// Creates a Customer Portal session for `customer`; returns its URL.
    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: &str,
    ) -> Result<String, StripeError> {
        let form = [("customer", customer), ("return_url", return_url)];
        let session = self
            .post(
                "/v1/billing_portal/sessions",
                &form,
                &format!("jarvis-portal-{}", Uuid::new_v4()),
            )
            .await?;
        url_of(&session)
    }

    /// POSTs `form` to `path`, retrying once (same idempotency key) when Stripe
    /// is unreachable or fails on its side.
    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: &str,
    ) -> Result<Value, StripeError> {
        let mut last = None;
        for _ in 0..2 {
            let sent = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .header("Stripe-Version", API_VERSION)
                .header("Idempotency-Key", idempotency_key)
                .form(form)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = Some(StripeError::Http(e));
                    continue;
                }
            };
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(body);
            }
            let error = StripeError::Api {
                status: status.as_u16(),
                message: body["error"]["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_string(),
            };
            if !status.is_server_error() {
                return Err(error);
            }
            last = Some(error);
        }
        Err(last.unwrap_or(StripeError::Shape("answer")))
    }
}

fn id_of(object: &Value) -> Result<String, StripeError> {
    object["id"]
        .as_str()
        .map(str::to_string)
        .ok_or(StripeError::Shape("id"))
}

fn url_of(object: &Value) -> Result<String, StripeError> {
    object["url"]
        .as_str()
        .map(str::to_string)
        .ok_or(StripeError::Shape("url"))
}
