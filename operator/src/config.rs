//! The operator's command line and environment, parsed once in `main` and turned
//! into `controller::build::Settings`. Helm values arrive here as env vars.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::{
    controller::{Scope, build::Settings},
    crd::{ResourceAmounts, WorkspaceResources},
};

/// Operator configuration (`--flag` or `JARVIS_OPERATOR_*` env var).
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "operator",
    about = "Reconciles JarvisWorkspace objects into sandbox pods"
)]
pub struct Config {
    /// Address of the operator's `/healthz` and `/metrics` endpoints.
    #[arg(long, env = "JARVIS_OPERATOR_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: String,
    /// Run the controller only while holding the `jarvis-operator` Lease, so several
    /// replicas are safe. `false` runs it unconditionally (one replica only).
    #[arg(
        long,
        env = "JARVIS_OPERATOR_LEADER_ELECT",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub leader_elect: bool,
    /// Namespace of the operator's Lease: its own namespace (the chart sets it).
    #[arg(long, env = "POD_NAMESPACE", default_value = "jarvis")]
    pub lease_namespace: String,
    /// Namespaces whose workspaces this operator manages, comma-separated; `*` for
    /// every namespace (cluster-wide rights needed). Empty: its own namespace.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    pub watch_namespace: String,
    /// This replica's identity in the Lease: its pod name (the chart sets it).
    #[arg(long, env = "POD_NAME", default_value = "jarvis-operator")]
    pub identity: String,
    /// Sandbox image for workspaces whose spec names none.
    #[arg(
        long,
        env = "JARVIS_SANDBOX_IMAGE",
        default_value = "jarvis-sandbox:latest"
    )]
    pub sandbox_image: String,
    /// Path of the Claude Code CLI inside the sandbox image.
    #[arg(
        long,
        env = "JARVIS_SANDBOX_CLAUDE_BIN",
        default_value = "/usr/local/bin/claude"
    )]
    pub claude_bin: String,
    /// Port the sandbox listens on.
    #[arg(long, env = "JARVIS_SANDBOX_PORT", default_value_t = 7070)]
    pub sandbox_port: u16,
    /// Namespace of the router.
    #[arg(long, env = "JARVIS_ROUTER_NAMESPACE", default_value = "jarvis")]
    pub router_namespace: String,
    /// Name of the router's Service.
    #[arg(long, env = "JARVIS_ROUTER_SERVICE", default_value = "jarvis-router")]
    pub router_service: String,
    /// Port of the router's Service that serves the sandboxes' routes (the model
    /// gateway, workspace sync): the router's `JARVIS_SANDBOX_LISTEN`, not its public port.
    #[arg(long, env = "JARVIS_ROUTER_PORT", default_value_t = 8081)]
    pub router_port: u16,
    /// Port of the router's Service where its egress proxy listens (the router's
    /// `JARVIS_EGRESS_LISTEN`): sandboxes reach the internet through it only; 0
    /// gives them no proxy.
    #[arg(long, env = "JARVIS_ROUTER_EGRESS_PORT", default_value_t = 8082)]
    pub router_egress_port: u16,
    /// Labels of the router pods, `key=value,key=value` (network policies use them).
    #[arg(
        long,
        env = "JARVIS_ROUTER_POD_LABELS",
        default_value = "app.kubernetes.io/name=jarvis,app.kubernetes.io/component=router",
        value_parser = parse_labels
    )]
    pub router_pod_labels: BTreeMap<String, String>,
    /// RuntimeClass for sandbox pods (e.g. gvisor or kata); empty for the default.
    #[arg(long, env = "JARVIS_SANDBOX_RUNTIME_CLASS", default_value = "")]
    pub runtime_class: String,
    /// Key of the token inside each workspace's token Secret.
    #[arg(long, env = "JARVIS_TOKEN_SECRET_KEY", default_value = "token")]
    pub token_secret_key: String,
    /// Uid and gid of the sandbox process (not 0).
    #[arg(long, env = "JARVIS_SANDBOX_UID", default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
    pub sandbox_uid: i64,
    /// Default CPU request of a sandbox.
    #[arg(long, env = "JARVIS_SANDBOX_CPU_REQUEST", default_value = "100m", value_parser = crate::quantity::parse_arg)]
    pub cpu_request: String,
    /// Default memory request of a sandbox.
    #[arg(long, env = "JARVIS_SANDBOX_MEMORY_REQUEST", default_value = "256Mi", value_parser = crate::quantity::parse_arg)]
    pub memory_request: String,
    /// Default memory limit of a sandbox.
    #[arg(long, env = "JARVIS_SANDBOX_MEMORY_LIMIT", default_value = "1Gi", value_parser = crate::quantity::parse_arg)]
    pub memory_limit: String,
    /// Default size of a workspace volume.
    #[arg(long, env = "JARVIS_WORKSPACE_SIZE", default_value = "1Gi", value_parser = crate::quantity::parse_arg)]
    pub workspace_size: String,
    /// Warm pool pods kept started and unclaimed per namespace: a waking
    /// workspace claims one instead of waiting for a pod start. 0: no pool.
    #[arg(long, env = "JARVIS_WARM_POOL", default_value_t = 0)]
    pub warm_pool: usize,
    /// Namespaces the warm pool is kept in (repeat the flag, or comma-separated):
    /// where the routers create workspaces (their `JARVIS_KUBE_NAMESPACE`), each
    /// one watched. Empty: every watched namespace; required for a pool with `*`.
    #[arg(
        long = "warm-pool-namespace",
        env = "JARVIS_WARM_POOL_NAMESPACES",
        value_delimiter = ','
    )]
    pub warm_pool_namespaces: Vec<String>,
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(format!("{pair:?} is not key=value")),
        })
        .collect()
}

