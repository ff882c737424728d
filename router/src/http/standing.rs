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
//!
//! The model gateway remembers the same way what a workspace token's look-up
//! found (its user and their [`Account`]: plan, subscription, this month's
//! tokens, raised by each call that ends here), keyed by the token's digest, so a
//! turn's model calls after its first are forwarded without waiting on Postgres.
//! A remembered account only admits: whatever it would refuse is decided on a
//! fresh read. Only accounts that are not disabled are remembered, and only
//! for [`STANDING_TTL`]; forgetting a user forgets their tokens too. What that costs, said once here: for up to [`STANDING_TTL`]
//! this router may still forward a call on a token revoked a moment ago (its
//! workspace went to sleep or started anew: the sandbox that held it is being
//! stopped), for an account whose subscription lapsed a moment ago by a Stripe
//! event another router applied (one this router applies forgets the account
//! at once), or past a quota reached a moment ago by usage recorded elsewhere
//! (a quota was already only checked before a call, never during one, so calls
//! running at once could always pass it together).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::limits::Account;

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
    /// Workspace token digests, with their user, account and when they were read.
    tokens: Mutex<HashMap<Vec<u8>, RememberedToken>>,
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

    /// Forgets `user`: their next request reads their account again, and so
    /// does the next model call on any of their workspace tokens.
    pub fn forget(&self, user: Uuid) {
        self.map().remove(&user);
        self.token_map().retain(|_, token| token.owner != user);
    }

    fn token_map(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, RememberedToken>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remembered_token<T>(
        &self,
        digest: &[u8],
        what: impl FnOnce(&RememberedToken) -> Option<T>,
    ) -> Option<T> {
        self.token_map()
            .get(digest)
            .filter(|token| token.at.elapsed() < STANDING_TTL)
            .and_then(what)
    }

    /// The user and account a look-up of the workspace token with `digest`
    /// found less than [`STANDING_TTL`] ago (the gateway's look-up).
    pub fn token_account(&self, digest: &[u8]) -> Option<(Uuid, Account)> {
        self.remembered_token(digest, |token| Some((token.owner, token.account.clone())))
    }

    /// Counts `tokens` more this month in every account of `owner`'s remembered
    /// (a model call of theirs through this router ended).
    pub fn add_tokens(&self, owner: Uuid, tokens: u64) {
        for token in self.token_map().values_mut() {
            if token.owner == owner {
                token.account.tokens_this_month =
                    token.account.tokens_this_month.saturating_add(tokens);
            }
        }
    }

    /// Notes that the workspace token with `digest` is `owner`'s, whose account
    /// is `account`; a disabled account is not remembered.
    pub fn remember_token(&self, digest: Vec<u8>, owner: Uuid, account: &Account) {
        if account.disabled {
            return;
        }
        let mut tokens = self.token_map();
        if tokens.len() >= PRUNE_ABOVE {
            tokens.retain(|_, token| token.at.elapsed() < STANDING_TTL);
        }
        tokens.insert(
            digest,
            RememberedToken {
                owner,
                account: account.clone(),
                at: Instant::now(),
            },
        );
    }
}

/// What a look-up of one workspace token found, and when.
struct RememberedToken {
    owner: Uuid,
    account: Account,
    at: Instant,
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

    fn account(disabled: bool) -> Account {
        Account {
            tier: crate::plans::Tier::Free,
            disabled,
            subscription_active: false,
            subscription_status: None,
            tokens_this_month: 7,
            email_verified: true,
        }
    }

    #[test]
    fn a_token_is_remembered_until_its_user_is_forgotten_and_a_disabled_account_never() {
        let standing = Standing::default();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        standing.remember_token(b"alice-1".to_vec(), alice, &account(false));
        standing.remember_token(b"bob-1".to_vec(), bob, &account(false));
        standing.remember_token(b"bob-2".to_vec(), bob, &account(true));
        let (owner, found) = standing.token_account(b"alice-1").expect("remembered");
        assert_eq!((owner, found.tokens_this_month), (alice, 7));
        assert!(standing.token_account(b"bob-2").is_none(), "disabled");
        assert!(standing.token_account(b"dave").is_none(), "never read");
        standing.add_tokens(alice, 5);
        assert_eq!(
            standing
                .token_account(b"alice-1")
                .map(|(_, a)| a.tokens_this_month),
            Some(12),
            "a call's tokens count at once"
        );
        standing.forget(bob);
        assert!(standing.token_account(b"bob-1").is_none());
        assert!(standing.token_account(b"alice-1").is_some());
    }
}
