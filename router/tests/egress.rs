//! The egress proxy against local stand-ins for the internet: a plain HTTP server
//! and a TLS server (a self-signed certificate from rcgen) on 127.0.0.1, reached
//! under test names through a map resolver, with the deny-list narrowed to let
//! loopback through (and nothing else: private and metadata ranges stay denied).

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, service::service_fn};
use hyper_util::rt::TokioIo;
use router::{
    egress::{
        Egress, Settings, audit,
        meter::{Meter, Metered},
        policy::{DenyList, Pattern},
        proxy,
        resolve::StaticResolver,
    },
    metrics::Metrics,
    plans::Plans,
    workspaces::tokens,
};
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};
use uuid::Uuid;

/// The default deny-list without loopback, so the stand-ins on 127.0.0.1 are reachable.
const NARROWED_DENY: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,\
0.0.0.0/8,100.64.0.0/10,fc00::/7,fe80::/10";

type Body = BoxBody<Bytes, Infallible>;

/// What a stand-in answers: `/hello`, `/headers` (the request's header names and
/// values, one a line) and `/bytes/N` (N bytes, streamed).
async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let body: Body = if path == "/hello" {
        Full::new(Bytes::from_static(b"hello from the stand-in")).boxed()
    } else if path == "/headers" {
        let mut text = String::new();
        for (name, value) in req.headers() {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
        }
        Full::new(Bytes::from(text)).boxed()
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let total: usize = n.parse().unwrap_or(0);
        const CHUNK: usize = 64 * 1024;
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let chunks = (0..total.div_ceil(CHUNK)).map(move |i| {
            let len = CHUNK.min(total - i * CHUNK);
            Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
        });
        BodyExt::boxed(StreamBody::new(futures::stream::iter(chunks)))
    } else {
        Full::new(Bytes::from_static(b"not found")).boxed()
    };
    let mut resp = Response::new(body);
    if path.starts_with("/bytes/") {
        resp.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/octet-stream"),
        );
    }
    Ok(resp)
}

/// A stand-in server; `meter` counts every byte on its sockets.
struct Upstream {
    addr: SocketAddr,
    meter: Arc<Meter>,
}

async fn plain_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let meter = Meter::new();
    let counted = meter.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let io = TokioIo::new(Metered::new(stream, counted.clone()));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(io, service_fn(answer)),
            );
        }
    });
    Upstream { addr, meter }
}

/// A TLS stand-in for `secure.test`; returns it and the certificate (PEM) to trust.
async fn tls_upstream() -> (Upstream, String) {
    let key =
        rcgen::generate_simple_self_signed(vec!["secure.test".to_string()]).expect("certificate");
    let pem = key.cert.pem();
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(
        vec![key.cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
    )
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let meter = Meter::new();
    let counted = meter.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                if let Ok(tls) = acceptor.accept(Metered::new(stream, counted)).await {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service_fn(answer))
                        .await;
                }
            });
        }
    });
    (Upstream { addr, meter }, pem)
}

struct Setup {
    db: PgPool,
    proxy: SocketAddr,
    plain: Upstream,
    tls: Upstream,
    ca: String,
    metrics: Arc<Metrics>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

async fn setup(db: PgPool) -> Setup {
    setup_with(
        db,
        Settings {
            deny: DenyList::parse(NARROWED_DENY).expect("deny-list"),
            ..Settings::default()
        },
    )
    .await
}

async fn setup_with(db: PgPool, settings: Settings) -> Setup {
    setup_resolving(db, settings, None).await
}

/// A resolver whose first answer is `first` and every later one `then`: a DNS
/// rebinding attacker's name. Counts its calls.
struct Rebinding {
    first: IpAddr,
    then: IpAddr,
    calls: std::sync::atomic::AtomicUsize,
}

impl router::egress::resolve::Resolve for Rebinding {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ip = if n == 0 { self.first } else { self.then };
        Box::pin(async move { Ok(vec![ip]) })
    }
}

