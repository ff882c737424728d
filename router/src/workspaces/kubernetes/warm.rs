//! Warm wake on Kubernetes: the router's half of the warm pool the operator
//! keeps (operator/README.md, "Warm pool").
//!
//! The router that won a workspace's start claims a Ready, unclaimed pool pod
//! for it before it scales the workspace up: a merge patch of the pod's labels
//! (`jarvis.dev/warm: claimed`, the workspace's and the user's labels) with the
//! pod's `resourceVersion` as the precondition, so of two routers claiming one
//! pod exactly one succeeds (the other gets 409 and tries the next pod). The
//! workspace's Service selects the pod from then on. It then hands the pod the
//! workspace token (`POST /v1/claim` with the pod's claim secret, read from its
//! Secret); the sandbox restores the user's files and agent state from the
//! router before it answers. A pod that fails its claim is deleted (it carries
//! the workspace's labels now) and the wake starts a pod as without a pool;
//! an empty pool, or every candidate taken, does the same. Nothing here is an
//! error a user sees.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use operator::controller::build::{
    SANDBOX_PORT_NAME, USER_LABEL, WORKSPACE_LABEL,
    warm::{AVAILABLE, CLAIM_SECRET_KEY, CLAIMED, WARM_LABEL, claim_secret_name},
};
use serde_json::json;
use uuid::Uuid;

use super::FIELD_MANAGER;

/// Longest a pod may take to answer its claim (its restore included).
const CLAIM_TIMEOUT: Duration = Duration::from_secs(60);

/// Claims a warm pool pod for `workspace` of `user` and hands it `token`;
/// the pod's name, or `None` when no pod could be claimed (the caller starts one).
pub(super) async fn claim(
    client: &Client,
    namespace: &str,
    workspace: &str,
    user: Uuid,
    token: &str,
) -> Option<String> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let selector = format!("{WARM_LABEL}={AVAILABLE}");
    let listed = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(listed) => listed.items,
        Err(error) => {
            tracing::warn!(%error, "listing warm pods failed; starting a pod");
            return None;
        }
    };
    let mut ready: Vec<Pod> = listed.into_iter().filter(is_claimable).collect();
    if ready.is_empty() {
        tracing::info!(workspace, "no warm pod ready; starting a pod");
        return None;
    }
    // Routers waking users at once start at different pods.
    let start = (user.as_u128() % ready.len() as u128) as usize;
    ready.rotate_left(start);
    for pod in ready {
        let name = pod.name_any();
        match take(&pods, &pod, workspace, user).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, pod = %name, "claiming a warm pod failed; starting a pod");
                return None;
            }
        }
        match hand_over(client, namespace, &pod, token).await {
            Ok(()) => {
                tracing::info!(workspace, pod = %name, "claimed a warm pod");
                return Some(name);
            }
            Err(error) => {
                tracing::warn!(%error, pod = %name, "a claimed warm pod refused its claim; deleting it");
                if let Err(error) = pods.delete(&name, &DeleteParams::default()).await {
                    tracing::warn!(%error, pod = %name, "deleting a failed warm pod failed");
                }
                return None;
            }
        }
    }
    tracing::info!(workspace, "every warm pod was taken; starting a pod");
    None
}

/// Unclaimed, Ready, with an IP, not going away.
fn is_claimable(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready
        && status.and_then(|s| s.pod_ip.as_ref()).is_some()
        && pod.metadata.deletion_timestamp.is_none()
        && pod.labels().get(WARM_LABEL).map(String::as_str) == Some(AVAILABLE)
}

/// Relabels `pod` as `workspace`'s if no one changed it since it was listed;
/// `false` when someone did (or it is gone).
async fn take(
    pods: &Api<Pod>,
    pod: &Pod,
    workspace: &str,
    user: Uuid,
) -> Result<bool, kube::Error> {
    let patch = json!({
        "metadata": {
            "resourceVersion": pod.resource_version(),
            "labels": {
                WARM_LABEL: CLAIMED,
                WORKSPACE_LABEL: workspace,
                USER_LABEL: user.to_string(),
            },
        },
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match pods
        .patch(&pod.name_any(), &params, &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Why a claimed pod did not take its token.
#[derive(Debug, thiserror::Error)]
enum HandOverError {
    #[error("reading its claim secret: {0}")]
    Secret(#[from] kube::Error),
    #[error("its claim secret or address is missing")]
    Missing,
    #[error("its claim: {0}")]
    Http(#[from] reqwest::Error),
    #[error("its claim was answered {0}")]
    Refused(reqwest::StatusCode),
}

/// `POST /v1/claim` to the pod with its claim secret and the workspace token.
async fn hand_over(
    client: &Client,
    namespace: &str,
    pod: &Pod,
    token: &str,
) -> Result<(), HandOverError> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = secrets.get(&claim_secret_name(&pod.name_any())).await?;
    let secret = secret
        .data
        .and_then(|mut data| data.remove(CLAIM_SECRET_KEY))
        .and_then(|bytes| String::from_utf8(bytes.0).ok())
        .ok_or(HandOverError::Missing)?;
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    let port = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(SANDBOX_PORT_NAME))
        .map(|p| p.container_port);
    let (Some(ip), Some(port)) = (ip, port) else {
        return Err(HandOverError::Missing);
    };
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    let response = reqwest::Client::new()
        .post(format!("http://{host}:{port}/v1/claim"))
        .bearer_auth(secret)
        .json(&json!({ "token": token }))
        .timeout(CLAIM_TIMEOUT)
        .send()
        .await?;
    if response.status() == reqwest::StatusCode::NO_CONTENT {
        Ok(())
    } else {
        Err(HandOverError::Refused(response.status()))
    }
}
