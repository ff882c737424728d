//! Pure builders: a validated workspace plus the operator's [`Settings`] in, the
//! Kubernetes objects that run it out. Nothing here talks to the apiserver, so every
//! object the operator applies can be asserted field by field in unit tests.
//!
//! Owns child names, labels and owner references. Applying the objects and writing
//! status belong to the controller's I/O steps.

mod network;
mod pod;
mod storage;
mod validate;
pub mod warm;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::{
    api::resource::Quantity,
    apis::meta::v1::{ObjectMeta, OwnerReference},
};

use crate::crd::{ResourceAmounts, WorkspaceResources};

pub use network::{build_network_policy, build_service};
pub use pod::build_pod;
pub use storage::build_pvc;
pub use validate::{MIN_IDLE_TIMEOUT, ValidWorkspace, ValidationError, validate};

/// Label naming the operator as the manager of an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on every object this operator makes.
pub const MANAGED_BY: &str = "jarvis-operator";
/// Label naming what an object is part of; sandbox objects carry [`SANDBOX_APP`].
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Value of [`NAME_LABEL`] on sandbox objects.
pub const SANDBOX_APP: &str = "jarvis-sandbox";
/// Label holding the owning workspace's name.
pub const WORKSPACE_LABEL: &str = "jarvis.dev/workspace";
/// Label holding the owning user's id (a valid label value, enforced by the CRD).
pub const USER_LABEL: &str = "jarvis.dev/user";
/// Name of the sandbox container and of its port.
pub const SANDBOX_CONTAINER: &str = "sandbox";
/// Name of the sandbox's WebSocket port, on the container and the Service.
pub const SANDBOX_PORT_NAME: &str = "ws";
/// Where the workspace volume is mounted; the agent's working directory.
pub const WORKSPACE_DIR: &str = "/workspace";
/// Environment variable carrying the workspace token into the sandbox.
pub const TOKEN_ENV: &str = "JARVIS_WORKSPACE_TOKEN";

/// What the operator knows about its surroundings, parsed once at startup.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Sandbox image for workspaces whose spec names none.
    pub default_image: String,
    /// Path of the Claude Code CLI inside the sandbox image.
    pub claude_bin: String,
    /// Namespace the router runs in.
    pub router_namespace: String,
    /// Name of the router's Service (the sandbox's gateway host).
    pub router_service: String,
    /// Port of the router's Service that serves `/v1/…` (its sandbox listener,
    /// `JARVIS_SANDBOX_LISTEN`; the public port answers 404 there).
    pub router_port: u16,
    /// Port of the router's Service where its egress proxy listens
    /// (`JARVIS_EGRESS_LISTEN`); `None`: sandboxes get no proxy, so no way out.
    pub router_egress_port: Option<u16>,
    /// Labels of the router pods; network policies allow traffic to and from them only.
    pub router_pod_labels: BTreeMap<String, String>,
    /// Port the sandbox listens on for the router's WebSocket.
    pub sandbox_port: u16,
    /// RuntimeClass for sandbox pods (e.g. `gvisor`, `kata`); `None` for the default.
    pub runtime_class: Option<String>,
    /// Key of the workspace token inside each workspace's token Secret
    /// (named by [`token_secret_name`]).
    pub token_secret_key: String,
    /// Uid and gid the sandbox runs as; never 0.
    pub run_as_user: i64,
    /// Requests and limits for values the spec leaves unset.
    pub default_resources: WorkspaceResources,
    /// Size of the workspace volume when the spec gives none.
    pub default_storage_size: Quantity,
    /// Pods of the warm pool kept started and unclaimed per namespace ([`warm`]);
    /// 0: no pool, every wake starts a pod.
    pub warm_pool: usize,
    /// Namespaces the warm pool is kept in; empty: each watched namespace (none
    /// with `*`, which needs them named: [`Scope::pool_namespaces`]).
    ///
    /// [`Scope::pool_namespaces`]: super::Scope::pool_namespaces
    pub warm_pool_namespaces: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_image: "jarvis-sandbox:latest".to_owned(),
            claude_bin: "/usr/local/bin/claude".to_owned(),
            router_namespace: "jarvis".to_owned(),
            router_service: "jarvis-router".to_owned(),
            router_port: 8081,
            router_egress_port: Some(8082),
            router_pod_labels: BTreeMap::from([
                (NAME_LABEL.to_owned(), "jarvis".to_owned()),
                (
                    "app.kubernetes.io/component".to_owned(),
                    "router".to_owned(),
                ),
            ]),
            sandbox_port: 7070,
            runtime_class: None,
            token_secret_key: "token".to_owned(),
            run_as_user: 1000,
            default_resources: WorkspaceResources {
                requests: Some(ResourceAmounts {
                    cpu: Some(Quantity("100m".to_owned())),
                    memory: Some(Quantity("256Mi".to_owned())),
                }),
                limits: Some(ResourceAmounts {
                    cpu: None,
                    memory: Some(Quantity("1Gi".to_owned())),
                }),
            },
            default_storage_size: Quantity("1Gi".to_owned()),
            warm_pool: 0,
            warm_pool_namespaces: Vec::new(),
        }
    }
}

impl Settings {
    /// URL of the router's model gateway as the sandbox sees it.
    pub fn gateway_url(&self) -> String {
        format!(
            "http://{}.{}.svc:{}",
            self.router_service, self.router_namespace, self.router_port
        )
    }

