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
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    AppState, Error, Result,
    error::ResultExt,
    extractor::{AppJson, ClientIp},
    users::UserView,
};
use crate::auth::{
    ACCESS_TOKEN_TTL, email, local::LocalTokens, password, refresh, signups, throttle,
};

/// Email verification: the mailed link and resending it.
mod verify;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh_session))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/verify", get(verify::verify_email))
        .route("/api/auth/verify/resend", post(verify::resend_verification))
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

/// Length first, then strength (`password::check_strength`, with the email as
/// the account's own details): a weak password is a 422 saying why and what to do.
fn validate_password(password: &str, email: &str) -> Result<()> {
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
    password::check_strength(password, email).map_err(|weak| Error::Invalid(weak.to_string()))
}

async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(req): AppJson<Credentials>,
) -> Result<(StatusCode, Json<Session>)> {
    local_tokens(&state)?;
    let email = validate_email(&req.email)?;
    validate_password(&req.password, &email)?;
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
    let user: UserView = crate::db::query_as(
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
    verify::spawn_verification_mail(&state, user.id, user.email.clone());
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
    tracing::info!(
        signup.limit = refused.limit,
        "sign-up refused: too many from one place"
    );
    Error::TooManyRequests {
        message: refused.to_string(),
        retry_after: Some(refused.retry_after),
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
    let row: Option<LoginRow> = crate::db::query_as(
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
    let row: Option<(UserView, bool)> = crate::db::query_as::<(Uuid, String, String, bool, bool)>(
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
