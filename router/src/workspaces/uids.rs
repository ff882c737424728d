//! Host uids of local sandboxes: one per workspace, for good.
//!
//! The uid is kept in `workspaces.host_uid` (Postgres, not this machine's disk:
//! the row already exists per workspace, the unique constraint makes two routers
//! allocating at once safe, and it survives a router restart or a rebuilt data
//! directory). It is allocated on first use from the range `JARVIS_SANDBOX_UIDS`
//! names: the next uid above the highest one given, else the lowest free one. A
//! stored uid outside the range (the operator moved it) is replaced; the local
//! backend hands the workspace's files to the new one on wake.
//!
//! A warm pool slot (an unassigned sandbox, `local.rs`) reserves a uid of the
//! same range in `warm_slots` (migration 0015) until a workspace claims it:
//! [`claim_slot`] then makes it the workspace's. Allocations skip reserved uids.

use sqlx::PgPool;
use uuid::Uuid;

use crate::config::UidRange;

/// Why no uid could be had.
#[derive(Debug, thiserror::Error)]
pub enum UidError {
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// Every uid of the range is taken.
    #[error("every host uid of JARVIS_SANDBOX_UIDS ({}-{}) is taken; widen the range", .0.first, .0.last)]
    Full(UidRange),
}

/// The transaction-scoped advisory lock every allocation of a uid (to a
/// workspace or a warm slot) holds: allocations on every router take turns, so
/// fifty first wakes at once each get a uid at the first try, where racing for
/// the same free uid made all but one try again (and, past a few tries, fail).
/// Transaction-scoped, so a transaction pooler never keeps it.
const ALLOCATION_LOCK: &str = "select pg_advisory_xact_lock(hashtext('jarvis.host_uid'))";

/// The host uid of `user`'s workspace, allocated from `range` on first use.
pub async fn of_workspace(db: &PgPool, user: Uuid, range: UidRange) -> Result<u32, UidError> {
    let (first, last) = (i64::from(range.first), i64::from(range.last));
    // language=PostgreSQL
    let given = "select host_uid from workspaces where owner_id = $1";
    let valid = |stored: Option<Option<i64>>| {
        stored
            .flatten()
            .and_then(|uid| u32::try_from(uid).ok())
            .filter(|uid| range.contains(*uid))
    };
    // Most wakes find their uid: no lock for them.
    if let Some(uid) = valid(
        crate::db::query_scalar(given)
            .bind(user)
            .fetch_optional(db)
            .await?,
    ) {
        return Ok(uid);
    }
    let mut tx = db.begin().await?;
    crate::db::query(ALLOCATION_LOCK).execute(&mut tx).await?;
    // Another router may have given this workspace one while we waited.
    if let Some(uid) = valid(
        crate::db::query_scalar(given)
            .bind(user)
            .fetch_optional(&mut tx)
            .await?,
    ) {
        tx.commit().await?;
        return Ok(uid);
    }
    let Some(candidate) = free_uid(&mut tx, first, last).await? else {
        return Err(UidError::Full(range));
    };
    // language=PostgreSQL
    crate::db::query(
        "insert into workspaces (owner_id, host_uid) values ($1, $2)
         on conflict (owner_id) do update set host_uid = excluded.host_uid",
    )
    .bind(user)
    .bind(candidate)
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    u32::try_from(candidate).map_err(|_| UidError::Full(range))
}

