//! The operator's real controller against the wire-level fake API server, driven the
//! way a platform operator would: with `kubectl`.
//!
//! Each wait is bounded (a condition polled until a deadline), never a fixed sleep
//! standing in for "long enough".

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::{
    api::events::v1::Event,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use operator::{
    controller::{self, build::Settings},
    crd::{JarvisWorkspace, WorkspacePhase},
    metrics::Metrics,
    testing::FakeApiServer,
};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const NS: &str = "jarvis";

/// Log to the test's output (`RUST_LOG=operator=debug` to see the reconciles).
fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
const WAIT: Duration = Duration::from_secs(30);

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

/// A client acting as the chart's operator service account, the fake enforcing
/// the chart's RBAC from now on.
fn operator_client(fake: &FakeApiServer) -> Client {
    fake.enforce_rbac(operator::testing::rbac::chart_rbac(NS, "jarvis").expect("the chart's RBAC"));
    fake.client_as(NS, NS, "jarvis-operator")
}

fn start_operator(client: Client) -> JoinHandle<()> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    tokio::spawn(async move {
        if let Err(error) = controller::run(client, Settings::default(), metrics).await {
            panic!("operator stopped: {error}");
        }
    })
}

/// `kubectl` against the fake, with its own kubeconfig and cache.
struct Kubectl {
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(fake: &FakeApiServer) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config"), fake.kubeconfig(NS)).expect("kubeconfig");
        Self { dir }
    }

    async fn run(&self, args: &[&str]) -> String {
        let config: PathBuf = self.dir.path().join("config");
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&config)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .output()
            .await
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

async fn phase(api: &Api<JarvisWorkspace>, name: &str) -> Option<(WorkspacePhase, Option<String>)> {
    let ws = api.get_opt(name).await.ok()??;
    let status = ws.status?;
    Some((status.phase?, status.endpoint))
}

fn owned_by(object: &Value, uid: &str) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r["uid"] == uid && r["controller"] == true && r["kind"] == "JarvisWorkspace"
            })
        })
}

async fn wait_ready(api: &Api<JarvisWorkspace>, name: &str) -> String {
    wait_for("workspace Ready with an endpoint", || async {
        match phase(api, name).await {
            Some((WorkspacePhase::Ready, Some(endpoint))) => Some(endpoint),
            _ => None,
        }
    })
    .await
}

async fn wait_sleeping(fake: &FakeApiServer, api: &Api<JarvisWorkspace>, name: &str) {
    wait_for("pod gone and workspace Sleeping", || async {
        let gone = fake.object("pods", NS, &format!("jw-{name}")).is_none();
        let sleeping = matches!(phase(api, name).await, Some((WorkspacePhase::Sleeping, _)));
        (gone && sleeping).then_some(())
    })
    .await;
}

/// Reasons of the Events published about workspace alice.
async fn event_reasons(client: &Client) -> Vec<String> {
    let events = Api::<Event>::namespaced(client.clone(), NS);
    events
        .list(&Default::default())
        .await
        .expect("events list")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("alice"))
        .filter_map(|e| e.reason)
        .collect()
}

fn alice() -> JarvisWorkspace {
    serde_json::from_value(json!({
        "apiVersion": "jarvis.dev/v1alpha1",
        "kind": "JarvisWorkspace",
        "metadata": { "name": "alice", "namespace": NS },
        "spec": { "user": "0b6e4c1a-2f7d-4e59-9a43-5c1d2e3f4a5b", "replicas": 1 },
    }))
    .expect("workspace parses")
}

