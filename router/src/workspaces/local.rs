//! The `local` backend: one `sandbox` process per awake user on this machine,
//! confined by bubblewrap (see `jail.rs` for the exact flags).
//!
//! The router (often root) never runs a sandbox as itself: the child drops to the
//! workspace's own unprivileged host uid (`uids.rs`: one per workspace from
//! `JARVIS_SANDBOX_UIDS`, no passwd entry needed; `Command::uid/gid`, which also
//! clears supplementary groups) before `prlimit` sets its limits and bubblewrap
//! builds the jail, so neither the jail's uid nor anything that escaped it is host
//! root, and no two tenants share a uid: RLIMIT_NPROC, file ownership and signals
//! are per workspace. That uid owns the workspace, state and run directories; a
//! workspace still owned by another uid (the former shared `jarvis-sandbox` user)
//! is handed over on wake. The sandbox listens on a unix socket in the user's run
//! directory; it reaches the gateway only through the router's gateway socket
//! bound into the jail, and the internet only through the egress proxy's socket
//! bound beside it.
//!
//! Every child is owned by a reaper task (kill on sleep or drop, always awaited).
//!
//! With a warm pool (`JARVIS_WARM_POOL`, [`warm`]) a wake first claims a
//! pre-started, unassigned sandbox: the user's files and agent state are moved
//! into its directories, its uid becomes the workspace's, its directories are
//! renamed to the user's (the jail's bind mounts follow the inodes) and it is
//! told the workspace token. A wake that finds the pool empty (or a claim that
//! fails) starts a sandbox as without a pool.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Mutex,
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    Awake, Backend, BackendStatus, Endpoint, Error, HostDirs, Result,
    jail::{self, Limits, Spec},
    uids,
};
use crate::config::UidRange;

/// What the local backend needs to know, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// `prlimit` (util-linux).
    pub prlimit: PathBuf,
    /// `bwrap`.
    pub bwrap: PathBuf,
    /// The `sandbox` binary.
    pub sandbox_bin: PathBuf,
    /// The CLI binary.
    pub claude_bin: PathBuf,
    /// Parent of every user's `workspace` and `state` directories.
    pub workspaces_dir: PathBuf,
    /// Parent of every user's run directory.
    pub run_dir: PathBuf,
    /// The router's gateway socket.
    pub gateway_socket: PathBuf,
    /// The router's egress proxy socket (`crate::egress`), the sandboxes' way out.
    pub egress_socket: PathBuf,
    /// The host uids (and gids) of sandboxes: one per workspace from this range.
    pub uids: UidRange,
    /// CLI processes per sandbox.
    pub max_agents: u32,
    /// Resource limits per sandbox.
    pub limits: Limits,
    /// Longest wait for the sandbox's ready line.
    pub ready_timeout: Duration,
    /// Unassigned sandboxes kept started for waking users (0: none).
    pub warm_pool: usize,
}

mod warm;

/// Refuses a uid range that holds a user of this machine (`/etc/passwd`): a
/// sandbox must never run as a real user.
pub fn check_uid_range(range: UidRange) -> Result<()> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|source| Error::Prepare {
        what: "the user database",
        path: "/etc/passwd".into(),
        source,
    })?;
    let users = uids::users_in_range(&passwd, range);
    if users.is_empty() {
        Ok(())
    } else {
        Err(Error::UidRangeHoldsUsers(users.join(", ")))
    }
}

/// A running sandbox: asking its reaper to stop it (dropping this stops it too).
struct Running {
    stop: oneshot::Sender<()>,
    stopped: oneshot::Receiver<()>,
}

impl Running {
    /// Whether the sandbox still runs.
    fn is_running(&mut self) -> bool {
        matches!(
            self.stopped.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        )
    }

    /// Stops the sandbox and waits (a while) until it is gone.
    async fn stop(self) {
        let Running { stop, stopped } = self;
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
    }
}

