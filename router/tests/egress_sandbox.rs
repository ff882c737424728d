//! The sandbox side of egress (issue 21): the real `sandbox` under bubblewrap
//! running the real Claude Code CLI, whose Bash tool the fake model scripts,
//! reaches stand-ins for the internet only through the loopback forwarder the
//! sandbox starts, which relays to the router's egress proxy on `egress.sock`
//! with the workspace token.
//!
//! The stand-ins listen on 127.0.0.2: a loopback address of the host that the
//! agent's `NO_PROXY` does not name, so its tools send it to the proxy, and that
//! the jail (whose network namespace has a loopback of its own) cannot reach
//! any other way. The router's deny-list is narrowed to let loopback through;
//! the plans allow exactly the stand-in's port. The HTTPS stand-ins go by test
//! names (`secure.test`), which the router's resolver maps to 127.0.0.2, with a
//! certificate from a CA the test makes. No test reaches a host outside this
//! machine.

mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use common::{
    User,
    live::{Live, WAIT, of_type, wait_for},
};
use router::{egress::resolve::StaticResolver, proxy::Status};
use sandbox::testing::Reply;
use serde_json::json;
use sqlx::PgPool;

/// The default deny-list without loopback, so the stand-ins are reachable.
const NARROWED_DENY: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,\
0.0.0.0/8,100.64.0.0/10,fc00::/7,fe80::/10";

/// Where the stand-ins listen (see the module's doc).
const STAND_IN_IP: &str = "127.0.0.2";

