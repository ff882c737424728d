//! The router's one WebSocket to a user's sandbox: connect (unix socket or TCP,
//! with the workspace token), a writer task fed by a bounded queue, a reader task
//! handing each frame to the hub. The link is alive until either side ends it.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use sandbox::protocol::SandboxFrame;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::workspaces::{Endpoint, Error, Result};

/// Frames queued for the sandbox at most (senders wait beyond: backpressure).
const QUEUE: usize = 64;
/// Read buffer of each link (grows for larger frames).
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Largest frame the router takes from a sandbox.
const MAX_FRAME: usize = 8 * 1024 * 1024;

/// An open connection to a sandbox.
#[derive(Clone)]
pub struct Link {
    tx: mpsc::Sender<String>,
    closed: CancellationToken,
}

impl Link {
    /// Whether the connection is still open.
    pub fn is_alive(&self) -> bool {
        !self.closed.is_cancelled() && !self.tx.is_closed()
    }

    /// Queues a frame for the sandbox, waiting while the queue is full.
    pub async fn send(&self, text: String) -> bool {
        self.tx.send(text).await.is_ok()
    }

    /// Closes the connection on purpose (sleep): the hub is not told of a crash.
    pub fn close(&self) {
        self.closed.cancel();
    }
}

/// Opens the link to the sandbox at `endpoint` and starts relaying its frames to `hub`.
pub async fn connect(hub: Arc<Hub>, endpoint: &Endpoint, token: &str) -> Result<Link> {
    let url = match endpoint {
        Endpoint::Unix(_) => "ws://sandbox/ws".to_string(),
        Endpoint::Tcp(addr) => format!("ws://{addr}/ws"),
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::Connect(Box::new(e)))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| Error::NotReady(format!("token is not a header value: {e}")))?;
    request.headers_mut().insert("authorization", bearer);
    // The read buffer is zero-filled to its size at the first read, so it costs
    // that much per link however quiet; it grows for a larger frame.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let io_error = |e: std::io::Error| Error::Connect(Box::new(e.into()));
    let (tx, rx) = mpsc::channel(QUEUE);
    let closed = CancellationToken::new();
    let link = Link {
        tx,
        closed: closed.clone(),
    };
    match endpoint {
        Endpoint::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(io_error)?;
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                    .await
                    .map_err(|e| Error::Connect(Box::new(e)))?;
            tokio::spawn(run(hub, ws, rx, link.clone()));
        }
        Endpoint::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(io_error)?;
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                    .await
                    .map_err(|e| Error::Connect(Box::new(e)))?;
            tokio::spawn(run(hub, ws, rx, link.clone()));
        }
    }
    Ok(link)
}

async fn run<S>(
    hub: Arc<Hub>,
    ws: tokio_tungstenite::WebSocketStream<S>,
    mut rx: mpsc::Receiver<String>,
    link: Link,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let closed = link.closed.clone();
    let writer = {
        let closed = closed.clone();
        async move {
            loop {
                tokio::select! {
                    () = closed.cancelled() => break,
                    next = rx.recv() => match next {
                        Some(text) => if sink.send(Message::text(text)).await.is_err() { break },
                        None => break,
                    },
                }
            }
            let _ = sink.close().await;
        }
    };
    let reader = async {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Text(text)) => match serde_json::from_str::<SandboxFrame>(&text) {
                    Ok(frame) => hub.on_sandbox_frame(frame, std::time::Instant::now()),
                    Err(error) => {
                        tracing::warn!(user.id = %hub.user, %error, "unreadable frame from the sandbox")
                    }
                },
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let on_purpose = tokio::select! {
        () = writer => closed.is_cancelled(),
        () = reader => closed.is_cancelled(),
    };
    closed.cancel();
    if !on_purpose {
        hub.on_link_lost();
    }
}
