//! Reconcile scenarios against a mocked apiserver: the exact requests made for
//! each kind of workspace, and the status that results.
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
    let (_, status) = tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("in time")
        .expect("script ok");
    assert_eq!(status.phase, Some(WorkspacePhase::Waking));
    assert_eq!(status.replicas, 1);
    assert_eq!(status.endpoint, None);
    assert_eq!(status.observed_generation, Some(2));
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
    let (_, status) = tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("in time")
        .expect("script ok");
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
    let (_, status) = tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("in time")
        .expect("script ok");
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
    let (_, status) = tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("in time")
        .expect("script ok");
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
    let (_, status) = tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("in time")
        .expect("script ok");
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
    let (_, status) = tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("in time")
        .expect("script ok");
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
    let error = reconcile(Arc::new(ws.clone()), ctx.clone())
        .await
        .expect_err("pod terminating");
    timeout_after_1s(server).await;
    assert!(!error.is_invalid_spec());

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
