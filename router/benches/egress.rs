//! Benchmark (not a test): a download through the egress proxy against the same
//! download straight from the server, in one run.
//!
//!     cargo bench -p router --bench egress
//!
//! A local HTTP server and a local HTTPS server (a self-signed certificate) stand
//! in for the internet on 127.0.0.1. The proxy is the router's own
//! (`router::egress`, with the workspace token checked in Postgres, the plan's
//! allow-list, the deny-list narrowed to let loopback through, every connection
//! audited), served on a TCP listener in this process. The client is reqwest
//! either way; the TLS download is a CONNECT tunnel through the proxy (what pip and
//! npm do), the plain one an absolute-form request.
//!
//! Reported: the median of [`ROUNDS`] 100 MiB downloads per path (MiB/s and the
//! ratio), and time to first byte of a small answer on a fresh connection each time
//! (p50/p99 of [`FIRST_BYTES`], direct and through the proxy, and what the proxy
//! adds: token, decision, name resolution, the upstream connection, the audit row).
//! Uses `DATABASE_URL`'s server and (re)creates `jarvis_bench_egress`.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, service::service_fn};
use hyper_util::rt::TokioIo;
use router::{
    egress::{Egress, Settings, policy::DenyList, proxy, resolve::StaticResolver},
    metrics::Metrics,
    plans::Plans,
    workspaces::tokens,
};
use support::{BenchDb, ms, pct};
use tokio::net::TcpListener;
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};

mod support;

const DB: &str = "jarvis_bench_egress";
const MIB: usize = 1024 * 1024;
const DOWNLOAD: usize = 100 * MIB;
const ROUNDS: usize = 5;
const FIRST_BYTES: usize = 200;
/// The default deny-list without loopback, so the stand-ins are reachable.
const NARROWED_DENY: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,\
0.0.0.0/8,100.64.0.0/10,fc00::/7,fe80::/10";

type Body = BoxBody<Bytes, Infallible>;

/// `/hello` (a few bytes) or `/bytes/N` (N bytes in 64 KiB chunks).
async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let body = match path.strip_prefix("/bytes/") {
        Some(n) => {
            let total: usize = n.parse().unwrap_or(0);
            const CHUNK: usize = 64 * 1024;
            let chunk = Bytes::from(vec![b'x'; CHUNK]);
            let chunks = (0..total.div_ceil(CHUNK)).map(move |i| {
                let len = CHUNK.min(total - i * CHUNK);
                Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
            });
            BodyExt::boxed(StreamBody::new(futures::stream::iter(chunks)))
        }
        None => Full::new(Bytes::from_static(b"hello")).boxed(),
    };
    Ok(Response::new(body))
}

async fn plain_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer)),
            );
        }
    });
    Ok(addr)
}

/// The HTTPS stand-in for `secure.test` and its certificate (PEM).
async fn tls_server() -> anyhow::Result<(SocketAddr, String)> {
    let key = rcgen::generate_simple_self_signed(vec!["secure.test".to_string()])?;
    let pem = key.cert.pem();
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![key.cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
    )?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                if let Ok(tls) = acceptor.accept(stream).await {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service_fn(answer))
                        .await;
                }
            });
        }
    });
    Ok((addr, pem))
}

/// A client straight to the stand-ins (their names resolved to them) or through
/// the proxy with the workspace token. No connection is reused between requests
/// (`pool_max_idle_per_host(0)`), so each request pays its connection.
fn client(
    ca: &str,
    via: Option<(SocketAddr, &str)>,
    names: &[(&str, SocketAddr)],
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
        .pool_max_idle_per_host(0)
        .no_proxy();
    match via {
        Some((proxy, token)) => {
            builder = builder
                .proxy(reqwest::Proxy::all(format!("http://{proxy}"))?.basic_auth("jarvis", token));
        }
        None => {
            for (name, addr) in names {
                builder = builder.resolve(name, *addr);
            }
        }
    }
    Ok(builder.build()?)
}

/// Downloads `url` to nowhere; returns the time and checks the size.
async fn download(client: &reqwest::Client, url: &str, size: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = client.get(url).send().await?.error_for_status()?;
    let mut got = 0;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        got += chunk?.len();
    }
    anyhow::ensure!(got == size, "{url}: {got} bytes, expected {size}");
    Ok(started.elapsed())
}

/// Time to the first byte of the body of `url`.
async fn first_byte(client: &reqwest::Client, url: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut response = client.get(url).send().await?.error_for_status()?;
    response.chunk().await?.context("an empty answer")?;
    Ok(started.elapsed())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    pct(&times, 0.5)
}

