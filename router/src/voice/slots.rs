//! Speech slots: how many syntheses run at once — at most
//! [`PARALLEL_SYNTHESES`](super::service::PARALLEL_SYNTHESES) in this router and
//! at most [`PER_USER`] of one user, so one user's burst of `speak` calls waits
//! in their own queue instead of holding every slot while others time out.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Syntheses one user may have running at once.
pub const PER_USER: usize = 1;

/// The router's speech slots.
pub struct Slots {
    all: Arc<Semaphore>,
    users: Arc<Mutex<HashMap<Uuid, Arc<Semaphore>>>>,
}

/// A slot held; released when dropped.
pub struct Slot {
    user: Uuid,
    users: Arc<Mutex<HashMap<Uuid, Arc<Semaphore>>>>,
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Slots {
    /// `parallel` slots in all.
    pub fn new(parallel: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(parallel)),
            users: Arc::default(),
        }
    }

    /// Waits for one of `user`'s slots, then for one of the router's.
    pub async fn acquire(&self, user: Uuid) -> Option<Slot> {
        let own = {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            users
                .entry(user)
                .or_insert_with(|| Arc::new(Semaphore::new(PER_USER)))
                .clone()
        };
        let mut slot = Slot {
            user,
            users: self.users.clone(),
            permits: None,
        };
        let own = own.acquire_owned().await.ok()?;
        let all = self.all.clone().acquire_owned().await.ok()?;
        slot.permits = Some((own, all));
        Some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.permits = None;
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        // Forget a user nobody holds or waits for (each holds a clone).
        if users
            .get(&self.user)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            users.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_user_holds_one_slot_and_others_still_get_theirs() {
        let slots = Slots::new(2);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let held = slots.acquire(alice).await.expect("slot");
        assert!(
            futures::FutureExt::now_or_never(slots.acquire(alice)).is_none(),
            "alice's second call waits for her first"
        );
        let bobs = slots.acquire(bob).await.expect("bob gets a slot");
        drop((held, bobs));
        assert!(slots.users.lock().expect("lock").is_empty());
        slots.acquire(alice).await.expect("free again");
    }
}
