//! The HTTP/1.1 forward proxy.
//!
//! - `CONNECT host:port`: decided, connected, answered `200`, then bytes are
//!   copied both ways until either side closes or the connection idles out;
//! - `GET http://host/path` (any method, absolute form): decided, sent over a
//!   fresh upstream connection of its own in origin form, with `Host` set from
//!   the URI, hop-by-hop and `Proxy-*` headers dropped and `Via: 1.1 jarvis-egress`
//!   added; the answer streams back the same way;
//! - anything else (origin form, `https://` without CONNECT): `400`.
//!
//! The first bytes of a tunnel are read before anything is copied: a TLS
//! ClientHello whose server name (SNI) is not the CONNECT host closes the tunnel
//! (audited `denied`, `sni_mismatch`; `sni_unreadable` when it cannot be read), so an
//! allowed name cannot front for another on the same address (`super::sni`).
//!
//! A host the lists say nothing about is asked about in the user's browser
//! (`super::ask`) while the request waits; then admitted (`approved_once`,
//! `approved`) or refused (`denied_by_workspace`, `not_approved`). A workspace past
//! its plan's bytes per month is refused (`byte_limit`), and the connection that
//! crosses them is closed (audited `allowed`, reason `byte_limit`). Bytes upstream
//! of all of a workspace's connections share its plan's bandwidth (`super::bandwidth`).
//!
//! Without a current workspace token the answer is `407`; a refusal is `403`
//! (`429` for the connection cap) with a sentence saying why and
//! `X-Jarvis-Egress: denied; reason=…`; an unresolvable or unreachable host is
//! `502` with `X-Jarvis-Egress: failed; reason=…`. A request that already carries
//! our `Via`, or whose target is the proxy's own listener, is a loop and refused.

use std::{convert::Infallible, io, net::IpAddr, path::Path, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderMap, HeaderName, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use time::OffsetDateTime;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use uuid::Uuid;

use super::{
    Egress,
    ask::{Answer, Outcome},
    audit::{self, Connection, Decision},
    bandwidth::Bucket,
    budget::Budget,
    meter::{Meter, Metered},
    policy::{self, Reason},
    slots::Slot,
    sni::{self, Hello},
};
use crate::workspaces::tokens;

/// What the proxy adds to `Via`, and looks for to spot a loop.
pub const VIA: &str = "1.1 jarvis-egress";

/// The header that says why a request was refused.
pub const DECISION_HEADER: &str = "x-jarvis-egress";

/// Largest CONNECT/request head the proxy reads, and how long it waits for one.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Copy buffer of a tunnel, each way.
const TUNNEL_BUFFER: usize = 64 * 1024;

type Body = BoxBody<Bytes, hyper::Error>;

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Serves the proxy on `listener` (`JARVIS_EGRESS_LISTEN`) until the task is dropped.
pub async fn serve_tcp(egress: Arc<Egress>, listener: TcpListener) -> io::Result<()> {
    egress.add_own(listener.local_addr()?);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting an egress connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let egress = egress.clone();
        tokio::spawn(async move {
            tracing::trace!(%peer, "egress client connected");
            serve_connection(egress, stream).await;
        });
    }
}

/// Serves the proxy on a unix socket at `path` that sandbox users may connect to
/// (local sandboxes; next to the gateway socket).
pub async fn serve_unix(egress: Arc<Egress>, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting an egress connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let egress = egress.clone();
        tokio::spawn(serve_connection(egress, stream));
    }
}

/// Serves one client connection (any number of requests, CONNECT upgrades included).
pub async fn serve_connection<I>(egress: Arc<Egress>, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(egress.clone(), req));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "egress client connection ended");
    }
}

/// The target of a request: normalized host, port, and whether it is a tunnel.
struct Target {
    host: String,
    port: u16,
    connect: bool,
}

fn target_of(req: &Request<Incoming>) -> Option<Target> {
    let connect = req.method() == Method::CONNECT;
    let authority = req.uri().authority()?;
    let default_port = if connect {
        443
    } else {
        if req.uri().scheme_str() != Some("http") {
            return None;
        }
        80
    };
    if authority.as_str().contains('@') {
        return None;
    }
    Some(Target {
        host: policy::normalize_host(authority.host())?,
        port: authority.port_u16().unwrap_or(default_port),
        connect,
    })
}

