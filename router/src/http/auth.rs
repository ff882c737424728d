//! Built-in accounts: `POST /api/auth/{register,login,refresh,logout}`.
//!
//! With Supabase Auth configured these answer 404: Supabase signs people in and
//! the router only verifies its tokens.

use std::time::Duration;

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    AppState, Error, Result,
    error::ResultExt,
    extractor::{AppJson, ClientIp},
    users::UserView,
};
use crate::auth::{ACCESS_TOKEN_TTL, local::LocalTokens, password, refresh, throttle};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh_session))
        .route("/api/auth/logout", post(logout))
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
    AppJson(req): AppJson<Credentials>,
) -> Result<(StatusCode, Json<Session>)> {
    local_tokens(&state)?;
    let email = validate_email(&req.email)?;
    validate_password(&req.password)?;
    let hash = password::hash(req.password)
        .await
        .map_err(anyhow::Error::from)?;
    // language=PostgreSQL
    let user: UserView = sqlx::query_as(
        "insert into users (email, password_hash) values ($1, $2)
         returning id, email, tier, subscription_active",
    )
    .bind(&email)
    .bind(hash)
    .fetch_one(&state.db)
    .await
    .on_constraint("users_email_key", || {
        Error::Conflict("an account with this email already exists; sign in instead".into())
    })?;
    tracing::info!(user.id = %user.id, "account created");
    Ok((
        StatusCode::CREATED,
        Json(session(&state, user, None).await?),
    ))
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
    let keys = [
        throttle::account_key(req.email.trim()),
        throttle::ip_key(ip),
    ];
    if let Some(secs) = throttle::locked_for(&state.db, &keys).await? {
        state.metrics.login_failures.inc();
        return Err(Error::TooManyRequests {
            message: format!(
                "too many failed sign-ins; try again in {} minutes",
                secs.div_ceil(60)
            ),
            retry_after: Some(secs),
        });
    }
    // language=PostgreSQL
    let row: Option<LoginRow> = sqlx::query_as(
        "select id, email, tier, subscription_active, password_hash, disabled_at is not null as disabled
         from users where lower(email) = lower($1) and email <> ''",
    )
    .bind(req.email.trim())
    .fetch_optional(&state.db)
    .await?;
    let plausible = req.password.len() <= password::MAX_LEN;
    let hash = row.as_ref().and_then(|r| r.password_hash.clone());
    let ok = plausible && password::verify(req.password, hash).await;
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
