//! Workspaces: the sandbox that runs each user's agent, wherever it runs.
//!
//! This module owns the workspace token (the only credential a sandbox holds);
//! the backend trait and its `local` and `kubernetes` implementations live beside it.

/// Workspace tokens: issue on wake, verify at the gateway, revoke on sleep.
pub mod tokens;