/// The token of `Proxy-Authorization: Basic base64(user:token)`.
fn proxy_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::PROXY_AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_user, token) = decoded.split_once(':')?;
    Some(token.to_string())
}

fn has_our_via(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("jarvis-egress")))
}

/// A refusal or failure, answered and audited.
struct Refusal {
    decision: Decision,
    reason: Reason,
    detail: Option<String>,
}

impl Refusal {
    fn denied(reason: Reason) -> Self {
        Self {
            decision: Decision::Denied,
            reason,
            detail: None,
        }
    }

    fn failed(reason: Reason) -> Self {
        Self {
            decision: Decision::Failed,
            reason,
            detail: None,
        }
    }

    fn status(&self) -> StatusCode {
        match self.reason {
            Reason::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            Reason::BadRequest => StatusCode::BAD_REQUEST,
            Reason::Unresolvable | Reason::ConnectFailed => StatusCode::BAD_GATEWAY,
            Reason::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        }
    }

    fn response(&self, host: &str, port: u16) -> Response<Body> {
        let mut text = format!(
            "Jarvis egress: {} to {host}:{port} ({}): {}",
            if self.decision == Decision::Denied {
                "refused"
            } else {
                "failed"
            },
            self.reason,
            self.reason.explain()
        );
        if let Some(detail) = &self.detail {
            text.push_str(&format!(" ({detail})"));
        }
        text.push('\n');
        let mut resp = Response::new(full(text));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{}; reason={}",
            self.decision.as_str(),
            self.reason
        )) {
            headers.insert(DECISION_HEADER, v);
        }
        resp
    }
}

fn proxy_auth_required() -> Response<Body> {
    let mut resp = Response::new(full(
        "Jarvis egress: proxy authentication required: send the workspace token as \
         Proxy-Authorization: Basic base64(jarvis:<token>)\n",
    ));
    *resp.status_mut() = StatusCode::PROXY_AUTHENTICATION_REQUIRED;
    resp.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"jarvis egress\""),
    );
    resp
}

fn unavailable() -> Response<Body> {
    let mut resp = Response::new(full(
        "Jarvis egress: the router's database is unavailable\n",
    ));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp
}

async fn handle(egress: Arc<Egress>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started_at = OffsetDateTime::now_utc();
    let Some(token) = proxy_token(req.headers()) else {
        return Ok(proxy_auth_required());
    };
    let owner = match tokens::verify(&egress.db, &token).await {
        Ok(Some(owner)) => owner,
        Ok(None) => return Ok(proxy_auth_required()),
        Err(error) => {
            tracing::error!(%error, "verifying a workspace token for egress");
            return Ok(unavailable());
        }
    };
    let Some(target) = target_of(&req) else {
        let host = req
            .uri()
            .authority()
            .map(|a| a.host().to_string())
            .unwrap_or_default();
        let refusal = Refusal::denied(Reason::BadRequest);
        refuse(&egress, owner, &host, 0, started_at, &refusal).await;
        return Ok(refusal.response(&host, 0));
    };
    match admit(&egress, owner, &target, req.headers()).await {
        Ok(Admission {
            stream,
            slot,
            admitted,
            budget,
            bandwidth,
        }) => {
            audit::count_decision(&egress.metrics, Decision::Allowed);
            let open = Open {
                egress,
                owner,
                host: target.host,
                port: target.port,
                reason: admitted.as_str(),
                started_at,
                slot,
                budget,
                bandwidth,
            };
            if target.connect {
                Ok(tunnel(open, req, stream))
            } else {
                Ok(forward(open, req, stream).await)
            }
        }
        Err(refusal) => {
            refuse(
                &egress,
                owner,
                &target.host,
                target.port,
                started_at,
                &refusal,
            )
            .await;
            Ok(refusal.response(&target.host, target.port))
        }
    }
}

