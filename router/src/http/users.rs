//! The signed-in user's own account: `GET /api/me`, and `PATCH /api/me` for the
//! settings a user changes themselves (`{"voice_answers": bool}`).

use axum::{Json, Router, extract::State, routing::get};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    AppState, Error, Result,
    extractor::{AppJson, AuthUser},
};
use crate::db;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/me", get(get_current_user).patch(update_current_user))
}

/// `GET /api/me`: the account plus the user's settings.
#[derive(Debug, Serialize)]
pub struct MeView {
    /// DESIGN.md's fields.
    #[serde(flatten)]
    pub user: UserView,
    /// Whether answers are spoken unless a message says otherwise.
    pub voice_answers: bool,
    /// Whether the email address is verified (Supabase accounts: by Supabase).
    pub email_verified: bool,
    /// Whether spoken answers are possible at all (the plan has voice and the
    /// server has an engine).
    pub voice_available: bool,
}

/// The settings `PATCH /api/me` changes; absent fields stay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MePatch {
    voice_answers: Option<bool>,
}

/// A user as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct UserView {
    /// The user's id.
    pub id: Uuid,
    /// Their email address.
    pub email: String,
    /// `free`, `pro` or `enterprise`.
    pub tier: String,
    /// Whether they may use the agent (always true while billing is off).
    pub subscription_active: bool,
}

impl UserView {
    /// Applies the rule that, with billing off, every account is active.
    pub fn for_billing(mut self, billing_enabled: bool) -> Self {
        self.subscription_active |= !billing_enabled;
        self
    }
}

async fn get_current_user(user: AuthUser, State(state): State<AppState>) -> Result<Json<MeView>> {
    me(&state, user.id, None).await.map(Json)
}

async fn update_current_user(
    user: AuthUser,
    State(state): State<AppState>,
    AppJson(patch): AppJson<MePatch>,
) -> Result<Json<MeView>> {
    me(&state, user.id, patch.voice_answers).await.map(Json)
}

/// Reads the user (after setting `voice_answers` when given), in one transaction.
async fn me(state: &AppState, id: Uuid, voice_answers: Option<bool>) -> Result<MeView> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: UserView,
        voice_answers: bool,
        email_verified: bool,
        disabled: bool,
    }
    let mut tx = db::user_tx(&state.db, id).await?;
    // A read stays a read (no `updated_at` bump); a change returns the new row.
    let sql = match voice_answers {
        // language=PostgreSQL
        None => {
            "select id, email, tier, subscription_active, voice_answers,
                    email_verified_at is not null or external_auth_id is not null as email_verified,
                    disabled_at is not null as disabled
             from users where id = $1"
        }
        // language=PostgreSQL
        Some(_) => {
            "update users set voice_answers = $2 where id = $1
             returning id, email, tier, subscription_active, voice_answers,
                       email_verified_at is not null or external_auth_id is not null as email_verified,
                       disabled_at is not null as disabled"
        }
    };
    let mut query = crate::db::query_as(sql).bind(id);
    if let Some(voice_answers) = voice_answers {
        query = query.bind(voice_answers);
    }
    let row: Row = query
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound("user"))?;
    // The extractor may have let the account in on a standing found a moment
    // ago (`http::standing`); the row read here is the last word.
    if row.disabled {
        state.sockets.standing.forget(id);
        return Err(super::extractor::account_disabled());
    }
    tx.commit().await?;
    Ok(MeView {
        user: row.user.for_billing(state.config.billing_enabled()),
        voice_answers: row.voice_answers,
        email_verified: row.email_verified,
        voice_available: state.voice.available_to(id).await?,
    })
}
