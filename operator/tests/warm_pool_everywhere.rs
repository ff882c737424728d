//! The warm pool of an operator watching every namespace (`*`, the chart's
//! ClusterRoleBinding): kept filled in the namespace named for it (the routers'),
//! in no other, with every request allowed by the chart's RBAC; and without a
//! namespace named for it, the operator refuses to start.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use operator::{
    Error,
    controller::{
        self, Scope,
        build::{
            Settings,
            warm::{CLAIM_SECRET_KEY, WARM_LABEL, claim_secret_name},
        },
    },
    crd::{JarvisWorkspace, WorkspacePhase},
    metrics::Metrics,
    testing::{FakeApiServer, rbac::chart_rbac_with},
};
use prometheus_client::registry::Registry;
use serde_json::json;

const RELEASE: &str = "jarvis";
/// The release's namespace: the routers', where they claim pool pods.
const NS: &str = "jarvis";
/// Another namespace with workspaces of its own.
const TEAM: &str = "team-a";
const POOL: usize = 2;
const WAIT: Duration = Duration::from_secs(30);

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::register(&mut Registry::default()))
}

fn settings(namespaces: &[&str]) -> Settings {
    Settings {
        warm_pool: POOL,
        warm_pool_namespaces: namespaces.iter().map(|&n| n.to_owned()).collect(),
        ..Settings::default()
    }
}

/// Pool pods in every namespace, as (namespace, name).
async fn pool_pods(client: &kube::Client) -> Vec<(String, String)> {
    Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(WARM_LABEL))
        .await
        .expect("pods listed")
        .items
        .iter()
        .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
        .collect()
}

#[tokio::test]
async fn watching_every_namespace_the_pool_is_kept_in_the_namespace_named_for_it() {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    let rbac = chart_rbac_with(
        NS,
        RELEASE,
        &json!({ "operator": { "watchNamespaces": ["*"] }, "sandbox": { "warmPool": POOL } }),
    )
    .expect("the chart's RBAC with `*`");
    fake.enforce_rbac(rbac);
    let admin = fake.client(NS);
    let operator = tokio::spawn(controller::run_in(
        fake.client_as(NS, NS, "jarvis-operator"),
        Scope::All,
        settings(&[NS]),
        metrics(),
    ));

    // The pool fills in the named namespace, each pod with its claim Secret.
    let deadline = tokio::time::Instant::now() + WAIT;
    let pods = loop {
        let pods = pool_pods(&admin).await;
        if pods.len() >= POOL {
            break pods;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pool never filled: {pods:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pods.len(), POOL, "{pods:?}");
    let secrets = Api::<Secret>::namespaced(admin.clone(), NS);
    for (namespace, name) in &pods {
        assert_eq!(namespace, NS, "{pods:?}");
        let secret = secrets
            .get(&claim_secret_name(name))
            .await
            .expect("the pod's claim Secret");
        assert!(
            secret
                .data
                .is_some_and(|d| d.contains_key(CLAIM_SECRET_KEY))
        );
    }

    // `*` still manages a workspace of any namespace, with no pool there.
    let workspace: JarvisWorkspace = serde_json::from_value(json!({
        "apiVersion": "jarvis.dev/v1alpha1", "kind": "JarvisWorkspace",
        "metadata": { "name": "bob" },
        "spec": { "user": "7c2d9e4f-1a3b-4c5d-8e6f-0a1b2c3d4e5f", "replicas": 1 },
    }))
    .expect("workspace parses");
    let team = Api::<JarvisWorkspace>::namespaced(admin.clone(), TEAM);
    team.create(&PostParams::default(), &workspace)
        .await
        .expect("bob created");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(Some(ws)) = team.get_opt("bob").await
            && ws.status.as_ref().and_then(|s| s.phase) == Some(WorkspacePhase::Ready)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob never Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        pool_pods(&admin).await.iter().all(|(ns, _)| ns == NS),
        "no pool in {TEAM}"
    );

    // The chart's RBAC allowed every request the operator made.
    let refused: Vec<_> = fake
        .audit()
        .into_iter()
        .filter(|a| a.user == format!("system:serviceaccount:{NS}:jarvis-operator") && !a.allowed)
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    operator.abort();
}

#[tokio::test]
async fn watching_every_namespace_a_pool_without_a_namespace_is_refused() {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    let error = controller::run_in(fake.client(NS), Scope::All, settings(&[]), metrics())
        .await
        .expect_err("a pool with nowhere to go");
    assert!(matches!(error, Error::PoolNamespaces(_)), "{error}");
    assert!(
        error.to_string().contains("JARVIS_WARM_POOL_NAMESPACES"),
        "{error}"
    );
    // Nor outside the watched namespaces.
    let error = controller::run_in(
        fake.client(NS),
        Scope::Namespaces(vec![TEAM.to_owned()]),
        settings(&[NS]),
        metrics(),
    )
    .await
    .expect_err("the pool outside the watched namespaces");
    assert!(matches!(error, Error::PoolNamespaces(_)), "{error}");
}