/// Audits and counts a refusal.
async fn refuse(
    egress: &Egress,
    owner: Uuid,
    host: &str,
    port: u16,
    started_at: OffsetDateTime,
    refusal: &Refusal,
) {
    tracing::info!(%owner, host, port, decision = refusal.decision.as_str(), reason = %refusal.reason, "egress refused");
    audit::count_decision(&egress.metrics, refusal.decision);
    let conn = Connection {
        owner_id: owner,
        host: host.to_string(),
        port,
        decision: refusal.decision,
        reason: refusal.reason.as_str().to_string(),
        bytes_up: 0,
        bytes_down: 0,
        started_at,
        ended_at: OffsetDateTime::now_utc(),
    };
    audit::record(&egress.db, &egress.metrics, &conn).await;
}

/// What [`admit`] hands on: the upstream connection and what goes with it.
struct Admission {
    stream: TcpStream,
    slot: Slot,
    admitted: policy::Admitted,
    budget: Option<Arc<Budget>>,
    bandwidth: Option<Arc<Bucket>>,
}

/// The decision (asking the user in the browser when the lists say nothing),
/// then a connection to a checked address.
async fn admit(
    egress: &Egress,
    owner: Uuid,
    target: &Target,
    headers: &HeaderMap,
) -> Result<Admission, Refusal> {
    if has_our_via(headers) {
        return Err(Refusal::denied(Reason::ProxyLoop));
    }
    let slot = egress
        .slots
        .try_take(owner, egress.settings.max_connections)
        .ok_or_else(|| Refusal::denied(Reason::TooManyConnections))?;
    let (tier, approvals) = audit::policy_inputs(&egress.db, owner)
        .await
        .map_err(|error| {
            tracing::error!(%error, "reading the egress policy");
            Refusal::failed(Reason::Unavailable)
        })?;
    let plan = egress.plans.get(tier);
    let plan_allow: Vec<policy::Pattern> = plan
        .egress_allow
        .iter()
        .filter_map(|p| match policy::Pattern::parse(p) {
            Ok(p) => Some(p),
            Err(error) => {
                tracing::warn!(%error, "skipping a malformed egress_allow entry");
                None
            }
        })
        .collect();
    let asker = egress.asker.get();
    let decided = match policy::decide(&target.host, target.port, &plan_allow, &approvals) {
        Ok(admitted) => Some(admitted),
        Err(Reason::NotAllowed) if asker.is_some() => None,
        Err(reason) => return Err(Refusal::denied(reason)),
    };
    let budget = match plan.egress_bytes_per_month {
        Some(limit) => {
            let alone = egress.slots.open(owner) <= 1;
            let budget = egress
                .budgets
                .get(&egress.db, owner, limit, alone)
                .await
                .map_err(|error| {
                    tracing::error!(%error, "reading the month's egress bytes");
                    Refusal::failed(Reason::Unavailable)
                })?;
            if budget.spent() {
                return Err(Refusal {
                    detail: Some(format!(
                        "{} of the plan's {} bytes this month",
                        budget.used(),
                        budget.limit()
                    )),
                    ..Refusal::denied(Reason::ByteLimit)
                });
            }
            Some(budget)
        }
        None => None,
    };
    let bandwidth = plan
        .egress_bandwidth_bytes_per_second
        .map(|rate| egress.bandwidths.get(owner, rate));
    let deadline = tokio::time::Instant::now() + egress.settings.connect_timeout;
    let addrs: Vec<IpAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            match tokio::time::timeout_at(deadline, egress.resolver.resolve(&target.host)).await {
                Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
                _ => return Err(Refusal::failed(Reason::Unresolvable)),
            }
        }
    };
    if let Err((ip, cidr)) = egress.settings.deny.check(&addrs) {
        return Err(Refusal {
            detail: Some(format!("{ip} is in {cidr}")),
            ..Refusal::denied(Reason::BlockedAddress)
        });
    }
    let sockets: Vec<std::net::SocketAddr> = addrs
        .iter()
        .map(|ip| std::net::SocketAddr::new(*ip, target.port))
        .collect();
    if sockets.iter().any(|a| egress.is_own(*a)) {
        return Err(Refusal::denied(Reason::ProxyLoop));
    }
    // Only a host that could be reached is asked about: the user is never asked
    // about a blocked address.
    let (admitted, deadline) = match (decided, asker) {
        (Some(admitted), _) => (admitted, deadline),
        (None, Some(asker)) => {
            let admitted = match asker.ask(owner, &target.host, target.port).await {
                Outcome::Answered(Answer::Once) => policy::Admitted::Once,
                Outcome::Answered(Answer::Always) => policy::Admitted::Approval,
                Outcome::Answered(Answer::Deny) => {
                    return Err(Refusal::denied(Reason::DeniedByWorkspace));
                }
                Outcome::Expired => {
                    return Err(Refusal {
                        detail: Some(format!(
                            "asked in the browser; no answer within {} s",
                            asker.timeout().as_secs()
                        )),
                        ..Refusal::denied(Reason::NotApproved)
                    });
                }
                Outcome::Unseen => {
                    return Err(Refusal {
                        detail: Some("no browser of the user was open to ask".into()),
                        ..Refusal::denied(Reason::NotApproved)
                    });
                }
                Outcome::Unavailable => return Err(Refusal::failed(Reason::Unavailable)),
            };
            // The wait for the answer does not count against connecting.
            (
                admitted,
                tokio::time::Instant::now() + egress.settings.connect_timeout,
            )
        }
        (None, None) => return Err(Refusal::denied(Reason::NotAllowed)),
    };
    // Only the addresses checked above are connected to: no second resolution.
    for addr in sockets {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(Admission {
                    stream,
                    slot,
                    admitted,
                    budget,
                    bandwidth,
                });
            }
            Ok(Err(error)) => tracing::debug!(%error, %addr, "egress connect failed"),
            Err(_) => break,
        }
    }
    Err(Refusal::failed(Reason::ConnectFailed))
}

