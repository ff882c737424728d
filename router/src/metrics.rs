//! Prometheus metrics of the router, served at `/metrics`.

use std::{
    sync::{LazyLock, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// The route pattern (`/api/documents/{id}`), never the raw path.
    pub route: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of a request duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method.
    pub method: String,
    /// The route pattern.
    pub route: String,
}

/// Labels of a text-to-speech synthesis.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VoiceLabels {
    /// The engine (`espeak`, `piper`, `openai`, `elevenlabs`).
    pub engine: String,
    /// `ok`, `failed` or `timeout`.
    pub outcome: String,
}

/// Labels of a model gateway call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayLabels {
    /// `messages` or `count_tokens`.
    pub endpoint: String,
    /// `forwarded`, `refused` (the plan's request policy), `rate_limited` (rate
    /// limit or quota), `denied` (token, account) or `failed`.
    pub outcome: String,
}

/// Labels of the events a sandbox pushes (`POST /v1/workspace/events`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkspaceEventLabels {
    /// `stored`, `duplicate` (already stored: a retried batch), `ignored`
    /// (unnumbered, of another conversation, or with no message to hold it) or
    /// `foreign` (a conversation that is not the token's user's).
    pub outcome: String,
}

/// Labels of an egress proxy decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EgressDecisionLabels {
    /// `allowed`, `denied` or `failed` (allowed, but unresolvable or unreachable).
    pub decision: String,
}

/// Labels of a question the egress proxy asked in the browser.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EgressPromptLabels {
    /// `once`, `always`, `deny`, `expired`, `unseen` (no browser open) or
    /// `unavailable` (the database).
    pub outcome: String,
}

/// Labels of bytes through the egress proxy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EgressBytesLabels {
    /// `up` (to the internet) or `down` (to the sandbox).
    pub direction: String,
}

/// Labels of a write the object store did not take.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageWriteLabels {
    /// The store's refusal (`too_large`, `no_bucket`, `bad_key`, `refused`) or
    /// `failed` (no answer, a server error).
    pub kind: String,
}

/// Writes the object store did not take, process-wide: the storage layer counts
/// them where it has no [`Metrics`] at hand; every [`Metrics`] registers it.
static STORAGE_WRITE_FAILURES: LazyLock<Family<StorageWriteLabels, Counter>> =
    LazyLock::new(Family::default);

/// Counts a write the object store did not take, by `kind` (see
/// [`StorageWriteLabels`]); shown as `jarvis_storage_write_failures_total`.
pub fn storage_write_failed(kind: &str) {
    STORAGE_WRITE_FAILURES
        .get_or_create(&StorageWriteLabels {
            kind: kind.to_string(),
        })
        .inc();
}

/// Usage rows of model calls the gateway could not write, process-wide (the
/// meter has no [`Metrics`] at hand); every [`Metrics`] registers it.
static USAGE_WRITE_FAILURES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Counts a usage row the gateway could not write; shown as
/// `jarvis_gateway_usage_write_failures_total`.
pub fn usage_write_failed() {
    USAGE_WRITE_FAILURES.inc();
}

/// Labels of the router's own time before a turn's first text.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TurnLegLabels {
    /// `to_sandbox`: the browser's message received → its `message` frame sent
    /// to the sandbox (checks, the turn's rows; a wake is not counted);
    /// `to_browser`: the turn's first `text` frame received from the sandbox →
    /// queued for the user's browsers (its wait in a browser's queue is
    /// `jarvis_browser_queue_wait_seconds`).
    pub leg: String,
}

/// Labels of the database time of a turn.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TurnDbLabels {
    /// `open_turn` (the user's message and the empty answer, before the
    /// sandbox is sent the message, its wait for a batch included),
    /// `open_batch` (one batch of turns opened together, `crate::transcript::Opener`),
    /// `store_events` (one batch of a turn's events the sandbox pushed, its wait
    /// for a gathering included) or `store_batch` (one gathering of batches
    /// stored together, `crate::transcript::Writer`).
    pub op: String,
}

/// Buckets of the router's short waits and stages, in seconds.
const SHORT_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

fn short_histogram() -> Histogram {
    Histogram::new(SHORT_BUCKETS)
}

/// The router's time before each turn's first text, by leg; process-wide, like
/// the other turn and database timings (the proxy and `db` have no [`Metrics`]
/// at hand); every [`Metrics`] registers them.
static TURN_FIRST_TEXT: LazyLock<Family<TurnLegLabels, Histogram>> =
    LazyLock::new(|| Family::new_with_constructor(short_histogram));
