//! The apply step: writes what `build` made and what `status` decided, with
//! server-side apply under [`FIELD_MANAGER`]. The only module besides the driver that
//! calls the apiserver.

use k8s_openapi::api::{
    core::v1::{PersistentVolumeClaim, Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Resource,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{
    Context,
    build::{self, ValidWorkspace},
};
use crate::{
    Error, Result,
    crd::{JarvisWorkspace, JarvisWorkspaceStatus},
};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "jarvis-operator";

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Server-side apply one child object, returning what the apiserver stored.
async fn apply<K>(api: &Api<K>, object: &K) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(|source| Error::Apply {
            kind: K::kind(&()).into_owned(),
            name,
            source,
        })
}

/// Server-side apply a child the operator need not read back, unless the child is
/// exactly what the operator last applied ([`ChildVersions::unchanged`]): then the
/// apply would store nothing, and is not sent.
///
/// [`ChildVersions::unchanged`]: super::triggers::ChildVersions::unchanged
async fn apply_unless_unchanged<K>(ctx: &Context, api: &Api<K>, object: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let body = serde_json::to_vec(object).unwrap_or_default();
    if ctx.children.unchanged(object, &body) {
        return Ok(());
    }
    let stored = apply(api, object).await?;
    ctx.children
        .applied(object, &body, stored.meta().resource_version.as_deref());
    Ok(())
}

/// Apply the NetworkPolicy, Service and (for persistent workspaces) the claim: the
/// objects a workspace keeps while it sleeps. The policy goes first so a pod never
/// runs unconfined.
pub async fn apply_network(ctx: &Context, ws: &ValidWorkspace) -> Result<()> {
    let client = ctx.client.clone();
    let policy = build::build_network_policy(ws, &ctx.settings);
    apply_unless_unchanged(
        ctx,
        &Api::<NetworkPolicy>::namespaced(client.clone(), &ws.namespace),
        &policy,
    )
    .await?;
    let service = build::build_service(ws, &ctx.settings);
    apply_unless_unchanged(
        ctx,
        &Api::<Service>::namespaced(client.clone(), &ws.namespace),
        &service,
    )
    .await?;
    if let Some(pvc) = build::build_pvc(ws, &ctx.settings) {
        apply_unless_unchanged(
            ctx,
            &Api::<PersistentVolumeClaim>::namespaced(client, &ws.namespace),
            &pvc,
        )
        .await?;
    }
    Ok(())
}

/// Apply the NetworkPolicy of the warm pool's unclaimed pods in `namespace`.
pub async fn apply_pool_network(ctx: &Context, namespace: &str) -> Result<()> {
    let policy = build::warm::build_pool_network_policy(namespace, &ctx.settings);
    apply_unless_unchanged(
        ctx,
        &Api::<NetworkPolicy>::namespaced(ctx.client.clone(), namespace),
        &policy,
    )
    .await
}

/// The warm pool pods a router claimed for workspace `name` (labels
/// [`build::warm::CLAIMED`] and the workspace's), not being deleted.
async fn claimed_pods(ctx: &Context, namespace: &str, name: &str) -> Result<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let selector = format!(
        "{}={},{}={name}",
        build::warm::WARM_LABEL,
        build::warm::CLAIMED,
        build::WORKSPACE_LABEL
    );
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Apply {
            kind: "Pod".to_owned(),
            name: build::child_name(name),
            source,
        })?;
    Ok(listed
        .items
        .into_iter()
        .filter(|pod| build::warm::is_claimed_by(pod, name))
        .collect())
}

/// The warm pool pod a router claimed for `ws`, made the workspace's (its
/// controller owner reference: deleted with it, and its changes reconcile it);
/// `None` when there is none.
pub async fn adopt_claimed_pod(ctx: &Context, ws: &ValidWorkspace) -> Result<Option<Pod>> {
    let Some(pod) = claimed_pods(ctx, &ws.namespace, &ws.name)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let Some(owners) = build::warm::adoption(&pod, ws) else {
        return Ok(Some(pod));
    };
    let name = pod.meta().name.clone().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ws.namespace);
    let patch = Patch::Merge(json!({ "metadata": { "ownerReferences": owners } }));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let adopted = pods
        .patch(&name, &params, &patch)
        .await
        .map_err(|source| Error::Apply {
            kind: "Pod".to_owned(),
            name: name.clone(),
            source,
        })?;
    tracing::info!(workspace.name = %ws.name, pod = %name, "adopted a claimed warm pod");
    Ok(Some(adopted))
}

