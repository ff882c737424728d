//! Two operator replicas against the fake API server: only the lease holder
//! reconciles, and the other takes over once the first stops renewing.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client, api::PostParams};
use operator::{
    controller::{self, build::Settings},
    crd::{JarvisWorkspace, WorkspacePhase},
    leader::{self, Elector},
    metrics::Metrics,
    testing::FakeApiServer,
};
use prometheus_client::registry::Registry;
use serde_json::json;
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

fn settings(identity: &str) -> leader::Settings {
    leader::Settings {
        name: leader::LEASE_NAME.to_owned(),
        namespace: NS.to_owned(),
        identity: identity.to_owned(),
        lease_duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(300),
    }
}

/// One replica: the controller, run only while `identity` holds the lease.
/// A client acting as the chart's operator service account, the fake enforcing
/// the chart's RBAC from now on.
fn operator_client(fake: &FakeApiServer) -> Client {
    fake.enforce_rbac(operator::testing::rbac::chart_rbac(NS, "jarvis").expect("the chart's RBAC"));
    fake.client_as(NS, NS, "jarvis-operator")
}

fn replica(client: Client, identity: &str) -> JoinHandle<()> {
    let elector = Elector::new(client.clone(), settings(identity));
    tokio::spawn(async move {
        let metrics = Arc::new(Metrics::register(&mut Registry::default()));
        let work = controller::run(client, Settings::default(), metrics);
        if let Err(error) = leader::run(&elector, work).await {
            panic!("replica stopped: {error}");
        }
    })
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get_opt(leader::LEASE_NAME)
        .await
        .ok()??
        .spec?
        .holder_identity
}

async fn wait_phase(api: &Api<JarvisWorkspace>, name: &str, want: WorkspacePhase) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let phase = api
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|ws| ws.status?.phase);
        if phase == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn workspace(name: &str) -> JarvisWorkspace {
    serde_json::from_value(json!({
        "apiVersion": "jarvis.dev/v1alpha1", "kind": "JarvisWorkspace",
        "metadata": { "name": name, "namespace": NS },
        "spec": { "user": format!("user-{name}"), "replicas": 1 },
    }))
    .expect("workspace parses")
}

#[tokio::test]
async fn one_replica_leads_and_the_other_takes_over() {
    trace();
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    let client = fake.client(NS);
    let leases = Api::<Lease>::namespaced(client.clone(), NS);
    let workspaces = Api::<JarvisWorkspace>::namespaced(client.clone(), NS);

    let first = replica(operator_client(&fake), "operator-a");
    let deadline = tokio::time::Instant::now() + WAIT;
    while holder(&leases).await.as_deref() != Some("operator-a") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "operator-a never led"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = replica(operator_client(&fake), "operator-b");
    workspaces
        .create(&PostParams::default(), &workspace("alice"))
        .await
        .expect("alice created");
    wait_phase(&workspaces, "alice", WorkspacePhase::Ready).await;
    assert_eq!(holder(&leases).await.as_deref(), Some("operator-a"));
    assert!(!second.is_finished(), "the candidate keeps waiting");

    // The leader dies without releasing: the candidate takes over once the lease
    // expires, and reconciles new work.
    first.abort();
    let _ = first.await;
    workspaces
        .create(&PostParams::default(), &workspace("bob"))
        .await
        .expect("bob created");
    wait_phase(&workspaces, "bob", WorkspacePhase::Ready).await;
    assert_eq!(holder(&leases).await.as_deref(), Some("operator-b"));
    let lease = leases.get(leader::LEASE_NAME).await.expect("lease");
    assert_eq!(lease.spec.and_then(|s| s.lease_transitions), Some(1));
    second.abort();
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops() {
    trace();
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    let client = fake.client(NS);
    let elector = Elector::new(operator_client(&fake), settings("operator-a"));
    let leases = Api::<Lease>::namespaced(client.clone(), NS);
    let run =
        tokio::spawn(async move { leader::run(&elector, futures::future::pending::<()>()).await });
    let deadline = tokio::time::Instant::now() + WAIT;
    while holder(&leases).await.as_deref() != Some("operator-a") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "operator-a never led"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Someone else writes the lease (say, after a long pause of ours).
    let mut lease = leases.get(leader::LEASE_NAME).await.expect("lease");
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("operator-b".to_owned());
    }
    leases
        .replace(leader::LEASE_NAME, &PostParams::default(), &lease)
        .await
        .expect("lease taken");
    let result = tokio::time::timeout(WAIT, run)
        .await
        .expect("leader stops within the wait")
        .expect("task completes");
    assert!(
        matches!(result, Err(leader::Error::LeaseLost(_))),
        "{result:?}"
    );
}
