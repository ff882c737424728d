//! Two releases of the chart in one cluster (staging and production, or two
//! teams): each operator, as its release's service account under the chart's RBAC,
//! manages its own namespace's workspaces and nothing else, and neither release's
//! RBAC objects overwrite the other's.

use std::{collections::HashSet, sync::Arc, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client, api::PostParams};
use operator::{
    Error,
    controller::{self, Scope, build::Settings},
    crd::{JarvisWorkspace, WorkspacePhase},
    leader::{self, Elector},
    metrics::Metrics,
    testing::{FakeApiServer, rbac::chart_rbac},
};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const RELEASE: &str = "jarvis";
const OPERATOR: &str = "jarvis-operator";
const STAGING: &str = "staging";
const PRODUCTION: &str = "production";
const WAIT: Duration = Duration::from_secs(30);

/// Both releases' RBAC objects, as a cluster holding both installs has them.
fn both_releases() -> Vec<Value> {
    let mut objects = chart_rbac(STAGING, RELEASE).expect("staging's RBAC");
    objects.extend(chart_rbac(PRODUCTION, RELEASE).expect("production's RBAC"));
    objects
}

/// The operator of the release in `namespace`, with leader election over its own
/// Lease, managing `scope`.
fn operator(fake: &FakeApiServer, namespace: &str, scope: Scope) -> JoinHandle<Result<(), Error>> {
    let client = fake.client_as(namespace, namespace, OPERATOR);
    let elector = Elector::new(
        client.clone(),
        leader::Settings {
            name: leader::LEASE_NAME.to_owned(),
            namespace: namespace.to_owned(),
            identity: format!("{namespace}-operator-0"),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        },
    );
    tokio::spawn(async move {
        let metrics = Arc::new(Metrics::register(&mut Registry::default()));
        let work = controller::run_in(client, scope, Settings::default(), metrics);
        match leader::run(&elector, work).await {
            Ok(result) => result,
            Err(error) => panic!("leader election failed: {error}"),
        }
    })
}

fn alice() -> JarvisWorkspace {
    serde_json::from_value(json!({
        "apiVersion": "jarvis.dev/v1alpha1", "kind": "JarvisWorkspace",
        "metadata": { "name": "alice" },
        "spec": { "user": "0b6e4c1a-2f7d-4e59-9a43-5c1d2e3f4a5b", "replicas": 1 },
    }))
    .expect("workspace parses")
}

async fn wait_ready(api: &Api<JarvisWorkspace>) -> JarvisWorkspace {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(Some(ws)) = api.get_opt("alice").await
            && ws.status.as_ref().and_then(|s| s.phase) == Some(WorkspacePhase::Ready)
        {
            return ws;
        }
        assert!(tokio::time::Instant::now() < deadline, "alice never Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn user(namespace: &str) -> String {
    format!("system:serviceaccount:{namespace}:{OPERATOR}")
}

#[tokio::test]
async fn two_releases_manage_their_own_namespaces_side_by_side() {
    let objects = both_releases();
    // No RBAC object of one release has the other's name and namespace: installing
    // the second overwrites nothing of the first.
    let keys: Vec<(String, String, String)> = objects
        .iter()
        .map(|o| {
            let meta = &o["metadata"];
            (
                o["kind"].as_str().unwrap_or_default().to_owned(),
                meta["namespace"].as_str().unwrap_or_default().to_owned(),
                meta["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let unique: HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "{keys:?}");

    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(objects);
    let admin: Client = fake.client(STAGING);
    let staging_op = operator(&fake, STAGING, Scope::Namespaces(vec![STAGING.into()]));
    let production_op = operator(
        &fake,
        PRODUCTION,
        Scope::Namespaces(vec![PRODUCTION.into()]),
    );

    // The same workspace name in both namespaces; each becomes Ready with its pod.
    let mut uids = Vec::new();
    for namespace in [STAGING, PRODUCTION] {
        let api = Api::<JarvisWorkspace>::namespaced(admin.clone(), namespace);
        api.create(&PostParams::default(), &alice())
            .await
            .expect("alice created");
    }
    for namespace in [STAGING, PRODUCTION] {
        let api = Api::<JarvisWorkspace>::namespaced(admin.clone(), namespace);
        let ws = wait_ready(&api).await;
        let uid = ws.metadata.uid.expect("uid");
        let pod = fake
            .object("pods", namespace, "jw-alice")
            .expect("alice's pod");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
        uids.push(uid);
        // Each release's leader holds the Lease of its own namespace.
        let lease = Api::<Lease>::namespaced(admin.clone(), namespace)
            .get(leader::LEASE_NAME)
            .await
            .expect("lease");
        assert_eq!(
            lease.spec.and_then(|s| s.holder_identity),
            Some(format!("{namespace}-operator-0"))
        );
    }
    assert_ne!(uids[0], uids[1]);

    // Every request each operator made was in its own namespace (none at the
    // cluster scope, none in the other release's), and each was allowed.
    let audit = fake.audit();
    for namespace in [STAGING, PRODUCTION] {
        let made: Vec<_> = audit.iter().filter(|a| a.user == user(namespace)).collect();
        assert!(!made.is_empty(), "{namespace}'s operator made requests");
        for entry in made {
            assert_eq!(entry.request.namespace, namespace, "{entry:?}");
            assert!(entry.allowed, "{entry:?}");
        }
    }
    staging_op.abort();
    production_op.abort();
}

#[tokio::test]
async fn an_operator_told_to_watch_another_release_namespace_is_refused() {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(both_releases());
    let scope = Scope::Namespaces(vec![STAGING.into(), PRODUCTION.into()]);
    let run = controller::run_in(
        fake.client_as(STAGING, STAGING, OPERATOR),
        scope,
        Settings::default(),
        Arc::new(Metrics::register(&mut Registry::default())),
    );
    let error = run.await.expect_err("production is not staging's");
    let Error::ListForbidden { scope, source } = &error else {
        panic!("unexpected error: {error}");
    };
    assert_eq!(scope, "namespace production");
    assert!(
        source.to_string().contains(&format!(
            "User \"{}\" cannot list resource \"jarvisworkspaces\" in API group \"jarvis.dev\" \
             in the namespace \"production\"",
            user(STAGING)
        )),
        "{source}"
    );
    // Nor at the cluster scope.
    let error = controller::run_in(
        fake.client_as(STAGING, STAGING, OPERATOR),
        Scope::All,
        Settings::default(),
        Arc::new(Metrics::register(&mut Registry::default())),
    )
    .await
    .expect_err("no cluster-wide rights");
    assert!(matches!(error, Error::ListForbidden { .. }), "{error}");
}
