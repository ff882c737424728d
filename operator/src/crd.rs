//! The `JarvisWorkspace` custom resource (`jarvis.dev/v1alpha1`, short name `jw`).
//!
//! This module owns the Rust type and, through `CustomResourceExt::crd()`, the CRD
//! generated from it (the `crdgen` binary prints it into `crds/`). The schema carries
//! the validation the apiserver enforces: OpenAPI bounds and patterns for the simple
//! cases and CEL rules (`x-kubernetes-validations`) for the rest. The controller
//! re-checks the same invariants in `controller::build::validate`, because an object
//! written before a CRD upgrade may not satisfy today's schema.
//!
//! It does not own what the operator does with a workspace; see `controller`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::{
    api::resource::Quantity,
    apis::meta::v1::{Condition, Time},
};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Pattern for `spec.user`: a Kubernetes label value, so the user id can label child
/// objects verbatim (`jarvis.dev/user`). UUIDs, the router's user ids, match.
pub const USER_PATTERN: &str = "^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$";

/// Pattern for `spec.idleTimeout`: whole hours, minutes and seconds in that order
/// (`90s`, `15m`, `1h30m`). It is a subset of Go's `time.ParseDuration`, so CEL's
/// `duration()` and the operator's own parser agree on every accepted value.
pub const DURATION_PATTERN: &str = "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$";

/// Longest workspace name: child objects are named `jw-<name>` and a Service name is
/// a DNS label of at most 63 characters.
pub const MAX_NAME_LEN: usize = 60;

/// Default for `spec.idleTimeout`, the same as the router's `JARVIS_IDLE_TIMEOUT`.
pub const DEFAULT_IDLE_TIMEOUT: &str = "15m";

/// One user's sandbox: the operator runs it as a Pod while `replicas` is 1 and
/// removes the Pod (keeping the workspace) while it is 0.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "jarvis.dev",
    version = "v1alpha1",
    kind = "JarvisWorkspace",
    namespaced,
    shortname = "jw",
    category = "jarvis",
    status = "JarvisWorkspaceStatus",
    derive = "PartialEq",
    doc = "A Jarvis user's workspace: one sandbox pod while awake, none while asleep.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas"
    ),
    printcolumn(name = "User", type_ = "string", json_path = ".spec.user"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired sandbox pods (0 asleep, 1 awake)"
    ),
    printcolumn(
        name = "Last Active",
        type_ = "date",
        json_path = ".status.lastActivity"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        description = "host:port the router connects to while Ready",
        priority = 1
    ),
    printcolumn(
        name = "Pod",
        type_ = "string",
        json_path = ".status.pod",
        description = "The sandbox pod",
        priority = 1
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".status.image",
        description = "Image the sandbox pod runs",
        priority = 1
    ),
    validation = Rule::new("size(self.metadata.name) <= 60")
        .message("metadata.name must be at most 60 characters (children are named jw-<name>)")
)]
#[serde(rename_all = "camelCase")]
pub struct JarvisWorkspaceSpec {
    /// Id of the Jarvis user who owns this workspace (the router's user id, usually a
    /// UUID). Must be a valid label value (1-63 characters, alphanumeric at both ends,
    /// `-`, `_`, `.` inside) because it labels the workspace's pods. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = USER_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("user is immutable"))]
    pub user: String,

    /// Number of sandbox pods: 1 while the workspace is awake, 0 while it sleeps.
    /// `kubectl scale jw/NAME --replicas=0` puts a workspace to sleep.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1))]
    pub replicas: i32,

    /// Sandbox container image. Unset means the operator's default sandbox image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// CPU and memory for the sandbox container. Unset values take the operator's
    /// defaults; each agent (Claude Code CLI) process needs about 190 MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<WorkspaceResources>,

    /// How long the workspace may go without activity before the operator scales it
    /// to 0: whole hours, minutes and seconds such as `15m`, `90s` or `1h30m`, at
    /// least one minute.
    #[serde(default = "default_idle_timeout")]
    #[schemars(length(min = 2, max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(
        validation = Rule::new("duration(self) >= duration('1m')")
            .message("idleTimeout must be at least 1m")
    )]
    pub idle_timeout: String,

    /// Where `/workspace` lives. Unset means an ephemeral volume: files are synced to
    /// the router's storage and restored when the workspace wakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<WorkspaceStorage>,
}

fn default_replicas() -> i32 {
    1
}

fn default_idle_timeout() -> String {
    DEFAULT_IDLE_TIMEOUT.to_owned()
}

/// Compute resources of the sandbox container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceResources {
    /// Resources the scheduler reserves for the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceAmounts>,
    /// Most the sandbox may use; past the memory limit its processes are killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceAmounts>,
}

/// An amount of CPU and of memory, as Kubernetes quantities.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAmounts {
    /// CPU, e.g. `500m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub cpu: Option<Quantity>,
    /// Memory, e.g. `512Mi` or `2Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub memory: Option<Quantity>,
}

