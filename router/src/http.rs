//! The HTTP API: shared state, the route table and the server.
//!
//! Each resource module owns its `router()`; this file only merges them and adds
//! the layers every request passes through (request id, tracing, metrics, the
//! 1 MiB body limit).

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use axum::{Router, extract::DefaultBodyLimit};
use sqlx::PgPool;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::{
    auth::{Authenticator, local::LocalTokens, supabase::SupabaseVerifier},
    config::Config,
    metrics::Metrics,
    storage::Storage,
    workspaces::{self, Registry},
};

/// Sign-up, sign-in, refresh and sign-out of built-in accounts.
pub mod auth;
/// Stripe Checkout, Customer Portal and the Stripe webhook.
pub mod billing;
/// Conversations and their messages.
pub mod conversations;
/// Documents the agent saved.
pub mod documents;
/// The error type every handler returns, and its JSON body.
pub mod error;
/// Request extractors: the signed-in user, the client address, JSON bodies.
pub mod extractor;
/// Files: uploads and what the agent wrote in its workspace.
pub mod files;
/// The model gateway (`/v1/messages`) for sandboxes.
pub mod gateway;
/// `/healthz`, `/readyz`, `/metrics`.
pub mod health;
/// Layers applied to every request.
pub mod middleware;
/// Which browser `Origin`s the router trusts (the WebSocket, billing redirects).
pub mod origin;
/// `GET /api/plans`: the plans and their prices, for anyone.
pub mod plans;
/// Browser sockets per user: the cap, and closing a disabled user's at once.
pub mod sockets;
/// Accounts found in good standing a moment ago (not read again per request).
pub mod standing;
/// This month's usage and the plan's limits (`/api/usage`).
pub mod usage;
/// The signed-in user's account (`/api/me`).
pub mod users;
/// Voice audio by signed URL (`/api/voice/{id}`).
pub mod voice;
/// The browser app (static files with the single-page-app fallback).
pub mod web;
/// Turns' events and tool calls that sandboxes push to the router.
pub mod workspace_events;
/// Workspace files and agent state for sandboxes that sync through the router.
pub mod workspace_sync;
/// The browser WebSocket (`/ws`): auth, Origin, relay to the user's sandbox.
pub mod ws;

pub use error::{Error, Result};

/// Largest request body accepted outside the upload route.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The configuration read at start-up.
    pub config: Arc<Config>,
    /// The database pool.
    pub db: PgPool,
    /// Token verification (and issuing, for built-in accounts).
    pub auth: Arc<Authenticator>,
    /// Object storage.
    pub storage: Storage,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The model gateway's upstream client and rate limiter.
    pub gateway: Arc<gateway::Gateway>,
    /// Workspaces: which sandbox is awake, waking and sleeping them.
    pub workspaces: Registry,
    /// The plans and their limits (`JARVIS_PLANS`, `STRIPE_PRICE_*`).
    pub plans: Arc<crate::plans::Plans>,
    /// Text to speech (`speak`) and its signed audio URLs.
    pub voice: crate::voice::Voice,
    /// The Stripe API; `None` while billing is off.
    pub stripe: Option<crate::billing::client::Stripe>,
    /// Outgoing mail (verification links); `None` without `JARVIS_SMTP_URL`.
    pub mailer: Option<Arc<crate::mail::Mailer>>,
    /// Supabase users known to have a `users` row in this process.
    known_users: Arc<Mutex<HashSet<Uuid>>>,
    /// Browser sockets open on this router, per user.
    pub sockets: Arc<sockets::Sockets>,
    /// The egress proxy's questions to the user's browsers (`crate::egress::ask`).
    pub egress_asker: Arc<crate::egress::ask::Asker>,
    /// How the egress proxy resolves names: the system's; tests map their own.
    pub egress_resolver: Arc<dyn crate::egress::resolve::Resolve>,
}

