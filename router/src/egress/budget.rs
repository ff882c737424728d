//! The plan's bytes per month (`Plan::egress_bytes_per_month`): a running count
//! per workspace, in memory, seeded from `egress_connections` (the month's rows)
//! and kept by every connection's [`super::meter::Meter`] as bytes cross.
//!
//! A workspace at its limit has new connections refused (`byte_limit`), and a
//! connection that crosses it is closed at its next read or write upstream (at
//! most one buffer past the limit). The count is this router's: it is seeded
//! again from the database, which holds every replica's finished connections,
//! when the month changes and when it is older than [`RESEED_AFTER`] and the
//! workspace has no other connection open here (so none is counted twice).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

/// How long a seeded count is trusted before it is read again (when it can be).
pub const RESEED_AFTER: Duration = Duration::from_secs(60);

/// One workspace's bytes this month, and its plan's limit.
pub struct Budget {
    used: AtomicU64,
    limit: u64,
}

impl Budget {
    /// A count of `used` bytes against `limit`.
    pub fn new(used: u64, limit: u64) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(used),
            limit,
        })
    }

    /// Bytes counted this month.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The plan's limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether the limit is reached.
    pub fn spent(&self) -> bool {
        self.used() >= self.limit
    }

    /// Counts `n` more bytes.
    pub fn add(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }
}

struct Entry {
    month: (i32, u8),
    seeded: Instant,
    budget: Arc<Budget>,
}

/// The counts of every workspace that used the proxy here.
#[derive(Default)]
pub struct Budgets(Mutex<HashMap<Uuid, Entry>>);

fn this_month() -> (i32, u8) {
    let now = time::OffsetDateTime::now_utc();
    (now.year(), u8::from(now.month()))
}

impl Budgets {
    /// `owner`'s count against `limit`, read from the database when there is none
    /// yet, the month changed, or it is stale and `alone` (no other connection of
    /// the workspace open here).
    pub async fn get(
        &self,
        db: &sqlx::PgPool,
        owner: Uuid,
        limit: u64,
        alone: bool,
    ) -> sqlx::Result<Arc<Budget>> {
        let month = this_month();
        {
            let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = map.get(&owner)
                && entry.month == month
                && entry.budget.limit == limit
                && (!alone || entry.seeded.elapsed() < RESEED_AFTER)
            {
                return Ok(entry.budget.clone());
            }
        }
        let used = super::audit::month_bytes(db, owner).await?;
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Bytes counted here since (by a connection that began meanwhile) stay counted.
        let used = match map.get(&owner) {
            Some(entry) if entry.month == month && !alone => used.max(entry.budget.used()),
            _ => used,
        };
        let budget = Budget::new(used, limit);
        map.insert(
            owner,
            Entry {
                month,
                seeded: Instant::now(),
                budget: budget.clone(),
            },
        );
        Ok(budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_spent_at_its_limit() {
        let b = Budget::new(90, 100);
        assert!(!b.spent());
        b.add(10);
        assert!(b.spent());
        assert_eq!((b.used(), b.limit()), (100, 100));
    }
}
