//! The `kubernetes` backend: each user's sandbox is a `JarvisWorkspace` that the
//! operator turns into a pod. This module speaks the router's half of the contract in
//! operator/README.md ("Contract with the router"):
//!
//! - wake: stop a pod still running with the previous token first (it pushes its
//!   last changes with it); create the workspace if missing (`spec.user` = user id,
//!   asleep), write the token Secret `jw-<name>-token` (key `token`, owned by the workspace), set
//!   `replicas: 1` through the scale subresource, then watch, bounded by the wake
//!   timeout, until `status.phase` is `Ready` with an `endpoint`;
//! - sleep: set `replicas: 0`, wait for `Sleeping` and for the pod to be gone (its
//!   sandbox pushes its last changes on SIGTERM), delete the token Secret;
//! - activity: merge-patch `status.lastActivity` under the field manager
//!   [`FIELD_MANAGER`], at most once per [`KubernetesConfig::activity_every`] per user,
//!   so the operator's idle reaper sees it.
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
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use k8s_openapi::{
    ByteString,
    api::core::v1::{Pod, Secret},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};
use operator::{
    controller::build::token_secret_name,
    crd::{JarvisWorkspace, JarvisWorkspaceSpec, WorkspacePhase},
};
use serde_json::json;
use uuid::Uuid;

use super::{Backend, BackendStatus, Endpoint, Error, Result};

/// Field manager of everything the router writes to the cluster.
pub const FIELD_MANAGER: &str = "jarvis-router";

/// Key of the token in the workspace's Secret (the operator's `--token-secret-key`).
pub const TOKEN_KEY: &str = "token";

/// Where and how the backend works.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    /// Namespace of the workspaces (`JARVIS_KUBE_NAMESPACE`).
    pub namespace: String,
    /// Longest a wake (or a sleep) may take.
    pub wake_timeout: Duration,
    /// Least time between two `lastActivity` writes for one user.
    pub activity_every: Duration,
    /// Connect to the pod's IP (with the endpoint's port) instead of the Service
    /// name in `status.endpoint`: for a router without cluster DNS.
    pub pod_ip: bool,
}

/// Workspaces as `JarvisWorkspace` objects.
pub struct KubernetesBackend {
    client: Client,
    config: KubernetesConfig,
    awake: Mutex<HashSet<Uuid>>,
    touched: Arc<Mutex<HashMap<Uuid, Instant>>>,
}

/// The workspace name of `user`: `u-<uuid>` (38 characters, a DNS label).
pub fn workspace_name(user: Uuid) -> String {
    format!("u-{user}")
}

