//! What a real apiserver refuses, and how the operator shows it: malformed
//! quantities refused at admission, an apply the server refuses shown on the
//! workspace (condition + Warning Event, retried with back-off), and deletions of
//! never-scheduled pods read right (no false failures).
//!
//! The fake API server behaves as FACTS.md measured a real v1.33 one: a custom
//! resource is validated against its CRD schema (422), a Pod with a malformed
//! quantity gets a 500, and a DELETE of an unscheduled pod removes it at once and
//! answers 200 with its body.

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{core::v1::Pod, events::v1::Event},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use operator::{
    controller::{self, build::Settings},
    crd::{JarvisWorkspace, WorkspacePhase},
    metrics::{ErrorLabels, Metrics},
    testing::{FakeApiServer, fake_apiserver::rules::QUANTITY_REFUSAL},
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use serde_json::json;
use tokio::task::JoinHandle;

const NS: &str = "jarvis";
const WAIT: Duration = Duration::from_secs(60);

/// Poll `check` until it returns `Some`, failing the test after [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real controller with `settings`, recording into the returned metrics.
fn start_operator(
    client: Client,
    settings: Settings,
) -> (
    JoinHandle<()>,
    Arc<Metrics>,
    Arc<std::sync::Mutex<Registry>>,
) {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let running = metrics.clone();
    let task = tokio::spawn(async move {
        if let Err(error) = controller::run(client, settings, running).await {
            panic!("operator stopped: {error}");
        }
    });
    (task, metrics, Arc::new(std::sync::Mutex::new(registry)))
}

fn workspace(name: &str, spec: serde_json::Value) -> JarvisWorkspace {
    let mut full = json!({ "user": "0b6e4c1a-2f7d-4e59-9a43-5c1d2e3f4a5b", "replicas": 1 });
    if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        full.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "jarvis.dev/v1alpha1",
        "kind": "JarvisWorkspace",
        "metadata": { "name": name, "namespace": NS },
        "spec": full,
    }))
    .expect("workspace parses")
}

fn api_error(error: kube::Error) -> kube::core::Status {
    match error {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn malformed_quantity_in_a_workspace_is_refused_at_admission() {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    let api = Api::<JarvisWorkspace>::namespaced(fake.client(NS), NS);
    let bad = workspace(
        "alice",
        json!({ "resources": { "limits": { "memory": "lots" } } }),
    );
    let refusal = api_error(
        api.create(&PostParams::default(), &bad)
            .await
            .expect_err("refused"),
    );
    assert_eq!(refusal.code, 422, "{refusal:?}");
    assert!(
        refusal
            .message
            .starts_with("JarvisWorkspace.jarvis.dev \"alice\" is invalid: spec.resources.limits.memory: Invalid value: \"lots\""),
        "{}",
        refusal.message
    );
    assert!(fake.object("jarvisworkspaces", NS, "alice").is_none());

    for good in [json!("512Mi"), json!("2Gi"), json!(1_073_741_824)] {
        let ok = workspace(
            "bob",
            json!({ "resources": { "limits": { "memory": good } } }),
        );
        api.create(&PostParams::default(), &ok)
            .await
            .expect("a real quantity passes");
        api.delete("bob", &DeleteParams::default())
            .await
            .expect("deleted");
    }
}

#[tokio::test]
async fn pod_with_a_malformed_quantity_gets_the_real_servers_500() {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    let pods = Api::<Pod>::namespaced(fake.client(NS), NS);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p" },
        "spec": { "containers": [{ "name": "c", "image": "i",
            "resources": { "limits": { "memory": "lots" } } }] },
    }))
    .expect("pod parses");
    let refusal = api_error(
        pods.create(&PostParams::default(), &pod)
            .await
            .expect_err("refused"),
    );
    assert_eq!(
        (refusal.code, refusal.message.as_str()),
        (500, QUANTITY_REFUSAL)
    );
}

#[tokio::test]
async fn deleting_an_unscheduled_pod_answers_with_its_body_and_it_is_gone() {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.stop_scheduling();
    let pods = Api::<Pod>::namespaced(fake.client(NS), NS);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" },
        "spec": { "containers": [{ "name": "c", "image": "i" }] },
    }))
    .expect("pod parses");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("created");
    let answer = pods
        .delete("p", &DeleteParams::default())
        .await
        .expect("deleted");
    let body = answer
        .left()
        .expect("a real server answers with the pod's body");
    assert_eq!(body.metadata.deletion_grace_period_seconds, Some(0));
    assert!(
        pods.get_opt("p").await.expect("get").is_none(),
        "gone at once"
    );
}

