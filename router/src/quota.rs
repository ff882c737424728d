//! The plan's storage quota (`storage_bytes` in `plans`): every byte stored for
//! a user counts, whoever wrote it — uploads, the files the agent wrote in its
//! workspace (pushed by a sandbox or saved by the router), spoken answers, the
//! agent's state archive and the documents it saved.
//!
//! [`room`] reads what is used (`files` rows of every kind, documents' content and
//! the state archive's object) against the user's plan; the writers ask it before
//! they store and refuse or skip what does not fit ([`Room::fits`]). Nothing here
//! stores or deletes.

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    plans::{Plans, Tier},
    storage::{Storage, StorageError},
};

/// Why the quota could not be read.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// Storage failed (reading the state archive's size).
    #[error("storage error")]
    Storage(#[from] StorageError),
}

/// A user's storage: their plan's quota and what they use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    /// The plan's quota in bytes; `None` is unlimited.
    pub quota: Option<u64>,
    /// Bytes stored now.
    pub used: u64,
}

impl Room {
    /// Bytes that may still be stored; `None` is unlimited.
    pub fn left(&self) -> Option<u64> {
        self.quota.map(|q| q.saturating_sub(self.used))
    }

    /// Whether `more` bytes fit, when `replacing` bytes of what is stored go.
    pub fn fits(&self, more: u64, replacing: u64) -> bool {
        self.quota
            .is_none_or(|q| self.used.saturating_sub(replacing).saturating_add(more) <= q)
    }

    /// What people are told when something does not fit.
    pub fn full_message(&self) -> String {
        match self.quota {
            Some(q) => format!(
                "your plan keeps at most {q} bytes of files and {} are stored; delete some files or change plan",
                self.used
            ),
            None => "this does not fit in your storage".into(),
        }
    }
}

/// `user`'s plan quota and the bytes they store now (see the module docs). A
/// user without a row has the free plan's quota. With an unlimited quota nothing
/// is compared against `used`, so the state archive's size is not asked of
/// storage (a request to the store saved on every sync of such a user).
pub async fn room(
    db: &PgPool,
    storage: &Storage,
    plans: &Plans,
    user: Uuid,
) -> Result<Room, QuotaError> {
    let (tier, rows) = in_rows(db, user).await?;
    let quota = plans.get(tier).storage_bytes;
    let used = match quota {
        Some(_) => rows.saturating_add(state_bytes(storage, user).await?),
        None => rows,
    };
    Ok(Room { quota, used })
}

/// `user`'s tier and the bytes they store now, every kind counted. `db` is the
/// pool or the caller's own transaction (never the pool while holding one: at
/// most one connection per request, or a full pool deadlocks).
pub async fn used<'c>(
    db: impl Into<crate::db::Target<'c>>,
    storage: &Storage,
    user: Uuid,
) -> Result<(Tier, u64), QuotaError> {
    let (tier, rows) = in_rows(db, user).await?;
    Ok((tier, rows.saturating_add(state_bytes(storage, user).await?)))
}

/// `user`'s tier and the bytes of their `files` rows and documents.
async fn in_rows<'c>(
    db: impl Into<crate::db::Target<'c>>,
    user: Uuid,
) -> Result<(Tier, u64), QuotaError> {
    // language=PostgreSQL
    let row: Option<(String, i64)> = crate::db::query_as(
        "select u.tier,
                (coalesce((select sum(size) from files where owner_id = u.id), 0)
                 + coalesce((select sum(octet_length(content)) from documents where owner_id = u.id), 0))::bigint
         from users u where u.id = $1",
    )
    .bind(user)
    .fetch_optional(db)
    .await?;
    let (tier, rows) = row.map_or((Tier::Free, 0), |(t, used)| (Tier::parse(&t), used));
    Ok((tier, u64::try_from(rows).unwrap_or(0)))
}

/// The size of `user`'s stored agent-state archive (0 when there is none).
async fn state_bytes(storage: &Storage, user: Uuid) -> Result<u64, QuotaError> {
    Ok(storage
        .head(&crate::sync::state_key(user))
        .await?
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_fits_counts_what_it_replaces() {
        let room = Room {
            quota: Some(100),
            used: 90,
        };
        assert_eq!(room.left(), Some(10));
        assert!(room.fits(10, 0));
        assert!(!room.fits(11, 0));
        assert!(room.fits(50, 40));
        let unlimited = Room {
            quota: None,
            used: u64::MAX,
        };
        assert!(unlimited.fits(u64::MAX, 0));
        assert_eq!(unlimited.left(), None);
    }
}
