//! Conversations and their messages: list, read, rename, delete, download as
//! Markdown. Messages are written by `crate::transcript` as turns stream through
//! the proxy.

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
    documents::page,
    extractor::{AppJson, AuthUser, Id},
    files::content_disposition,
};
use crate::db;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/conversations", get(list_conversations))
        .route(
            "/api/conversations/{id}",
            get(get_conversation)
                .put(update_conversation)
                .delete(delete_conversation),
        )
        .route(
            "/api/conversations/{id}/download",
            get(download_conversation),
        )
}

/// A conversation without its messages.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct ConversationSummary {
    id: Uuid,
    title: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

/// One message of a conversation.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct Message {
    id: Uuid,
    role: String,
    content: String,
    /// Tool activity, documents and voice of the turn, in order.
    events: serde_json::Value,
    /// False for an answer that was cut off (or is still streaming).
    complete: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// Its turn ended (complete, or a numbered `error` stored).
    #[serde(skip)]
    ended: bool,
    /// Something of it was stored in the last [`RECENT`].
    #[serde(skip)]
    recent: bool,
}

/// How long after its last stored event an answer whose end has not come counts
/// as running even when no router here relays it (its workspace may be another
/// replica's).
const RECENT: &str = "2 minutes";

#[derive(Serialize)]
struct Conversation {
    #[serde(flatten)]
    summary: ConversationSummary,
    messages: Vec<Message>,
    /// The highest `seq` stored: a browser showing these messages resumes after it
    /// (`{"type":"resume","conversation_id","after_seq"}`) for exactly the rest.
    last_seq: i64,
    /// The last answer's turn still runs: it goes on after `last_seq`.
    running: bool,
}

/// `?q=` finds conversations whose title or any message contains every word of
/// it (case-insensitive, wildcards taken literally); `limit` (≤ 200) and
/// `offset` page. Newest activity first either way.
#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// At most this many words of a search count.
const MAX_SEARCH_WORDS: usize = 8;
/// A longer search is refused: nobody types it, and each word is matched
/// against every message of the user.
const MAX_SEARCH_CHARS: usize = 200;