/// An admitted connection, audited when it ends.
struct Open {
    egress: Arc<Egress>,
    owner: Uuid,
    host: String,
    port: u16,
    reason: &'static str,
    started_at: OffsetDateTime,
    slot: Slot,
    /// The plan's bytes per month, when it has a limit.
    budget: Option<Arc<Budget>>,
    /// The workspace's bandwidth bucket, when the plan has a rate.
    bandwidth: Option<Arc<Bucket>>,
}

impl Open {
    /// A meter for this connection (counting in its budget, paced by its bucket).
    fn meter(&self) -> Arc<Meter> {
        Meter::with_limits(self.budget.clone(), self.bandwidth.clone())
    }

    async fn finish(self, meter: &Meter) {
        self.finish_as(meter, None).await;
    }

    /// Audits the connection; `refused` when it was closed for that reason after
    /// admission (the tunnel's TLS server name).
    async fn finish_as(self, meter: &Meter, refused: Option<Reason>) {
        let (decision, reason) = match refused {
            Some(reason) => {
                audit::count_decision(&self.egress.metrics, Decision::Denied);
                (Decision::Denied, reason.as_str())
            }
            // Allowed, and stopped at the plan's bytes per month.
            None if meter.cut() => (Decision::Allowed, Reason::ByteLimit.as_str()),
            None => (Decision::Allowed, self.reason),
        };
        let conn = Connection {
            owner_id: self.owner,
            host: self.host,
            port: self.port,
            decision,
            reason: reason.to_string(),
            bytes_up: meter.up(),
            bytes_down: meter.down(),
            started_at: self.started_at,
            ended_at: OffsetDateTime::now_utc(),
        };
        tracing::info!(owner = %conn.owner_id, host = %conn.host, port = conn.port, up = conn.bytes_up, down = conn.bytes_down, "egress connection ended");
        audit::record(&self.egress.db, &self.egress.metrics, &conn).await;
        drop(self.slot);
    }
}

