//! The warm pool's objects: pods started before anyone needs them, each the
//! pod an ephemeral workspace would get (same image, resources, volumes,
//! security) but unassigned, with a claim Secret the router presents to claim it.
//!
//! A warm pod carries [`WARM_LABEL`]` = `[`AVAILABLE`] and, as its workspace
//! label, [`POOL_WORKSPACE`] (so the pool's NetworkPolicy, built like a
//! workspace's, confines it). Its sandbox starts with `--claim-secret` (from
//! its Secret [`claim_secret_name`], key [`CLAIM_SECRET_KEY`]) and a spare CLI;
//! it has no workspace token until the claim. A router claims it by relabelling
//! it (a compare-and-swap on its `resourceVersion`): [`WARM_LABEL`]` = `[`CLAIMED`],
//! the workspace and user labels of the waking workspace, whose Service then
//! selects it; the operator adopts it ([`is_claimed_by`]).

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        core::v1::{EnvVar, EnvVarSource, Pod, Secret, SecretKeySelector},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

use super::{
    MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL, SANDBOX_APP, Settings, TOKEN_ENV, USER_LABEL,
    ValidWorkspace, WORKSPACE_LABEL, build_network_policy, build_pod,
};
use crate::crd::{WorkspaceResources, WorkspaceStorage};

/// Label of a warm pool pod: [`AVAILABLE`] or [`CLAIMED`].
pub const WARM_LABEL: &str = "jarvis.dev/warm";
/// [`WARM_LABEL`] of a pool pod no one has claimed.
pub const AVAILABLE: &str = "available";
/// [`WARM_LABEL`] of a pool pod a router claimed for a workspace.
pub const CLAIMED: &str = "claimed";
/// The workspace label of unclaimed pool pods (a name no router-made workspace
/// has: theirs are `u-<uuid>`).
pub const POOL_WORKSPACE: &str = "warm-pool";
/// Key of the claim secret in a pool pod's Secret.
pub const CLAIM_SECRET_KEY: &str = "secret";
/// Environment variable carrying the claim secret into the sandbox.
pub const CLAIM_SECRET_ENV: &str = "JARVIS_CLAIM_SECRET";
/// Environment variable that keeps a spare CLI started.
const SPARE_AGENT_ENV: &str = "JARVIS_SPARE_AGENT";
/// Prefix of pool pods' names.
pub const POOL_POD_PREFIX: &str = "jw-warm-";

/// Name of the Secret holding pool pod `pod`'s claim secret.
pub fn claim_secret_name(pod: &str) -> String {
    format!("{pod}-claim")
}

/// The stand-in workspace pool pods are built for: an ephemeral workspace with
/// the settings' defaults.
fn pool_workspace(namespace: &str) -> ValidWorkspace {
    ValidWorkspace {
        name: POOL_WORKSPACE.to_owned(),
        namespace: namespace.to_owned(),
        owner_ref: OwnerReference::default(),
        user: String::new(),
        replicas: 1,
        image: None,
        resources: WorkspaceResources::default(),
        idle_timeout: super::MIN_IDLE_TIMEOUT,
        storage: WorkspaceStorage::default(),
    }
}

/// Labels of an unclaimed pool pod.
pub fn pool_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), SANDBOX_APP.to_owned()),
        (WORKSPACE_LABEL.to_owned(), POOL_WORKSPACE.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (WARM_LABEL.to_owned(), AVAILABLE.to_owned()),
    ])
}

