//! Warm wake on Kubernetes (issue 20), on the kube_ws cluster (fake API server
//! with the chart's RBAC, the operator's controller, two router replicas, a
//! fake kubelet running each pod as a real sandbox with the real CLI): the
//! operator keeps a pool of warm pods; a waking user's router claims one (no
//! pod is started for the wake, a refill takes its place), the user's files and
//! conversation history are in it, two routers waking more users at once than
//! the pool holds never hand one pod to two users and start pods for the rest,
//! an empty pool wakes as without one, and an operator watching every namespace
//! (`*`) keeps the pool in the routers' namespace, named for it.

mod common;

use std::time::Duration;

use common::{
    kube_cluster::{Cluster, NS, cluster_of, cluster_watching_all, cluster_with_rbac},
    live::text,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use operator::{
    controller::build::{
        Settings, USER_LABEL, WORKSPACE_LABEL, child_name,
        warm::{AVAILABLE, CLAIM_SECRET_KEY, POOL_POD_PREFIX, WARM_LABEL, claim_secret_name},
    },
    testing::rbac::{chart_rbac, rule_index, without_verb},
};
use router::workspaces::kubernetes::workspace_name;
use sandbox::testing::Reply;
use sqlx::PgPool;
use uuid::Uuid;

/// Longest a pool may take to fill.
const FILL: Duration = Duration::from_secs(45);

/// A cluster whose operator keeps `pool` warm pods and whose routers claim them.
async fn warm_cluster(db: PgPool, pool: usize) -> Cluster {
    let settings = Settings {
        warm_pool: pool,
        ..Settings::default()
    };
    cluster_of(db, settings, |c| c.warm_pool = pool.max(1)).await
}

fn pods(c: &Cluster) -> Api<Pod> {
    Api::namespaced(c.client.clone(), NS)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Unclaimed pool pods that are Ready.
async fn available(c: &Cluster) -> Vec<Pod> {
    let selector = format!("{WARM_LABEL}={AVAILABLE}");
    let listed = pods(c)
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("pods");
    listed
        .items
        .into_iter()
        .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Waits until `n` pool pods are Ready and unclaimed.
async fn pool_holds(c: &Cluster, n: usize) {
    tokio::time::timeout(FILL, async {
        while available(c).await.len() != n {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the pool never held {n} ready pods"));
}

/// The pod `user`'s workspace runs on, as its status says.
async fn pod_of(c: &Cluster, user: Uuid) -> String {
    c.workspace(user)
        .await
        .status
        .and_then(|s| s.pod)
        .expect("the workspace names its pod")
}

/// Scales `user`'s workspace to 0 as the idle reaper does; returns once its pod
/// `pod` is gone (it pushed its last changes on SIGTERM).
async fn sleep(c: &Cluster, user: Uuid, pod: &str) {
    let dir = c.pod_dir_of(pod).expect("the pod runs");
    // Not in the second its token was issued (see `Cluster::operator_sleeps`).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.workspaces()
        .patch_scale(
            &workspace_name(user),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": 0 } })),
        )
        .await
        .expect("scaled to 0");
    common::live::wait_for(|| c.pod_dir_of(pod).is_none() && !dir.exists()).await;
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_wake_claims_a_warm_pod_with_the_users_files_and_history_and_the_pool_refills(
    db: PgPool,
) {
    let c = warm_cluster(db, 2).await;
    pool_holds(&c, 2).await;
    assert_eq!(c.pods_started(), 2);
    let alice = c.live.app.register("alice@example.com").await;

    let mut browser = c.live.browser(&alice.access).await;
    browser.woke().await;
    let pod = pod_of(&c, alice.id).await;
    assert!(pod.starts_with(POOL_POD_PREFIX), "a warm pod: {pod}");
    let claimed = pods(&c).get(&pod).await.expect("the claimed pod");
    let labels = claimed.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels[WORKSPACE_LABEL], workspace_name(alice.id));
    assert_eq!(labels[USER_LABEL], alice.id.to_string());
    let owners = claimed.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners.len(), 1, "adopted by the workspace");
    assert_eq!(owners[0].name, workspace_name(alice.id));
    let own = child_name(&workspace_name(alice.id));
    assert!(
        pods(&c).get_opt(&own).await.expect("get").is_none(),
        "no pod was started for the wake"
    );
    // A refill takes the claimed pod's place.
    pool_holds(&c, 2).await;
    assert_eq!(c.pods_started(), 3);

    // The turn streams from the claimed pod; the agent writes a file there.
    let dir = c.pod_dir_of(&pod).expect("its volumes");
    let written = dir.join("workspace/notes/plan.md");
    c.live.api.push(Reply::tool_use(
        "toolu_write",
        "Write",
        serde_json::json!({"file_path": written, "content": "step one: warm pods"}),
    ));
    c.live.api.push(Reply::text(&["Written ", "warm."]));
    browser.message("write the plan", None).await;
    let frames = browser.turn().await;
    assert!(text(&frames).ends_with("Written warm."), "{frames:?}");
    assert!(written.is_file(), "the agent wrote in the claimed pod");
    let conversation = frames[0]["conversation_id"]
        .as_str()
        .expect("conversation")
        .to_owned();

    // Asleep, then woken on another warm pod: her file and her conversation's
    // history are there.
    drop(browser);
    sleep(&c, alice.id, &pod).await;
    pool_holds(&c, 2).await;
    let mut browser = c.live.browser(&alice.access).await;
    browser.woke().await;
    let second = pod_of(&c, alice.id).await;
    assert!(second.starts_with(POOL_POD_PREFIX), "a warm pod: {second}");
    assert_ne!(second, pod);
    let dir = c.pod_dir_of(&second).expect("its volumes");
    assert_eq!(
        std::fs::read_to_string(dir.join("workspace/notes/plan.md")).expect("restored"),
        "step one: warm pods"
    );
    c.live.api.push(Reply::Echo);
    browser
        .message("what did I ask?", Some(&conversation))
        .await;
    let frames = browser.turn().await;
    let heard = text(&frames);
    assert!(
        heard.contains("write the plan | what did I ask?"),
        "the history came back: {frames:?}"
    );
    assert!(
        pods(&c).get_opt(&own).await.expect("get").is_none(),
        "still no pod started for a wake"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn two_routers_waking_more_users_than_the_pool_holds_give_each_a_pod_of_their_own(
    db: PgPool,
) {
    let c = warm_cluster(db, 2).await;
    pool_holds(&c, 2).await;
    let mut users = Vec::new();
    for i in 0..3 {
        users.push(c.live.app.register(&format!("user{i}@example.com")).await);
    }
    let (mut b0, mut b1, mut b2) = tokio::join!(
        c.live.browser(&users[0].access),
        c.other.browser(&users[1].access),
        c.live.browser(&users[2].access),
    );
    tokio::join!(b0.woke(), b1.woke(), b2.woke());
    let mut taken = Vec::new();
    for user in &users {
        let pod = pod_of(&c, user.id).await;
        let labels = pods(&c)
            .get(&pod)
            .await
            .expect("the pod")
            .metadata
            .labels
            .unwrap_or_default();
        assert_eq!(labels[USER_LABEL], user.id.to_string(), "{pod} is theirs");
        taken.push(pod);
    }
    let mut distinct = taken.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "a pod each: {taken:?}");
    let warm = taken
        .iter()
        .filter(|p| p.starts_with(POOL_POD_PREFIX))
        .count();
    assert!(warm >= 2, "both ready warm pods were claimed: {taken:?}");

    // Every one answers, each from its own pod.
    for browser in [&mut b0, &mut b1, &mut b2] {
        browser.message("hello", None).await;
    }
    let (f0, f1, f2) = tokio::join!(b0.turn(), b1.turn(), b2.turn());
    for frames in [f0, f1, f2] {
        assert_eq!(
            frames.last().map(|f| f["type"].clone()),
            Some("done".into()),
            "{frames:?}"
        );
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_empty_pool_wakes_on_a_pod_started_for_the_workspace(db: PgPool) {
    // The routers would claim, but the operator keeps no pool.
    let c = warm_cluster(db, 0).await;
    let alice = c.live.app.register("alice@example.com").await;
    let mut browser = c.live.browser(&alice.access).await;
    browser.woke().await;
    assert_eq!(
        pod_of(&c, alice.id).await,
        child_name(&workspace_name(alice.id))
    );
    assert_eq!(c.pods_started(), 1);
    c.live
        .api
        .push(Reply::text(&["Hello ", "from ", "a cold pod"]));
    browser.message("hi", None).await;
    assert_eq!(text(&browser.turn().await), "Hello from a cold pod");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_operator_watching_every_namespace_keeps_the_pool_the_routers_claim_from(db: PgPool) {
    // The chart with `operator.watchNamespaces: ["*"]`: a ClusterRoleBinding, and
    // the routers' namespace as the pool's.
    let settings = Settings {
        warm_pool: 1,
        warm_pool_namespaces: vec![NS.to_owned()],
        ..Settings::default()
    };
    let c = cluster_watching_all(db, settings, |c| c.warm_pool = 1).await;
    pool_holds(&c, 1).await;
    assert_eq!(c.pods_started(), 1);

    let alice = c.live.app.register("alice@example.com").await;
    let mut browser = c.live.browser(&alice.access).await;
    browser.woke().await;
    let pod = pod_of(&c, alice.id).await;
    assert!(pod.starts_with(POOL_POD_PREFIX), "a warm pod: {pod}");
    let owners = pods(&c)
        .get(&pod)
        .await
        .expect("the claimed pod")
        .metadata
        .owner_references
        .unwrap_or_default();
    assert_eq!(owners.len(), 1, "adopted by the workspace");
    assert_eq!(owners[0].name, workspace_name(alice.id));
    let own = child_name(&workspace_name(alice.id));
    assert!(
        pods(&c).get_opt(&own).await.expect("get").is_none(),
        "no pod was started for the wake"
    );
    pool_holds(&c, 1).await;
    c.live
        .api
        .push(Reply::text(&["Hello ", "from ", "a warm pod"]));
    browser.message("hi", None).await;
    assert_eq!(text(&browser.turn().await), "Hello from a warm pod");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_router_without_the_charts_pods_patch_wakes_on_a_started_pod(db: PgPool) {
    let rbac = chart_rbac(NS, "jarvis").expect("the chart's RBAC");
    let router = "jarvis-router";
    let index = rule_index(&rbac, router, "", "pods", "patch").expect("the router may patch pods");
    let rbac = without_verb(rbac, router, index, "patch");
    let settings = Settings {
        warm_pool: 1,
        ..Settings::default()
    };
    let c = cluster_with_rbac(db, settings, rbac, |c| c.warm_pool = 1).await;
    pool_holds(&c, 1).await;
    let warm = available(&c).await[0].metadata.name.clone();

    // Its claim is refused (403): the wake starts a pod, the warm pod stays in the pool.
    let alice = c.live.app.register("alice@example.com").await;
    let mut browser = c.live.browser(&alice.access).await;
    browser.woke().await;
    assert_eq!(
        pod_of(&c, alice.id).await,
        child_name(&workspace_name(alice.id))
    );
    let still: Vec<_> = available(&c)
        .await
        .into_iter()
        .map(|p| p.metadata.name)
        .collect();
    assert_eq!(still, vec![warm], "unclaimed");
    browser.message("hi", None).await;
    assert_eq!(text(&browser.turn().await), "ok");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_warm_pod_that_refuses_its_claim_is_deleted_and_the_wake_starts_a_pod(db: PgPool) {
    let c = warm_cluster(db, 1).await;
    pool_holds(&c, 1).await;
    let warm = available(&c).await[0].metadata.name.clone().expect("named");
    // Its claim secret changed after it started: the pod refuses what the
    // router reads there now.
    Api::<Secret>::namespaced(c.client.clone(), NS)
        .patch(
            &claim_secret_name(&warm),
            &PatchParams::default(),
            // base64 of "not-the-pods"
            &Patch::Merge(serde_json::json!({ "data": { CLAIM_SECRET_KEY: "bm90LXRoZS1wb2Rz" } })),
        )
        .await
        .expect("secret changed");

    let alice = c.live.app.register("alice@example.com").await;
    let mut browser = c.live.browser(&alice.access).await;
    browser.woke().await;
    assert_eq!(
        pod_of(&c, alice.id).await,
        child_name(&workspace_name(alice.id)),
        "the wake started a pod"
    );
    // The refused pod carried the workspace's labels: it is deleted, not left
    // for the workspace's Service to select.
    tokio::time::timeout(FILL, async {
        while pods(&c)
            .get_opt(&warm)
            .await
            .expect("get")
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the refused pod is deleted");
    browser.message("hi", None).await;
    assert_eq!(text(&browser.turn().await), "ok");
}

/// What a pod start costs the fake kubelet in the benchmarks (scheduling,
/// image and container start on a real node; its own start is a process spawn).
const POD_START: Duration = Duration::from_secs(1);

/// Wake to ready from asleep, and to the end of the first answer, of `USERS`
/// users one after the other, the operator keeping a pool of `pool` and the
/// kubelet taking [`POD_START`] per pod; prints the p50s.
async fn bench_wakes(db: PgPool, pool: usize) {
    const USERS: usize = 4;
    let c = warm_cluster(db, pool).await;
    *c.pods.start_delay.lock().unwrap_or_else(|e| e.into_inner()) = POD_START;
    let (mut ready, mut answered) = (Vec::new(), Vec::new());
    for i in 0..USERS {
        if pool > 0 {
            pool_holds(&c, pool).await;
        }
        let user = c.live.app.register(&format!("user{i}@example.com")).await;
        let started = tokio::time::Instant::now();
        let mut browser = c.live.browser(&user.access).await;
        browser.woke().await;
        ready.push(started.elapsed());
        browser.message("hello", None).await;
        let frames = browser.turn().await;
        answered.push(started.elapsed());
        assert_eq!(text(&frames), "ok", "{frames:?}");
        let pod = pod_of(&c, user.id).await;
        assert_eq!(pod.starts_with(POOL_POD_PREFIX), pool > 0, "{pod}");
    }
    let p50 = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "pool of {pool}, p50 of {USERS}: wake to ready {:?}, to the first answer's end {:?}",
        p50(ready),
        p50(answered)
    );
}

/// Benchmark (not a test; both in one run: `cargo test -p router --test
/// kube_warm bench_wake -- --ignored --nocapture --test-threads 1`): wake to
/// ready from asleep claiming a warm pod ...
#[sqlx::test(migrator = "router::MIGRATOR")]
#[ignore = "a benchmark: run it with --ignored --nocapture"]
async fn bench_wake_warm(db: PgPool) {
    bench_wakes(db, 2).await;
}

/// ... against starting a pod.
#[sqlx::test(migrator = "router::MIGRATOR")]
#[ignore = "a benchmark: run it with --ignored --nocapture"]
async fn bench_wake_cold(db: PgPool) {
    bench_wakes(db, 0).await;
}