fn mib_per_s(d: Duration) -> f64 {
    DOWNLOAD as f64 / MIB as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bench_db = BenchDb::fresh(DB, 10).await?;
    let db = bench_db.pool.clone();
    let user: uuid::Uuid = sqlx::query_scalar(
        "insert into users (email, password_hash) values ('egress@example.com', 'x') returning id",
    )
    .fetch_one(&db)
    .await?;
    let token = tokens::issue(&db, user).await?;

    let plain = plain_server().await?;
    let (secure, ca) = tls_server().await?;
    let allow = serde_json::json!([
        format!("plain.test:{}", plain.port()),
        format!("secure.test:{}", secure.port()),
    ]);
    // The proxy's own cost: no plan bandwidth pacing the downloads.
    let plans = Plans::from_json(
        &serde_json::json!({"free": {
            "egress_allow": allow,
            "egress_bandwidth_bytes_per_second": null,
        }})
        .to_string(),
    )?;
    let loopback: IpAddr = "127.0.0.1".parse()?;
    let names = StaticResolver::default()
        .with("plain.test", &[loopback])
        .with("secure.test", &[loopback]);
    let egress = Egress::new(
        db.clone(),
        Arc::new(plans),
        Arc::new(Metrics::default()),
        Settings {
            deny: DenyList::parse(NARROWED_DENY)?,
            ..Settings::default()
        },
        Arc::new(names),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = listener.local_addr()?;
    tokio::spawn(proxy::serve_tcp(egress, listener));

    let stand_ins = [("plain.test", plain), ("secure.test", secure)];
    let direct = client(&ca, None, &stand_ins)?;
    let proxied = client(&ca, Some((proxy_addr, &token)), &stand_ins)?;
    let plain_url = |path: &str| format!("http://plain.test:{}{path}", plain.port());
    let secure_url = |path: &str| format!("https://secure.test:{}{path}", secure.port());

    println!(
        "\n{} MiB download, median of {ROUNDS} (rounds alternate the paths)\n",
        DOWNLOAD / MIB
    );
    println!("| download         | direct               | through the proxy    | proxy / direct |");
    println!("|------------------|----------------------|----------------------|----------------|");
    for (name, url) in [
        ("http (forwarded)", plain_url(&format!("/bytes/{DOWNLOAD}"))),
        ("https (CONNECT)", secure_url(&format!("/bytes/{DOWNLOAD}"))),
    ] {
        // A warm-up of each path, then the rounds.
        download(&direct, &url, DOWNLOAD).await?;
        download(&proxied, &url, DOWNLOAD).await?;
        let (mut d, mut p) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            d.push(download(&direct, &url, DOWNLOAD).await?);
            p.push(download(&proxied, &url, DOWNLOAD).await?);
        }
        let (d, p) = (median(d), median(p));
        println!(
            "| {name:<16} | {:>7.1} ms {:>5.0} MiB/s | {:>7.1} ms {:>5.0} MiB/s | {:>13.2}× |",
            ms(d),
            mib_per_s(d),
            ms(p),
            mib_per_s(p),
            p.as_secs_f64() / d.as_secs_f64()
        );
    }

    println!(
        "\ntime to first byte of a small answer, a new connection each, {FIRST_BYTES} requests\n"
    );
    println!("| path                      | p50       | p99       |");
    println!("|---------------------------|-----------|-----------|");
    for (name, url) in [
        ("http", plain_url("/hello")),
        ("https", secure_url("/hello")),
    ] {
        let (mut d, mut p) = (Vec::new(), Vec::new());
        for _ in 0..FIRST_BYTES {
            d.push(first_byte(&direct, &url).await?);
            p.push(first_byte(&proxied, &url).await?);
        }
        d.sort();
        p.sort();
        for (path, t) in [("direct", &d), ("through the proxy", &p)] {
            println!(
                "| {:<25} | {:>6.2} ms | {:>6.2} ms |",
                format!("{name} {path}"),
                ms(pct(t, 0.5)),
                ms(pct(t, 0.99))
            );
        }
        println!(
            "| {:<25} | {:>6.2} ms | {:>6.2} ms |",
            format!("{name} added by the proxy"),
            ms(pct(&p, 0.5)) - ms(pct(&d, 0.5)),
            ms(pct(&p, 0.99)) - ms(pct(&d, 0.99))
        );
    }
    // The audit: every proxied connection has its row with its bytes.
    let (rows, bytes): (i64, Option<i64>) = sqlx::query_as(
        "select count(*), sum(bytes_down)::int8 from egress_connections where owner_id = $1",
    )
    .bind(user)
    .fetch_one(&db)
    .await?;
    println!(
        "\naudited: {rows} connections, {} MiB down",
        bytes.unwrap_or(0) / MIB as i64
    );
    bench_db.drop().await?;
    Ok(())
}