impl AppState {
    /// Builds the state: token keys, storage, HTTP client.
    pub async fn new(config: Config, db: PgPool) -> anyhow::Result<Self> {
        crate::db::set_pooled(config.behind_pooler());
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        let auth = if config.supabase_auth() {
            Authenticator::Supabase(Box::new(SupabaseVerifier::new(
                config.supabase_jwt_secret.as_deref(),
                config.supabase_url.as_deref(),
                http,
            )))
        } else {
            let secret = match &config.jwt_secret {
                Some(s) => s.clone(),
                None => stored_secret(&db, "jwt_secret")
                    .await
                    .context("loading the token signing secret")?,
            };
            Authenticator::Local(LocalTokens::new(secret.as_bytes()))
        };
        let storage = Storage::open(&config.storage).context("opening object storage")?;
        let gateway = gateway::Gateway::new(&config)
            .await
            .context("setting up the model gateway")?;
        let plans = Arc::new(gateway::plans_of(&config).context("reading the plans")?);
        let metrics = Arc::new(Metrics::default());
        let voice = crate::voice::Voice::new(
            crate::voice::engine(&config).context("setting up text to speech")?,
            db.clone(),
            storage.clone(),
            plans.clone(),
            crate::voice::Signer::new(
                stored_secret(&db, "voice_url_secret")
                    .await
                    .context("loading the voice URL secret")?
                    .as_bytes(),
                config.voice_url_ttl,
            ),
            crate::voice::VoiceSettings {
                timeout: config.tts_timeout,
                max_chars: config.voice_max_chars as usize,
            },
            metrics.clone(),
        );
        let workspaces = Registry::new(
            db.clone(),
            storage.clone(),
            voice.clone(),
            workspaces::backend(&config, &db).context("setting up the workspace backend")?,
            workspaces::registry::Settings::from_config(&config),
        );
        workspaces.spawn_reaper();
        let stripe = match &config.stripe_secret_key {
            Some(key) => Some(
                crate::billing::client::Stripe::new(&config.stripe_api_base, key)
                    .context("building the Stripe client")?,
            ),
            None => None,
        };
        let mailer = crate::mail::Mailer::from_config(&config)
            .context("setting up mail")?
            .map(Arc::new);
        if mailer.is_none() && config.billing_enabled() && !config.supabase_auth() {
            tracing::warn!(
                "billing is on but JARVIS_SMTP_URL is not set: no email address can be verified, so built-in accounts cannot call the model"
            );
        }
        let normalised = crate::auth::email::backfill(&db)
            .await
            .context("normalising stored email addresses")?;
        if normalised > 0 {
            tracing::info!(users = normalised, "stored email addresses normalised");
        }
        crate::auth::spawn_pruner(db.clone());
        let sockets = Arc::new(sockets::Sockets::default());
        // `LISTEN` is session state: through a transaction pooler it goes over the
        // direct connection.
        let listen_db = match &config.database_direct_url {
            Some(direct) if config.behind_pooler() => sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy(direct)
                .context("reading DATABASE_DIRECT_URL")?,
            _ => db.clone(),
        };
        sockets.spawn_watch(listen_db.clone());
        let egress_asker = crate::egress::ask::Asker::new(
            db.clone(),
            metrics.clone(),
            Arc::new(workspaces.clone()),
            config.egress_approval_timeout,
        );
        egress_asker.spawn_watch(listen_db);
        Ok(Self {
            sockets,
            egress_asker,
            egress_resolver: Arc::new(crate::egress::resolve::SystemResolver),
            config: Arc::new(config),
            db,
            auth: Arc::new(auth),
            storage,
            metrics,
            gateway: Arc::new(gateway),
            workspaces,
            plans,
            voice,
            stripe,
            mailer,
            known_users: Arc::default(),
        })
    }
}

/// A router secret (`jwt_secret` signs built-in tokens when none is configured,
/// `voice_url_secret` signs audio URLs): made once and kept in the database, so
/// restarts and other router processes share it.
async fn stored_secret(db: &PgPool, name: &str) -> sqlx::Result<String> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use rand::RngCore;
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    // language=PostgreSQL
    crate::db::query(
        "insert into router_settings (key, value) values ($1, $2) on conflict do nothing",
    )
    .bind(name)
    .bind(URL_SAFE_NO_PAD.encode(bytes))
    .execute(db)
    .await?;
    // language=PostgreSQL
    let (secret,): (String,) =
        crate::db::query_as("select value from router_settings where key = $1")
            .bind(name)
            .fetch_one(db)
            .await?;
    Ok(secret)
}

/// The whole application, without a socket (tests drive it with `oneshot`).
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(auth::router())
        .merge(users::router())
        .merge(billing::router())
        .merge(usage::router())
        .merge(plans::router())
        .merge(voice::router())
        .merge(documents::router())
        .merge(conversations::router())
        .merge(files::router())
        .merge(health::router())
        .merge(ws::router())
        // The sandboxes' `/v1/…` routes are not here: they answer the fallback's 404.
        .fallback(web::fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    middleware::apply(routes, state.clone()).with_state(state)
}

