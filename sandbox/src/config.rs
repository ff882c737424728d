//! The sandbox's configuration: command-line flags, each also read from the environment.
//!
//! Parsed once in `main` and passed down; nothing else reads the environment.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

/// How the sandbox is started (by the router's local backend or by a pod spec).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sandbox",
    version,
    about = "Runs the agent for one Jarvis user"
)]
pub struct Config {
    /// Where the router connects: `HOST:PORT` (port 0 picks one) or `unix:/path/to.sock`.
    #[arg(long, env = "JARVIS_SANDBOX_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: String,

    /// The workspace token: the router must present it, and the model calls and
    /// the sandbox's own requests to the router carry it.
    #[arg(
        long,
        env = "JARVIS_WORKSPACE_TOKEN",
        hide_env_values = true,
        required_unless_present = "claim_secret"
    )]
    pub workspace_token: Option<String>,

    /// Start unassigned (a warm pool's sandbox): no workspace token until the
    /// router claims the sandbox with this secret (`POST /v1/claim`). The CLI
    /// reaches the gateway through the sandbox's forwarder, which adds the token
    /// to model calls once there is one; with `--sync router` the claim restores
    /// the user's files and agent state before it is answered.
    #[arg(
        long,
        env = "JARVIS_CLAIM_SECRET",
        hide_env_values = true,
        conflicts_with = "workspace_token"
    )]
    pub claim_secret: Option<String>,

    /// Keep a CLI started for the next new conversation (one more CLI process
    /// than `--max-agents`): a new conversation's first answer skips the CLI's
    /// start-up. Needs `--gateway-socket` or `--claim-secret` (the CLI then
    /// calls the gateway through the forwarder).
    #[arg(long, env = "JARVIS_SPARE_AGENT")]
    pub spare_agent: bool,

    /// The model gateway's base URL (the router), e.g. `http://router:8080`.
    #[arg(long, env = "JARVIS_GATEWAY_URL", conflicts_with = "gateway_socket")]
    pub gateway_url: Option<String>,

    /// A unix socket that reaches the model gateway (local mode: bound into the jail).
    #[arg(long, env = "JARVIS_GATEWAY_SOCKET")]
    pub gateway_socket: Option<PathBuf>,

    /// A unix socket that reaches the router's egress proxy (local mode: bound
    /// into the jail). The agent gets a loopback proxy relaying to it.
    #[arg(long, env = "JARVIS_EGRESS_SOCKET", conflicts_with = "egress_proxy")]
    pub egress_socket: Option<PathBuf>,

    /// The router's egress proxy as `HOST:PORT` (pods: the router Service's
    /// egress port). The agent gets a loopback proxy relaying to it. Without
    /// this or `--egress-socket` the agent has no proxy (and no network).
    #[arg(long, env = "JARVIS_EGRESS_PROXY")]
    pub egress_proxy: Option<String>,

    /// The Claude Code CLI binary.
    #[arg(long, env = "JARVIS_CLAUDE_BIN")]
    pub claude_bin: PathBuf,

    /// The workspace directory: the agent's working directory.
    #[arg(long, env = "JARVIS_WORKSPACE_DIR", default_value = "/workspace")]
    pub workspace_dir: PathBuf,

    /// The state directory the router syncs: the CLI's HOME (transcripts) and the
    /// sandbox's per-conversation state.
    #[arg(long, env = "JARVIS_STATE_DIR")]
    pub state_dir: PathBuf,

    /// CLI processes kept alive at most; more conversations evict the least recently used.
    #[arg(long, env = "JARVIS_MAX_AGENTS", default_value_t = 1)]
    pub max_agents: usize,

    /// How long a running turn may go without a line from the CLI before it is
    /// killed and the turn fails (e.g. `300s`, `2m`); the wait for the CLI's first
    /// line of a turn (its start-up) is at least 60 s.
    #[arg(long, env = "JARVIS_TURN_IDLE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub turn_idle_timeout: Duration,

    /// How long a Jarvis tool call may take, retries included (`POST
    /// /v1/workspace/calls` is tried again on connection errors and 5xx).
    #[arg(long, env = "JARVIS_CALL_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub call_timeout: Duration,

    /// Run the CLI as this uid (e.g. `jarvis-sandbox`'s) when the sandbox runs as root.
    #[arg(long, env = "JARVIS_CLI_UID")]
    pub cli_uid: Option<u32>,

    /// Run the CLI with this gid (defaults to the uid's number when only the uid is set).
    #[arg(long, env = "JARVIS_CLI_GID")]
    pub cli_gid: Option<u32>,

    /// Model API retries the CLI makes before it reports an error (429/529/5xx).
    #[arg(long, env = "JARVIS_CLI_MAX_RETRIES", default_value_t = 0)]
    pub cli_max_retries: u32,

    /// The model the CLI asks for; the CLI's default when absent.
    #[arg(long, env = "JARVIS_MODEL")]
    pub model: Option<String>,

    /// Who syncs the workspace and state directories with storage: `off` (the
    /// router does it from the host: the local backend) or `router` (the sandbox
    /// pulls them from the router before it is ready and pushes changes after each
    /// turn and on SIGTERM: pods, whose disks the router cannot reach).
    #[arg(long = "sync", env = "JARVIS_SYNC", value_enum, default_value_t = SyncMode::Off)]
    pub sync: SyncMode,

    /// PATH given to the CLI and the agent's shell.
    #[arg(
        long,
        env = "JARVIS_CLI_PATH",
        default_value = "/usr/local/bin:/usr/bin:/bin"
    )]
    pub cli_path: String,
}

