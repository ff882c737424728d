//! The sandbox: runs the agent (the Claude Code CLI) for one user and speaks the
//! router's protocol over WebSocket links (one per router replica).

/// Runs turns: CLI processes per conversation, LRU, interrupts, crashes.
pub mod agents;
/// Command-line and environment configuration.
pub mod config;
/// The workspace token, and the claim that gives a warm pool sandbox one.
pub mod credentials;
/// The agent's loopback HTTP proxy, relaying to the router's egress proxy.
pub mod egress_forward;
/// Forwards loopback TCP to the router's gateway socket (local mode).
pub mod gateway_forward;
/// Where the agent's installs (pip, npm) and caches go: the workspace.
pub mod installs;
/// A loopback listener spawning a task per connection (the forwarders').
pub mod loopback;
/// The Jarvis tools served to the CLI over MCP.
pub mod mcp;
/// Numbered events stored through the router over HTTP, in batches.
pub mod outbox;
/// One CLI child process.
pub mod process;
/// The router ⇄ sandbox wire types.
pub mod protocol;
/// Regenerate and edit: forgetting a turn and the turns after it.
pub mod rewind;
/// The router's HTTP API for the sandbox: storing events, Jarvis tool calls.
pub mod router_api;
/// Startup: wires the pieces together and serves.
pub mod run;
/// Sentences of a streaming answer, cleaned for speaking.
pub mod sentences;
/// The WebSocket endpoint for the router.
pub mod server;
/// Conversations, numbered events, replay and the router links.
pub mod session;
/// Which CLI session holds each conversation's history.
pub mod sessions;
/// Speaks an answer sentence by sentence while it streams.
pub mod speaker;
/// Workspace files and agent state ⇄ the router, for sandboxes whose disks the
/// router cannot reach (pods).
pub mod sync;
/// A fake Anthropic Messages API for tests.
#[cfg(feature = "test-support")]
pub mod testing;
/// CLI stream-json → protocol events.
pub mod translate;

use std::path::PathBuf;

/// Everything that can go wrong in the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("could not listen: {0}")]
    Bind(#[source] std::io::Error),
    /// The CLI could not be started.
    #[error("could not start the CLI at {path}: {source}")]
    Spawn {
        /// The CLI binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A directory could not be prepared.
    #[error("could not prepare {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Serving failed.
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The transcript of a replaced turn could not be removed.
    #[error("could not forget the replaced turns: {0}")]
    Rewind(#[source] std::io::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
