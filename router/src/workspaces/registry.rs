//! The one place that decides when a workspace wakes and sleeps.
//!
//! The registry keeps a [`Hub`] per user seen since start-up (state: asleep,
//! waking or ready; browser connections; running turns; last activity). A wake
//! asks the backend for the user's sandbox (it starts one, issuing its token, or
//! joins the one that runs) and connects to it with the token the backend
//! returned; a sandbox refusing that token (it changed meanwhile) makes the
//! registry ask the backend once more. Wake and sleep of one user are serialised
//! by the hub's link lock.
//!
//! Who puts workspaces to sleep depends on the backend
//! ([`Backend::sleeps_idle`]):
//!
//! - local (one router per machine): this registry. A sleep closes the link,
//!   stops the sandbox, revokes the token and stores the files. The reaper puts
//!   to sleep every ready workspace with no connection and no running turn that
//!   has been idle for `idle_timeout`; shutdown puts them all to sleep.
//! - kubernetes (any number of routers): the operator's idle reaper, from the
//!   activity routers report. This registry never stops a sandbox: an idle hub
//!   (no browser here, no turn) only has its link closed, also at shutdown. The
//!   reaper task reports the activity of every hub in use (browsers open, turns
//!   running) at least every [`super::activity_every`].
//!
//! On the local backend the machine's room is bounded ([`super::capacity`],
//! `JARVIS_MAX_WORKSPACES`): a wake takes a slot; with none free it puts the
//! workspace [`super::capacity::choose`] names to sleep (as the reaper would,
//! only sooner) and takes the slot that frees, waiting at most
//! `capacity_wait`.
//!
//! The reaper never waits on one user: each idle workspace is put to sleep by a
//! task of its own, bounded by `sleep_timeout`. A sleep still running then (its
//! sync stuck on storage, a lock held by a stuck upload) is cancelled, reported
//! (an error log and [`Registry::cancelled_sleeps`]) and tried again at a later
//! check; every other workspace sleeps on time meanwhile.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use uuid::Uuid;

use super::{Awake, Backend, Error, Result, capacity::Capacity, tokens};
use crate::proxy::{Context, Hub, Status, link};

/// Room for a wake when every slot is taken.
mod room;

/// Awake (and once-awake) workspaces, by user.
#[derive(Clone)]
pub struct Registry {
    ctx: Arc<Context>,
    hubs: Arc<Mutex<HashMap<Uuid, Arc<Hub>>>>,
    idle_timeout: Duration,
    wake_timeout: Duration,
    sleep_timeout: Duration,
    /// Users whose idle sleep runs now (the reaper starts one at a time per user).
    reaping: Arc<Mutex<HashSet<Uuid>>>,
    /// Sleeps cancelled for taking longer than `sleep_timeout`, by user.
    cancelled: Arc<Mutex<HashMap<Uuid, u64>>>,
    /// The machine's room for awake workspaces (local backend, when limited).
    capacity: Option<Arc<Capacity>>,
    /// Longest a wake waits for room.
    capacity_wait: Duration,
}

/// How long the registry lets things take, and what a sync may store.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Idle time before a workspace sleeps.
    pub idle_timeout: Duration,
    /// Longest a wake may take.
    pub wake_timeout: Duration,
    /// Longest one workspace's sleep (or sync) may take before it is cancelled.
    pub sleep_timeout: Duration,
    /// The workspace quota the syncs apply.
    pub sync_limits: crate::sync::Limits,
    /// The most workspaces awake at once (`None`: no limit); only a backend
    /// that puts its sandboxes to sleep from here (local) applies it.
    pub max_workspaces: Option<usize>,
    /// Longest a wake waits for room under `max_workspaces`.
    pub capacity_wait: Duration,
}

impl Settings {
    /// The settings `config` names.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            idle_timeout: config.idle_timeout,
            wake_timeout: config.wake_timeout,
            sleep_timeout: config.sleep_timeout,
            sync_limits: crate::sync::Limits {
                max_files: config.workspace_max_files,
                max_total_bytes: config.workspace_max_bytes,
                ..crate::sync::Limits::default()
            },
            max_workspaces: match config.backend {
                crate::config::Backend::Local => super::capacity::limit(
                    config.max_workspaces,
                    super::capacity::machine_memory(),
                    config.warm_pool,
                ),
                crate::config::Backend::Kubernetes => None,
            },
            capacity_wait: config.capacity_wait,
        }
    }
}