/// A free port on [`STAND_IN_IP`].
fn free_port() -> u16 {
    std::net::TcpListener::bind((STAND_IN_IP, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.2")
        .port()
}

/// `python3 -m http.server` serving `dir` on [`STAND_IN_IP`]; killed on drop.
struct FileServer {
    child: Child,
    port: u16,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_dir(dir: &Path) -> FileServer {
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", STAND_IN_IP, "--directory"])
        .arg(dir)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs (apt-get install python3)");
    let server = FileServer { child, port };
    wait_for(|| std::net::TcpStream::connect((STAND_IN_IP, port)).is_ok()).await;
    server
}

/// Plans whose every tier allows exactly `allowed` (`host:port` patterns).
fn plans_allowing(allowed: &[String]) -> String {
    let plan = json!({ "egress_allow": allowed });
    json!({ "free": plan, "pro": plan, "enterprise": plan }).to_string()
}

async fn live_allowing(db: PgPool, allowed: &[String]) -> Live {
    live_resolving(db, allowed, None).await
}

/// [`live_allowing`], the egress proxy resolving names with `names` when given.
async fn live_resolving(db: PgPool, allowed: &[String], names: Option<StaticResolver>) -> Live {
    let plans = plans_allowing(allowed);
    Live::with_state(
        db,
        move |c| {
            c.egress_deny = NARROWED_DENY.into();
            c.plans = Some(plans);
            // A host off the list is asked about in the tab; one the test does not
            // answer is refused soon.
            c.egress_approval_timeout = Duration::from_secs(5);
        },
        |state| {
            if let Some(names) = names {
                state.egress_resolver = Arc::new(names);
            }
        },
    )
    .await
}

/// Runs `command` through the agent's Bash tool in a new conversation; its output.
async fn run_bash(live: &Live, browser: &mut common::live::Browser, command: &str) -> String {
    run_bash_answering(live, browser, command, &[]).await
}

/// [`run_bash`], the tab answering the egress proxy's questions about hosts
/// (`host:port` → `once`, `always` or `deny`; others are left to expire).
async fn run_bash_answering(
    live: &Live,
    browser: &mut common::live::Browser,
    command: &str,
    answers: &[(String, &str)],
) -> String {
    live.api.push(Reply::tool_use(
        "toolu_egress",
        "Bash",
        json!({"command": command, "description": "run", "timeout": 120000}),
    ));
    live.api.push(Reply::text(&["done"]));
    browser.message("run it", None).await;
    let mut frames = Vec::new();
    loop {
        let mut some = browser
            .until(|f| f["type"] == "done" || f["type"] == "error" || f["type"] == "egress_request")
            .await;
        let last = some.last().cloned().unwrap_or_default();
        frames.append(&mut some);
        if last["type"] != "egress_request" {
            break;
        }
        let asked = format!("{}:{}", last["host"].as_str().unwrap_or(""), last["port"]);
        if let Some((_, decision)) = answers.iter().find(|(target, _)| *target == asked) {
            browser
                .send(json!({"type": "egress_decision", "id": last["id"], "decision": decision}))
                .await;
        }
    }
    of_type(&frames, "tool_result")
        .first()
        .and_then(|r| r["content"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no tool result: {frames:?}"))
}

/// The audited connections of `user` to [`STAND_IN_IP`] on `port`.
async fn audited(live: &Live, user: &User, port: u16, count: usize) -> Vec<(String, String, i64)> {
    audited_host(live, user, STAND_IN_IP, port, count).await
}

/// The audited connections of `user` to `host:port`: (decision, reason, bytes
/// down), once there are at least `count` (a row is written when its connection ends).
async fn audited_host(
    live: &Live,
    user: &User,
    host: &str,
    port: u16,
    count: usize,
) -> Vec<(String, String, i64)> {
    let rows = || async {
        sqlx::query_as::<_, (String, String, i64)>(
            "select decision, reason, bytes_down from egress_connections \
             where owner_id = $1 and host = $2 and port = $3 order by id",
        )
        .bind(user.id)
        .bind(host)
        .bind(i32::from(port))
        .fetch_all(&live.app.db)
        .await
        .expect("audit rows")
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = rows().await;
        if found.len() >= count || tokio::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn curl_and_urllib_reach_an_allowed_host_through_the_forwarder_and_another_is_refused(
    db: PgPool,
) {
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::write(site.path().join("hello.txt"), "hello from the stand-in\n").expect("write");
    let allowed = serve_dir(site.path()).await;
    let other = serve_dir(site.path()).await;
    let live = live_allowing(db, &[format!("{STAND_IN_IP}:{}", allowed.port)]).await;
    let alice = live.app.register("alice@example.com").await;
    let mut a = live.browser(&alice.access).await;
    a.ready().await;

    let url = format!("http://{STAND_IN_IP}:{}/hello.txt", allowed.port);
    let refused = format!("http://{STAND_IN_IP}:{}/hello.txt", other.port);
    let command = format!(
        "echo PROXY=$HTTPS_PROXY; curl -sS {url}; \
         python3 -c \"import urllib.request; print('URLLIB', urllib.request.urlopen('{url}').read().decode())\"; \
         curl -sS -o /dev/null -D - {refused}; echo END"
    );
    // The host off the list is asked about in the tab, which denies it.
    let denied = vec![(format!("{STAND_IN_IP}:{}", other.port), "deny")];
    let output = run_bash_answering(&live, &mut a, &command, &denied).await;
    assert!(
        output.contains("PROXY=http://127.0.0.1:"),
        "the agent's proxy is the loopback forwarder: {output}"
    );
    assert_eq!(
        output.matches("hello from the stand-in").count(),
        2,
        "curl and urllib both got the page: {output}"
    );
    assert!(
        output.contains("URLLIB hello from the stand-in"),
        "{output}"
    );
    let lower = output.to_ascii_lowercase();
    assert!(lower.contains("http/1.1 403"), "{output}");
    assert!(
        lower.contains("x-jarvis-egress: denied; reason=denied_by_workspace"),
        "{output}"
    );
    assert!(output.contains("END"), "{output}");

    let rows = audited(&live, &alice, allowed.port, 2).await;
    assert_eq!(rows.len(), 2, "one row per request, under alice: {rows:?}");
    for (decision, reason, bytes_down) in &rows {
        assert_eq!((decision.as_str(), reason.as_str()), ("allowed", "plan"));
        assert!(*bytes_down > 0, "{rows:?}");
    }
    let rows = audited(&live, &alice, other.port, 1).await;
    assert_eq!(
        rows,
        vec![("denied".to_string(), "denied_by_workspace".to_string(), 0)]
    );

    // Another host off the list, allowed once from the tab: the agent's curl gets
    // the page.
    let third = serve_dir(site.path()).await;
    let once = vec![(format!("{STAND_IN_IP}:{}", third.port), "once")];
    let output = run_bash_answering(
        &live,
        &mut a,
        &format!(
            "curl -sS http://{STAND_IN_IP}:{}/hello.txt; echo END",
            third.port
        ),
        &once,
    )
    .await;
    assert!(output.contains("hello from the stand-in"), "{output}");
    let rows = audited(&live, &alice, third.port, 1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("allowed", "approved_once")
    );
}

/// Writes the wheel of a tiny pure-Python project (one module, `GREETING`) into
/// `index/simple/<name>/` with the PEP 503 pages pointing at it.
fn build_package_index(index: &Path, name: &str, greeting: &str) {
    let project = index.join("../project");
    std::fs::create_dir_all(project.join(name)).expect("project dir");
    std::fs::write(
        project.join(name).join("__init__.py"),
        format!("GREETING = {greeting:?}\n"),
    )
    .expect("module");
    let pages = index.join("simple").join(name);
    std::fs::create_dir_all(&pages).expect("index dir");
    // A wheel is a zip with the package, METADATA, WHEEL and RECORD (PEP 427).
    let script = r#"
import base64, hashlib, os, sys, zipfile
project, out, name = sys.argv[1], sys.argv[2], sys.argv[3]
dist = f"{name}-1.0.dist-info"
files = {f"{name}/__init__.py": open(os.path.join(project, name, "__init__.py"), "rb").read(),
         f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
         f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: jarvis-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
def digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
record = "".join(f"{p},{digest(d)},{len(d)}\n" for p, d in files.items()) + f"{dist}/RECORD,,\n"
wheel = os.path.join(out, f"{name}-1.0-py3-none-any.whl")
with zipfile.ZipFile(wheel, "w") as z:
    for p, d in files.items():
        z.writestr(p, d)
    z.writestr(f"{dist}/RECORD", record)
print(hashlib.sha256(open(wheel, "rb").read()).hexdigest())
"#;
    let built = Command::new("python3")
        .args(["-c", script])
        .arg(&project)
        .arg(&pages)
        .arg(name)
        .output()
        .expect("python3 runs");
    assert!(built.status.success(), "the wheel builds: {built:?}");
    let sha = String::from_utf8_lossy(&built.stdout).trim().to_string();
    let wheel = format!("{name}-1.0-py3-none-any.whl");
    std::fs::write(
        pages.join("index.html"),
        format!(
            "<!DOCTYPE html><html><body><a href=\"{wheel}#sha256={sha}\">{wheel}</a></body></html>\n"
        ),
    )
    .expect("write page");
    std::fs::write(
        index.join("simple/index.html"),
        format!("<!DOCTYPE html><html><body><a href=\"{name}/\">{name}</a></body></html>\n"),
    )
    .expect("root page");
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn pip_installs_from_a_package_index_through_the_proxy_and_the_package_imports_after_sleep_and_wake(
    db: PgPool,
) {
    let root = tempfile::tempdir().expect("tempdir");
    let index = root.path().join("index");
    build_package_index(&index, "jarvistinypkg", "hello from the tiny package");
    let server = serve_dir(&index).await;
    let live = live_allowing(db, &[format!("{STAND_IN_IP}:{}", server.port)]).await;
    let alice = live.app.register("alice@example.com").await;
    let mut a = live.browser(&alice.access).await;
    a.ready().await;

    let install = format!(
        "pip install --index-url http://{STAND_IN_IP}:{}/simple/ jarvistinypkg 2>&1; \
         python3 -c 'import jarvistinypkg; print(\"IMPORTED\", jarvistinypkg.GREETING)'",
        server.port
    );
    let output = run_bash(&live, &mut a, &install).await;
    assert!(
        output.contains("Successfully installed jarvistinypkg-1.0"),
        "{output}"
    );
    assert!(
        output.contains("IMPORTED hello from the tiny package"),
        "{output}"
    );
    let rows = audited(&live, &alice, server.port, 2).await;
    assert!(
        rows.len() >= 2 && rows.iter().all(|(d, _, _)| d == "allowed"),
        "the index page and the wheel went through the proxy: {rows:?}"
    );
    // It landed in the workspace's environment, which the sync never stores.
    let site = live.workspace(&alice).join(".venv/lib");
    assert!(site.is_dir(), "{}", site.display());

    drop(a);
    let registry = live.app.state.workspaces.clone();
    let hub = registry.hub(alice.id);
    registry.sleep(&hub).await.expect("sleeps");
    wait_for(|| hub.status() == Status::Asleep).await;

    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    let output = run_bash(
        &live,
        &mut a,
        "python3 -c 'import jarvistinypkg, sys; print(\"IMPORTED\", jarvistinypkg.GREETING, sys.prefix)'",
    )
    .await;
    assert!(
        output.contains("IMPORTED hello from the tiny package /workspace/.venv"),
        "{output}"
    );
}

/// A certificate authority made for one test, and its certificate (PEM).
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, "Jarvis egress test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            issuer: rcgen::Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A certificate for `name` signed by this CA, and its key (DER).
    fn issue(
        &self,
        name: &str,
    ) -> (
        tokio_rustls::rustls::pki_types::CertificateDer<'static>,
        tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("certificate");
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

/// An HTTPS stand-in for `name` on [`STAND_IN_IP`] answering every request with
/// `hello over tls from NAME`; its port.
async fn tls_stand_in(ca: &TestCa, name: &str) -> u16 {
    use hyper::{Response, service::service_fn};
    use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};
    let (cert, key) = ca.issue(name);
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind((STAND_IN_IP, 0))
        .await
        .expect("bind 127.0.0.2");
    let port = listener.local_addr().expect("addr").port();
    let body = format!("hello over tls from {name}\n");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    let service = service_fn(move |_req| {
                        let body = body.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                }
            });
        }
    });
    port
}

#[sqlx::test(migrator = "router::MIGRATOR")]
async fn curl_reaches_an_allowed_name_over_https_through_a_connect_tunnel_and_another_name_is_refused(
    db: PgPool,
) {
    let ca = TestCa::new();
    let secure = tls_stand_in(&ca, "secure.test").await;
    let other = tls_stand_in(&ca, "other.test").await;
    let stand_in: std::net::IpAddr = STAND_IN_IP.parse().expect("ip");
    let names = StaticResolver::default()
        .with("secure.test", &[stand_in])
        .with("other.test", &[stand_in]);
    let live = live_resolving(db, &[format!("secure.test:{secure}")], Some(names)).await;
    let alice = live.app.register("alice@example.com").await;
    let mut a = live.browser(&alice.access).await;
    a.ready().await;
    // The agent trusts the test's CA through a file in its workspace.
    std::fs::write(live.workspace(&alice).join("test-ca.pem"), &ca.pem).expect("write CA");

    let command = format!(
        "curl -sS --cacert /workspace/test-ca.pem https://secure.test:{secure}/; \
         curl -sS --cacert /workspace/test-ca.pem https://other.test:{other}/; \
         echo OTHER_EXIT=$?; echo END"
    );
    // The name off the list is asked about in the tab, which denies it.
    let denied = vec![(format!("other.test:{other}"), "deny")];
    let output = run_bash_answering(&live, &mut a, &command, &denied).await;
    assert!(
        output.contains("hello over tls from secure.test"),
        "curl got the page over TLS, certificate checked against the test's CA: {output}"
    );
    assert!(!output.contains("from other.test"), "{output}");
    assert!(
        output.contains("403"),
        "curl reports the proxy's refusal of the CONNECT: {output}"
    );
    assert!(output.contains("OTHER_EXIT=56"), "{output}");

    // Both audited under alice, by name: the tunnel with its bytes, the refusal.
    let rows = audited_host(&live, &alice, "secure.test", secure, 1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("allowed", "plan")
    );
    assert!(rows[0].2 > 0, "bytes came down the tunnel: {rows:?}");
    let rows = audited_host(&live, &alice, "other.test", other, 1).await;
    assert_eq!(
        rows,
        vec![("denied".to_string(), "denied_by_workspace".to_string(), 0)]
    );
}
