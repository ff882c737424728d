//! The sandbox Pod.
//!
//! Security posture, all set here: non-root uid/gid, read-only root filesystem with
//! writable volumes only at `/workspace`, `/tmp` and `/state`, no privilege
//! escalation, every capability dropped, seccomp `RuntimeDefault`, no service-account
//! token, no service-link environment, and the workspace token as the only secret,
//! read from a Secret by the kubelet. The sandbox syncs its volumes through the
//! router itself (`JARVIS_SYNC=router`), so a pod scaled to zero loses nothing.

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
        PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
        ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, TCPSocketAction,
        Volume, VolumeMount,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};

use super::{
    SANDBOX_CONTAINER, SANDBOX_PORT_NAME, Settings, TOKEN_ENV, ValidWorkspace, WORKSPACE_DIR,
    child_meta, child_name, pvc_name, storage::workspace_size, token_secret_name,
};
use crate::crd::ResourceAmounts;

/// The sandbox's state directory: the CLI's HOME (transcripts) and per-conversation
/// state, synced by the router like `/workspace`.
const STATE_DIR: &str = "/state";
/// Who syncs the sandbox's volumes (`router`: the sandbox itself, through the router).
const SYNC_ENV: &str = "JARVIS_SYNC";
/// Size limit of the `/tmp` and state volumes.
const SCRATCH_SIZE: &str = "1Gi";

/// The sandbox Pod of a workspace.
pub fn build_pod(ws: &ValidWorkspace, settings: &Settings) -> Pod {
    let uid = settings.run_as_user;
    Pod {
        metadata: child_meta(ws, child_name(&ws.name)),
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            restart_policy: Some("Always".to_owned()),
            runtime_class_name: settings.runtime_class.clone(),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(uid),
                run_as_group: Some(uid),
                fs_group: Some(uid),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..PodSecurityContext::default()
            }),
            containers: vec![sandbox_container(ws, settings)],
            volumes: Some(volumes(ws, settings)),
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn sandbox_container(ws: &ValidWorkspace, settings: &Settings) -> Container {
    let port = i32::from(settings.sandbox_port);
    Container {
        name: SANDBOX_CONTAINER.to_owned(),
        image: Some(super::sandbox_image(ws, settings)),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec!["sandbox".to_owned()]),
        args: Some(sandbox_args(settings)),
        working_dir: Some(WORKSPACE_DIR.to_owned()),
        env: Some(vec![
            EnvVar {
                name: TOKEN_ENV.to_owned(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: token_secret_name(&ws.name),
                        key: settings.token_secret_key.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            // The router cannot reach a pod's volumes: the sandbox restores them
            // through it on start and pushes changes after turns and on SIGTERM.
            // Also with a persistent workspace: `/state` (transcripts) is always
            // an emptyDir, and a filled workspace is not overwritten on wake.
            EnvVar {
                name: SYNC_ENV.to_owned(),
                value: Some("router".to_owned()),
                ..EnvVar::default()
            },
        ]),
        ports: Some(vec![ContainerPort {
            name: Some(SANDBOX_PORT_NAME.to_owned()),
            container_port: port,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(SANDBOX_PORT_NAME.to_owned()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(2),
            ..Probe::default()
        }),
        resources: Some(resources(ws, settings)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(settings.run_as_user),
            run_as_group: Some(settings.run_as_user),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("workspace", WORKSPACE_DIR),
            mount("tmp", "/tmp"),
            mount("state", STATE_DIR),
        ]),
        ..Container::default()
    }
}

/// The sandbox's arguments: where it listens, the router's gateway and, when
/// the router has one, its egress proxy (the pod's only way to the internet).
fn sandbox_args(settings: &Settings) -> Vec<String> {
    let mut args = vec![
        "--listen".to_owned(),
        format!("0.0.0.0:{}", settings.sandbox_port),
        "--gateway-url".to_owned(),
        settings.gateway_url(),
    ];
    if let Some(proxy) = settings.egress_proxy() {
        args.extend(["--egress-proxy".to_owned(), proxy]);
    }
    args.extend([
        "--workspace-dir".to_owned(),
        WORKSPACE_DIR.to_owned(),
        "--state-dir".to_owned(),
        STATE_DIR.to_owned(),
        "--claude-bin".to_owned(),
        settings.claude_bin.clone(),
    ]);
    args
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

fn volumes(ws: &ValidWorkspace, settings: &Settings) -> Vec<Volume> {
    let workspace = if ws.storage.persistent {
        Volume {
            name: "workspace".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc_name(&ws.name),
                read_only: Some(false),
            }),
            ..Volume::default()
        }
    } else {
        empty_dir("workspace", workspace_size(ws, settings))
    };
    let scratch = Quantity(SCRATCH_SIZE.to_owned());
    vec![
        workspace,
        empty_dir("tmp", scratch.clone()),
        empty_dir("state", scratch),
    ]
}

fn empty_dir(name: &str, size_limit: Quantity) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(size_limit),
        }),
        ..Volume::default()
    }
}