impl Registry {
    /// A registry over `backend`; call [`Registry::spawn_reaper`] to sleep idle ones.
    pub fn new(
        db: sqlx::PgPool,
        storage: crate::storage::Storage,
        voice: crate::voice::Voice,
        backend: Arc<dyn Backend>,
        settings: Settings,
    ) -> Self {
        let capacity = settings
            .max_workspaces
            .filter(|_| backend.sleeps_idle())
            .map(|max| Arc::new(Capacity::new(max)));
        Self {
            ctx: Arc::new(Context {
                turns: crate::transcript::Opener::new(db.clone()),
                events: crate::transcript::Writer::new(db.clone()),
                db,
                storage,
                voice,
                backend,
                workspace_limits: settings.sync_limits,
                sync_timeout: settings.sleep_timeout,
            }),
            hubs: Arc::default(),
            idle_timeout: settings.idle_timeout,
            wake_timeout: settings.wake_timeout,
            sleep_timeout: settings.sleep_timeout,
            reaping: Arc::default(),
            cancelled: Arc::default(),
            capacity,
            capacity_wait: settings.capacity_wait,
        }
    }

    /// The most workspaces awake at once here and how many are (`None`: no limit).
    pub fn capacity(&self) -> Option<(usize, usize)> {
        self.capacity.as_ref().map(|c| (c.max(), c.awake()))
    }

    /// Stores the events sandboxes push (`http::workspace_events`).
    pub fn events(&self) -> &crate::transcript::Writer {
        &self.ctx.events
    }

    /// `user`'s hub if this router has one (never makes one).
    pub fn existing_hub(&self, user: Uuid) -> Option<Arc<Hub>> {
        self.hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .cloned()
    }

    /// The hub of `user` (made on first use, asleep).
    pub fn hub(&self, user: Uuid) -> Arc<Hub> {
        self.hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(user)
            .or_insert_with(|| Arc::new(Hub::new(user, self.ctx.clone())))
            .clone()
    }

    /// Makes sure `hub`'s sandbox is connected, waking it if needed, and returns the link.
    #[tracing::instrument(skip_all, fields(user.id = %hub.user))]
    pub async fn ready(&self, hub: &Arc<Hub>) -> Result<link::Link> {
        let mut guard = hub.link.lock().await;
        if let Some(link) = guard.as_ref().filter(|l| l.is_alive()) {
            // In use: not one to put to sleep to make room now.
            hub.touch();
            return Ok(link.clone());
        }
        hub.status.send_replace(Status::Waking);
        let started = std::time::Instant::now();
        if let Err(error) = self.make_room(hub.user).await {
            hub.status.send_replace(Status::Asleep);
            tracing::warn!(error = ?error, "no room to wake the workspace");
            return Err(error);
        }
        let woken = tokio::time::timeout(self.wake_timeout, self.wake(hub)).await;
        match woken {
            Ok(Ok(link)) => {
                hub.reset_seqs();
                *guard = Some(link.clone());
                hub.touch();
                hub.status.send_replace(Status::Ready);
                tracing::info!(
                    duration_ms = started.elapsed().as_secs_f64() * 1e3,
                    "workspace awake"
                );
                Ok(link)
            }
            failed => {
                *guard = None;
                hub.status.send_replace(Status::Asleep);
                // A half-started local sandbox is stopped; a pod is the operator's.
                if self.ctx.backend.sleeps_idle() {
                    let _ = self.ctx.backend.sleep(hub.user).await;
                }
                self.free_room(hub.user);
                let error = match failed {
                    Ok(Err(e)) => e,
                    _ => Error::Timeout,
                };
                tracing::error!(error = ?error, "wake failed");
                Err(error)
            }
        }
    }

    async fn wake(&self, hub: &Arc<Hub>) -> Result<link::Link> {
        self.restore(hub.user).await?;
        let awake = self.ctx.backend.wake(hub.user).await?;
        match link::connect(hub.clone(), &awake.endpoint, &awake.token).await {
            // The sandbox holds another token than the one read (it was started
            // again meanwhile): look again, once.
            Err(error) if is_unauthorized(&error) => {
                tracing::info!("the sandbox refused its token; looking again");
                let Awake {
                    endpoint, token, ..
                } = self.ctx.backend.wake(hub.user).await?;
                link::connect(hub.clone(), &endpoint, &token).await
            }
            connected => connected,
        }
    }

