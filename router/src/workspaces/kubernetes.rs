//! The `kubernetes` backend: each user's sandbox is a `JarvisWorkspace` that the
//! operator turns into a pod. This module speaks the router's half of the contract in
//! operator/README.md ("Contract with the router"); any number of router replicas
//! speak it at once:
//!
//! - wake joins: read the workspace (create it if missing: `spec.user` = user id,
//!   asleep, `spec.idleTimeout` = the router's idle timeout). With `replicas: 1` it
//!   runs (or is starting): wait, bounded by the wake timeout, until `status.phase`
//!   is `Ready` with an `endpoint` for the current generation, read the token from
//!   the Secret `jw-<name>-token` (key `token`, owned by the workspace) and connect
//!   with it. With `replicas: 0`, claim the start by compare-and-swap on that
//!   Secret: create it if absent, or replace it (with its `resourceVersion` as the
//!   precondition) when its [`ISSUED_AT`] annotation is older than the wake
//!   timeout, or than the workspace's going to sleep (its `Ready` condition
//!   turning false while `Sleeping`). The winner issues the token (its hash in Postgres, the same token in
//!   the Secret), sets `replicas: 1` through the scale subresource and waits for
//!   Ready. Whoever finds the Secret younger, or gets a 409 anywhere in the swap,
//!   lets the winner start it: waits for `replicas: 1`, then joins as above. A
//!   workspace scaled to 0 that the operator has not yet put to sleep (its pod may
//!   still run, with the old token) is waited for first;
//! - sleep is the operator's: its idle reaper scales a workspace to 0 when
//!   `status.lastActivity` is older than `spec.idleTimeout`. The router never scales
//!   a workspace down ([`Backend::sleeps_idle`] is false; [`Backend::sleep`] only
//!   forgets it); the token stays valid until the next start replaces it;
//! - activity: merge-patch `status.lastActivity` under the field manager
//!   [`FIELD_MANAGER`], at most once per [`KubernetesConfig::activity_every`] per user,
//!   so the operator's idle reaper sees it (the registry reports every workspace with
//!   browsers open or turns running that often).
//!
//! - warm wake (with [`KubernetesConfig::warm_pool`]): the winner of a start,
//!   for a workspace without persistent storage, first claims one of the
//!   operator's warm pool pods for it ([`warm`]: a compare-and-swap on the pod's
//!   labels, then `POST /v1/claim` with the token, which restores the user's
//!   files and agent state), then scales it up; the operator adopts the claimed
//!   pod instead of starting one. No pod to claim: the wake starts one as before.
//!
//! The endpoint returned is the operator's `status.endpoint` (`jw-<name>.<ns>.svc:<port>`),
//! resolved by cluster DNS, or with [`KubernetesConfig::pod_ip`] the pod's IP and that
//! port.
//!
//! Files: the router cannot reach a pod's volumes ([`Backend::host_dirs`] stays
//! `None`), so the sandbox syncs them itself through the router (`JARVIS_SYNC=router`,
//! set by the operator; routes in `http::workspace_sync`): it restores the stored
//! workspace files and agent state before it is ready, pushes changes after each turn
//! and on SIGTERM, and fetches uploads a message names that arrived while it was awake.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use k8s_openapi::{
    ByteString,
    api::core::v1::{Pod, Secret},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};
use operator::{
    controller::build::{MIN_IDLE_TIMEOUT, token_secret_name},
    crd::{JarvisWorkspace, JarvisWorkspaceSpec, WorkspacePhase},
};
use serde_json::json;
use uuid::Uuid;

use super::{Awake, Backend, BackendStatus, Endpoint, Error, Result, tokens};

mod warm;

/// Field manager of everything the router writes to the cluster.
pub const FIELD_MANAGER: &str = "jarvis-router";

/// Key of the token in the workspace's Secret (the operator's `--token-secret-key`).
pub const TOKEN_KEY: &str = "token";

/// Annotation of the token Secret: when its token was issued (RFC 3339). A Secret
/// younger than the wake timeout belongs to a start in progress.
pub const ISSUED_AT: &str = "jarvis.dev/issued-at";

