//! Built-in accounts: `POST /api/auth/{register,login,refresh,logout}`, and email
//! verification: `GET /api/auth/verify?token=…` (the link mailed at sign-up) and
//! `POST /api/auth/verify/resend`.
//!
//! With Supabase Auth configured these answer 403 `builtin_accounts_off`:
//! Supabase signs people in (and verifies their addresses) and the router only
//! verifies its tokens.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    http::StatusCode,
    response::Html,
    routing::{get, post},
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use uuid::Uuid;

use super::{
    AppState, Error, Result,
    error::ResultExt,
    extractor::{AppJson, AuthUser, ClientIp},
    users::UserView,
};
use crate::auth::{
    ACCESS_TOKEN_TTL, email, local::LocalTokens, password, refresh, signups, throttle, verification,
};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh_session))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/verify", get(verify_email))
        .route("/api/auth/verify/resend", post(resend_verification))
}

/// Email and password, for sign-up and sign-in.
#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// A refresh token, for refresh and sign-out.
#[derive(Deserialize)]
struct RefreshRequest {
    refresh_token: String,
}

/// What sign-up, sign-in and refresh answer.
#[derive(Serialize)]
struct Session {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: UserView,
}

fn local_tokens(state: &AppState) -> Result<&LocalTokens> {
    state.auth.local().ok_or_else(|| Error::Forbidden {
        code: "builtin_accounts_off",
        message: "accounts are managed by Supabase Auth here; sign in through it".into(),
    })
}

async fn session(state: &AppState, user: UserView, family: Option<Uuid>) -> Result<Session> {
    let tokens = local_tokens(state)?;
    let access_token = tokens
        .issue(user.id, &user.email)
        .map_err(|e| anyhow::anyhow!("signing an access token: {e}"))?;
    let refresh_token = refresh::issue(&state.db, user.id, family).await?;
    Ok(Session {
        access_token,
        refresh_token,
        token_type: "bearer",
        expires_in: ACCESS_TOKEN_TTL.as_secs(),
        user: user.for_billing(state.config.billing_enabled()),
    })
}

fn validate_email(email: &str) -> Result<String> {
    let email = email.trim();
    if email.len() > 254 || !email_address::EmailAddress::is_valid(email) || !email.contains('.') {
        return Err(Error::Invalid(format!(
            "{email:?} is not a valid email address"
        )));
    }
    Ok(email.to_string())
}

fn validate_password(password: &str) -> Result<()> {
    let chars = password.chars().count();
    if chars < password::MIN_LEN {
        return Err(Error::Invalid(format!(
            "the password must be at least {} characters long",
            password::MIN_LEN
        )));
    }
    if password.len() > password::MAX_LEN {
        return Err(Error::Invalid(format!(
            "the password must be at most {} bytes long",
            password::MAX_LEN
        )));
    }
    Ok(())
}

async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(req): AppJson<Credentials>,
) -> Result<(StatusCode, Json<Session>)> {
    local_tokens(&state)?;
    let email = validate_email(&req.email)?;
    validate_password(&req.password)?;
    let limits = signup_limits(&state);
    // Refused before hashing, so a flood costs no argon2 work...
    signups::check(&state.db, ip, limits)
        .await?
        .map_err(too_many_signups)?;
    let hash = password::hash(req.password)
        .await
        .map_err(anyhow::Error::from)?;
    // ...and counted with the insert, so a taken address rolls its count back.
    let mut tx = state.db.begin().await?;
    signups::record(&mut tx, ip, limits)
        .await?
        .map_err(too_many_signups)?;
    // language=PostgreSQL
    let user: UserView = sqlx::query_as(
        "insert into users (email, email_normalized, password_hash) values ($1, $2, $3)
         returning id, email, tier, subscription_active",
    )
    .bind(&email)
    .bind(email::normalize(&email))
    .bind(hash)
    .fetch_one(&mut *tx)
    .await
    .on_constraint("users_email_normalized_key", || {
        Error::Conflict("an account with this email already exists; sign in instead".into())
    })?;
    tx.commit().await?;
    tracing::info!(user.id = %user.id, "account created");
    spawn_verification_mail(&state, user.id, user.email.clone());
    Ok((
        StatusCode::CREATED,
        Json(session(&state, user, None).await?),
    ))
}

fn signup_limits(state: &AppState) -> signups::Limits {
    signups::Limits {
        per_address: state.config.signups_per_address_per_hour,
        per_network: state.config.signups_per_network_per_hour,
    }
}

fn too_many_signups(refused: signups::Refused) -> Error {
    tracing::warn!(signup.from = %refused.from, "sign-up refused: too many from one place");
    Error::TooManyRequests {
        message: refused.to_string(),
        retry_after: Some(refused.retry_after),
    }
}