/// Reserves a uid of `range` for a warm pool slot (no workspace has it):
/// the highest free one, so slots (from the top of the range down) and
/// workspaces (from the bottom up) rarely want the same uid; both allocate under
/// [`ALLOCATION_LOCK`], so they never get the same one.
pub async fn reserve_slot(db: &PgPool, range: UidRange) -> Result<u32, UidError> {
    let (first, last) = (i64::from(range.first), i64::from(range.last));
    let mut tx = db.begin().await?;
    crate::db::query(ALLOCATION_LOCK).execute(&mut tx).await?;
    // language=PostgreSQL
    let candidate: Option<i64> = crate::db::query_scalar(
        "select g from generate_series($2::bigint, $1::bigint, -1) g
         where not exists (select 1 from workspaces where host_uid = g)
           and not exists (select 1 from warm_slots where host_uid = g)
         limit 1",
    )
    .bind(first)
    .bind(last)
    .fetch_optional(&mut tx)
    .await?;
    let Some(candidate) = candidate else {
        return Err(UidError::Full(range));
    };
    // language=PostgreSQL
    crate::db::query("insert into warm_slots (host_uid) values ($1)")
        .bind(candidate)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    u32::try_from(candidate).map_err(|_| UidError::Full(range))
}

/// Frees the uid a warm pool slot reserved (the slot is gone unclaimed).
pub async fn release_slot(db: &PgPool, uid: u32) -> Result<(), UidError> {
    // language=PostgreSQL
    crate::db::query("delete from warm_slots where host_uid = $1")
        .bind(i64::from(uid))
        .execute(db)
        .await?;
    Ok(())
}

/// Makes the uid slot `uid` reserved `user`'s workspace's and `token` (from
/// [`tokens::generate`](super::tokens::generate)) its workspace token, in one
/// statement; `false` when the slot holds no reservation (nothing changed, the
/// previous token included).
pub async fn claim_slot(db: &PgPool, user: Uuid, uid: u32, token: &str) -> Result<bool, UidError> {
    // language=PostgreSQL
    let done = crate::db::query(
        "with freed as (delete from warm_slots where host_uid = $2 returning host_uid)
         insert into workspaces (owner_id, host_uid, token_hash) select $1, host_uid, $3 from freed
         on conflict (owner_id) do update
         set host_uid = excluded.host_uid, token_hash = excluded.token_hash",
    )
    .bind(user)
    .bind(i64::from(uid))
    .bind(super::tokens::digest(token))
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A uid of `first..=last` no workspace has and no warm slot reserved: above the
/// highest given, else the lowest gap.
async fn free_uid(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    first: i64,
    last: i64,
) -> sqlx::Result<Option<i64>> {
    // language=PostgreSQL
    let next: Option<i64> = crate::db::query_scalar(
        "select n from (
             select coalesce(max(host_uid) + 1, $1) n from workspaces
             where host_uid between $1 and $2
         ) m
         where n <= $2 and not exists (select 1 from warm_slots where host_uid = n)",
    )
    .bind(first)
    .bind(last)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(next) = next {
        return Ok(Some(next));
    }
    // language=PostgreSQL
    crate::db::query_scalar(
        "select g from generate_series($1::bigint, $2::bigint) g
         where not exists (select 1 from workspaces where host_uid = g)
           and not exists (select 1 from warm_slots where host_uid = g)
         limit 1",
    )
    .bind(first)
    .bind(last)
    .fetch_optional(&mut **tx)
    .await
}

/// The uids of `range` that `passwd` (the text of `/etc/passwd`) gives to a user:
/// a sandbox must never run as one of them.
pub fn users_in_range(passwd: &str, range: UidRange) -> Vec<String> {
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid: u32 = fields.nth(1)?.parse().ok()?;
            range.contains(uid).then(|| format!("{name} ({uid})"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_users_in_the_range_are_found() {
        let passwd = "root:x:0:0::/root:/bin/bash\njarvis-sandbox:x:999:995::/home/j:/bin/sh\nalice:x:1500:1500::/home/a:/bin/sh\nbroken line\n";
        let range = UidRange {
            first: 1000,
            last: 2000,
        };
        assert_eq!(users_in_range(passwd, range), ["alice (1500)"]);
        let range = UidRange {
            first: 1_900_000_000,
            last: 1_900_999_999,
        };
        assert!(users_in_range(passwd, range).is_empty());
    }
}