/// Sandboxes as local processes under bubblewrap.
pub struct LocalBackend {
    config: LocalConfig,
    db: sqlx::PgPool,
    running: Mutex<HashMap<Uuid, Running>>,
    /// The host uid of each workspace seen (changed only by a warm claim).
    uids: Mutex<HashMap<Uuid, u32>>,
    /// The warm pool, when there is one.
    pool: Option<std::sync::Arc<warm::Pool>>,
    /// Ends the pool's refill task.
    cancel: CancellationToken,
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl LocalBackend {
    /// A backend with no sandbox running yet; workspaces' uids are kept in `db`.
    /// With `config.warm_pool` slots, a task fills the pool now and refills it
    /// after each claim (needs a Tokio runtime; without one there is no pool).
    pub fn new(config: LocalConfig, db: sqlx::PgPool) -> Self {
        let cancel = CancellationToken::new();
        let pool = (config.warm_pool > 0)
            .then(|| tokio::runtime::Handle::try_current().ok())
            .flatten()
            .map(|runtime| {
                let pool = warm::Pool::new(config.warm_pool);
                runtime.spawn(warm::keep_filled(
                    pool.clone(),
                    config.clone(),
                    db.clone(),
                    cancel.clone(),
                ));
                pool
            });
        Self {
            config,
            db,
            running: Mutex::default(),
            uids: Mutex::default(),
            pool,
            cancel,
        }
    }

    /// The host (uid, gid) of `user`'s workspace, allocated on first use.
    async fn owner(&self, user: Uuid) -> Result<(u32, u32)> {
        let known = self
            .uids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .copied();
        let uid = match known {
            Some(uid) => uid,
            None => {
                let uid = uids::of_workspace(&self.db, user, self.config.uids)
                    .await
                    .map_err(|e| Error::Uid(Box::new(e)))?;
                self.uids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(user, uid);
                uid
            }
        };
        Ok((uid, uid))
    }

    fn user_dirs(&self, user: Uuid) -> (PathBuf, PathBuf, PathBuf) {
        let home = self.config.workspaces_dir.join(user.to_string());
        (
            home.join("workspace"),
            home.join("state"),
            self.config.run_dir.join(user.to_string()),
        )
    }

    fn prepare(&self, user: Uuid, (uid, gid): (u32, u32)) -> Result<Spec> {
        use std::os::unix::fs::MetadataExt;
        let (workspace, state, run) = self.user_dirs(user);
        let home = self.config.workspaces_dir.join(user.to_string());
        // A workspace another uid owns (the shared user of old, a uid outside a
        // moved range) becomes this one's: its contents first, the directories
        // themselves last, so an interrupted hand-over is done again next time.
        let owned_by_other = std::fs::symlink_metadata(&home)
            .is_ok_and(|meta| meta.uid() != uid || meta.gid() != gid);
        if owned_by_other {
            for dir in [&workspace, &state] {
                if dir.is_dir() {
                    hand_over(dir, uid, gid)?;
                }
            }
            tracing::info!(user.id = %user, uid, "workspace handed to its own host uid");
        }
        for dir in [&home, &workspace, &state, &run] {
            owned_dir(dir, uid, gid)?;
        }
        let socket = jail::host_socket(&run);
        match std::fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Prepare {
                    what: "the stale sandbox socket",
                    path: socket,
                    source: e,
                });
            }
            _ => {}
        }
        Ok(spec(&self.config, workspace, state, run))
    }

    async fn start(&self, user: Uuid, token: &str) -> Result<Endpoint> {
        self.stop(user).await;
        let (uid, gid) = self.owner(user).await?;
        let spec = self.prepare(user, (uid, gid))?;
        let running = launch(
            &self.config,
            &spec,
            (uid, gid),
            jail::secret_args(token),
            (user.to_string(), None),
        )
        .await?;
        self.lock().insert(user, running);
        Ok(Endpoint::Unix(jail::host_socket(&spec.run)))
    }

    /// Claims a warm slot for `user` (see [`warm`]); `None` when the pool is
    /// empty or the claim failed: the caller starts a sandbox as usual.
    async fn claim(&self, user: Uuid, token: &str) -> Option<Endpoint> {
        let pool = self.pool.as_ref()?;
        let slot = pool.take()?;
        let started = std::time::Instant::now();
        self.stop(user).await;
        let (workspace, state, run) = self.user_dirs(user);
        let home = self.config.workspaces_dir.join(user.to_string());
        let previous = self.owner(user).await.ok();
        let uid = slot.uid;
        let moved = warm::move_in(
            &slot,
            warm::UserDirs {
                home,
                workspace,
                state,
                run: run.clone(),
            },
            &self.db,
            user,
            previous,
            token,
        )
        .await;
        if let Err(error) = moved {
            tracing::error!(user.id = %user, uid, error = ?error, "claiming a warm sandbox failed; starting one");
            warm::discard(slot, &self.db).await;
            return None;
        }
        self.uids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user, uid);
        let socket = jail::host_socket(&run);
        let moved_in = started.elapsed();
        match warm::claim_request(&socket, &slot.secret, token).await {
            Ok(()) => {
                // Started in the background at a low priority; a user's now.
                set_niceness(uid, 0);
                tracing::info!(
                    user.id = %user,
                    uid,
                    move_in_ms = moved_in.as_secs_f64() * 1e3,
                    claim_ms = (started.elapsed() - moved_in).as_secs_f64() * 1e3,
                    "warm sandbox claimed"
                );
                self.lock().insert(user, slot.running);
                Some(Endpoint::Unix(socket))
            }
            Err(error) => {
                // Its directories are the user's now: a sandbox started as
                // usual takes them over.
                tracing::error!(user.id = %user, uid, %error, "the warm sandbox refused its claim; starting one");
                slot.running.stop().await;
                None
            }
        }
    }

    async fn stop(&self, user: Uuid) {
        let running = self.lock().remove(&user);
        if let Some(running) = running {
            running.stop().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for LocalBackend {
    /// One router per machine: it always starts the sandbox (replacing one of
    /// the user's still running) with a freshly issued token, claiming a warm
    /// one when the pool holds one.
    fn wake(&self, user: Uuid) -> BoxFuture<'_, Result<Awake>> {
        Box::pin(async move {
            // A claim installs the token with the slot's uid, in one
            // statement; a sandbox started as usual gets it installed first.
            let token = super::tokens::generate();
            let endpoint = match self.claim(user, &token).await {
                Some(endpoint) => endpoint,
                None => {
                    super::tokens::install(&self.db, user, &token).await?;
                    self.start(user, &token).await?
                }
            };
            Ok(Awake {
                endpoint,
                token,
                started: true,
            })
        })
    }

    fn sleep(&self, user: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.stop(user).await;
            Ok(())
        })
    }

    fn adopt_restored(&self, user: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let (uid, gid) = self.owner(user).await?;
            let (workspace, state, _) = self.user_dirs(user);
            for dir in [&workspace, &state] {
                if dir.is_dir() {
                    hand_over(dir, uid, gid)?;
                }
            }
            Ok(())
        })
    }

    fn file_owner(&self, user: Uuid) -> BoxFuture<'_, Result<Option<(u32, u32)>>> {
        Box::pin(async move { self.owner(user).await.map(Some) })
    }

    fn host_dirs(&self, user: Uuid) -> Option<HostDirs> {
        let (workspace, state, _) = self.user_dirs(user);
        Some(HostDirs { workspace, state })
    }

    fn warm_slots(&self) -> usize {
        self.pool.as_ref().map_or(0, |pool| pool.ready())
    }

    fn status(&self, user: Uuid) -> BackendStatus {
        let running = self.lock().get_mut(&user).is_some_and(Running::is_running);
        if running {
            BackendStatus::Running
        } else {
            BackendStatus::Asleep
        }
    }
}

