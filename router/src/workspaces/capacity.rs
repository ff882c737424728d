//! How many workspaces may be awake at once on this machine (local backend,
//! `JARVIS_MAX_WORKSPACES`): memory per active user is a machine's capacity
//! (a CLI costs about 190 MB), so past it a wake must not start another
//! sandbox. It takes a slot instead; with none free, the registry puts the
//! workspace [`choose`] names to sleep (the least recently active one that is
//! idle) and the wake takes the slot that frees, in the order wakes asked.
//!
//! A slot is held from the start of a wake to the end of the sandbox's stop
//! (its files are stored after: that needs no room). Warm pool sandboxes hold
//! none: the default leaves room for them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// A workspace woken (or used) less than this long ago is never put to sleep
/// to make room: its user's message may be on its way to it.
pub const MIN_IDLE: Duration = Duration::from_secs(5);

/// Memory counted per awake workspace by the default limit.
const MEMORY_PER_WORKSPACE: u64 = 256 * 1024 * 1024;

/// The slots of awake workspaces.
pub struct Capacity {
    slots: Arc<Semaphore>,
    max: usize,
    held: Mutex<HashMap<Uuid, OwnedSemaphorePermit>>,
}

impl Capacity {
    /// Room for `max` awake workspaces.
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            held: Mutex::default(),
        }
    }

    /// The most workspaces awake at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Workspaces holding a slot now.
    pub fn awake(&self) -> usize {
        self.lock().len()
    }

    /// Whether `user`'s workspace holds a slot.
    pub fn holds(&self, user: Uuid) -> bool {
        self.lock().contains_key(&user)
    }

    /// Takes a slot for `user` if one is free (or theirs already).
    pub fn try_take(&self, user: Uuid) -> bool {
        let mut held = self.lock();
        if held.contains_key(&user) {
            return true;
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                held.insert(user, permit);
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for a slot for `user`, in the order wakes asked for one.
    pub async fn take(&self, user: Uuid) {
        if self.try_take(user) {
            return;
        }
        // The semaphore is never closed.
        if let Ok(permit) = self.slots.clone().acquire_owned().await {
            self.lock().entry(user).or_insert(permit);
        }
    }

    /// Frees `user`'s slot (their sandbox stopped, or never started).
    pub fn release(&self, user: Uuid) {
        self.lock().remove(&user);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, OwnedSemaphorePermit>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The limit `JARVIS_MAX_WORKSPACES` asks for: `Some(0)` is none; unset, one
/// workspace per 256 MiB of `memory` bytes less the `warm_pool`'s sandboxes,
/// at least 1.
pub fn limit(configured: Option<usize>, memory: Option<u64>, warm_pool: usize) -> Option<usize> {
    match configured {
        Some(0) => None,
        Some(max) => Some(max),
        None => {
            let by_memory = memory.map_or(usize::MAX, |bytes| {
                usize::try_from(bytes / MEMORY_PER_WORKSPACE).unwrap_or(usize::MAX)
            });
            if by_memory == usize::MAX {
                return None;
            }
            Some(by_memory.saturating_sub(warm_pool).max(1))
        }
    }
}

/// This machine's memory in bytes (`MemTotal` of `/proc/meminfo`), if known.
pub fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    mem_total(&meminfo)
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What the choice knows of an awake workspace.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Whose.
    pub user: Uuid,
    /// Ready, no turn running, no sleep of it under way.
    pub at_rest: bool,
    /// Browser connections to it on this router.
    pub connections: usize,
    /// Since its last activity.
    pub idle: Duration,
}

/// The workspace to put to sleep to make room: one at rest and idle for at
/// least [`MIN_IDLE`]; of those, one nobody has open before one a browser
/// shows, the longest idle first. `None`: every workspace is in use.
pub fn choose(candidates: &[Candidate]) -> Option<Uuid> {
    candidates
        .iter()
        .filter(|c| c.at_rest && c.idle >= MIN_IDLE)
        .min_by_key(|c| (c.connections > 0, std::cmp::Reverse(c.idle)))
        .map(|c| c.user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(n: u128, at_rest: bool, connections: usize, idle_s: u64) -> Candidate {
        Candidate {
            user: Uuid::from_u128(n),
            at_rest,
            connections,
            idle: Duration::from_secs(idle_s),
        }
    }

    #[test]
    fn the_longest_idle_workspace_nobody_has_open_goes_first() {
        let chosen = choose(&[
            candidate(1, true, 1, 600),
            candidate(2, true, 0, 30),
            candidate(3, true, 0, 90),
            candidate(4, false, 0, 900),
        ]);
        assert_eq!(chosen, Some(Uuid::from_u128(3)));
    }

    #[test]
    fn an_open_workspace_goes_when_every_other_is_busy() {
        let chosen = choose(&[
            candidate(1, true, 2, 60),
            candidate(2, false, 0, 600),
            candidate(3, true, 1, 120),
        ]);
        assert_eq!(chosen, Some(Uuid::from_u128(3)));
    }

    #[test]
    fn busy_or_just_used_workspaces_are_never_chosen() {
        assert_eq!(
            choose(&[candidate(1, false, 0, 600), candidate(2, true, 0, 2)]),
            None
        );
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn the_default_limit_follows_the_memory_less_the_pool() {
        let gib = 1024 * 1024 * 1024;
        assert_eq!(limit(None, Some(24 * gib), 0), Some(96));
        assert_eq!(limit(None, Some(24 * gib), 6), Some(90));
        assert_eq!(limit(None, Some(gib / 8), 0), Some(1));
        assert_eq!(limit(None, None, 0), None);
        assert_eq!(limit(Some(0), Some(gib), 0), None);
        assert_eq!(limit(Some(7), Some(gib), 3), Some(7));
        assert_eq!(
            mem_total("MemTotal:       24557592 kB\nMemFree: 1 kB\n"),
            Some(24_557_592 * 1024)
        );
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }

    #[tokio::test]
    async fn a_slot_goes_to_the_first_wake_that_waits_for_it() {
        let capacity = Arc::new(Capacity::new(1));
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert!(capacity.try_take(a));
        assert!(
            capacity.try_take(a),
            "a wake of the same workspace needs no second slot"
        );
        assert!(!capacity.try_take(b));
        let first = tokio::spawn({
            let capacity = capacity.clone();
            async move { capacity.take(b).await }
        });
        tokio::task::yield_now().await;
        let second = tokio::spawn({
            let capacity = capacity.clone();
            async move { capacity.take(c).await }
        });
        tokio::task::yield_now().await;
        capacity.release(a);
        first.await.expect("b's wait ends");
        assert!(capacity.holds(b) && !capacity.holds(c));
        assert_eq!(capacity.awake(), 1);
        capacity.release(b);
        second.await.expect("c's wait ends");
        assert!(capacity.holds(c));
    }
}
