//! The signed-in user's own account: `GET /api/me`.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;
use uuid::Uuid;

use super::{AppState, Error, Result, extractor::AuthUser};
use crate::db;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/me", get(get_current_user))
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

async fn get_current_user(user: AuthUser, State(state): State<AppState>) -> Result<Json<UserView>> {
    let mut tx = db::user_tx(&state.db, user.id).await?;
    // language=PostgreSQL
    let view: UserView =
        sqlx::query_as("select id, email, tier, subscription_active from users where id = $1")
            .bind(user.id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(Error::NotFound("user"))?;
    tx.commit().await?;
    Ok(Json(view.for_billing(state.config.billing_enabled())))
}
