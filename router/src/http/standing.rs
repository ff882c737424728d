//! Which accounts this router found in good standing (neither disabled nor
//! deleted) a moment ago, so that a user's requests do not each read their
//! `users` row before their own query.
//!
//! An account is remembered for [`STANDING_TTL`] after a read found it in good
//! standing; only good standing is remembered, so a refused account is read
//! again on every request and an enabled one is let in at once. A disabled
//! account is forgotten at once on every router that hears `router admin
//! disable`'s `NOTIFY` (`sockets::DISABLED_CHANNEL`), and the socket sweep
//! forgets every connected account it finds cut off; a router that hears no
//! notification (it lost its listener, or a transaction pooler cannot listen)
//! refuses the account within [`STANDING_TTL`]. Endpoints that read the `users`
//! row anyway (`/api/me`, token refresh) check it there and refuse at once.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

/// How long an account found in good standing is let in without a read: the
/// socket sweep's period, the same bound on how late a missed notification is
/// noticed.
pub const STANDING_TTL: Duration = super::sockets::SWEEP_EVERY;

/// Past this many remembered accounts, expired ones are dropped on insertion.
const PRUNE_ABOVE: usize = 10_000;

/// Accounts found in good standing, with when.
#[derive(Default)]
pub struct Standing {
    good: Mutex<HashMap<Uuid, Instant>>,
}

impl Standing {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Instant>> {
        self.good.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `user` was found in good standing less than [`STANDING_TTL`] ago.
    pub fn is_good(&self, user: Uuid) -> bool {
        self.map()
            .get(&user)
            .is_some_and(|at| at.elapsed() < STANDING_TTL)
    }

    /// Notes that a read just found `user` in good standing.
    pub fn remember(&self, user: Uuid) {
        let mut good = self.map();
        if good.len() >= PRUNE_ABOVE {
            good.retain(|_, at| at.elapsed() < STANDING_TTL);
        }
        good.insert(user, Instant::now());
    }

    /// Forgets `user`: their next request reads their account again.
    pub fn forget(&self, user: Uuid) {
        self.map().remove(&user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_account_is_read_again_and_others_stay_remembered() {
        let standing = Standing::default();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(!standing.is_good(alice), "nothing is known before a read");
        standing.remember(alice);
        standing.remember(bob);
        assert!(standing.is_good(alice) && standing.is_good(bob));
        standing.forget(alice);
        assert!(!standing.is_good(alice));
        assert!(standing.is_good(bob));
    }
}
