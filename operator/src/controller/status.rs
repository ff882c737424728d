//! The status step: what a workspace's status should say after a reconcile, and the
//! idle reaper's clock check. Pure; `apply.rs` writes the result.
//!
//! The operator owns every status field except `lastActivity` (the router's), so the
//! status it applies never carries `lastActivity` and never takes it over.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::Pod,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::{SignedDuration, Timestamp},
};

use crate::crd::{JarvisWorkspace, JarvisWorkspaceStatus, WorkspacePhase};

/// Condition type saying whether the sandbox accepts connections.
pub const READY: &str = "Ready";
/// Condition type saying whether the spec passed the operator's checks.
pub const SPEC_VALID: &str = "SpecValid";

/// What reconciling found, the input to [`desired_status`].
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The spec is invalid; the message says why.
    Invalid(String),
    /// `replicas` is 0 and the pod is gone (or going).
    Sleeping,
    /// The pod exists but is not ready yet.
    Waking,
    /// The pod is ready and reachable at `endpoint`.
    Ready {
        /// `host:port` of the workspace's Service.
        endpoint: String,
    },
    /// The pod failed (evicted, or its containers cannot start); the message says why.
    Failed(String),
    /// The apiserver refused to store a child object; the message is its answer.
    Refused(String),
}

/// What the pod's own status says, reduced to an [`Outcome`].
pub fn pod_outcome(pod: &Pod, endpoint: String) -> Outcome {
    let status = pod.status.as_ref();
    if status.and_then(|s| s.phase.as_deref()) == Some("Failed") {
        let reason = status
            .and_then(|s| s.reason.clone().or_else(|| s.message.clone()))
            .unwrap_or_else(|| "pod failed".to_owned());
        return Outcome::Failed(reason);
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    if ready {
        Outcome::Ready { endpoint }
    } else {
        Outcome::Waking
    }
}

/// The status the operator applies for `outcome`. Conditions keep their
/// `lastTransitionTime` while their status does not change; `lastActivity` is left
/// out (it is the router's field).
pub fn desired_status(
    ws: &JarvisWorkspace,
    outcome: &Outcome,
    now: Timestamp,
) -> JarvisWorkspaceStatus {
    let previous = ws
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = ws.metadata.generation;
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };
    let (phase, replicas, endpoint) = match outcome {
        Outcome::Invalid(_) => (WorkspacePhase::Failed, 0, None),
        Outcome::Sleeping => (WorkspacePhase::Sleeping, 0, None),
        Outcome::Waking => (WorkspacePhase::Waking, 1, None),
        Outcome::Ready { endpoint } => (WorkspacePhase::Ready, 1, Some(endpoint.clone())),
        Outcome::Failed(_) => (WorkspacePhase::Failed, 1, None),
        // Nothing changed on the cluster: the pods that were there still are.
        Outcome::Refused(_) => (
            WorkspacePhase::Failed,
            ws.status.as_ref().map_or(0, |s| s.replicas),
            None,
        ),
    };
    let spec_valid = match outcome {
        Outcome::Invalid(message) => condition(SPEC_VALID, false, "InvalidSpec", message.clone()),
        _ => condition(
            SPEC_VALID,
            true,
            "Valid",
            "spec passed validation".to_owned(),
        ),
    };
    let ready = match outcome {
        Outcome::Ready { .. } => condition(
            READY,
            true,
            "SandboxReady",
            "sandbox accepts connections".to_owned(),
        ),
        Outcome::Sleeping => condition(
            READY,
            false,
            "Sleeping",
            "workspace is scaled to 0".to_owned(),
        ),
        Outcome::Waking => condition(READY, false, "Waking", "sandbox pod is starting".to_owned()),
        Outcome::Invalid(message) => condition(READY, false, "InvalidSpec", message.clone()),
        Outcome::Failed(message) => condition(READY, false, "PodFailed", message.clone()),
        Outcome::Refused(message) => condition(READY, false, "ApplyFailed", message.clone()),
    };
    JarvisWorkspaceStatus {
        phase: Some(phase),
        endpoint,
        pod: None,
        image: None,
        last_activity: None,
        replicas,
        conditions: vec![ready, spec_valid],
        observed_generation: generation,
    }
}

