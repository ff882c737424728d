//! Admission to the model gateway: account state, the monthly token quota and
//! the per-user rate limit, by plan (`plans`).
//!
//! The rate limit is a fixed one-minute window per user. With Redis configured
//! (`JARVIS_REDIS_URL`) the window's counter lives there — key
//! `{prefix}rate:{user id}:{minute since the epoch}`, bumped with `INCR` and given
//! a two-minute `EXPIRE` in one `MULTI` — so every router process shares it; without
//! Redis each process counts on its own. When Redis fails mid-flight the request is
//! counted in-process instead (logged), so an outage loosens the limit to per
//! process rather than taking the gateway down.
//!
//! The quota is the tokens recorded in `usage` since the start of the calendar month
//! (UTC), read with the account in one query per request. A request is admitted
//! while the total is below the quota, so the call that crosses it completes.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::PgPool;
use time::{Date, Month, OffsetDateTime};
use uuid::Uuid;

use crate::plans::{Plans, Tier};

/// Why a user may not call the model now. The messages are shown to people.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The account does not exist (any more).
    #[error("this workspace's account no longer exists")]
    NoAccount,
    /// An administrator disabled the account.
    #[error("your account is disabled")]
    Disabled,
    /// Billing is on and there is no paid subscription.
    #[error("your subscription is not active{}", lapse_advice(status.as_deref()))]
    SubscriptionInactive {
        /// Stripe's status of the subscription (`past_due`, `canceled`, …), if any.
        status: Option<String>,
    },
    /// Billing is on and the user's plan does not include the model (`model`
    /// in the plans table; off for `free` by default).
    #[error("your {tier} plan does not include the model: upgrade under Account → Upgrade plan")]
    PlanWithoutModel {
        /// The user's tier.
        tier: Tier,
    },
    /// Billing is on and the account's email address is not verified yet.
    #[error(
        "verify your email address first: open the link we emailed you, or ask for a new one under Account"
    )]
    EmailUnverified,
    /// Billing is on, the address is not verified, and this server cannot send
    /// the verification mail.
    #[error(
        "your email address must be verified before the model can be used, but this server cannot send mail: its operator must set JARVIS_SMTP_URL"
    )]
    VerificationUnavailable,
    /// Too many requests this minute.
    #[error(
        "Rate limit reached: your {tier} plan allows {limit} model requests per minute; retry in {retry_after} s"
    )]
    RateLimited {
        /// The user's tier.
        tier: Tier,
        /// Requests per minute of the plan.
        limit: u32,
        /// Seconds until the window ends.
        retry_after: u64,
    },
    /// The monthly token quota is used up.
    #[error(
        "Your {tier} plan's monthly token quota ({quota}) is used up; upgrade or wait until {resets}"
    )]
    QuotaExhausted {
        /// The user's tier.
        tier: Tier,
        /// The quota, formatted with thousands separators.
        quota: String,
        /// The first day of next month (UTC).
        resets: Date,
    },
    /// The database failed while checking.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// Could not set up the limiter.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis for rate limiting: {0}")]
pub struct ConnectError(#[from] redis::RedisError);

/// What the gateway needs to know about a user.
#[derive(Clone, Debug)]
pub struct Account {
    /// Their plan tier.
    pub tier: Tier,
    /// Whether an administrator disabled them.
    pub disabled: bool,
    /// Whether their subscription is paid up.
    pub subscription_active: bool,
    /// Stripe's status of their subscription, if they have one.
    pub subscription_status: Option<String>,
    /// Tokens recorded this calendar month (UTC).
    pub tokens_this_month: u64,
    /// Whether the address is verified (Supabase accounts: by Supabase).
    pub email_verified: bool,
}

/// The columns of an [`Account`] over `users u`, this month's token total included.
// language=PostgreSQL
const ACCOUNT_COLUMNS: &str = "u.tier, u.disabled_at is not null, u.subscription_active,
    u.subscription_status,
    coalesce((select sum(input_tokens + output_tokens) from usage
              where owner_id = u.id
                and created_at >= date_trunc('month', now(), 'UTC')), 0)::bigint,
    u.email_verified_at is not null or u.external_auth_id is not null";

/// An [`Account`] as [`ACCOUNT_COLUMNS`] read it.
type AccountRow = (String, bool, bool, Option<String>, i64, bool);
/// A workspace token's user and their [`AccountRow`].
type TokenAccountRow = (Uuid, String, bool, bool, Option<String>, i64, bool);

impl From<AccountRow> for Account {
    fn from(
        (tier, disabled, subscription_active, subscription_status, used, email_verified): AccountRow,
    ) -> Self {
        Account {
            tier: Tier::parse(&tier),
            disabled,
            subscription_active,
            subscription_status,
            tokens_this_month: u64::try_from(used).unwrap_or(0),
            email_verified,
        }
    }
}

/// Reads `user_id`'s account and this month's token total in one query.
pub async fn account(db: &PgPool, user_id: Uuid) -> sqlx::Result<Option<Account>> {
    let row: Option<AccountRow> = crate::db::query_as(&format!(
        "select {ACCOUNT_COLUMNS} from users u where u.id = $1"
    ))
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Account::from))
}

