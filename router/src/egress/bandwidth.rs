//! The plan's bandwidth per workspace (`Plan::egress_bandwidth_bytes_per_second`):
//! one token bucket per workspace on this router, shared by every connection of
//! the workspace open here, both directions drawing on it.
//!
//! The bucket holds at most one second's worth ([`BURST`]), so a workspace that was
//! quiet may move that much at once; after that its bytes cross at the rate. A
//! read or write upstream waits while the bucket is empty, then moves what the
//! socket gives (at most one copy buffer) and the bucket goes into debt for it:
//! the next one waits until the debt is paid back. So the bytes moved by time `t`
//! are at most `burst + rate × t` plus one buffer per connection.
//!
//! Each router replica has buckets of its own: a workspace whose connections go
//! through two replicas gets the rate at each.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use uuid::Uuid;

/// How much of the rate a quiet bucket holds: one second's worth.
pub const BURST: Duration = Duration::from_secs(1);

/// One workspace's bytes per second.
#[derive(Debug)]
pub struct Bucket {
    rate: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Bytes that may cross now; negative is a debt to wait out.
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket of `rate` bytes per second (`rate` is at least 1).
    pub fn new(rate: u64) -> Arc<Self> {
        Self::new_at(rate, Instant::now())
    }

    fn new_at(rate: u64, now: Instant) -> Arc<Self> {
        let rate = rate.max(1);
        Arc::new(Self {
            rate,
            state: Mutex::new(State {
                tokens: burst(rate),
                last: now,
            }),
        })
    }

    /// The rate, bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// How long to wait before the next read or write; `None`: go now.
    pub fn wait(&self) -> Option<Duration> {
        self.wait_at(Instant::now())
    }

    /// Counts `n` bytes that crossed (the bucket may go into debt).
    pub fn take(&self, n: u64) {
        self.take_at(n, Instant::now());
    }

    fn refill(&self, state: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(state.last).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.rate as f64).min(burst(self.rate));
        state.last = now;
    }

    fn wait_at(&self, now: Instant) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.refill(&mut state, now);
        if state.tokens > 0.0 {
            return None;
        }
        // Until the debt is paid and a byte more (never a zero wait).
        let seconds = (1.0 - state.tokens) / self.rate as f64;
        Some(Duration::from_secs_f64(seconds).max(Duration::from_millis(1)))
    }

    fn take_at(&self, n: u64, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.refill(&mut state, now);
        state.tokens -= n as f64;
    }
}

fn burst(rate: u64) -> f64 {
    rate as f64 * BURST.as_secs_f64()
}

/// The buckets of the workspaces with a connection open here.
#[derive(Default)]
pub struct Bandwidths(Mutex<HashMap<Uuid, Weak<Bucket>>>);

impl Bandwidths {
    /// `owner`'s bucket at `rate`: the one their open connections share, or a new
    /// one (none open, or the plan's rate changed).
    pub fn get(&self, owner: Uuid, rate: u64) -> Arc<Bucket> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = map.get(&owner).and_then(Weak::upgrade)
            && bucket.rate == rate.max(1)
        {
            return bucket;
        }
        // Buckets whose connections all ended go with the next new one.
        map.retain(|_, b| b.strong_count() > 0);
        let bucket = Bucket::new(rate);
        map.insert(owner, Arc::downgrade(&bucket));
        bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u64 = 1000;

    #[test]
    fn a_full_bucket_lets_one_seconds_worth_through_then_paces_at_the_rate() {
        let t0 = Instant::now();
        let b = Bucket::new_at(RATE, t0);
        assert_eq!(b.wait_at(t0), None);
        b.take_at(RATE, t0);
        // Empty: the next byte waits a thousandth of a second.
        let wait = b.wait_at(t0).expect("empty");
        assert!(wait >= Duration::from_millis(1), "{wait:?}");
        // Half a second later half a second's worth may cross.
        let half = t0 + Duration::from_millis(500);
        assert_eq!(b.wait_at(half), None);
        b.take_at(RATE / 2, half);
        assert!(b.wait_at(half).is_some());
    }

    #[test]
    fn a_debt_is_waited_out_in_proportion() {
        let t0 = Instant::now();
        let b = Bucket::new_at(RATE, t0);
        // Two seconds' worth in one go: one second of debt.
        b.take_at(2 * RATE, t0);
        let wait = b.wait_at(t0).expect("in debt");
        assert!(
            (Duration::from_millis(1000)..Duration::from_millis(1010)).contains(&wait),
            "{wait:?}"
        );
        assert!(b.wait_at(t0 + Duration::from_millis(900)).is_some());
        assert_eq!(b.wait_at(t0 + Duration::from_millis(1002)), None);
    }

    #[test]
    fn a_quiet_bucket_holds_no_more_than_the_burst() {
        let t0 = Instant::now();
        let b = Bucket::new_at(RATE, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.wait_at(later), None);
        b.take_at(RATE, later);
        assert!(
            b.wait_at(later).is_some(),
            "an hour's quiet is one second's worth"
        );
    }

    #[test]
    fn bytes_over_time_never_exceed_burst_plus_rate() {
        // Reads of 300 bytes whenever allowed, over ten simulated seconds.
        let t0 = Instant::now();
        let b = Bucket::new_at(RATE, t0);
        let (mut now, mut moved) = (t0, 0u64);
        let end = t0 + Duration::from_secs(10);
        while now < end {
            match b.wait_at(now) {
                Some(wait) => now += wait,
                None => {
                    b.take_at(300, now);
                    moved += 300;
                }
            }
        }
        let bound = RATE + 10 * RATE + 300;
        assert!(moved <= bound, "{moved} > {bound}");
        assert!(moved >= 10 * RATE, "{moved}: the rate is reached");
    }

    #[test]
    fn a_workspaces_connections_share_one_bucket_and_others_have_their_own() {
        let buckets = Bandwidths::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = buckets.get(a, RATE);
        let second = buckets.get(a, RATE);
        assert!(Arc::ptr_eq(&first, &second));
        let other = buckets.get(b, RATE);
        assert!(!Arc::ptr_eq(&first, &other));
        // A new plan rate is a new bucket.
        let faster = buckets.get(a, 2 * RATE);
        assert_eq!(faster.rate(), 2 * RATE);
        // Once no connection holds it, it goes.
        drop((first, second, faster));
        let again = buckets.get(a, RATE);
        assert_eq!(Arc::strong_count(&again), 1);
        assert_eq!(
            buckets.0.lock().expect("map").len(),
            2,
            "a and b, nothing else"
        );
    }
}
