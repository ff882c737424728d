//! Workspace files and agent state for sandboxes that sync themselves through the
//! router (pods: the router cannot reach their disks). Beside the model gateway
//! and authenticated the same way (the workspace token as `x-api-key` or bearer);
//! everything read or written is the token's user's, never a user named in the
//! request.
//!
//! - `GET /v1/workspace/files` → `{"files":[{path, size, sha256, kind}]}`: what a
//!   restore brings back (`workspace` and `upload` files, the newest of a path).
//! - `GET /v1/workspace/files/{*path}` → that file's bytes, streamed.
//! - `PUT /v1/workspace/files/{*path}` (the bytes, streamed, at most the sync's
//!   per-file cap) → stored as the agent's `workspace` file, as the host-side sync
//!   stores a changed file → 200 `{path, size}` (`"same_as_upload": true` when an
//!   identical upload covers it). `DELETE` removes the `workspace` file (uploads
//!   stay) → 204, or 404 when there is none.
//! - `GET /v1/workspace/state` → the state archive (gzipped tar), 404 when none;
//!   `PUT /v1/workspace/state` replaces it after checking it.
//!
//! A path that could escape the workspace (`..`, absolute, NUL, control
//! characters, backslashes) or names an ignored directory is refused with 400 and
//! changes nothing (`router::sync::storable_path`). A file or archive that does
//! not fit in the plan's storage (`crate::quota`) is refused with 413
//! `quota_exceeded` and changes nothing.

use axum::{
    Json, Router,
    body::Body,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::TryStreamExt;
use serde_json::json;
use tokio_util::io::StreamReader;
use uuid::Uuid;

use super::{AppState, Error, Result};
use crate::{
    storage::StorageError,
    sync::{self, FileSaved, Limits, SyncError},
};

/// The sandboxes' routes (workspace token). Bodies are streamed and capped here,
/// not by the app's JSON body limit.
pub fn sandbox_router() -> Router<AppState> {
    Router::new()
        .route("/v1/workspace/files", get(manifest))
        .route(
            "/v1/workspace/files/{*path}",
            get(download).put(upload).delete(remove),
        )
        .route("/v1/workspace/state", get(get_state).put(put_state))
        .layer(DefaultBodyLimit::disable())
}

/// The user whose workspace token the request carries (the sandboxes' routes).
/// Read each time, not remembered like the gateway's look-up: a token revoked
/// (its workspace went to sleep) reaches nothing from that moment.
pub(super) async fn owner(state: &AppState, headers: &HeaderMap) -> Result<Uuid> {
    let token = super::gateway::credential(headers)
        .ok_or_else(|| Error::unauthorized("send the workspace token as `x-api-key`"))?;
    crate::workspaces::tokens::verify(&state.db, token)
        .await?
        .ok_or_else(|| Error::unauthorized("invalid or revoked workspace token"))
}

fn checked(path: &str) -> Result<&str> {
    if sync::storable_path(path) {
        Ok(path)
    } else {
        Err(Error::BadRequest(
            SyncError::BadPath(path.chars().take(200).collect()).to_string(),
        ))
    }
}

fn sync_error(error: SyncError) -> Error {
    match error {
        SyncError::BadPath(_) | SyncError::BadArchive(_) => Error::BadRequest(error.to_string()),
        SyncError::OverQuota(_) => Error::QuotaExceeded(error.to_string()),
        SyncError::Storage(StorageError::TooLarge { limit, .. }) => {
            Error::PayloadTooLarge(format!("files are limited to {limit} bytes"))
        }
        // The request body broke off: nothing was stored.
        SyncError::Storage(StorageError::Io { source, .. }) => {
            Error::BadRequest(format!("the body could not be read: {source}"))
        }
        // The store refused it for its size (a bucket's size limit): the
        // sandbox is told so, not "internal".
        SyncError::Storage(e) if e.refusal() == Some(crate::storage::Refusal::TooLarge) => {
            Error::PayloadTooLarge("the store refused this file for its size".into())
        }
        SyncError::Storage(e) => Error::Storage(e),
        SyncError::Db(e) => Error::Sqlx(e),
        other => Error::Internal(other.into()),
    }
}

/// The sync's caps with `owner`'s storage quota: what a sandbox pushes counts
/// like everything else the user stores (`crate::quota`).
async fn limits(state: &AppState, owner: Uuid) -> Result<Limits> {
    let room = crate::quota::room(&state.db, &state.storage, &state.plans, owner).await?;
    Ok(Limits {
        room: Some(room),
        ..Limits::default()
    })
}

fn body_reader(body: Body) -> impl tokio::io::AsyncRead + Unpin + Send {
    StreamReader::new(body.into_data_stream().map_err(std::io::Error::other))
}

async fn manifest(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let owner = owner(&state, &headers).await?;
    let files = sync::stored_files(&state.db, owner)
        .await
        .map_err(sync_error)?;
    Ok(Json(json!({ "files": files })).into_response())
}

async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Result<Response> {
    let owner = owner(&state, &headers).await?;
    let path = checked(&path)?;
    let file = sync::stored_file(&state.db, owner, path)
        .await
        .map_err(sync_error)?
        .ok_or(Error::NotFound("file"))?;
    let stream = state.storage.get(&file.storage_key).await?;
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    Ok(response)
}

async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<String>,
    body: Body,
) -> Result<Response> {
    let owner = owner(&state, &headers).await?;
    let path = checked(&path)?;
    let saved = sync::save_workspace_file(
        &state.storage,
        &state.db,
        owner,
        path,
        body_reader(body),
        &limits(&state, owner).await?,
    )
    .await
    .map_err(sync_error)?;
    let body = match saved {
        FileSaved::Stored(size) => json!({"path": path, "size": size}),
        FileSaved::SameAsUpload => json!({"path": path, "same_as_upload": true}),
    };
    Ok(Json(body).into_response())
}

async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Result<Response> {
    let owner = owner(&state, &headers).await?;
    let path = checked(&path)?;
    if sync::delete_workspace_file(&state.storage, &state.db, owner, path)
        .await
        .map_err(sync_error)?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Error::NotFound("workspace file"))
    }
}

async fn get_state(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let owner = owner(&state, &headers).await?;
    let key = sync::state_key(owner);
    let stream = match state.storage.get(&key).await {
        Ok(stream) => stream,
        Err(StorageError::NotFound(_)) => return Err(Error::NotFound("state archive")),
        Err(e) => return Err(e.into()),
    };
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    Ok(response)
}

async fn put_state(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let owner = owner(&state, &headers).await?;
    let files = sync::save_state_archive(
        &state.storage,
        owner,
        body_reader(body),
        &limits(&state, owner).await?,
    )
    .await
    .map_err(sync_error)?;
    Ok(Json(json!({ "files": files })).into_response())
}
