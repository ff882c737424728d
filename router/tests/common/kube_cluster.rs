//! The kubernetes backend's test cluster: the fake API server enforcing the
//! chart's RBAC, the operator's real controller, two router replicas (kubernetes
//! backend, each through a `kubectl proxy` as the router's service account, pod
//! IPs as endpoints, one database), and a fake kubelet that runs each pod as a
//! real `sandbox` process on its own loopback "pod IP" (with the pod's plain
//! environment and its Secret-held token or claim secret, as a kubelet does;
//! stopped with SIGTERM, its volumes then wiped).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock, atomic::AtomicU8, atomic::AtomicU16, atomic::Ordering},
    time::Duration,
};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use operator::{
    controller::{self, Scope, build::Settings},
    crd::JarvisWorkspace,
    metrics::Metrics,
    testing::{
        FakeApiServer, PodAddress, PodRunner,
        rbac::{Proxy, chart_rbac, chart_rbac_with},
    },
};
use prometheus_client::registry::Registry;
use router::config::{Backend, Config, KubeEndpoint};
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::live::{Live, claude_bin, sandbox_bin};

pub const NS: &str = "jarvis";

/// The kubelet's default termination grace period.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// The next pod's host number in this process (its loopback "pod IP").
static NEXT_HOST: AtomicU16 = AtomicU16::new(0);

/// Runs each pod as a `sandbox` process listening on its own `127.b.x.y:<port>`.
#[derive(Default)]
pub struct SandboxPods {
    pub client: OnceLock<kube::Client>,
    pub gateway: OnceLock<String>,
    /// Where the router Service's egress port leads (`JARVIS_EGRESS_LISTEN` of
    /// replica A), as cluster DNS would resolve a pod's `--egress-proxy`.
    pub egress: OnceLock<String>,
    pub dir: OnceLock<PathBuf>,
    /// Pods started so far.
    pub next: AtomicU8,
    /// How long the kubelet takes before it starts a pod's container (a slow
    /// image pull, a busy node).
    pub start_delay: Mutex<Duration>,
    /// Running pods: the process and its volumes' directory.
    pub children: Mutex<HashMap<String, (tokio::process::Child, PathBuf)>>,
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
        // A workspace's pod has its token; a warm pool pod its claim secret.
        let (flag, secret_ref) = [
            ("--workspace-token", "JARVIS_WORKSPACE_TOKEN"),
            ("--claim-secret", "JARVIS_CLAIM_SECRET"),
        ]
        .into_iter()
        .find_map(|(flag, var)| {
            env.iter()
                .find(|e| e["name"] == var)
                .map(|e| (flag, e["valueFrom"]["secretKeyRef"].clone()))
        })
        .ok_or("no token or claim secret env")?;
        let client = self.client.get().ok_or("no client")?.clone();
        let secrets = Api::<Secret>::namespaced(client, NS);
        let secret_name = secret_ref["name"].as_str().unwrap_or_default();
        // As a kubelet, it waits for a Secret made just after its pod.
        let mut secret = None;
        for _ in 0..100 {
            match secrets.get_opt(secret_name).await {
                Ok(Some(found)) => {
                    secret = Some(found);
                    break;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => return Err(format!("secret {secret_name}: {e}")),
            }
        }
        let secret = secret.ok_or_else(|| format!("no secret {secret_name}"))?;
        let token = secret
            .data
            .and_then(|d| {
                d.get(secret_ref["key"].as_str().unwrap_or_default())
                    .cloned()
            })
            .ok_or("no value in the secret")?;
        let token = String::from_utf8(token.0).map_err(|e| e.to_string())?;
        let delay = *self.start_delay.lock().unwrap_or_else(|e| e.into_inner());
        tokio::time::sleep(delay).await;
        let n = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        // Every test's pods at addresses of their own (the tests run at once).
        let host = NEXT_HOST.fetch_add(1, Ordering::SeqCst);
        // And each test binary in a range of its own.
        let base = 20 + std::process::id() % 200;
        let ip = format!("127.{base}.{}.{}", host / 250, host % 250 + 1);
        let dir = self.dir.get().ok_or("no dir")?.join(format!("pod-{n}"));
        for sub in ["workspace", "state"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
        }
        let mut command = tokio::process::Command::new(sandbox_bin());
        // The pod's plain variables (`JARVIS_SYNC`), as the kubelet sets them.
        for var in &env {
            if let (Some(name), Some(value)) = (var["name"].as_str(), var["value"].as_str()) {
                command.env(name, value);
            }
        }
        // The pod's `--egress-proxy` names the router Service's egress port.
        let args = container["args"].as_array().cloned().unwrap_or_default();
        if args.iter().any(|a| a == "--egress-proxy")
            && let Some(egress) = self.egress.get()
        {
            command.arg("--egress-proxy").arg(egress);
        }
        let mut child = command
            .arg("--listen")
            .arg(format!("{ip}:{port}"))
            .arg(flag)
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
            .insert(name, (child, dir));
        Ok(PodAddress { ip })
    }
}

