//! The workspace controller: the reconcile driver, its error policy and `run`.
//!
//! Reconcile goes dereference → validate → (reap) → build → apply → status. Only
//! `apply.rs` and this driver touch the apiserver; `build` and `status` are pure.
//! Leader election (`crate::leader`) and `/metrics` (`crate::server`) wrap `run` in `main`.

/// Writes built objects and status with server-side apply.
pub mod apply;
/// Pure builders: validated workspace + settings -> Pod, Service, NetworkPolicy.
pub mod build;
/// The warm pool: unassigned pods kept started for waking workspaces to claim.
pub mod pool;
/// Which namespaces an operator manages.
pub mod scope;
/// Pure status computation and the idle reaper's clock check.
pub mod status;
/// Which watch events start a reconcile; the children's versions between reconciles.
pub mod triggers;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::{PersistentVolumeClaim, Pod, Service},
        networking::v1::NetworkPolicy,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    core::PartialObjectMeta,
    runtime::{
        controller::{Action, Controller},
        events::{Event, EventType, Recorder, Reporter},
        finalizer::{Error as FinalizerError, Event as Finalizer, finalizer},
        reflector, watcher,
    },
};
use tracing::{Span, field, info, instrument, warn};

pub use self::scope::Scope;
use self::{
    build::Settings,
    status::{Outcome, desired_status, idle_left, idle_remaining, pod_outcome, status_changed},
};
use crate::{Error, Result, crd::JarvisWorkspace, metrics::Metrics};

/// Finalizer the operator puts on every workspace, so deletion waits for cleanup.
pub const FINALIZER: &str = "jarvisworkspaces.jarvis.dev/cleanup";

/// How often a quiet workspace is looked at again even without events.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a waking workspace or a terminating pod is looked at again.
const SHORT_RETRY: Duration = Duration::from_secs(5);
/// First and longest back-off after a failed reconcile.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What every reconcile shares: the client, the operator's settings and metrics.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// The operator's settings.
    pub settings: Settings,
    /// Reconcile metrics.
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per workspace (`namespace/name`), for the back-off.
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Publishes Kubernetes Events on phase changes; `None` publishes nothing.
    recorder: Option<Recorder>,
    /// What the children's watches last showed and what the operator last applied.
    pub children: Arc<triggers::ChildVersions>,
}

impl Context {
    /// A context for `client` with `settings`, recording into `metrics`.
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            settings,
            metrics,
            failures: std::sync::Mutex::default(),
            recorder: None,
            children: Arc::default(),
        }
    }

    /// The same context, publishing Events about each workspace's phase changes
    /// (woken, asleep, idle-reaped, failed) through `recorder`.
    pub fn with_recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Publish an Event about `ws`; a failure is logged, never fails the reconcile.
    async fn publish(
        &self,
        ws: &JarvisWorkspace,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = recorder
            .publish(&event, &kube::Resource::object_ref(ws, &()))
            .await
        {
            warn!(workspace.name = %ws.name_any(), %error, "publishing an event failed");
        }
    }

    fn failure_count(&self, key: &str, bump: bool) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if bump {
            let count = failures.entry(key.to_owned()).or_default();
            *count = count.saturating_add(1);
            *count
        } else {
            failures.remove(key);
            0
        }
    }
}

fn key(ws: &JarvisWorkspace) -> String {
    format!("{}/{}", ws.namespace().unwrap_or_default(), ws.name_any())
}

/// Reconcile one workspace: put the finalizer on, then apply or clean up.
#[instrument(skip(ws, ctx), fields(workspace.name = %ws.name_any(), workspace.namespace = field::Empty))]
pub async fn reconcile(ws: Arc<JarvisWorkspace>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.count_and_measure();
    let namespace = ws.namespace().ok_or(Error::MissingNamespace)?;
    Span::current().record("workspace.namespace", namespace.as_str());
    let workspaces = Api::<JarvisWorkspace>::namespaced(ctx.client.clone(), &namespace);
    let key = key(&ws);
    if ws.meta().deletion_timestamp.is_some()
        && ws.finalizers().iter().any(|f| f == FINALIZER)
        && stop_pod(&ws, &ctx).await?
    {
        // Waiting for the kubelet is no failure: the pod's deletion wakes us up.
        ctx.failure_count(&key, false);
        return Ok(Action::requeue(SHORT_RETRY));
    }
    let result = finalizer(&workspaces, FINALIZER, ws, |event| async {
        match event {
            Finalizer::Apply(ws) => apply_workspace(&ws, &ctx).await,
            Finalizer::Cleanup(ws) => cleanup(&ws).await,
        }
    })
    .await;
    let action = match result {
        Ok(action) => action,
        // The workspace went while we looked at an older copy: nothing left to do.
        Err(FinalizerError::RemoveFinalizer(kube::Error::Api(status))) if status.code == 404 => {
            Action::await_change()
        }
        Err(error) => return Err(Error::Finalizer(Box::new(error))),
    };
    ctx.failure_count(&key, false);
    Ok(action)
}

