//! Extractors: the signed-in user, the client address, JSON bodies and ids in
//! paths, each rejecting with [`Error`] so every failure has the same shape.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::{
    Json,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request},
    http::{header, request::Parts},
};
use uuid::Uuid;

use super::{AppState, Error};
use crate::auth::Identity;

/// The user a valid access token names. The id never comes from a URL or a body.
#[derive(Clone, Debug)]
pub struct AuthUser {
    /// The user's id.
    pub id: Uuid,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = bearer_token(parts).ok_or_else(|| {
            Error::unauthorized("sign in first: send `Authorization: Bearer <access token>`")
        })?;
        Ok(Self {
            id: authenticate(state, token).await?,
        })
    }
}

/// The user an access token names (also used by the WebSocket, whose token may
/// come as a subprotocol), while their account stands: a disabled or deleted
/// account is refused promptly, not when its token expires. The account is read
/// (one primary-key read) unless this router found it in good standing less
/// than `standing::STANDING_TTL` ago; `router admin disable` makes every router
/// that hears it forget the account at once (see `http::standing`).
pub async fn authenticate(state: &AppState, token: &str) -> Result<Uuid, Error> {
    let identity = state.auth.verify(token).await?;
    let standing = &state.sockets.standing;
    if standing.is_good(identity.user_id) {
        return Ok(identity.user_id);
    }
    if state.auth.local().is_none() {
        ensure_external_user(state, &identity).await?;
    }
    // language=PostgreSQL
    let disabled: Option<bool> =
        crate::db::query_scalar("select disabled_at is not null from users where id = $1")
            .bind(identity.user_id)
            .fetch_optional(&state.db)
            .await?;
    match disabled {
        Some(false) => {
            standing.remember(identity.user_id);
            Ok(identity.user_id)
        }
        Some(true) => Err(account_disabled()),
        None => Err(Error::Unauthorized {
            code: "invalid_token",
            message: "this account no longer exists".into(),
        }),
    }
}

/// The refusal of a disabled account's request.
pub fn account_disabled() -> Error {
    Error::Forbidden {
        code: "account_disabled",
        message: crate::limits::Refusal::Disabled.to_string(),
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Makes sure a Supabase user has a `users` row (first request after sign-up).
async fn ensure_external_user(state: &AppState, identity: &Identity) -> Result<(), Error> {
    let id = identity.user_id;
    let known = state
        .known_users
        .lock()
        .map(|k| k.contains(&id))
        .unwrap_or(false);
    if known {
        return Ok(());
    }
    // language=PostgreSQL
    crate::db::query(
        "insert into users (id, email, external_auth_id) values ($1, $2, $3)
         on conflict do nothing",
    )
    .bind(id)
    .bind(identity.email.as_deref().unwrap_or(""))
    .bind(id.to_string())
    .execute(&state.db)
    .await?;
    if let Ok(mut k) = state.known_users.lock() {
        k.insert(id);
    }
    Ok(())
}

/// The client's address, for throttling: the peer address, or the last
/// `X-Forwarded-For` hop when the router is configured to trust its proxy.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if state.config.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return Ok(Self(ip));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        Ok(Self(peer))
    }
}

/// A JSON body whose rejections are [`Error`]s (413 over the limit, 415, 422).
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// A UUID from the path (`/api/documents/{id}`), refused with a clear 400.
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match Path::<Uuid>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Self(id)),
            Err(_) => Err(Error::BadRequest("the id in the path is not a UUID".into())),
        }
    }
}
