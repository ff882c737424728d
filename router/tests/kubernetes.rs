//! The kubernetes backend against the operator's real controller and the fake
//! Kubernetes API server enforcing the chart's RBAC: a wake creates the user's
//! workspace and claims its start on the token Secret; a second router (or the
//! same one again) joins the running pod with the token it holds; two routers
//! waking at once start one pod; activity reaches `status.lastActivity`; a router
//! never scales a workspace down; after the operator did, the next wake starts a
//! new pod with a new token.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::Secret,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use operator::{
    controller::{self, build::Settings},
    crd::{JarvisWorkspace, WorkspacePhase},
    metrics::Metrics,
    testing::{
        FakeApiServer,
        rbac::{chart_rbac, rule_index, without_rule, without_verb},
    },
};
use prometheus_client::registry::Registry;
use router::workspaces::{
    Backend, BackendStatus, Endpoint,
    kubernetes::{ISSUED_AT, KubernetesBackend, KubernetesConfig, workspace_name},
    tokens,
};
use sqlx::PgPool;
use uuid::Uuid;

const NS: &str = "jarvis";
const WAIT: Duration = Duration::from_secs(30);
const RELEASE: &str = "jarvis";
const ROUTER: &str = "jarvis-router";

fn start_operator(fake: &FakeApiServer) -> tokio::task::JoinHandle<Result<(), operator::Error>> {
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    tokio::spawn(controller::run(
        fake.client_as(NS, NS, "jarvis-operator"),
        Settings::default(),
        metrics,
    ))
}

/// A router's backend, as the chart's router service account.
fn router_backend(fake: &FakeApiServer, db: &PgPool, pod_ip: bool) -> KubernetesBackend {
    KubernetesBackend::new(
        fake.client_as(NS, NS, ROUTER),
        db.clone(),
        KubernetesConfig {
            namespace: NS.to_owned(),
            wake_timeout: WAIT,
            activity_every: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(90),
            pod_ip,
            warm_pool: false,
        },
    )
}

async fn user(db: &PgPool) -> Uuid {
    sqlx::query_scalar("insert into users (email, password_hash) values ($1, '-') returning id")
        .bind(format!("{}@example.com", Uuid::new_v4()))
        .fetch_one(db)
        .await
        .expect("a user")
}

async fn token_secret(secrets: &Api<Secret>, name: &str) -> Option<Secret> {
    secrets.get_opt(&format!("jw-{name}-token")).await.ok()?
}

async fn token_of(secrets: &Api<Secret>, name: &str) -> Option<String> {
    let bytes = token_secret(secrets, name)
        .await?
        .data?
        .get("token")?
        .0
        .clone();
    String::from_utf8(bytes).ok()
}

fn pod_uid(fake: &FakeApiServer, name: &str) -> Option<String> {
    let pod = fake.object("pods", NS, &format!("jw-{name}"))?;
    pod["metadata"]["uid"].as_str().map(str::to_owned)
}