/// The spec's requests and limits laid over the settings' defaults, key by key.
fn resources(ws: &ValidWorkspace, settings: &Settings) -> ResourceRequirements {
    let merge = |default: &Option<ResourceAmounts>, spec: &Option<ResourceAmounts>| {
        let mut list = default
            .as_ref()
            .map(ResourceAmounts::to_resource_list)
            .unwrap_or_default();
        if let Some(spec) = spec {
            list.extend(spec.to_resource_list());
        }
        (!list.is_empty()).then_some(list)
    };
    let defaults = &settings.default_resources;
    ResourceRequirements {
        requests: merge(&defaults.requests, &ws.resources.requests),
        limits: merge(&defaults.limits, &ws.resources.limits),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn sandbox_container_runs_restricted() {
        let pod = json(&build_pod(&alice(), &Settings::default()));
        assert_eq!(
            pod["spec"]["containers"][0]["securityContext"],
            yaml(
                r#"
                allowPrivilegeEscalation: false
                capabilities: { drop: [ALL] }
                privileged: false
                readOnlyRootFilesystem: true
                runAsGroup: 1000
                runAsNonRoot: true
                runAsUser: 1000
                seccompProfile: { type: RuntimeDefault }
                "#
            )
        );
        assert_eq!(
            pod["spec"]["securityContext"],
            yaml(
                r#"
                fsGroup: 1000
                runAsGroup: 1000
                runAsNonRoot: true
                runAsUser: 1000
                seccompProfile: { type: RuntimeDefault }
                "#
            )
        );
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
        assert_eq!(pod["spec"]["enableServiceLinks"], false);
    }

    #[test]
    fn pod_is_owned_by_the_workspace_and_labelled() {
        let pod = json(&build_pod(&alice(), &Settings::default()));
        assert_eq!(
            pod["metadata"],
            yaml(
                r#"
                name: jw-alice
                namespace: jarvis
                labels:
                  app.kubernetes.io/managed-by: jarvis-operator
                  app.kubernetes.io/name: jarvis-sandbox
                  jarvis.dev/user: 0b6e4c1a-2f7d-4e59-9a43-5c1d2e3f4a5b
                  jarvis.dev/workspace: alice
                ownerReferences:
                  - apiVersion: jarvis.dev/v1alpha1
                    kind: JarvisWorkspace
                    name: alice
                    uid: 6f1c2f0e-0000-4000-8000-00000000a11c
                    controller: true
                "#
            )
        );
    }

    #[test]
    fn token_comes_from_the_workspace_secret_and_gateway_from_settings() {
        let pod = json(&build_pod(&alice(), &Settings::default()));
        let container = &pod["spec"]["containers"][0];
        assert_eq!(
            container["env"],
            yaml(
                r#"
                - name: JARVIS_WORKSPACE_TOKEN
                  valueFrom:
                    secretKeyRef: { name: jw-alice-token, key: token, optional: false }
                - { name: JARVIS_SYNC, value: router }
                "#
            )
        );
        assert_eq!(
            container["args"],
            yaml(
                r#"
                - --listen
                - 0.0.0.0:7070
                - --gateway-url
                - http://jarvis-router.jarvis.svc:8081
                - --egress-proxy
                - jarvis-router.jarvis.svc:8082
                - --workspace-dir
                - /workspace
                - --state-dir
                - /state
                - --claude-bin
                - /usr/local/bin/claude
                "#
            )
        );
        let without_proxy = Settings {
            router_egress_port: None,
            ..Settings::default()
        };
        let pod = json(&build_pod(&alice(), &without_proxy));
        let args = pod["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args")
            .clone();
        assert!(!args.contains(&"--egress-proxy".into()), "{args:?}");
        assert_eq!(container["image"], "jarvis-sandbox:latest");
        assert_eq!(
            container["ports"],
            yaml("[{name: ws, containerPort: 7070, protocol: TCP}]")
        );
    }

    #[test]
    fn only_workspace_tmp_and_state_are_writable_volumes() {
        let pod = json(&build_pod(&alice(), &Settings::default()));
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"],
            yaml(
                r#"
                - { name: workspace, mountPath: /workspace }
                - { name: tmp, mountPath: /tmp }
                - { name: state, mountPath: /state }
                "#
            )
        );
        assert_eq!(
            pod["spec"]["volumes"],
            yaml(
                r#"
                - { name: workspace, emptyDir: { sizeLimit: 1Gi } }
                - { name: tmp, emptyDir: { sizeLimit: 1Gi } }
                - { name: state, emptyDir: { sizeLimit: 1Gi } }
                "#
            )
        );
    }

    #[test]
    fn runtime_class_is_set_only_when_configured() {
        let plain = json(&build_pod(&alice(), &Settings::default()));
        assert!(plain["spec"].get("runtimeClassName").is_none());
        let gvisor = json(&build_pod(&alice(), &settings_with_runtime_class()));
        assert_eq!(gvisor["spec"]["runtimeClassName"], "gvisor");
    }

    #[test]
    fn spec_resources_override_defaults_key_by_key() {
        let ws = validate(&workspace(&format!(
            "{ALICE}  image: registry.example/sandbox:1.2\n  resources:\n    limits: {{ memory: 2Gi, cpu: '2' }}\n"
        )))
        .expect("valid");
        let pod = json(&build_pod(&ws, &Settings::default()));
        let container = &pod["spec"]["containers"][0];
        assert_eq!(
            container["resources"],
            yaml(
                r#"
                requests: { cpu: 100m, memory: 256Mi }
                limits: { cpu: "2", memory: 2Gi }
                "#
            )
        );
        assert_eq!(container["image"], "registry.example/sandbox:1.2");
    }
}