    /// Puts `hub`'s workspace to sleep: closes the link, stops the sandbox,
    /// revokes the token. Files stay. With a backend whose sandboxes this router
    /// does not put to sleep ([`Backend::sleeps_idle`] false: kubernetes) it only
    /// closes this router's link ([`Registry::release`]).
    pub async fn sleep(&self, hub: &Arc<Hub>) -> Result<()> {
        self.sleep_if(hub, |_| true).await
    }

    /// [`Registry::sleep`] if `still(hub)` holds once no wake, sleep or sync
    /// of the user runs: whoever chose the workspace chose it before that.
    #[tracing::instrument(skip_all, fields(user.id = %hub.user))]
    async fn sleep_if(&self, hub: &Arc<Hub>, still: impl Fn(&Hub) -> bool) -> Result<()> {
        if !self.ctx.backend.sleeps_idle() {
            self.release(hub).await;
            return Ok(());
        }
        let mut guard = hub.link.lock().await;
        if !still(hub) {
            tracing::debug!("in use again: left awake");
            return Ok(());
        }
        if let Some(link) = guard.take() {
            link.close();
        }
        hub.status.send_replace(Status::Sleeping);
        let stopped = self.ctx.backend.sleep(hub.user).await;
        self.free_room(hub.user);
        hub.end_turns().await;
        let revoked = tokens::revoke(&self.ctx.db, hub.user).await;
        {
            let _one_at_a_time = hub.sync.lock().await;
            self.save(hub.user).await;
        }
        hub.status.send_replace(Status::Asleep);
        tracing::info!("workspace asleep");
        revoked?;
        stopped
    }

    /// Closes this router's link to `hub`'s sandbox and leaves the sandbox
    /// running (others may use it; the operator puts it to sleep when nobody
    /// does). The hub is asleep as this router sees it: the next message wakes it,
    /// which joins the sandbox if it still runs.
    #[tracing::instrument(skip_all, fields(user.id = %hub.user))]
    pub async fn release(&self, hub: &Arc<Hub>) {
        let mut guard = hub.link.lock().await;
        if let Some(link) = guard.take() {
            link.close();
        }
        hub.end_turns().await;
        hub.status.send_replace(Status::Asleep);
        // A backend that does not sleep its sandboxes from here only forgets it.
        if !self.ctx.backend.sleeps_idle()
            && let Err(error) = self.ctx.backend.sleep(hub.user).await
        {
            tracing::warn!(%error, "forgetting the workspace failed");
        }
        tracing::info!("link to the workspace closed");
    }

    /// A fresh sandbox (no local files: a new machine, a wiped disk) gets the
    /// user's stored workspace files and agent state back before it starts. A
    /// failed restore fails the wake: a sandbox started empty would later store
    /// its empty workspace over the user's files.
    async fn restore(&self, user: Uuid) -> Result<()> {
        let Some(dirs) = self.ctx.backend.host_dirs(user) else {
            return Ok(());
        };
        if !is_empty_dir(&dirs.workspace) || !is_empty_dir(&dirs.state) {
            return Ok(());
        }
        let report = crate::sync::restore(
            &self.ctx.storage,
            &self.ctx.db,
            user,
            &dirs.workspace,
            &dirs.state,
        )
        .await
        .map_err(|e| Error::Restore(Box::new(e)))?;
        if report.files > 0 || report.state_files > 0 {
            self.ctx.backend.adopt_restored(user).await?;
        }
        tracing::info!(user.id = %user, ?report, "workspace restored from storage");
        Ok(())
    }

    /// Stores the sleeping workspace's files and agent state (best effort: what
    /// is not stored now stays on disk and is stored at the next sleep).
    async fn save(&self, user: Uuid) {
        let Some(dirs) = self.ctx.backend.host_dirs(user) else {
            return;
        };
        let (storage, db) = (&self.ctx.storage, &self.ctx.db);
        if dirs.workspace.is_dir() {
            let saved = match self.ctx.sync_limits(user).await {
                Ok(limits) => {
                    crate::sync::save_workspace_with(storage, db, user, &dirs.workspace, &limits)
                        .await
                        .map(|report| (report, limits))
                }
                Err(e) => Err(crate::sync::SyncError::Quota(e)),
            };
            match saved {
                Ok((report, limits)) => match report.workspace_quota {
                    Some(over) => tracing::warn!(
                        user.id = %user, ?report, "workspace stored up to its quota: {}",
                        over.message(&limits)
                    ),
                    None => tracing::debug!(user.id = %user, ?report, "workspace stored"),
                },
                Err(error) => {
                    tracing::warn!(user.id = %user, %error, "storing the workspace failed")
                }
            }
        }
        if dirs.state.is_dir() {
            let saved = match self.ctx.sync_limits(user).await {
                Ok(limits) => {
                    crate::sync::save_state_with(storage, user, &dirs.state, &limits).await
                }
                Err(e) => Err(crate::sync::SyncError::Quota(e)),
            };
            match saved {
                Ok(report) => tracing::debug!(user.id = %user, ?report, "agent state stored"),
                Err(error) => {
                    tracing::warn!(user.id = %user, %error, "storing the agent state failed")
                }
            }
        }
    }

