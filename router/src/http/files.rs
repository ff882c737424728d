//! Files: what users uploaded and what the agent wrote in its workspace. Rows
//! live in `files`; bytes in object storage under `users/{id}/…`.
//!
//! This module lists, describes, downloads and deletes (object, row and the copy
//! in the workspace); uploads (`POST /api/files`) are [`upload`], on top of
//! `crate::uploads`. The workspace sync fills the `workspace` rows.

mod multipart;
mod upload;

use axum::{
    Json, Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AppState, Error, Result,
    documents::page,
    extractor::{AuthUser, Id},
};
use crate::db;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        // The upload body is streamed and limited per file (`JARVIS_MAX_UPLOAD_BYTES`),
        // not by the 1 MiB default, which applies to buffering extractors only.
        .route("/api/files", get(list_files).post(upload::upload_files))
        .route("/api/files/{id}", get(get_file).delete(delete_file))
        .route("/api/files/{id}/download", get(download_file))
}

/// A file as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct FileView {
    id: Uuid,
    /// The last part of `path`.
    filename: String,
    /// Path in the workspace (`uploads/…` for uploads).
    path: String,
    size: i64,
    content_type: String,
    /// `upload`, `workspace` or `voice`.
    kind: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, regexp_replace(path, '^.*/', '') as filename, path, size, content_type, kind, created_at, updated_at";

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Serialize)]
struct FileList {
    files: Vec<FileView>,
    next_offset: Option<i64>,
}

async fn list_files(
    user: AuthUser,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<FileList>> {
    let (limit, offset) = page(query.limit, query.offset)?;
    // One round trip.
    // language=PostgreSQL
    let files: Vec<FileView> = db::user_rows(
        user.id,
        &format!(
            "select {COLUMNS} from files where owner_id = $1 and kind in ('upload', 'workspace')
             order by updated_at desc, id limit $2 offset $3"
        ),
    )
    .bind(user.id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let next_offset = (files.len() as i64 == limit).then_some(offset + limit);
    Ok(Json(FileList { files, next_offset }))
}

async fn fetch(state: &AppState, user: &AuthUser, id: Uuid) -> Result<(FileView, String)> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        view: FileView,
        storage_key: String,
    }
    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let row: Row = crate::db::query_as(&format!(
        "select {COLUMNS}, storage_key from files where id = $1 and owner_id = $2"
    ))
    .bind(id)
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("file"))?;
    tx.commit().await?;
    Ok((row.view, row.storage_key))
}

async fn get_file(
    user: AuthUser,
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<Json<FileView>> {
    Ok(Json(fetch(&state, &user, id).await?.0))
}

async fn download_file(
    user: AuthUser,
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<Response> {
    let (file, key) = fetch(&state, &user, id).await?;
    let stream = state.storage.get(&key).await?;
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&file.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&content_disposition(&file.filename))
            .unwrap_or(HeaderValue::from_static("attachment")),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

async fn delete_file(
    user: AuthUser,
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<StatusCode> {
    // With the workspace's files on this machine, the copy there goes in the same
    // step, while no sync of the user runs (it would store the copy again).
    let registry = state.workspaces.clone();
    let (st, u) = (&state, &user);
    let removed = registry
        .with_workspace_dir(user.id, move |root, _| async move {
            let path = delete_row_and_object(st, u, id).await?;
            let remove = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || crate::uploads::workspace::remove(&root, &path))
            };
            match remove.await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(user.id = %u.id, %error, "a workspace copy could not be removed")
                }
                Err(error) => tracing::warn!(user.id = %u.id, %error, "removal task failed"),
            }
            Ok::<_, Error>(path)
        })
        .await;
    match removed {
        Some(result) => result?,
        None => delete_row_and_object(&state, &user, id).await?,
    };
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the row and its object; returns the file's workspace path.
async fn delete_row_and_object(state: &AppState, user: &AuthUser, id: Uuid) -> Result<String> {
    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let (key, path): (String, String) = crate::db::query_as(
        "delete from files where id = $1 and owner_id = $2 returning storage_key, path",
    )
    .bind(id)
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("file"))?;
    // The row goes only if the object went: never a row pointing at nothing.
    state.storage.delete(&key).await?;
    tx.commit().await?;
    Ok(path)
}

/// Characters kept as they are in RFC 5987 `filename*` values.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// A `Content-Disposition: attachment` value for `filename`: an ASCII fallback
/// plus the exact UTF-8 name (RFC 6266), safe whatever the name holds.
pub fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        utf8_percent_encode(filename, ATTR_CHAR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_is_a_valid_header_for_any_name() {
        let v = content_disposition("résumé \"final\"\r\n.md");
        assert!(HeaderValue::from_str(&v).is_ok(), "{v}");
        assert!(
            v.starts_with("attachment; filename=\"r_sum_ _final___.md\""),
            "{v}"
        );
        assert!(
            v.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%0D%0A.md"),
            "{v}"
        );
    }
}
