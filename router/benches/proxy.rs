//! Benchmark (not a test): the browser ⇄ sandbox WebSocket proxy against nginx.
//!
//!     cargo bench -p router --bench proxy
//!
//! 500 browsers at once, each sends a message and receives a streamed answer
//! (`turn`, 40 `text` deltas, `done`) from the same sandbox stub (a WebSocket
//! server speaking the sandbox protocol, answering at once), either
//!
//! - through the router: `/ws` with a user's token and Origin, one workspace per
//!   browser; the router's whole work per turn included: token check at connect,
//!   the turn opened in Postgres, and the turn's events stored the way a sandbox
//!   stores them: the stub, holding the workspace token its wake issued, POSTs
//!   them to the router's `/v1/workspace/events` (one batch with the turn's end,
//!   as `sandbox/src/outbox.rs` sends it) and shows `done` only once that POST
//!   answered; or
//! - through nginx (Debian's `nginx-light`, `proxy_pass` with Upgrade headers),
//!   which does nothing but relay (the stub stores nothing on this path).
//!
//! Reported: time from sending the message to `done` (p50/p99) per path, the
//! router's added latency and the ratio; then a round of 50 browsers at once,
//! time from sending to the first text delta per path, with where the router's
//! time of that round went (its `/metrics` histograms, scraped before and after:
//! mean per turn); and the resident memory each proxy process gains per open
//! connection. The router runs in a child process (this binary again,
//! `JARVIS_BENCH_ROLE=router`) with its own pool (`JARVIS_DB_MAX_CONNECTIONS`,
//! default 20) so its memory is its own; nginx runs one worker (stopped with
//! SIGQUIT, so no worker outlives the run holding its output). Uses
//! `DATABASE_URL`'s server (its defaults: `synchronous_commit` on, unless
//! `JARVIS_BENCH_SYNCHRONOUS_COMMIT=off` sets it off for the bench's database) and
//! (re)creates `jarvis_bench_proxy`. Needs `apt-get install nginx-light` and a
//! raised open-file limit (`ulimit -n 2200`).
//!
//! Measured 2026-12-07 on the 2-core dev machine, release profile (`cargo
//! bench -p router --bench proxy`), with turns opened and events stored in
//! batches (`router::transcript::{Opener, Writer}`); four runs, load 0.2–2.8
//! (the figures before batching, the same day, quiet: in brackets):
//!
//! | 500 at once, → `done` | p50                 | p99                 |
//! |-----------------------|---------------------|---------------------|
//! | through router        | 279–406 ms (474)    | 342–498 ms (585)    |
//! | through nginx         |  68–92 ms (71)      | 120–134 ms (114)    |
//! | ratio                 | 4.1–4.9× (6.6–7.0×) | 2.9–3.9× (5.2–6.2×) |
//!
//! | 50 at once, → first text | p50                 | p99                |
//! |--------------------------|---------------------|--------------------|
//! | through router           | 63–78 ms (67)       | 79–91 ms (87)      |
//! | through nginx            | 46–48 ms (46)       | 50–52 ms (51)      |
//! | added by router          | 15.7–31.5 ms (20.8) | 28.6–40.9 ms (36)  |
//!
//! Of the router's time before the sandbox is sent the message, all is opening
//! the turn in Postgres: 12–20 ms mean (17 before batching; no pool wait now,
//! 7 ms before). The batch's commit is on that path: the turn's rows are
//! committed before the sandbox is told (a crash never leaves a running turn
//! without its rows). One commit's WAL flush alone takes 3.4 ms on this
//! machine's disk (pgbench, one insert per transaction: 3.48 ms with
//! `synchronous_commit` on, 0.16 ms off), but the flush is not what the turns
//! wait for: with `JARVIS_BENCH_SYNCHRONOUS_COMMIT=off` (2026-12-07, two runs
//! each way, alternating) the first text added at 50 was 13.8 / 15.8 ms p50
//! against 13.6 / 17.9 ms with it on, opening the turn 10.0 / 8.6 against
//! 10.8 / 7.6 ms mean, and `done` at 500 4.42× / 4.24× nginx's against
//! 6.18× / 4.40×. In `psql` alone, on this machine, `open_turns` takes 3.4 ms
//! for a batch of 32 turns (0.11 ms a turn) and one turn 0.55 ms, and a commit
//! 3.3–4.0 ms. So what the turns wait for is CPU time on two cores that
//! Postgres, the router, the stub and 50 browsers share (nginx's path alone
//! takes 45–48 ms to a first text at 50). Giving up durability would buy
//! nothing here, so commits stay synchronous. The bench now also shows a
//! batch's own transaction: 4.4 ms a batch, 12.5 turns a batch at 50, against
//! 7.9 ms mean for a turn's opening; a turn waits for the batch running when
//! it came, then runs in the next. The same server-wide
//! (`alter system set synchronous_commit = off`, reset after) gave +16.6 ms. Batching halves the database's work
//! per turn under the 500-turn burst; at 50 turns a batch runs its turns one
//! after another on one connection, which takes about as long as 50
//! transactions in parallel did. Two batches at once (`RUNNING_BATCHES`) was
//! measured against one and four: within the noise of each other. Relaying the
//! first text adds 0.04 ms. Memory per open connection: router 29.8–31.0 KiB,
//! nginx worker 18.4–18.6 KiB (1.6×). mimalloc as the global allocator was
//! tried (2026-12-07): 41.2 KiB per connection, worse than glibc's malloc.
//!
//! A turn costs the database, per batch of turns opened together, `BEGIN` (with
//! the role), one `open_turns` statement, `COMMIT`; per gathering of event
//! batches stored together, `BEGIN`, one `lock_answers` and one `write_answers`
//! statement, `COMMIT`; and per events POST the workspace token's look-up.
//! Alone (a quiet router) that is 8 round trips and 2 commits per turn, as
//! before batching.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt, future::BoxFuture};
use router::{
    config::Config,
    http::AppState,
    workspaces::{Awake, Backend, BackendStatus, Endpoint, Registry},
};
use serde_json::{Value, json};
use support::{BenchDb, ms, pct};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Barrier,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};
use uuid::Uuid;