/// The user whose current workspace token has the digest `digest`
/// (`workspaces::tokens::lookup_digest`), with their account (as [`account`]
/// reads it), in one query: the gateway's whole look-up before a call is
/// forwarded. `None` for a token that is not current (a workspace goes with its
/// user, so a current token always has an account).
pub async fn account_of_digest(
    db: &PgPool,
    digest: &[u8],
) -> sqlx::Result<Option<(Uuid, Account)>> {
    // language=PostgreSQL
    let row: Option<TokenAccountRow> = crate::db::query_as(&format!(
        "select u.id, {ACCOUNT_COLUMNS}
             from workspaces w join users u on u.id = w.owner_id where w.token_hash = $1"
    ))
    .bind(digest)
    .fetch_optional(db)
    .await?;
    Ok(
        row.map(|(id, tier, disabled, active, status, used, verified)| {
            (
                id,
                Account::from((tier, disabled, active, status, used, verified)),
            )
        }),
    )
}

impl Account {
    /// Refuses a disabled account; with billing on, also a plan without the
    /// model (`plans`), a paid plan without an active subscription (a lapsed
    /// payment ends paid access at once; a canceled one drops the user to
    /// `free`), and an unverified email address (`can_send_mail` false: the
    /// server cannot send the link, and the refusal says so). With billing off
    /// every account may call the model.
    pub fn check_standing(
        &self,
        billing_enabled: bool,
        plans: &Plans,
        can_send_mail: bool,
    ) -> Result<(), Refusal> {
        if self.disabled {
            return Err(Refusal::Disabled);
        }
        if !billing_enabled {
            return Ok(());
        }
        if !plans.get(self.tier).model {
            return Err(Refusal::PlanWithoutModel { tier: self.tier });
        }
        if self.tier != Tier::Free && !self.subscription_active {
            return Err(Refusal::SubscriptionInactive {
                status: self.subscription_status.clone(),
            });
        }
        if !self.email_verified {
            return Err(if can_send_mail {
                Refusal::EmailUnverified
            } else {
                Refusal::VerificationUnavailable
            });
        }
        Ok(())
    }

    /// Refuses once this month's tokens reached the quota of the user's plan.
    pub fn check_quota(&self, plans: &Plans, now: OffsetDateTime) -> Result<(), Refusal> {
        match plans.get(self.tier).monthly_tokens {
            Some(quota) if self.tokens_this_month >= quota => Err(Refusal::QuotaExhausted {
                tier: self.tier,
                quota: thousands(quota),
                resets: next_month(now.date()),
            }),
            _ => Ok(()),
        }
    }
}

/// What to do about a subscription in `status`, for people.
fn lapse_advice(status: Option<&str>) -> String {
    match status {
        None => String::new(),
        Some(s @ ("past_due" | "unpaid" | "incomplete")) => format!(
            " (payment {}): update your payment method under Account → Manage billing",
            s.replace('_', " ")
        ),
        Some(s) => format!(" ({s}): subscribe again under Account → Upgrade plan"),
    }
}

/// The first day of the month after `date`.
fn next_month(date: Date) -> Date {
    let (year, month) = match date.month() {
        Month::December => (date.year() + 1, Month::January),
        m => (date.year(), m.next()),
    };
    Date::from_calendar_date(year, month, 1).unwrap_or(date)
}

/// `1000000` → `1,000,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The per-user request rate limiter, shared across router processes via Redis
/// when configured.
pub struct RateLimiter {
    plans: Plans,
    redis: Option<(ConnectionManager, String)>,
    /// (user, window) → requests; the fallback and the no-Redis store.
    local: Mutex<HashMap<Uuid, (u64, u32)>>,
}

impl RateLimiter {
    /// A limiter counting in this process only, by `plans`' rates.
    pub fn in_process(plans: Plans) -> Self {
        Self {
            plans,
            redis: None,
            local: Mutex::default(),
        }
    }