/// Where and how the backend works.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    /// Namespace of the workspaces (`JARVIS_KUBE_NAMESPACE`).
    pub namespace: String,
    /// Longest a wake may take; also how long a claimed start stays claimed.
    pub wake_timeout: Duration,
    /// Least time between two `lastActivity` writes for one user.
    pub activity_every: Duration,
    /// The idle timeout new workspaces get as `spec.idleTimeout`
    /// (`JARVIS_IDLE_TIMEOUT`; at least the operator's minimum, one minute).
    pub idle_timeout: Duration,
    /// Connect to the pod's IP (with the endpoint's port) instead of the Service
    /// name in `status.endpoint`: for a router without cluster DNS.
    pub pod_ip: bool,
    /// Claim one of the operator's warm pool pods on a start
    /// (`JARVIS_WARM_POOL` above 0; the operator's own setting sizes the pool).
    pub warm_pool: bool,
}

/// Workspaces as `JarvisWorkspace` objects.
pub struct KubernetesBackend {
    client: Client,
    db: sqlx::PgPool,
    config: KubernetesConfig,
    awake: Mutex<HashSet<Uuid>>,
    touched: Arc<Mutex<HashMap<Uuid, Instant>>>,
}

/// The workspace name of `user`: `u-<uuid>` (38 characters, a DNS label).
pub fn workspace_name(user: Uuid) -> String {
    format!("u-{user}")
}

/// `timeout` as a `spec.idleTimeout` (`1h30m`, `15m`, `90s` form), raised to the
/// operator's minimum of one minute, whole seconds.
pub fn idle_timeout_spec(timeout: Duration) -> String {
    let seconds = timeout.max(MIN_IDLE_TIMEOUT).as_secs();
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    for (value, unit) in [(hours, 'h'), (minutes, 'm'), (seconds, 's')] {
        if value > 0 {
            text.push_str(&value.to_string());
            text.push(unit);
        }
    }
    text
}

