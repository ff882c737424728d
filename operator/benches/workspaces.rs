//! Reconciling 1,000 workspaces against the fake API server: time until every
//! workspace reports Ready, next to a baseline measured in the same run: the same
//! 1,000 pods created straight through the API (no operator), until the fake kubelet
//! has made them all Running. The ratio is what the operator adds on top of the
//! fake's own cost.
//!
//! The operator is the real binary (`--leader-elect false`), a child process talking
//! to the fake through a kubeconfig, so its memory and CPU are its own: RSS before
//! the first workspace and with all of them Ready, CPU seconds during the run. The
//! fake runs in this process on a runtime of its own (threads named [`FAKE_THREADS`]),
//! so its CPU seconds are counted apart from the bench's client. The requests the
//! operator made are counted from the fake's audit log (the operator's kubeconfig
//! carries a service-account token; RBAC is not enforced).
//!
//! `cargo bench -p operator --bench workspaces` (`WORKSPACES=N` to change the count,
//! `RUST_LOG` for the operator's log filter, default `warn`).
//!
//! Measured 2026-12-07, release, 2 shared cores at load 4–6.5, runs of the commit
//! before and after alternating, three each: 1,000 workspaces Ready in 1.6–2.5 s
//! (before 1.8–2.9 s) against a 0.12–0.25 s baseline; 8.0 operator requests per
//! workspace (before 9.0: the pod was applied again by the reconcile its readiness
//! started); fake 0.8–1.3 CPU-s (before 1.3–1.7: it parsed apply bodies with the
//! YAML parser), operator 1.2–1.8 CPU-s (before 1.2–1.8); operator RSS 12 MiB idle,
//! +45–70 MiB with 1,000 Ready, as before (the allocator's spread run to run).