pub struct Runner(pub Arc<SandboxPods>);

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
        // As the kubelet: SIGTERM, a grace period, then SIGKILL; the pod's
        // emptyDir volumes go with it.
        Box::pin(async move {
            if let Some((mut child, dir)) = child {
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok())
                    && let Some(pid) = rustix::process::Pid::from_raw(pid)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                let _ = std::fs::remove_dir_all(dir);
            }
        })
    }
}

pub fn status(frame: &Value) -> Option<&str> {
    (frame["type"] == "status").then(|| frame["state"].as_str().unwrap_or(""))
}

/// Two router replicas with the kubernetes backend (one database), the operator's
/// controller and the fake kubelet, against the fake API server.
pub struct Cluster {
    /// Replica A: the router the pods reach (their gateway URL).
    pub live: Live,
    /// Replica B.
    pub other: Live,
    pub pods: Arc<SandboxPods>,
    pub client: kube::Client,
    pub operator: tokio::task::JoinHandle<Result<(), operator::Error>>,
    _proxies: [Proxy; 2],
    _fake: FakeApiServer,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.operator.abort();
    }
}

pub async fn cluster(db: PgPool) -> Cluster {
    cluster_with(db, |_| {}).await
}

pub async fn cluster_with(db: PgPool, tweak: impl Fn(&mut Config)) -> Cluster {
    cluster_of(db, Settings::default(), tweak).await
}

/// [`cluster_with`], the operator running with `settings`.
pub async fn cluster_of(db: PgPool, settings: Settings, tweak: impl Fn(&mut Config)) -> Cluster {
    let rbac = chart_rbac(NS, "jarvis").expect("the chart's RBAC");
    cluster_with_rbac(db, settings, rbac, tweak).await
}

/// [`cluster_of`], the fake API server enforcing `rbac` instead of the chart's.
pub async fn cluster_with_rbac(
    db: PgPool,
    settings: Settings,
    rbac: Vec<Value>,
    tweak: impl Fn(&mut Config),
) -> Cluster {
    let scope = Scope::Namespaces(vec![NS.to_owned()]);
    cluster_in(db, settings, rbac, scope, tweak).await
}

/// [`cluster_of`], the operator watching every namespace (`*`) under the chart's
/// RBAC for it (a ClusterRoleBinding), a warm pool of `settings.warm_pool`.
pub async fn cluster_watching_all(
    db: PgPool,
    settings: Settings,
    tweak: impl Fn(&mut Config),
) -> Cluster {
    let values = serde_json::json!({
        "operator": { "watchNamespaces": ["*"] },
        "sandbox": { "warmPool": settings.warm_pool },
    });
    let rbac = chart_rbac_with(NS, "jarvis", &values).expect("the chart's RBAC with `*`");
    cluster_in(db, settings, rbac, Scope::All, tweak).await
}