/// What the operator's idle reaper does: scale to 0, and wait until it is asleep.
/// (Not in the second the token was issued: status times have whole seconds, and
/// a claim not known to be older than the sleep is taken for a start in progress.)
async fn operator_sleeps(fake: &FakeApiServer, name: &str) {
    let client = fake.client(NS);
    let workspaces = Api::<JarvisWorkspace>::namespaced(client.clone(), NS);
    let secrets = Api::<Secret>::namespaced(client, NS);
    let issued: Timestamp = token_secret(&secrets, name)
        .await
        .and_then(|s| s.metadata.annotations?.get(ISSUED_AT)?.parse().ok())
        .expect("issued-at");
    let next_second = issued
        .checked_add(SignedDuration::from_millis(1100))
        .expect("time");
    if let Ok(wait) = Duration::try_from(next_second.duration_since(Timestamp::now())) {
        tokio::time::sleep(wait).await;
    }
    workspaces
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": 0 } })),
        )
        .await
        .expect("scaled to 0");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ws = workspaces.get(name).await.expect("workspace");
        let asleep = ws.status.and_then(|s| s.phase) == Some(WorkspacePhase::Sleeping);
        if asleep && pod_uid(fake, name).is_none() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never asleep");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn routers_join_the_running_pod_and_only_a_new_pod_gets_a_new_token(db: PgPool) {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    // The operator and the routers act as the chart's service accounts; the test
    // itself looks with an admin's eyes.
    fake.enforce_rbac(chart_rbac(NS, RELEASE).expect("the chart's RBAC"));
    let client = fake.client(NS);
    let operator = start_operator(&fake);
    let (a, b) = (
        router_backend(&fake, &db, false),
        router_backend(&fake, &db, false),
    );
    let workspaces = Api::<JarvisWorkspace>::namespaced(client.clone(), NS);
    let secrets = Api::<Secret>::namespaced(client, NS);
    let user = user(&db).await;
    let name = workspace_name(user);

    // Waking a user who has no workspace yet creates it and starts it with a
    // fresh token: in the Secret the pod reads, and valid at the gateway.
    let first = a.wake(user).await.expect("woken");
    assert!(first.started);
    assert_eq!(
        first.endpoint,
        Endpoint::Tcp(format!("jw-{name}.{NS}.svc:7070"))
    );
    assert_eq!(a.status(user), BackendStatus::Running);
    let ws = workspaces.get(&name).await.expect("workspace");
    assert_eq!(ws.spec.user, user.to_string());
    assert_eq!(ws.spec.replicas, 1);
    assert_eq!(ws.spec.idle_timeout, "1m30s", "the router's idle timeout");
    let secret = token_secret(&secrets, &name).await.expect("token secret");
    assert!(
        secret
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(ISSUED_AT)
    );
    let owners = secret.metadata.owner_references.unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| Some(&o.uid) == ws.metadata.uid.as_ref())
    );
    assert_eq!(token_of(&secrets, &name).await, Some(first.token.clone()));
    assert_eq!(
        tokens::verify(&db, &first.token).await.expect("verify"),
        Some(user)
    );
    let pod = pod_uid(&fake, &name).expect("a pod");

    // Another router (or a restarted one) joins the running pod with its token.
    let joined = b.wake(user).await.expect("joined");
    assert!(!joined.started);
    assert_eq!(joined.token, first.token);
    assert_eq!(joined.endpoint, first.endpoint);
    assert_eq!(pod_uid(&fake, &name), Some(pod.clone()), "the same pod");

    // Activity lands in status.lastActivity, where the operator's reaper reads it.
    b.touch(user);
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

    // A router letting go of the workspace does not stop it: B still uses it.
    a.sleep(user).await.expect("forgotten");
    assert_eq!(a.status(user), BackendStatus::Asleep);
    assert_eq!(workspaces.get(&name).await.expect("ws").spec.replicas, 1);
    assert_eq!(pod_uid(&fake, &name), Some(pod.clone()), "still running");
    assert_eq!(
        tokens::verify(&db, &first.token).await.expect("verify"),
        Some(user)
    );

    // Once the operator put it to sleep, the next wake starts a new pod with a
    // new token, and the old one stops working.
    operator_sleeps(&fake, &name).await;
    let second = b.wake(user).await.expect("woken again");
    assert!(second.started);
    assert_ne!(second.token, first.token);
    assert_eq!(token_of(&secrets, &name).await, Some(second.token.clone()));
    assert_eq!(
        tokens::verify(&db, &first.token).await.expect("verify"),
        None
    );
    assert_eq!(
        tokens::verify(&db, &second.token).await.expect("verify"),
        Some(user)
    );
    assert_ne!(pod_uid(&fake, &name), Some(pod), "a new pod");
    operator.abort();
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn two_routers_waking_a_sleeping_workspace_at_once_start_it_once(db: PgPool) {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(chart_rbac(NS, RELEASE).expect("the chart's RBAC"));
    let client = fake.client(NS);
    let operator = start_operator(&fake);
    let routers: Vec<KubernetesBackend> =
        (0..3).map(|_| router_backend(&fake, &db, false)).collect();
    let secrets = Api::<Secret>::namespaced(client, NS);
    let user = user(&db).await;
    let name = workspace_name(user);

    // Never woken (no workspace, no Secret), then asleep with a stale Secret.
    for round in 0..2 {
        let woken = futures::future::join_all(routers.iter().map(|r| r.wake(user))).await;
        let woken: Vec<_> = woken
            .into_iter()
            .map(|w| w.expect("every router is connected"))
            .collect();
        assert_eq!(
            woken.iter().filter(|w| w.started).count(),
            1,
            "round {round}: one router started it: {woken:?}"
        );
        let token = token_of(&secrets, &name).await.expect("a token");
        assert!(woken.iter().all(|w| w.token == token), "{woken:?}");
        assert_eq!(
            tokens::verify(&db, &token).await.expect("verify"),
            Some(user)
        );
        if round == 0 {
            // The operator put it to sleep: the Secret's claim is over.
            operator_sleeps(&fake, &name).await;
        }
    }
    operator.abort();
}

