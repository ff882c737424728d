//! Configuration, read once from the environment (and a `.env` file) in `main`.
//!
//! The variables of DESIGN.md's table keep their names and defaults; the few this
//! crate adds are prefixed `JARVIS_` and documented here.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Where workspaces (sandboxes) run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Sandboxes are processes on this machine, confined with bubblewrap.
    Local,
    /// Sandboxes are pods made by the operator from `JarvisWorkspace` objects.
    Kubernetes,
}

/// How the kubernetes backend reaches a Ready workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeEndpoint {
    /// The operator's `status.endpoint`: the workspace Service by cluster DNS.
    Service,
    /// The pod's IP with the same port: for a router on the pod network without
    /// cluster DNS.
    PodIp,
}

/// Everything the router can be told.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "router", about = "The Jarvis router", version)]
pub struct Config {
    /// Postgres connection URL of the requests' pool: Postgres itself or a pooler,
    /// transaction-mode included (Supabase's pooler on port 6543).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://localhost/jarvis"
    )]
    pub database_url: String,

    /// A direct (or session-mode) connection URL to the same database, for the
    /// migrations and `LISTEN` (Supabase's direct or session URL, port 5432);
    /// default: `DATABASE_URL`. When it differs, `LISTEN` uses it too.
    #[arg(long, env = "DATABASE_DIRECT_URL")]
    pub database_direct_url: Option<String>,

    /// Largest number of pooled database connections.
    #[arg(long, env = "JARVIS_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,

    /// Address the router listens on.
    #[arg(long, env = "JARVIS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A second address that serves only the sandboxes' routes (`/v1/messages`,
    /// `/v1/workspace/…`, `/v1/voice/speak`), e.g. `0.0.0.0:8081` for pods. Unset:
    /// none (local sandboxes reach them through a unix socket). The public listener
    /// never serves them.
    #[arg(long, env = "JARVIS_SANDBOX_LISTEN")]
    pub sandbox_listen: Option<SocketAddr>,

    /// The egress proxy's TCP address for pods (`crate::egress`), e.g.
    /// `0.0.0.0:8082`. Unset: none. With the local backend the proxy also listens
    /// on `egress.sock` next to the gateway socket.
    #[arg(long, env = "JARVIS_EGRESS_LISTEN")]
    pub egress_listen: Option<SocketAddr>,

    /// CIDRs no sandbox connection may reach, whatever the allow-lists say
    /// (comma-separated; checked on every address a host resolves to).
    #[arg(long, env = "JARVIS_EGRESS_DENY", default_value = crate::egress::policy::DEFAULT_DENY)]
    pub egress_deny: String,

    /// How long the egress proxy waits for an upstream to accept a connection.
    #[arg(long, env = "JARVIS_EGRESS_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub egress_connect_timeout: Duration,

    /// An egress connection with no byte either way for this long is closed.
    #[arg(long, env = "JARVIS_EGRESS_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub egress_idle_timeout: Duration,

    /// Egress connections one workspace may have open at once.
    #[arg(long, env = "JARVIS_EGRESS_MAX_CONNECTIONS", default_value = "64")]
    pub egress_max_connections: u32,

    /// How long a connection to a host outside the lists waits for the user's
    /// answer in the browser (allow once / always / deny) before it is refused.
    #[arg(long, env = "JARVIS_EGRESS_APPROVAL_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub egress_approval_timeout: Duration,

    /// Bearer token `/metrics` requires. Unset: `/metrics` answers only peers on
    /// loopback that came through no proxy.
    #[arg(long, env = "JARVIS_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Where sandboxes run: `local` or `kubernetes`.
    #[arg(long, env = "JARVIS_BACKEND", value_enum, default_value = "local")]
    pub backend: Backend,

    /// Object storage: `file:DIR` or `s3://BUCKET` (with `AWS_ENDPOINT_URL` and keys).
    #[arg(long, env = "JARVIS_STORAGE", default_value = "file:./data/storage")]
    pub storage: String,

    /// The Anthropic API key; read by the router only, never passed to a sandbox.
    #[arg(long, env = "ANTHROPIC_API_KEY", hide_env_values = true)]
    pub anthropic_api_key: Option<String>,

    /// Where the model gateway sends `/v1/messages`.
    #[arg(
        long,
        env = "JARVIS_MODEL_UPSTREAM",
        default_value = "https://api.anthropic.com"
    )]
    pub model_upstream: String,

    /// Idle time before a workspace sleeps (e.g. `15m`, `90s`).
    #[arg(long, env = "JARVIS_IDLE_TIMEOUT", default_value = "15m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Largest file a user may upload, in bytes.
    #[arg(long, env = "JARVIS_MAX_UPLOAD_BYTES", default_value_t = 104_857_600)]
    pub max_upload_bytes: u64,

    /// Browser WebSockets one user may have open on one router; more are refused
    /// with 429.
    #[arg(long, env = "JARVIS_MAX_SOCKETS_PER_USER", default_value_t = 16)]
    pub max_sockets_per_user: usize,

    /// Live agent (CLI) processes per workspace.
    #[arg(long, env = "JARVIS_MAX_AGENTS", default_value_t = 1)]
    pub max_agents: u32,

    /// Warm wake (local backend): sandboxes kept started, unassigned, with a CLI
    /// already running, that a waking user claims instead of starting one; the
    /// pool is refilled in the background, one at a time, and a wake that finds
    /// it empty starts a sandbox as without a pool. With a pool every sandbox
    /// also keeps a spare CLI for its next new conversation (one more CLI
    /// process per awake workspace). 0: no pool, no spare CLIs. With the
    /// kubernetes backend, above 0 a wake claims one of the pods of the
    /// operator's warm pool (sized by the operator's own `JARVIS_WARM_POOL`).
    #[arg(long, env = "JARVIS_WARM_POOL", default_value_t = 0)]
    pub warm_pool: usize,

    /// Local backend: the most workspaces awake at once on this machine (each
    /// holds a sandbox and its CLI, about 190 MB). A wake past it puts the
    /// least recently active idle workspace to sleep to make room, or waits
    /// for one (at most `JARVIS_CAPACITY_WAIT`). Unset: one per 256 MiB of the
    /// machine's memory, less the warm pool. 0: no limit. Ignored with the
    /// kubernetes backend (the cluster schedules pods).
    #[arg(long, env = "JARVIS_MAX_WORKSPACES")]
    pub max_workspaces: Option<usize>,

    /// Longest a wake waits for room under `JARVIS_MAX_WORKSPACES` before the
    /// browser is told the machine is at capacity.
    #[arg(long, env = "JARVIS_CAPACITY_WAIT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub capacity_wait: Duration,

    /// Legacy Supabase JWT secret: verifies HS256 Supabase Auth tokens.
    #[arg(long, env = "SUPABASE_JWT_SECRET", hide_env_values = true)]
    pub supabase_jwt_secret: Option<String>,

    /// Supabase project URL: its JWKS verifies ES256/RS256 tokens and its issuer is checked.
    #[arg(long, env = "SUPABASE_URL")]
    pub supabase_url: Option<String>,

    /// Secret that signs the built-in accounts' access tokens. When unset, one is
    /// generated once and kept in the database, so every router process shares it.
    #[arg(long, env = "JARVIS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Stripe API key; billing is off without it.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,

    /// Secret that signs Stripe's webhooks.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,

    /// Base URL of the Stripe API (tests point it at a fake).
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,

    /// Stripe price of the `pro` plan (wins over the plans table).
    #[arg(long, env = "STRIPE_PRICE_PRO")]
    pub stripe_price_pro: Option<String>,

    /// Stripe price of the `enterprise` plan (wins over the plans table).
    #[arg(long, env = "STRIPE_PRICE_ENTERPRISE")]
    pub stripe_price_enterprise: Option<String>,

    /// The plans table (see `plans`): inline JSON or the path of a JSON file;
    /// unset, the built-in defaults.
    #[arg(long, env = "JARVIS_PLANS")]
    pub plans: Option<String>,

    /// Where Stripe Checkout and the Customer Portal send the browser back to;
    /// unset, the Account page of the request's `Origin` when it is a configured one
    /// (`JARVIS_ALLOWED_ORIGINS`), else of the first configured origin (never `Host`).
    #[arg(long, env = "JARVIS_BILLING_RETURN_URL")]
    pub billing_return_url: Option<String>,

    /// Take the client address from the last `X-Forwarded-For` entry (set only
    /// behind a reverse proxy that sets it), for per-address login throttling.
    #[arg(long, env = "JARVIS_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,

    /// Accounts one client address may create per hour (built-in accounts); more
    /// are refused with 429.
    #[arg(
        long,
        env = "JARVIS_SIGNUPS_PER_ADDRESS_PER_HOUR",
        default_value_t = 10
    )]
    pub signups_per_address_per_hour: u32,

    /// Accounts one client network (IPv4 /24, IPv6 /64) may create per hour.
    #[arg(
        long,
        env = "JARVIS_SIGNUPS_PER_NETWORK_PER_HOUR",
        default_value_t = 50
    )]
    pub signups_per_network_per_hour: u32,

    /// SMTP server for verification mail: `smtp://host:port` (plain, e.g. a local
    /// relay), `smtp://user:pass@host?tls=required` (STARTTLS, port 587),
    /// `smtps://user:pass@host` (TLS, port 465). Unset, no
    /// mail is sent, and with billing on nobody can verify (the model is refused
    /// with a message naming this variable).
    #[arg(long, env = "JARVIS_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// The `From` of the router's mail (`Jarvis <noreply@example.com>`); default:
    /// `noreply@` the public URL's host.
    #[arg(long, env = "JARVIS_MAIL_FROM")]
    pub mail_from: Option<String>,

    /// The address people reach the router at (`https://jarvis.example.com`), for
    /// links in mail; never taken from a request's Host. Default: the first of
    /// `JARVIS_ALLOWED_ORIGINS`, else `http://` the listen address.
    #[arg(long, env = "JARVIS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Redis URL (e.g. `redis://127.0.0.1:6379`): rate limits shared by every router
    /// process. Without it each process limits on its own.
    #[arg(long, env = "JARVIS_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of the router's Redis keys (several deployments or tests can share one Redis).
    #[arg(long, env = "JARVIS_REDIS_PREFIX", default_value = "jarvis:")]
    pub redis_key_prefix: String,

    /// Log format: `text` or `json`.
    #[arg(long, env = "JARVIS_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// Origins allowed to open the browser WebSocket, comma-separated. A page served
    /// by the router itself (Origin equal to the request's Host) is always allowed;
    /// `http://127.0.0.1:8080`, `http://localhost:8080` and the listen address are too.
    #[arg(long, env = "JARVIS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// The `sandbox` binary (local backend); default: `sandbox` beside the router binary.
    #[arg(long, env = "JARVIS_SANDBOX_BIN")]
    pub sandbox_bin: Option<PathBuf>,

    /// Where the local backend keeps each user's workspace and agent state.
    #[arg(
        long,
        env = "JARVIS_WORKSPACES_DIR",
        default_value = "./data/workspaces"
    )]
    pub workspaces_dir: PathBuf,

    /// Where the local backend puts its unix sockets (the gateway's, each sandbox's).
    #[arg(long, env = "JARVIS_RUN_DIR", default_value = "./data/run")]
    pub run_dir: PathBuf,

    /// The Claude Code CLI the sandboxes run (its directory is bound read-only).
    #[arg(
        long,
        env = "JARVIS_CLAUDE_BIN",
        default_value = ".tools/claude/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
    )]
    pub claude_bin: PathBuf,

    /// The bubblewrap binary that confines local sandboxes.
    #[arg(long, env = "JARVIS_BWRAP", default_value = "/usr/bin/bwrap")]
    pub bwrap: PathBuf,

    /// The host user `scripts/setup.sh` makes to own the CLI install. Sandboxes
    /// no longer run as it (each workspace has a uid of its own from
    /// `JARVIS_SANDBOX_UIDS`); workspaces it still owns are handed over on wake.
    #[arg(long, env = "JARVIS_SANDBOX_USER", default_value = "jarvis-sandbox")]
    pub sandbox_user: String,

    /// Host uids (and gids, the same numbers) of local sandboxes, `FIRST-LAST`:
    /// each workspace gets one for good, so process limits, file ownership and
    /// signals separate tenants. No passwd entries are needed; the range must hold
    /// no real user (checked at start against `/etc/passwd`).
    #[arg(long, env = "JARVIS_SANDBOX_UIDS", default_value = DEFAULT_SANDBOX_UIDS, value_parser = UidRange::parse)]
    pub sandbox_uids: UidRange,

    /// Size of each local sandbox's private `/tmp` (a tmpfs), in bytes.
    #[arg(long, env = "JARVIS_SANDBOX_TMP_BYTES", default_value_t = DEFAULT_SANDBOX_TMP)]
    pub sandbox_tmp_bytes: u64,

    /// Workspace quota: bytes of files a workspace may hold; the sync stores up
    /// to it and tells the user what is past it.
    #[arg(long, env = "JARVIS_WORKSPACE_MAX_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub workspace_max_bytes: u64,

    /// Workspace quota: files, directories and links a workspace may hold.
    #[arg(long, env = "JARVIS_WORKSPACE_MAX_FILES", default_value_t = 10_000)]
    pub workspace_max_files: u64,

    /// Longest putting one workspace to sleep (or one after-turn sync) may take
    /// before it is cancelled and reported; other workspaces never wait on it.
    #[arg(long, env = "JARVIS_SLEEP_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub sleep_timeout: Duration,

    /// Address-space limit of each sandbox process, in bytes (RLIMIT_AS).
    #[arg(long, env = "JARVIS_SANDBOX_MEMORY_BYTES", default_value_t = DEFAULT_SANDBOX_MEMORY)]
    pub sandbox_memory_bytes: u64,

    /// Process (and thread) limit of each local sandbox (RLIMIT_NPROC, counted
    /// per host uid: each workspace has its own).
    #[arg(long, env = "JARVIS_SANDBOX_MAX_PROCS", default_value_t = 1024)]
    pub sandbox_max_procs: u64,

    /// CPU time limit of each sandbox process, in seconds (RLIMIT_CPU).
    #[arg(long, env = "JARVIS_SANDBOX_CPU_SECONDS", default_value_t = 4 * 3600)]
    pub sandbox_cpu_seconds: u64,

    /// Namespace of the users' `JarvisWorkspace`s (kubernetes backend).
    #[arg(long, env = "JARVIS_KUBE_NAMESPACE", default_value = "jarvis")]
    pub kube_namespace: String,

    /// A Kubernetes API URL used without credentials, such as `kubectl proxy`'s
    /// `http://127.0.0.1:8001`. Unset: the in-cluster service account.
    #[arg(long, env = "JARVIS_KUBE_API_URL")]
    pub kube_api_url: Option<String>,

    /// How the kubernetes backend reaches a Ready workspace: `service` or `pod-ip`.
    #[arg(
        long,
        env = "JARVIS_KUBE_ENDPOINT",
        value_enum,
        default_value = "service"
    )]
    pub kube_endpoint: KubeEndpoint,

    /// Longest a wake may take before the browser gets an error.
    #[arg(long, env = "JARVIS_WAKE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub wake_timeout: Duration,

    /// The built browser app (`npm run build` in `router/web`). Unset: `router/web/dist`
    /// under the working directory, else `web/dist` in the router crate's directory.
    #[arg(long, env = "JARVIS_WEB_DIR")]
    pub web_dir: Option<std::path::PathBuf>,

    /// Text-to-speech engine: `espeak` (offline), `piper` (offline, neural), `openai`,
    /// `elevenlabs` or `off`.
    #[arg(long, env = "JARVIS_TTS_ENGINE", value_enum, default_value = "espeak")]
    pub tts_engine: crate::voice::EngineKind,

    /// Base URL of a cloud TTS engine (default: the provider's own API).
    #[arg(long, env = "JARVIS_TTS_URL")]
    pub tts_url: Option<String>,

    /// API key of a cloud TTS engine; read by the router only.
    #[arg(long, env = "JARVIS_TTS_API_KEY", hide_env_values = true)]
    pub tts_api_key: Option<String>,

    /// The engine's model (`gpt-4o-mini-tts`, `eleven_flash_v2_5`, …).
    #[arg(long, env = "JARVIS_TTS_MODEL")]
    pub tts_model: Option<String>,

    /// The engine's voice (`en-us` for espeak, `alloy`, an ElevenLabs voice id).
    #[arg(long, env = "JARVIS_TTS_VOICE")]
    pub tts_voice: Option<String>,

    /// Longest one synthesis may take before it counts as failed.
    #[arg(long, env = "JARVIS_TTS_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub tts_timeout: Duration,

    /// The Python that has `piper-tts` (the `piper` engine).
    #[arg(
        long,
        env = "JARVIS_PIPER_BIN",
        default_value = ".tools/piper/bin/python"
    )]
    pub piper_bin: PathBuf,

    /// The Piper voice model (`.onnx`, with its `.onnx.json` beside it).
    #[arg(
        long,
        env = "JARVIS_PIPER_MODEL",
        default_value = ".tools/piper/voices/en_US-joe-medium.onnx"
    )]
    pub piper_model: PathBuf,

    /// Characters of one answer that are spoken at most (the rest is only text).
    #[arg(long, env = "JARVIS_VOICE_MAX_CHARS", default_value_t = 2000)]
    pub voice_max_chars: u32,

    /// How long a signed voice URL stays valid.
    #[arg(long, env = "JARVIS_VOICE_URL_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub voice_url_ttl: Duration,
}