/// FACTS.md: 100 deleted workspaces whose pods were never scheduled made the old
/// operator count 99 false failures and 35 "failed to remove finalizer: NotFound".
#[tokio::test]
async fn deleting_100_workspaces_counts_no_failures() {
    const COUNT: usize = 100;
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.stop_scheduling();
    let client = fake.client(NS);
    let api = Api::<JarvisWorkspace>::namespaced(client.clone(), NS);
    let (operator, metrics, registry) = start_operator(client, Settings::default());
    let names: Vec<String> = (0..COUNT).map(|i| format!("w{i:03}")).collect();
    for name in &names {
        api.create(&PostParams::default(), &workspace(name, json!({})))
            .await
            .expect("workspace created");
    }
    wait_for(
        "every workspace Waking with its (unscheduled) pod",
        || async {
            let list = api.list(&Default::default()).await.ok()?;
            let waking = list
                .items
                .iter()
                .filter(|ws| {
                    ws.status.as_ref().and_then(|s| s.phase) == Some(WorkspacePhase::Waking)
                        && fake
                            .object(
                                "pods",
                                NS,
                                &format!("jw-{}", ws.metadata.name.as_deref().unwrap_or_default()),
                            )
                            .is_some()
                })
                .count();
            (waking == COUNT).then_some(())
        },
    )
    .await;
    for name in &names {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete accepted");
    }
    wait_for("every workspace and pod gone", || async {
        let left = api.list(&Default::default()).await.ok()?.items.len();
        let pods = Api::<Pod>::namespaced(fake.client(NS), NS)
            .list(&Default::default())
            .await
            .ok()?
            .items
            .len();
        (left == 0 && pods == 0).then_some(())
    })
    .await;
    let mut text = String::new();
    encode(&mut text, &registry.lock().expect("registry")).expect("metrics encode");
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("jarvis_operator_reconcile_failures_total"))
        .collect();
    assert!(failures.is_empty(), "no reconcile failed: {failures:?}");
    eprintln!(
        "100 deletions: {} reconciles, 0 failures",
        metrics.reconciles.get()
    );
    operator.abort();
}

#[tokio::test]
async fn apply_the_server_refuses_shows_as_a_condition_and_a_warning_event() {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    let client = fake.client(NS);
    let api = Api::<JarvisWorkspace>::namespaced(client.clone(), NS);
    // A quantity the operator does not check (its own settings, as an old operator
    // build might carry), so the Pod reaches the server and is refused there.
    let mut settings = Settings::default();
    if let Some(limits) = settings.default_resources.limits.as_mut() {
        limits.memory = Some(Quantity("lots".to_owned()));
    }
    let (operator, metrics, _registry) = start_operator(client.clone(), settings);
    api.create(&PostParams::default(), &workspace("alice", json!({})))
        .await
        .expect("workspace created");
    let ready = wait_for("the refusal on the workspace", || async {
        let status = api.get("alice").await.ok()?.status?;
        (status.phase == Some(WorkspacePhase::Failed)).then_some(())?;
        status.conditions.into_iter().find(|c| c.type_ == "Ready")
    })
    .await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ApplyFailed")
    );
    assert!(
        ready.message.contains(QUANTITY_REFUSAL),
        "{}",
        ready.message
    );
    let events = Api::<Event>::namespaced(client, NS);
    let warning = wait_for("a Warning Event", || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ApplyFailed"))
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning
            .note
            .as_deref()
            .unwrap_or_default()
            .contains(QUANTITY_REFUSAL),
        "{warning:?}"
    );
    // Retried: the failure count grows (1 s, 2 s, … apart), no pod was stored.
    let apply_failures = metrics.failures.get_or_create(&ErrorLabels {
        error: "apply".to_owned(),
    });
    wait_for("a retry", || async {
        (apply_failures.get() >= 2).then_some(())
    })
    .await;
    assert!(fake.object("pods", NS, "jw-alice").is_none());
    operator.abort();
}