async fn setup_resolving(
    db: PgPool,
    settings: Settings,
    resolver: Option<Arc<dyn router::egress::resolve::Resolve>>,
) -> Setup {
    setup_plan(db, settings, resolver, serde_json::json!({})).await
}

/// The setup with `plan`'s fields (besides `egress_allow`) on the free plan.
async fn setup_plan(
    db: PgPool,
    settings: Settings,
    resolver: Option<Arc<dyn router::egress::resolve::Resolve>>,
    plan: serde_json::Value,
) -> Setup {
    let plain = plain_upstream().await;
    let (tls, ca) = tls_upstream().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy = listener.local_addr().expect("addr");
    let allow = serde_json::json!([
        format!("plain.test:{}", plain.addr.port()),
        format!("secure.test:{}", tls.addr.port()),
        format!("loop.test:{}", proxy.port()),
        "metadata.test",
        "private.test",
        "169.254.169.254",
        "10.0.0.1",
        "*.wild.test",
    ]);
    let mut free = plan;
    free["egress_allow"] = allow;
    let plans = Plans::from_json(&serde_json::json!({ "free": free }).to_string()).expect("plans");
    let names = StaticResolver::default()
        .with("plain.test", &[ip("127.0.0.1")])
        .with("secure.test", &[ip("127.0.0.1")])
        .with("other.test", &[ip("127.0.0.1")])
        .with("loop.test", &[ip("127.0.0.1")])
        .with("metadata.test", &[ip("169.254.169.254")])
        // One private answer among public ones refuses the name.
        .with("private.test", &[ip("127.0.0.1"), ip("10.0.0.1")]);
    let resolver = resolver.unwrap_or_else(|| Arc::new(names));
    let metrics = Arc::new(Metrics::default());
    let egress = Egress::new(
        db.clone(),
        Arc::new(plans),
        metrics.clone(),
        settings,
        resolver,
    );
    tokio::spawn(proxy::serve_tcp(egress, listener));
    Setup {
        db,
        proxy,
        plain,
        tls,
        ca,
        metrics,
    }
}

/// A user with a current workspace token.
async fn user(db: &PgPool, email: &str) -> (Uuid, String) {
    let id: Uuid = sqlx::query_scalar(
        "insert into users (email, password_hash) values ($1, 'x') returning id",
    )
    .bind(email)
    .fetch_one(db)
    .await
    .expect("user");
    let token = tokens::issue(db, id).await.expect("token");
    (id, token)
}

impl Setup {
    fn client(&self, token: Option<&str>) -> reqwest::Client {
        let mut proxy = reqwest::Proxy::all(format!("http://{}", self.proxy)).expect("proxy");
        if let Some(token) = token {
            proxy = proxy.basic_auth("jarvis", token);
        }
        reqwest::Client::builder()
            .proxy(proxy)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.as_bytes()).expect("ca"))
            .build()
            .expect("client")
    }

    fn plain_url(&self, path: &str) -> String {
        format!("http://plain.test:{}{path}", self.plain.addr.port())
    }

    fn secure_url(&self, path: &str) -> String {
        format!("https://secure.test:{}{path}", self.tls.addr.port())
    }

    /// `user`'s audit rows once there are `n` (bounded wait: a row is written when
    /// its connection ends).
    async fn rows(&self, user: Uuid, n: usize) -> Vec<audit::Row> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = audit::recent(&self.db, user, 100).await.expect("rows");
            if rows.len() >= n || Instant::now() > deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Sends `head` to the proxy raw and returns the status line and headers it answers.
async fn raw(proxy: SocketAddr, head: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).to_lowercase()
}