    /// `host:port` of the router's egress proxy as the sandbox sees it.
    pub fn egress_proxy(&self) -> Option<String> {
        self.router_egress_port.map(|port| {
            format!(
                "{}.{}.svc:{port}",
                self.router_service, self.router_namespace
            )
        })
    }
}

/// Name of the Pod, Service and NetworkPolicy of workspace `name`.
pub fn child_name(workspace: &str) -> String {
    format!("jw-{workspace}")
}

/// Image the sandbox container runs: the spec's, or the settings' default.
pub fn sandbox_image(ws: &ValidWorkspace, settings: &Settings) -> String {
    ws.image
        .clone()
        .unwrap_or_else(|| settings.default_image.clone())
}

/// Name of the PersistentVolumeClaim of a persistent workspace.
pub fn pvc_name(workspace: &str) -> String {
    format!("jw-{workspace}-workspace")
}

/// Name of the Secret holding workspace `name`'s token. The router creates it
/// (owned by the workspace) before waking the workspace; the operator never reads it,
/// the kubelet resolves it into the pod's environment.
pub fn token_secret_name(workspace: &str) -> String {
    format!("jw-{workspace}-token")
}

/// `host:port` of a workspace's Service, what `status.endpoint` reports.
pub fn endpoint(ws: &ValidWorkspace, settings: &Settings) -> String {
    format!(
        "{}.{}.svc:{}",
        child_name(&ws.name),
        ws.namespace,
        settings.sandbox_port
    )
}

/// Labels selecting a workspace's sandbox pod.
pub fn selector_labels(ws: &ValidWorkspace) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), SANDBOX_APP.to_owned()),
        (WORKSPACE_LABEL.to_owned(), ws.name.clone()),
    ])
}

/// Labels on every object made for a workspace: the selector labels plus the
/// manager and the user.
pub fn labels(ws: &ValidWorkspace) -> BTreeMap<String, String> {
    let mut labels = selector_labels(ws);
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    labels.insert(USER_LABEL.to_owned(), ws.user.clone());
    labels
}

/// Metadata of a child object: name, namespace, labels and the controller owner
/// reference that lets the garbage collector delete it with the workspace.
fn child_meta(ws: &ValidWorkspace, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(ws.namespace.clone()),
        labels: Some(labels(ws)),
        owner_references: Some(vec![ws.owner_ref.clone()]),
        ..ObjectMeta::default()
    }
}

/// The controller owner reference of a workspace, for callers that build their own
/// children (the router's token Secret).
pub fn owner_reference(ws: &ValidWorkspace) -> OwnerReference {
    ws.owner_ref.clone()
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Workspace fixtures for the builder tests.

    pub use super::validate;
    use super::*;
    use crate::crd::JarvisWorkspace;

    /// A value from YAML, to compare with [`json`] of a built object.
    pub fn yaml(text: &str) -> serde_json::Value {
        serde_yaml::from_str(text).expect("expected-value YAML parses")
    }

    /// A built object as JSON, the shape the apiserver receives.
    pub fn json<T: serde::Serialize>(object: &T) -> serde_json::Value {
        serde_json::to_value(object).expect("object serializes")
    }

    /// A workspace parsed from YAML, as the apiserver would hand it over.
    pub fn workspace(yaml: &str) -> JarvisWorkspace {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    /// Alice's workspace: minimal spec, everything else defaulted.
    pub const ALICE: &str = r#"
apiVersion: jarvis.dev/v1alpha1
kind: JarvisWorkspace
metadata:
  name: alice
  namespace: jarvis
  uid: 6f1c2f0e-0000-4000-8000-00000000a11c
  generation: 3
spec:
  user: 0b6e4c1a-2f7d-4e59-9a43-5c1d2e3f4a5b
"#;

    /// `ALICE` validated.
    pub fn alice() -> ValidWorkspace {
        validate(&workspace(ALICE)).expect("alice is valid")
    }

    /// Settings as a test cluster would have them, with a gVisor runtime class.
    pub fn settings_with_runtime_class() -> Settings {
        Settings {
            runtime_class: Some("gvisor".to_owned()),
            ..Settings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn labels_name_manager_workspace_and_user() {
        let labels = labels(&alice());
        assert_eq!(labels[MANAGED_BY_LABEL], "jarvis-operator");
        assert_eq!(labels[WORKSPACE_LABEL], "alice");
        assert_eq!(labels[USER_LABEL], "0b6e4c1a-2f7d-4e59-9a43-5c1d2e3f4a5b");
        assert_eq!(labels[NAME_LABEL], "jarvis-sandbox");
    }

    #[test]
    fn endpoint_is_the_service_dns_name_and_sandbox_port() {
        assert_eq!(
            endpoint(&alice(), &Settings::default()),
            "jw-alice.jarvis.svc:7070"
        );
    }

    #[test]
    fn gateway_url_points_at_the_router_service() {
        assert_eq!(
            Settings::default().gateway_url(),
            "http://jarvis-router.jarvis.svc:8081"
        );
    }

    #[test]
    fn egress_proxy_is_the_router_service_on_its_egress_port() {
        assert_eq!(
            Settings::default().egress_proxy().as_deref(),
            Some("jarvis-router.jarvis.svc:8082")
        );
        let none = Settings {
            router_egress_port: None,
            ..Settings::default()
        };
        assert_eq!(none.egress_proxy(), None);
    }
}