/// Database time of turns, by operation.
static TURN_DB: LazyLock<Family<TurnDbLabels, Histogram>> =
    LazyLock::new(|| Family::new_with_constructor(short_histogram));
/// Turns opened per batch (`crate::transcript::Opener`).
static TURN_OPEN_BATCH: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]));
/// Batches of events stored per gathering (`crate::transcript::Writer`).
static EVENTS_BATCH: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]));
/// Waits for a connection of the database pool.
static DB_POOL_WAIT: LazyLock<Histogram> = LazyLock::new(short_histogram);
/// Waits of events in a browser's queue, from queued to written to its socket.
static BROWSER_QUEUE_WAIT: LazyLock<Histogram> = LazyLock::new(short_histogram);
/// Waits of a browser's frames between received and carried out.
static FRAME_QUEUE_WAIT: LazyLock<Histogram> = LazyLock::new(short_histogram);

/// Notes the router's own time of one leg of a turn before its first text
/// (see [`TurnLegLabels`]); shown as `jarvis_turn_router_first_text_seconds`.
pub fn turn_leg(leg: &str, took: Duration) {
    TURN_FIRST_TEXT
        .get_or_create(&TurnLegLabels {
            leg: leg.to_string(),
        })
        .observe(took.as_secs_f64());
}

/// Notes database time of a turn (see [`TurnDbLabels`]); shown as
/// `jarvis_turn_db_seconds`.
pub fn turn_db(op: &str, took: Duration) {
    TURN_DB
        .get_or_create(&TurnDbLabels { op: op.to_string() })
        .observe(took.as_secs_f64());
}

/// Notes how many turns one batch opened; shown as
/// `jarvis_turn_open_batch_turns`.
pub fn turns_batched(turns: usize) {
    TURN_OPEN_BATCH.observe(turns as f64);
}

/// Notes how many batches of events one gathering stored; shown as
/// `jarvis_workspace_events_gathered_batches`.
pub fn events_batched(batches: usize) {
    EVENTS_BATCH.observe(batches as f64);
}

/// Notes a wait for a pooled database connection; shown as
/// `jarvis_db_pool_wait_seconds`.
pub fn pool_waited(took: Duration) {
    DB_POOL_WAIT.observe(took.as_secs_f64());
}

/// Notes how long an event waited in a browser's queue; shown as
/// `jarvis_browser_queue_wait_seconds`.
pub fn browser_queue_waited(took: Duration) {
    BROWSER_QUEUE_WAIT.observe(took.as_secs_f64());
}

/// Notes how long a browser's frame waited to be carried out (frames of one
/// connection are carried out in order); shown as
/// `jarvis_ws_frame_queue_wait_seconds`.
pub fn frame_queue_waited(took: Duration) {
    FRAME_QUEUE_WAIT.observe(took.as_secs_f64());
}

/// Waits of wakes for room on this machine (`JARVIS_MAX_WORKSPACES`).
static CAPACITY_WAIT: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new([0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]));

/// Workspaces put to sleep to make room for another's wake.
static EVICTIONS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Notes a wake's wait for room (only wakes that found none free wait).
pub fn capacity_waited(took: Duration) {
    CAPACITY_WAIT.observe(took.as_secs_f64());
}

/// Counts a workspace put to sleep to make room.
pub fn workspace_evicted() {
    EVICTIONS.inc();
}

