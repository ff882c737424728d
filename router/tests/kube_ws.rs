//! The browser WebSocket with the kubernetes backend: the router (JARVIS_BACKEND
//! kubernetes, JARVIS_KUBE_API_URL at the fake API server, JARVIS_KUBE_ENDPOINT
//! pod-ip), the operator's real controller, and a fake kubelet that runs each pod as
//! a real `sandbox` process on its own loopback "pod IP". A browser connecting to a
//! sleeping workspace sees `waking`, then `ready`, and a turn streams.

mod common;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock, atomic::AtomicU8, atomic::Ordering},
};

use common::live::{Live, claude_bin, sandbox_bin, text};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use operator::{
    controller::{self, build::Settings},
    crd::JarvisWorkspace,
    metrics::Metrics,
    testing::{FakeApiServer, PodAddress, PodRunner},
};
use prometheus_client::registry::Registry;
use router::config::{Backend, KubeEndpoint};
use sandbox::testing::Reply;
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};

const NS: &str = "jarvis";

/// Runs each pod as a `sandbox` process listening on `127.77.<n>.1:<port>`.
#[derive(Default)]
struct SandboxPods {
    client: OnceLock<kube::Client>,
    gateway: OnceLock<String>,
    dir: OnceLock<PathBuf>,
    next: AtomicU8,
    children: Mutex<HashMap<String, tokio::process::Child>>,
}

impl SandboxPods {
    async fn run(self: Arc<Self>, pod: Value) -> Result<PodAddress, String> {
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let container = &pod["spec"]["containers"][0];
        let port = container["ports"][0]["containerPort"]
            .as_i64()
            .ok_or("no port")?;
        let env = container["env"].as_array().cloned().unwrap_or_default();
        let secret_ref = env
            .iter()
            .find(|e| e["name"] == "JARVIS_WORKSPACE_TOKEN")
            .map(|e| e["valueFrom"]["secretKeyRef"].clone())
            .ok_or("no token env")?;
        let client = self.client.get().ok_or("no client")?.clone();
        let secret = Api::<Secret>::namespaced(client, NS)
            .get(secret_ref["name"].as_str().unwrap_or_default())
            .await
            .map_err(|e| format!("token secret: {e}"))?;
        let token = secret
            .data
            .and_then(|d| {
                d.get(secret_ref["key"].as_str().unwrap_or_default())
                    .cloned()
            })
            .ok_or("no token in the secret")?;
        let token = String::from_utf8(token.0).map_err(|e| e.to_string())?;
        let n = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let ip = format!("127.77.{n}.1");
        let dir = self.dir.get().ok_or("no dir")?.join(format!("pod-{n}"));
        for sub in ["workspace", "state"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
        }
        let mut child = tokio::process::Command::new(sandbox_bin())
            .arg("--listen")
            .arg(format!("{ip}:{port}"))
            .arg("--workspace-token")
            .arg(&token)
            .arg("--gateway-url")
            .arg(self.gateway.get().ok_or("no gateway")?)
            .arg("--claude-bin")
            .arg(claude_bin())
            .arg("--workspace-dir")
            .arg(dir.join("workspace"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawning the sandbox: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next_line()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the sandbox exited before its ready line")?;
        let ready: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        if ready["ready"] != true {
            return Err(format!("unexpected first line {line}"));
        }
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, child);
        Ok(PodAddress { ip })
    }
}

struct Runner(Arc<SandboxPods>);

impl PodRunner for Runner {
    fn start(&self, pod: Value) -> BoxFuture<'static, Result<PodAddress, String>> {
        Box::pin(self.0.clone().run(pod))
    }

    fn stop(&self, _namespace: String, name: String) -> BoxFuture<'static, ()> {
        let child = self
            .0
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        Box::pin(async move {
            if let Some(mut child) = child {
                let _ = child.kill().await;
            }
        })
    }
}

fn status(frame: &Value) -> Option<&str> {
    (frame["type"] == "status").then(|| frame["state"].as_str().unwrap_or(""))
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_browser_wakes_a_sleeping_kubernetes_workspace(db: PgPool) {
    let pods = Arc::new(SandboxPods::default());
    let fake = FakeApiServer::with_runner(Arc::new(Runner(pods.clone())))
        .await
        .expect("fake apiserver");
    let client = fake.client(NS);
    let _ = pods.client.set(client.clone());
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    let operator = tokio::spawn(controller::run(
        client.clone(),
        Settings::default(),
        metrics,
    ));
    let api_url = fake.url();
    let live = Live::with_config(db, |c| {
        c.backend = Backend::Kubernetes;
        c.kube_api_url = Some(api_url);
        c.kube_endpoint = KubeEndpoint::PodIp;
        c.kube_namespace = NS.to_owned();
    })
    .await;
    let _ = pods.gateway.set(live.url.clone());
    let _ = pods.dir.set(live.tmp.path().join("pods"));

    let alice = live.app.register("alice@example.com").await;
    live.api.push(Reply::text(&["Hello ", "from ", "a pod"]));
    let mut browser = live.browser(&alice.access).await;
    assert_eq!(
        browser.next().await.as_ref().and_then(status),
        Some("waking")
    );
    assert_eq!(
        browser.next().await.as_ref().and_then(status),
        Some("ready")
    );

    // The router made alice's workspace, and the operator runs it.
    let workspaces = Api::<JarvisWorkspace>::namespaced(client, NS);
    let listed = workspaces.list(&Default::default()).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].spec.user, alice.id.to_string());

    browser.message("hi", None).await;
    let frames = browser.turn().await;
    assert_eq!(text(&frames), "Hello from a pod", "{frames:?}");
    operator.abort();
}
