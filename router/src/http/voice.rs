//! `GET /api/voice/{id}?expires=UNIX&sig=HEX`: voice audio by signed URL, so an
//! `<audio>` element (which sends no bearer token) can play it. The signature
//! (`crate::voice::signing`) binds the file, its owner and the expiry; a wrong or
//! tampered one, or another file's id, answers 403 `invalid_signature`, an
//! expired one 403 `url_expired`. The owner's bearer token also reaches the same
//! audio through `GET /api/files/{id}/download`.
//!
//! `POST /v1/voice/speak {"text"}`: the speech service for sandboxes, beside the
//! model gateway and authenticated the same way (the workspace token as
//! `x-api-key` or bearer); the audio is the token's user's. The sandbox itself
//! speaks answers through `speak` calls on its link; this is the same service for
//! anything else in the workspace. Engine keys stay here either way.

use axum::{
    Json, Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    AppState, Error, Result,
    extractor::{AppJson, Id},
};
use crate::voice::{Spoken, VoiceError, signing::SignatureError};

/// The browser's route (signed audio URLs).
pub fn router() -> Router<AppState> {
    Router::new().route("/api/voice/{id}", get(get_voice))
}

/// The sandboxes' route (workspace token), served beside the model gateway.
pub fn sandbox_router() -> Router<AppState> {
    Router::new().route("/v1/voice/speak", post(speak))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeakBody {
    text: String,
}

async fn speak(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppJson(body): AppJson<SpeakBody>,
) -> Result<Json<Spoken>> {
    let token = super::gateway::credential(&headers)
        .ok_or_else(|| Error::unauthorized("send the workspace token as `x-api-key`"))?;
    let owner = crate::workspaces::tokens::verify(&state.db, token)
        .await?
        .ok_or_else(|| Error::unauthorized("invalid or revoked workspace token"))?;
    state
        .voice
        .speak(owner, &body.text)
        .await
        .map(Json)
        .map_err(|error| match error {
            VoiceError::InvalidParams(m) => Error::Invalid(m),
            VoiceError::Unavailable(m) => Error::Forbidden {
                code: "voice_unavailable",
                message: m,
            },
            VoiceError::Failed(m) => Error::Unavailable(m),
            e @ VoiceError::QuotaExceeded(_) => Error::QuotaExceeded(e.to_string()),
            VoiceError::Db(e) => Error::Sqlx(e),
            VoiceError::Storage(e) => Error::Storage(e),
        })
}

/// The signature's query parameters, as text: a malformed one is a bad link
/// (403 with the usual error body), not a query rejection.
#[derive(Deserialize)]
struct Signed {
    expires: Option<String>,
    sig: Option<String>,
}

async fn get_voice(
    State(state): State<AppState>,
    Id(id): Id,
    Query(signed): Query<Signed>,
) -> Result<Response> {
    let expires = signed.expires.and_then(|e| e.parse::<u64>().ok());
    let (Some(expires), Some(sig)) = (expires, signed.sig) else {
        return Err(refused(SignatureError::Invalid));
    };
    // No user is signed in here: the row is looked up by id alone, and only a
    // signature made for its owner opens it. A missing file looks like a bad link.
    // language=PostgreSQL
    let row: Option<(Uuid, String, String, i64)> = crate::db::query_as(
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
