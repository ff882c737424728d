//! Email verification of built-in accounts over HTTP: the link mailed at sign-up
//! (`GET /api/auth/verify?token=…`) and `POST /api/auth/verify/resend`. Tokens
//! are `auth::verification`'s, the mail `mail`'s.

use axum::{
    Json,
    extract::{RawQuery, State},
    http::StatusCode,
    response::Html,
};
use tracing::Instrument;
use uuid::Uuid;

use super::local_tokens;
use crate::{
    auth::{signups, verification},
    http::{AppState, Error, Result, extractor::AuthUser},
};

/// Mails the verification link in the background (sign-up does not wait for the
/// SMTP server, nor fail with it); a failure is logged.
pub(super) fn spawn_verification_mail(state: &AppState, user_id: Uuid, to: String) {
    let Some(mailer) = state.mailer.clone() else {
        return;
    };
    let (db, public_url) = (state.db.clone(), state.config.public_url());
    tokio::spawn(
        async move {
            if let Err(error) = send_verification(&db, &mailer, &public_url, user_id, &to).await {
                tracing::warn!(%error, "the verification mail was not sent");
            }
        }
        .in_current_span(),
    );
}

/// Why a verification mail was not sent.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("the address is verified already")]
    Verified,
    #[error("at most {} verification mails an hour; try again in {} minutes", verification::MAILS_PER_HOUR, .0.div_ceil(60).max(1))]
    TooMany(u64),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Mail(#[from] crate::mail::MailError),
}

/// Issues a fresh link for `user_id` and mails it to `to`, at most
/// [`verification::MAILS_PER_HOUR`] an hour.
async fn send_verification(
    db: &sqlx::PgPool,
    mailer: &crate::mail::Mailer,
    public_url: &str,
    user_id: Uuid,
    to: &str,
) -> Result<(), SendError> {
    let mut conn = db.acquire().await?;
    signups::count(
        &mut conn,
        &format!("mail:{user_id}"),
        verification::MAILS_PER_HOUR,
        signups::WINDOW,
    )
    .await?
    .map_err(SendError::TooMany)?;
    drop(conn);
    let token = verification::issue(db, user_id)
        .await?
        .ok_or(SendError::Verified)?;
    mailer
        .send_verification(to, &verification::link(public_url, &token))
        .await?;
    tracing::info!(user.id = %user_id, "verification mail sent");
    Ok(())
}

/// `GET /api/auth/verify?token=…`: the link of the mail, opened in a browser.
pub(super) async fn verify_email(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>> {
    let token = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .unwrap_or_default();
    let user_id = verification::confirm(&state.db, token)
        .await?
        .ok_or_else(|| {
            Error::BadRequest(
                "this verification link is invalid, used or expired; sign in and ask for a new one"
                    .into(),
            )
        })?;
    tracing::info!(user.id = %user_id, "email address verified");
    let home = state.config.public_url();
    Ok(Html(format!(
        "<!doctype html><meta charset=utf-8><title>Email verified</title>\
         <p>Your email address is verified. <a href=\"{home}/\">Open Jarvis</a>.</p>"
    )))
}

/// `POST /api/auth/verify/resend`: a new link for the signed-in user → 202
/// (403 `mail_off` without SMTP, 409 when verified, 429 past the hourly limit).
pub(super) async fn resend_verification(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<serde_json::Value>)> {
    local_tokens(&state)?;
    let mailer = state.mailer.clone().ok_or_else(|| Error::Forbidden {
        code: "mail_off",
        message: "this server cannot send mail (its operator has not set JARVIS_SMTP_URL)".into(),
    })?;
    // language=PostgreSQL
    let to: String = crate::db::query_scalar("select email from users where id = $1")
        .bind(user.id)
        .fetch_optional(&state.db)
        .await?
        .ok_or(Error::NotFound("user"))?;
    let public_url = state.config.public_url();
    match send_verification(&state.db, &mailer, &public_url, user.id, &to).await {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"sent_to": to})),
        )),
        Err(SendError::Verified) => Err(Error::Conflict(
            "your email address is verified already".into(),
        )),
        Err(e @ SendError::TooMany(secs)) => Err(Error::TooManyRequests {
            message: e.to_string(),
            retry_after: Some(secs),
        }),
        Err(SendError::Db(e)) => Err(e.into()),
        Err(SendError::Mail(error)) => {
            tracing::warn!(%error, "the verification mail was not sent");
            Err(Error::Unavailable(
                "the mail could not be sent right now; try again later".into(),
            ))
        }
    }
}
