//! Startup: checks the configuration, prepares the directories (with `--sync
//! router`, restores them from the router) and the workspace's Python
//! environment (`installs`), starts the gateway forwarder, the egress forwarder
//! (when told where the router's egress proxy is), the
//! outbox (turns stored over HTTP) and the MCP server, then serves the router's endpoint until shutdown (with `--sync
//! router`, pushing the last changes before it exits).
//!
//! When ready it prints one JSON line to stdout, `{"ready":true,"listen":"…"}`,
//! with the bound address (`127.0.0.1:PORT` or `unix:/path`), so whoever started
//! it can connect (logs go to stderr).

use std::{
    future::Future,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    agents::{AgentSettings, Spare},
    config::{Config, SyncMode},
    credentials::Credentials,
    egress_forward, gateway_forward,
    installs::Installs,
    mcp,
    process::AgentSpec,
    router_api::RouterApi,
    server::{self, AppState},
    session::Hub,
    sessions::Sessions,
    sync::RouterSync,
};

/// How long the push on shutdown may take (the kubelet's default grace is 30 s).
pub const FINAL_PUSH_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the events still queued may take to be stored on shutdown.
pub const OUTBOX_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Tries reaching the router this many times, doubling a 1 s pause, before the
/// start fails (a pod's network may lag its start a little).
const RESTORE_ATTEMPTS: u32 = 5;

/// Restores from the router, retrying; a sandbox that cannot restore does not start
/// (starting empty would show the user a workspace without their files).
pub(crate) async fn restore(sync: &RouterSync) -> Result<()> {
    restore_with(|| sync.restore()).await
}

/// Restores a just-claimed warm pool sandbox from the router, retrying as
/// [`restore`] does.
pub(crate) async fn restore_claimed(sync: &RouterSync, spec: &AgentSpec) -> Result<()> {
    restore_with(|| sync.restore_claimed()).await?;
    // What was restored belongs to the CLI's user too.
    for dir in [&spec.home, &spec.workspace_dir] {
        prepare_dir(dir, spec.uid_gid)?;
    }
    Ok(())
}