mod support;

const BROWSERS: usize = 500;
/// Browsers of the first-text round: the router's added time to first text is
/// read at a load where queues do not hide it.
const FEW: usize = 50;
const DELTAS: usize = 40;
const DB: &str = "jarvis_bench_proxy";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ---------------------------------------------------------------- the stub

/// Where the stub's sandboxes store their events: the router's address, once
/// the router child said it (the nginx path has no router: nothing is stored).
type RouterAddr = Arc<std::sync::OnceLock<String>>;

/// A sandbox that answers every `message` at once with a streamed answer. Like
/// a real sandbox (`sandbox/src/outbox.rs`), when it holds a workspace token
/// (the bearer the router connected with) it stores the turn's events itself:
/// one `POST /v1/workspace/events` with the turn's end (the outbox sends at once
/// then), and shows `done` only once that POST answered.
async fn serve_stub(listener: TcpListener, router: RouterAddr) {
    let http = reqwest::Client::new();
    while let Ok((stream, _)) = listener.accept().await {
        let (router, http) = (router.clone(), http.clone());
        tokio::spawn(async move {
            let mut token = None;
            // The callback's type is tungstenite's (its error is an HTTP response).
            #[allow(clippy::result_large_err)]
            let handshake =
                |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                    token = request
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .map(str::to_string);
                    Ok(response)
                };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, handshake).await else {
                return;
            };
            let mut seq = 0u64;
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if frame["type"] != "message" {
                    continue;
                }
                let conversation = frame["conversation_id"].clone();
                let message_id = frame["message_id"].clone();
                let mut out = Vec::with_capacity(DELTAS + 2);
                seq += 1;
                out.push(
                    json!({"type": "turn", "seq": seq, "conversation_id": conversation,
                                "message_id": message_id}),
                );
                for i in 0..DELTAS {
                    seq += 1;
                    out.push(
                        json!({"type": "text", "seq": seq, "conversation_id": conversation,
                                    "delta": format!("word{i} ")}),
                    );
                }
                seq += 1;
                let done = json!({"type": "done", "seq": seq, "conversation_id": conversation,
                                  "usage": {"input_tokens": 10, "output_tokens": DELTAS}});
                for frame in &out {
                    if ws.send(Message::text(frame.to_string())).await.is_err() {
                        return;
                    }
                }
                if let (Some(token), Some(router)) = (&token, router.get()) {
                    out.push(done.clone());
                    let body = json!({
                        "batches": [{"conversation_id": conversation, "message_id": message_id,
                                     "events": out}],
                        "running_turns": 1,
                    });
                    let stored = http
                        .post(format!("http://{router}/v1/workspace/events"))
                        .header("x-api-key", token)
                        .json(&body)
                        .send()
                        .await
                        .and_then(reqwest::Response::error_for_status);
                    if let Err(error) = stored {
                        eprintln!("the stub's events were not stored: {error}");
                        return;
                    }
                }
                if ws.send(Message::text(done.to_string())).await.is_err() {
                    return;
                }
            }
        });
    }
}