/// The `ilike` patterns of a search: one per word (at most [`MAX_SEARCH_WORDS`]),
/// `\`, `%` and `_` escaped so they match themselves; empty for a blank search.
/// A search past [`MAX_SEARCH_CHARS`] is [`Error::Invalid`].
fn search_patterns(q: &str) -> Result<Vec<String>> {
    if q.chars().count() > MAX_SEARCH_CHARS {
        return Err(Error::Invalid(format!(
            "a search may have at most {MAX_SEARCH_CHARS} characters"
        )));
    }
    Ok(q.split_whitespace()
        .take(MAX_SEARCH_WORDS)
        .map(|word| {
            let mut pattern = String::with_capacity(word.len() + 2);
            pattern.push('%');
            for c in word.chars() {
                if matches!(c, '\\' | '%' | '_') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            pattern
        })
        .collect())
}

#[derive(Serialize)]
struct ConversationList {
    conversations: Vec<ConversationSummary>,
    next_offset: Option<i64>,
}

async fn list_conversations(
    user: AuthUser,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ConversationList>> {
    let (limit, offset) = page(query.limit, query.offset)?;
    let words = search_patterns(query.q.as_deref().unwrap_or(""))?;
    let conversations: Vec<ConversationSummary> = if words.is_empty() {
        // No text of the user's to bind: one round trip.
        // language=PostgreSQL
        db::user_rows(
            user.id,
            "select id, title, created_at, updated_at from conversations where owner_id = $1
             order by updated_at desc, id limit $2 offset $3",
        )
        .bind(user.id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&state.db)
        .await?
    } else {
        let mut tx = db::user_tx(&state.db, user.id).await?;
        // Every word in the title or in some message of the conversation.
        // language=PostgreSQL
        let found = crate::db::query_as(
            r"select c.id, c.title, c.created_at, c.updated_at from conversations c
             where c.owner_id = $1
               and not exists (
                 select 1 from unnest($4::text[]) as w(pattern)
                 where c.title not ilike w.pattern escape '\'
                   and not exists (
                     select 1 from messages m
                     where m.conversation_id = c.id and m.owner_id = $1
                       and m.superseded_by is null
                       and m.content ilike w.pattern escape '\'))
             order by c.updated_at desc, c.id limit $2 offset $3",
        )
        .bind(user.id)
        .bind(limit)
        .bind(offset)
        .bind(&words)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        found
    };
    let next_offset = (conversations.len() as i64 == limit).then_some(offset + limit);
    Ok(Json(ConversationList {
        conversations,
        next_offset,
    }))
}

async fn fetch(state: &AppState, user: &AuthUser, id: Uuid) -> Result<Conversation> {
    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let summary: ConversationSummary = crate::db::query_as(
        "select id, title, created_at, updated_at from conversations where id = $1 and owner_id = $2",
    )
    .bind(id)
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("conversation"))?;
    // The share lock keeps events from being stored until the messages are read,
    // so they hold exactly the events up to `last_seq`.
    // language=PostgreSQL
    let last_seq: i64 = crate::db::query_scalar(
        "select last_seq from conversations where id = $1 and owner_id = $2 for share",
    )
    .bind(id)
    .bind(user.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("conversation"))?;
    // language=PostgreSQL
    let messages: Vec<Message> = crate::db::query_as(
        "select id, role, content, events, complete, created_at,
             complete or events @> '[{\"type\":\"error\"}]' as ended,
             updated_at > now() - $3::interval as recent
         from messages where conversation_id = $1 and owner_id = $2
           and superseded_by is null order by position",
    )
    .bind(id)
    .bind(user.id)
    .bind(RECENT)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    // The newest answer runs while its end has not been stored, and either the
    // workspace reports running turns to this router or it was written to lately
    // (else it was cut off: its sandbox went away).
    let running = messages.last().is_some_and(|m| {
        m.role == "assistant"
            && !m.ended
            && (m.recent
                || state
                    .workspaces
                    .existing_hub(user.id)
                    .is_some_and(|h| h.turn_running()))
    });
    Ok(Conversation {
        summary,
        messages,
        last_seq,
        running,
    })
}

async fn get_conversation(
    user: AuthUser,
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<Json<Conversation>> {
    let mut conversation = fetch(&state, &user, id).await?;
    for message in &mut conversation.messages {
        state
            .voice
            .signer()
            .refresh_events(user.id, &mut message.events);
    }
    Ok(Json(conversation))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversationUpdate {
    title: String,
}

async fn update_conversation(
    user: AuthUser,
    State(state): State<AppState>,
    Id(id): Id,
    AppJson(update): AppJson<ConversationUpdate>,
) -> Result<Json<ConversationSummary>> {
    let title =
        crate::uploads::names::title(&update.title).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let summary: ConversationSummary = crate::db::query_as(
        "update conversations set title = $3 where id = $1 and owner_id = $2
         returning id, title, created_at, updated_at",
    )
    .bind(id)
    .bind(user.id)
    .bind(&title)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("conversation"))?;
    tx.commit().await?;
    Ok(Json(summary))
}

async fn delete_conversation(
    user: AuthUser,
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<StatusCode> {
    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let deleted = crate::db::query("delete from conversations where id = $1 and owner_id = $2")
        .bind(id)
        .bind(user.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    if deleted == 0 {
        return Err(Error::NotFound("conversation"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The conversation as a Markdown transcript.
fn to_markdown(c: &Conversation) -> String {
    let mut out = format!("# {}\n", c.summary.title);
    for m in &c.messages {
        let who = if m.role == "user" { "You" } else { "Jarvis" };
        let cut = if m.complete { "" } else { " (incomplete)" };
        out.push_str(&format!("\n## {who}{cut}\n\n{}\n", m.content.trim_end()));
    }
    out
}

async fn download_conversation(
    user: AuthUser,
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<impl IntoResponse> {
    let conversation = fetch(&state, &user, id).await?;
    let filename = format!("{}.md", conversation.summary.title);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/markdown; charset=utf-8".to_string(),
            ),
            (header::CONTENT_DISPOSITION, content_disposition(&filename)),
        ],
        to_markdown(&conversation),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_match_themselves() {
        let patterns = |q: &str| search_patterns(q).expect("a search");
        assert_eq!(patterns("  Lisbon   trip "), ["%Lisbon%", "%trip%"]);
        assert_eq!(patterns(r"50%_off\"), [r"%50\%\_off\\%"]);
        assert!(patterns(" \t ").is_empty());
        assert_eq!(patterns(&"w ".repeat(20)).len(), MAX_SEARCH_WORDS);
        assert_eq!(patterns(&"é".repeat(MAX_SEARCH_CHARS)).len(), 1);
        assert!(matches!(
            search_patterns(&"é".repeat(MAX_SEARCH_CHARS + 1)),
            Err(Error::Invalid(_))
        ));
    }
}
