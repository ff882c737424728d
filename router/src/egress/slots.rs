//! Connections at once per workspace: a slot is taken for the life of each
//! connection and given back when it is dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use uuid::Uuid;

/// Open connections by workspace user.
#[derive(Clone, Default)]
pub struct Slots(Arc<Mutex<HashMap<Uuid, u32>>>);

/// One open connection; gives its slot back on drop.
pub struct Slot {
    slots: Slots,
    owner: Uuid,
}

impl Slots {
    /// A slot for `owner`, unless they already hold `max`.
    pub fn try_take(&self, owner: Uuid, max: u32) -> Option<Slot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(owner).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            owner,
        })
    }

    /// How many `owner` holds.
    pub fn open(&self, owner: Uuid) -> u32 {
        let open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&owner).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_owner_and_given_back() {
        let slots = Slots::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = slots.try_take(a, 2).expect("first");
        let _second = slots.try_take(a, 2).expect("second");
        assert!(slots.try_take(a, 2).is_none());
        assert!(slots.try_take(b, 2).is_some());
        drop(first);
        assert_eq!(slots.open(a), 1);
        assert!(slots.try_take(a, 2).is_some());
    }
}
