//! The browser's approval prompt: a connection to a host outside the lists waits
//! while the user is asked (allow once / always for this workspace / deny).
//!
//! The router holding the connection writes an `egress_requests` row (`pending`,
//! expiring after `JARVIS_EGRESS_APPROVAL_TIMEOUT`), sends
//! `{"type":"egress_request","id","host","port","expires_in_ms"}` to every tab of the
//! user on this router, and `NOTIFY`s [`CHANNEL`] so every other replica sends it
//! to the user's tabs there (and marks the row `shown_at`). A tab answers with
//! `{"type":"egress_decision","id","decision":"once"|"always"|"deny"}` on whichever
//! replica it is connected to: [`Asker::decide`] sets the row's status (only a
//! `pending`, unexpired row of that same user: row-level security and the query
//! both say so), stores `always` and `deny` as the workspace's approvals
//! ([`super::audit::set_approval`]), and `NOTIFY`s. The holding router wakes on
//! the notification, or finds the status when it next reads the row (every
//! [`POLL_EVERY`]: notifications are lost while a listener reconnects, and a
//! transaction pooler cannot listen at all).
//!
//! No browser shown the question within [`SHOWN_GRACE`] (none open, on any
//! replica) ends it at once as `unseen`; no answer in time ends it as `expired`;
//! either way the connection is refused with a sentence naming the host. Every
//! end sends `{"type":"egress_resolved","id","decision"}` to the user's tabs, so
//! the prompt goes from every one of them.
//!
//! Connections of one workspace to the same host and port while a question is
//! open share it (pip opens several at once): one prompt, one answer for all of
//! them. `once` admits the connections waiting on that question only; the next
//! one asks again.
//!
//! A tab that connects while a question is open is sent it ([`Asker::pending`]).
//! Without `LISTEN` (a pooler and no `DATABASE_DIRECT_URL`) the question reaches
//! the tabs of the holding router only.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::policy::{DEFAULT_PORTS, Pattern};
use crate::metrics::{EgressPromptLabels, Metrics};

/// The Postgres channel questions and answers are announced on.
pub const CHANNEL: &str = "jarvis_egress";

/// How often the holding router reads its question's row.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// How long a question may go unseen by any browser before it is given up.
pub const SHOWN_GRACE: Duration = Duration::from_secs(2);

/// A user's browser tabs on this router.
pub trait Browsers: Send + Sync {
    /// Sends `frame` to every tab of `user` on this router; returns how many.
    fn send(&self, user: Uuid, frame: &Arc<str>) -> usize;
}

/// The user's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// This connection (and those waiting on the same question) only.
    Once,
    /// This host, from now on, for the workspace.
    Always,
    /// Refused, from now on.
    Deny,
}

impl Answer {
    /// The stored and sent name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Once => "once",
            Self::Always => "always",
            Self::Deny => "deny",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "once" => Some(Self::Once),
            "always" => Some(Self::Always),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }
}

/// How a question ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The user answered.
    Answered(Answer),
    /// No answer within the timeout.
    Expired,
    /// No browser of the user was open to ask.
    Unseen,
    /// The question could not be stored (the database).
    Unavailable,
}

impl Outcome {
    /// The name stored in `egress_requests.status` and sent in `egress_resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered(answer) => answer.as_str(),
            Self::Expired => "expired",
            Self::Unseen => "unseen",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Why a browser's answer changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No open question of this user has that id (unknown, answered, expired).
    #[error("no open network request has this id: it was answered, it expired, or it is not yours")]
    Unknown,
    /// The database.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What is announced on [`CHANNEL`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Note {
    /// A question was asked by router `from`.
    Ask {
        from: Uuid,
        id: Uuid,
        owner: Uuid,
        host: String,
        port: u16,
        expires_in_ms: u64,
    },
    /// A question ended (answered by a browser of router `from`, or given up).
    Resolved {
        from: Uuid,
        id: Uuid,
        owner: Uuid,
        decision: String,
    },
}

type Key = (Uuid, String, u16);