/// The router's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Requests served, by method, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request durations in seconds, by method and route.
    pub durations: Family<RouteLabels, Histogram>,
    /// Failed logins (wrong password, unknown account, locked).
    pub login_failures: Counter,
    /// argon2 password verifications run by sign-ins (unknown accounts too).
    pub password_verifications: Counter,
    /// Syntheses of spoken answers, by engine and outcome.
    pub voice_syntheses: Family<VoiceLabels, Counter>,
    /// Synthesis wall time in seconds, by engine and outcome.
    pub voice_seconds: Family<VoiceLabels, Histogram>,
    /// Model gateway calls, by endpoint and outcome.
    pub gateway_calls: Family<GatewayLabels, Counter>,
    /// Events sandboxes pushed to be stored, by outcome.
    pub workspace_events: Family<WorkspaceEventLabels, Counter>,
    /// Egress proxy connections, by decision.
    pub egress_decisions: Family<EgressDecisionLabels, Counter>,
    /// Bytes through the egress proxy, by direction.
    pub egress_bytes: Family<EgressBytesLabels, Counter>,
    /// Questions the egress proxy asked in the browser, by how they ended.
    pub egress_prompts: Family<EgressPromptLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ])
        });
        let login_failures = Counter::default();
        let password_verifications = Counter::default();
        let voice_syntheses = Family::<VoiceLabels, Counter>::default();
        let voice_seconds = Family::<VoiceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        let gateway_calls = Family::<GatewayLabels, Counter>::default();
        let workspace_events = Family::<WorkspaceEventLabels, Counter>::default();
        let egress_decisions = Family::<EgressDecisionLabels, Counter>::default();
        let egress_bytes = Family::<EgressBytesLabels, Counter>::default();
        let egress_prompts = Family::<EgressPromptLabels, Counter>::default();
        let mut registry = Registry::with_prefix("jarvis");
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request durations",
            durations.clone(),
        );
        registry.register(
            "login_failures",
            "Failed login attempts",
            login_failures.clone(),
        );
        registry.register(
            "password_verifications",
            "argon2 password verifications run by sign-ins",
            password_verifications.clone(),
        );
        registry.register(
            "voice_syntheses",
            "Text-to-speech syntheses",
            voice_syntheses.clone(),
        );
        registry.register(
            "voice_synthesis_seconds",
            "Text-to-speech synthesis wall time",
            voice_seconds.clone(),
        );
        registry.register(
            "gateway_calls",
            "Model gateway calls by endpoint and outcome",
            gateway_calls.clone(),
        );
        registry.register(
            "workspace_events",
            "Events sandboxes pushed to be stored, by outcome",
            workspace_events.clone(),
        );
        registry.register(
            "egress_decisions",
            "Egress proxy connections by decision",
            egress_decisions.clone(),
        );
        registry.register(
            "egress_bytes",
            "Bytes through the egress proxy by direction",
            egress_bytes.clone(),
        );
        registry.register(
            "egress_prompts",
            "Questions the egress proxy asked in the browser, by outcome",
            egress_prompts.clone(),
        );
        registry.register(
            "storage_write_failures",
            "Writes the object store did not take, by kind",
            STORAGE_WRITE_FAILURES.clone(),
        );
        registry.register(
            "gateway_usage_write_failures",
            "Usage rows of model calls that could not be written",
            USAGE_WRITE_FAILURES.clone(),
        );
        registry.register(
            "turn_router_first_text_seconds",
            "The router's own time before a turn's first text, by leg",
            TURN_FIRST_TEXT.clone(),
        );
        registry.register(
            "turn_db_seconds",
            "Database time of turns: opening one (its wait for a batch included), one batch of turns opened together, storing a batch of a turn's events (its wait included), one gathering of such batches",
            TURN_DB.clone(),
        );
        registry.register(
            "turn_open_batch_turns",
            "Turns opened together in one batch",
            TURN_OPEN_BATCH.clone(),
        );
        registry.register(
            "workspace_events_gathered_batches",
            "Batches of events stored together in one transaction",
            EVENTS_BATCH.clone(),
        );
        registry.register(
            "db_pool_wait_seconds",
            "Waits for a connection of the database pool",
            DB_POOL_WAIT.clone(),
        );
        registry.register(
            "browser_queue_wait_seconds",
            "Waits of events in a browser's queue before written to its socket",
            BROWSER_QUEUE_WAIT.clone(),
        );
        registry.register(
            "ws_frame_queue_wait_seconds",
            "Waits of a browser's frames between received and carried out",
            FRAME_QUEUE_WAIT.clone(),
        );
        registry.register(
            "workspace_capacity_wait_seconds",
            "Waits of wakes that found every workspace slot of the machine taken",
            CAPACITY_WAIT.clone(),
        );
        registry.register(
            "workspace_capacity_sleeps",
            "Workspaces put to sleep to make room for another's wake",
            EVICTIONS.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            durations,
            login_failures,
            password_verifications,
            voice_syntheses,
            voice_seconds,
            gateway_calls,
            workspace_events,
            egress_decisions,
            egress_bytes,
            egress_prompts,
        }
    }
}

impl Metrics {
    /// Counts `n` pushed events with `outcome` (see [`WorkspaceEventLabels`]).
    pub fn count_workspace_events(&self, outcome: &str, n: usize) {
        if n > 0 {
            self.workspace_events
                .get_or_create(&WorkspaceEventLabels {
                    outcome: outcome.to_string(),
                })
                .inc_by(n as u64);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
