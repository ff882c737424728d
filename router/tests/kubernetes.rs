//! The kubernetes backend against the operator's real controller and the fake
//! Kubernetes API server: wake creates the user's workspace and token Secret and
//! returns the endpoint once the operator reports Ready; activity reaches
//! `status.lastActivity`; sleep scales to 0 and removes the token.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use operator::{
    controller::{self, build::Settings},
    crd::{JarvisWorkspace, WorkspacePhase},
    metrics::Metrics,
    testing::{
        FakeApiServer,
        rbac::{chart_rbac, rule_index, without_rule},
    },
};
use prometheus_client::registry::Registry;
use router::workspaces::{
    Backend, BackendStatus, Endpoint,
    kubernetes::{KubernetesBackend, KubernetesConfig, workspace_name},
};
use uuid::Uuid;

const NS: &str = "jarvis";
const WAIT: Duration = Duration::from_secs(30);
const RELEASE: &str = "jarvis";

fn start_operator(fake: &FakeApiServer) -> tokio::task::JoinHandle<Result<(), operator::Error>> {
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    tokio::spawn(controller::run(
        fake.client_as(NS, NS, "jarvis-operator"),
        Settings::default(),
        metrics,
    ))
}

/// The router's backend, as the chart's router service account.
fn router_backend(fake: &FakeApiServer, pod_ip: bool) -> KubernetesBackend {
    KubernetesBackend::new(
        fake.client_as(NS, NS, "jarvis-router"),
        KubernetesConfig {
            namespace: NS.to_owned(),
            wake_timeout: WAIT,
            activity_every: Duration::from_secs(3600),
            pod_ip,
        },
    )
}

async fn token_of(secrets: &Api<Secret>, name: &str) -> Option<String> {
    let secret = secrets.get_opt(&format!("jw-{name}-token")).await.ok()??;
    let bytes = secret.data?.get("token")?.0.clone();
    String::from_utf8(bytes).ok()
}

#[tokio::test]
async fn wake_touch_and_sleep_a_workspace_through_the_operator() {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    // The operator and the router act as the chart's service accounts; the test
    // itself looks with an admin's eyes.
    fake.enforce_rbac(chart_rbac(NS, RELEASE).expect("the chart's RBAC"));
    let client = fake.client(NS);
    let operator = start_operator(&fake);
    let backend = router_backend(&fake, false);
    let workspaces = Api::<JarvisWorkspace>::namespaced(client.clone(), NS);
    let secrets = Api::<Secret>::namespaced(client, NS);
    let user = Uuid::new_v4();
    let name = workspace_name(user);

    // Waking a user who has no workspace yet creates it, with their token.
    let endpoint = backend.wake(user, "token-1").await.expect("woken");
    assert_eq!(endpoint, Endpoint::Tcp(format!("jw-{name}.{NS}.svc:7070")));
    assert_eq!(backend.status(user), BackendStatus::Running);
    let ws = workspaces.get(&name).await.expect("workspace");
    assert_eq!(ws.spec.user, user.to_string());
    assert_eq!(ws.spec.replicas, 1);
    assert_eq!(token_of(&secrets, &name).await.as_deref(), Some("token-1"));
    let secret = secrets
        .get(&format!("jw-{name}-token"))
        .await
        .expect("token secret");
    let owners = secret.metadata.owner_references.unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| Some(&o.uid) == ws.metadata.uid.as_ref())
    );
    assert!(fake.object("pods", NS, &format!("jw-{name}")).is_some());

    // Activity lands in status.lastActivity, where the operator's reaper reads it.
    backend.touch(user);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ws = workspaces.get(&name).await.expect("workspace");
        if ws.status.and_then(|s| s.last_activity).is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lastActivity never set"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Waking again (a new token) restarts the sandbox with the new token.
    backend.wake(user, "token-2").await.expect("woken again");
    assert_eq!(token_of(&secrets, &name).await.as_deref(), Some("token-2"));

    // Sleep: replicas 0, Sleeping, the pod and the token are gone.
    backend.sleep(user).await.expect("asleep");
    assert_eq!(backend.status(user), BackendStatus::Asleep);
    let ws = workspaces.get(&name).await.expect("workspace");
    assert_eq!(ws.spec.replicas, 0);
    assert_eq!(
        ws.status.and_then(|s| s.phase),
        Some(WorkspacePhase::Sleeping)
    );
    assert!(token_of(&secrets, &name).await.is_none());
    assert!(fake.object("pods", NS, &format!("jw-{name}")).is_none());
    operator.abort();
}

/// The router reads its workspace's pod (its IP) and watches for it to be gone:
/// the chart's Role grants pods `get`, `list`, `watch`, and without that rule the
/// router's call gets the real server's 403.
#[tokio::test]
async fn the_router_reads_pods_with_the_charts_rights_and_without_them_gets_403() {
    let rbac = chart_rbac(NS, RELEASE).expect("the chart's RBAC");
    let router = "jarvis-router";

    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(rbac.clone());
    let operator = start_operator(&fake);
    let backend = router_backend(&fake, true);
    let user = Uuid::new_v4();
    let endpoint = backend.wake(user, "token-1").await.expect("woken");
    let Endpoint::Tcp(address) = endpoint else {
        panic!("a TCP endpoint")
    };
    assert!(address.ends_with(":7070"), "{address}");
    // Waking again stops the running pod and waits until it is gone (a watch).
    backend.wake(user, "token-2").await.expect("woken again");
    backend.sleep(user).await.expect("asleep");
    operator.abort();

    let index = rule_index(&rbac, router, "", "pods", "get").expect("the router may get pods");
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(without_rule(rbac, router, index));
    let operator = start_operator(&fake);
    let backend = router_backend(&fake, true);
    let error = backend
        .wake(Uuid::new_v4(), "token-1")
        .await
        .expect_err("the router cannot read the pod");
    let router::workspaces::Error::Kube(error) = &error else {
        panic!("not a Kubernetes error: {error}");
    };
    let kube::Error::Api(status) = error.as_ref() else {
        panic!("not an API error: {error}");
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status.message.contains(
            "User \"system:serviceaccount:jarvis:jarvis-router\" cannot get resource \"pods\""
        ),
        "{status:?}"
    );
    operator.abort();
}
