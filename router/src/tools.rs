//! The Jarvis tools a sandbox calls through the router (`POST /v1/workspace/calls`,
//! formerly `call` frames of `sandbox/README.md`): documents the agent saves,
//! lists, searches, reads and updates, and the `speak` seam. A call with an id
//! ([`handle_call`]) saves its document once however often it is retried.
//!
//! [`handle`] answers one call for one user. The user id is the sandbox's owner,
//! bound by the router; no parameter names a user. Every query runs in that user's
//! RLS transaction ([`crate::db::user_tx`]) and filters by owner as well, so another
//! user's document id answers `not_found` exactly like a missing one. A call that
//! fails changes nothing. This module does not relay frames; the proxy does, turning
//! `Err(e)` into `reply.error` with [`ToolError::body`].

use sandbox::protocol::ErrorBody;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{db, http::documents::validate_filename};

/// Largest document content the agent may save, in bytes.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;

/// Most documents one `list_documents` or `search_documents` answers with.
pub const MAX_LISTED: i64 = 200;

/// Why a call failed; becomes `reply.error` `{code, message}`.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// `method` is none of the Jarvis tools.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// The parameters are missing, malformed or invalid.
    #[error("{0}")]
    InvalidParams(String),
    /// Content over [`MAX_CONTENT_BYTES`].
    #[error("content is {0} bytes; the limit is {MAX_CONTENT_BYTES}")]
    TooLarge(usize),
    /// No such document for this user (another user's counts as none).
    #[error("no document with id {0}")]
    NotFound(Uuid),
    /// Text to speech is not available to this caller.
    #[error("speaking is not available here")]
    VoiceUnavailable,
    /// The database failed; the cause is logged, not told to the agent.
    #[error("the document store failed; try again")]
    Db(#[from] sqlx::Error),
}

impl ToolError {
    /// The stable machine-readable code: `unknown_method`, `invalid_params`,
    /// `too_large`, `not_found`, `voice_unavailable` or `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownMethod(_) => "unknown_method",
            Self::InvalidParams(_) => "invalid_params",
            Self::TooLarge(_) => "too_large",
            Self::NotFound(_) => "not_found",
            Self::VoiceUnavailable => "voice_unavailable",
            Self::Db(_) => "internal",
        }
    }

    /// The `{code, message}` of the protocol's `reply.error`.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().to_string(),
            message: self.to_string(),
        }
    }
}

/// Answers one tool call of `user_id`'s sandbox. `conversation_id` (the turn's
/// conversation, when the call came from one) is linked to saved documents if it
/// is one of the user's conversations.
pub async fn handle(
    db: &PgPool,
    user_id: Uuid,
    conversation_id: Option<Uuid>,
    method: &str,
    params: Value,
) -> Result<Value, ToolError> {
    handle_call(db, user_id, None, conversation_id, method, params).await
}

/// [`handle`] for a call with an id (`POST /v1/workspace/calls`): a
/// `save_document` retried with the same `call_id` saves nothing new and
/// answers the document the first attempt saved (its id is
/// [`call_document_id`]).
#[tracing::instrument(skip(db, params), fields(user.id = %user_id))]
pub async fn handle_call(
    db: &PgPool,
    user_id: Uuid,
    call_id: Option<Uuid>,
    conversation_id: Option<Uuid>,
    method: &str,
    params: Value,
) -> Result<Value, ToolError> {
    let result = match method {
        "save_document" => {
            save_document(db, user_id, call_id, conversation_id, parse(params)?).await
        }
        "list_documents" => {
            let ListParams {} = parse(params)?;
            list_documents(db, user_id).await
        }
        "search_documents" => search_documents(db, user_id, parse(params)?).await,
        "read_document" => read_document(db, user_id, parse(params)?).await,
        "update_document" => update_document(db, user_id, parse(params)?).await,
        // The proxy answers `speak` with `crate::voice` before it gets here; a
        // caller without a voice service has no speech.
        "speak" => {
            let SpeakParams { text } = parse(params)?;
            tracing::debug!(
                chars = text.chars().count(),
                "speak without a voice service"
            );
            Err(ToolError::VoiceUnavailable)
        }
        other => Err(ToolError::UnknownMethod(other.chars().take(64).collect())),
    };
    match &result {
        Err(ToolError::Db(e)) => tracing::error!(error = %e, "tool call failed"),
        Err(e) => tracing::debug!(code = e.code(), "tool call refused"),
        Ok(_) => tracing::debug!("tool call answered"),
    }
    result
}

