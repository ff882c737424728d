//! The browser WebSockets open on this router, per user: the per-user cap
//! (`JARVIS_MAX_SOCKETS_PER_USER`) and cutting off an account that was disabled
//! or deleted while its sockets are open.
//!
//! The cap is per router, not global: what a socket costs (a task pair, buffers,
//! a file descriptor) is this process's, and counting it here needs no shared
//! state that a crashed replica would leave behind; behind N replicas a user
//! holds at most N × the cap, still a bound.
//!
//! Cut-off: `router admin disable` (another process, possibly another machine)
//! sends `NOTIFY` on [`DISABLED_CHANNEL`]; every router listens and closes that
//! user's sockets at once. Notifications are lost while a listener reconnects
//! (and a transaction-mode pooler cannot listen at all), so a sweep also checks
//! every connected user against `users` every [`SWEEP_EVERY`] — one query per
//! router, whatever the number of sockets.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The Postgres channel `router admin disable` notifies with the user's id.
pub const DISABLED_CHANNEL: &str = "jarvis_account_disabled";

/// How often the connected users are checked against `users`.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// The sockets of every user on this router.
#[derive(Default)]
pub struct Sockets {
    open: Mutex<HashMap<Uuid, HashMap<u64, CancellationToken>>>,
    next_id: AtomicU64,
    /// The accounts the API lets in without a read; a cut-off forgets one.
    pub standing: super::standing::Standing,
}

/// One open socket's place; freed when dropped.
pub struct SocketSlot {
    sockets: Arc<Sockets>,
    user: Uuid,
    id: u64,
    /// Cancelled when the socket must close (the account was cut off).
    pub cut_off: CancellationToken,
}

impl Sockets {
    fn open_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Uuid, HashMap<u64, CancellationToken>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place for one more socket of `user`; `None` when they hold `cap`.
    pub fn open(self: &Arc<Self>, user: Uuid, cap: usize) -> Option<SocketSlot> {
        let mut open = self.open_map();
        let mine = open.entry(user).or_default();
        if mine.len() >= cap {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cut_off = CancellationToken::new();
        mine.insert(id, cut_off.clone());
        Some(SocketSlot {
            sockets: self.clone(),
            user,
            id,
            cut_off,
        })
    }

    /// Sockets `user` has open on this router.
    pub fn count(&self, user: Uuid) -> usize {
        self.open_map().get(&user).map_or(0, HashMap::len)
    }

    /// Closes every socket of `user`, and makes the API read their account
    /// again on their next request; how many sockets there were.
    pub fn cut_off(&self, user: Uuid) -> usize {
        // First, so that whoever sees a socket close finds the API closed too.
        self.standing.forget(user);
        let open = self.open_map();
        let Some(mine) = open.get(&user) else {
            return 0;
        };
        for token in mine.values() {
            token.cancel();
        }
        mine.len()
    }

    fn users(&self) -> Vec<Uuid> {
        self.open_map().keys().copied().collect()
    }

    /// Closes the sockets of connected users who are disabled or gone.
    pub async fn sweep(&self, db: &PgPool) -> sqlx::Result<()> {
        let users = self.users();
        if users.is_empty() {
            return Ok(());
        }
        // language=PostgreSQL
        let gone: Vec<Uuid> = crate::db::query_scalar(
            "select u from unnest($1::uuid[]) as u
             where not exists (select 1 from users where id = u and disabled_at is null)",
        )
        .bind(&users)
        .fetch_all(db)
        .await?;
        for user in gone {
            let closed = self.cut_off(user);
            tracing::info!(user.id = %user, sockets = closed, "account cut off; sockets closed");
        }
        Ok(())
    }

    /// Listens for [`DISABLED_CHANNEL`] and sweeps every [`SWEEP_EVERY`], until
    /// the pool is closed.
    pub fn spawn_watch(self: &Arc<Self>, db: PgPool) {
        let sockets = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&db).await {
                Ok(mut l) => match l.listen(DISABLED_CHANNEL).await {
                    Ok(()) => Some(l),
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for disabled accounts; sweeping only");
                        None
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for disabled accounts; sweeping only");
                    None
                }
            };
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            loop {
                let notified = async {
                    match listener.as_mut() {
                        Some(l) => Some(l.try_recv().await),
                        None => std::future::pending().await,
                    }
                };
                let received = tokio::select! {
                    () = db.close_event() => return,
                    received = notified => received,
                    _ = sweep.tick() => None,
                };
                let Some(sockets) = sockets.upgrade() else {
                    return;
                };
                match received {
                    Some(Ok(Some(n))) => {
                        if let Ok(user) = n.payload().parse::<Uuid>() {
                            let closed = sockets.cut_off(user);
                            tracing::info!(user.id = %user, sockets = closed, "account disabled; sockets closed");
                        }
                    }
                    // The connection was lost (it reconnects at the next call):
                    // what was missed, the sweep finds.
                    Some(Ok(None)) => {}
                    Some(Err(error)) => {
                        tracing::warn!(%error, "listening for disabled accounts failed; sweeping only");
                        listener = None;
                    }
                    None => {
                        if let Err(error) = sockets.sweep(&db).await {
                            tracing::debug!(%error, "checking connected accounts failed");
                        }
                    }
                }
            }
        });
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.sockets.open_map();
        if let Some(mine) = open.get_mut(&self.user) {
            mine.remove(&self.id);
            if mine.is_empty() {
                open.remove(&self.user);
            }
        }
    }
}

/// Tells every router to close `user`'s sockets now (`router admin disable`).
pub async fn notify_disabled(db: &PgPool, user: Uuid) -> sqlx::Result<()> {
    // language=PostgreSQL
    crate::db::query("select pg_notify($1, $2)")
        .bind(DISABLED_CHANNEL)
        .bind(user.to_string())
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_open_sockets_and_a_cut_off_reaches_each() {
        let sockets = Arc::new(Sockets::default());
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = sockets.open(alice, 2).expect("first");
        let a2 = sockets.open(alice, 2).expect("second");
        assert!(sockets.open(alice, 2).is_none(), "third refused");
        let b1 = sockets.open(bob, 2).expect("bob has his own");
        drop(a1);
        let a3 = sockets.open(alice, 2).expect("a closed one frees a place");
        assert_eq!(sockets.cut_off(alice), 2);
        assert!(a2.cut_off.is_cancelled() && a3.cut_off.is_cancelled());
        assert!(!b1.cut_off.is_cancelled());
        drop((a2, a3));
        assert_eq!(sockets.count(alice), 0);
    }
}
