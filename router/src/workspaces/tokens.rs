//! Workspace tokens: the one credential a sandbox holds.
//!
//! A token is 256 random bits (`jw_` + base64url). The router stores only its
//! SHA-256 in `workspaces.token_hash`, so a database dump holds no usable token.
//! A token is issued when a sandbox starts (replacing the previous one; a wake
//! that joins a running sandbox keeps its token), a sleep the router decides
//! revokes it, and it is good only at the router's sandbox-facing endpoints (the gateway), for
//! the one user whose workspace it is. It is not an access token: the browser API
//! never accepts it.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// Every workspace token starts with this, so a leaked one is recognisable.
pub const PREFIX: &str = "jw_";

/// What `workspaces.token_hash` holds for `token`.
pub(crate) fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A fresh random token, not yet valid anywhere (see [`install`]).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Issues a fresh token for `user_id`'s workspace (creating the workspace row
/// on first use) and returns it. Any previous token stops working.
pub async fn issue(db: &PgPool, user_id: Uuid) -> sqlx::Result<String> {
    let token = generate();
    install(db, user_id, &token).await?;
    Ok(token)
}

/// Makes `token` (from [`generate`]) `user_id`'s workspace token (creating the
/// workspace row on first use). Any previous token stops working.
pub async fn install(db: &PgPool, user_id: Uuid, token: &str) -> sqlx::Result<()> {
    // language=PostgreSQL
    crate::db::query(
        "insert into workspaces (owner_id, token_hash) values ($1, $2)
         on conflict (owner_id) do update set token_hash = excluded.token_hash",
    )
    .bind(user_id)
    .bind(digest(token))
    .execute(db)
    .await?;
    Ok(())
}

/// The user whose workspace `token` belongs to, if it is current.
pub async fn verify(db: &PgPool, token: &str) -> sqlx::Result<Option<Uuid>> {
    let Some(digest) = lookup_digest(token) else {
        return Ok(None);
    };
    // language=PostgreSQL
    crate::db::query_scalar("select owner_id from workspaces where token_hash = $1")
        .bind(digest)
        .fetch_optional(db)
        .await
}

/// What `workspaces.token_hash` holds for `token`; `None` for a string that is
/// no workspace token at all (it is not looked up).
pub(crate) fn lookup_digest(token: &str) -> Option<Vec<u8>> {
    token.starts_with(PREFIX).then(|| digest(token))
}

/// Revokes `user_id`'s workspace token (the workspace went to sleep).
pub async fn revoke(db: &PgPool, user_id: Uuid) -> sqlx::Result<()> {
    // language=PostgreSQL
    crate::db::query("update workspaces set token_hash = null where owner_id = $1")
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}
