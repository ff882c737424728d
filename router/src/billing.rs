//! Billing with Stripe: the API client (Checkout, Customer Portal), webhook
//! signatures, and what webhook events do to a user's plan. The HTTP routes are
//! in `http::billing`; the plans themselves in `plans`.
//!
//! Billing is on when `STRIPE_SECRET_KEY` is set. Then a user needs an active
//! subscription (`users.subscription_active`, kept true by the webhooks or an
//! administrator's `router admin grant`) to call the model; with it off every
//! account is active and `tier` alone picks the limits.

/// The Stripe API calls billing makes.
pub mod client;
/// Webhook events → `users` (idempotent, order-independent).
pub mod events;
/// `Stripe-Signature` verification.
pub mod signature;
