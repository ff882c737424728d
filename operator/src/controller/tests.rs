//! Reconcile scenarios against a mocked apiserver: the exact requests made for
//! each kind of workspace, and the status that results.
use http::StatusCode;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::*;
use crate::{
    controller::status::{READY, SPEC_VALID},
    crd::WorkspacePhase,
    fixtures::{alice, context, timeout_after_1s},
};

#[tokio::test]
async fn workspace_without_finalizer_gets_a_finalizer_first() {
    let (ctx, mut api) = context();
    let ws = alice();
    let server = tokio::spawn(async move {
        api.expect_finalizer_added(&alice()).await;
        api
    });
    reconcile(Arc::new(ws), ctx).await.expect("reconcile");
    timeout_after_1s(server).await;
}

#[tokio::test]
async fn awake_workspace_gets_policy_service_and_pod_then_waking_status() {
    let (ctx, mut api) = context();
    let ws = alice().finalized();
    let script = ws.clone();
    let server = tokio::spawn(async move {
        api.expect_network(&script).await;
        api.expect_pod(&script, false).await;
        let status = api.expect_status(&script).await;
        (api, status)
    });
    let action = reconcile(Arc::new(ws), ctx).await.expect("reconcile");
    let (_, status) = timeout_after_1s(server).await;
    assert_eq!(status.phase, Some(WorkspacePhase::Waking));
    assert_eq!(status.replicas, 1);
    assert_eq!(status.endpoint, None);
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.pod.as_deref(), Some("jw-alice"));
    assert_eq!(status.image.as_deref(), Some("jarvis-sandbox:latest"));
    assert_eq!(action, Action::requeue(SHORT_RETRY));
}

#[tokio::test]
async fn ready_pod_makes_the_workspace_ready_with_its_endpoint() {
    let (ctx, mut api) = context();
    let ws = alice().finalized();
    let script = ws.clone();
    let server = tokio::spawn(async move {
        api.expect_network(&script).await;
        api.expect_pod(&script, true).await;
        let status = api.expect_status(&script).await;
        (api, status)
    });
    reconcile(Arc::new(ws), ctx).await.expect("reconcile");
    let (_, status) = timeout_after_1s(server).await;
    assert_eq!(status.phase, Some(WorkspacePhase::Ready));
    assert_eq!(status.endpoint.as_deref(), Some("jw-alice.jarvis.svc:7070"));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .expect("Ready condition");
    assert_eq!(ready.status, "True");
}

#[tokio::test]
async fn a_pod_its_watch_shows_ready_since_the_apply_is_not_applied_again() {
    let (ctx, mut api) = context();
    let ws = alice().finalized();
    let script = ws.clone();
    let server = tokio::spawn(async move {
        api.expect_network(&script).await;
        api.expect_pod(&script, false).await;
        api.expect_status(&script).await;
        // The pod's readiness starts the second one: no pod apply, only the status.
        api.expect_network(&script).await;
        let ready = api.expect_status(&script).await;
        api.expect_silence().await;
        (api, ready)
    });
    reconcile(Arc::new(ws.clone()), ctx.clone())
        .await
        .expect("reconcile");
    // The watch shows the pod made, then bound by the scheduler and made ready by
    // the kubelet.
    let valid = build::validate(&ws).expect("fixture is valid");
    let mut made = build::build_pod(&valid, &ctx.settings);
    made.metadata.uid = Some(crate::fixtures::POD_UID.to_owned());
    made.metadata.resource_version = Some("8".to_owned());
    let mut ready = made.clone();
    ready.metadata.resource_version = Some("9".to_owned());
    if let Some(spec) = ready.spec.as_mut() {
        spec.node_name = Some("node-1".to_owned());
    }
    ready.status = serde_json::from_value(serde_json::json!({
        "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }]
    }))
    .expect("status parses");
    let events = [made, ready].map(|pod| Ok(kube::runtime::watcher::Event::Apply(pod)));
    let woken: Vec<_> = triggers::children(futures::stream::iter(events), ctx.children.clone())
        .collect()
        .await;
    assert_eq!(woken.len(), 1, "the pod's readiness wakes its workspace");
    let mut waking = ws;
    waking.status = Some(status::desired_status(
        &waking,
        &Outcome::Waking,
        Timestamp::now(),
    ));
    reconcile(Arc::new(waking), ctx).await.expect("reconcile");
    let (_, status) = timeout_after_1s(server).await;
    assert_eq!(status.phase, Some(WorkspacePhase::Ready));
    assert_eq!(status.endpoint.as_deref(), Some("jw-alice.jarvis.svc:7070"));
}