/// Who syncs the sandbox's directories (see [`Config::sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// Not the sandbox (the router syncs from the host).
    Off,
    /// The sandbox, through the router's `/v1/workspace/…` routes.
    Router,
}

/// Parses `300`, `300s`, `5m`, `250ms` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        _ => Err(format!("unknown duration unit in {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arguments every sandbox needs.
    const BASE: [&str; 7] = [
        "sandbox",
        "--workspace-token",
        "t",
        "--claude-bin",
        "c",
        "--state-dir",
        "s",
    ];

    #[test]
    fn sync_is_off_unless_asked_for() {
        let base = BASE;
        let config = Config::try_parse_from(base).expect("parses");
        assert_eq!(config.sync, SyncMode::Off);
        let config =
            Config::try_parse_from(base.iter().chain(&["--sync", "router"])).expect("parses");
        assert_eq!(config.sync, SyncMode::Router);
        assert!(Config::try_parse_from(base.iter().chain(&["--sync", "s3"])).is_err());
    }

    #[test]
    fn the_egress_proxy_is_a_socket_or_an_address_not_both() {
        let base = BASE;
        let config = Config::try_parse_from(base).expect("parses");
        assert_eq!((config.egress_socket, config.egress_proxy), (None, None));
        let config = Config::try_parse_from(
            base.iter()
                .chain(&["--egress-proxy", "jarvis-router.jarvis.svc:8082"]),
        )
        .expect("parses");
        assert_eq!(
            config.egress_proxy.as_deref(),
            Some("jarvis-router.jarvis.svc:8082")
        );
        assert!(
            Config::try_parse_from(base.iter().chain(&[
                "--egress-proxy",
                "router:8082",
                "--egress-socket",
                "/run/egress.sock"
            ]))
            .is_err()
        );
    }

    #[test]
    fn a_sandbox_has_a_token_or_a_claim_secret_not_both() {
        let claim = [
            "sandbox",
            "--claim-secret",
            "c",
            "--claude-bin",
            "c",
            "--state-dir",
            "s",
        ];
        let config = Config::try_parse_from(claim).expect("parses");
        assert_eq!(config.workspace_token, None);
        assert_eq!(config.claim_secret.as_deref(), Some("c"));
        assert!(
            Config::try_parse_from(BASE.iter().chain(&["--claim-secret", "c"])).is_err(),
            "both"
        );
        assert!(
            Config::try_parse_from(claim[..1].iter().chain(&claim[3..]).collect::<Vec<_>>())
                .is_err(),
            "neither"
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