impl ResourceAmounts {
    /// The amounts as a Kubernetes resource list (`cpu`, `memory` keys).
    pub fn to_resource_list(&self) -> BTreeMap<String, Quantity> {
        [("cpu", &self.cpu), ("memory", &self.memory)]
            .into_iter()
            .filter_map(|(key, value)| value.clone().map(|q| (key.to_owned(), q)))
            .collect()
    }
}

/// Schema of an optional quantity field: an integer or a string in the quantity
/// grammar (`crate::quantity::QUANTITY_PATTERN`), as the apiserver's own types have.
/// A pattern applies to strings only, so `cpu: 2` stays valid.
fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "nullable": true,
        "x-kubernetes-int-or-string": true,
        "pattern": crate::quantity::QUANTITY_PATTERN,
    })
}

/// Storage hints for the `/workspace` volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.storageClassName) || (has(self.persistent) && self.persistent)")
        .message("storageClassName needs persistent: true")
)]
pub struct WorkspaceStorage {
    /// Keep `/workspace` on a PersistentVolumeClaim (`jw-<name>-workspace`) that
    /// survives sleep, instead of an ephemeral volume. Deleted with the workspace.
    #[serde(default)]
    pub persistent: bool,
    /// Size of the volume: the PVC's request, or the ephemeral volume's size limit.
    /// Unset means the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub size: Option<Quantity>,
    /// StorageClass of the PVC (only with `persistent: true`); unset means the
    /// cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// Where a workspace is in its life, as shown by `kubectl get jw`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkspacePhase {
    /// `replicas` is 0 and no sandbox pod runs.
    Sleeping,
    /// `replicas` is 1 and the sandbox pod is starting.
    Waking,
    /// The sandbox pod is ready and `endpoint` accepts connections.
    Ready,
    /// The workspace cannot run (invalid spec or a pod that failed); see `conditions`.
    Failed,
}

/// Observed state of a workspace. The operator writes every field except
/// `lastActivity`, which the router sets (its own field manager) when the user is active.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JarvisWorkspaceStatus {
    /// Sleeping, Waking, Ready or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WorkspacePhase>,
    /// `host:port` of the sandbox's Service while Ready; the router connects here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Name of the sandbox pod while the workspace is awake (`kubectl get jw -o wide`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Image the sandbox pod runs while the workspace is awake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When the user last used the workspace (set by the router). The idle reaper
    /// scales a Ready workspace to 0 once this is older than `spec.idleTimeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Time>,
    /// Sandbox pods that exist now (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Standard conditions: `Ready` (sandbox accepting connections) and
    /// `SpecValid` (the spec passed the operator's checks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl JarvisWorkspace {
    /// The workspace's idle timeout, parsed; `None` when the spec holds a value the
    /// schema should have refused.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        parse_duration(&self.spec.idle_timeout)
    }
}

/// Parse a duration in the `DURATION_PATTERN` form (`1h30m`, `15m`, `90s`).
/// Returns `None` for anything else, including the empty string.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    // Units must appear in this order, each at most once.
    let mut allowed = ['h', 'm', 's'].as_slice();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let position = allowed.iter().position(|unit| *unit == c)?;
        if digits.is_empty() {
            return None;
        }
        let value: u64 = digits.parse().ok()?;
        let seconds = match c {
            'h' => value.checked_mul(3600)?,
            'm' => value.checked_mul(60)?,
            _ => value,
        };
        total = total.checked_add(seconds)?;
        digits.clear();
        allowed = &allowed[position + 1..];
    }
    if !digits.is_empty() {
        return None;
    }
    Some(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parse_duration_accepts_hours_minutes_seconds_in_order() {
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2h0m5s"), Some(Duration::from_secs(7205)));
    }

    #[test]
    fn parse_duration_refuses_malformed_text() {
        for bad in [
            "",
            "15",
            "fifteen minutes",
            "m",
            "15m1h",
            "1m1m",
            "1.5h",
            "-1m",
            "1d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?} should be refused");
        }
    }

    /// `kubectl get jw -o wide` shows the columns of priority 1 as well.
    #[test]
    fn wide_columns_show_endpoint_pod_and_image() {
        use kube::CustomResourceExt;
        let crd = JarvisWorkspace::crd();
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default();
        let wide: Vec<(&str, &str)> = columns
            .iter()
            .filter(|c| c.priority == Some(1))
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            wide,
            [
                ("Endpoint", ".status.endpoint"),
                ("Pod", ".status.pod"),
                ("Image", ".status.image"),
            ]
        );
        let narrow: Vec<&str> = columns
            .iter()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(narrow, ["User", "Phase", "Replicas", "Last Active", "Age"]);
    }

    #[test]
    fn spec_defaults_fill_replicas_and_idle_timeout() {
        let spec: JarvisWorkspaceSpec =
            serde_json::from_value(serde_json::json!({"user": "alice"})).expect("minimal spec");
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.idle_timeout, "15m");
        assert_eq!(spec.image, None);
    }
}
