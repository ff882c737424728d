//! Refresh tokens: 256 random bits, given to the client once and stored only as
//! a SHA-256 hash. Each use rotates the token (the old one is spent, a new one in
//! the same family is issued). Presenting a spent token means it was copied, so
//! the whole family (that login) is revoked.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// How long a refresh token lives.
pub const TTL_DAYS: i32 = 30;

/// Why a refresh token was refused.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Unknown, expired, revoked or already used.
    #[error("the refresh token is not valid")]
    Invalid,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Issues a refresh token for `user_id`, in `family` (a new one when `None`).
pub async fn issue(db: &PgPool, user_id: Uuid, family: Option<Uuid>) -> sqlx::Result<String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    // language=PostgreSQL
    crate::db::query(
        "insert into refresh_tokens (owner_id, family_id, token_hash, expires_at)
         values ($1, $2, $3, now() + make_interval(days => $4))",
    )
    .bind(user_id)
    .bind(family.unwrap_or_else(Uuid::new_v4))
    .bind(digest(&token))
    .bind(TTL_DAYS)
    .execute(db)
    .await?;
    Ok(token)
}

/// Spends `token` and returns `(user, family)` for the replacement. A token that
/// was already spent revokes its family.
pub async fn spend(db: &PgPool, token: &str) -> Result<(Uuid, Uuid), RefreshError> {
    let hash = digest(token);
    // language=PostgreSQL
    let spent: Option<(Uuid, Uuid)> = crate::db::query_as(
        "update refresh_tokens set used_at = now()
         where token_hash = $1 and used_at is null and revoked_at is null and expires_at > now()
         returning owner_id, family_id",
    )
    .bind(&hash)
    .fetch_optional(db)
    .await?;
    if let Some(found) = spent {
        return Ok(found);
    }
    // language=PostgreSQL
    let reused: Option<(Uuid,)> = crate::db::query_as(
        "select family_id from refresh_tokens where token_hash = $1 and used_at is not null",
    )
    .bind(&hash)
    .fetch_optional(db)
    .await?;
    if let Some((family,)) = reused {
        tracing::warn!(family.id = %family, "spent refresh token presented again; revoking its family");
        revoke_family(db, family).await?;
    }
    Err(RefreshError::Invalid)
}

/// Revokes the family `token` belongs to (sign-out). Unknown tokens are ignored.
pub async fn revoke(db: &PgPool, token: &str) -> sqlx::Result<()> {
    // language=PostgreSQL
    let family: Option<(Uuid,)> =
        crate::db::query_as("select family_id from refresh_tokens where token_hash = $1")
            .bind(digest(token))
            .fetch_optional(db)
            .await?;
    if let Some((family,)) = family {
        revoke_family(db, family).await?;
    }
    Ok(())
}

async fn revoke_family(db: &PgPool, family: Uuid) -> sqlx::Result<()> {
    // language=PostgreSQL
    crate::db::query(
        "update refresh_tokens set revoked_at = now() where family_id = $1 and revoked_at is null",
    )
    .bind(family)
    .execute(db)
    .await?;
    Ok(())
}