async fn restore_with<F, Fut>(attempt_restore: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = std::result::Result<crate::sync::Restored, crate::sync::SyncError>>,
{
    let mut pause = Duration::from_secs(1);
    for attempt in 1..=RESTORE_ATTEMPTS {
        match attempt_restore().await {
            Ok(_) => return Ok(()),
            Err(error) if attempt < RESTORE_ATTEMPTS => {
                tracing::warn!(%error, attempt, "restoring from the router failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(error) => {
                return Err(Error::Config(format!(
                    "could not restore the workspace from the router: {error}"
                )));
            }
        }
    }
    Ok(())
}

/// Runs the sandbox until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let cancel = CancellationToken::new();
    let uid_gid = config
        .cli_uid
        .map(|uid| (uid, config.cli_gid.unwrap_or(uid)));
    for dir in [&config.state_dir, &config.workspace_dir] {
        prepare_dir(dir, uid_gid)?;
    }
    let credentials = match (&config.workspace_token, &config.claim_secret) {
        (Some(token), None) if !token.is_empty() => Credentials::assigned(token),
        (None, Some(secret)) if !secret.is_empty() => Credentials::unassigned(secret),
        _ => return Err(Error::Config("the workspace token is empty".into())),
    };
    let sessions = Arc::new(Sessions::load(&config.state_dir));
    // The gateway as the sandbox's own requests reach it, and the way the CLI
    // does: through the forwarder (which adds the token: the CLI has a
    // placeholder key) when the CLI may start before the sandbox has a token
    // (a warm pool's) or must not see it (a jail: its one way out is a socket);
    // otherwise straight, with the token.
    let forward = config.gateway_socket.is_some() || credentials.token().is_none();
    if config.spare_agent && !forward {
        return Err(Error::Config(
            "a spare agent (--spare-agent) needs --gateway-socket or --claim-secret".into(),
        ));
    }
    let (gateway_url, upstream) = match (&config.gateway_url, &config.gateway_socket) {
        (Some(url), None) => {
            let url = url.trim_end_matches('/').to_string();
            let upstream = gateway_forward::tcp_upstream(&url);
            (url, upstream)
        }
        (None, Some(socket)) => (
            String::new(),
            Some(egress_forward::Upstream::Unix(socket.clone())),
        ),
        _ => {
            return Err(Error::Config(
                "give exactly one of --gateway-url and --gateway-socket".into(),
            ));
        }
    };
    let (cli_gateway_url, api_key) = if forward {
        let upstream = upstream.ok_or_else(|| {
            Error::Config(format!(
                "the gateway forwarder cannot relay to {gateway_url:?} (http://HOST:PORT only)"
            ))
        })?;
        let addr = gateway_forward::start(
            upstream,
            credentials.clone(),
            sessions.clone(),
            cancel.child_token(),
        )
        .await?;
        (
            format!("http://{addr}"),
            gateway_forward::PLACEHOLDER_KEY.to_string(),
        )
    } else {
        (
            gateway_url.clone(),
            credentials
                .token()
                .map(|t| t.to_string())
                .unwrap_or_default(),
        )
    };
    // The sandbox's own requests: straight to the router when it has a URL,
    // else through the forwarder.
    let gateway_url = if gateway_url.is_empty() {
        cli_gateway_url.clone()
    } else {
        gateway_url
    };
    let sync = match config.sync {
        SyncMode::Off => None,
        SyncMode::Router => {
            let sync = RouterSync::with_credentials(
                &gateway_url,
                credentials.clone(),
                &config.workspace_dir,
                &config.state_dir,
                uid_gid,
            )
            .map_err(|e| Error::Config(e.to_string()))?;
            // A warm pool sandbox restores when it is claimed (`server`).
            if credentials.token().is_some() {
                restore(&sync).await?;
                // What was restored belongs to the CLI's user too.
                for dir in [&config.state_dir, &config.workspace_dir] {
                    prepare_dir(dir, uid_gid)?;
                }
            }
            Some(Arc::new(sync))
        }
    };

    let egress_proxy = match (&config.egress_socket, &config.egress_proxy) {
        (Some(socket), _) => Some(egress_forward::Upstream::Unix(socket.clone())),
        (None, Some(addr)) => Some(egress_forward::Upstream::Tcp(addr.clone())),
        (None, None) => None,
    };
    let egress_proxy = match egress_proxy {
        Some(upstream) => {
            let addr =
                egress_forward::start(upstream, credentials.clone(), cancel.child_token()).await?;
            Some(format!("http://{addr}"))
        }
        None => None,
    };
    let installs = Installs::new(&config.workspace_dir);
    installs.prepare(&config.cli_path, uid_gid).await;

    let api = RouterApi::with_credentials(&gateway_url, credentials.clone())
        .ok_or_else(|| Error::Config(format!("invalid gateway URL {gateway_url:?}")))?;
    let hub = Hub::with_sessions(
        config.state_dir.clone(),
        config.call_timeout,
        Some(api),
        sessions,
    );
    // Turns are stored over HTTP, whether or not a router link is attached.
    hub.start_outbox();
    let mcp_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(Error::Bind)?;
    let mcp_addr = mcp_listener.local_addr().map_err(Error::Bind)?;
    let mcp_app = mcp::router(hub.clone(), cancel.child_token());
    let mcp_cancel = cancel.clone();
    tokio::spawn(async move {
        let served = axum::serve(mcp_listener, mcp_app)
            .with_graceful_shutdown(async move { mcp_cancel.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "MCP server failed");
        }
    });

    let settings = Arc::new(AgentSettings {
        spec: AgentSpec {
            claude_bin: config.claude_bin.clone(),
            workspace_dir: config.workspace_dir.clone(),
            home: config.state_dir.clone(),
            session_id: String::new(),
            resume: false,
            resume_at: None,
            gateway_url: cli_gateway_url,
            api_key,
            mcp_url: format!("http://{mcp_addr}/mcp"),
            mcp_tools: mcp::TOOL_NAMES.iter().map(|t| t.to_string()).collect(),
            path: installs.path(&config.cli_path),
            max_retries: config.cli_max_retries,
            model: config.model.clone(),
            uid_gid,
            egress_proxy,
            extra_env: installs.env(),
        },
        max_agents: config.max_agents,
        idle_timeout: config.turn_idle_timeout,
        sync: sync.clone(),
        spare: config.spare_agent.then(|| Arc::new(Spare::default())),
    });
    if let Some(spare) = &settings.spare {
        spare.fill(&settings.spec);
    }
    let outbox = hub.clone();
    let app = server::app(AppState {
        hub,
        settings,
        credentials,
    });
    let stop = async move {
        shutdown.await;
        // What the turns said is stored before the process goes.
        outbox.drain_outbox(OUTBOX_DRAIN_TIMEOUT).await;
        // Scaled to zero (SIGTERM): what the agent left goes to the router first.
        if let Some(sync) = sync {
            match tokio::time::timeout(FINAL_PUSH_TIMEOUT, sync.push()).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::error!(%error, "the final push to the router failed"),
                Err(_) => tracing::error!("the final push to the router timed out"),
            }
        }
        cancel.cancel();
    };
    if let Some(path) = config.listen.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(Error::Bind)?;
        announce(&format!("unix:{}", path.display()));
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .map_err(Error::Serve)
    } else {
        let addr: SocketAddr = config.listen.parse().map_err(|_| {
            Error::Config(format!(
                "--listen {:?} is neither HOST:PORT nor unix:PATH",
                config.listen
            ))
        })?;
        let listener = TcpListener::bind(addr).await.map_err(Error::Bind)?;
        let bound = listener.local_addr().map_err(Error::Bind)?;
        announce(&bound.to_string());
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .map_err(Error::Serve)
    }
}

/// The ready line on stdout (a machine interface, not a log).
fn announce(listen: &str) {
    tracing::info!(listen, "sandbox ready");
    let line = serde_json::json!({"ready": true, "listen": listen});
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Creates `dir` and, when the CLI runs as another uid, hands it (recursively) to it.
fn prepare_dir(dir: &Path, uid_gid: Option<(u32, u32)>) -> Result<()> {
    let failed = |source| Error::Dir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    if let Some((uid, gid)) = uid_gid {
        chown_tree(dir, uid, gid).map_err(failed)?;
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