/// Mails the verification link in the background (sign-up does not wait for the
/// SMTP server, nor fail with it); a failure is logged.
fn spawn_verification_mail(state: &AppState, user_id: Uuid, to: String) {
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
async fn verify_email(
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
async fn resend_verification(
    user: AuthUser,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<serde_json::Value>)> {
    local_tokens(&state)?;
    let mailer = state.mailer.clone().ok_or_else(|| Error::Forbidden {
        code: "mail_off",
        message: "this server cannot send mail (its operator has not set JARVIS_SMTP_URL)".into(),
    })?;
    // language=PostgreSQL
    let to: String = sqlx::query_scalar("select email from users where id = $1")
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

#[derive(sqlx::FromRow)]
struct LoginRow {
    id: Uuid,
    email: String,
    tier: String,
    subscription_active: bool,
    password_hash: Option<String>,
    disabled: bool,
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(req): AppJson<Credentials>,
) -> Result<Json<Session>> {
    local_tokens(&state)?;
    // One form for the look-up and the throttle key, whatever the spelling.
    let email_key = email::normalize(&req.email);
    let keys = [
        throttle::account_key(&email_key, ip),
        throttle::address_key(ip),
    ];
    if let Some(secs) = throttle::wait_for(&state.db, &keys).await? {
        state.metrics.login_failures.inc();
        let wait = if secs < 60 {
            format!("{secs} seconds")
        } else {
            format!("{} minutes", secs.div_ceil(60))
        };
        return Err(Error::TooManyRequests {
            message: format!("too many failed sign-ins from your network; try again in {wait}"),
            retry_after: Some(secs),
        });
    }
    // language=PostgreSQL
    let row: Option<LoginRow> = sqlx::query_as(
        "select id, email, tier, subscription_active, password_hash, disabled_at is not null as disabled
         from users where email_normalized = $1",
    )
    .bind(&email_key)
    .fetch_optional(&state.db)
    .await?;
    let plausible = req.password.len() <= password::MAX_LEN;
    let hash = row.as_ref().and_then(|r| r.password_hash.clone());
    let ok = plausible && {
        let verified = password::verify(req.password, hash).await;
        if verified.hashed {
            state.metrics.password_verifications.inc();
        }
        verified.matches
    };
    let Some(row) = row.filter(|_| ok) else {
        state.metrics.login_failures.inc();
        throttle::record_failure(&state.db, &keys).await?;
        // A little noise on top of the hash's own time.
        let jitter = rand::rng().random_range(20..120);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        return Err(Error::Unauthorized {
            code: "invalid_credentials",
            message: "wrong email or password".into(),
        });
    };
    if row.disabled {
        return Err(account_disabled());
    }
    throttle::clear(&state.db, &keys[0]).await?;
    let user = UserView {
        id: row.id,
        email: row.email,
        tier: row.tier,
        subscription_active: row.subscription_active,
    };
    tracing::info!(user.id = %user.id, "signed in");
    Ok(Json(session(&state, user, None).await?))
}

fn account_disabled() -> Error {
    Error::Forbidden {
        code: "account_disabled",
        message: "this account is disabled; contact support".into(),
    }
}

async fn refresh_session(
    State(state): State<AppState>,
    AppJson(req): AppJson<RefreshRequest>,
) -> Result<Json<Session>> {
    local_tokens(&state)?;
    let (user_id, family) = refresh::spend(&state.db, &req.refresh_token)
        .await
        .map_err(|e| match e {
            refresh::RefreshError::Invalid => Error::Unauthorized {
                code: "invalid_refresh_token",
                message: "the session has ended; sign in again".into(),
            },
            refresh::RefreshError::Db(e) => Error::Sqlx(e),
        })?;
    // language=PostgreSQL
    let row: Option<(UserView, bool)> = sqlx::query_as::<_, (Uuid, String, String, bool, bool)>(
        "select id, email, tier, subscription_active, disabled_at is not null from users where id = $1",
    )
    .bind(user_id)
    .fetch_optional(&state.db)
    .await?
    .map(|(id, email, tier, subscription_active, disabled)| {
        (
            UserView {
                id,
                email,
                tier,
                subscription_active,
            },
            disabled,
        )
    });
    let (user, disabled) =
        row.ok_or_else(|| Error::unauthorized("the account no longer exists"))?;
    if disabled {
        return Err(account_disabled());
    }
    Ok(Json(session(&state, user, Some(family)).await?))
}

async fn logout(
    State(state): State<AppState>,
    AppJson(req): AppJson<RefreshRequest>,
) -> Result<StatusCode> {
    local_tokens(&state)?;
    refresh::revoke(&state.db, &req.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}