    /// Warm sandboxes started and unclaimed now (see [`Backend::warm_slots`]).
    pub fn warm_slots(&self) -> usize {
        self.ctx.backend.warm_slots()
    }

    /// `user`'s workspace directory on this machine, if the backend keeps one.
    pub fn host_workspace(&self, user: Uuid) -> Option<std::path::PathBuf> {
        self.ctx.backend.host_dirs(user).map(|d| d.workspace)
    }

    /// Runs `f` on `user`'s workspace directory on this machine (with the
    /// (uid, gid) new files must belong to) while no wake, sleep or file sync of
    /// theirs runs, so what `f` writes is neither half-restored over nor missed
    /// by a sync. `None`, without running `f`, when the backend keeps no files
    /// here, or when the workspace is asleep and has never been on this machine:
    /// its next wake restores every stored file, including new uploads.
    pub async fn with_workspace_dir<F, Fut, T>(&self, user: Uuid, f: F) -> Option<T>
    where
        F: FnOnce(std::path::PathBuf, Option<(u32, u32)>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let dirs = self.ctx.backend.host_dirs(user)?;
        let hub = self.hub(user);
        let link = hub.link.lock().await;
        let awake = link.as_ref().is_some_and(|l| l.is_alive());
        if !awake && is_empty_dir(&dirs.workspace) && is_empty_dir(&dirs.state) {
            return None;
        }
        if !dirs.workspace.is_dir() {
            return None;
        }
        let owner = match self.ctx.backend.file_owner(user).await {
            Ok(owner) => owner,
            Err(error) => {
                // The files stay the router's: readable in the workspace, not writable.
                tracing::warn!(user.id = %user, %error, "the workspace's host uid is unknown");
                None
            }
        };
        let _sync = hub.sync.lock().await;
        let out = f(dirs.workspace, owner).await;
        drop(link);
        Some(out)
    }

    /// Whether `hub` should sleep now.
    fn is_idle(&self, hub: &Hub) -> bool {
        at_rest(hub) && hub.connections() == 0 && hub.last_activity().elapsed() >= self.idle_timeout
    }