fn kube_error(error: kube::Error) -> Error {
    Error::Kube(Box::new(error))
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl KubernetesBackend {
    /// A backend writing workspaces through `client`.
    pub fn new(client: Client, config: KubernetesConfig) -> Self {
        Self {
            client,
            config,
            awake: Mutex::default(),
            touched: Arc::default(),
        }
    }

    fn workspaces(&self) -> Api<JarvisWorkspace> {
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
                idle_timeout: operator::crd::DEFAULT_IDLE_TIMEOUT.to_owned(),
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

    /// Write the token Secret, owned by the workspace, replacing any older token.
    async fn write_token(&self, ws: &JarvisWorkspace, token: &str) -> Result<()> {
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.config.namespace);
        let name = token_secret_name(&ws.name_any());
        let owner = ws.controller_owner_ref(&()).ok_or_else(|| {
            Error::NotReady("the workspace has no uid to own its token".to_owned())
        })?;
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": name, "ownerReferences": [owner] },
            "type": "Opaque",
            "data": { TOKEN_KEY: ByteString(token.as_bytes().to_vec()) },
        });
        secrets
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(secret),
            )
            .await
            .map_err(kube_error)?;
        Ok(())
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

    /// Wait (bounded by the wake timeout) until `done` holds for the workspace.
    async fn wait_until(
        &self,
        name: &str,
        done: impl Fn(&JarvisWorkspace) -> bool + Send + 'static,
    ) -> Result<JarvisWorkspace> {
        let wait = await_condition(
            self.workspaces(),
            name,
            move |ws: Option<&JarvisWorkspace>| ws.is_some_and(&done),
        );
        match tokio::time::timeout(self.config.wake_timeout, wait).await {
            Err(_) => Err(Error::Timeout),
            Ok(Err(e)) => Err(Error::NotReady(format!("watching the workspace: {e}"))),
            Ok(Ok(Some(ws))) => Ok(ws),
            Ok(Ok(None)) => Err(Error::NotReady("the workspace was deleted".to_owned())),
        }
    }

    async fn sleep_and_wait(&self, name: &str) -> Result<()> {
        self.scale(name, 0).await?;
        self.wait_until(name, |ws| phase(ws) == Some(WorkspacePhase::Sleeping))
            .await?;
        // The operator is done once it deleted the pod; the sandbox is done when the
        // pod is gone: on SIGTERM it pushes its last changes with the token that is
        // revoked after this returns.
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.config.namespace);
        let pod = operator::controller::build::child_name(name);
        let gone = await_condition(pods, &pod, |p: Option<&Pod>| p.is_none());
        match tokio::time::timeout(self.config.wake_timeout, gone).await {
            Ok(Ok(_)) => Ok(()),
            Err(_) => Err(Error::Timeout),
            Ok(Err(e)) => Err(Error::NotReady(format!("watching the pod: {e}"))),
        }
    }

    async fn wake_workspace(&self, user: Uuid, token: &str) -> Result<Endpoint> {
        let ws = self.ensure_workspace(user).await?;
        let name = ws.name_any();
        // A running pod read its token when it started: replace it, so the new token
        // is the one it holds.
        if ws.spec.replicas != 0 {
            self.sleep_and_wait(&name).await?;
        }
        self.write_token(&ws, token).await?;
        self.scale(&name, 1).await?;
        let ready = self
            .wait_until(&name, |ws| {
                phase(ws) == Some(WorkspacePhase::Ready) && endpoint(ws).is_some()
            })
            .await?;
        let endpoint = endpoint(&ready).ok_or(Error::Timeout)?;
        if !self.config.pod_ip {
            return Ok(Endpoint::Tcp(endpoint));
        }
        let port = endpoint.rsplit_once(':').map(|(_, port)| port.to_owned());
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.config.namespace);
        let pod = pods
            .get(&operator::controller::build::child_name(&name))
            .await
            .map_err(kube_error)?;
        let ip = pod.status.and_then(|s| s.pod_ip);
        match (ip, port) {
            (Some(ip), Some(port)) => Ok(Endpoint::Tcp(format!("{ip}:{port}"))),
            _ => Err(Error::NotReady("the Ready pod has no IP".to_owned())),
        }
    }

    async fn sleep_workspace(&self, user: Uuid) -> Result<()> {
        let name = workspace_name(user);
        if self
            .workspaces()
            .get_opt(&name)
            .await
            .map_err(kube_error)?
            .is_none()
        {
            return Ok(());
        }
        self.sleep_and_wait(&name).await?;
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.config.namespace);
        match secrets
            .delete(&token_secret_name(&name), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(kube_error(e)),
        }
    }
}

fn phase(ws: &JarvisWorkspace) -> Option<WorkspacePhase> {
    ws.status.as_ref()?.phase
}

fn endpoint(ws: &JarvisWorkspace) -> Option<String> {
    ws.status.as_ref()?.endpoint.clone()
}

impl Backend for KubernetesBackend {
    fn wake<'a>(&'a self, user: Uuid, token: &'a str) -> BoxFuture<'a, Result<Endpoint>> {
        Box::pin(async move {
            let endpoint = self.wake_workspace(user, token).await?;
            self.set_awake(user, true);
            Ok(endpoint)
        })
    }

    fn sleep(&self, user: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.set_awake(user, false);
            self.sleep_workspace(user).await
        })
    }

    /// A running pod of `user`'s holds the previous token: it is stopped (and
    /// pushes its last changes with that token) before a new one is issued.
    fn before_wake(&self, user: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let name = workspace_name(user);
            let running = self
                .workspaces()
                .get_opt(&name)
                .await
                .map_err(kube_error)?
                .is_some_and(|ws| ws.spec.replicas != 0);
            if running {
                self.sleep_and_wait(&name).await?;
            }
            Ok(())
        })
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
        let api = self.workspaces();
        let name = workspace_name(user);
        let patch = json!({ "status": { "lastActivity": Timestamp::now().to_string() } });
        // Outside a runtime (never in the router) there is nothing to write with.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            if let Err(error) = api.patch_status(&name, &params, &Patch::Merge(patch)).await {
                tracing::warn!(%error, workspace = %name, "recording workspace activity failed");
            }
        });
    }
}