// ---------------------------------------------------------------- the router child

/// A backend whose every sandbox is the stub; a wake issues the workspace
/// token (as real backends do), which the stub stores its events with.
struct StubBackend {
    address: String,
    db: sqlx::PgPool,
}

impl Backend for StubBackend {
    fn wake(&self, user: Uuid) -> BoxFuture<'_, router::workspaces::Result<Awake>> {
        Box::pin(async move {
            let token = router::workspaces::tokens::issue(&self.db, user)
                .await
                .map_err(|e| router::workspaces::Error::NotReady(e.to_string()))?;
            Ok(Awake {
                endpoint: Endpoint::Tcp(self.address.clone()),
                token,
                started: true,
            })
        })
    }

    fn sleep(&self, _user: Uuid) -> BoxFuture<'_, router::workspaces::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn status(&self, _user: Uuid) -> BackendStatus {
        BackendStatus::Running
    }
}

/// The child: a router whose sandboxes are the stub; prints its address.
async fn run_router(db_url: &str, stub: &str) -> anyhow::Result<()> {
    let storage = tempfile::tempdir()?;
    let mut config = Config::defaults();
    // The pool the router makes for itself (`JARVIS_DB_MAX_CONNECTIONS`).
    if let Some(max) = std::env::var("JARVIS_DB_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.db_max_connections = max;
    }
    let db = router::db::connect(db_url, config.db_max_connections).await?;
    config.database_url = db_url.to_string();
    config.storage = format!("file:{}", storage.path().display());
    config.jwt_secret = Some("bench-secret-bench-secret-bench-secret".into());
    let mut state = AppState::new(config, db.clone()).await?;
    state.workspaces = Registry::new(
        db.clone(),
        state.storage.clone(),
        state.voice.clone(),
        Arc::new(StubBackend {
            address: stub.to_string(),
            db,
        }),
        router::workspaces::registry::Settings {
            idle_timeout: Duration::from_secs(3600),
            wake_timeout: Duration::from_secs(60),
            max_workspaces: None,
            ..router::workspaces::registry::Settings::from_config(&state.config)
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    // The sandboxes' routes (`JARVIS_SANDBOX_LISTEN`), where the stub stores events.
    let sandbox_listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    println!("{}", sandbox_listener.local_addr()?);
    tokio::spawn(router::http::serve_sandbox_tcp(
        sandbox_listener,
        state.clone(),
    ));
    router::http::serve_on(listener, state).await
}

// ---------------------------------------------------------------- nginx

fn nginx_conf(dir: &Path, port: u16, stub: &str) -> String {
    format!(
        "worker_processes 1;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
           server {{\n\
             listen 127.0.0.1:{port};\n\
             location /ws {{\n\
               proxy_pass http://{stub};\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Upgrade $http_upgrade;\n\
               proxy_set_header Connection \"upgrade\";\n\
               proxy_buffering off;\n\
               proxy_read_timeout 600s;\n\
             }}\n\
           }}\n\
         }}\n",
        dir = dir.display()
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

// ---------------------------------------------------------------- browsers

async fn open(url: &str, token: Option<&str>, origin: &str) -> anyhow::Result<Ws> {
    let mut request = url.into_client_request()?;
    if let Some(token) = token {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("jarvis, bearer.{token}"))?,
        );
    }
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_str(origin)?);
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(ws)
}

async fn next_frame(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(120), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(serde_json::from_str(&t)?),
            Ok(Some(Ok(_))) => {}
            Ok(other) => bail!("connection ended: {other:?}"),
            Err(_) => bail!("no frame in 120 s"),
        }
    }
}

/// Each browser's times from sending its message, sorted: to the first text
/// delta, and to `done`.
struct Times {
    first_text: Vec<Duration>,
    done: Vec<Duration>,
}

/// Opens `browsers` connections (waiting for `ready` through the router), then
/// all send at once; returns each browser's times, and what `on_open` measured
/// while they were all open.
async fn run_browsers(
    browsers: usize,
    url: &str,
    tokens: Option<Vec<String>>,
    origin: &str,
    on_open: impl FnOnce() -> anyhow::Result<u64>,
) -> anyhow::Result<(Times, u64)> {
    let mut sockets = Vec::with_capacity(browsers);
    for i in 0..browsers {
        let token = tokens.as_ref().map(|t| t[i].as_str());
        let mut ws = open(url, token, origin)
            .await
            .with_context(|| format!("browser {i}"))?;
        if token.is_some() {
            loop {
                let frame = next_frame(&mut ws).await?;
                if frame["type"] == "status" && frame["state"] == "ready" {
                    break;
                }
                if frame["type"] == "error" {
                    bail!("browser {i}: {frame}");
                }
            }
        }
        sockets.push(ws);
    }
    let rss = on_open()?;
    let barrier = Arc::new(Barrier::new(browsers));
    let mut tasks = Vec::with_capacity(browsers);
    for mut ws in sockets {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let conversation = Uuid::new_v4().to_string();
            let message =
                json!({"type": "message", "content": "hello", "conversation_id": conversation});
            barrier.wait().await;
            let started = Instant::now();
            ws.send(Message::text(message.to_string())).await?;
            let mut deltas = 0;
            let mut first_text = None;
            loop {
                let frame = next_frame(&mut ws).await?;
                match frame["type"].as_str() {
                    Some("text") => {
                        deltas += 1;
                        first_text.get_or_insert_with(|| started.elapsed());
                    }
                    Some("done") => break,
                    Some("error") => bail!("{frame}"),
                    _ => {}
                }
            }
            let done = started.elapsed();
            anyhow::ensure!(deltas == DELTAS, "{deltas} deltas");
            let _ = ws.close(None).await;
            Ok::<_, anyhow::Error>((first_text.unwrap_or(done), done))
        }));
    }
    let mut times = Times {
        first_text: Vec::with_capacity(browsers),
        done: Vec::with_capacity(browsers),
    };
    for task in tasks {
        let (first_text, done) = task.await??;
        times.first_text.push(first_text);
        times.done.push(done);
    }
    times.first_text.sort();
    times.done.sort();
    Ok((times, rss))
}