fn kube_error(error: kube::Error) -> Error {
    Error::Kube(Box::new(error))
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// What a claim on a workspace's start came to.
enum Claim {
    /// This router starts the sandbox, with this token (already in the Secret).
    Won(String),
    /// Another router starts it; its claim holds for this long at most.
    Lost(Duration),
}

impl KubernetesBackend {
    /// A backend writing workspaces through `client`; tokens it issues are stored in `db`.
    pub fn new(client: Client, db: sqlx::PgPool, config: KubernetesConfig) -> Self {
        Self {
            client,
            db,
            config,
            awake: Mutex::default(),
            touched: Arc::default(),
        }
    }

    fn workspaces(&self) -> Api<JarvisWorkspace> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn set_awake(&self, user: Uuid, awake: bool) {
        let mut set = self.awake.lock().unwrap_or_else(|e| e.into_inner());
        if awake {
            set.insert(user);
        } else {
            set.remove(&user);
        }
    }

    /// The user's workspace, created asleep if it does not exist.
    async fn ensure_workspace(&self, user: Uuid) -> Result<JarvisWorkspace> {
        let api = self.workspaces();
        let name = workspace_name(user);
        if let Some(ws) = api.get_opt(&name).await.map_err(kube_error)? {
            return Ok(ws);
        }
        let mut ws = JarvisWorkspace::new(
            &name,
            JarvisWorkspaceSpec {
                user: user.to_string(),
                replicas: 0,
                image: None,
                resources: None,
                idle_timeout: idle_timeout_spec(self.config.idle_timeout),
                storage: None,
            },
        );
        ws.metadata.namespace = Some(self.config.namespace.clone());
        match api.create(&PostParams::default(), &ws).await {
            Ok(ws) => Ok(ws),
            // Another router replica made it first.
            Err(e) if is_status(&e, 409) => api.get(&name).await.map_err(kube_error),
            Err(e) => Err(kube_error(e)),
        }
    }

    /// Claims the start of `ws` by compare-and-swap on its token Secret
    /// (`current`, as just read): create it if absent, replace it if stale. The
    /// winner's token is in the Secret when this returns; the DB does not know it yet.
    async fn claim(&self, ws: &JarvisWorkspace, current: Option<Secret>) -> Result<Claim> {
        let name = token_secret_name(&ws.name_any());
        let resource_version = match &current {
            None => None,
            Some(secret) => {
                let issued = issued_at(secret);
                let claim = SignedDuration::try_from(self.config.wake_timeout)
                    .unwrap_or(SignedDuration::MAX);
                let age = issued.map(|at| Timestamp::now().duration_since(at));
                // The pod of that token went to sleep since: its start is over.
                let over = issued
                    .zip(slept_since(ws))
                    .is_some_and(|(at, slept)| slept > at);
                if let Some(age) = age.filter(|age| *age < claim && !over) {
                    // A start in progress: its router is waking the workspace.
                    let left = claim.checked_sub(age).unwrap_or(SignedDuration::ZERO);
                    return Ok(Claim::Lost(Duration::try_from(left).unwrap_or_default()));
                }
                Some(secret.resource_version().ok_or_else(|| {
                    Error::NotReady("the token Secret has no resourceVersion".to_owned())
                })?)
            }
        };
        let owner = ws.controller_owner_ref(&()).ok_or_else(|| {
            Error::NotReady("the workspace has no uid to own its token".to_owned())
        })?;
        let token = tokens::generate();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.config.namespace.clone()),
                owner_references: Some(vec![owner]),
                annotations: Some(BTreeMap::from([(
                    ISSUED_AT.to_owned(),
                    Timestamp::now().to_string(),
                )])),
                resource_version: resource_version.clone(),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([(
                TOKEN_KEY.to_owned(),
                ByteString(token.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let written = match resource_version {
            None => self.secrets().create(&params, &secret).await,
            Some(_) => self.secrets().replace(&name, &params, &secret).await,
        };
        match written {
            Ok(_) => Ok(Claim::Won(token)),
            // Another router claimed it between our read and our write.
            Err(e) if is_status(&e, 409) => Ok(Claim::Lost(self.config.wake_timeout)),
            Err(e) => Err(kube_error(e)),
        }
    }

    /// The token in the workspace's Secret (the one its running pod holds).
    async fn read_token(&self, workspace: &str) -> Result<String> {
        let secret = self
            .secrets()
            .get(&token_secret_name(workspace))
            .await
            .map_err(kube_error)?;
        secret
            .data
            .and_then(|mut data| data.remove(TOKEN_KEY))
            .and_then(|bytes| String::from_utf8(bytes.0).ok())
            .ok_or_else(|| Error::NotReady("the token Secret holds no token".to_owned()))
    }

    async fn scale(&self, name: &str, replicas: i32) -> Result<()> {
        self.workspaces()
            .patch_scale(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
            )
            .await
            .map_err(kube_error)?;
        Ok(())
    }

    /// Records activity on `user`'s workspace now (not throttled; later touches
    /// count from it).
    async fn record_activity(&self, user: Uuid) -> Result<()> {
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user, Instant::now());
        record_activity(&self.workspaces(), &workspace_name(user))
            .await
            .map_err(kube_error)
    }

    /// Wait (at most `timeout`) until `done` holds for the workspace; `None` past it.
    async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&JarvisWorkspace) -> bool + Send + 'static,
    ) -> Result<Option<JarvisWorkspace>> {
        let wait = await_condition(
            self.workspaces(),
            name,
            move |ws: Option<&JarvisWorkspace>| ws.is_some_and(&done),
        );
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Ok(None),
            Ok(Err(e)) => Err(Error::NotReady(format!("watching the workspace: {e}"))),
            Ok(Ok(Some(ws))) => Ok(Some(ws)),
            Ok(Ok(None)) => Err(Error::NotReady("the workspace was deleted".to_owned())),
        }
    }

    /// Runs `user`'s sandbox (joining it when it runs or another router starts it)
    /// and waits until it is ready.
    async fn wake_workspace(&self, user: Uuid) -> Result<Awake> {
        let deadline = tokio::time::Instant::now() + self.config.wake_timeout;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let name = workspace_name(user);
        let mut started = None;
        loop {
            let ws = self.ensure_workspace(user).await?;
            let current = self
                .secrets()
                .get_opt(&token_secret_name(&name))
                .await
                .map_err(kube_error)?;
            if ws.spec.replicas != 0 && current.is_some() {
                break;
            }
            if ws.spec.replicas == 0 && !is_asleep(&ws) {
                // Scaled to 0, but the operator has not stopped its pod yet: a pod
                // left running would keep the old token. Wait until it is asleep
                // (or someone started it again).
                let settled =
                    self.wait_for(&name, left(), |ws| ws.spec.replicas != 0 || is_asleep(ws));
                settled.await?.ok_or(Error::Timeout)?;
                continue;
            }
            match self.claim(&ws, current).await? {
                Claim::Won(token) => {
                    tokens::install(&self.db, user, &token).await?;
                    // Its last activity may be from before it slept: the reaper
                    // must not take it for idle the moment it is Ready.
                    self.record_activity(user).await?;
                    let persistent = ws.spec.storage.as_ref().is_some_and(|s| s.persistent);
                    let claimed = if self.config.warm_pool && !persistent {
                        let namespace = &self.config.namespace;
                        warm::claim(&self.client, namespace, &name, user, &token).await
                    } else {
                        None
                    };
                    self.scale(&name, 1).await?;
                    match claimed {
                        Some(pod) => tracing::info!(user.id = %user, pod, "woken on a warm pod"),
                        None => tracing::info!(user.id = %user, "starting the workspace's pod"),
                    }
                    started = Some(token);
                    break;
                }
                Claim::Lost(claimed_for) => {
                    // Wait for the winner to scale it up; past its claim, look again
                    // (it may have failed: its claim is then stale, and ours to take).
                    let wait = claimed_for.min(left()) + Duration::from_millis(100);
                    let scaled = self.wait_for(&name, wait, |ws| ws.spec.replicas != 0);
                    if scaled.await?.is_some() {
                        break;
                    }
                    if left().is_zero() {
                        return Err(Error::Timeout);
                    }
                }
            }
        }
        let ready = self
            .wait_for(&name, left(), is_ready)
            .await?
            .ok_or(Error::Timeout)?;
        self.record_activity(user).await?;
        let token = match &started {
            Some(token) => token.clone(),
            None => self.read_token(&name).await?,
        };
        Ok(Awake {
            endpoint: self.endpoint_of(&ready).await?,
            token,
            started: started.is_some(),
        })
    }

    /// Where the router reaches the Ready workspace `ws`.
    async fn endpoint_of(&self, ws: &JarvisWorkspace) -> Result<Endpoint> {
        let endpoint = endpoint(ws).ok_or(Error::Timeout)?;
        if !self.config.pod_ip {
            return Ok(Endpoint::Tcp(endpoint));
        }
        let port = endpoint.rsplit_once(':').map(|(_, port)| port.to_owned());
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.config.namespace);
        // Its own pod, or the warm pool pod it adopted.
        let pod_name = ws
            .status
            .as_ref()
            .and_then(|s| s.pod.clone())
            .unwrap_or_else(|| operator::controller::build::child_name(&ws.name_any()));
        let pod = pods.get(&pod_name).await.map_err(kube_error)?;
        let ip = pod.status.and_then(|s| s.pod_ip);
        match (ip, port) {
            (Some(ip), Some(port)) => Ok(Endpoint::Tcp(format!("{ip}:{port}"))),
            _ => Err(Error::NotReady("the Ready pod has no IP".to_owned())),
        }
    }
}

