//! `GET /api/voice/{id}?expires=UNIX&sig=HEX`: voice audio by signed URL, so an
//! `<audio>` element (which sends no bearer token) can play it. The signature
//! (`crate::voice::signing`) binds the file, its owner and the expiry; a wrong or
//! tampered one, or another file's id, answers 403 `invalid_signature`, an
//! expired one 403 `url_expired`. The owner's bearer token also reaches the same
//! audio through `GET /api/files/{id}/download`.

use axum::{
    Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{AppState, Error, Result, extractor::Id};
use crate::voice::signing::SignatureError;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/voice/{id}", get(get_voice))
}

#[derive(Deserialize)]
struct Signed {
    expires: Option<u64>,
    sig: Option<String>,
}

async fn get_voice(
    State(state): State<AppState>,
    Id(id): Id,
    Query(signed): Query<Signed>,
) -> Result<Response> {
    let (Some(expires), Some(sig)) = (signed.expires, signed.sig) else {
        return Err(refused(SignatureError::Invalid));
    };
    // No user is signed in here: the row is looked up by id alone, and only a
    // signature made for its owner opens it. A missing file looks like a bad link.
    // language=PostgreSQL
    let row: Option<(Uuid, String, String, i64)> = sqlx::query_as(
        "select owner_id, storage_key, content_type, size from files where id = $1 and kind = 'voice'",
    )
    .bind(id)
    .fetch_optional(&state.db)
    .await?;
    let Some((owner, key, content_type, size)) = row else {
        return Err(refused(SignatureError::Invalid));
    };
    state
        .voice
        .signer()
        .verify(id, owner, expires, &sig)
        .map_err(refused)?;
    let stream = state.storage.get(&key).await?;
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

fn refused(error: SignatureError) -> Error {
    Error::Forbidden {
        code: match error {
            SignatureError::Invalid => "invalid_signature",
            SignatureError::Expired => "url_expired",
        },
        message: error.to_string(),
    }
}
