//! `POST /api/files`: multipart upload, field `file`, repeatable.
//!
//! The body is read in a task of its own (`receive`), so a client that drops the
//! connection halfway cancels only the waiting handler: the task sees the cut-off
//! body, deletes what it stored and writes no row. A refused upload is answered
//! at once, without reading the rest of the body (clients still sending read the
//! answer: the tests check it for a hyper client and for Chromium).
//!
//! The parser is `multer` on a [`Paced`] body: multer reads its input until the
//! input has nothing ready, which on a fast connection buffers without bound; one
//! body chunk per poll keeps the memory of an upload flat whatever its size.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, header},
};
use futures::{Stream, TryStreamExt};
use multer::Multipart;
use serde::Serialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::super::{AppState, Error, Result, extractor::AuthUser};
use crate::uploads::{self, Batch, UploadError, Uploaded};

/// The answer to an upload.
#[derive(Serialize)]
pub(super) struct UploadList {
    files: Vec<Uploaded>,
}

impl From<UploadError> for Error {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Name(_) | UploadError::TooMany => Self::Invalid(e.to_string()),
            UploadError::TooLarge { .. } => Self::PayloadTooLarge(e.to_string()),
            UploadError::Quota { .. } => Self::QuotaExceeded(e.to_string()),
            UploadError::Cut(_) => Self::BadRequest(e.to_string()),
            UploadError::NoFreeName(_) => Self::Conflict(e.to_string()),
            UploadError::Db(e) => Self::Sqlx(e),
            UploadError::Storage(e) => Self::Storage(e),
        }
    }
}

/// Stores the request's files as the caller's uploads.
pub(super) async fn upload_files(
    user: AuthUser,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<UploadList>)> {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| {
            Error::UnsupportedMediaType(
                "send multipart/form-data with one `file` field per file".into(),
            )
        })?;
    let multipart = Multipart::new(Paced::new(body.into_data_stream()), boundary);
    let tier = crate::limits::account(&state.db, user.id)
        .await?
        .map_or(crate::plans::Tier::Free, |a| a.tier);
    let quota = state.plans.get(tier).storage_bytes;
    let (reply, answer) = oneshot::channel();
    tokio::spawn(receive(state, user.id, quota, multipart, reply));
    let files = answer.await.map_err(|_| {
        Error::Internal(anyhow::anyhow!("the upload task ended without an answer"))
    })??;
    tracing::info!(
        user.id = %user.id,
        files = files.len(),
        bytes = files.iter().map(|f| f.size).sum::<u64>(),
        "files uploaded"
    );
    Ok((StatusCode::CREATED, Json(UploadList { files })))
}

type Reply = oneshot::Sender<Result<Vec<Uploaded>>>;

async fn receive(
    state: AppState,
    user: Uuid,
    quota: Option<u64>,
    mut multipart: Multipart<'static>,
    reply: Reply,
) {
    let batch = Batch::begin(
        state.storage.clone(),
        state.db.clone(),
        user,
        state.config.max_upload_bytes,
        quota,
    )
    .await;
    let mut batch = match batch {
        Ok(b) => b,
        Err(e) => {
            let _ = reply.send(Err(e.into()));
            return;
        }
    };
    let received: Result<()> = async {
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| Error::BadRequest(format!("the upload could not be read: {e}")))?
        {
            if field.name() != Some("file") {
                return Err(Error::Invalid(
                    "only `file` fields are accepted (one per file)".into(),
                ));
            }
            let Some(name) = field.file_name().map(str::to_owned) else {
                return Err(Error::Invalid("each `file` field needs a filename".into()));
            };
            batch
                .add(&name, field.map_err(std::io::Error::other))
                .await?;
        }
        if batch.is_empty() {
            return Err(Error::Invalid(
                "send at least one file in a `file` field".into(),
            ));
        }
        Ok(())
    }
    .await;
    if let Err(e) = received {
        batch.discard().await;
        let _ = reply.send(Err(e));
        return;
    }
    let workspace = state.workspaces.host_workspace(user);
    let taken = |path: &str| {
        workspace
            .as_deref()
            .is_some_and(|root| uploads::workspace::exists(root, path))
    };
    match batch.commit(taken).await {
        Ok(files) => {
            uploads::copy_to_workspace(&state.workspaces, &state.storage, user, &files).await;
            let _ = reply.send(Ok(files));
        }
        Err(e) => {
            let _ = reply.send(Err(e.into()));
        }
    }
}

/// Bytes a [`Paced`] stream hands out before it answers `Pending` once.
const PACE_BYTES: usize = 1024 * 1024;

/// A body stream that hands out about [`PACE_BYTES`] per poll cycle: past that
/// it answers `Pending` once (waking itself at once), so a consumer that reads
/// "until nothing is ready" buffers at most that much.
struct Paced<S> {
    inner: S,
    since_pending: usize,
}

impl<S> Paced<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            since_pending: 0,
        }
    }
}

impl<S, E> Stream for Paced<S>
where
    S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.since_pending >= PACE_BYTES {
            self.since_pending = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let next = Pin::new(&mut self.inner).poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => self.since_pending += chunk.len(),
            Poll::Pending => self.since_pending = 0,
            _ => {}
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use futures::{StreamExt, stream};

    use super::*;

    #[tokio::test]
    async fn paced_streams_pause_after_the_byte_budget_and_lose_nothing() {
        let chunk = || Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; PACE_BYTES / 2]));
        let mut paced = Paced::new(stream::iter([chunk(), chunk(), chunk()]));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..2 {
            assert!(matches!(
                Pin::new(&mut paced).poll_next(&mut cx),
                Poll::Ready(Some(Ok(_)))
            ));
        }
        assert!(Pin::new(&mut paced).poll_next(&mut cx).is_pending());
        let rest: Vec<_> = paced.collect().await;
        assert_eq!(rest.len(), 1);
    }
}
