//! Reconciling 1,000 workspaces against the fake API server: time until every
//! workspace reports Ready, and the process's memory, next to a baseline measured in
//! the same run: the same 1,000 pods created straight through the API (no operator),
//! until the fake kubelet has made them all Ready. The ratio is what the operator
//! adds on top of the fake's own cost.
//!
//! `cargo bench -p operator --bench workspaces` (`WORKSPACES=N` to change the count).
//! The operator and the fake share this process, so RSS covers both.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use operator::{
    controller::{self, build::Settings},
    crd::{JarvisWorkspace, WorkspacePhase},
    metrics::Metrics,
    testing::FakeApiServer,
};
use prometheus_client::registry::Registry;
use serde_json::json;

const NS: &str = "jarvis";
const CONCURRENCY: usize = 32;
const LIMIT: Duration = Duration::from_secs(600);

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Poll `count` until it reaches `n` (or the bench's time limit).
async fn until_all<F, Fut>(n: usize, mut count: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<usize>>,
{
    let deadline = Instant::now() + LIMIT;
    while count().await? < n {
        anyhow::ensure!(Instant::now() < deadline, "not all Ready within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn baseline(n: usize) -> anyhow::Result<Duration> {
    let fake = FakeApiServer::start().await?;
    let pods = Api::<Pod>::namespaced(fake.client(NS), NS);
    let start = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": { "name": format!("jw-w{i}") },
                    "spec": { "containers": [{ "name": "sandbox", "image": "i" }] },
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    until_all(n, || async {
        let list = pods.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count())
    })
    .await?;
    Ok(start.elapsed())
}

async fn with_operator(n: usize) -> anyhow::Result<Duration> {
    let fake = FakeApiServer::start().await?;
    let client: Client = fake.client(NS);
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    let operator = tokio::spawn(controller::run(
        client.clone(),
        Settings::default(),
        metrics,
    ));
    let api = Api::<JarvisWorkspace>::namespaced(client, NS);
    let start = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let ws: JarvisWorkspace = serde_json::from_value(json!({
                    "apiVersion": "jarvis.dev/v1alpha1", "kind": "JarvisWorkspace",
                    "metadata": { "name": format!("w{i}"), "namespace": NS },
                    "spec": { "user": format!("user-{i}"), "replicas": 1 },
                }))?;
                api.create(&PostParams::default(), &ws).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    until_all(n, || async {
        let list = api.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .filter(|ws| ws.status.as_ref().and_then(|s| s.phase) == Some(WorkspacePhase::Ready))
            .count())
    })
    .await?;
    let elapsed = start.elapsed();
    operator.abort();
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("WORKSPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rss_start = rss_kib("VmRSS:");
    let base = baseline(n).await?;
    let rss_base = rss_kib("VmHWM:");
    let operated = with_operator(n).await?;
    let rss_peak = rss_kib("VmHWM:");
    println!("workspaces: {n}");
    println!(
        "baseline (pods straight to the fake kubelet): {:.2} s",
        base.as_secs_f64()
    );
    println!(
        "operator (workspaces to Ready):               {:.2} s",
        operated.as_secs_f64()
    );
    println!(
        "ratio operator / baseline:                    {:.2}",
        operated.as_secs_f64() / base.as_secs_f64().max(f64::EPSILON)
    );
    println!(
        "RSS: start {} MiB, peak after baseline {} MiB, peak after operator run {} MiB",
        rss_start / 1024,
        rss_base / 1024,
        rss_peak / 1024
    );
    Ok(())
}
