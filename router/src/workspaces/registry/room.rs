//! Room on this machine for a wake ([`crate::workspaces::capacity`]): a free slot,
//! else the one a workspace put to sleep for it frees.

use std::{sync::Arc, time::Duration};

use uuid::Uuid;

use super::{Registry, at_rest};
use crate::{
    proxy::Hub,
    workspaces::{
        Error, Result,
        capacity::{self, Capacity},
    },
};

/// How often a wake waiting for room looks for a workspace to put to sleep.
const ROOM_CHECK_EVERY: Duration = Duration::from_millis(250);

impl Registry {
    /// Takes a slot of the machine's room for `user`'s wake (a no-op without
    /// a limit): a free one, else the one a workspace put to sleep for it
    /// frees, else the first that frees within `capacity_wait`.
    pub(super) async fn make_room(&self, user: Uuid) -> Result<()> {
        let Some(capacity) = &self.capacity else {
            return Ok(());
        };
        if capacity.try_take(user) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        tracing::info!(
            max = capacity.max(),
            "every workspace slot is taken: making room"
        );
        let waited = tokio::time::timeout(self.capacity_wait, async {
            // Keeps its place in the queue across the rounds.
            let mut slot = std::pin::pin!(capacity.take(user));
            let mut evicting: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                if evicting.as_ref().is_none_or(|e| e.is_finished()) {
                    evicting = self.put_one_to_sleep(user, capacity);
                }
                tokio::select! {
                    () = &mut slot => return,
                    () = tokio::time::sleep(ROOM_CHECK_EVERY) => {}
                }
            }
        })
        .await;
        crate::metrics::capacity_waited(started.elapsed());
        match waited {
            Ok(()) => Ok(()),
            Err(_) => {
                // A slot granted as the wait ended is not kept.
                capacity.release(user);
                Err(Error::AtCapacity)
            }
        }
    }

    /// Starts putting to sleep the awake workspace [`capacity::choose`] names
    /// (never `waking`'s) for a wake that finds no room.
    fn put_one_to_sleep(
        &self,
        waking: Uuid,
        capacity: &Capacity,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let hubs: Vec<Arc<Hub>> = self
            .hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|h| h.user != waking && capacity.holds(h.user))
            .cloned()
            .collect();
        let reaping = self.lock_reaping().clone();
        let candidates: Vec<capacity::Candidate> = hubs
            .iter()
            .map(|hub| capacity::Candidate {
                user: hub.user,
                at_rest: at_rest(hub) && !reaping.contains(&hub.user),
                connections: hub.connections(),
                idle: hub.last_activity().elapsed(),
            })
            .collect();
        let chosen = capacity::choose(&candidates)?;
        let hub = hubs.into_iter().find(|h| h.user == chosen)?;
        tracing::info!(user.id = %chosen, "putting the least recently used workspace to sleep to make room");
        crate::metrics::workspace_evicted();
        self.spawn_sleep(hub, |hub| {
            at_rest(hub) && hub.last_activity().elapsed() >= capacity::MIN_IDLE
        })
    }

    /// Frees `user`'s slot of the machine's room (their sandbox stopped).
    pub(super) fn free_room(&self, user: Uuid) {
        if let Some(capacity) = &self.capacity {
            capacity.release(user);
        }
    }
}