/// [`cluster_with_rbac`], the operator managing `scope`.
async fn cluster_in(
    db: PgPool,
    settings: Settings,
    rbac: Vec<Value>,
    scope: Scope,
    tweak: impl Fn(&mut Config),
) -> Cluster {
    let pods = Arc::new(SandboxPods::default());
    let fake = FakeApiServer::with_runner(Arc::new(Runner(pods.clone())))
        .await
        .expect("fake apiserver");
    // The operator and the routers act as the chart's service accounts (each
    // router through a `kubectl proxy` of its own); the kubelet and the test as
    // an admin.
    fake.enforce_rbac(rbac);
    let client = fake.client(NS);
    let _ = pods.client.set(client.clone());
    let mut proxies = Vec::new();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let proxy = fake
            .proxy_as(NS, "jarvis-router")
            .await
            .expect("a proxy as the router");
        let api_url = proxy.url();
        proxies.push(proxy);
        replicas.push(
            Live::with_config(db.clone(), |c| {
                c.backend = Backend::Kubernetes;
                c.kube_api_url = Some(api_url);
                c.kube_endpoint = KubeEndpoint::PodIp;
                c.kube_namespace = NS.to_owned();
                tweak(c);
            })
            .await,
        );
    }
    let (Ok(proxies), Ok([live, other])) = (
        <[Proxy; 2]>::try_from(proxies),
        <[Live; 2]>::try_from(replicas),
    ) else {
        panic!("two replicas");
    };
    // Pods reach a router's sandbox listener (the Service's), never the public one.
    let _ = pods.gateway.set(live.sandbox_url.clone());
    if let Some(egress) = live.app.state.config.egress_listen {
        let _ = pods.egress.set(egress.to_string());
    }
    let _ = pods.dir.set(live.tmp.path().join("pods"));
    // Started once the kubelet can run pods (a warm pool starts some at once).
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    let operator = tokio::spawn(controller::run_in(
        fake.client_as(NS, NS, "jarvis-operator"),
        scope,
        settings,
        metrics,
    ));
    Cluster {
        live,
        other,
        pods,
        client,
        operator,
        _proxies: proxies,
        _fake: fake,
    }
}

impl Cluster {
    /// The volumes' directory (`workspace/`, `state/`) of the one running pod.
    pub fn pod_dir(&self) -> PathBuf {
        let children = self.pods.children.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(children.len(), 1, "one pod runs");
        children
            .values()
            .map(|(_, dir)| dir.clone())
            .next()
            .expect("a pod")
    }

    /// The volumes' directory of the running pod `name`.
    pub fn pod_dir_of(&self, name: &str) -> Option<PathBuf> {
        let children = self.pods.children.lock().unwrap_or_else(|e| e.into_inner());
        children.get(name).map(|(_, dir)| dir.clone())
    }

    /// Pods the kubelet started so far.
    pub fn pods_started(&self) -> u8 {
        self.pods.next.load(Ordering::SeqCst)
    }

    /// Pods running now.
    pub fn pods_running(&self) -> usize {
        self.pods
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn workspaces(&self) -> Api<JarvisWorkspace> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// What the operator's idle reaper does to `user`'s workspace: scale it to 0;
    /// returns once its pod is gone (it pushed its last changes on SIGTERM). Not
    /// in the second its token was issued: status times have whole seconds, and a
    /// start not known to be over holds its claim for the wake timeout.
    pub async fn operator_sleeps(&self, user: uuid::Uuid) {
        let dirs: Vec<PathBuf> = self
            .pods
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|(_, dir)| dir.clone())
            .collect();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        self.workspaces()
            .patch_scale(
                &router::workspaces::kubernetes::workspace_name(user),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": { "replicas": 0 } })),
            )
            .await
            .expect("scaled to 0");
        super::live::wait_for(|| self.pods_running() == 0 && dirs.iter().all(|d| !d.exists()))
            .await;
    }

    /// `user`'s workspace as the cluster has it.
    pub async fn workspace(&self, user: uuid::Uuid) -> JarvisWorkspace {
        self.workspaces()
            .get(&router::workspaces::kubernetes::workspace_name(user))
            .await
            .expect("the workspace")
    }
}