/// Default host uids of local sandboxes: above the ranges systemd gives to users,
/// dynamic users and containers (`/etc/subuid` ranges start at 100000), below 2^31.
pub const DEFAULT_SANDBOX_UIDS: &str = "1900000000-1900999999";

/// Default size of a local sandbox's `/tmp`.
pub const DEFAULT_SANDBOX_TMP: u64 = 512 * 1024 * 1024;

/// An inclusive range of host uids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidRange {
    /// The first uid.
    pub first: u32,
    /// The last uid (included).
    pub last: u32,
}

impl UidRange {
    /// Parses `FIRST-LAST`: both numbers, `1000 <= FIRST <= LAST < 2^32 - 1`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a uid range FIRST-LAST, e.g. {DEFAULT_SANDBOX_UIDS}");
        let (first, last) = text.trim().split_once('-').ok_or_else(bad)?;
        let first: u32 = first.trim().parse().map_err(|_| bad())?;
        let last: u32 = last.trim().parse().map_err(|_| bad())?;
        if first < 1000 {
            return Err(format!(
                "{text:?}: sandbox uids start at 1000 or above (system users live below)"
            ));
        }
        if last < first || last == u32::MAX {
            return Err(bad());
        }
        Ok(Self { first, last })
    }

    /// Whether `uid` is in the range.
    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }
}