/// The jail of a sandbox with these directories.
fn spec(c: &LocalConfig, workspace: PathBuf, state: PathBuf, run: PathBuf) -> Spec {
    Spec {
        prlimit: c.prlimit.clone(),
        bwrap: c.bwrap.clone(),
        sandbox_bin: c.sandbox_bin.clone(),
        claude_bin: c.claude_bin.clone(),
        workspace,
        state,
        run,
        gateway_socket: c.gateway_socket.clone(),
        egress_socket: c.egress_socket.clone(),
        max_agents: c.max_agents,
        spare_agent: c.warm_pool > 0,
        limits: c.limits,
    }
}

/// Starts the jail `spec` describes as `(uid, gid)`, writes `secret` (the
/// arguments bubblewrap reads from stdin) and waits for the ready line; the
/// child is then owned by a reaper task. `label` names it in logs. With
/// `nice`, everything of the uid runs at that niceness (set while bubblewrap
/// still waits for its arguments, so the whole jail inherits it).
async fn launch(
    config: &LocalConfig,
    spec: &Spec,
    (uid, gid): (u32, u32),
    secret: Vec<u8>,
    (label, nice): (String, Option<i32>),
) -> Result<Running> {
    let (program, args) = spec.command();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::Spawn)?;
    if let Some(nice) = nice {
        set_niceness(uid, nice);
    }
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&secret).await.map_err(Error::Spawn)?;
    }
    let stdout = child.stdout.take();
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(log_lines(label.clone(), stderr));
    }
    let ready = async {
        let Some(stdout) = stdout else {
            return Err(Error::NotReady("no stdout".into()));
        };
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next_line()
            .await
            .map_err(|e| Error::NotReady(e.to_string()))?
            .ok_or_else(|| Error::NotReady("exited before its ready line".into()))?;
        // Keep draining stdout so the sandbox never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(line)
    };
    let line = match tokio::time::timeout(config.ready_timeout, ready).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => {
            reap(child).await;
            return Err(e);
        }
        Err(_) => {
            reap(child).await;
            return Err(Error::Timeout);
        }
    };
    let ready: serde_json::Value = serde_json::from_str(&line)
        .map_err(|_| Error::NotReady("its ready line is not JSON".into()))?;
    if ready["ready"] != serde_json::Value::Bool(true) {
        reap(child).await;
        return Err(Error::NotReady("no ready line".into()));
    }
    let (stop, stop_rx) = oneshot::channel();
    let (stopped_tx, stopped) = oneshot::channel();
    tokio::spawn(async move {
        tokio::select! {
            status = child.wait() => {
                tracing::info!(sandbox = %label, status = ?status.ok(), "sandbox exited");
            }
            _ = stop_rx => reap(child).await,
        }
        let _ = stopped_tx.send(());
    });
    Ok(Running { stop, stopped })
}

/// Sets the niceness of every process (thread) of the sandbox uid `uid`.
fn set_niceness(uid: u32, nice: i32) {
    if let Err(error) = rustix::process::setpriority_user(rustix::process::Uid::from_raw(uid), nice)
    {
        tracing::warn!(uid, nice, %error, "setting a sandbox's niceness failed");
    }
}

/// Kills the child (the whole jail dies with it: `--die-with-parent`) and awaits it.
async fn reap(mut child: Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

async fn log_lines(label: String, stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(sandbox = %label, "sandbox: {line}");
    }
}

/// Creates `dir` (mode 0700) owned by the workspace's uid.
fn owned_dir(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |source| Error::Prepare {
        what: "a workspace directory",
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(fail)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)
}

/// Gives everything under `dir` not yet owned by the workspace's uid to it (files
/// the router restored from storage, a workspace of the former shared user), from
/// directory descriptors (see
/// [`crate::sync::paths::Beneath::hand_over_all`]).
fn hand_over(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    crate::sync::paths::Beneath::open(dir)
        .and_then(|root| root.hand_over_all((uid, gid)))
        .map_err(|source| Error::Prepare {
            what: "a restored file",
            path: dir.to_path_buf(),
            source,
        })
}
