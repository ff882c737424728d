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
}

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

/// A running sandbox: asking its reaper to stop it, and its socket.
struct Running {
    stop: oneshot::Sender<()>,
    stopped: oneshot::Receiver<()>,
}

/// Sandboxes as local processes under bubblewrap.
pub struct LocalBackend {
    config: LocalConfig,
    db: sqlx::PgPool,
    running: Mutex<HashMap<Uuid, Running>>,
    /// The host uid of each workspace seen (they never change while the router runs).
    uids: Mutex<HashMap<Uuid, u32>>,
}

impl LocalBackend {
    /// A backend with no sandbox running yet; workspaces' uids are kept in `db`.
    pub fn new(config: LocalConfig, db: sqlx::PgPool) -> Self {
        Self {
            config,
            db,
            running: Mutex::default(),
            uids: Mutex::default(),
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
        let c = &self.config;
        Ok(Spec {
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
            limits: c.limits,
        })
    }

    async fn start(&self, user: Uuid, token: &str) -> Result<Endpoint> {
        self.stop(user).await;
        let (uid, gid) = self.owner(user).await?;
        let spec = self.prepare(user, (uid, gid))?;
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
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&jail::secret_args(token))
                .await
                .map_err(Error::Spawn)?;
        }
        let stdout = child.stdout.take();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_lines(user, stderr));
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
        let line = match tokio::time::timeout(self.config.ready_timeout, ready).await {
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
                    tracing::info!(user.id = %user, status = ?status.ok(), "sandbox exited");
                }
                _ = stop_rx => reap(child).await,
            }
            let _ = stopped_tx.send(());
        });
        self.lock().insert(user, Running { stop, stopped });
        Ok(Endpoint::Unix(jail::host_socket(&spec.run)))
    }

    async fn stop(&self, user: Uuid) {
        let running = self.lock().remove(&user);
        if let Some(Running { stop, stopped }) = running {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for LocalBackend {
    /// One router per machine: it always starts the sandbox (replacing one of
    /// the user's still running) with a freshly issued token.
    fn wake(&self, user: Uuid) -> BoxFuture<'_, Result<Awake>> {
        Box::pin(async move {
            let token = super::tokens::issue(&self.db, user).await?;
            let endpoint = self.start(user, &token).await?;
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

    fn status(&self, user: Uuid) -> BackendStatus {
        match self.lock().get_mut(&user) {
            Some(r) => match r.stopped.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => BackendStatus::Running,
                _ => BackendStatus::Asleep,
            },
            None => BackendStatus::Asleep,
        }
    }
}

/// Kills the child (the whole jail dies with it: `--die-with-parent`) and awaits it.
async fn reap(mut child: Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

async fn log_lines(user: Uuid, stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(user.id = %user, "sandbox: {line}");
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