/// Default address-space limit of a sandbox process (the CLI reserves much more
/// virtual memory than it uses).
pub const DEFAULT_SANDBOX_MEMORY: u64 = 8 * 1024 * 1024 * 1024;

impl Config {
    /// Whether Supabase Auth issues the tokens (then the built-in accounts are off).
    pub fn supabase_auth(&self) -> bool {
        self.supabase_jwt_secret.is_some() || self.supabase_url.is_some()
    }

    /// The model key, if one is set (an empty `ANTHROPIC_API_KEY` is none).
    pub fn model_key(&self) -> Option<&str> {
        self.anthropic_api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
    }

    /// The `/metrics` token, if one is set (an empty `JARVIS_METRICS_TOKEN` is none).
    pub fn metrics_token(&self) -> Option<&str> {
        self.metrics_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// Whether Stripe billing is on; with it off every account is active.
    pub fn billing_enabled(&self) -> bool {
        self.stripe_secret_key.is_some()
    }

    /// The base URL of links the router sends out (see `JARVIS_PUBLIC_URL`),
    /// without a trailing slash.
    pub fn public_url(&self) -> String {
        let configured = self
            .public_url
            .iter()
            .chain(&self.allowed_origins)
            .map(|u| u.trim().trim_end_matches('/'))
            .find(|u| !u.is_empty());
        match configured {
            Some(url) => url.to_string(),
            None => format!("http://{}", self.listen),
        }
    }

    /// The direct (or session-mode) URL: `DATABASE_DIRECT_URL`, else `DATABASE_URL`.
    pub fn direct_database_url(&self) -> &str {
        self.database_direct_url
            .as_deref()
            .unwrap_or(&self.database_url)
    }

    /// Whether `DATABASE_URL` is taken to be a transaction-mode pooler: a
    /// different `DATABASE_DIRECT_URL` is set.
    pub fn behind_pooler(&self) -> bool {
        self.direct_database_url() != self.database_url
    }

    /// The configuration with every default and nothing read from the environment
    /// (for tests and tools that build a router in-process).
    pub fn defaults() -> Self {
        Self {
            database_url: "postgres://localhost/jarvis".into(),
            database_direct_url: None,
            db_max_connections: 20,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            sandbox_listen: None,
            egress_listen: None,
            egress_deny: crate::egress::policy::DEFAULT_DENY.into(),
            egress_connect_timeout: Duration::from_secs(10),
            egress_idle_timeout: Duration::from_secs(300),
            egress_max_connections: 64,
            egress_approval_timeout: Duration::from_secs(60),
            metrics_token: None,
            backend: Backend::Local,
            storage: "file:./data/storage".into(),
            anthropic_api_key: None,
            model_upstream: "https://api.anthropic.com".into(),
            idle_timeout: Duration::from_secs(15 * 60),
            max_upload_bytes: 104_857_600,
            max_sockets_per_user: 16,
            max_agents: 1,
            warm_pool: 0,
            max_workspaces: None,
            capacity_wait: Duration::from_secs(300),
            supabase_jwt_secret: None,
            supabase_url: None,
            jwt_secret: None,
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_api_base: "https://api.stripe.com".into(),
            stripe_price_pro: None,
            stripe_price_enterprise: None,
            plans: None,
            billing_return_url: None,
            trust_forwarded_for: false,
            signups_per_address_per_hour: 10,
            signups_per_network_per_hour: 50,
            smtp_url: None,
            mail_from: None,
            public_url: None,
            log_format: "text".into(),
            redis_url: None,
            redis_key_prefix: "jarvis:".into(),
            allowed_origins: Vec::new(),
            sandbox_bin: None,
            workspaces_dir: "./data/workspaces".into(),
            run_dir: "./data/run".into(),
            claude_bin: ".tools/claude/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
                .into(),
            bwrap: "/usr/bin/bwrap".into(),
            sandbox_user: "jarvis-sandbox".into(),
            sandbox_uids: UidRange {
                first: 1_900_000_000,
                last: 1_900_999_999,
            },
            sandbox_tmp_bytes: DEFAULT_SANDBOX_TMP,
            workspace_max_bytes: 1024 * 1024 * 1024,
            workspace_max_files: 10_000,
            sleep_timeout: Duration::from_secs(600),
            sandbox_memory_bytes: DEFAULT_SANDBOX_MEMORY,
            sandbox_max_procs: 1024,
            sandbox_cpu_seconds: 4 * 3600,
            kube_namespace: "jarvis".into(),
            kube_api_url: None,
            kube_endpoint: KubeEndpoint::Service,
            wake_timeout: Duration::from_secs(60),
            web_dir: None,
            tts_engine: crate::voice::EngineKind::Espeak,
            tts_url: None,
            tts_api_key: None,
            tts_model: None,
            tts_voice: None,
            tts_timeout: Duration::from_secs(20),
            piper_bin: ".tools/piper/bin/python".into(),
            piper_model: ".tools/piper/voices/en_US-joe-medium.onnx".into(),
            voice_max_chars: 2000,
            voice_url_ttl: Duration::from_secs(3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_documented_table() {
        // Only fields that the test environment cannot set are compared.
        let parsed = Config::try_parse_from(["router"]).expect("defaults parse");
        let defaults = Config::defaults();
        assert_eq!(parsed.listen, defaults.listen);
        assert_eq!(parsed.idle_timeout, defaults.idle_timeout);
        assert_eq!(parsed.max_upload_bytes, defaults.max_upload_bytes);
        assert_eq!(parsed.max_agents, defaults.max_agents);
        assert_eq!(parsed.max_sockets_per_user, defaults.max_sockets_per_user);
        assert_eq!(parsed.backend, Backend::Local);
        assert_eq!(
            parsed.signups_per_address_per_hour,
            defaults.signups_per_address_per_hour
        );
        assert_eq!(
            parsed.signups_per_network_per_hour,
            defaults.signups_per_network_per_hour
        );
    }

    #[test]
    fn the_public_url_comes_from_configuration_only() {
        let mut c = Config::defaults();
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        c.allowed_origins = vec!["https://app.example.com/".into()];
        assert_eq!(c.public_url(), "https://app.example.com");
        c.public_url = Some("https://jarvis.example.com".into());
        assert_eq!(c.public_url(), "https://jarvis.example.com");
    }

    #[test]
    fn uid_ranges_parse_and_refuse_system_uids() {
        let c = Config::try_parse_from(["router"]).expect("defaults parse");
        assert_eq!(c.sandbox_uids, Config::defaults().sandbox_uids);
        assert_eq!(
            UidRange::parse("200000-200009"),
            Ok(UidRange {
                first: 200_000,
                last: 200_009
            })
        );
        for bad in [
            "",
            "5",
            "0-100",
            "999-2000",
            "3000-2000",
            "a-b",
            "1000-4294967295",
        ] {
            assert!(UidRange::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_parse_in_human_form() {
        let c = Config::try_parse_from(["router", "--idle-timeout", "1h30m"]).expect("parses");
        assert_eq!(c.idle_timeout, Duration::from_secs(5400));
        assert!(Config::try_parse_from(["router", "--idle-timeout", "soon"]).is_err());
    }
}
