//! The router: accounts, the HTTP API, the proxy to sandboxes and the model gateway.
//!
//! `main.rs` only wires these together; everything a test needs is reachable from here.

/// The operators' command line (`router admin …`).
pub mod admin;
/// Who is calling: access tokens (built-in and Supabase), refresh tokens, passwords.
pub mod auth;
/// Stripe: API client, webhook signatures, events → plans.
pub mod billing;
/// The Jarvis tool calls a sandbox makes over HTTP, answered for its user.
pub mod calls;
/// Configuration from the environment (the table in DESIGN.md).
pub mod config;
/// Database access helpers shared by every module: the per-user (RLS) transaction.
pub mod db;
/// The egress proxy: the sandboxes' allow-listed, audited way to the internet.
pub mod egress;
/// The HTTP API: state, routes and error responses.
pub mod http;
/// Admission to the model gateway: account standing, token quota, rate limit.
pub mod limits;
/// Outgoing mail over SMTP (verification links).
pub mod mail;
/// Prometheus metrics of the router.
pub mod metrics;
/// Plan tiers and what each allows.
pub mod plans;
/// Model prices, for the cost of each call.
pub mod pricing;
/// The relay between a user's browser connections and their sandbox.
pub mod proxy;
/// The plan's storage quota: every stored byte of a user.
pub mod quota;
/// Object storage for files (a local directory or S3).
pub mod storage;
/// Workspace files and agent state ⇄ storage (save on sleep, restore on wake).
pub mod sync;
/// Logging set-up.
pub mod telemetry;
/// The Jarvis tools a sandbox calls (documents, speak), answered for its user.
pub mod tools;
/// Conversations and messages stored as a turn streams.
pub mod transcript;
/// Uploads: users' files streamed to storage, named safely, copied into the workspace.
pub mod uploads;
/// Text to speech: engines, the `speak` service, signed audio URLs.
pub mod voice;
/// Workspaces (sandboxes): tokens, the backend trait and its implementations.
pub mod workspaces;

/// The SQL migrations of `migrations/`, embedded in the binary and run at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