/// Answers `200` and copies bytes both ways once hyper hands the connection over.
fn tunnel(open: Open, req: Request<Incoming>, upstream: TcpStream) -> Response<Body> {
    let idle = open.egress.settings.idle_timeout;
    let meter = open.meter();
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let first = match first_bytes(&mut client, &upstream, &open.host, idle).await {
                    Ok(first) => first,
                    Err(reason) => {
                        tracing::info!(host = %open.host, %reason, "egress tunnel refused");
                        open.finish_as(&meter, Some(reason)).await;
                        return;
                    }
                };
                let mut upstream = Metered::new(upstream, meter.clone());
                if !first.is_empty() && upstream.write_all(&first).await.is_err() {
                    open.finish(&meter).await;
                    return;
                }
                tokio::select! {
                    copied = tokio::io::copy_bidirectional_with_sizes(
                        &mut client, &mut upstream, TUNNEL_BUFFER, TUNNEL_BUFFER,
                    ) => {
                        if let Err(error) = copied {
                            tracing::debug!(%error, "egress tunnel ended");
                        }
                    }
                    () = meter.idle(idle) => tracing::debug!("egress tunnel idle: closed"),
                }
            }
            Err(error) => tracing::debug!(%error, "egress upgrade failed"),
        }
        open.finish(&meter).await;
    });
    Response::new(empty())
}

/// The client's first bytes in a tunnel, read to check a TLS ClientHello's server
/// name against the CONNECT host (`super::sni`); returned to be sent on. Nothing is
/// read when the upstream speaks first (SSH banners, SMTP) or the client is silent.
async fn first_bytes<C: AsyncRead + Unpin>(
    client: &mut C,
    upstream: &TcpStream,
    host: &str,
    idle: Duration,
) -> Result<Vec<u8>, Reason> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match sni::parse(&buf) {
            Hello::NotTls | Hello::Tls(None) => return Ok(buf),
            Hello::Tls(Some(name)) if name == host => return Ok(buf),
            Hello::Tls(Some(_)) => return Err(Reason::SniMismatch),
            Hello::Unreadable => return Err(Reason::SniUnreadable),
            Hello::Incomplete => {}
        }
        let read = if buf.is_empty() {
            tokio::select! {
                read = client.read(&mut chunk) => read,
                _ = upstream.readable() => return Ok(buf),
                () = tokio::time::sleep(idle) => return Ok(buf),
            }
        } else {
            match tokio::time::timeout(HEADER_READ_TIMEOUT, client.read(&mut chunk)).await {
                Ok(read) => read,
                Err(_) => return Err(Reason::SniUnreadable),
            }
        };
        match read {
            Ok(0) | Err(_) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// Sends a plain HTTP request over its own upstream connection.
async fn forward(open: Open, req: Request<Incoming>, upstream: TcpStream) -> Response<Body> {
    let meter = open.meter();
    let io = TokioIo::new(Metered::new(upstream, meter.clone()));
    let host_header = if open.port == 80 {
        open.host.clone()
    } else if open.host.contains(':') {
        format!("[{}]:{}", open.host, open.port)
    } else {
        format!("{}:{}", open.host, open.port)
    };
    let (host, port) = (open.host.clone(), open.port);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "egress upstream handshake");
            open.finish(&meter).await;
            return Refusal::failed(Reason::ConnectFailed).response(&host, port);
        }
    };
    let idle = open.egress.settings.idle_timeout;
    let watched = meter.clone();
    tokio::spawn(async move {
        tokio::select! {
            done = conn => if let Err(error) = done {
                tracing::debug!(%error, "egress upstream connection ended");
            },
            () = watched.idle(idle) => tracing::debug!("egress request idle: closed"),
        }
        open.finish(&watched).await;
    });
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return Refusal::denied(Reason::BadRequest).response(&host, port),
    };
    parts.version = hyper::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(&host_header) {
        parts.headers.insert(header::HOST, v);
    }
    parts
        .headers
        .append(header::VIA, HeaderValue::from_static(VIA));
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts
                .headers
                .append(header::VIA, HeaderValue::from_static(VIA));
            Response::from_parts(parts, body.boxed())
        }
        Err(error) => {
            tracing::debug!(%error, "egress upstream request failed");
            Refusal::failed(Reason::ConnectFailed).response(&host, port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_proxy_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn the_token_comes_from_basic_proxy_authorization() {
        let mut h = HeaderMap::new();
        assert_eq!(proxy_token(&h), None);
        let v = format!("Basic {}", STANDARD.encode("jarvis:jw_abc"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_str(&v).expect("value"),
        );
        assert_eq!(proxy_token(&h).as_deref(), Some("jw_abc"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Bearer jw_abc"),
        );
        assert_eq!(proxy_token(&h), None);
    }
}