    /// Starts putting every idle workspace to sleep, each in a task of its own
    /// bounded by `sleep_timeout`, and returns at once: one user's stuck sleep
    /// never holds up another's. A user whose previous sleep still runs is left
    /// to it.
    pub fn sleep_idle(&self) {
        let idle: Vec<Arc<Hub>> = self
            .hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|h| self.is_idle(h))
            .cloned()
            .collect();
        for hub in idle {
            let registry = self.clone();
            self.spawn_sleep(hub, move |hub| registry.is_idle(hub));
        }
    }

    /// Puts `hub`'s workspace to sleep in a task of its own, bounded by
    /// `sleep_timeout`, if `still` holds then; `None` when a sleep of the user
    /// runs already.
    fn spawn_sleep(
        &self,
        hub: Arc<Hub>,
        still: impl Fn(&Hub) -> bool + Send + Sync + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !self.lock_reaping().insert(hub.user) {
            return None;
        }
        let registry = self.clone();
        Some(tokio::spawn(async move {
            // In a task of its own, so that a panic in it still lets the
            // user be reaped again later (their entry in `reaping` goes).
            let sleep = {
                let (registry, hub) = (registry.clone(), hub.clone());
                tokio::spawn(async move { registry.sleep_bounded(&hub, still).await })
            };
            if let Err(error) = sleep.await {
                tracing::error!(user.id = %hub.user, %error, "putting a workspace to sleep panicked; tried again later");
            }
            registry.lock_reaping().remove(&hub.user);
        }))
    }

    /// [`Registry::sleep_if`] within `sleep_timeout`; past it, cancelled and reported.
    async fn sleep_bounded(&self, hub: &Arc<Hub>, still: impl Fn(&Hub) -> bool) {
        match tokio::time::timeout(self.sleep_timeout, self.sleep_if(hub, still)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(user.id = %hub.user, error = ?error, "idle sleep failed");
            }
            Err(_) => {
                // Cancelled past the point where the sandbox was stopped (its
                // files are stored at the next sleep): it is asleep. Cancelled
                // before (waiting for the workspace's lock): it is as it was, and
                // a later check tries again.
                if hub.status() == Status::Sleeping {
                    hub.status.send_replace(Status::Asleep);
                    self.free_room(hub.user);
                }
                *self
                    .cancelled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(hub.user)
                    .or_default() += 1;
                tracing::error!(
                    user.id = %hub.user,
                    timeout_ms = self.sleep_timeout.as_millis() as u64,
                    status = ?hub.status(),
                    "putting the workspace to sleep took longer than JARVIS_SLEEP_TIMEOUT: \
                     cancelled (a sync or lock of this workspace is stuck); other workspaces \
                     are not held up, and this one is tried again"
                );
            }
        }
    }

    /// How many times putting `user`'s workspace to sleep was cancelled for
    /// taking longer than `sleep_timeout` since start-up.
    pub fn cancelled_sleeps(&self, user: Uuid) -> u64 {
        self.cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .copied()
            .unwrap_or(0)
    }

    fn lock_reaping(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.reaping.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports the activity of every workspace in use here (a browser open or a
    /// turn running, also one the sandbox reports over HTTP), whether or not this
    /// router holds a link to it now, to the backend: the operator's idle reaper
    /// reads it (kubernetes); the backend throttles writes.
    pub fn report_activity(&self) {
        let in_use: Vec<Arc<Hub>> = self
            .hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|h| h.connections() > 0 || h.turn_running())
            .cloned()
            .collect();
        for hub in in_use {
            hub.touch();
        }
    }

    /// Starts the task that sleeps (or, with kubernetes, lets go of) idle
    /// workspaces and reports the activity of those in use, a few times per
    /// idle timeout ([`super::activity_every`]). Each round runs in a task of
    /// its own: one that panics is logged and the next round runs as usual.
    pub fn spawn_reaper(&self) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        let every = super::activity_every(self.idle_timeout);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let round = registry.clone();
                let round = tokio::spawn(async move {
                    round.report_activity();
                    round.sleep_idle();
                });
                if let Err(error) = round.await {
                    tracing::error!(%error, "a round of the idle reaper panicked; the next one runs");
                }
            }
        })
    }

    /// Router shutdown: sleeps every awake workspace, all at once, each bounded
    /// by `sleep_timeout`; with kubernetes only closes the links (the pods run
    /// on for the other routers, and the operator decides when they sleep).
    pub async fn sleep_all(&self) {
        let hubs: Vec<Arc<Hub>> = self
            .hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|hub| hub.status() != Status::Asleep)
            .cloned()
            .collect();
        futures::future::join_all(hubs.iter().map(|hub| self.sleep_bounded(hub, |_| true))).await;
    }
}

/// Whether `hub`'s workspace is awake with nothing running in it.
fn at_rest(hub: &Hub) -> bool {
    hub.status() == Status::Ready && !hub.turn_running()
}

/// Whether `error` is the sandbox refusing the router's token (HTTP 401).
fn is_unauthorized(error: &Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    matches!(error, Error::Connect(e) if matches!(e.as_ref(), WsError::Http(response) if response.status() == 401))
}

/// Whether `dir` is missing or has no entries.
fn is_empty_dir(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

/// The egress proxy's questions reach the user's tabs on this router through
/// their hub (`crate::egress::ask`).
impl crate::egress::ask::Browsers for Registry {
    fn send(&self, user: Uuid, frame: &Arc<str>) -> usize {
        match self.existing_hub(user) {
            Some(hub) => {
                hub.send_to_all(frame);
                hub.connections()
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WebSocket handshake the sandbox answers 401 (another token than the one
    /// read) is what makes the registry look again; other failures are not.
    #[tokio::test]
    async fn a_refused_token_is_told_apart_from_other_connect_failures() {
        let app = axum::Router::new().route(
            "/ws",
            axum::routing::get(|| async { axum::http::StatusCode::UNAUTHORIZED }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let refused = tokio_tungstenite::connect_async(format!("ws://{address}/ws"))
            .await
            .expect_err("refused");
        assert!(is_unauthorized(&Error::Connect(Box::new(refused))));
        let missing = tokio_tungstenite::connect_async(format!("ws://{address}/nowhere"))
            .await
            .expect_err("not found");
        assert!(!is_unauthorized(&Error::Connect(Box::new(missing))));
        assert!(!is_unauthorized(&Error::Timeout));
        server.abort();
    }
}
