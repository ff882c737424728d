//! Email verification of built-in accounts: a random token, mailed as a link,
//! of which only the sha256 is stored (on the user's row, with an expiry). One
//! link is outstanding at a time: a new one replaces the last. Sending the mail
//! is `mail`'s job; when verification is required is `limits`'.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// How long a link works.
pub const LINK_TTL: Duration = Duration::from_secs(24 * 3600);
/// Verification mails one user may ask for per hour (sign-up's included).
pub const MAILS_PER_HOUR: u32 = 5;

/// A fresh link token for `user_id`, replacing any earlier one; `None` when the
/// user does not exist or is verified already.
pub async fn issue(db: &PgPool, user_id: Uuid) -> sqlx::Result<Option<String>> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    // language=PostgreSQL
    let updated = crate::db::query(
        "update users set email_verification_hash = $2, email_verification_expires_at = now() + $3
         where id = $1 and email_verified_at is null",
    )
    .bind(user_id)
    .bind(hash(&token))
    .bind(LINK_TTL)
    .execute(db)
    .await?;
    Ok((updated.rows_affected() == 1).then_some(token))
}

/// Marks the address of the token's user verified and spends the token; `None`
/// for an unknown, spent or expired token.
pub async fn confirm(db: &PgPool, token: &str) -> sqlx::Result<Option<Uuid>> {
    // language=PostgreSQL
    crate::db::query_scalar(
        "update users set email_verified_at = now(), email_verification_hash = null,
                          email_verification_expires_at = null
         where email_verification_hash = $1 and email_verification_expires_at > now()
         returning id",
    )
    .bind(hash(token.trim()))
    .fetch_optional(db)
    .await
}

/// The link that verifies with `token`, under the router's public URL.
pub fn link(public_url: &str, token: &str) -> String {
    format!("{public_url}/api/auth/verify?token={token}")
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