/// The questions of this router, and the answers it relays.
pub struct Asker {
    db: PgPool,
    metrics: Arc<Metrics>,
    browsers: Arc<dyn Browsers>,
    timeout: Duration,
    /// This router, in [`Note`]s: its own announcements are not relayed twice.
    me: Uuid,
    /// Questions held here, by id: woken when an answer is announced.
    held: Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Open questions by workspace, host and port: later connections join them.
    open: Mutex<HashMap<Key, watch::Receiver<Option<Outcome>>>>,
}

/// The frame asking the user.
fn request_frame(id: Uuid, host: &str, port: u16, expires_in_ms: u64) -> Arc<str> {
    json!({"type": "egress_request", "id": id, "host": host, "port": port, "expires_in_ms": expires_in_ms})
        .to_string()
        .into()
}

/// The frame saying a question ended.
fn resolved_frame(id: Uuid, decision: &str) -> Arc<str> {
    json!({"type": "egress_resolved", "id": id, "decision": decision})
        .to_string()
        .into()
}

/// The approval an `always` or `deny` stores: the host (ports 80 and 443 when
/// allowed, every port when denied) when asked about 80 or 443, else `host:port`.
pub fn approval_pattern(host: &str, port: u16) -> Option<Pattern> {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let text = if DEFAULT_PORTS.contains(&port) {
        host
    } else {
        format!("{host}:{port}")
    };
    Pattern::parse(&text).ok()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Asker {
    /// An asker over `db` reaching the user's tabs through `browsers`; a question
    /// waits `timeout` for its answer.
    pub fn new(
        db: PgPool,
        metrics: Arc<Metrics>,
        browsers: Arc<dyn Browsers>,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            metrics,
            browsers,
            timeout,
            me: Uuid::new_v4(),
            held: Mutex::default(),
            open: Mutex::default(),
        })
    }

    /// How long a question waits.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks `owner` whether their workspace may reach `host:port`, joining the
    /// question already open about it. Bounded by the timeout (and a little).
    pub async fn ask(self: &Arc<Self>, owner: Uuid, host: &str, port: u16) -> Outcome {
        let key: Key = (owner, host.to_string(), port);
        let mut rx = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    open.insert(key.clone(), rx.clone());
                    // Its own task: the question runs to its end even if this
                    // connection goes, for the others that joined it.
                    let asker = self.clone();
                    tokio::spawn(async move {
                        let outcome = asker.ask_once(owner, &key.1, key.2).await;
                        asker
                            .open
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&key);
                        tx.send_replace(Some(outcome));
                    });
                    rx
                }
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(outcome) => (*outcome).unwrap_or(Outcome::Unavailable),
            Err(_) => Outcome::Unavailable,
        }
    }

    async fn ask_once(&self, owner: Uuid, host: &str, port: u16) -> Outcome {
        let id = Uuid::new_v4();
        let wake = Arc::new(Notify::new());
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, wake.clone());
        let outcome = self.wait(id, &wake, owner, host, port).await;
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.metrics
            .egress_prompts
            .get_or_create(&EgressPromptLabels {
                outcome: outcome.as_str().to_string(),
            })
            .inc();
        tracing::info!(%owner, host, port, outcome = outcome.as_str(), "egress question ended");
        outcome
    }

    async fn wait(&self, id: Uuid, wake: &Notify, owner: Uuid, host: &str, port: u16) -> Outcome {
        let expires_in_ms = millis(self.timeout);
        if let Err(error) = self.insert(id, owner, host, port).await {
            tracing::error!(%error, "storing an egress question");
            return Outcome::Unavailable;
        }
        let frame = request_frame(id, host, port, expires_in_ms);
        let mut shown = self.browsers.send(owner, &frame) > 0;
        self.announce(&Note::Ask {
            from: self.me,
            id,
            owner,
            host: host.to_string(),
            port,
            expires_in_ms,
        })
        .await;
        let start = tokio::time::Instant::now();
        let deadline = start + self.timeout;
        let grace = start + SHOWN_GRACE;
        let given_up = loop {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL_EVERY) => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            match self.read(id, owner).await {
                Ok(Some((status, seen))) => {
                    if let Some(answer) = Answer::parse(&status) {
                        // The replica that took the answer told the tabs.
                        return Outcome::Answered(answer);
                    }
                    if status != "pending" {
                        break Outcome::Expired;
                    }
                    shown |= seen;
                }
                Ok(None) => break Outcome::Unavailable,
                Err(error) => tracing::warn!(%error, "reading an egress question"),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break Outcome::Expired;
            }
            if !shown && now >= grace {
                break Outcome::Unseen;
            }
        };
        // An answer may have come between the read and now: it wins.
        match self.give_up(id, owner, given_up).await {
            Ok(true) => {}
            Ok(false) => {
                if let Ok(Some((status, _))) = self.read(id, owner).await
                    && let Some(answer) = Answer::parse(&status)
                {
                    return Outcome::Answered(answer);
                }
            }
            Err(error) => tracing::warn!(%error, "closing an egress question"),
        }
        self.tell_resolved(id, owner, given_up.as_str()).await;
        given_up
    }

    async fn insert(&self, id: Uuid, owner: Uuid, host: &str, port: u16) -> sqlx::Result<()> {
        let mut tx = crate::db::user_tx(&self.db, owner).await?;
        // Questions a week old tell nobody anything any more.
        // language=PostgreSQL
        crate::db::query(
            "delete from egress_requests
             where owner_id = $1 and created_at < now() - interval '7 days'",
        )
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        // language=PostgreSQL
        crate::db::query(
            "insert into egress_requests (id, owner_id, host, port, expires_at)
             values ($1, $2, $3, $4, now() + $5::float8 * interval '1 millisecond')",
        )
        .bind(id)
        .bind(owner)
        .bind(host)
        .bind(i32::from(port))
        .bind(i64::try_from(millis(self.timeout)).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// The question's status and whether a browser was shown it.
    async fn read(&self, id: Uuid, owner: Uuid) -> sqlx::Result<Option<(String, bool)>> {
        let mut tx = crate::db::user_tx(&self.db, owner).await?;
        // language=PostgreSQL
        let row: Option<(String, bool)> = crate::db::query_as(
            "select status, shown_at is not null from egress_requests
             where id = $1 and owner_id = $2",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Ends a pending question as `outcome`; `false` when it was no longer pending.
    async fn give_up(&self, id: Uuid, owner: Uuid, outcome: Outcome) -> sqlx::Result<bool> {
        let status = match outcome {
            Outcome::Unseen => "unseen",
            _ => "expired",
        };
        let mut tx = crate::db::user_tx(&self.db, owner).await?;
        // language=PostgreSQL
        let done = crate::db::query(
            "update egress_requests set status = $3, decided_at = now()
             where id = $1 and owner_id = $2 and status = 'pending'",
        )
        .bind(id)
        .bind(owner)
        .bind(status)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notes that a browser was shown the question.
    async fn mark_shown(&self, id: Uuid, owner: Uuid) -> sqlx::Result<()> {
        let mut tx = crate::db::user_tx(&self.db, owner).await?;
        // language=PostgreSQL
        crate::db::query(
            "update egress_requests set shown_at = now()
             where id = $1 and owner_id = $2 and shown_at is null",
        )
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// `user`'s browser answers question `id`.
    pub async fn decide(&self, user: Uuid, id: Uuid, answer: Answer) -> Result<(), DecideError> {
        let mut tx = crate::db::user_tx(&self.db, user).await?;
        // language=PostgreSQL
        let asked: Option<(String, i32)> = crate::db::query_as(
            "update egress_requests set status = $3, decided_at = now()
             where id = $1 and owner_id = $2 and status = 'pending' and expires_at > now()
             returning host, port",
        )
        .bind(id)
        .bind(user)
        .bind(answer.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((host, port)) = asked else {
            return Err(DecideError::Unknown);
        };
        if answer != Answer::Once {
            let pattern = u16::try_from(port)
                .ok()
                .and_then(|port| approval_pattern(&host, port));
            if let Some(pattern) = pattern {
                super::audit::set_approval_in(&mut tx, user, &pattern, answer == Answer::Always)
                    .await?;
            }
        }
        tx.commit().await?;
        tracing::info!(%user, host, port, decision = answer.as_str(), "egress question answered");
        self.tell_resolved(id, user, answer.as_str()).await;
        Ok(())
    }

    /// Tells this router's holder and tabs, then every other replica.
    async fn tell_resolved(&self, id: Uuid, owner: Uuid, decision: &str) {
        self.on_resolved(id, owner, decision);
        self.announce(&Note::Resolved {
            from: self.me,
            id,
            owner,
            decision: decision.to_string(),
        })
        .await;
    }

    fn on_resolved(&self, id: Uuid, owner: Uuid, decision: &str) {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        if let Some(wake) = held {
            wake.notify_one();
        }
        self.browsers.send(owner, &resolved_frame(id, decision));
    }

    async fn announce(&self, note: &Note) {
        let Ok(payload) = serde_json::to_string(note) else {
            return;
        };
        // language=PostgreSQL
        let sent = crate::db::query("select pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.db)
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, "announcing an egress question");
        }
    }

    /// Handles one announcement of another replica.
    async fn on_note(&self, note: Note) {
        match note {
            Note::Ask {
                from,
                id,
                owner,
                host,
                port,
                expires_in_ms,
            } if from != self.me => {
                let frame = request_frame(id, &host, port, expires_in_ms);
                if self.browsers.send(owner, &frame) > 0
                    && let Err(error) = self.mark_shown(id, owner).await
                {
                    tracing::warn!(%error, "noting an egress question shown");
                }
            }
            Note::Resolved {
                from,
                id,
                owner,
                decision,
            } if from != self.me => self.on_resolved(id, owner, &decision),
            _ => {}
        }
    }

    /// The questions of `user` open now, as frames for a tab that just connected
    /// (noted as shown).
    pub async fn pending(&self, user: Uuid) -> Vec<Arc<str>> {
        let rows = async {
            let mut tx = crate::db::user_tx(&self.db, user).await?;
            // language=PostgreSQL
            let rows: Vec<(Uuid, String, i32, i64)> = crate::db::query_as(
                "update egress_requests set shown_at = coalesce(shown_at, now())
                 where owner_id = $1 and status = 'pending' and expires_at > now()
                 returning id, host, port,
                     (extract(epoch from expires_at - now()) * 1000)::bigint",
            )
            .bind(user)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(rows)
        }
        .await;
        match rows {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(id, host, port, left)| {
                    let port = u16::try_from(port).ok()?;
                    Some(request_frame(
                        id,
                        &host,
                        port,
                        u64::try_from(left).unwrap_or(0),
                    ))
                })
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "reading open egress questions");
                Vec::new()
            }
        }
    }

    /// Listens for other replicas' announcements on `db` (a direct connection:
    /// `LISTEN` is session state), until the pool is closed or the asker dropped.
    pub fn spawn_watch(self: &Arc<Self>, db: PgPool) {
        let asker = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&db).await {
                Ok(mut l) => match l.listen(CHANNEL).await {
                    Ok(()) => l,
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for egress questions: only this router's tabs are asked");
                        return;
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for egress questions: only this router's tabs are asked");
                    return;
                }
            };
            loop {
                let received = tokio::select! {
                    () = db.close_event() => return,
                    received = listener.try_recv() => received,
                };
                let Some(asker) = asker.upgrade() else { return };
                match received {
                    Ok(Some(n)) => match serde_json::from_str::<Note>(n.payload()) {
                        Ok(note) => asker.on_note(note).await,
                        Err(error) => tracing::debug!(%error, "an egress note that does not parse"),
                    },
                    // Reconnecting: the holders poll what was missed.
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, "listening for egress questions failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvals_name_the_host_on_web_ports_and_the_port_otherwise() {
        let p = approval_pattern("example.org", 443).expect("pattern");
        assert_eq!(p.to_string(), "example.org");
        assert!(p.admits("example.org", 80));
        let p = approval_pattern("example.org", 8443).expect("pattern");
        assert_eq!(p.to_string(), "example.org:8443");
        assert!(!p.admits("example.org", 443));
        let p = approval_pattern("2001:db8::1", 8080).expect("pattern");
        assert_eq!(p.to_string(), "[2001:db8::1]:8080");
    }

    #[test]
    fn answers_parse_and_nothing_else_does() {
        assert_eq!(Answer::parse("once"), Some(Answer::Once));
        assert_eq!(Answer::parse("always"), Some(Answer::Always));
        assert_eq!(Answer::parse("deny"), Some(Answer::Deny));
        assert_eq!(Answer::parse("expired"), None);
    }
}