/// When the token in `secret` was issued; `None` when it does not say (a Secret
/// of an older router: stale).
fn issued_at(secret: &Secret) -> Option<Timestamp> {
    secret.annotations().get(ISSUED_AT)?.parse().ok()
}

/// Whether the operator has put the workspace to sleep: scaled to 0, and its
/// status, about that spec, says `Sleeping` (its pod is deleted).
fn is_asleep(ws: &JarvisWorkspace) -> bool {
    ws.spec.replicas == 0
        && ws.status.as_ref().is_some_and(|status| {
            status.observed_generation >= ws.metadata.generation
                && status.phase == Some(WorkspacePhase::Sleeping)
        })
}

/// Since when the workspace sleeps, if its status (about the current spec) says so:
/// when its `Ready` condition turned false.
fn slept_since(ws: &JarvisWorkspace) -> Option<Timestamp> {
    if !is_asleep(ws) {
        return None;
    }
    let ready = ws
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == operator::controller::status::READY && c.status == "False")?;
    Some(ready.last_transition_time.0)
}

/// Ready, with an endpoint, and the status is about the current spec (not a
/// Ready left over from before a scale to 0 and back).
fn is_ready(ws: &JarvisWorkspace) -> bool {
    let current = ws.status.as_ref().and_then(|s| s.observed_generation) >= ws.metadata.generation;
    ws.spec.replicas != 0
        && current
        && phase(ws) == Some(WorkspacePhase::Ready)
        && endpoint(ws).is_some()
}