    /// A limiter counting in Redis at `url` under keys starting with `prefix`,
    /// by `plans`' rates.
    pub async fn redis(url: &str, prefix: &str, plans: Plans) -> Result<Self, ConnectError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2);
        let manager = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            plans,
            redis: Some((manager, prefix.to_string())),
            local: Mutex::default(),
        })
    }

    /// Counts one request of `user_id` and refuses it past `limit` this minute.
    pub async fn hit(&self, user_id: Uuid, tier: Tier) -> Result<(), Refusal> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.hit_at(user_id, tier, now).await
    }

    /// [`Self::hit`] at `now` (seconds since the epoch).
    async fn hit_at(&self, user_id: Uuid, tier: Tier, now: u64) -> Result<(), Refusal> {
        let limit = self.plans.get(tier).requests_per_minute;
        let window = now / 60;
        let count = match &self.redis {
            Some((manager, prefix)) => {
                let key = format!("{prefix}rate:{user_id}:{window}");
                let mut conn = manager.clone();
                let counted: redis::RedisResult<(u64,)> = redis::pipe()
                    .atomic()
                    .incr(&key, 1)
                    .expire(&key, 120)
                    .ignore()
                    .query_async(&mut conn)
                    .await;
                match counted {
                    Ok((count,)) => count,
                    Err(error) => {
                        tracing::warn!(%error, "Redis unavailable; rate limiting in-process");
                        self.count_locally(user_id, window)
                    }
                }
            }
            None => self.count_locally(user_id, window),
        };
        if count > u64::from(limit) {
            return Err(Refusal::RateLimited {
                tier,
                limit,
                retry_after: 60 - now % 60,
            });
        }
        Ok(())
    }

    fn count_locally(&self, user_id: Uuid, window: u64) -> u64 {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        // Forget finished windows now and then so the map stays as large as the
        // number of users active this minute.
        if local.len() > 10_000 {
            local.retain(|_, (w, _)| *w == window);
        }
        let entry = local.entry(user_id).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        u64::from(entry.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(tier: Tier, used: u64) -> Account {
        Account {
            tier,
            disabled: false,
            subscription_active: false,
            subscription_status: None,
            tokens_this_month: used,
            email_verified: true,
        }
    }

    #[test]
    fn quota_refusal_names_the_plan_the_quota_and_the_reset_day() {
        let now = Date::from_calendar_date(2026, Month::December, 14)
            .expect("date")
            .midnight()
            .assume_utc();
        let plans = Plans::default();
        assert!(
            account(Tier::Free, 999_999)
                .check_quota(&plans, now)
                .is_ok()
        );
        let refusal = account(Tier::Free, 1_000_000)
            .check_quota(&plans, now)
            .expect_err("over quota");
        assert_eq!(
            refusal.to_string(),
            "Your free plan's monthly token quota (1,000,000) is used up; upgrade or wait until 2027-01-01"
        );
        assert!(
            account(Tier::Enterprise, u64::MAX)
                .check_quota(&plans, now)
                .is_ok()
        );
    }

    #[test]
    fn with_billing_on_the_plan_flag_and_a_verified_address_decide() {
        let plans = Plans::default();
        let free = account(Tier::Free, 0);
        assert!(free.check_standing(false, &plans, false).is_ok());
        assert_eq!(
            free.check_standing(true, &plans, true)
                .expect_err("free has no model")
                .to_string(),
            "your free plan does not include the model: upgrade under Account → Upgrade plan"
        );
        let open = Plans::from_json(r#"{"free": {"model": true}}"#).expect("valid");
        assert!(free.check_standing(true, &open, true).is_ok());
        let unverified = Account {
            email_verified: false,
            ..free
        };
        assert!(unverified.check_standing(false, &open, false).is_ok());
        assert!(matches!(
            unverified.check_standing(true, &open, true),
            Err(Refusal::EmailUnverified)
        ));
        let no_mail = unverified
            .check_standing(true, &open, false)
            .expect_err("cannot verify");
        assert!(no_mail.to_string().contains("JARVIS_SMTP_URL"), "{no_mail}");
    }

    #[test]
    fn inactive_subscriptions_are_refused_only_with_billing_on() {
        let plans = Plans::default();
        let a = account(Tier::Pro, 0);
        assert!(a.check_standing(false, &plans, true).is_ok());
        assert_eq!(
            a.check_standing(true, &plans, true)
                .expect_err("lapsed")
                .to_string(),
            "your subscription is not active"
        );
        let past_due = Account {
            subscription_status: Some("past_due".into()),
            ..a.clone()
        };
        assert_eq!(
            past_due
                .check_standing(true, &plans, true)
                .expect_err("lapsed")
                .to_string(),
            "your subscription is not active (payment past due): update your payment method under Account → Manage billing"
        );
        let disabled = Account {
            disabled: true,
            ..a
        };
        assert!(matches!(
            disabled.check_standing(false, &plans, true),
            Err(Refusal::Disabled)
        ));
    }

    #[tokio::test]
    async fn in_process_limit_refuses_past_the_plan_rate() {
        let limiter = RateLimiter::in_process(Plans::default());
        let user = Uuid::new_v4();
        let now = 1_800_000_020; // 20 s into a minute
        for _ in 0..20 {
            limiter
                .hit_at(user, Tier::Free, now)
                .await
                .expect("within limit");
        }
        let refusal = limiter
            .hit_at(user, Tier::Free, now + 1)
            .await
            .expect_err("limited");
        assert!(matches!(
            refusal,
            Refusal::RateLimited {
                limit: 20,
                retry_after: 39,
                ..
            }
        ));
        limiter
            .hit_at(Uuid::new_v4(), Tier::Free, now)
            .await
            .expect("other users have their own budget");
        limiter
            .hit_at(user, Tier::Free, now + 60)
            .await
            .expect("the next minute starts afresh");
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(20_000_000), "20,000,000");
        assert_eq!(thousands(999), "999");
    }
}
