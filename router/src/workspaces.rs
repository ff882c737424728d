//! Workspaces: the sandbox that runs each user's agent, wherever it runs.
//!
//! This module owns the workspace token (the only credential a sandbox holds) and
//! the [`Backend`] trait: wake a user's sandbox (or join the one that runs) and say
//! where the router can open its WebSocket with which token, put it to sleep, tell
//! its status. One implementation per place a sandbox can run (`local`: bubblewrap
//! processes on this machine, one router; `kubernetes`: pods of the operator, any
//! number of routers). When this router wakes and sleeps workspaces is decided in
//! one place, [`registry`]; with kubernetes only the operator puts them to sleep.
//! Relaying frames is `crate::proxy`'s job, not this module's.

use std::path::PathBuf;

use futures::future::BoxFuture;
use uuid::Uuid;

/// How many workspaces may be awake at once on this machine, and which sleeps to make room.
pub mod capacity;
/// What the host allows for per-sandbox cgroups (detection only; the limits are rlimits).
pub mod cgroups;
/// One router per data directory (the local backend's run and workspaces directories).
pub mod dir_lock;
/// Bubblewrap: the exact jail a local sandbox runs in (pure argument building).
pub mod jail;
/// The `kubernetes` backend: one `JarvisWorkspace` per user, run by the operator.
pub mod kubernetes;
/// The `local` backend: one confined `sandbox` process per awake user.
pub mod local;
/// Awake workspaces: who is waking, ready, connected, busy, idle; wake and sleep.
pub mod registry;
/// Workspace tokens: issue on wake, verify at the gateway, revoke on sleep.
pub mod tokens;
/// Host uids of local sandboxes: one per workspace, kept in Postgres.
pub mod uids;

pub use registry::Registry;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a workspace could not be woken or put to sleep.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A directory or socket of the workspace could not be prepared.
    #[error("preparing {what} at {path}")]
    Prepare {
        /// What was being prepared.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox process could not be started.
    #[error("starting the sandbox")]
    Spawn(#[source] std::io::Error),
    /// The sandbox exited or said something unexpected before it was ready.
    #[error("the sandbox did not start: {0}")]
    NotReady(String),
    /// The sandbox did not become ready in time.
    #[error("the sandbox did not become ready in time")]
    Timeout,
    /// `JARVIS_SANDBOX_UIDS` holds uids of this machine's users.
    #[error("JARVIS_SANDBOX_UIDS holds users of this machine: {0}; pick a range no user has")]
    UidRangeHoldsUsers(String),
    /// The workspace's host uid could not be had.
    #[error("allocating the workspace's host uid")]
    Uid(#[source] Box<uids::UidError>),
    /// The router could not open its WebSocket to the sandbox.
    #[error("connecting to the sandbox")]
    Connect(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// The user's stored files could not be brought back.
    #[error("restoring the workspace from storage")]
    Restore(#[source] Box<crate::sync::SyncError>),
    /// The database failed (issuing or revoking the token).
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// No room freed on this machine (`JARVIS_MAX_WORKSPACES`) within
    /// `JARVIS_CAPACITY_WAIT`: every awake workspace was in use.
    #[error("every workspace slot of this machine stayed in use")]
    AtCapacity,
    /// The Kubernetes API refused or failed a request (kubernetes backend).
    #[error("kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),
}

/// Where the router reaches an awake sandbox's WebSocket (`GET /ws`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket on this machine (the local backend).
    Unix(PathBuf),
    /// `host:port` over TCP (a pod's service).
    Tcp(String),
}

/// What a backend knows of one user's sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendStatus {
    /// Nothing runs; the files are at rest.
    Asleep,
    /// A sandbox process (or pod) exists.
    Running,
}

/// An awake sandbox as a wake found or made it: where it listens and the token
/// its WebSocket takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Awake {
    /// Where the router opens the sandbox's WebSocket.
    pub endpoint: Endpoint,
    /// The workspace token the sandbox holds (the WebSocket's bearer).
    pub token: String,
    /// This wake started a new sandbox (and issued its token); `false`: it joined
    /// one that was running, with the token it holds.
    pub started: bool,
}

/// A place sandboxes run. Implementations start (or find) and stop sandboxes and
/// issue a token when they start one; the [`Registry`] decides when, and connects.
pub trait Backend: Send + Sync + 'static {
    /// Makes sure `user`'s sandbox runs and returns where it listens once ready,
    /// with its token. A sandbox that runs already is joined, never restarted; a
    /// new token is issued (`tokens`) only when this call starts a sandbox.
    /// Called again by the registry when the sandbox refused the token it returned
    /// (it changed meanwhile): the backend then looks again.
    fn wake(&self, user: Uuid) -> BoxFuture<'_, Result<Awake>>;
    /// Stops `user`'s sandbox, if any, and waits until it is gone. Files stay.
    /// A backend whose sandboxes another party puts to sleep
    /// ([`Backend::sleeps_idle`] false) only forgets it here: it stops nothing.
    fn sleep(&self, user: Uuid) -> BoxFuture<'_, Result<()>>;
    /// Whether this router decides when `user`'s sandboxes sleep (its reaper puts
    /// idle ones to sleep, a lost sandbox is reaped, shutdown stops them all):
    /// true for the local backend. False for the kubernetes backend, where the
    /// operator's idle reaper decides from the activity routers report and
    /// routers only close their links.
    fn sleeps_idle(&self) -> bool {
        true
    }
    /// Whether `user`'s sandbox runs.
    fn status(&self, user: Uuid) -> BackendStatus;
    /// The host directories of `user`'s workspace and agent state, when the
    /// backend keeps them on this machine (the router syncs them with storage).
    fn host_dirs(&self, _user: Uuid) -> Option<HostDirs> {
        None
    }
    /// Makes files the router just restored into [`Backend::host_dirs`] the
    /// sandbox's own (the router writes them as itself).
    fn adopt_restored(&self, _user: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// The host (uid, gid) that must own files the router writes into `user`'s
    /// [`Backend::host_dirs`] while the sandbox may run (uploads); `None` leaves
    /// them the router's.
    fn file_owner(&self, _user: Uuid) -> BoxFuture<'_, Result<Option<(u32, u32)>>> {
        Box::pin(async { Ok(None) })
    }
    /// Notes that `user`'s workspace is in use (a frame passed either way, or the
    /// registry's periodic report while browsers are open or turns run). Backends
    /// that keep their own idle clock record it; the default does nothing. Must not
    /// block: called on every frame.
    fn touch(&self, _user: Uuid) {}

    /// Warm sandboxes started and unclaimed now (`JARVIS_WARM_POOL`, local
    /// backend); 0 for a backend without a pool.
    fn warm_slots(&self) -> usize {
        0
    }
}

