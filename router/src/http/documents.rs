//! Documents the agent saved: list and search, read, edit, delete, download.
//!
//! Every query runs in the caller's RLS transaction and filters by owner; another
//! user's document answers 404 exactly like a missing one.

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AppState, Error, Result,
    extractor::{AppJson, AuthUser, Id},
    files::content_disposition,
};
use crate::db;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/documents", get(list_documents))
        .route(
            "/api/documents/{id}",
            get(get_document)
                .put(update_document)
                .delete(delete_document),
        )
        .route("/api/documents/{id}/download", get(download_document))
}

/// A document without its content, as lists show it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct DocumentSummary {
    id: Uuid,
    filename: String,
    #[serde(rename = "type")]
    doc_type: String,
    /// Size of the content in bytes.
    size: i64,
    conversation_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

/// A whole document.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Document {
    #[serde(flatten)]
    #[sqlx(flatten)]
    summary: DocumentSummary,
    content: String,
}

const SUMMARY_COLUMNS: &str = "id, filename, doc_type, octet_length(content)::int8 as size, conversation_id, created_at, updated_at";

/// A page of a user's documents, newest first: `$1` the owner, `$2` how many
/// rows, `$3` how many to skip. Read off `documents_owner_page_idx` (the
/// documents benchmark prints the plan).
pub static PAGE_QUERY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    // language=PostgreSQL
    format!(
        "select {SUMMARY_COLUMNS} from documents where owner_id = $1
         order by updated_at desc, id limit $2 offset $3"
    )
});

/// `?q=` searches filename and content; `limit` (≤ 200) and `offset` page.
#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Page bounds shared by the list endpoints.
pub fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64)> {
    let limit = limit.unwrap_or(50);
    let offset = offset.unwrap_or(0);
    if !(1..=200).contains(&limit) || offset < 0 {
        return Err(Error::Invalid(
            "limit must be 1..=200 and offset at least 0".into(),
        ));
    }
    Ok((limit, offset))
}

#[derive(Serialize)]
struct DocumentList {
    documents: Vec<DocumentSummary>,
    /// The offset of the next page, when there is one.
    next_offset: Option<i64>,
}

async fn list_documents(
    user: AuthUser,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<DocumentList>> {
    let (limit, offset) = page(query.limit, query.offset)?;
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    // One row past the page says whether there is a next one; nothing counts.
    let fetch = limit + 1;
    let mut documents: Vec<DocumentSummary> = match search {
        // One round trip; the page is read off `documents_owner_page_idx`.
        None => {
            db::user_rows(user.id, &PAGE_QUERY)
                .bind(user.id)
                .bind(fetch)
                .bind(offset)
                .fetch_all(&state.db)
                .await?
        }
        Some(q) => {
            let mut tx = db::user_tx(&state.db, user.id).await?;
            // language=PostgreSQL
            let found = crate::db::query_as(&format!(
                "select {SUMMARY_COLUMNS} from documents,
                     (select websearch_to_tsquery('english', $2) || websearch_to_tsquery('simple', $2)) as s(q)
                 where owner_id = $1 and search @@ q
                 order by ts_rank(search, q) desc, updated_at desc, id limit $3 offset $4"
            ))
            .bind(user.id)
            .bind(q)
            .bind(fetch)
            .bind(offset)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            found
        }
    };
    let next_offset = (documents.len() as i64 > limit).then_some(offset + limit);
    documents.truncate(limit as usize);
    Ok(Json(DocumentList {
        documents,
        next_offset,
    }))
}

async fn fetch(state: &AppState, user: &AuthUser, id: Uuid) -> Result<Document> {
    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let doc: Document = crate::db::query_as(&format!(
        "select {SUMMARY_COLUMNS}, content from documents where id = $1 and owner_id = $2"
    ))
    .bind(id)
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("document"))?;
    tx.commit().await?;
    Ok(doc)
}

async fn get_document(
    user: AuthUser,
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<Json<Document>> {
    Ok(Json(fetch(&state, &user, id).await?))
}

/// What an edit may change; at least one field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentUpdate {
    filename: Option<String>,
    content: Option<String>,
    #[serde(rename = "type")]
    doc_type: Option<String>,
}

/// The safe form of a document's name: the one check of every name people give
/// (`crate::uploads::names`: no separators, control characters or bidirectional
/// overrides, not `.` or `..`; normalised, trimmed and capped like uploads).
pub fn validate_filename(name: &str) -> Result<String> {
    crate::uploads::names::safe_name(name).map_err(|e| Error::Invalid(e.to_string()))
}

/// The document types.
pub const TYPES: [&str; 3] = ["text", "markdown", "code"];

async fn update_document(
    user: AuthUser,
    State(state): State<AppState>,
    Id(id): Id,
    AppJson(update): AppJson<DocumentUpdate>,
) -> Result<Json<Document>> {
    if update.filename.is_none() && update.content.is_none() && update.doc_type.is_none() {
        return Err(Error::Invalid(
            "nothing to change: send filename, content or type".into(),
        ));
    }
    let filename = update
        .filename
        .as_deref()
        .map(validate_filename)
        .transpose()?;
    if let Some(t) = &update.doc_type
        && !TYPES.contains(&t.as_str())
    {
        return Err(Error::Invalid("type must be text, markdown or code".into()));
    }
    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let doc: Document = crate::db::query_as(&format!(
        "update documents set filename = coalesce($3, filename), content = coalesce($4, content),
             doc_type = coalesce($5, doc_type)
         where id = $1 and owner_id = $2
         returning {SUMMARY_COLUMNS}, content"
    ))
    .bind(id)
    .bind(user.id)
    .bind(filename)
    .bind(update.content)
    .bind(update.doc_type)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("document"))?;
    tx.commit().await?;
    Ok(Json(doc))
}

async fn delete_document(
    user: AuthUser,
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<StatusCode> {
    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let deleted = crate::db::query("delete from documents where id = $1 and owner_id = $2")
        .bind(id)
        .bind(user.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    if deleted == 0 {
        return Err(Error::NotFound("document"));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn download_document(
    user: AuthUser,
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<impl IntoResponse> {
    let doc = fetch(&state, &user, id).await?;
    let content_type = match doc.summary.doc_type.as_str() {
        "markdown" => "text/markdown; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                content_disposition(&doc.summary.filename),
            ),
        ],
        doc.content,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_with_path_tricks_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "..\\x",
            "a\0b",
            "line\nbreak",
            "report\u{202E}dm.exe",
        ] {
            assert!(validate_filename(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["notes.md", "Ünïcode résumé.txt", "a..b", ".hidden"] {
            assert_eq!(validate_filename(good).as_deref().ok(), Some(good));
        }
        assert_eq!(
            validate_filename(" padded ").as_deref().ok(),
            Some("padded")
        );
    }
}