/// The router reads its workspace's pod (its IP), and claims a start by
/// replacing the stale token Secret: the chart's Role grants pods `get` and
/// secrets `update`; without either the router's call gets the real server's 403.
#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_router_needs_the_charts_rights_on_pods_and_secrets(db: PgPool) {
    let rbac = chart_rbac(NS, RELEASE).expect("the chart's RBAC");

    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(rbac.clone());
    let operator = start_operator(&fake);
    let backend = router_backend(&fake, &db, true);
    let user = user(&db).await;
    let awake = backend.wake(user).await.expect("woken");
    let Endpoint::Tcp(address) = awake.endpoint else {
        panic!("a TCP endpoint")
    };
    assert!(address.ends_with(":7070"), "{address}");
    operator.abort();

    let forbidden = |error: router::workspaces::Error, what: &str| {
        let router::workspaces::Error::Kube(error) = &error else {
            panic!("not a Kubernetes error: {error}");
        };
        let kube::Error::Api(status) = error.as_ref() else {
            panic!("not an API error: {error}");
        };
        assert_eq!(status.code, 403, "{status:?}");
        let expected = format!("User \"system:serviceaccount:jarvis:jarvis-router\" cannot {what}");
        assert!(status.message.contains(&expected), "{status:?}");
    };

    // No pods `get`: no pod IP.
    let index = rule_index(&rbac, ROUTER, "", "pods", "get").expect("the router may get pods");
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(without_rule(rbac.clone(), ROUTER, index));
    let operator = start_operator(&fake);
    let backend = router_backend(&fake, &db, true);
    let error = backend.wake(user).await.expect_err("no pod IP");
    forbidden(error, "get resource \"pods\"");
    operator.abort();

    // No secrets `update`: the first start works (a create), the next one cannot
    // replace the stale Secret.
    let index =
        rule_index(&rbac, ROUTER, "", "secrets", "update").expect("the router may update secrets");
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(without_verb(rbac.clone(), ROUTER, index, "update"));
    let operator = start_operator(&fake);
    let backend = router_backend(&fake, &db, false);
    let name = workspace_name(user);
    backend.wake(user).await.expect("started");
    operator_sleeps(&fake, &name).await;
    let error = backend.wake(user).await.expect_err("no update");
    forbidden(error, "update resource \"secrets\"");
    operator.abort();

    // No secrets `get`: nothing can be claimed or joined.
    let index =
        rule_index(&rbac, ROUTER, "", "secrets", "get").expect("the router may get secrets");
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(without_verb(rbac, ROUTER, index, "get"));
    let operator = start_operator(&fake);
    let backend = router_backend(&fake, &db, false);
    let error = backend.wake(user).await.expect_err("no get");
    forbidden(error, "get resource \"secrets\"");
    operator.abort();
}

/// A workspace scaled to 0 whose pod the operator has not stopped yet (it is
/// down, say) is not started again with a new token: that pod would keep the old
/// one. The wake waits until the operator put it to sleep, then starts it.
#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_wake_waits_until_the_operator_stopped_the_old_pod(db: PgPool) {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(chart_rbac(NS, RELEASE).expect("the chart's RBAC"));
    let client = fake.client(NS);
    let workspaces = Api::<JarvisWorkspace>::namespaced(client.clone(), NS);
    let secrets = Api::<Secret>::namespaced(client, NS);
    let backend = Arc::new(router_backend(&fake, &db, false));
    let user = user(&db).await;
    let name = workspace_name(user);
    let operator = start_operator(&fake);
    let first = backend.wake(user).await.expect("woken");
    operator.abort();
    let _ = operator.await;
    // The pod has run for long: its token's claim is long over.
    let mut secret = token_secret(&secrets, &name).await.expect("secret");
    secret.metadata.annotations =
        Some([(ISSUED_AT.to_owned(), "2020-01-01T00:00:00Z".to_owned())].into());
    secrets
        .replace(&format!("jw-{name}-token"), &Default::default(), &secret)
        .await
        .expect("aged");
    workspaces
        .patch_scale(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": 0 } })),
        )
        .await
        .expect("scaled to 0");

    let waking = tokio::spawn({
        let backend = backend.clone();
        async move { backend.wake(user).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        token_of(&secrets, &name).await,
        Some(first.token.clone()),
        "no new token while the old pod may run"
    );
    assert!(!waking.is_finished());
    assert!(pod_uid(&fake, &name).is_some(), "the old pod still runs");

    let operator = start_operator(&fake);
    let second = waking.await.expect("joined").expect("woken");
    assert!(second.started);
    assert_ne!(second.token, first.token);
    assert_eq!(token_of(&secrets, &name).await, Some(second.token));
    operator.abort();
}
