//! The browser WebSocket with the kubernetes backend: two router replicas
//! (JARVIS_BACKEND kubernetes, JARVIS_KUBE_API_URL at the fake API server through a
//! proxy as the router's service account each, JARVIS_KUBE_ENDPOINT pod-ip, one
//! database), the operator's real controller, and a fake kubelet that runs each pod
//! as a real `sandbox` process on its own loopback "pod IP" (with the pod's plain
//! environment, as a kubelet does; stopped with SIGTERM, its volumes then wiped). A
//! browser connecting to a sleeping workspace sees `waking`, then `ready`, and a turn
//! streams; browsers on both replicas (or a restarted router) share one pod; only
//! the operator puts it to sleep, once no replica has a browser of it; what the
//! agent wrote, its session and an upload made while asleep are there again after
//! the workspace was scaled to zero and woken on a fresh pod.

mod common;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use common::{
    kube_cluster::{NS, Runner, SandboxPods, cluster, cluster_with, status},
    live::{Live, text},
};
use kube::Api;
use operator::{
    controller::{self, build::Settings},
    crd::{JarvisWorkspace, WorkspacePhase},
    metrics::Metrics,
    testing::{
        FakeApiServer,
        rbac::{Proxy, chart_rbac},
    },
};
use prometheus_client::registry::Registry;
use sandbox::testing::Reply;
use serde_json::Value;
use sqlx::PgPool;

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_browser_wakes_a_sleeping_kubernetes_workspace(db: PgPool) {
    let c = cluster(db).await;
    let live = &c.live;
    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::text(&["Hello ", "from ", "a pod"]));
    let mut browser = live.browser(&alice.access).await;
    browser.woke().await;

    // The router made alice's workspace, and the operator runs it.
    let workspaces = Api::<JarvisWorkspace>::namespaced(c.client.clone(), NS);
    let listed = workspaces.list(&Default::default()).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].spec.user, alice.id.to_string());

    browser.message("hi", None).await;
    let frames = browser.turn().await;
    assert_eq!(text(&frames), "Hello from a pod", "{frames:?}");
}

/// Uploads `(name, bytes)` as `user`; the new file's id.
async fn upload(live: &Live, user: &common::User, name: &str, bytes: &[u8]) -> String {
    const BOUNDARY: &str = "kube-ws-boundary-1234";
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let reply: Value = reqwest::Client::new()
        .post(format!("{}/api/files", live.url))
        .bearer_auth(&user.access)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("sent")
        .error_for_status()
        .expect("uploaded")
        .json()
        .await
        .expect("JSON");
    reply["files"][0]["id"].as_str().expect("id").to_owned()
}

