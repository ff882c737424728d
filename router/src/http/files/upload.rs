//! `POST /api/files`: multipart upload, field `file`, repeatable.
//!
//! The body is read in a task of its own (`receive`), so a client that drops the
//! connection halfway cancels only the waiting handler: the task sees the cut-off
//! body, deletes what it stored and writes no row. A refused upload is answered
//! at once, without reading the rest of the body (clients still sending read the
//! answer: the tests check it for a hyper client and for Chromium).
//!
//! The parser is `multer` on a body bounded by [`super::multipart`]: the framing
//! between parts (preamble, part headers) is capped at
//! [`MAX_FRAMING_BYTES`](super::multipart::MAX_FRAMING_BYTES) and answered 413
//! past it, the body is paced so multer never buffers more than a chunk, and a
//! request may carry at most [`uploads::MAX_FILES_PER_REQUEST`] parts (413).

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, header},
};
use futures::TryStreamExt;
use multer::Multipart;
use serde::Serialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    super::{AppState, Error, Result, extractor::AuthUser},
    multipart::{Budget, Framing, MAX_FRAMING_BYTES, Paced},
};
use crate::uploads::{self, Batch, UploadError, Uploaded};

/// The answer to an upload.
#[derive(Serialize)]
pub(super) struct UploadList {
    files: Vec<Uploaded>,
}

impl From<UploadError> for Error {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Name(_) => Self::Invalid(e.to_string()),
            UploadError::TooLarge { .. }
            | UploadError::StoreTooLarge { .. }
            | UploadError::TooMany => Self::PayloadTooLarge(e.to_string()),
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
    let budget = Budget::new();
    let body = Paced::new(Framing::new(body.into_data_stream(), budget.clone()));
    let multipart = Multipart::new(body, boundary);
    let tier = crate::limits::account(&state.db, user.id)
        .await?
        .map_or(crate::plans::Tier::Free, |a| a.tier);
    let quota = state.plans.get(tier).storage_bytes;
    let (reply, answer) = oneshot::channel();
    tokio::spawn(receive(state, user.id, quota, (multipart, budget), reply));
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

/// Whether a part's headers failed to parse for a byte a header value may not
/// hold (NUL, a control character), which httparse calls `HeaderValue`.
fn is_bad_header_value(error: &impl std::fmt::Debug) -> bool {
    format!("{error:?}") == "HeaderValue"
}

type Reply = oneshot::Sender<Result<Vec<Uploaded>>>;

async fn receive(
    state: AppState,
    user: Uuid,
    quota: Option<u64>,
    (mut multipart, budget): (Multipart<'static>, Budget),
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
        let mut parts = 0;
        loop {
            budget.headers();
            let next = multipart.next_field().await;
            budget.data();
            let field = match next {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(_) if budget.exceeded() => {
                    return Err(Error::PayloadTooLarge(format!(
                        "a part's headers may be at most {MAX_FRAMING_BYTES} bytes"
                    )));
                }
                // httparse refuses a header value with NUL or another control
                // character: in a part's headers that is the file name.
                Err(multer::Error::ReadHeaderFailed(e)) if is_bad_header_value(&e) => {
                    return Err(UploadError::Name(uploads::names::NameError::Control).into());
                }
                Err(e) => {
                    return Err(Error::BadRequest(format!(
                        "the upload could not be read: {e}"
                    )));
                }
            };
            parts += 1;
            if parts > uploads::MAX_FILES_PER_REQUEST {
                return Err(UploadError::TooMany.into());
            }
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
