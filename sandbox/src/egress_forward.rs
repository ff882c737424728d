//! The agent's way to the internet: a loopback HTTP proxy the CLI and every
//! command it runs are pointed at (`HTTPS_PROXY`, `HTTP_PROXY`, …), relaying each
//! request to the router's egress proxy (its unix socket bound into the local
//! jail, or its TCP address from a pod) with the workspace token added as
//! `Proxy-Authorization`, so the token never has to be in the agent's environment.
//!
//! Each request the client sends (a `CONNECT`, or an absolute-form `http://`
//! request) goes over a fresh connection to the router's proxy, which decides,
//! audits and answers; the answer comes back unchanged, and after a `2xx` to a
//! `CONNECT` the two connections are joined byte for byte. Any client
//! `Proxy-Authorization` is replaced. A failure (the router's proxy unreachable,
//! a broken connection) ends that one request or connection with a `502` saying
//! so, never the forwarder or the sandbox.

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpStream, UnixStream},
};
use tokio_util::sync::CancellationToken;

use crate::{Result, credentials::Credentials};

/// The user name in the `Proxy-Authorization` the router's proxy expects.
pub const PROXY_USER: &str = "jarvis";

/// Longest wait to connect to the router's proxy.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// Where the router's egress proxy is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A unix socket (the local jail: `egress.sock`, bound in).
    Unix(PathBuf),
    /// `host:port` (a pod: the router Service's egress port).
    Tcp(String),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(addr) => f.write_str(addr),
        }
    }
}

/// What every relayed request needs.
struct Relay {
    upstream: Upstream,
    credentials: Arc<Credentials>,
}

impl Relay {
    /// `Proxy-Authorization` with the workspace token, once the sandbox has one.
    fn authorization(&self) -> Option<HeaderValue> {
        let token = self.credentials.token()?;
        let mut value =
            HeaderValue::from_str(&format!("Basic {}", basic_credentials(&token))).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// Listens on `127.0.0.1:0` and relays each client to `upstream`, authenticated
/// with the workspace token `credentials` hold at the time of each request;
/// returns the address to give the agent as its proxy.
pub async fn start(
    upstream: Upstream,
    credentials: Arc<Credentials>,
    cancel: CancellationToken,
) -> Result<SocketAddr> {
    let relay_upstream = upstream.to_string();
    let relay = Arc::new(Relay {
        upstream,
        credentials,
    });
    let addr = crate::loopback::serve("egress forwarder", cancel, move |client| {
        let _ = client.set_nodelay(true);
        serve_client(relay.clone(), client)
    })
    .await?;
    tracing::info!(%addr, upstream = %relay_upstream, "egress forwarder listening");
    Ok(addr)
}

/// `base64(jarvis:<token>)`.
fn basic_credentials(token: &str) -> String {
    STANDARD.encode(format!("{PROXY_USER}:{token}"))
}

/// Serves one client connection: any number of requests, tunnels included.
async fn serve_client(relay: Arc<Relay>, client: TcpStream) {
    let service = service_fn(move |req| {
        let relay = relay.clone();
        async move { Ok::<_, Infallible>(forward(&relay, req).await) }
    });
    crate::loopback::serve_http("egress", client, service).await;
}

/// Relays one request; the router proxy's answer, or a `502` saying why not.
async fn forward(relay: &Relay, mut req: Request<Incoming>) -> Response<Body> {
    let connect = req.method() == Method::CONNECT;
    let target = req.uri().to_string();
    // Taken before the request moves on: the client's side of a tunnel.
    let client_side = connect.then(|| hyper::upgrade::on(&mut req));
    let Some(authorization) = relay.authorization() else {
        return bad_gateway("the sandbox has no workspace yet\n");
    };
    req.headers_mut().remove(header::PROXY_AUTHORIZATION);
    req.headers_mut()
        .insert(header::PROXY_AUTHORIZATION, authorization);
    let mut response = match send(&relay.upstream, req).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, upstream = %relay.upstream, %target, "the router's egress proxy is unreachable");
            return bad_gateway(&format!(
                "the sandbox could not reach the router's egress proxy: {error}\n"
            ));
        }
    };
    if let Some(client_side) = client_side
        && response.status().is_success()
    {
        let router_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client_side, router_side) {
                Ok((client, router)) => {
                    let (mut client, mut router) = (TokioIo::new(client), TokioIo::new(router));
                    if let Err(error) =
                        tokio::io::copy_bidirectional(&mut client, &mut router).await
                    {
                        tracing::debug!(%error, %target, "egress tunnel ended");
                    }
                }
                Err(error) => tracing::debug!(%error, %target, "egress tunnel not opened"),
            }
        });
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, empty());
    }
    response.map(BodyExt::boxed)
}

/// Sends `req` over a fresh connection to `upstream` (also the gateway
/// forwarder's way to the router).
pub(crate) async fn send(
    upstream: &Upstream,
    req: Request<Incoming>,
) -> std::io::Result<Response<Incoming>> {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        match upstream {
            Upstream::Unix(path) => UnixStream::connect(path).await.map(Io::Unix),
            Upstream::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str()).await?;
                let _ = stream.set_nodelay(true);
                Ok::<_, std::io::Error>(Io::Tcp(stream))
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"))??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(connected))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "connection to the router's egress proxy ended");
        }
    });
    sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)
}