#[tokio::test]
async fn pod_with_a_changed_immutable_spec_is_replaced() {
    let (ctx, mut api) = context();
    let ws = alice().finalized();
    let script = ws.clone();
    let server = tokio::spawn(async move {
        api.expect_network(&script).await;
        api.expect_pod_refused(&script).await;
        api.expect_pod_deleted(true).await;
        let status = api.expect_status(&script).await;
        (api, status)
    });
    let action = reconcile(Arc::new(ws), ctx).await.expect("reconcile");
    let (_, status) = timeout_after_1s(server).await;
    assert_eq!(status.phase, Some(WorkspacePhase::Waking));
    assert_eq!(action, Action::requeue(SHORT_RETRY));
}

#[tokio::test]
async fn scaled_to_zero_workspace_loses_its_pod_and_sleeps() {
    let (ctx, mut api) = context();
    let ws = alice().finalized().with_replicas(0);
    let script = ws.clone();
    let server = tokio::spawn(async move {
        api.expect_network(&script).await;
        api.expect_pod_deleted(true).await;
        let status = api.expect_status(&script).await;
        (api, status)
    });
    reconcile(Arc::new(ws), ctx).await.expect("reconcile");
    let (_, status) = timeout_after_1s(server).await;
    assert_eq!(status.phase, Some(WorkspacePhase::Sleeping));
    assert_eq!(status.replicas, 0);
    assert_eq!(status.endpoint, None);
}

#[tokio::test]
async fn idle_ready_workspace_is_scaled_to_zero() {
    let (ctx, mut api) = context();
    let long_ago = Timestamp::now() - SignedDuration::from_hours(1);
    let ws = alice().finalized().ready_since(long_ago);
    let script = ws.clone();
    let server = tokio::spawn(async move {
        api.expect_scaled_to_zero().await;
        api.expect_network(&script).await;
        api.expect_pod_deleted(false).await;
        let status = api.expect_status(&script).await;
        (api, status)
    });
    reconcile(Arc::new(ws), ctx.clone())
        .await
        .expect("reconcile");
    let (_, status) = timeout_after_1s(server).await;
    assert_eq!(status.phase, Some(WorkspacePhase::Sleeping));
    assert_eq!(ctx.metrics.reaped.get(), 1);
}

#[tokio::test]
async fn recently_active_workspace_is_kept_and_requeued_before_its_timeout() {
    let (ctx, mut api) = context();
    let recent = Timestamp::now() - SignedDuration::from_mins(5);
    let ws = alice().finalized().ready_since(recent);
    let script = ws.clone();
    let server = tokio::spawn(async move {
        api.expect_network(&script).await;
        api.expect_pod(&script, true).await;
        api.expect_status(&script).await;
        api
    });
    let action = reconcile(Arc::new(ws), ctx).await.expect("reconcile");
    timeout_after_1s(server).await;
    // 15m timeout, 5m idle: back in about 10 minutes, capped by the resync.
    assert_eq!(action, Action::requeue(RESYNC));
}

#[tokio::test]
async fn workspace_made_ready_is_requeued_at_its_idle_deadline() {
    let (ctx, mut api) = context();
    // Woken by a router 14 minutes ago (15m timeout), Ready only now: its own status
    // write starts no reconcile, so this pass must schedule the reaper.
    let woken = Timestamp::now() - SignedDuration::from_mins(14);
    let mut ws = alice().finalized().ready_since(woken);
    if let Some(status) = ws.status.as_mut() {
        status.phase = Some(WorkspacePhase::Waking);
    }
    let script = ws.clone();
    let server = tokio::spawn(async move {
        api.expect_network(&script).await;
        api.expect_pod(&script, true).await;
        api.expect_status(&script).await;
        api
    });
    let action = reconcile(Arc::new(ws), ctx).await.expect("reconcile");
    timeout_after_1s(server).await;
    assert_ne!(action, Action::requeue(RESYNC), "back in about a minute");
    assert_ne!(action, Action::requeue(SHORT_RETRY));
}

