//! A listener on an ephemeral loopback port (`127.0.0.1:0`) handing each
//! connection to a task of its own, until cancelled: how the jail's loopback-only
//! clients (the CLI, the agent's commands) reach the sandbox's forwarders.

use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// Longest wait for a client's request head, on the forwarders' HTTP connections.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one loopback client's HTTP/1.1 connection with `service`: any number of
/// requests, upgrades (CONNECT tunnels) included, a request head due within
/// [`HEADER_READ_TIMEOUT`]. `name` labels the log line when it ends in an error.
pub async fn serve_http<S>(name: &'static str, client: TcpStream, service: S)
where
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(client), service)
        .with_upgrades()
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "{name} client connection ended");
    }
}

/// How long a failed accept (out of file descriptors, say) waits before the next,
/// so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Binds `127.0.0.1:0` and spawns `handle(connection)` for each connection;
/// returns the bound address. `name` labels the log lines.
pub async fn serve<F, Fut>(
    name: &'static str,
    cancel: CancellationToken,
    handle: F,
) -> Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(Error::Bind)?;
    let addr = listener.local_addr().map_err(Error::Bind)?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = cancel.cancelled() => return,
            };
            match accepted {
                Ok((connection, _)) => {
                    tokio::spawn(handle(connection));
                }
                Err(error) => {
                    tracing::warn!(%error, "{name}: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    });
    Ok(addr)
}