/// A connection to the router's proxy, whichever kind.
enum Io {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Self::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Self::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
            Self::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Self::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn bad_gateway(text: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(text.to_owned()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    const TOKEN: &str = "jw_test_token";

    /// A stand-in for the router's proxy on a unix socket: answers each plain
    /// request with the `Proxy-Authorization` it got, and a `CONNECT` with `200`
    /// then echoes the tunnel's bytes back upper-cased.
    async fn fake_router_proxy(path: PathBuf) -> PathBuf {
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(|mut req: Request<Incoming>| async move {
                        let auth = req
                            .headers()
                            .get_all(header::PROXY_AUTHORIZATION)
                            .iter()
                            .map(|v| v.to_str().unwrap_or("?").to_owned())
                            .collect::<Vec<_>>()
                            .join(" | ");
                        if req.method() == Method::CONNECT {
                            let upgrade = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                if let Ok(upgraded) = upgrade.await {
                                    let mut io = TokioIo::new(upgraded);
                                    let mut buf = [0u8; 5];
                                    if io.read_exact(&mut buf).await.is_ok() {
                                        let _ = io.write_all(&buf.to_ascii_uppercase()).await;
                                    }
                                }
                            });
                            return Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())));
                        }
                        let text = format!("{} {} auth={auth}", req.method(), req.uri());
                        Ok(Response::new(Full::new(Bytes::from(text))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        path
    }

    fn expected_auth() -> String {
        format!("Basic {}", STANDARD.encode(format!("jarvis:{TOKEN}")))
    }

    /// Reads one answer (head and a `Content-Length` body) from `reader`.
    async fn read_answer<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> (String, String) {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("read head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await.expect("read body");
        (head, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn every_request_on_a_connection_carries_the_token_and_only_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = fake_router_proxy(dir.path().join("egress.sock")).await;
        let addr = start(
            Upstream::Unix(socket),
            Credentials::assigned(TOKEN),
            CancellationToken::new(),
        )
        .await
        .expect("start");
        let client = TcpStream::connect(addr).await.expect("connect");
        let mut client = BufReader::new(client);
        for path in ["/one", "/two"] {
            let request = format!(
                "GET http://example.test{path} HTTP/1.1\r\nHost: example.test\r\nProxy-Authorization: Basic Zm9yZ2VkOmZvcmdlZA==\r\n\r\n"
            );
            client
                .get_mut()
                .write_all(request.as_bytes())
                .await
                .expect("write");
            let (head, body) =
                tokio::time::timeout(Duration::from_secs(10), read_answer(&mut client))
                    .await
                    .expect("answered in time");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(
                body,
                format!("GET http://example.test{path} auth={}", expected_auth())
            );
        }
    }

    #[tokio::test]
    async fn a_tunnel_carries_bytes_both_ways_after_connect() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = fake_router_proxy(dir.path().join("egress.sock")).await;
        let addr = start(
            Upstream::Unix(socket),
            Credentials::assigned(TOKEN),
            CancellationToken::new(),
        )
        .await
        .expect("start");
        let client = TcpStream::connect(addr).await.expect("connect");
        let mut client = BufReader::new(client);
        client
            .get_mut()
            .write_all(b"CONNECT secure.test:443 HTTP/1.1\r\nHost: secure.test:443\r\n\r\n")
            .await
            .expect("write");
        let (head, _) = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut client))
            .await
            .expect("answered in time");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        client.get_mut().write_all(b"hello").await.expect("write");
        let mut echoed = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut echoed))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(&echoed, b"HELLO");
    }

    #[tokio::test]
    async fn an_unreachable_router_proxy_fails_the_request_not_the_forwarder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("egress.sock");
        let addr = start(
            Upstream::Unix(missing.clone()),
            Credentials::assigned(TOKEN),
            CancellationToken::new(),
        )
        .await
        .expect("start");
        for _ in 0..2 {
            let client = TcpStream::connect(addr)
                .await
                .expect("the forwarder still accepts");
            let mut client = BufReader::new(client);
            client
                .get_mut()
                .write_all(b"GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n")
                .await
                .expect("write");
            let (head, body) =
                tokio::time::timeout(Duration::from_secs(10), read_answer(&mut client))
                    .await
                    .expect("answered in time");
            assert!(head.starts_with("HTTP/1.1 502"), "{head}");
            assert!(body.contains("egress proxy"), "{body}");
        }
        // Once the router's proxy is there, the same forwarder reaches it.
        fake_router_proxy(missing).await;
        let client = TcpStream::connect(addr).await.expect("connect");
        let mut client = BufReader::new(client);
        client
            .get_mut()
            .write_all(b"GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n")
            .await
            .expect("write");
        let (head, _) = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut client))
            .await
            .expect("answered in time");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
}