/// Whether `status`, as the operator would write it, differs from what the workspace
/// already shows (ignoring the router's `lastActivity`).
pub fn status_changed(ws: &JarvisWorkspace, desired: &JarvisWorkspaceStatus) -> bool {
    let current = ws.status.clone().map(|status| JarvisWorkspaceStatus {
        last_activity: None,
        ..status
    });
    current.as_ref() != Some(desired)
}

/// How long a Ready workspace has left before the idle reaper scales it to 0:
/// `Some(Duration::ZERO)` when it is overdue, `None` when the reaper does not apply
/// (not Ready, or no activity recorded yet).
pub fn idle_remaining(
    ws: &JarvisWorkspace,
    idle_timeout: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let status = ws.status.as_ref()?;
    idle_left(
        status.phase,
        ws.spec.replicas,
        status.last_activity.as_ref(),
        idle_timeout,
        now,
    )
}

/// [`idle_remaining`] of a workspace in `phase` with `replicas` and the router's
/// `last_activity`: for a status about to be written.
pub fn idle_left(
    phase: Option<WorkspacePhase>,
    replicas: i32,
    last_activity: Option<&Time>,
    idle_timeout: Duration,
    now: Timestamp,
) -> Option<Duration> {
    if phase != Some(WorkspacePhase::Ready) || replicas != 1 {
        return None;
    }
    let last = last_activity?.0;
    let idle = now.duration_since(last);
    let timeout = SignedDuration::try_from(idle_timeout).unwrap_or(SignedDuration::MAX);
    let left = timeout.checked_sub(idle).unwrap_or(SignedDuration::ZERO);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::alice;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid timestamp")
    }

    #[test]
    fn unchanged_condition_keeps_its_transition_time() {
        let mut ws = alice();
        let first = desired_status(&ws, &Outcome::Waking, at(0));
        ws.status = Some(first.clone());
        let again = desired_status(&ws, &Outcome::Waking, at(60));
        assert_eq!(again, first);
        assert!(!status_changed(&ws, &again));

        let ready = desired_status(
            &ws,
            &Outcome::Ready {
                endpoint: "e:1".to_owned(),
            },
            at(90),
        );
        let condition = ready
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .expect("Ready");
        assert_eq!(condition.last_transition_time, Time(at(90)));
        let valid = ready
            .conditions
            .iter()
            .find(|c| c.type_ == SPEC_VALID)
            .expect("SpecValid");
        assert_eq!(valid.last_transition_time, Time(at(0)));
    }

    #[test]
    fn router_last_activity_does_not_count_as_a_status_change() {
        let mut ws = alice().ready_since(at(0));
        let desired = desired_status(
            &ws,
            &Outcome::Ready {
                endpoint: "e:1".to_owned(),
            },
            at(5),
        );
        let mut stored = desired.clone();
        stored.last_activity = Some(Time(at(3)));
        ws.status = Some(stored);
        assert!(!status_changed(&ws, &desired));
    }

    #[test]
    fn idle_clock_runs_only_for_ready_workspaces_with_activity() {
        let timeout = Duration::from_secs(900);
        let ws = alice().ready_since(at(0));
        assert_eq!(
            idle_remaining(&ws, timeout, at(600)),
            Some(Duration::from_secs(300))
        );
        assert_eq!(idle_remaining(&ws, timeout, at(900)), Some(Duration::ZERO));
        assert_eq!(idle_remaining(&ws, timeout, at(5000)), Some(Duration::ZERO));
        assert_eq!(idle_remaining(&alice(), timeout, at(5000)), None);
        let asleep = alice().ready_since(at(0)).with_replicas(0);
        assert_eq!(idle_remaining(&asleep, timeout, at(5000)), None);
    }

    #[test]
    fn failed_pod_reports_its_reason() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "jw-alice" },
            "status": { "phase": "Failed", "reason": "Evicted" }
        }))
        .expect("pod parses");
        assert_eq!(
            pod_outcome(&pod, "e:1".to_owned()),
            Outcome::Failed("Evicted".to_owned())
        );
    }
}