/// How often the registry reports the activity of workspaces in use (browsers
/// open, turns running) for an idle timeout of `idle_timeout`: a few times per
/// timeout, at most every 30 s. The kubernetes backend writes `lastActivity` at
/// most this often.
pub fn activity_every(idle_timeout: std::time::Duration) -> std::time::Duration {
    use std::time::Duration;
    (idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// Where a sandbox's files live on the router's machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDirs {
    /// The agent's working directory (synced to `files`).
    pub workspace: PathBuf,
    /// The CLI's home: sessions, transcripts (synced as one archive).
    pub state: PathBuf,
}

/// The router's gateway socket that local sandboxes reach it through.
pub fn gateway_socket(config: &crate::config::Config) -> PathBuf {
    absolute(&config.run_dir).join("gateway.sock")
}

/// The egress proxy's unix socket for local sandboxes, next to [`gateway_socket`].
pub fn egress_socket(config: &crate::config::Config) -> PathBuf {
    absolute(&config.run_dir).join("egress.sock")
}

/// Locks the local backend's run and workspaces directories for this process
/// (see [`dir_lock`]); `None` for the kubernetes backend, which keeps nothing on
/// this machine's disk.
pub fn lock_data_dirs(
    config: &crate::config::Config,
) -> Result<Option<dir_lock::DirLock>, dir_lock::LockError> {
    if config.backend != crate::config::Backend::Local {
        return Ok(None);
    }
    let who = format!(
        "pid {}, serving http://{}",
        std::process::id(),
        config.listen
    );
    let (run, work) = (absolute(&config.run_dir), absolute(&config.workspaces_dir));
    dir_lock::lock(&[&run, &work], &who).map(Some)
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The backend the configuration names (the local one keeps workspaces' host
/// uids in `db`).
pub fn backend(
    config: &crate::config::Config,
    db: &sqlx::PgPool,
) -> Result<std::sync::Arc<dyn Backend>> {
    use crate::config::Backend as Kind;
    match config.backend {
        Kind::Local => {
            let sandbox_bin = match &config.sandbox_bin {
                Some(p) => absolute(p),
                None => std::env::current_exe()
                    .ok()
                    .and_then(|exe| Some(exe.parent()?.join("sandbox")))
                    .unwrap_or_else(|| PathBuf::from("sandbox")),
            };
            if let Err(error) = local::check_uid_range(config.sandbox_uids) {
                tracing::error!(%error, "local sandboxes are unavailable");
                return Ok(std::sync::Arc::new(Unavailable));
            }
            let claude_bin = std::fs::canonicalize(&config.claude_bin)
                .unwrap_or_else(|_| absolute(&config.claude_bin));
            // Said at start, not at the first wake: a chat would only learn that
            // its workspace "could not be started".
            for (program, path, fix) in [
                (
                    "the sandbox",
                    &sandbox_bin,
                    "build it: cargo build --release -p sandbox (scripts/run.sh does)",
                ),
                (
                    "the Claude Code CLI",
                    &claude_bin,
                    "install it: scripts/install-claude.sh",
                ),
                (
                    "bubblewrap",
                    &config.bwrap,
                    "install it: apt-get install bubblewrap",
                ),
            ] {
                if !path.is_file() {
                    tracing::error!(
                        path = %path.display(),
                        "{program} is missing, so no workspace can start; {fix}"
                    );
                }
            }
            cgroups::log_support();
            Ok(std::sync::Arc::new(local::LocalBackend::new(
                local::LocalConfig {
                    prlimit: "/usr/bin/prlimit".into(),
                    bwrap: config.bwrap.clone(),
                    sandbox_bin,
                    claude_bin,
                    workspaces_dir: absolute(&config.workspaces_dir),
                    run_dir: absolute(&config.run_dir),
                    gateway_socket: gateway_socket(config),
                    egress_socket: egress_socket(config),
                    uids: config.sandbox_uids,
                    max_agents: config.max_agents,
                    limits: jail::Limits {
                        memory_bytes: config.sandbox_memory_bytes,
                        max_procs: config.sandbox_max_procs,
                        cpu_seconds: config.sandbox_cpu_seconds,
                        tmp_bytes: config.sandbox_tmp_bytes,
                    },
                    ready_timeout: config.wake_timeout,
                    warm_pool: config.warm_pool,
                },
                db.clone(),
            )))
        }
        Kind::Kubernetes => {
            // In-cluster credentials (the router's service account), or an
            // unauthenticated URL; no kubeconfig (building a client from one is async).
            let kube_config = match &config.kube_api_url {
                Some(url) => url
                    .parse()
                    .map(kube::Config::new)
                    .map_err(|e| format!("JARVIS_KUBE_API_URL: {e}")),
                None => kube::Config::incluster().map_err(|e| e.to_string()),
            };
            let client = match kube_config
                .and_then(|c| kube::Client::try_from(c).map_err(|e| e.to_string()))
            {
                Ok(client) => client,
                Err(error) => {
                    tracing::warn!(%error, "kubernetes workspaces are unavailable");
                    return Ok(std::sync::Arc::new(Unavailable));
                }
            };
            Ok(std::sync::Arc::new(kubernetes::KubernetesBackend::new(
                client,
                db.clone(),
                kubernetes::KubernetesConfig {
                    namespace: config.kube_namespace.clone(),
                    wake_timeout: config.wake_timeout,
                    activity_every: activity_every(config.idle_timeout),
                    idle_timeout: config.idle_timeout,
                    pod_ip: config.kube_endpoint == crate::config::KubeEndpoint::PodIp,
                    warm_pool: config.warm_pool > 0,
                },
            )))
        }
    }
}

/// A backend that cannot wake anything (its prerequisites are missing).
pub struct Unavailable;

impl Backend for Unavailable {
    fn wake(&self, _user: Uuid) -> BoxFuture<'_, Result<Awake>> {
        Box::pin(async { Err(Error::NotReady("this backend is not available".into())) })
    }

    fn sleep(&self, _user: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn status(&self, _user: Uuid) -> BackendStatus {
        BackendStatus::Asleep
    }
}