/// The routes sandboxes call (the model gateway, workspace sync, `speak`), served
/// on the unix socket bound into local sandboxes' jails and on
/// `JARVIS_SANDBOX_LISTEN`; never on the public listener, and without `/metrics`.
pub fn sandbox_app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(gateway::router())
        .merge(voice::sandbox_router().layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
        .merge(workspace_sync::sandbox_router())
        .merge(workspace_events::sandbox_router())
        .fallback(error::not_found);
    middleware::apply(routes, state.clone()).with_state(state)
}

/// Serves [`sandbox_app`] on a unix socket at `path` that the sandbox user may
/// connect to (the socket is the only way out of a local sandbox).
pub async fn serve_sandbox_socket(path: &std::path::Path, state: AppState) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    axum::serve(listener, sandbox_app(state).into_make_service())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the sandbox socket")
}

/// Serves [`sandbox_app`] on `listener` (`JARVIS_SANDBOX_LISTEN`).
pub async fn serve_sandbox_tcp(listener: TcpListener, state: AppState) -> anyhow::Result<()> {
    let service = sandbox_app(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the sandbox listener")
}

/// Serves the application on `listener` (and the sandboxes' routes on the sandbox
/// socket with the local backend, on `JARVIS_SANDBOX_LISTEN` when set) until
/// SIGTERM or ctrl-c; then puts every workspace to sleep.
pub async fn serve_on(listener: TcpListener, state: AppState) -> anyhow::Result<()> {
    if let Some(addr) = state.config.sandbox_listen {
        let sandbox_listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding JARVIS_SANDBOX_LISTEN {addr}"))?;
        tracing::info!(addr = %sandbox_listener.local_addr()?, "the sandboxes' routes are listening");
        let sandbox_state = state.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_sandbox_tcp(sandbox_listener, sandbox_state).await {
                tracing::error!(error = ?error, "the sandbox listener failed");
            }
        });
    }
    if state.config.backend == crate::config::Backend::Local {
        let path = workspaces::gateway_socket(&state.config);
        let sandbox_state = state.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_sandbox_socket(&path, sandbox_state).await {
                tracing::error!(error = ?error, "the sandbox socket failed");
            }
        });
    }
    spawn_egress(&state).await?;
    let workspaces = state.workspaces.clone();
    let gateway = state.gateway.clone();
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP");
    workspaces.sleep_all().await;
    // The sandboxes are gone, so are their calls: their usage rows are written
    // before the process ends.
    gateway.meters.drain(METER_GRACE).await;
    served
}

/// Starts the egress proxy (`crate::egress`) on `JARVIS_EGRESS_LISTEN` when set,
/// and on `egress.sock` next to the gateway socket with the local backend.
async fn spawn_egress(state: &AppState) -> anyhow::Result<()> {
    use crate::egress::{Egress, Settings, proxy};
    let settings = Settings::from_config(&state.config).context("reading JARVIS_EGRESS_DENY")?;
    for tier in crate::plans::Tier::ALL {
        for pattern in &state.plans.get(tier).egress_allow {
            crate::egress::policy::Pattern::parse(pattern)
                .with_context(|| format!("the {tier} plan's egress_allow (JARVIS_PLANS)"))?;
        }
    }
    let egress = Egress::new(
        state.db.clone(),
        state.plans.clone(),
        state.metrics.clone(),
        settings,
        state.egress_resolver.clone(),
    );
    egress.set_asker(state.egress_asker.clone());
    if let Some(addr) = state.config.egress_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding JARVIS_EGRESS_LISTEN {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "the egress proxy is listening");
        let egress = egress.clone();
        tokio::spawn(async move {
            if let Err(error) = proxy::serve_tcp(egress, listener).await {
                tracing::error!(%error, "the egress listener failed");
            }
        });
    }
    if state.config.backend == crate::config::Backend::Local {
        let path = workspaces::egress_socket(&state.config);
        tokio::spawn(async move {
            if let Err(error) = proxy::serve_unix(egress, &path).await {
                tracing::error!(%error, path = %path.display(), "the egress socket failed");
            }
        });
    }
    Ok(())
}

/// How long a shutdown waits for the gateway's last usage rows.
const METER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds the configured address and serves.
pub async fn serve(state: AppState) -> anyhow::Result<()> {
    let listener = TcpListener::bind(state.config.listen)
        .await
        .with_context(|| format!("binding {}", state.config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(url = %format!("http://{addr}"), "Jarvis is listening");
    serve_on(listener, state).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = terminate => {} }
    tracing::info!("shutting down");
}