/// Delete the warm pool pods `ws` adopted; whether one is still there (its
/// deletion under way). A pod claimed for it but not adopted yet is left
/// alone: its router is waking the workspace (the pool removes it if that
/// router died).
pub async fn delete_adopted_pods(ctx: &Context, ws: &ValidWorkspace) -> Result<bool> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ws.namespace);
    let mut remaining = false;
    let adopted = claimed_pods(ctx, &ws.namespace, &ws.name)
        .await?
        .into_iter()
        .filter(|pod| build::warm::adoption(pod, ws).is_none());
    for pod in adopted {
        let pod_name = pod.meta().name.clone().unwrap_or_default();
        match pods.delete(&pod_name, &DeleteParams::default()).await {
            Ok(either) => remaining |= either.left().is_some_and(|pod| still_terminating(&pod)),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Delete {
                    kind: "Pod".to_owned(),
                    name: pod_name,
                    source,
                });
            }
        }
    }
    Ok(remaining)
}

/// Apply the sandbox pod and return it as stored (with its status), or, when the
/// apply would change nothing ([`ChildVersions::unchanged_pod`]), return the pod
/// as its watch last showed it without sending the apply. Most of a pod's
/// spec is immutable: when the apiserver refuses the apply as invalid (422) while a
/// pod exists (the workspace's spec changed under it), the pod is deleted and `None`
/// returned; the next reconcile creates it afresh. A refusal with no pod in the way
/// is the server's verdict on the pod itself and is returned as an error.
///
/// [`ChildVersions::unchanged_pod`]: super::triggers::ChildVersions::unchanged_pod
pub async fn apply_pod(ctx: &Context, ws: &ValidWorkspace) -> Result<Option<Pod>> {
    let pod = build::build_pod(ws, &ctx.settings);
    let body = serde_json::to_vec(&pod).unwrap_or_default();
    if let Some(seen) = ctx.children.unchanged_pod(&pod, &body) {
        return Ok(Some(seen));
    }
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ws.namespace);
    match apply(&pods, &pod).await {
        Ok(stored) => {
            ctx.children.applied_pod(&pod, &body, &stored);
            Ok(Some(stored))
        }
        Err(Error::Apply {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 422 && pod_exists(&pods, &pod).await => {
            tracing::info!(workspace.name = %ws.name, "pod spec changed; replacing the pod");
            delete_pod(ctx, &ws.namespace, &ws.name).await?;
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Whether the pod named like `pod` exists (a failed look-up counts as yes, so a
/// refusal is never mistaken for a missing pod's).
async fn pod_exists(pods: &Api<Pod>, pod: &Pod) -> bool {
    let name = pod.meta().name.clone().unwrap_or_default();
    !matches!(pods.get_opt(&name).await, Ok(None))
}

/// Delete the sandbox pod of workspace `name`. Returns whether a pod still exists
/// (its deletion is under way); a pod that is already gone is not an error.
pub async fn delete_pod(ctx: &Context, namespace: &str, name: &str) -> Result<bool> {
    delete_pod_named(ctx, namespace, build::child_name(name)).await
}

/// Delete the pod `pod_name`, as [`delete_pod`] does.
pub async fn delete_pod_named(ctx: &Context, namespace: &str, pod_name: String) -> Result<bool> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    match pods.delete(&pod_name, &DeleteParams::default()).await {
        Ok(either) => Ok(either.left().is_some_and(|pod| still_terminating(&pod))),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(Error::Delete {
            kind: "Pod".to_owned(),
            name: pod_name,
            source,
        }),
    }
}

/// Whether a pod the apiserver answered a DELETE with is still there. A real
/// apiserver answers 200 with the pod's body both when the pod now waits for its
/// kubelet (grace period > 0) and when it was removed at once (a pod never
/// scheduled to a node: grace period 0, no finalizers).
pub fn still_terminating(pod: &Pod) -> bool {
    let meta = pod.meta();
    let removed_at_once = meta.deletion_grace_period_seconds == Some(0)
        && meta.finalizers.as_ref().is_none_or(Vec::is_empty);
    !removed_at_once
}

/// Scale a workspace to 0 through its scale subresource, as `kubectl scale` does.
pub async fn scale_to_zero(ctx: &Context, namespace: &str, name: &str) -> Result<()> {
    let workspaces = Api::<JarvisWorkspace>::namespaced(ctx.client.clone(), namespace);
    let patch = Patch::Merge(json!({ "spec": { "replicas": 0 } }));
    workspaces
        .patch_scale(name, &PatchParams::default(), &patch)
        .await
        .map_err(|source| Error::Scale {
            name: name.to_owned(),
            source,
        })?;
    Ok(())
}

/// Server-side apply the operator's status fields.
pub async fn patch_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &JarvisWorkspaceStatus,
) -> Result<()> {
    let workspaces = Api::<JarvisWorkspace>::namespaced(ctx.client.clone(), namespace);
    let patch = Patch::Apply(json!({
        "apiVersion": JarvisWorkspace::api_version(&()),
        "kind": JarvisWorkspace::kind(&()),
        "status": status,
    }));
    workspaces
        .patch_status(name, &apply_params(), &patch)
        .await
        .map_err(|source| Error::Status {
            name: name.to_owned(),
            source,
        })?;
    Ok(())
}