#[tokio::test]
async fn invalid_spec_is_reported_in_status_and_not_retried() {
    let (ctx, mut api) = context();
    let ws = alice().finalized().with_replicas(2);
    let script = ws.clone();
    let server = tokio::spawn(async move {
        let status = api.expect_status(&script).await;
        api.expect_silence().await;
        (api, status)
    });
    let ws = Arc::new(ws);
    let error = reconcile(ws.clone(), ctx.clone())
        .await
        .expect_err("invalid");
    let (_, status) = timeout_after_1s(server).await;
    assert_eq!(status.phase, Some(WorkspacePhase::Failed));
    let valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == SPEC_VALID)
        .expect("SpecValid");
    assert_eq!(valid.status, "False");
    assert_eq!(valid.message, "spec.replicas must be 0 or 1, not 2");
    assert!(error.is_invalid_spec());
    assert_eq!(error.metric_label(), "invalid_spec");
    assert_eq!(
        error_policy(ws, &error, ctx.clone()),
        Action::await_change()
    );
    let failures = ctx
        .metrics
        .failures
        .get_or_create(&crate::metrics::ErrorLabels {
            error: "invalid_spec".to_owned(),
        });
    assert_eq!(failures.get(), 1);
}

#[tokio::test]
async fn deleted_workspace_waits_for_its_pod_then_drops_the_finalizer() {
    let (ctx, mut api) = context();
    let ws = alice().finalized().deleting();
    let server = tokio::spawn(async move {
        api.expect_pod_deleted(true).await;
        api
    });
    let action = reconcile(Arc::new(ws.clone()), ctx.clone())
        .await
        .expect("waiting for the kubelet is no failure");
    timeout_after_1s(server).await;
    assert_eq!(action, Action::requeue(SHORT_RETRY));

    let removed = ws.clone();
    let (ctx, mut api) = context();
    let server = tokio::spawn(async move {
        api.expect_pod_deleted(false).await;
        api.expect_finalizer_removed(&removed).await;
        api
    });
    let action = reconcile(Arc::new(ws), ctx).await.expect("cleanup done");
    timeout_after_1s(server).await;
    assert_eq!(action, Action::await_change());
}

#[test]
fn backoff_doubles_from_one_second_up_to_five_minutes() {
    let delays: Vec<u64> = [1, 2, 3, 4, 9, 10, 50]
        .map(|n| backoff(n).as_secs())
        .to_vec();
    assert_eq!(delays, [1, 2, 4, 8, 256, 300, 300]);
}

#[tokio::test]
async fn failures_back_off_exponentially_and_reset_on_success() {
    let (ctx, _api) = context();
    let ws = Arc::new(alice());
    let error = Error::PodTerminating {
        name: "alice".to_owned(),
    };
    let first = error_policy(ws.clone(), &error, ctx.clone());
    let second = error_policy(ws.clone(), &error, ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(1)));
    assert_eq!(second, Action::requeue(Duration::from_secs(2)));
    ctx.failure_count(&key(&ws), false);
    assert_eq!(
        error_policy(ws, &error, ctx),
        Action::requeue(Duration::from_secs(1))
    );
}

/// A real apiserver deletes a never-scheduled pod at once and answers 200 with its
/// body (grace period 0). That is done, not "still terminating": the finalizer goes
/// in the same pass and nothing counts as a failure.
#[tokio::test]
async fn pod_removed_at_once_lets_the_finalizer_go_in_the_same_pass() {
    let (ctx, mut api) = context();
    let ws = alice().finalized().deleting();
    let removed = ws.clone();
    let server = tokio::spawn(async move {
        api.expect_pod_deleted_at_once().await;
        api.expect_finalizer_removed(&removed).await;
        api.expect_silence().await;
        api
    });
    let action = reconcile(Arc::new(ws), ctx.clone())
        .await
        .expect("cleanup done");
    timeout_after_1s(server).await;
    assert_eq!(action, Action::await_change());
}

/// The finalizer removal answered 404: the workspace is already gone (a stale
/// copy was reconciled). Done, not a failure.
#[tokio::test]
async fn finalizer_removal_of_a_gone_workspace_is_done() {
    let (ctx, mut api) = context();
    let ws = alice().finalized().deleting();
    let server = tokio::spawn(async move {
        api.expect_pod_deleted(false).await;
        api.expect_finalizer_removal_not_found().await;
        api
    });
    let action = reconcile(Arc::new(ws), ctx.clone())
        .await
        .expect("a gone workspace is no failure");
    timeout_after_1s(server).await;
    assert_eq!(action, Action::await_change());
}

fn ready_condition(
    status: &crate::crd::JarvisWorkspaceStatus,
) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .expect("Ready condition")
}