#[tokio::test]
async fn workspace_lifecycle_through_kubectl() {
    trace();
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    let client = fake.client(NS);
    let operator = start_operator(operator_client(&fake));
    let kubectl = Kubectl::new(&fake);
    let api = Api::<JarvisWorkspace>::namespaced(client.clone(), NS);

    let created = api
        .create(&PostParams::default(), &alice())
        .await
        .expect("workspace created");
    let uid = created.metadata.uid.clone().expect("uid");

    // Awake: pod, service and policy, all owned by the workspace; status Ready.
    let endpoint = wait_ready(&api, "alice").await;
    assert_eq!(endpoint, "jw-alice.jarvis.svc:7070");
    for plural in ["pods", "services", "networkpolicies"] {
        let child = fake
            .object(plural, NS, "jw-alice")
            .unwrap_or_else(|| panic!("{plural}/jw-alice exists"));
        assert!(
            owned_by(&child, &uid),
            "{plural}/jw-alice is owned by alice"
        );
    }
    assert!(
        event_reasons(&client).await.contains(&"Ready".to_owned()),
        "a Ready event is published"
    );
    let listed = kubectl.run(&["get", "jw"]).await;
    assert!(
        listed.contains("alice"),
        "kubectl get jw lists alice: {listed}"
    );

    // `kubectl scale` puts it to sleep: the pod goes, the service stays.
    kubectl.run(&["scale", "jw/alice", "--replicas=0"]).await;
    wait_sleeping(&fake, &api, "alice").await;
    assert!(fake.object("services", NS, "jw-alice").is_some());

    // Woken again, then idle past its timeout: the operator scales it to 0.
    kubectl.run(&["scale", "jw/alice", "--replicas=1"]).await;
    wait_ready(&api, "alice").await;
    let an_hour_ago = Timestamp::now() - SignedDuration::from_hours(1);
    api.patch_status(
        "alice",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "lastActivity": an_hour_ago.to_string() } })),
    )
    .await
    .expect("router-style activity patch");
    wait_sleeping(&fake, &api, "alice").await;
    let reasons = event_reasons(&client).await;
    assert!(reasons.contains(&"IdleReaped".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"Sleeping".to_owned()), "{reasons:?}");
    let reaped = api.get("alice").await.expect("workspace");
    assert_eq!(reaped.spec.replicas, 0, "the reaper set replicas to 0");

    // `kubectl delete` returns once the finalizer let go; the children are gone.
    kubectl
        .run(&["delete", "jw", "alice", "--timeout=30s"])
        .await;
    assert!(api.get_opt("alice").await.expect("get").is_none());
    wait_for("children garbage-collected", || async {
        ["pods", "services", "networkpolicies"]
            .iter()
            .all(|plural| fake.object(plural, NS, "jw-alice").is_none())
            .then_some(())
    })
    .await;
    operator.abort();
}

#[tokio::test]
async fn deleting_an_awake_workspace_stops_its_pod_first() {
    trace();
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    let client = fake.client(NS);
    let operator = start_operator(operator_client(&fake));
    let kubectl = Kubectl::new(&fake);
    let api = Api::<JarvisWorkspace>::namespaced(client, NS);
    api.create(&PostParams::default(), &alice())
        .await
        .expect("workspace created");
    wait_ready(&api, "alice").await;

    kubectl
        .run(&["delete", "jw", "alice", "--timeout=30s"])
        .await;
    assert!(api.get_opt("alice").await.expect("get").is_none());
    wait_for("children garbage-collected", || async {
        ["pods", "services", "networkpolicies"]
            .iter()
            .all(|plural| fake.object(plural, NS, "jw-alice").is_none())
            .then_some(())
    })
    .await;
    operator.abort();
}

#[tokio::test]
async fn a_restarted_operator_converges() {
    trace();
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    let client = fake.client(NS);
    let api = Api::<JarvisWorkspace>::namespaced(client.clone(), NS);
    let first = start_operator(operator_client(&fake));
    api.create(&PostParams::default(), &alice())
        .await
        .expect("workspace created");
    // Stop the first operator as soon as it has started on the workspace.
    wait_for("the first reconcile to begin", || async {
        let ws = api.get("alice").await.ok()?;
        (!ws.metadata.finalizers.unwrap_or_default().is_empty()).then_some(())
    })
    .await;
    first.abort();
    let _ = first.await;

    // While no operator runs, a user asks for sleep; the new operator must act on it.
    let second = start_operator(operator_client(&fake));
    wait_ready(&api, "alice").await;
    second.abort();
    let _ = second.await;
    api.patch_scale(
        "alice",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
    )
    .await
    .expect("scaled to 0");
    let third = start_operator(operator_client(&fake));
    wait_sleeping(&fake, &api, "alice").await;
    third.abort();
}