impl Config {
    /// The namespaces to manage (`WATCH_NAMESPACE`, else the own namespace).
    pub fn scope(&self) -> Result<Scope, String> {
        Scope::parse(&self.watch_namespace, &self.lease_namespace)
            .map_err(|e| format!("WATCH_NAMESPACE: {e}"))
    }

    /// The namespaces the warm pool is kept in ([`Scope::pool_namespaces`]):
    /// refused when a pool has nowhere to go or would go where `scope` does not
    /// reach, so the operator never runs without the pool it was asked for.
    pub fn pool_namespaces(&self, scope: &Scope) -> Result<Vec<String>, String> {
        scope
            .pool_namespaces(&self.warm_pool_namespaces, self.warm_pool)
            .map_err(|e| format!("JARVIS_WARM_POOL_NAMESPACES: {e}"))
    }

    /// The controller's settings.
    pub fn settings(&self) -> Settings {
        let quantity = |text: &str| Quantity(text.to_owned());
        Settings {
            default_image: self.sandbox_image.clone(),
            claude_bin: self.claude_bin.clone(),
            router_namespace: self.router_namespace.clone(),
            router_service: self.router_service.clone(),
            router_port: self.router_port,
            router_egress_port: (self.router_egress_port != 0).then_some(self.router_egress_port),
            router_pod_labels: self.router_pod_labels.clone(),
            sandbox_port: self.sandbox_port,
            runtime_class: (!self.runtime_class.is_empty()).then(|| self.runtime_class.clone()),
            token_secret_key: self.token_secret_key.clone(),
            run_as_user: self.sandbox_uid,
            default_resources: WorkspaceResources {
                requests: Some(ResourceAmounts {
                    cpu: Some(quantity(&self.cpu_request)),
                    memory: Some(quantity(&self.memory_request)),
                }),
                limits: Some(ResourceAmounts {
                    cpu: None,
                    memory: Some(quantity(&self.memory_limit)),
                }),
            },
            default_storage_size: quantity(&self.workspace_size),
            warm_pool: self.warm_pool,
            warm_pool_namespaces: self.warm_pool_namespaces.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_match_the_builders_defaults() {
        let config = Config::try_parse_from(["operator"]).expect("defaults parse");
        assert_eq!(config.settings(), Settings::default());
    }

    #[test]
    fn runtime_class_and_router_labels_come_from_flags() {
        let config = Config::try_parse_from([
            "operator",
            "--runtime-class",
            "gvisor",
            "--router-pod-labels",
            "app=router",
        ])
        .expect("flags parse");
        let settings = config.settings();
        assert_eq!(settings.runtime_class.as_deref(), Some("gvisor"));
        assert_eq!(
            settings.router_pod_labels,
            BTreeMap::from([("app".to_owned(), "router".to_owned())])
        );
    }

    #[test]
    fn the_own_namespace_is_watched_unless_told_otherwise() {
        let config = Config::try_parse_from(["operator", "--lease-namespace", "team-a"])
            .expect("flags parse");
        assert_eq!(
            config.scope(),
            Ok(Scope::Namespaces(vec!["team-a".to_owned()]))
        );
        let config =
            Config::try_parse_from(["operator", "--watch-namespace", "*"]).expect("flags parse");
        assert_eq!(config.scope(), Ok(Scope::All));
    }

    #[test]
    fn a_warm_pool_watching_every_namespace_needs_its_namespace_named() {
        let config =
            Config::try_parse_from(["operator", "--watch-namespace", "*", "--warm-pool", "2"])
                .expect("flags parse");
        let error = config
            .pool_namespaces(&config.scope().expect("scope"))
            .expect_err("a pool with `*` and no namespace for it");
        assert!(
            error.starts_with(
                "JARVIS_WARM_POOL_NAMESPACES: a warm pool of 2 with WATCH_NAMESPACE=*"
            ),
            "{error}"
        );
        let config = Config::try_parse_from([
            "operator",
            "--watch-namespace",
            "*",
            "--warm-pool",
            "2",
            "--warm-pool-namespace",
            "jarvis,team-a",
            "--warm-pool-namespace",
            "team-b",
        ])
        .expect("flags parse");
        let scope = config.scope().expect("scope");
        assert_eq!(
            config.pool_namespaces(&scope),
            Ok(vec!["jarvis".into(), "team-a".into(), "team-b".into()])
        );
        assert_eq!(
            config.settings().warm_pool_namespaces,
            ["jarvis", "team-a", "team-b"]
        );
        // The chart's empty value names none.
        let config =
            Config::try_parse_from(["operator", "--warm-pool-namespace", ""]).expect("flags parse");
        assert_eq!(config.pool_namespaces(&Scope::All), Ok(Vec::new()));
        // Without a pool, `*` needs none.
        let config =
            Config::try_parse_from(["operator", "--watch-namespace", "*"]).expect("flags parse");
        assert_eq!(config.pool_namespaces(&Scope::All), Ok(Vec::new()));
    }

    #[test]
    fn the_pool_stays_in_the_watched_namespaces() {
        let config = Config::try_parse_from([
            "operator",
            "--watch-namespace",
            "team-a,team-b",
            "--warm-pool",
            "1",
        ])
        .expect("flags parse");
        let scope = config.scope().expect("scope");
        assert_eq!(
            config.pool_namespaces(&scope),
            Ok(vec!["team-a".into(), "team-b".into()])
        );
        let config = Config::try_parse_from([
            "operator",
            "--watch-namespace",
            "team-a",
            "--warm-pool",
            "1",
            "--warm-pool-namespace",
            "team-b",
        ])
        .expect("flags parse");
        let error = config
            .pool_namespaces(&config.scope().expect("scope"))
            .expect_err("team-b is not watched");
        assert!(error.contains("namespace team-b is not watched"), "{error}");
    }

    #[test]
    fn malformed_default_quantities_are_refused_at_startup() {
        for flag in [
            "--cpu-request",
            "--memory-request",
            "--memory-limit",
            "--workspace-size",
        ] {
            let error = Config::try_parse_from(["operator", flag, "lots"]).expect_err(flag);
            assert!(
                error.to_string().contains("is not a Kubernetes quantity"),
                "{flag}: {error}"
            );
        }
    }

    #[test]
    fn root_uid_is_refused() {
        assert!(Config::try_parse_from(["operator", "--sandbox-uid", "0"]).is_err());
    }
}
