//! Database access shared by every module.
//!
//! Work done for one user runs in [`user_tx`]: a transaction under the
//! unprivileged `jarvis_user` role with `app.user_id` set, so the row-level
//! security policies of `migrations/0002_row_level_security.sql` hide every other
//! user's rows even if a query forgot its `owner_id` filter. Queries still filter
//! by owner themselves; the policies are the second line of defence.

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// The role that row-level security applies to.
pub const USER_ROLE: &str = "jarvis_user";

/// Begins a transaction that sees only `user_id`'s rows.
pub async fn user_tx(db: &PgPool, user_id: Uuid) -> sqlx::Result<Transaction<'static, Postgres>> {
    let mut tx = db.begin().await?;
    // `set_config(.., true)` is `SET LOCAL`: both end with the transaction, so a
    // pooled connection never carries one user's identity into the next request.
    // language=PostgreSQL
    sqlx::query("select set_config('role', $1, true), set_config('app.user_id', $2, true)")
        .bind(USER_ROLE)
        .bind(user_id.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}
