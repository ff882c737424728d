//! The way to the model gateway of a sandbox whose CLI must not hold the token:
//! a loopback HTTP listener whose requests are relayed to the router (local
//! mode: its unix socket bound into the jail, which has no network but
//! loopback; a warm pool pod: the router Service's sandbox port), each with the
//! workspace token put in.
//!
//! The CLI is given a placeholder API key: whatever `x-api-key` or
//! `Authorization` a request carries is replaced by the workspace token the
//! sandbox holds at that moment ([`Credentials`]). So a CLI started before its
//! sandbox belonged to anyone (a warm pool's spare) works once it is claimed,
//! and the agent's shell, which inherits the CLI's environment, never sees the
//! token. The conversation header a spare CLI sends names its own session; it
//! is replaced by the conversation that session serves ([`Sessions`]), so the
//! gateway records usage per conversation as before. Bodies stream through
//! both ways, never buffered.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http_body_util::BodyExt;
use hyper::{
    Request, Response,
    body::Incoming,
    header::{self, HeaderValue},
    service::service_fn,
};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::{
    Result,
    credentials::Credentials,
    egress_forward::{Body, Upstream, bad_gateway, send},
    process::GATEWAY_CONVERSATION_HEADER,
    sessions::Sessions,
};

/// The API key the CLI is given: the forwarder replaces it with the token.
pub const PLACEHOLDER_KEY: &str = "jarvis-sandbox-placeholder";

/// What every relayed request needs.
struct Relay {
    socket: Upstream,
    credentials: Arc<Credentials>,
    sessions: Arc<Sessions>,
}

/// Listens on `127.0.0.1:0` and relays each request to `upstream` with the
/// workspace token; returns the address to give the CLI as `ANTHROPIC_BASE_URL`.
pub async fn start(
    upstream: Upstream,
    credentials: Arc<Credentials>,
    sessions: Arc<Sessions>,
    cancel: CancellationToken,
) -> Result<SocketAddr> {
    let relay = Arc::new(Relay {
        socket: upstream,
        credentials,
        sessions,
    });
    crate::loopback::serve("gateway forwarder", cancel, move |tcp| {
        let _ = tcp.set_nodelay(true);
        serve_client(relay.clone(), tcp)
    })
    .await
}

/// The router at `gateway_url` (`http://HOST:PORT`) as the forwarder's upstream;
/// `None` for a URL it cannot relay to (another scheme, a path).
pub fn tcp_upstream(gateway_url: &str) -> Option<Upstream> {
    let url = reqwest::Url::parse(gateway_url).ok()?;
    if url.scheme() != "http" || !matches!(url.path(), "" | "/") {
        return None;
    }
    let port = url.port_or_known_default()?;
    Some(Upstream::Tcp(format!("{}:{port}", url.host_str()?)))
}

async fn serve_client(relay: Arc<Relay>, client: TcpStream) {
    let service = service_fn(move |req| {
        let relay = relay.clone();
        async move { Ok::<_, Infallible>(forward(&relay, req).await) }
    });
    crate::loopback::serve_http("gateway", client, service).await;
}

async fn forward(relay: &Relay, mut req: Request<Incoming>) -> Response<Body> {
    let Some(token) = relay.credentials.token() else {
        return bad_gateway("the sandbox has no workspace yet\n");
    };
    let Ok(mut key) = HeaderValue::from_str(&token) else {
        return bad_gateway("the workspace token is not a valid header value\n");
    };
    key.set_sensitive(true);
    let headers = req.headers_mut();
    headers.remove(header::AUTHORIZATION);
    headers.insert("x-api-key", key);
    let conversation = headers
        .get(GATEWAY_CONVERSATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|session| relay.sessions.conversation_of(session));
    if let Some(value) = conversation.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(GATEWAY_CONVERSATION_HEADER, value);
    }
    match send(&relay.socket, req).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(error) => {
            tracing::warn!(%error, socket = %relay.socket, "gateway socket unreachable");
            bad_gateway(&format!(
                "the sandbox could not reach the gateway: {error}\n"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use std::path::PathBuf;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stand-in for the gateway: answers with the key and conversation it got.
    async fn fake_gateway(path: PathBuf) {
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<Incoming>| async move {
                        let get = |name: &str| {
                            req.headers()
                                .get_all(name)
                                .iter()
                                .map(|v| v.to_str().unwrap_or("?").to_owned())
                                .collect::<Vec<_>>()
                                .join("|")
                        };
                        let text = format!(
                            "key={} auth={} conversation={}",
                            get("x-api-key"),
                            get("authorization"),
                            get(GATEWAY_CONVERSATION_HEADER)
                        );
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    async fn ask(addr: SocketAddr, headers: &str) -> (String, String) {
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n{headers}\r\n{{}}"
        );
        client.write_all(request.as_bytes()).await.expect("write");
        let mut all = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_to_string(&mut all),
        )
        .await
        .expect("in time")
        .expect("read");
        let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
        (head.to_string(), body.to_string())
    }

    #[test]
    fn a_pod_forwards_to_the_router_service_over_tcp() {
        assert_eq!(
            tcp_upstream("http://jarvis-router.jarvis.svc:8081"),
            Some(Upstream::Tcp("jarvis-router.jarvis.svc:8081".into()))
        );
        assert_eq!(
            tcp_upstream("http://127.0.0.1"),
            Some(Upstream::Tcp("127.0.0.1:80".into()))
        );
        assert_eq!(tcp_upstream("https://router:8443"), None);
        assert_eq!(tcp_upstream("http://router:8081/prefix"), None);
    }

    #[tokio::test]
    async fn requests_carry_the_token_the_sandbox_holds_now_and_their_conversation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("gw.sock");
        fake_gateway(socket.clone()).await;
        let credentials = Credentials::unassigned("secret");
        let sessions = Arc::new(Sessions::load(dir.path()));
        let (conversation, session) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        sessions
            .record(&conversation.to_string(), &session.to_string())
            .expect("record");
        let addr = start(
            Upstream::Unix(socket),
            credentials.clone(),
            sessions,
            CancellationToken::new(),
        )
        .await
        .expect("start");
        let forged = format!(
            "x-api-key: {PLACEHOLDER_KEY}\r\nAuthorization: Bearer forged\r\n{GATEWAY_CONVERSATION_HEADER}: {session}\r\n"
        );
        let (head, _) = ask(addr, &forged).await;
        assert!(head.starts_with("HTTP/1.1 502"), "unclaimed: {head}");
        credentials.claim("secret", "jw_alice").expect("claim");
        let (head, body) = ask(addr, &forged).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(
            body,
            format!("key=jw_alice auth= conversation={conversation}")
        );
        let plain = uuid::Uuid::new_v4();
        let (_, body) = ask(addr, &format!("{GATEWAY_CONVERSATION_HEADER}: {plain}\r\n")).await;
        assert_eq!(body, format!("key=jw_alice auth= conversation={plain}"));
    }
}