use std::{
    collections::{BTreeMap, HashSet},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use operator::{
    crd::{JarvisWorkspace, WorkspacePhase},
    testing::FakeApiServer,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::runtime::{Builder, Runtime};

const NS: &str = "jarvis";
const CONCURRENCY: usize = 32;
const LIMIT: Duration = Duration::from_secs(600);
/// Thread name of the fake API server's runtime (at most 15 bytes: `/proc` cuts longer).
const FAKE_THREADS: &str = "fake-apiserver";
/// Kernel clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A field of `/proc/<pid>/status` in KiB (`pid` may be `self`).
fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds from a `/proc/…/stat` line.
fn stat_cpu_seconds(stat: &str) -> f64 {
    // Fields after the command name (which may hold spaces): state is the first,
    // utime the 12th and stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / TICKS_PER_SECOND
}

/// CPU seconds of process `pid`, all its threads.
fn process_cpu(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat_cpu_seconds(&stat))
        .unwrap_or(0.0)
}

/// CPU seconds of this process's live threads named `name`.
fn threads_cpu(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .map(|stat| stat_cpu_seconds(&stat))
        .sum()
}

/// The fake API server on a runtime of its own, so its threads can be told apart.
struct Fake {
    server: Option<FakeApiServer>,
    runtime: Option<Runtime>,
}

impl Fake {
    fn start() -> anyhow::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(FAKE_THREADS)
            .enable_all()
            .build()?;
        let server = runtime.block_on(FakeApiServer::start())?;
        Ok(Self {
            server: Some(server),
            runtime: Some(runtime),
        })
    }

    fn server(&self) -> &FakeApiServer {
        self.server
            .as_ref()
            .expect("the server lives as long as Fake")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What one phase measured.
struct Phase {
    elapsed: Duration,
    fake_cpu: f64,
    client_cpu: f64,
}

/// Wait until `n` objects of `api` satisfy `done`, watching (not polling) them.
async fn until_all<K>(api: Api<K>, n: usize, done: impl Fn(&K) -> bool) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let mut objects = watcher(api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut finished = HashSet::new();
    tokio::time::timeout(LIMIT, async {
        while finished.len() < n {
            let Some(object) = objects.try_next().await? else {
                anyhow::bail!("the watch ended");
            };
            if done(&object) {
                finished.insert(object.name_any());
            } else {
                finished.remove(&object.name_any());
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("not all done within {LIMIT:?}"))?
}

/// Create `n` objects (`make(i)`) through `api`, [`CONCURRENCY`] at a time.
async fn create_all<K>(api: &Api<K>, n: usize, make: impl Fn(usize) -> K) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    stream::iter(0..n)
        .map(|i| {
            let object = make(i);
            async move {
                api.create(&PostParams::default(), &object).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Run `work` on `client`'s runtime, counting the fake's and the client's CPU.
fn measured(
    client: &Runtime,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Phase> {
    let (fake0, all0) = (threads_cpu(FAKE_THREADS), process_cpu("self"));
    let start = Instant::now();
    client.block_on(work)?;
    let elapsed = start.elapsed();
    let fake_cpu = threads_cpu(FAKE_THREADS) - fake0;
    let client_cpu = process_cpu("self") - all0 - fake_cpu;
    Ok(Phase {
        elapsed,
        fake_cpu,
        client_cpu,
    })
}

fn baseline(client: &Runtime, n: usize) -> anyhow::Result<Phase> {
    let fake = Fake::start()?;
    let pods = {
        let _runtime = client.enter();
        Api::<Pod>::namespaced(fake.server().client(NS), NS)
    };
    measured(client, async {
        let running = until_all(pods.clone(), n, |pod: &Pod| {
            pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        });
        let created = create_all(&pods, n, |i| {
            serde_json::from_value(json!({
                "metadata": { "name": format!("jw-w{i}") },
                "spec": { "containers": [{ "name": "sandbox", "image": "i" }] },
            }))
            .expect("a pod parses")
        });
        tokio::try_join!(running, created)?;
        Ok(())
    })
}

/// The operator binary as a child process; killed when dropped.
struct OperatorProcess {
    child: Child,
    _kubeconfig: tempfile::NamedTempFile,
}

impl OperatorProcess {
    fn start(fake: &FakeApiServer) -> anyhow::Result<Self> {
        let token = fake.service_account_token(NS, "jarvis-operator");
        let mut kubeconfig = tempfile::NamedTempFile::new()?;
        std::io::Write::write_all(
            &mut kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: operator\n    namespace: {NS}\n\
                 current-context: fake\nusers:\n- name: operator\n  user:\n    token: {token}\n",
                fake.url()
            )
            .as_bytes(),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_operator"))
            .args(["--leader-elect", "false", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("KUBECONFIG", kubeconfig.path())
            .env("POD_NAMESPACE", NS)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Self {
            child,
            _kubeconfig: kubeconfig,
        })
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the operator run measured beyond [`Phase`].
struct OperatorRun {
    phase: Phase,
    operator_cpu: f64,
    rss_idle_kib: u64,
    rss_ready_kib: u64,
    rss_peak_kib: u64,
    /// Requests the operator made, by `verb resource[/subresource]`.
    requests: BTreeMap<String, usize>,
}

fn with_operator(client: &Runtime, n: usize) -> anyhow::Result<OperatorRun> {
    let fake = Fake::start()?;
    let operator = OperatorProcess::start(fake.server())?;
    // Ready once it watches the workspaces.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fake
        .server()
        .audit()
        .iter()
        .any(|a| a.request.verb == "watch" && a.request.resource == "jarvisworkspaces")
    {
        anyhow::ensure!(Instant::now() < deadline, "the operator did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_idle_kib = status_kib(&operator.pid(), "VmRSS:");
    let operator_cpu0 = process_cpu(&operator.pid());
    let workspaces = {
        let _runtime = client.enter();
        Api::<JarvisWorkspace>::namespaced(fake.server().client(NS), NS)
    };
    let phase = measured(client, async {
        let ready = until_all(workspaces.clone(), n, |ws: &JarvisWorkspace| {
            ws.status.as_ref().and_then(|s| s.phase) == Some(WorkspacePhase::Ready)
        });
        let created = create_all(&workspaces, n, |i| {
            serde_json::from_value(json!({
                "apiVersion": "jarvis.dev/v1alpha1", "kind": "JarvisWorkspace",
                "metadata": { "name": format!("w{i}"), "namespace": NS },
                "spec": { "user": format!("user-{i}"), "replicas": 1 },
            }))
            .expect("a workspace parses")
        });
        tokio::try_join!(ready, created)?;
        Ok(())
    })?;
    let operator_cpu = process_cpu(&operator.pid()) - operator_cpu0;
    let rss_ready_kib = status_kib(&operator.pid(), "VmRSS:");
    let rss_peak_kib = status_kib(&operator.pid(), "VmHWM:");
    let mut requests = BTreeMap::new();
    for audited in fake.server().audit() {
        let request = &audited.request;
        let resource = match &request.subresource {
            Some(sub) => format!("{}/{sub}", request.resource),
            None => request.resource.clone(),
        };
        *requests
            .entry(format!("{} {resource}", request.verb))
            .or_default() += 1;
    }
    drop(operator);
    Ok(OperatorRun {
        phase,
        operator_cpu,
        rss_idle_kib,
        rss_ready_kib,
        rss_peak_kib,
        requests,
    })
}

/// The 1, 5 and 15 minute load averages, to tell a quiet run from a busy one.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|load| {
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("WORKSPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let client = Builder::new_current_thread().enable_all().build()?;
    let load_before = load_average();
    let base = baseline(&client, n)?;
    let run = with_operator(&client, n)?;
    let operated = &run.phase;
    println!(
        "workspaces: {n} (load average {load_before} before, {} after)",
        load_average()
    );
    println!(
        "baseline (pods straight to the fake kubelet): {:.2} s (fake {:.2} CPU-s, client {:.2} CPU-s)",
        base.elapsed.as_secs_f64(),
        base.fake_cpu,
        base.client_cpu
    );
    println!(
        "operator (workspaces to Ready):               {:.2} s (fake {:.2} CPU-s, operator {:.2} CPU-s, client {:.2} CPU-s)",
        operated.elapsed.as_secs_f64(),
        operated.fake_cpu,
        run.operator_cpu,
        operated.client_cpu
    );
    println!(
        "ratio operator / baseline:                    {:.2}",
        operated.elapsed.as_secs_f64() / base.elapsed.as_secs_f64().max(f64::EPSILON)
    );
    let cpu = operated.fake_cpu + run.operator_cpu + operated.client_cpu;
    println!(
        "fake's share of the CPU in the operator run:  {:.0} % (operator {:.0} %, client {:.0} %)",
        100.0 * operated.fake_cpu / cpu.max(f64::EPSILON),
        100.0 * run.operator_cpu / cpu.max(f64::EPSILON),
        100.0 * operated.client_cpu / cpu.max(f64::EPSILON)
    );
    println!(
        "operator RSS: {:.1} MiB idle, {:.1} MiB with {n} Ready (+{:.1} MiB), peak {:.1} MiB",
        mib(run.rss_idle_kib),
        mib(run.rss_ready_kib),
        mib(run.rss_ready_kib.saturating_sub(run.rss_idle_kib)),
        mib(run.rss_peak_kib)
    );
    let total: usize = run.requests.values().sum();
    println!(
        "operator's requests: {total} ({:.1} per workspace)",
        total as f64 / n as f64
    );
    for (request, count) in &run.requests {
        println!("  {count:>7}  {request}");
    }
    println!(
        "this process's peak RSS (fake + client): {:.1} MiB",
        mib(status_kib("self", "VmHWM:"))
    );
    Ok(())
}