/// Parameters as a struct; `null` counts as `{}`.
fn parse<T: DeserializeOwned>(params: Value) -> Result<T, ToolError> {
    let params = if params.is_null() { json!({}) } else { params };
    serde_json::from_value(params).map_err(|e| ToolError::InvalidParams(format!("params: {e}")))
}

fn parse_id(id: &str) -> Result<Uuid, ToolError> {
    id.parse()
        .map_err(|_| ToolError::InvalidParams(format!("id {id:?} is not a document id (a UUID)")))
}

fn check_content(content: &str) -> Result<(), ToolError> {
    if content.len() > MAX_CONTENT_BYTES {
        return Err(ToolError::TooLarge(content.len()));
    }
    if content.contains('\0') {
        return Err(ToolError::InvalidParams(
            "content must not contain NUL".into(),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveParams {
    filename: String,
    content: String,
    #[serde(rename = "type")]
    doc_type: DocType,
}

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum DocType {
    Text,
    Markdown,
    Code,
}

impl DocType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Markdown => "markdown",
            Self::Code => "code",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    query: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateParams {
    id: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeakParams {
    text: String,
}

/// What lists show of a document.
#[derive(Serialize, sqlx::FromRow)]
struct Summary {
    id: Uuid,
    filename: String,
    #[serde(rename = "type")]
    doc_type: String,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

/// The id of the document a `save_document` call `call_id` of `user_id` saves:
/// UUID v5 of the call id in the user's namespace, so a retried call names the
/// same document and two users' calls never collide.
pub fn call_document_id(user_id: Uuid, call_id: Uuid) -> Uuid {
    Uuid::new_v5(&user_id, call_id.as_bytes())
}

/// The `{id, filename}` answer of the `save_document` call `call_id` when that
/// call already saved its document, else `None`.
pub async fn saved_by_call(
    db: &PgPool,
    user_id: Uuid,
    call_id: Uuid,
) -> Result<Option<Value>, ToolError> {
    let mut tx = db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let row: Option<(Uuid, String)> =
        crate::db::query_as("select id, filename from documents where id = $1 and owner_id = $2")
            .bind(call_document_id(user_id, call_id))
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(row.map(|(id, filename)| json!({ "id": id, "filename": filename })))
}

async fn save_document(
    db: &PgPool,
    user_id: Uuid,
    call_id: Option<Uuid>,
    conversation_id: Option<Uuid>,
    p: SaveParams,
) -> Result<Value, ToolError> {
    let name =
        validate_filename(&p.filename).map_err(|e| ToolError::InvalidParams(e.to_string()))?;
    check_content(&p.content)?;
    let id = call_id.map_or_else(Uuid::new_v4, |call| call_document_id(user_id, call));
    let mut tx = db::user_tx(db, user_id).await?;
    // The conversation is linked only if it is this user's (else null), so a
    // forged id can neither fail the save nor point at someone else's row.
    // language=PostgreSQL
    let inserted: Option<(Uuid, String)> = crate::db::query_as(
        "insert into documents (id, owner_id, conversation_id, filename, doc_type, content)
         values ($1, $2, (select id from conversations where id = $3 and owner_id = $2), $4, $5, $6)
         on conflict (id) do nothing
         returning id, filename",
    )
    .bind(id)
    .bind(user_id)
    .bind(conversation_id)
    .bind(&name)
    .bind(p.doc_type.as_str())
    .bind(&p.content)
    .fetch_optional(&mut *tx)
    .await?;
    let (id, filename) = match inserted {
        Some(row) => {
            tracing::info!(document.id = %row.0, bytes = p.content.len(), "agent saved a document");
            row
        }
        // A retry of a call already stored: the same answer, nothing new.
        None => {
            // language=PostgreSQL
            let row: Option<(Uuid, String)> = crate::db::query_as(
                "select id, filename from documents where id = $1 and owner_id = $2",
            )
            .bind(id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
            let row = row.ok_or(ToolError::NotFound(id))?;
            tracing::info!(document.id = %id, "a retried save_document answered the document it saved");
            row
        }
    };
    tx.commit().await?;
    Ok(json!({ "id": id, "filename": filename }))
}

async fn list_documents(db: &PgPool, user_id: Uuid) -> Result<Value, ToolError> {
    let mut tx = db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let documents: Vec<Summary> = crate::db::query_as(
        "select id, filename, doc_type, updated_at from documents where owner_id = $1
         order by updated_at desc, id limit $2",
    )
    .bind(user_id)
    .bind(MAX_LISTED)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(json!({ "documents": documents }))
}

async fn search_documents(db: &PgPool, user_id: Uuid, p: SearchParams) -> Result<Value, ToolError> {
    let query = p.query.trim();
    if query.is_empty() || query.len() > 1000 {
        return Err(ToolError::InvalidParams(
            "query must be 1-1000 bytes of search words".into(),
        ));
    }
    #[derive(Serialize, sqlx::FromRow)]
    struct Match {
        #[serde(flatten)]
        #[sqlx(flatten)]
        summary: Summary,
        /// A few words around the matches.
        snippet: String,
    }
    let mut tx = db::user_tx(db, user_id).await?;
    // The same search as `GET /api/documents?q=`: English stems plus exact words.
    // language=PostgreSQL
    let matches: Vec<Match> = crate::db::query_as(
        "select id, filename, doc_type, updated_at,
                ts_headline('english', content, q, 'MaxFragments=2, MaxWords=20, MinWords=5') as snippet
         from documents,
              (select websearch_to_tsquery('english', $2) || websearch_to_tsquery('simple', $2)) as s(q)
         where owner_id = $1 and search @@ q
         order by ts_rank(search, q) desc, updated_at desc, id limit $3",
    )
    .bind(user_id)
    .bind(query)
    .bind(MAX_LISTED)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(json!({ "documents": matches }))
}

async fn read_document(db: &PgPool, user_id: Uuid, p: ReadParams) -> Result<Value, ToolError> {
    let id = parse_id(&p.id)?;
    let mut tx = db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let row: Option<(Uuid, String, String, String)> = crate::db::query_as(
        "select id, filename, doc_type, content from documents where id = $1 and owner_id = $2",
    )
    .bind(id)
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let (id, filename, doc_type, content) = row.ok_or(ToolError::NotFound(id))?;
    Ok(json!({ "id": id, "filename": filename, "type": doc_type, "content": content }))
}

async fn update_document(db: &PgPool, user_id: Uuid, p: UpdateParams) -> Result<Value, ToolError> {
    let id = parse_id(&p.id)?;
    check_content(&p.content)?;
    let mut tx = db::user_tx(db, user_id).await?;
    // language=PostgreSQL
    let row: Option<(Uuid, String)> = crate::db::query_as(
        "update documents set content = $3 where id = $1 and owner_id = $2 returning id, filename",
    )
    .bind(id)
    .bind(user_id)
    .bind(&p.content)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let (id, filename) = row.ok_or(ToolError::NotFound(id))?;
    tracing::info!(document.id = %id, bytes = p.content.len(), "agent updated a document");
    Ok(json!({ "id": id, "filename": filename }))
}