/// Log a failed reconcile and decide when to retry: never for an invalid spec (a
/// spec change triggers the next reconcile), otherwise with exponential back-off.
pub fn error_policy(ws: Arc<JarvisWorkspace>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failure(error);
    if error.is_invalid_spec() {
        info!(workspace.name = %ws.name_any(), error = %error, "workspace spec is invalid; waiting for a change");
        return Action::await_change();
    }
    let failures = ctx.failure_count(&key(&ws), true);
    let delay = backoff(failures);
    warn!(workspace.name = %ws.name_any(), error = %error, failures, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// Exponential back-off: 1 s after the first failure, doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_MIN.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

async fn apply_workspace(ws: &JarvisWorkspace, ctx: &Context) -> Result<Action> {
    let name = ws.name_any();
    let namespace = ws.namespace().unwrap_or_default();
    let now = Timestamp::now();
    let mut valid = match build::validate(ws) {
        Ok(valid) => valid,
        Err(invalid) => {
            let outcome = Outcome::Invalid(invalid.to_string());
            let status = desired_status(ws, &outcome, now);
            if status_changed(ws, &status) {
                apply::patch_status(ctx, &namespace, &name, &status).await?;
                announce(ctx, ws, &outcome).await;
            }
            return Err(Error::InvalidSpec(invalid));
        }
    };
    let mut requeue = RESYNC;
    match idle_remaining(ws, valid.idle_timeout, now) {
        Some(Duration::ZERO) => {
            info!(workspace.name = %name, "workspace idle past its timeout; scaling to 0");
            apply::scale_to_zero(ctx, &namespace, &name).await?;
            ctx.metrics.reaped.inc();
            ctx.publish(
                ws,
                EventType::Normal,
                "IdleReaped",
                "Sleep",
                format!("no activity for {}; scaled to 0", ws.spec.idle_timeout),
            )
            .await;
            valid.replicas = 0;
        }
        Some(left) => requeue = requeue.min(left + Duration::from_secs(1)),
        None => {}
    }
    if let Err(error) = apply::apply_network(ctx, &valid).await {
        return Err(report_refusal(ctx, ws, error, now).await);
    }
    let mut pod_name = build::child_name(&name);
    let outcome = if valid.replicas == 0 {
        apply::delete_pod(ctx, &namespace, &name).await?;
        if uses_pool(ws, ctx) {
            apply::delete_adopted_pods(ctx, &valid).await?;
        }
        Outcome::Sleeping
    } else {
        // A warm pool pod a router claimed for it is its pod; else its own.
        let adopted = if uses_pool(ws, ctx) {
            apply::adopt_claimed_pod(ctx, &valid).await?
        } else {
            None
        };
        let applied = match adopted {
            Some(pod) => {
                pod_name = pod.name_any();
                Some(pod)
            }
            None => match apply::apply_pod(ctx, &valid).await {
                Ok(applied) => applied,
                Err(error) => return Err(report_refusal(ctx, ws, error, now).await),
            },
        };
        match applied {
            Some(pod) => {
                let outcome = pod_outcome(&pod, build::endpoint(&valid, &ctx.settings));
                if matches!(outcome, Outcome::Failed(_)) {
                    // A failed pod never comes back by itself: remove it so the next pass makes a new one.
                    apply::delete_pod_named(ctx, &namespace, pod_name.clone()).await?;
                }
                outcome
            }
            // Replaced because its spec changed: the new pod is on its way.
            None => Outcome::Waking,
        }
    };
    if matches!(outcome, Outcome::Waking | Outcome::Failed(_)) {
        requeue = SHORT_RETRY;
    }
    let mut status = desired_status(ws, &outcome, now);
    if status.replicas == 1 {
        status.pod = Some(pod_name);
        status.image = Some(build::sandbox_image(&valid, &ctx.settings));
    }
    // A workspace this pass makes Ready starts the reaper's clock now; writing the
    // status starts no reconcile of its own (`triggers`), so schedule it here.
    let last_activity = ws.status.as_ref().and_then(|s| s.last_activity.as_ref());
    if let Some(left) = idle_left(
        status.phase,
        valid.replicas,
        last_activity,
        valid.idle_timeout,
        now,
    ) {
        requeue = requeue.min(left + Duration::from_secs(1));
    }
    if status_changed(ws, &status) {
        apply::patch_status(ctx, &namespace, &name, &status).await?;
        let before = ws.status.as_ref().and_then(|s| s.phase);
        if before != status.phase {
            announce(ctx, ws, &outcome).await;
        }
    }
    Ok(Action::requeue(requeue))
}

/// Show an apply the apiserver refused on the workspace: `Ready=False` with reason
/// `ApplyFailed` and the server's message, phase Failed, and a Warning Event (once
/// per new message). Returns the error, so `error_policy` retries with back-off.
async fn report_refusal(
    ctx: &Context,
    ws: &JarvisWorkspace,
    error: Error,
    now: Timestamp,
) -> Error {
    let Error::Apply {
        kind,
        name: child,
        source: kube::Error::Api(refusal),
    } = &error
    else {
        // Not an answer from the server (e.g. it is unreachable): nothing to show.
        return error;
    };
    let outcome = Outcome::Refused(format!(
        "the apiserver refused {kind} {child} ({}): {}",
        refusal.code, refusal.message
    ));
    let status = desired_status(ws, &outcome, now);
    if status_changed(ws, &status) {
        let namespace = ws.namespace().unwrap_or_default();
        if let Err(status_error) =
            apply::patch_status(ctx, &namespace, &ws.name_any(), &status).await
        {
            warn!(workspace.name = %ws.name_any(), error = %status_error, "recording a refused apply failed");
        }
        announce(ctx, ws, &outcome).await;
    }
    error
}

/// Publish the Event for a workspace that just entered the phase of `outcome`.
async fn announce(ctx: &Context, ws: &JarvisWorkspace, outcome: &Outcome) {
    let (type_, reason, action, note) = match outcome {
        Outcome::Ready { endpoint } => (
            EventType::Normal,
            "Ready",
            "Wake",
            format!("sandbox accepts connections at {endpoint}"),
        ),
        Outcome::Waking => (
            EventType::Normal,
            "Waking",
            "Wake",
            "sandbox pod is starting".to_owned(),
        ),
        Outcome::Sleeping => (
            EventType::Normal,
            "Sleeping",
            "Sleep",
            "sandbox pod removed".to_owned(),
        ),
        Outcome::Failed(message) => (EventType::Warning, "Failed", "Reconcile", message.clone()),
        Outcome::Refused(message) => (EventType::Warning, "ApplyFailed", "Apply", message.clone()),
        Outcome::Invalid(message) => (
            EventType::Warning,
            "InvalidSpec",
            "Reconcile",
            message.clone(),
        ),
    };
    ctx.publish(ws, type_, reason, action, note).await;
}

/// Deletion, first half: stop the sandbox (it syncs its files to the router on
/// SIGTERM). Returns whether its pod is still terminating; the finalizer stays
/// until it is gone.
async fn stop_pod(ws: &JarvisWorkspace, ctx: &Context) -> Result<bool> {
    let namespace = ws.namespace().unwrap_or_default();
    let own = apply::delete_pod(ctx, &namespace, &ws.name_any()).await?;
    let adopted = match build::validate(ws) {
        Ok(valid) if uses_pool(ws, ctx) => apply::delete_adopted_pods(ctx, &valid).await?,
        _ => false,
    };
    Ok(own || adopted)
}

/// Whether `ws` may run on a claimed warm pool pod: the pool is on, or its
/// status names a pod that is not its own (adopted before the pool was turned off).
fn uses_pool(ws: &JarvisWorkspace, ctx: &Context) -> bool {
    let own = build::child_name(&ws.name_any());
    ctx.settings.warm_pool > 0
        || ws
            .status
            .as_ref()
            .and_then(|s| s.pod.as_deref())
            .is_some_and(|pod| pod != own)
}

/// Deletion, second half: the pod is gone ([`stop_pod`]), so the finalizer can go;
/// owner references remove the rest.
async fn cleanup(ws: &JarvisWorkspace) -> Result<Action> {
    info!(workspace.name = %ws.name_any(), "workspace cleaned up");
    Ok(Action::await_change())
}

/// Run the controller on the client's default namespace until a shutdown signal;
/// see [`run_in`].
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Result<()> {
    let scope = Scope::Namespaces(vec![client.default_namespace().to_owned()]);
    run_in(client, scope, settings, metrics).await
}

/// Run the controller on the workspaces of `scope` until a shutdown signal: one
/// controller per namespace (`Api::namespaced`, so a namespaced Role suffices), or
/// one over every namespace for [`Scope::All`], and the warm pool's keeper in
/// each of its namespaces ([`Scope::pool_namespaces`]). Fails early, with a hint,
/// when the workspaces cannot be listed (the CRD is not installed, or RBAC
/// forbids it), or the pool has no namespace.
pub async fn run_in(
    client: Client,
    scope: Scope,
    settings: Settings,
    metrics: Arc<Metrics>,
) -> Result<()> {
    let pools = scope
        .pool_namespaces(&settings.warm_pool_namespaces, settings.warm_pool)
        .map_err(Error::PoolNamespaces)?;
    let namespaces: Vec<Option<String>> = match scope {
        Scope::All => vec![None],
        Scope::Namespaces(names) => names.into_iter().map(Some).collect(),
    };
    for namespace in &namespaces {
        let listed = api::<JarvisWorkspace>(&client, namespace.as_deref())
            .list(&ListParams::default().limit(1))
            .await;
        match listed {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Err(Error::ListForbidden {
                    scope: namespace.as_deref().map_or_else(
                        || "every namespace".to_owned(),
                        |n| format!("namespace {n}"),
                    ),
                    source: kube::Error::Api(status),
                });
            }
            Err(error) => return Err(Error::CrdNotQueryable(error)),
        }
    }
    let reporter = Reporter {
        controller: apply::FIELD_MANAGER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(client.clone(), settings, metrics).with_recorder(recorder));
    let controllers = namespaces.iter().map(|namespace| {
        let namespace = namespace.as_deref();
        let owned = || {
            watcher::Config::default().labels(&format!(
                "{}={}",
                build::MANAGED_BY_LABEL,
                build::MANAGED_BY
            ))
        };
        let children = &ctx.children;
        // Only changes that matter start a reconcile (`triggers`): not the
        // operator's own status writes, nor its children appearing or being bound.
        let (store, writer) = reflector::store();
        let workspaces = triggers::workspaces(reflector(
            writer,
            watcher(
                api::<JarvisWorkspace>(&client, namespace),
                watcher::Config::default().any_semantic(),
            ),
        ));
        Controller::for_stream(workspaces, store)
            .owns_stream(triggers::children(
                watcher(api::<Pod>(&client, namespace), owned()),
                children.clone(),
            ))
            .owns_stream(triggers::children(
                watcher(
                    api::<PartialObjectMeta<Service>>(&client, namespace),
                    owned(),
                ),
                children.clone(),
            ))
            .owns_stream(triggers::children(
                watcher(
                    api::<PartialObjectMeta<NetworkPolicy>>(&client, namespace),
                    owned(),
                ),
                children.clone(),
            ))
            .owns_stream(triggers::children(
                watcher(
                    api::<PartialObjectMeta<PersistentVolumeClaim>>(&client, namespace),
                    owned(),
                ),
                children.clone(),
            ))
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(error) = result {
                    warn!(error = %error, "controller stream error");
                }
            })
    });
    let pools = pools
        .into_iter()
        .map(|namespace| tokio::spawn(pool::keep_filled(ctx.clone(), namespace)))
        .collect::<Vec<_>>();
    futures::future::join_all(controllers).await;
    for pool in pools {
        pool.abort();
    }
    Ok(())
}

/// `Api::namespaced`, or `Api::all` without a namespace.
fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests;