/// The pool pod `name` in `namespace`: an ephemeral workspace's pod, unassigned.
pub fn build_warm_pod(name: &str, namespace: &str, settings: &Settings) -> Pod {
    let mut pod = build_pod(&pool_workspace(namespace), settings);
    pod.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(pool_labels()),
        ..ObjectMeta::default()
    };
    let containers = pod
        .spec
        .iter_mut()
        .flat_map(|spec| spec.containers.iter_mut());
    for container in containers {
        let env = container.env.get_or_insert_with(Vec::new);
        env.retain(|var| var.name != TOKEN_ENV);
        env.insert(
            0,
            EnvVar {
                name: CLAIM_SECRET_ENV.to_owned(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: claim_secret_name(name),
                        key: CLAIM_SECRET_KEY.to_owned(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
        );
        env.push(EnvVar {
            name: SPARE_AGENT_ENV.to_owned(),
            value: Some("true".to_owned()),
            ..EnvVar::default()
        });
    }
    pod
}

/// The claim Secret of pool pod `pod` (owned by it: deleted with it), holding `secret`.
pub fn build_claim_secret(pod: &Pod, secret: &str) -> Secret {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let owner = OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Pod".to_owned(),
        name: name.clone(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(claim_secret_name(&name)),
            namespace: pod.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            CLAIM_SECRET_KEY.to_owned(),
            ByteString(secret.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// The NetworkPolicy of unclaimed pool pods: a workspace's (traffic with the
/// router only), owned by no workspace.
pub fn build_pool_network_policy(namespace: &str, settings: &Settings) -> NetworkPolicy {
    let mut policy = build_network_policy(&pool_workspace(namespace), settings);
    policy.metadata.owner_references = None;
    if let Some(labels) = policy.metadata.labels.as_mut() {
        labels.remove(USER_LABEL);
    }
    policy
}

/// Whether `pod` is a pool pod a router claimed for workspace `workspace`.
pub fn is_claimed_by(pod: &Pod, workspace: &str) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    label(WARM_LABEL) == Some(CLAIMED)
        && label(WORKSPACE_LABEL) == Some(workspace)
        && pod.metadata.deletion_timestamp.is_none()
}

/// The owner references that make a claimed pool pod `ws`'s, when it has none yet.
pub fn adoption(pod: &Pod, ws: &ValidWorkspace) -> Option<Vec<OwnerReference>> {
    let owned = pod
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.uid == ws.owner_ref.uid));
    (!owned).then(|| vec![ws.owner_ref.clone()])
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn env(pod: &serde_json::Value) -> Vec<serde_json::Value> {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn a_pool_pod_is_an_ephemeral_workspace_pod_with_a_claim_secret_instead_of_a_token() {
        let settings = Settings::default();
        let pod = json(&build_warm_pod("jw-warm-1", "jarvis", &settings));
        let workspace = json(&build_pod(&alice(), &settings));
        // Same container, volumes and security as a workspace's.
        for field in ["securityContext", "volumes", "automountServiceAccountToken"] {
            assert_eq!(pod["spec"][field], workspace["spec"][field], "{field}");
        }
        for field in ["image", "args", "securityContext", "resources", "ports"] {
            assert_eq!(
                pod["spec"]["containers"][0][field], workspace["spec"]["containers"][0][field],
                "{field}"
            );
        }
        let env = env(&pod);
        assert!(env.iter().all(|e| e["name"] != TOKEN_ENV), "no token");
        let claim = env
            .iter()
            .find(|e| e["name"] == CLAIM_SECRET_ENV)
            .expect("the claim secret");
        assert_eq!(
            claim["valueFrom"]["secretKeyRef"]["name"],
            "jw-warm-1-claim"
        );
        assert!(
            env.iter()
                .any(|e| e["name"] == "JARVIS_SYNC" && e["value"] == "router")
        );
        assert!(
            env.iter()
                .any(|e| e["name"] == SPARE_AGENT_ENV && e["value"] == "true")
        );
        assert_eq!(pod["metadata"]["labels"][WARM_LABEL], AVAILABLE);
        assert_eq!(pod["metadata"]["labels"][WORKSPACE_LABEL], POOL_WORKSPACE);
        assert!(pod["metadata"]["ownerReferences"].is_null());
        assert!(pod["metadata"]["labels"][USER_LABEL].is_null());
    }

    #[test]
    fn the_pool_policy_confines_pool_pods_like_a_workspace_and_has_no_owner() {
        let settings = Settings::default();
        let policy = json(&build_pool_network_policy("jarvis", &settings));
        let workspace = json(&build_network_policy(&alice(), &settings));
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"][WORKSPACE_LABEL],
            POOL_WORKSPACE
        );
        assert_eq!(policy["spec"]["egress"], workspace["spec"]["egress"]);
        assert_eq!(policy["spec"]["ingress"], workspace["spec"]["ingress"]);
        assert!(policy["metadata"]["ownerReferences"].is_null());
    }

    #[test]
    fn a_claimed_pod_is_adopted_by_its_workspace_only() {
        let settings = Settings::default();
        let mut pod = build_warm_pod("jw-warm-1", "jarvis", &settings);
        let alice = alice();
        assert!(!is_claimed_by(&pod, &alice.name), "available, not claimed");
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(WARM_LABEL.to_owned(), CLAIMED.to_owned());
        labels.insert(WORKSPACE_LABEL.to_owned(), alice.name.clone());
        assert!(is_claimed_by(&pod, &alice.name));
        assert!(!is_claimed_by(&pod, "bob"));
        assert_eq!(adoption(&pod, &alice), Some(vec![alice.owner_ref.clone()]));
        pod.metadata.owner_references = Some(vec![alice.owner_ref.clone()]);
        assert_eq!(adoption(&pod, &alice), None, "adopted once");
    }

    #[test]
    fn the_claim_secret_is_owned_by_its_pod() {
        let mut pod = build_warm_pod("jw-warm-1", "jarvis", &Settings::default());
        pod.metadata.uid = Some("pod-uid".to_owned());
        let secret = json(&build_claim_secret(&pod, "s3cret"));
        assert_eq!(secret["metadata"]["name"], "jw-warm-1-claim");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "pod-uid");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Pod");
    }
}