/// The message a real apiserver (v1.33) answers a Pod with a malformed quantity with.
const QUANTITY_REFUSAL: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

#[tokio::test]
async fn refused_pod_apply_shows_on_the_workspace_and_backs_off() {
    let (ctx, mut api) = context();
    let ws = alice().finalized();
    let script = ws.clone();
    let server = tokio::spawn(async move {
        api.expect_network(&script).await;
        api.expect_pod_apply_failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            QUANTITY_REFUSAL,
        )
        .await;
        let status = api.expect_status(&script).await;
        api.expect_silence().await;
        (api, status)
    });
    let ws = Arc::new(ws);
    let error = reconcile(ws.clone(), ctx.clone())
        .await
        .expect_err("refused");
    let (_, status) = timeout_after_1s(server).await;
    assert_eq!(status.phase, Some(WorkspacePhase::Failed));
    let ready = ready_condition(&status);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ApplyFailed")
    );
    assert!(ready.message.contains("Pod jw-alice"), "{}", ready.message);
    assert!(
        ready.message.contains(QUANTITY_REFUSAL),
        "{}",
        ready.message
    );
    // Retried, with back-off: not waiting for a spec change, not a tight loop.
    assert_eq!(error.metric_label(), "apply");
    assert_eq!(
        error_policy(ws.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        error_policy(ws, &error, ctx),
        Action::requeue(Duration::from_secs(2))
    );
}

/// The same refusal again changes nothing on the workspace: no status write.
#[tokio::test]
async fn repeated_refusal_does_not_rewrite_the_status() {
    let (ctx, mut api) = context();
    let mut ws = alice().finalized();
    let script = ws.clone();
    let first = tokio::spawn(async move {
        api.expect_network(&script).await;
        api.expect_pod_apply_failed(StatusCode::FORBIDDEN, "Forbidden", "exceeded quota")
            .await;
        let status = api.expect_status(&script).await;
        (api, status)
    });
    reconcile(Arc::new(ws.clone()), ctx.clone())
        .await
        .expect_err("refused");
    let (mut api, status) = first.await.expect("script ok");
    ws.status = Some(status);
    let script = ws.clone();
    let again = tokio::spawn(async move {
        api.expect_network(&script).await;
        api.expect_pod_apply_failed(StatusCode::FORBIDDEN, "Forbidden", "exceeded quota")
            .await;
        api.expect_silence().await;
        api
    });
    reconcile(Arc::new(ws), ctx)
        .await
        .expect_err("refused again");
    timeout_after_1s(again).await;
}

/// A 422 with no pod in the way is the server refusing the pod itself, not an
/// immutable-field change: it shows as a refusal instead of a delete-and-retry loop.
#[tokio::test]
async fn invalid_pod_without_an_existing_pod_is_a_refusal() {
    let (ctx, mut api) = context();
    let ws = alice().finalized();
    let script = ws.clone();
    let server = tokio::spawn(async move {
        api.expect_network(&script).await;
        api.expect_pod_apply_failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "Pod \"jw-alice\" is invalid: spec.containers[0].image: Required value",
        )
        .await;
        api.expect_pod_lookup(false).await;
        let status = api.expect_status(&script).await;
        api.expect_silence().await;
        (api, status)
    });
    reconcile(Arc::new(ws), ctx).await.expect_err("refused");
    let (_, status) = timeout_after_1s(server).await;
    let ready = ready_condition(&status);
    assert_eq!(ready.reason, "ApplyFailed");
    assert!(
        ready.message.contains("Required value"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn malformed_quantity_in_the_spec_is_reported_before_anything_is_applied() {
    let (ctx, mut api) = context();
    let mut ws = alice().finalized();
    ws.spec.resources =
        serde_json::from_value(serde_json::json!({ "limits": { "memory": "lots" } }))
            .expect("resources parse");
    let script = ws.clone();
    let server = tokio::spawn(async move {
        let status = api.expect_status(&script).await;
        api.expect_silence().await;
        (api, status)
    });
    let ws = Arc::new(ws);
    let error = reconcile(ws.clone(), ctx.clone())
        .await
        .expect_err("invalid");
    let (_, status) = timeout_after_1s(server).await;
    let valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == SPEC_VALID)
        .expect("SpecValid");
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        valid
            .message
            .starts_with("spec.resources.limits.memory \"lots\" is not a Kubernetes quantity"),
        "{}",
        valid.message
    );
    assert_eq!(error_policy(ws, &error, ctx), Action::await_change());
}