fn phase(ws: &JarvisWorkspace) -> Option<WorkspacePhase> {
    ws.status.as_ref()?.phase
}

fn endpoint(ws: &JarvisWorkspace) -> Option<String> {
    ws.status.as_ref()?.endpoint.clone()
}

impl Backend for KubernetesBackend {
    fn wake(&self, user: Uuid) -> BoxFuture<'_, Result<Awake>> {
        Box::pin(async move {
            let awake = self.wake_workspace(user).await?;
            self.set_awake(user, true);
            Ok(awake)
        })
    }

    /// Forgets the workspace on this router's side only: the operator's idle
    /// reaper decides when it sleeps (other routers may be using it).
    fn sleep(&self, user: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.set_awake(user, false);
            Ok(())
        })
    }

    fn sleeps_idle(&self) -> bool {
        false
    }

    /// What this router last did: a workspace it woke counts as running until it
    /// puts it to sleep (the operator's idle reaper may have stopped it since).
    fn status(&self, user: Uuid) -> BackendStatus {
        if self
            .awake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&user)
        {
            BackendStatus::Running
        } else {
            BackendStatus::Asleep
        }
    }

    fn touch(&self, user: Uuid) {
        {
            let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if touched
                .get(&user)
                .is_some_and(|last| now.duration_since(*last) < self.config.activity_every)
            {
                return;
            }
            touched.insert(user, now);
        }
        // Outside a runtime (never in the router) there is nothing to write with.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let api = self.workspaces();
        runtime.spawn(async move {
            let name = workspace_name(user);
            match record_activity(&api, &name).await {
                Ok(()) => {}
                // Not made yet: its wake is on the way, and records activity itself.
                Err(error) if is_status(&error, 404) => {
                    tracing::debug!(%error, workspace = %name, "no workspace to record activity on");
                }
                Err(error) => {
                    tracing::warn!(%error, workspace = %name, "recording workspace activity failed");
                }
            }
        });
    }
}

/// Merge-patches `status.lastActivity` of workspace `name` to now.
async fn record_activity(api: &Api<JarvisWorkspace>, name: &str) -> Result<(), kube::Error> {
    let patch = json!({ "status": { "lastActivity": Timestamp::now().to_string() } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch_status(name, &params, &Patch::Merge(patch))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_timeout_is_written_as_the_operator_reads_it_and_at_least_a_minute() {
        let spec = |seconds| idle_timeout_spec(Duration::from_secs(seconds));
        assert_eq!(spec(15 * 60), "15m");
        assert_eq!(spec(90), "1m30s");
        assert_eq!(spec(5400), "1h30m");
        assert_eq!(spec(3601), "1h1s");
        assert_eq!(spec(10), "1m", "the operator refuses less than 1m");
        for seconds in [60, 61, 3599, 3600, 86_399] {
            assert_eq!(
                operator::crd::parse_duration(&spec(seconds)),
                Some(Duration::from_secs(seconds))
            );
        }
    }
}