/// A tunnel to `target` through the proxy with `token`, once the proxy answered
/// 200 (its head read byte by byte: nothing past it is consumed).
async fn tunnel(proxy: SocketAddr, target: &str, token: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(proxy).await.expect("connect");
    tcp.write_all(
        format!(
            "CONNECT {target} HTTP/1.1\r\nProxy-Authorization: {}\r\n\r\n",
            basic(token)
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.expect("read");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// The proxy's `X-Jarvis-Egress` header on `r` (`denied; reason=…`).
fn verdict(r: &reqwest::Response) -> Option<&str> {
    r.headers()
        .get("x-jarvis-egress")
        .and_then(|v| v.to_str().ok())
}

fn basic(token: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("jarvis:{token}")))
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_allowed_host_is_reached_plain_and_through_a_tls_tunnel_and_audited(db: PgPool) {
    let s = setup(db).await;
    let (alice, token) = user(&s.db, "alice@example.com").await;

    // Plain HTTP: forwarded, credentials and hop-by-hop headers dropped, Via added.
    let client = s.client(Some(&token));
    let r = client
        .get(s.plain_url("/headers"))
        .send()
        .await
        .expect("plain get");
    assert_eq!(r.status(), 200);
    let seen = r.text().await.expect("body");
    assert!(!seen.contains("proxy-authorization"), "{seen}");
    assert!(seen.contains("via: 1.1 jarvis-egress"), "{seen}");
    assert!(
        seen.contains(&format!("host: plain.test:{}", s.plain.addr.port())),
        "{seen}"
    );
    let rows = s.rows(alice, 1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        (row.host.as_str(), row.port),
        ("plain.test", i32::from(s.plain.addr.port()))
    );
    assert_eq!(
        (row.decision.as_str(), row.reason.as_str()),
        ("allowed", "plan")
    );
    // The proxy counts what crossed the upstream socket: exactly what the stand-in saw.
    assert_eq!(row.bytes_up as u64, s.plain.meter.down(), "bytes up");
    assert_eq!(row.bytes_down as u64, s.plain.meter.up(), "bytes down");
    assert!(row.ended_at >= row.started_at);

    // CONNECT: a real TLS handshake with the stand-in, then a request inside.
    let r = client
        .get(s.secure_url("/bytes/300000"))
        .send()
        .await
        .expect("https get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body").len(), 300_000);
    drop(client); // ends the pooled tunnel, so its row is written
    let rows = s.rows(alice, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let row = rows
        .iter()
        .find(|r| r.host == "secure.test")
        .expect("tunnel row");
    assert_eq!(
        (row.decision.as_str(), row.reason.as_str()),
        ("allowed", "plan")
    );
    assert!(row.bytes_down >= 300_000, "{row:?}");
    // Wait for the stand-in to have seen the close too, then compare exactly.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.tls.meter.down() != row.bytes_up as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(row.bytes_up as u64, s.tls.meter.down(), "tunnel bytes up");
    assert_eq!(row.bytes_down as u64, s.tls.meter.up(), "tunnel bytes down");

    let metrics = s.metrics.render();
    assert!(
        metrics.contains("jarvis_egress_decisions_total{decision=\"allowed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("jarvis_egress_bytes_total{direction=\"down\"}"),
        "{metrics}"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_host_not_on_the_list_is_refused_with_the_reason_and_audited(db: PgPool) {
    let s = setup(db).await;
    let (alice, token) = user(&s.db, "alice@example.com").await;
    let client = s.client(Some(&token));
    let url = format!("http://other.test:{}/hello", s.plain.addr.port());
    let r = client.get(&url).send().await.expect("get");
    assert_eq!(r.status(), 403);
    assert_eq!(verdict(&r), Some("denied; reason=not_allowed"));
    let text = r.text().await.expect("body");
    assert!(text.contains("not on the workspace's allow-list"), "{text}");
    // The stand-in was never reached.
    assert_eq!(s.plain.meter.down(), 0);

    // The same through CONNECT; an allowed host on another port is refused too.
    let head = raw(s.proxy, &format!(
        "CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\nProxy-Authorization: {}\r\n\r\n",
        basic(&token)
    )).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(
        head.contains("x-jarvis-egress: denied; reason=not_allowed"),
        "{head}"
    );
    let r = client
        .get(
            s.secure_url("/hello")
                .replace(&s.tls.addr.port().to_string(), "443"),
        )
        .send()
        .await;
    assert!(r.is_err(), "CONNECT secure.test:443 must be refused");

    // A wildcard names what is below its domain, not the domain.
    let head = raw(
        s.proxy,
        &format!(
            "CONNECT wild.test:443 HTTP/1.1\r\nProxy-Authorization: {}\r\n\r\n",
            basic(&token)
        ),
    )
    .await;
    assert!(head.contains("reason=not_allowed"), "{head}");

    // The workspace's own approval lets other.test through; its deny wins over the plan.
    audit::set_approval(
        &s.db,
        alice,
        &Pattern::parse(&format!("other.test:{}", s.plain.addr.port())).expect("p"),
        true,
    )
    .await
    .expect("approve");
    let r = client.get(&url).send().await.expect("get");
    assert_eq!(r.status(), 200);
    audit::set_approval(
        &s.db,
        alice,
        &Pattern::parse("plain.test").expect("p"),
        false,
    )
    .await
    .expect("deny");
    let r = client.get(s.plain_url("/hello")).send().await.expect("get");
    assert_eq!(r.status(), 403);
    assert_eq!(verdict(&r), Some("denied; reason=denied_by_workspace"));

    let rows = s.rows(alice, 6).await;
    let denied: Vec<_> = rows.iter().filter(|r| r.decision == "denied").collect();
    assert_eq!(denied.len(), 5, "{rows:?}");
    assert!(denied.iter().all(|r| r.bytes_up == 0 && r.bytes_down == 0));
    assert!(
        rows.iter()
            .any(|r| r.host == "other.test" && r.reason == "not_allowed")
    );
    assert!(
        rows.iter()
            .any(|r| r.host == "other.test" && r.reason == "approved" && r.decision == "allowed")
    );
    assert!(
        rows.iter()
            .any(|r| r.host == "plain.test" && r.reason == "denied_by_workspace")
    );
    assert!(
        s.metrics
            .render()
            .contains("jarvis_egress_decisions_total{decision=\"denied\"} 5")
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn private_and_metadata_addresses_are_refused_even_when_the_name_is_allowed(db: PgPool) {
    let s = setup(db).await;
    let (alice, token) = user(&s.db, "alice@example.com").await;
    let client = s.client(Some(&token));
    for url in [
        "http://metadata.test/latest/meta-data/",
        "http://private.test/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::ffff:169.254.169.254]/",
    ] {
        let r = client.get(url).send().await.expect("get");
        let reason = r
            .headers()
            .get("x-jarvis-egress")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(r.status(), 403, "{url}");
        // The mapped literal is not on the allow-list: refused by name before any address.
        let want = if url.contains("::ffff") {
            "denied; reason=not_allowed"
        } else {
            "denied; reason=blocked_address"
        };
        assert_eq!(reason.as_deref(), Some(want), "{url}");
    }
    for target in ["metadata.test:443", "169.254.169.254:443", "10.0.0.1:443"] {
        let head = raw(
            s.proxy,
            &format!(
                "CONNECT {target} HTTP/1.1\r\nProxy-Authorization: {}\r\n\r\n",
                basic(&token)
            ),
        )
        .await;
        assert!(head.starts_with("http/1.1 403"), "{target}: {head}");
        assert!(head.contains("reason=blocked_address"), "{target}: {head}");
    }
    let rows = s.rows(alice, 8).await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.reason == "blocked_address")
            .count(),
        7,
        "{rows:?}"
    );

    // With loopback denied (the default list), the loopback stand-in is refused too.
    let strict = setup_with(s.db.clone(), Settings::default()).await;
    let client = strict.client(Some(&token));
    let r = client
        .get(strict.plain_url("/hello"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    assert_eq!(strict.plain.meter.down(), 0);

    // A loop: the proxy itself as the target, or a request that already went through it.
    let client = s.client(Some(&token));
    let r = client
        .get(format!("http://loop.test:{}/", s.proxy.port()))
        .send()
        .await
        .expect("get");
    assert_eq!(verdict(&r), Some("denied; reason=proxy_loop"));
    let r = client
        .get(s.plain_url("/hello"))
        .header("via", "1.1 jarvis-egress")
        .send()
        .await
        .expect("get");
    assert_eq!(verdict(&r), Some("denied; reason=proxy_loop"));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to(db: PgPool) {
    let rebinding = Arc::new(Rebinding {
        first: ip("127.0.0.1"),
        then: ip("10.0.0.1"),
        calls: Default::default(),
    });
    let s = setup_resolving(
        db,
        Settings {
            deny: DenyList::parse(NARROWED_DENY).expect("deny-list"),
            ..Settings::default()
        },
        Some(rebinding.clone()),
    )
    .await;
    let (_alice, token) = user(&s.db, "alice@example.com").await;
    // The checked answer (the stand-in) is connected to; a second lookup, which
    // would answer 10.0.0.1, never happens.
    let r = s
        .client(Some(&token))
        .get(s.plain_url("/hello"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello from the stand-in");
    assert_eq!(rebinding.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The next connection gets the rebound answer, and is refused for it.
    let r = s
        .client(Some(&token))
        .get(s.plain_url("/hello"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    assert_eq!(verdict(&r), Some("denied; reason=blocked_address"));
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_tunnel_whose_tls_server_name_is_another_host_is_closed(db: PgPool) {
    let s = setup(db).await;
    let (alice, token) = user(&s.db, "alice@example.com").await;
    let tcp = tunnel(
        s.proxy,
        &format!("secure.test:{}", s.tls.addr.port()),
        &token,
    )
    .await;
    // Domain fronting: the tunnel is for secure.test, the ClientHello names another.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&s.ca) {
        roots.add(cert).expect("root");
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("other.test").expect("name");
    let handshake = connector.connect(name, tcp).await;
    assert!(
        handshake.is_err(),
        "the tunnel must be closed before any TLS answer"
    );
    let rows = s.rows(alice, 1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].decision.as_str(), rows[0].reason.as_str()),
        ("denied", "sni_mismatch")
    );
    assert_eq!(rows[0].bytes_up, 0, "nothing reached the upstream");
    assert_eq!(s.tls.meter.down(), 0);
}

/// The DER certificates of a PEM text.
fn rustls_pemfile_certs(
    pem: &str,
) -> Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.expect("certificate"))
        .collect()
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn no_token_or_a_revoked_token_is_refused(db: PgPool) {
    let s = setup(db).await;
    let (alice, token) = user(&s.db, "alice@example.com").await;
    let (bob, bob_token) = user(&s.db, "bob@example.com").await;

    let r = s
        .client(None)
        .get(s.plain_url("/hello"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 407);
    assert!(r.headers().contains_key("proxy-authenticate"));
    let r = s
        .client(Some("jw_not-a-token"))
        .get(s.plain_url("/hello"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 407);
    let head = raw(s.proxy, "CONNECT plain.test:443 HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 407"), "{head}");

    // Bob's workspace went to sleep: his token is no longer good, for anyone.
    tokens::revoke(&s.db, bob).await.expect("revoke");
    let r = s
        .client(Some(&bob_token))
        .get(s.plain_url("/hello"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 407);
    // Alice's is.
    let r = s
        .client(Some(&token))
        .get(s.plain_url("/hello"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert!(s.plain.meter.down() > 0);
    // Refusals without a user are not audited as anyone's.
    assert!(
        audit::recent(&s.db, bob, 10)
            .await
            .expect("rows")
            .is_empty()
    );
    assert_eq!(s.rows(alice, 1).await.len(), 1);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn audit_rows_are_visible_only_to_their_user(db: PgPool) {
    let s = setup(db).await;
    let (alice, a_token) = user(&s.db, "alice@example.com").await;
    let (bob, b_token) = user(&s.db, "bob@example.com").await;
    let r = s
        .client(Some(&a_token))
        .get(s.plain_url("/hello"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let r = s
        .client(Some(&b_token))
        .get("http://other.test/")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    assert_eq!(s.rows(alice, 1).await.len(), 1);
    assert_eq!(s.rows(bob, 1).await.len(), 1);

    // As Bob (row-level security), even a query without an owner filter sees only his.
    let mut tx = router::db::user_tx(&s.db, bob).await.expect("tx");
    let hosts: Vec<(Uuid, String)> =
        sqlx::query_as("select owner_id, host from egress_connections")
            .fetch_all(&mut *tx)
            .await
            .expect("select");
    assert_eq!(hosts, vec![(bob, "other.test".to_string())]);
    let forged = sqlx::query(
        "insert into egress_connections (owner_id, host, port, decision, reason, started_at, ended_at)
         values ($1, 'x', 1, 'allowed', 'plan', now(), now())",
    )
    .bind(alice)
    .execute(&mut *tx)
    .await;
    assert!(forged.is_err(), "writing a row for another user must fail");
    drop(tx);
    // And with no user set, none.
    let mut tx = s.db.begin().await.expect("tx");
    sqlx::query("select set_config('role', 'jarvis_user', true)")
        .execute(&mut *tx)
        .await
        .expect("role");
    let n: i64 = sqlx::query_scalar("select count(*) from egress_connections")
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(n, 0);
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_connection_cap_refuses_more_at_once(db: PgPool) {
    let s = setup_with(
        db,
        Settings {
            deny: DenyList::parse(NARROWED_DENY).expect("deny-list"),
            max_connections: 1,
            ..Settings::default()
        },
    )
    .await;
    let (_alice, token) = user(&s.db, "alice@example.com").await;
    // An open tunnel holds the one slot.
    let held = tunnel(
        s.proxy,
        &format!("secure.test:{}", s.tls.addr.port()),
        &token,
    )
    .await;
    let r = s
        .client(Some(&token))
        .get(s.plain_url("/hello"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 429);
    assert_eq!(verdict(&r), Some("denied; reason=too_many_connections"));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = s
            .client(Some(&token))
            .get(s.plain_url("/hello"))
            .send()
            .await
            .expect("get");
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn an_idle_tunnel_is_closed_and_audited(db: PgPool) {
    let s = setup_with(
        db,
        Settings {
            deny: DenyList::parse(NARROWED_DENY).expect("deny-list"),
            idle_timeout: Duration::from_millis(300),
            ..Settings::default()
        },
    )
    .await;
    let (alice, token) = user(&s.db, "alice@example.com").await;
    let mut held = tunnel(
        s.proxy,
        &format!("plain.test:{}", s.plain.addr.port()),
        &token,
    )
    .await;
    // Nothing sent: the proxy closes the tunnel after the idle timeout.
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), held.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    let rows = s.rows(alice, 1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].bytes_up, 0);
}

/// 100 MiB through a CONNECT tunnel vs. straight from the same TLS stand-in, and
/// the time to first byte each way (connect, TLS handshake and request included).
/// `cargo test --release -p router --test egress -- --ignored --nocapture`
#[sqlx::test(migrator = "router::MIGRATOR")]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
async fn bench_tunnel_vs_direct(db: PgPool) {
    const SIZE: usize = 100 * 1024 * 1024;
    let settings = Settings {
        deny: DenyList::parse(NARROWED_DENY).expect("deny-list"),
        ..Settings::default()
    };
    // The proxy's own cost: no plan bandwidth.
    let no_cap = serde_json::json!({ "egress_bandwidth_bytes_per_second": null });
    let s = setup_plan(db, settings, None, no_cap).await;
    let (_alice, token) = user(&s.db, "alice@example.com").await;
    let ca = reqwest::Certificate::from_pem(s.ca.as_bytes()).expect("ca");
    let url = s.secure_url(&format!("/bytes/{SIZE}"));
    let direct = || {
        reqwest::Client::builder()
            .no_proxy()
            .resolve("secure.test", s.tls.addr)
            .add_root_certificate(ca.clone())
            .build()
            .expect("client")
    };
    let proxied = || s.client(Some(&token));
    async fn fetch(client: reqwest::Client, url: &str) -> (Duration, Duration) {
        let start = Instant::now();
        let r = client.get(url).send().await.expect("get");
        let mut stream = r.bytes_stream();
        let mut ttfb = None;
        let mut n = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("chunk");
            ttfb.get_or_insert_with(|| start.elapsed());
            n += chunk.len();
        }
        assert_eq!(n, SIZE);
        (ttfb.unwrap_or_default(), start.elapsed())
    }
    // Warm up both paths once.
    fetch(direct(), &url).await;
    fetch(proxied(), &url).await;
    let mut d = Vec::new();
    let mut p = Vec::new();
    for _ in 0..3 {
        d.push(fetch(direct(), &url).await);
        p.push(fetch(proxied(), &url).await);
    }
    let best = |v: &[(Duration, Duration)]| {
        let ttfb = v.iter().map(|x| x.0).min().unwrap_or_default();
        let total = v.iter().map(|x| x.1).min().unwrap_or_default();
        (ttfb, total)
    };
    let (d_ttfb, d_total) = best(&d);
    let (p_ttfb, p_total) = best(&p);
    let mib = SIZE as f64 / (1024.0 * 1024.0);
    let d_rate = mib / d_total.as_secs_f64();
    let p_rate = mib / p_total.as_secs_f64();
    println!(
        "egress bench (100 MiB over TLS, best of 3): direct {d_rate:.0} MiB/s, through the proxy {p_rate:.0} MiB/s, ratio {:.2}; time to first byte direct {:.2} ms, proxied {:.2} ms (+{:.2} ms)",
        p_rate / d_rate,
        d_ttfb.as_secs_f64() * 1e3,
        p_ttfb.as_secs_f64() * 1e3,
        (p_ttfb.as_secs_f64() - d_ttfb.as_secs_f64()) * 1e3,
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn the_plans_bytes_per_month_stop_a_download_and_refuse_the_next_connection(db: PgPool) {
    const LIMIT: u64 = 1024 * 1024;
    let settings = Settings {
        deny: DenyList::parse(NARROWED_DENY).expect("deny-list"),
        ..Settings::default()
    };
    let s = setup_plan(
        db,
        settings,
        None,
        serde_json::json!({ "egress_bytes_per_month": LIMIT }),
    )
    .await;
    let (alice, token) = user(&s.db, "alice@example.com").await;
    let client = s.client(Some(&token));

    // Under the limit: whole.
    let r = client
        .get(s.plain_url("/bytes/100000"))
        .send()
        .await
        .expect("small download");
    assert_eq!(r.bytes().await.expect("body").len(), 100_000);
    s.rows(alice, 1).await;

    // Across it: the download stops, short of its length, with an error.
    let r = client
        .get(s.plain_url("/bytes/8000000"))
        .send()
        .await
        .expect("big download starts");
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut got = 0usize;
    let mut broken = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => got += c.len(),
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    assert!(
        broken,
        "the download ended without an error after {got} bytes"
    );
    assert!(
        (got as u64) < 2 * LIMIT,
        "{got} bytes arrived past a limit of {LIMIT}"
    );
    let rows = s.rows(alice, 2).await;
    let cut = rows
        .iter()
        .find(|r| r.reason == "byte_limit")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(cut.decision, "allowed");
    let total: i64 = rows.iter().map(|r| r.bytes_up + r.bytes_down).sum();
    assert!(total as u64 >= LIMIT, "{rows:?}");

    // Then refused at once, with the limit named; a TLS tunnel too.
    let r = client
        .get(s.plain_url("/hello"))
        .send()
        .await
        .expect("refusal");
    assert_eq!(r.status(), 403);
    assert_eq!(verdict(&r), Some("denied; reason=byte_limit"));
    let text = r.text().await.expect("body");
    assert!(text.contains("network transfer for this month"), "{text}");
    assert!(
        text.contains(&format!("of the plan's {LIMIT} bytes")),
        "{text}"
    );
    let refused = raw(
        s.proxy,
        &format!(
            "CONNECT secure.test:{} HTTP/1.1\r\nProxy-Authorization: {}\r\n\r\n",
            s.tls.addr.port(),
            basic(&token)
        ),
    )
    .await;
    assert!(refused.starts_with("http/1.1 403"), "{refused}");

    // Another workspace is not affected.
    let (_bob, bob_token) = user(&s.db, "bob@example.com").await;
    let r = s
        .client(Some(&bob_token))
        .get(s.plain_url("/hello"))
        .send()
        .await
        .expect("bob");
    assert_eq!(r.status(), 200);
}

/// Downloads `url` with `client`, adding every chunk's length to `seen` as it
/// arrives; the bytes and how long it took.
async fn download_counting(
    client: reqwest::Client,
    url: String,
    seen: Arc<std::sync::atomic::AtomicU64>,
) -> (u64, Duration) {
    let started = Instant::now();
    let r = client.get(url).send().await.expect("download starts");
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = body.next().await {
        let n = chunk.expect("chunk").len() as u64;
        got += n;
        seen.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }
    (got, started.elapsed())
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_workspaces_connections_share_the_plans_bandwidth_and_another_workspace_has_its_own(
    db: PgPool,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    const RATE: u64 = 128 * 1024;
    const SIZE: u64 = 512 * 1024;
    // What may cross before pacing starts: the bucket's one second, and the one
    // copy buffer (64 KiB) each tunnel reads into debt.
    const BURST: u64 = RATE;
    const BUFFER: u64 = 64 * 1024;
    let settings = Settings {
        deny: DenyList::parse(NARROWED_DENY).expect("deny-list"),
        ..Settings::default()
    };
    let s = setup_plan(
        db,
        settings,
        None,
        serde_json::json!({ "egress_bandwidth_bytes_per_second": RATE }),
    )
    .await;
    let (alice, alice_token) = user(&s.db, "alice@example.com").await;
    let (bob, bob_token) = user(&s.db, "bob@example.com").await;
    let url = s.secure_url(&format!("/bytes/{SIZE}"));

    // Alice downloads twice at once (two tunnels), Bob once, all at the same time.
    let alice_seen = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let alice_downloads: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(download_counting(
                s.client(Some(&alice_token)),
                url.clone(),
                alice_seen.clone(),
            ))
        })
        .collect();
    let (bob_got, bob_took) = download_counting(
        s.client(Some(&bob_token)),
        url.clone(),
        Arc::new(AtomicU64::new(0)),
    )
    .await;
    // What alice had when Bob's download was whole.
    let alice_then = alice_seen.load(Ordering::SeqCst);
    for d in alice_downloads {
        let (got, _) = d.await.expect("task");
        assert_eq!(got, SIZE);
    }
    let alice_took = started.elapsed();
    assert_eq!(bob_got, SIZE);

    // Alice's two connections shared one rate: together they took at least the
    // time their bytes take at it (each alone at the rate would take half).
    let floor = Duration::from_secs_f64((2 * SIZE - BURST - 2 * BUFFER) as f64 / RATE as f64);
    assert!(
        alice_took >= floor,
        "alice's {} bytes took {alice_took:?}, under the {floor:?} the rate allows",
        2 * SIZE
    );
    // Bob's one download was paced too, at a rate of his own.
    let floor = Duration::from_secs_f64((SIZE - BURST - BUFFER) as f64 / RATE as f64);
    assert!(bob_took >= floor, "{bob_took:?} < {floor:?}");
    // Bob did not share Alice's: his download was whole while hers were not.
    assert!(
        alice_then < 2 * SIZE,
        "alice had all {alice_then} bytes before bob's {SIZE} arrived"
    );

    // Audited with every byte, under each user.
    let rows = s.rows(alice, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.bytes_down as u64 >= SIZE), "{rows:?}");
    assert_eq!(s.rows(bob, 1).await.len(), 1);
}