/// The first tool result of a turn.
fn first_result(frames: &[Value]) -> String {
    common::live::of_type(frames, "tool_result")
        .first()
        .and_then(|r| r["content"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no tool result: {frames:?}"))
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn files_and_the_session_survive_scale_to_zero_on_a_fresh_pod(db: PgPool) {
    let c = cluster(db).await;
    let live = &c.live;
    let alice = live.app.register("alice@example.com").await;
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;

    // The agent writes a file in its pod.
    let pod1 = c.pod_dir();
    let written = pod1.join("workspace/notes/plan.md");
    live.api.push(Reply::tool_use(
        "toolu_write",
        "Write",
        serde_json::json!({"file_path": written, "content": "step one: sync pods"}),
    ));
    live.api.push(Reply::text(&["Written."]));
    browser.message("write the plan", None).await;
    let frames = browser.turn().await;
    assert_eq!(
        frames.last().map(|f| &f["type"]),
        Some(&Value::from("done"))
    );
    let conversation = frames[0]["conversation_id"]
        .as_str()
        .expect("conversation")
        .to_owned();
    assert!(
        written.is_file(),
        "the agent wrote {}: {frames:?}",
        written.display()
    );

    // Scaled to zero by the operator: the pod gets SIGTERM and its volumes go.
    drop(browser);
    c.operator_sleeps(alice.id).await;
    assert!(!pod1.exists(), "the pod's volumes are gone");
    let files = live.app.get("/api/files", &alice.access).await;
    assert!(
        files.body["files"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["path"] == "notes/plan.md")),
        "{}",
        files.body
    );

    // An upload while asleep: the router cannot place it on any disk.
    upload(live, &alice, "data.csv", b"region,total\nnorth,42\n").await;

    // The next connection wakes a fresh pod with everything back.
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    let pod2 = c.pod_dir();
    assert_ne!(pod1, pod2, "a fresh pod");
    assert_eq!(
        std::fs::read_to_string(pod2.join("workspace/notes/plan.md")).expect("restored"),
        "step one: sync pods"
    );
    assert_eq!(
        std::fs::read(pod2.join("workspace/uploads/data.csv")).expect("restored"),
        b"region,total\nnorth,42\n"
    );
    assert!(
        sandbox::agents::transcript_exists(&pod2.join("state"), &conversation),
        "the agent's session came back"
    );

    // The agent reads its file in the resumed conversation.
    live.api.push(Reply::tool_use(
        "toolu_read",
        "Read",
        serde_json::json!({"file_path": pod2.join("workspace/notes/plan.md")}),
    ));
    live.api.push(Reply::text(&["It says step one."]));
    browser
        .message("what is the plan?", Some(&conversation))
        .await;
    let frames = browser.turn().await;
    assert!(
        first_result(&frames).contains("step one: sync pods"),
        "{frames:?}"
    );

    // An upload made while the pod is awake is fetched when a message names it.
    let id = upload(live, &alice, "more.csv", b"south,17\n").await;
    assert!(!pod2.join("workspace/uploads/more.csv").exists());
    live.api.push(Reply::text(&["Got it."]));
    browser
        .send(serde_json::json!({"type": "message", "content": "and this?", "attachments": [id]}))
        .await;
    let frames = browser.turn().await;
    assert_eq!(
        frames.last().map(|f| &f["type"]),
        Some(&Value::from("done"))
    );
    assert_eq!(
        std::fs::read(pod2.join("workspace/uploads/more.csv")).expect("fetched"),
        b"south,17\n"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_restarted_router_joins_the_running_pod(db: PgPool) {
    let c = cluster(db.clone()).await;
    let live = &c.live;
    let alice = live.app.register("alice@example.com").await;
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;
    let pod1 = c.pod_dir();
    // Written after the last turn (a background job, say): not stored yet.
    std::fs::write(pod1.join("workspace/late.txt"), b"written late").expect("write");
    drop(browser);

    // Another router (this one restarted) wakes the workspace that still runs:
    // it joins that pod, which keeps its files.
    let restarted = router::http::AppState::new((*live.app.state.config).clone(), db)
        .await
        .expect("state");
    let hub = restarted.workspaces.hub(alice.id);
    restarted.workspaces.ready(&hub).await.expect("awake");
    assert_eq!(c.pods_started(), 1, "no new pod");
    assert_eq!(c.pod_dir(), pod1, "the same pod");
    assert_eq!(
        std::fs::read(pod1.join("workspace/late.txt")).expect("still there"),
        b"written late"
    );

    // Letting go of it (a router's shutdown) leaves it running for the others.
    restarted.workspaces.sleep_all().await;
    assert_eq!(c.pod_dir(), pod1, "still running");
    assert_eq!(c.workspace(alice.id).await.spec.replicas, 1);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn browsers_on_two_replicas_share_one_pod(db: PgPool) {
    let c = cluster(db).await;
    let alice = c.live.app.register("alice@example.com").await;
    let mut on_a = c.live.browser(&alice.access).await;
    on_a.ready().await;
    let pod = c.pod_dir();
    let mut on_b = c.other.browser(&alice.access).await;
    on_b.ready().await;
    assert_eq!(c.pods_started(), 1, "B joined A's pod");
    assert_eq!(c.pod_dir(), pod);
    assert_eq!(c.workspace(alice.id).await.spec.replicas, 1);

    // A turn through B runs in that pod (its model calls go through A, the
    // gateway this pod was given).
    c.live.api.push(Reply::text(&["Hello ", "from ", "B"]));
    on_b.message("hi", None).await;
    let frames = on_b.turn().await;
    assert_eq!(text(&frames), "Hello from B", "{frames:?}");
    assert_eq!(c.pods_started(), 1, "still the one pod");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn two_replicas_waking_a_sleeping_workspace_at_once_start_one_pod(db: PgPool) {
    let c = cluster(db).await;
    let alice = c.live.app.register("alice@example.com").await;
    for round in 1..=2u8 {
        let (mut on_a, mut on_b) = tokio::join!(
            c.live.browser(&alice.access),
            c.other.browser(&alice.access)
        );
        tokio::join!(on_a.ready(), on_b.ready());
        assert_eq!(c.pods_started(), round, "one pod per wake");
        assert_eq!(c.pods_running(), 1);
        if round == 1 {
            drop((on_a, on_b));
            c.operator_sleeps(alice.id).await;
        }
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn only_the_operator_sleeps_a_workspace_once_no_replica_has_a_browser(db: PgPool) {
    // The shortest idle timeout the operator takes.
    let idle = Duration::from_secs(60);
    let c = cluster_with(db, |config| config.idle_timeout = idle).await;
    let alice = c.live.app.register("alice@example.com").await;
    let mut on_a = c.live.browser(&alice.access).await;
    on_a.ready().await;
    let mut on_b = c.other.browser(&alice.access).await;
    on_b.ready().await;
    assert_eq!(c.workspace(alice.id).await.spec.idle_timeout, "1m");

    // A's tab closes; B's stays open past the idle timeout: B reports activity,
    // and neither A (no browser) nor anyone else stops the pod.
    drop(on_a);
    tokio::time::sleep(idle + idle / 4).await;
    assert_eq!(c.pods_running(), 1, "the pod still runs");
    assert_eq!(c.pods_started(), 1);
    let ws = c.workspace(alice.id).await;
    assert_eq!(ws.spec.replicas, 1);
    assert_eq!(ws.status.and_then(|s| s.phase), Some(WorkspacePhase::Ready));

    // Once B's closes too, the operator puts it to sleep.
    drop(on_b);
    tokio::time::timeout(4 * idle, async {
        while c.pods_running() > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the operator slept the idle workspace");
    let ws = c.workspace(alice.id).await;
    assert_eq!(ws.spec.replicas, 0);
}

/// Two router replicas as processes (the real binary, kubernetes backend, each
/// with the chart's router rights through a proxy of its own), the pods reaching
/// them through a plain load balancer (the router Service), the browsers straight.
struct Replicas {
    routers: Vec<common::process::RouterProcess>,
    pods: Arc<SandboxPods>,
    api: sandbox::testing::FakeApi,
    operator: tokio::task::JoinHandle<Result<(), operator::Error>>,
    _service: common::balancer::Balancer,
    _proxies: Vec<Proxy>,
    _fake: FakeApiServer,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.operator.abort();
    }
}

async fn replicas(db: &PgPool) -> Replicas {
    let pods = Arc::new(SandboxPods::default());
    let fake = FakeApiServer::with_runner(Arc::new(Runner(pods.clone())))
        .await
        .expect("fake apiserver");
    fake.enforce_rbac(chart_rbac(NS, "jarvis").expect("the chart's RBAC"));
    let _ = pods.client.set(fake.client(NS));
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    let operator = tokio::spawn(controller::run(
        fake.client_as(NS, NS, "jarvis-operator"),
        Settings::default(),
        metrics,
    ));
    let api = sandbox::testing::FakeApi::start()
        .await
        .expect("fake model API");
    let db_url = common::process::database_url(db).await;
    let (mut routers, mut proxies, mut dirs) = (Vec::new(), Vec::new(), Vec::new());
    let mut sandbox_port = 0;
    // One after the other: the first makes the database's signing secret.
    for _ in 0..2 {
        let proxy = fake
            .proxy_as(NS, "jarvis-router")
            .await
            .expect("a proxy as the router");
        let dir = common::process::data_dir();
        let router = common::process::spawn_ready(|listen| {
            sandbox_port = common::process::free_port();
            let mut command =
                common::process::router_command(&db_url, dir.path(), &api.url(), listen);
            command
                .env("JARVIS_BACKEND", "kubernetes")
                .env("JARVIS_KUBE_API_URL", proxy.url())
                .env("JARVIS_KUBE_ENDPOINT", "pod-ip")
                .env("JARVIS_KUBE_NAMESPACE", NS)
                .env("JARVIS_SANDBOX_LISTEN", format!("127.0.0.1:{sandbox_port}"));
            command
        })
        .await;
        routers.push(router);
        proxies.push(proxy);
        dirs.push(dir);
    }
    // The router Service the pods reach. Its endpoint is replica B: the model
    // stream of the answer then runs through B, and killing A cuts only what A
    // relays (browsers, its link). A model stream through a dying replica breaks
    // with it; the CLI's own retry starts that request again.
    let service = common::balancer::Balancer::start(vec![std::net::SocketAddr::from((
        [127, 0, 0, 1],
        sandbox_port,
    ))])
    .await;
    let _ = pods.gateway.set(service.url());
    let _ = pods.dir.set(dirs[0].path().join("pods"));
    Replicas {
        routers,
        pods,
        api,
        operator,
        _service: service,
        _proxies: proxies,
        _fake: fake,
        _dirs: dirs,
    }
}

fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("[{i:04}] ")).collect()
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["seq"].as_u64()).collect()
}

/// `frames`' numbered events are `from..=to`, each once, in order.
fn contiguous(frames: &[Value]) -> bool {
    let s = seqs(frames);
    s.windows(2).all(|w| w[1] == w[0] + 1)
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_replica_killed_mid_answer_loses_nothing_and_its_tab_resumes_on_the_other(db: PgPool) {
    use common::process::{open, register, send, until};
    let mut r = replicas(&db).await;
    let (a, b) = (r.routers[0].url.clone(), r.routers[1].url.clone());
    let token = register(&a, "alice@example.com").await;
    let deltas = numbered(1200);
    let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
    r.api.push(Reply::text(&refs));

    // Tab 1 on A starts a long answer; tab 2 on B joins the same pod and follows it.
    let is_ready = |f: &Value| f["type"] == "status" && f["state"] == "ready";
    let mut tab1 = open(&a, &token).await;
    until(&mut tab1, is_ready).await;
    send(
        &mut tab1,
        serde_json::json!({"type": "message", "content": "count"}),
    )
    .await;
    let mut tab2 = open(&b, &token).await;
    until(&mut tab2, is_ready).await;
    let mut seen = until(&mut tab1, |f| {
        f["type"] == "text" && f["delta"] == "[0100] "
    })
    .await;
    let conversation = seen
        .iter()
        .find(|f| f["type"] == "turn")
        .and_then(|f| f["conversation_id"].as_str())
        .expect("the turn event")
        .to_owned();
    seen.retain(|f| f["seq"].is_u64());

    // A dies without a word.
    r.routers[0].child.start_kill().expect("SIGKILL");
    let _ = r.routers[0].child.wait().await;

    // Tab 2 on B sees the answer to its end, once.
    let followed = until(&mut tab2, |f| f["type"] == "done" || f["type"] == "error").await;
    assert_eq!(
        followed.last().map(|f| f["type"].clone()),
        Some("done".into())
    );
    assert!(contiguous(&followed), "{:?}", seqs(&followed));
    assert!(
        deltas.concat().ends_with(&text(&followed)) && text(&followed).len() > 1000,
        "B's tab saw the rest of the answer"
    );

    // Tab 1 reconnects (the balancer sends it to B) and resumes after what it saw.
    let after = *seqs(&seen).last().expect("numbered");
    let mut tab1 = open(&b, &token).await;
    until(&mut tab1, is_ready).await;
    send(
        &mut tab1,
        serde_json::json!({"type": "resume", "conversation_id": conversation, "after_seq": after}),
    )
    .await;
    let rest = until(&mut tab1, |f| f["type"] == "done").await;
    assert_eq!(seqs(&rest).first(), Some(&(after + 1)));
    assert!(contiguous(&rest), "{:?}", seqs(&rest));
    assert_eq!(
        format!("{}{}", text(&seen), text(&rest)),
        deltas.concat(),
        "the whole answer, each part once"
    );

    // One pod all along, and the answer stored once, complete.
    assert_eq!(r.pods.next.load(Ordering::SeqCst), 1, "the same pod");
    let stored: Vec<(String, bool)> =
        sqlx::query_as("select content, complete from messages where role = 'assistant'")
            .fetch_all(&db)
            .await
            .expect("messages");
    assert_eq!(stored, vec![(deltas.concat(), true)]);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_connection_keeps_reading_through_a_slow_wake_and_its_turn_outlives_it(db: PgPool) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let c = cluster(db.clone()).await;
    *c.pods.start_delay.lock().unwrap_or_else(|e| e.into_inner()) = Duration::from_secs(4);
    let alice = c.live.app.register("alice@example.com").await;
    c.live.api.push(Reply::text(&["sent ", "while ", "waking"]));
    let mut browser = c.live.browser(&alice.access).await;
    assert_eq!(
        browser.next().await.as_ref().and_then(status),
        Some("waking")
    );
    browser.message("are you there?", None).await;

    // The message waits for the wake; the connection still answers a ping at once.
    let asked = tokio::time::Instant::now();
    browser
        .ws
        .send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match browser.ws.next().await {
                Some(Ok(Message::Pong(data))) => return data,
                Some(Ok(_)) => {}
                other => panic!("the connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a pong while the workspace wakes");
    assert_eq!(&pong[..], b"still there?");
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert_eq!(c.pods_started(), 0, "the pod is still starting");

    // The tab closes before the workspace is up: the message it sent still runs
    // to its end and is stored.
    drop(browser);
    let stored = common::live::stored_answer(&db, alice.id).await;
    assert_eq!(stored, "sent while waking");
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Benchmark (not a test: `cargo test --release -p router --test kube_ws
/// bench_replicas -- --ignored --nocapture`): a second replica joining a running
/// workspace against a cold wake of it, and turns per second through one replica
/// against the same turns through two, in one run.
#[sqlx::test(migrator = "router::MIGRATOR")]
#[ignore = "a benchmark: run it with --ignored --nocapture in the release profile"]
async fn bench_replicas(db: PgPool) {
    const USERS: usize = 4;
    const TURNS: usize = 10;
    let c = cluster(db).await;
    let mut users = Vec::new();
    let (mut cold, mut join) = (Vec::new(), Vec::new());
    for i in 0..USERS {
        let user = c.live.app.register(&format!("user{i}@example.com")).await;
        // The free plan's 20 requests a minute would refuse the turns measured.
        sqlx::query("update users set tier = 'enterprise' where id = $1")
            .bind(user.id)
            .execute(&c.live.app.db)
            .await
            .expect("plan");
        let started = tokio::time::Instant::now();
        let mut on_a = c.live.browser(&user.access).await;
        on_a.ready().await;
        cold.push(started.elapsed());
        let started = tokio::time::Instant::now();
        let mut on_b = c.other.browser(&user.access).await;
        on_b.ready().await;
        join.push(started.elapsed());
        // Each user's CLI starts with a first turn, outside what is measured.
        c.live.api.push(Reply::text(&["warm"]));
        on_a.message("warm up", None).await;
        let frames = on_a.turn().await;
        let conversation = frames[0]["conversation_id"].as_str().map(str::to_owned);
        on_b.turn().await;
        users.push((on_a, on_b, conversation));
    }
    let (cold, join) = (p50(cold), p50(join));
    println!(
        "wake to ready, p50 of {USERS}: cold (pod start) {cold:?}, second replica joining {join:?} ({:.3}× the cold wake)",
        join.as_secs_f64() / cold.as_secs_f64()
    );

    // The same turns, every user's through replica A, then half of them through B.
    let mut rates = Vec::new();
    for through_both in [false, true] {
        for _ in 0..USERS * TURNS {
            c.live.api.push(Reply::text(&["a ", "short ", "answer"]));
        }
        let started = tokio::time::Instant::now();
        futures::future::join_all(users.iter_mut().enumerate().map(
            |(i, (on_a, on_b, conversation))| async move {
                let (sender, other) = if through_both && i % 2 == 1 {
                    (on_b, on_a)
                } else {
                    (on_a, on_b)
                };
                for _ in 0..TURNS {
                    sender.message("again", conversation.as_deref()).await;
                    let frames = sender.turn().await;
                    assert_eq!(
                        frames.last().map(|f| &f["type"]),
                        Some(&"done".into()),
                        "{frames:?}"
                    );
                    // The tab on the other replica sees the same turn.
                    other.turn().await;
                }
            },
        ))
        .await;
        let rate = (USERS * TURNS) as f64 / started.elapsed().as_secs_f64();
        rates.push(rate);
        println!(
            "{} turns of {USERS} users through {}: {rate:.1} turns/s",
            USERS * TURNS,
            if through_both {
                "two replicas"
            } else {
                "one replica"
            }
        );
    }
    println!("two replicas ÷ one: {:.2}×", rates[1] / rates[0]);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_tab_on_the_other_replica_sees_the_turn_and_its_interrupt_stops_it(db: PgPool) {
    let c = cluster(db).await;
    let alice = c.live.app.register("alice@example.com").await;
    let deltas = numbered(3000);
    let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
    c.live.api.push(Reply::text(&refs));
    let mut on_a = c.live.browser(&alice.access).await;
    on_a.ready().await;
    let mut on_b = c.other.browser(&alice.access).await;
    on_b.ready().await;

    on_a.message("count to 3000", None).await;
    let seen = on_b
        .until(|f| f["type"] == "text" && f["delta"] == "[0020] ")
        .await;
    let conversation = seen
        .iter()
        .find(|f| f["type"] == "turn")
        .and_then(|f| f["conversation_id"].as_str())
        .expect("B's tab saw the turn start")
        .to_owned();
    on_b.send(serde_json::json!({"type": "interrupt", "conversation_id": conversation}))
        .await;
    let end_b = on_b.turn().await;
    let end_a = on_a.turn().await;
    for end in [&end_a, &end_b] {
        assert_eq!(end.last().map(|f| f["type"].clone()), Some("done".into()));
    }
    let shown = text(&end_a);
    assert!(
        shown.len() < deltas.concat().len(),
        "the answer stopped early ({} of {} characters)",
        shown.len(),
        deltas.concat().len()
    );
}

/// A plain HTTP stand-in for a host of the internet on 127.0.0.2 (a loopback
/// address the sandbox's `NO_PROXY` does not name) answering `hello from NAME`;
/// its port.
async fn http_stand_in(name: &'static str) -> u16 {
    use hyper::{Response, service::service_fn};
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(move |_req| async move {
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(format!("hello from {name}\n")),
                )))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    port
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_pods_agent_reaches_the_internet_only_through_the_routers_egress_proxy(db: PgPool) {
    let allowed = http_stand_in("the allowed host").await;
    let other = http_stand_in("another host").await;
    let plan = serde_json::json!({ "egress_allow": [format!("127.0.0.2:{allowed}")] });
    let plans = serde_json::json!({ "free": plan, "pro": plan, "enterprise": plan }).to_string();
    let c = cluster_with(db, |config| {
        // The router Service's egress port: each replica's proxy on a port of its own.
        config.egress_listen = Some(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            common::process::free_port(),
        )));
        // Loopback let through, to reach the stand-ins; nothing else.
        config.egress_deny = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,\
                              0.0.0.0/8,100.64.0.0/10,fc00::/7,fe80::/10"
            .into();
        config.plans = Some(plans.clone());
        // The host off the list is asked about in the tab, which does not answer.
        config.egress_approval_timeout = Duration::from_secs(2);
    })
    .await;
    let live = &c.live;
    let alice = live.app.register("alice@example.com").await;
    let mut browser = live.browser(&alice.access).await;
    browser.ready().await;

    // The operator gave the pod the router Service's egress port.
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.client.clone(), NS)
        .list(&Default::default())
        .await
        .expect("pods");
    let args = pods.items[0].spec.as_ref().expect("spec").containers[0]
        .args
        .clone()
        .unwrap_or_default();
    let asked = args
        .iter()
        .position(|a| a == "--egress-proxy")
        .and_then(|i| args.get(i + 1));
    assert_eq!(
        asked.map(String::as_str),
        Settings::default().egress_proxy().as_deref(),
        "{args:?}"
    );

    live.api.push(Reply::tool_use(
        "toolu_egress",
        "Bash",
        serde_json::json!({
            "command": format!(
                "echo PROXY=$HTTP_PROXY; curl -sS http://127.0.0.2:{allowed}/; \
                 curl -sS -o /dev/null -D - http://127.0.0.2:{other}/; echo END"
            ),
            "description": "fetch",
        }),
    ));
    live.api.push(Reply::text(&["Fetched."]));
    browser.message("fetch it", None).await;
    let frames = browser.turn().await;
    let output = first_result(&frames);
    assert!(output.contains("PROXY=http://127.0.0.1:"), "{output}");
    assert!(output.contains("hello from the allowed host"), "{output}");
    assert!(!output.contains("hello from another host"), "{output}");
    let lower = output.to_ascii_lowercase();
    assert!(lower.contains("http/1.1 403"), "{output}");
    assert!(
        lower.contains("x-jarvis-egress: denied; reason=not_approved"),
        "{output}"
    );
    assert!(output.contains("END"), "{output}");

    // Both audited under alice: the pod's workspace token is who it is.
    let rows = || async {
        sqlx::query_as::<_, (i32, String, String, i64)>(
            "select port, decision, reason, bytes_down from egress_connections \
             where owner_id = $1 and host = '127.0.0.2' order by id",
        )
        .bind(alice.id)
        .fetch_all(&live.app.db)
        .await
        .expect("audit rows")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut found = rows().await;
    while found.len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        found = rows().await;
    }
    assert_eq!(found.len(), 2, "{found:?}");
    let (port, decision, reason, bytes_down) = &found[0];
    assert_eq!(
        (*port, decision.as_str(), reason.as_str()),
        (i32::from(allowed), "allowed", "plan")
    );
    assert!(*bytes_down > 0, "{found:?}");
    let (port, decision, reason, _) = &found[1];
    assert_eq!(
        (*port, decision.as_str(), reason.as_str()),
        (i32::from(other), "denied", "not_approved")
    );
}
