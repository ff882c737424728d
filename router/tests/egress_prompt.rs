//! The egress proxy's approval prompt end to end: a real router (and its browser
//! WebSocket), the proxy asking through it, a local HTTP server standing in for a
//! host outside the lists, reached under a test name through a map resolver.

mod common;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use common::live::{Browser, Live};
use http_body_util::Full;
use hyper::{Request, Response, service::service_fn};
use hyper_util::rt::TokioIo;
use router::{
    egress::{Egress, Settings, audit, policy::DenyList, proxy, resolve::StaticResolver},
    metrics::Metrics,
    plans::Plans,
    workspaces::tokens,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use uuid::Uuid;

/// The default deny-list without loopback, so the stand-in on 127.0.0.1 is reachable.
const NARROWED_DENY: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,\
0.0.0.0/8,100.64.0.0/10,fc00::/7,fe80::/10";

/// A stand-in answering every request with `hello`.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(stream),
                service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
                }),
            ));
        }
    });
    addr
}

/// What every test here asks through: an egress proxy whose plan lists nothing,
/// asking through a router's tabs, and a stand-in it reaches under the names
/// `ask.test` and `late.test`.
struct Asking {
    db: PgPool,
    proxy: SocketAddr,
    port: u16,
}

impl Asking {
    /// The proxy asking through `live`'s router (its tabs, and every replica's).
    async fn through(live: &Live) -> Self {
        let db = live.app.db.clone();
        let plans =
            Plans::from_json(&json!({"free": {"egress_allow": []}}).to_string()).expect("plans");
        let names = StaticResolver::default()
            .with("ask.test", &["127.0.0.1".parse().expect("ip")])
            .with("late.test", &["127.0.0.1".parse().expect("ip")]);
        let egress = Egress::new(
            db.clone(),
            Arc::new(plans),
            Arc::new(Metrics::default()),
            Settings {
                deny: DenyList::parse(NARROWED_DENY).expect("deny-list"),
                ..Settings::default()
            },
            Arc::new(names),
        );
        egress.set_asker(live.app.state.egress_asker.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(proxy::serve_tcp(egress, listener));
        Self {
            db,
            proxy: addr,
            port: upstream().await.port(),
        }
    }

    /// The stand-in's page under `host`.
    fn url(&self, host: &str) -> String {
        format!("http://{host}:{}/", self.port)
    }

    /// A fresh workspace token of `user` (issue it after their workspace woke:
    /// the wake issues one of its own).
    async fn token(&self, user: Uuid) -> String {
        tokens::issue(&self.db, user).await.expect("token")
    }

    /// A client of the proxy with `token`, each request on its own connection (a
    /// question per connection).
    fn client(&self, token: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(
                reqwest::Proxy::all(format!("http://{}", self.proxy))
                    .expect("proxy")
                    .basic_auth("jarvis", token),
            )
            .pool_max_idle_per_host(0)
            .build()
            .expect("client")
    }
}

/// A tab of the user with this access token, their workspace awake (the wake
/// issues a workspace token of its own: the test's is issued after it).
async fn tab(live: &Live, access: &str) -> Browser {
    let mut tab = live.browser(access).await;
    tab.ready().await;
    tab
}

async fn question(tab: &mut Browser) -> Value {
    tab.until(|f| f["type"] == "egress_request")
        .await
        .pop()
        .expect("a request frame")
}

async fn answer(tab: &mut Browser, id: &Value, decision: &str) {
    tab.send(json!({"type": "egress_decision", "id": id, "decision": decision}))
        .await;
}

async fn reasons(db: &PgPool, user: Uuid, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = audit::recent(db, user, 100).await.expect("rows");
        if rows.len() >= n || tokio::time::Instant::now() > deadline {
            return rows.into_iter().rev().map(|r| r.reason).collect();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn once_lets_that_connection_through_and_always_every_later_one(db: PgPool) {
    let live = Live::start(db.clone()).await;
    let alice = live.app.register("alice@example.com").await;
    let bob = live.app.register("bob@example.com").await;
    let mut alice_tab = tab(&live, &alice.access).await;
    let mut bob_tab = tab(&live, &bob.access).await;
    let asking = Asking::through(&live).await;
    let (port, url) = (asking.port, asking.url("ask.test"));
    let http = asking.client(&asking.token(alice.id).await);

    // The request waits while alice's tab is asked.
    let waiting = tokio::spawn(http.get(&url).send());
    let asked = question(&mut alice_tab).await;
    assert_eq!(
        (asked["host"].as_str(), asked["port"].as_u64()),
        (Some("ask.test"), Some(u64::from(port)))
    );
    assert!(
        asked["expires_in_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{asked}"
    );
    let id = asked["id"].clone();

    // Bob's tab cannot answer alice's question: an error, and it still waits.
    answer(&mut bob_tab, &id, "always").await;
    let error = bob_tab
        .until(|f| f["type"] == "error")
        .await
        .pop()
        .expect("error");
    assert_eq!(error["code"], "egress_unknown", "{error}");
    assert!(!waiting.is_finished());
    // Nor an answer that is not one of the three.
    answer(&mut alice_tab, &id, "sometimes").await;
    let error = alice_tab
        .until(|f| f["type"] == "error")
        .await
        .pop()
        .expect("error");
    assert_eq!(error["code"], "bad_frame", "{error}");

    answer(&mut alice_tab, &id, "once").await;
    let r = waiting.await.expect("task").expect("response");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello");
    let resolved = alice_tab
        .until(|f| f["type"] == "egress_resolved")
        .await
        .pop()
        .expect("resolved");
    assert_eq!(
        (&resolved["id"], resolved["decision"].as_str()),
        (&id, Some("once"))
    );
    // Answered already: a second answer changes nothing.
    answer(&mut alice_tab, &id, "deny").await;
    let error = alice_tab
        .until(|f| f["type"] == "error")
        .await
        .pop()
        .expect("error");
    assert_eq!(error["code"], "egress_unknown", "{error}");

    // Once was once: the next connection asks again.
    let waiting = tokio::spawn(http.get(&url).send());
    let again = question(&mut alice_tab).await;
    assert_ne!(again["id"], id);
    answer(&mut alice_tab, &again["id"], "always").await;
    assert_eq!(
        waiting.await.expect("task").expect("response").status(),
        200
    );

    // Always: later connections go through with nobody answering.
    for _ in 0..2 {
        let r = http.get(&url).send().await.expect("response");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        reasons(&db, alice.id, 4).await,
        ["approved_once", "approved", "approved", "approved"]
    );
    let stored: Vec<(String, String)> =
        sqlx::query_as("select pattern, decision from egress_approvals where owner_id = $1")
            .bind(alice.id)
            .fetch_all(&db)
            .await
            .expect("approvals");
    assert_eq!(stored, [(format!("ask.test:{port}"), "allow".to_string())]);
    let metrics = live.app.state.metrics.render();
    assert!(
        metrics.contains("jarvis_egress_prompts_total{outcome=\"once\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("jarvis_egress_prompts_total{outcome=\"always\"} 1"),
        "{metrics}"
    );
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn deny_no_answer_and_no_browser_refuse_with_a_sentence_naming_the_host(db: PgPool) {
    let live = Live::with_config(db.clone(), |c| {
        c.egress_approval_timeout = Duration::from_secs(3);
    })
    .await;
    let alice = live.app.register("alice@example.com").await;
    let asking = Asking::through(&live).await;
    let port = asking.port;

    // No tab open anywhere: refused at once, saying so.
    let r = asking
        .client(&asking.token(alice.id).await)
        .get(asking.url("ask.test"))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()
            .get("x-jarvis-egress")
            .and_then(|v| v.to_str().ok()),
        Some("denied; reason=not_approved")
    );
    let text = r.text().await.expect("body");
    assert!(text.contains(&format!("ask.test:{port}")), "{text}");
    assert!(text.contains("the user did not approve it"), "{text}");
    assert!(text.contains("no browser of the user was open"), "{text}");

    let mut alice_tab = tab(&live, &alice.access).await;
    let token = asking.token(alice.id).await;
    let http = asking.client(&token);

    // No answer in time: refused, and the tab's prompt is withdrawn.
    let waiting = tokio::spawn(http.get(asking.url("late.test")).send());
    let asked = question(&mut alice_tab).await;
    let resolved = alice_tab
        .until(|f| f["type"] == "egress_resolved")
        .await
        .pop()
        .expect("resolved");
    assert_eq!(
        (&resolved["id"], resolved["decision"].as_str()),
        (&asked["id"], Some("expired"))
    );
    let r = waiting.await.expect("task").expect("response");
    assert_eq!(r.status(), 403);
    let text = r.text().await.expect("body");
    assert!(text.contains(&format!("late.test:{port}")), "{text}");
    assert!(text.contains("no answer within 3 s"), "{text}");
    // Too late to answer.
    answer(&mut alice_tab, &asked["id"], "once").await;
    let error = alice_tab
        .until(|f| f["type"] == "error")
        .await
        .pop()
        .expect("error");
    assert_eq!(error["code"], "egress_unknown", "{error}");

    // Deny, on a CONNECT tunnel: refused, and from then on without asking.
    let mut tcp = TcpStream::connect(asking.proxy).await.expect("connect");
    tcp.write_all(
        format!(
            "CONNECT ask.test:{port} HTTP/1.1\r\nProxy-Authorization: Basic {}\r\n\r\n",
            base64_of(&format!("jarvis:{token}"))
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let asked = question(&mut alice_tab).await;
    answer(&mut alice_tab, &asked["id"], "deny").await;
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut head))
        .await
        .expect("an answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("reason=denied_by_workspace"), "{head}");
    let r = http
        .get(asking.url("ask.test"))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()
            .get("x-jarvis-egress")
            .and_then(|v| v.to_str().ok()),
        Some("denied; reason=denied_by_workspace")
    );
    assert_eq!(
        reasons(&db, alice.id, 4).await,
        [
            "not_approved",
            "not_approved",
            "denied_by_workspace",
            "denied_by_workspace"
        ]
    );
}

fn base64_of(text: &str) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    STANDARD.encode(text)
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn a_tab_on_another_router_answers_the_question(db: PgPool) {
    // Two routers on one database; the sandbox's connection comes to the first,
    // the user's only tab is on the second.
    let holding = Live::start(db.clone()).await;
    let other = Live::start(db.clone()).await;
    let alice = holding.app.register("alice@example.com").await;
    let mut alice_tab = tab(&other, &alice.access).await;
    let asking = Asking::through(&holding).await;
    let http = asking.client(&asking.token(alice.id).await);

    let waiting = tokio::spawn(http.get(asking.url("ask.test")).send());
    let asked = question(&mut alice_tab).await;
    assert_eq!(asked["host"], "ask.test");
    answer(&mut alice_tab, &asked["id"], "once").await;
    let r = waiting.await.expect("task").expect("response");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello");

    // And a deny from there holds on the first router too.
    let waiting = tokio::spawn(http.get(asking.url("late.test")).send());
    let asked = question(&mut alice_tab).await;
    assert_eq!(asked["host"], "late.test");
    answer(&mut alice_tab, &asked["id"], "deny").await;
    let r = waiting.await.expect("task").expect("response");
    assert_eq!(r.status(), 403);
    assert_eq!(
        reasons(&db, alice.id, 2).await,
        ["approved_once", "denied_by_workspace"]
    );
}
