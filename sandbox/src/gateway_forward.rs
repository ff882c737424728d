//! Local mode's way to the model gateway: a loopback TCP listener whose
//! connections are forwarded, byte for byte, to the router's unix socket bound
//! into the jail (which has no network but loopback). HTTP is not parsed here.

use std::{net::SocketAddr, path::PathBuf};

use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::Result;

/// Listens on `127.0.0.1:0` and forwards each connection to `socket`; returns the
/// address to give the CLI as `ANTHROPIC_BASE_URL`.
pub async fn start(socket: PathBuf, cancel: CancellationToken) -> Result<SocketAddr> {
    crate::loopback::serve("gateway forwarder", cancel, move |tcp| {
        forward(tcp, socket.clone())
    })
    .await
}

async fn forward(mut tcp: tokio::net::TcpStream, socket: PathBuf) {
    match UnixStream::connect(&socket).await {
        Ok(mut unix) => {
            if let Err(error) = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await {
                tracing::debug!(%error, "gateway connection ended");
            }
        }
        Err(error) => {
            tracing::warn!(%error, socket = %socket.display(), "gateway socket unreachable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_reach_the_socket_and_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gw.sock");
        let unix = tokio::net::UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = unix.accept().await {
                let mut buf = [0u8; 4];
                if stream.read_exact(&mut buf).await.is_ok() {
                    let _ = stream.write_all(&buf).await;
                }
            }
        });
        let addr = start(path, CancellationToken::new()).await.expect("start");
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"ping").await.expect("write");
        let mut echoed = [0u8; 4];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tcp.read_exact(&mut echoed),
        )
        .await
        .expect("in time")
        .expect("read");
        assert_eq!(&echoed, b"ping");
    }
}