/// Prints one comparison: percentiles through the router and through nginx, what
/// the router adds, and the ratio.
fn table(title: &str, router: &[Duration], nginx: &[Duration]) {
    let row = |name: &str, t: &[Duration]| {
        println!(
            "| {name:<16} | {:>9.2} ms | {:>9.2} ms |",
            ms(pct(t, 0.5)),
            ms(pct(t, 0.99))
        );
    };
    println!("\n{title}\n");
    println!("| path             | p50          | p99          |");
    println!("|------------------|--------------|--------------|");
    row("through router", router);
    row("through nginx", nginx);
    println!(
        "| added by router  | {:>9.2} ms | {:>9.2} ms |",
        ms(pct(router, 0.5)) - ms(pct(nginx, 0.5)),
        ms(pct(router, 0.99)) - ms(pct(nginx, 0.99))
    );
    println!(
        "| ratio            | {:>9.2}×   | {:>9.2}×   |",
        ms(pct(router, 0.5)) / ms(pct(nginx, 0.5)),
        ms(pct(router, 0.99)) / ms(pct(nginx, 0.99))
    );
}

/// The router's `/metrics`: each sample line's series (name and labels) → value.
async fn scrape(router: &str) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    let text = reqwest::get(format!("http://{router}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// The mean of histogram `series` (`name{labels}` or `name`) over the
/// observations made between two scrapes.
fn mean_between(
    before: &std::collections::HashMap<String, f64>,
    after: &std::collections::HashMap<String, f64>,
    series: &str,
) -> Option<Duration> {
    mean_value_between(before, after, series).map(Duration::from_secs_f64)
}

/// The mean of histogram `series` over the observations made between two
/// scrapes, in the histogram's own unit.
fn mean_value_between(
    before: &std::collections::HashMap<String, f64>,
    after: &std::collections::HashMap<String, f64>,
    series: &str,
) -> Option<f64> {
    let (name, labels) = series.split_once('{').unwrap_or((series, ""));
    let key = |suffix: &str| match labels {
        "" => format!("{name}_{suffix}"),
        labels => format!("{name}_{suffix}{{{labels}"),
    };
    let delta = |suffix: &str| {
        let key = key(suffix);
        Some(after.get(&key)? - before.get(&key).copied().unwrap_or(0.0))
    };
    let (sum, count) = (delta("sum")?, delta("count")?);
    (count > 0.0).then(|| sum / count)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

/// Checks the open-file limit covers the sockets of the run (each browser holds
/// a client socket, the router's two and the stub's, in this process or the child).
fn check_nofile() -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .context("reading the open-file limit")?;
    let need = (4 * BROWSERS + 200) as u64;
    anyhow::ensure!(
        soft >= need,
        "the open-file limit is {soft}; raise it to {need} (ulimit -n {need})"
    );
    Ok(())
}

/// Stops nginx with its workers: SIGQUIT to the master (a SIGKILL would leave
/// the worker running, holding this bench's output open), then waits for it.
async fn stop_nginx(nginx: &mut tokio::process::Child, master: u32) {
    let quit = std::process::Command::new("kill")
        .args(["-QUIT", &master.to_string()])
        .status();
    if quit.is_err()
        || tokio::time::timeout(Duration::from_secs(10), nginx.wait())
            .await
            .is_err()
    {
        let _ = nginx.start_kill();
    }
}

fn nginx_worker(master: u32) -> anyhow::Result<u32> {
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))?;
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .context("nginx has no worker")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    check_nofile()?;
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/postgres".into());
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    let db_url = format!("{base}/{DB}");
    if std::env::var("JARVIS_BENCH_ROLE").as_deref() == Ok("router") {
        let stub = std::env::var("JARVIS_BENCH_STUB").context("stub address")?;
        return run_router(&db_url, &stub).await;
    }

    let bench_db = BenchDb::fresh(DB, 5).await?;
    let db = bench_db.pool.clone();
    // What the router's connections run with: `synchronous_commit = off` (a
    // commit no longer waits for its WAL flush) shows the flush's share.
    if let Ok(value) = std::env::var("JARVIS_BENCH_SYNCHRONOUS_COMMIT") {
        anyhow::ensure!(
            matches!(value.as_str(), "on" | "off"),
            "JARVIS_BENCH_SYNCHRONOUS_COMMIT is `on` or `off`"
        );
        sqlx::query(&format!(
            "alter database {DB} set synchronous_commit = {value}"
        ))
        .execute(&db)
        .await?;
        println!("synchronous_commit = {value} for the router's connections");
    }
    let users: Vec<(Uuid, String)> = sqlx::query_as(
        "insert into users (email, password_hash)
         select 'browser' || g || '@example.com', 'x' from generate_series(1, $1) g
         returning id, email",
    )
    .bind(BROWSERS as i64)
    .fetch_all(&db)
    .await?;
    let signer = router::auth::local::LocalTokens::new(b"bench-secret-bench-secret-bench-secret");
    let tokens: Vec<String> = users
        .iter()
        .map(|(id, email)| signer.issue(*id, email))
        .collect::<Result<_, _>>()?;

    let stub = TcpListener::bind("127.0.0.1:0").await?;
    let stub_addr = stub.local_addr()?.to_string();
    let stub_router = RouterAddr::default();
    tokio::spawn(serve_stub(stub, stub_router.clone()));

    // The router, in a child process.
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .env("JARVIS_BENCH_ROLE", "router")
        .env("JARVIS_BENCH_STUB", &stub_addr)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let router_addr = lines.next_line().await?.context("router address")?;
    let sandbox_addr = lines
        .next_line()
        .await?
        .context("router's sandbox address")?;
    let router_pid = child.id().context("router pid")?;
    let _ = stub_router.set(sandbox_addr);

    // nginx in front of the same stub.
    let nginx_bin = PathBuf::from("/usr/sbin/nginx");
    anyhow::ensure!(
        nginx_bin.is_file(),
        "nginx is missing: apt-get install nginx-light"
    );
    let dir = tempfile::tempdir()?;
    let nginx_port = free_port()?;
    std::fs::write(
        dir.path().join("nginx.conf"),
        nginx_conf(dir.path(), nginx_port, &stub_addr),
    )?;
    let mut nginx = tokio::process::Command::new(&nginx_bin)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .args(["-g", "daemon off;"])
        // Its workers outlive a killed master: never let them hold our output.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let nginx_pid = nginx.id().context("nginx pid")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let worker = nginx_worker(nginx_pid)?;

    let router_url = format!("ws://{router_addr}/ws");
    let router_origin = format!("http://{router_addr}");
    let nginx_url = format!("ws://127.0.0.1:{nginx_port}/ws");

    // A first round of each: memory is measured while its 500 connections are
    // open (against the process before any connection; later rounds reuse what
    // the allocator kept). Then the measured round of each, for latency.
    eprintln!("first round ({BROWSERS} browsers per path)...");
    let router_idle = rss_kib(router_pid)?;
    let (_, router_open) = run_browsers(
        BROWSERS,
        &router_url,
        Some(tokens.clone()),
        &router_origin,
        || rss_kib(router_pid),
    )
    .await?;
    let nginx_idle = rss_kib(worker)?;
    let (_, nginx_open) = run_browsers(BROWSERS, &nginx_url, None, &router_origin, || {
        rss_kib(worker)
    })
    .await?;
    eprintln!("measured rounds...");
    let burst = |url, tokens| run_browsers(BROWSERS, url, tokens, &router_origin, || Ok(0));
    let (through_router, _) = burst(&router_url, Some(tokens.clone())).await?;
    let (through_nginx, _) = burst(&nginx_url, None).await?;
    let few = |url, tokens| run_browsers(FEW, url, tokens, &router_origin, || Ok(0));
    let before = scrape(&router_addr).await?;
    let (few_router, _) = few(&router_url, Some(tokens[..FEW].to_vec())).await?;
    let after = scrape(&router_addr).await?;
    let (few_nginx, _) = few(&nginx_url, None).await?;

    table(
        &format!("{BROWSERS} concurrent browsers, message → done ({DELTAS} deltas)"),
        &through_router.done,
        &through_nginx.done,
    );
    table(
        &format!("{FEW} concurrent browsers, message → first text"),
        &few_router.first_text,
        &few_nginx.first_text,
    );
    println!("\nwhere the router's time of that round went (its /metrics, mean per turn):");
    for (what, series) in [
        (
            "message received → sent to the sandbox",
            "jarvis_turn_router_first_text_seconds{leg=\"to_sandbox\"}",
        ),
        (
            "  of which opening the turn in Postgres",
            "jarvis_turn_db_seconds{op=\"open_turn\"}",
        ),
        (
            "  a batch's transaction, per batch",
            "jarvis_turn_db_seconds{op=\"open_batch\"}",
        ),
        (
            "first text received → queued for the browser",
            "jarvis_turn_router_first_text_seconds{leg=\"to_browser\"}",
        ),
        (
            "queued → written to the browser's socket",
            "jarvis_browser_queue_wait_seconds",
        ),
        (
            "waits for a pooled connection",
            "jarvis_db_pool_wait_seconds",
        ),
    ] {
        match mean_between(&before, &after, series) {
            Some(mean) => println!("  {what:<46} {:>8.2} ms", ms(mean)),
            None => println!("  {what:<46}      n/a"),
        }
    }
    if let Some(turns) = mean_value_between(&before, &after, "jarvis_turn_open_batch_turns") {
        println!("  turns per batch {turns:>39.1}");
    }
    let per = |open: u64, idle: u64| open.saturating_sub(idle) as f64 / BROWSERS as f64;
    println!(
        "\nresident memory per open connection: router {:.1} KiB ({} → {} KiB), nginx worker {:.1} KiB ({} → {} KiB)",
        per(router_open, router_idle),
        router_idle,
        router_open,
        per(nginx_open, nginx_idle),
        nginx_idle,
        nginx_open
    );
    stop_nginx(&mut nginx, nginx_pid).await;
    let _ = child.start_kill();
    Ok(())
}
