//! What a model call may ask for: the gateway forwards only what a Claude Code
//! turn needs, decided by the caller's plan (`plans::Plan`).
//!
//! - `model` must be on the plan's `models` list;
//! - `max_tokens` may not exceed the plan's `max_tokens`;
//! - `tools` may only be client tools (no `type`, or `type: "custom"`), which the
//!   CLI runs in the sandbox. Server tools (`web_search_*`, `web_fetch_*`,
//!   `code_execution_*`, …) and `mcp_servers` make the model provider reach the
//!   network for the user and bill per use, so they pass only on a plan with
//!   `server_tools`;
//! - `anthropic-beta` values are forwarded only from [`KNOWN_BETAS`] (and, on a plan
//!   with `server_tools`, [`SERVER_TOOL_BETA_PREFIXES`]); others are dropped, not
//!   refused. A beta only switches a feature on: the features that cost money or
//!   reach the network are refused above by the body whatever the betas say, an
//!   unknown beta's feature fails upstream with the provider's own message, and a
//!   CLI update that adds a harmless beta keeps working instead of failing every
//!   turn until this list is updated. Dropping also keeps out betas that would reach
//!   the operator's own account data (`files-api-*`: files by id).
//!
//! A refusal is a 400 `invalid_request_error` naming what was refused; nothing is
//! forwarded. Only the fields checked are read (the rest of the body is skipped, not
//! copied), and the body goes upstream unchanged.

use axum::http::{HeaderMap, HeaderValue};
use serde::{Deserialize, de::IgnoredAny};

use crate::plans::{Plan, Tier};

/// The `anthropic-beta` values forwarded: what the pinned CLI (2.1.331) sends for
/// a turn, with any model, plus the side-query and caching betas it may add.
pub const KNOWN_BETAS: &[&str] = &[
    "claude-code-20250219",
    "interleaved-thinking-2025-05-14",
    "context-management-2025-06-27",
    "per-turn-control-2026-07-01",
    "mid-conversation-tool-changes-2026-07-01",
    "thinking-token-count-2026-05-13",
    "effort-2025-11-24",
    "thinking-display-updates-2026-08-18",
    "claude-code-side-query-2026-09-29",
    "structured-outputs-2025-12-15",
    "prompt-caching-scope-2026-01-05",
    "redact-thinking-2026-02-12",
];

/// Betas of server tools and MCP servers, forwarded only on a plan with `server_tools`.
pub const SERVER_TOOL_BETA_PREFIXES: &[&str] = &[
    "web-search-",
    "web-fetch-",
    "code-execution-",
    "mcp-client-",
    "mcp-servers-",
];

/// Why a call is refused. The messages are shown to the user by the CLI.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The body is not a Messages API request.
    #[error("the request body is not a Messages API request: {0}")]
    Malformed(String),
    /// No `model`.
    #[error("the request names no model")]
    NoModel,
    /// The plan does not include the model.
    #[error("the model {model} is not available on the {tier} plan (available: {available})")]
    Model {
        /// The model asked for.
        model: String,
        /// The caller's tier.
        tier: Tier,
        /// The plan's list, comma-separated.
        available: String,
    },
    /// `max_tokens` over the plan's cap.
    #[error("max_tokens {asked} is more than the {tier} plan allows ({cap})")]
    MaxTokens {
        /// What the call asked for.
        asked: u64,
        /// The plan's cap.
        cap: u32,
        /// The caller's tier.
        tier: Tier,
    },
    /// A server tool on a plan without them.
    #[error(
        "the server tool {kind} is not available on the {tier} plan (only tools run in the workspace are)"
    )]
    ServerTool {
        /// The tool's `type`.
        kind: String,
        /// The caller's tier.
        tier: Tier,
    },
    /// `mcp_servers` on a plan without server tools.
    #[error("mcp_servers are not available on the {tier} plan")]
    McpServers {
        /// The caller's tier.
        tier: Tier,
    },
}

/// The fields of a Messages (or `count_tokens`) request the policy reads.
#[derive(Deserialize)]
pub struct Call {
    model: Option<String>,
    max_tokens: Option<u64>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    mcp_servers: Option<Vec<IgnoredAny>>,
}

#[derive(Deserialize)]
struct Tool {
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl Call {
    /// Reads what the policy checks from a call's body; needs no plan, so the
    /// gateway reads it while the caller's account is being looked up.
    pub fn read(body: &[u8]) -> Result<Self, Refused> {
        serde_json::from_slice(body).map_err(|e| Refused::Malformed(e.to_string()))
    }

    /// Checks the call against `plan` (the plan of `tier`).
    pub fn check(self, plan: &Plan, tier: Tier) -> Result<(), Refused> {
        let model = self.model.ok_or(Refused::NoModel)?;
        if !plan.allows_model(&model) {
            return Err(Refused::Model {
                model,
                tier,
                available: plan.models.join(", "),
            });
        }
        if let Some(asked) = self.max_tokens
            && asked > u64::from(plan.max_tokens)
        {
            return Err(Refused::MaxTokens {
                asked,
                cap: plan.max_tokens,
                tier,
            });
        }
        if plan.server_tools {
            return Ok(());
        }
        for tool in self.tools.iter().flatten() {
            if let Some(kind) = tool.kind.as_deref().filter(|k| *k != "custom") {
                return Err(Refused::ServerTool {
                    kind: kind.to_string(),
                    tier,
                });
            }
        }
        if self.mcp_servers.is_some_and(|servers| !servers.is_empty()) {
            return Err(Refused::McpServers { tier });
        }
        Ok(())
    }
}

/// Checks the body of one call against `plan` (the plan of `tier`).
pub fn check(plan: &Plan, tier: Tier, body: &[u8]) -> Result<(), Refused> {
    Call::read(body)?.check(plan, tier)
}

/// The `anthropic-beta` value to forward: the known betas among `headers`' (every
/// `anthropic-beta` header, comma-separated values), in their order; `None` when
/// none is left. Dropped values are logged.
pub fn forwarded_betas(plan: &Plan, headers: &HeaderMap) -> Option<HeaderValue> {
    let mut kept: Vec<&str> = Vec::new();
    for value in headers.get_all("anthropic-beta") {
        let Ok(value) = value.to_str() else {
            tracing::info!("dropped a non-text anthropic-beta header");
            continue;
        };
        for beta in value.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            if is_forwarded(plan, beta) {
                if !kept.contains(&beta) {
                    kept.push(beta);
                }
            } else {
                tracing::info!(beta, "dropped an unknown anthropic-beta value");
            }
        }
    }
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(",")).ok()
}

fn is_forwarded(plan: &Plan, beta: &str) -> bool {
    KNOWN_BETAS.contains(&beta)
        || (plan.server_tools
            && SERVER_TOOL_BETA_PREFIXES
                .iter()
                .any(|prefix| beta.starts_with(prefix)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plans::Plans;
    use serde_json::json;

    fn free() -> Plan {
        Plans::default().get(Tier::Free).clone()
    }

    fn check_json(plan: &Plan, body: serde_json::Value) -> Result<(), Refused> {
        check(plan, Tier::Free, body.to_string().as_bytes())
    }

    #[test]
    fn what_the_cli_sends_passes() {
        let body = json!({
            "model": "claude-opus-5-5", "max_tokens": 128000, "stream": true,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "Bash", "description": "d", "input_schema": {"type": "object"}},
                      {"name": "mcp__jarvis__speak", "type": "custom", "input_schema": {}}],
            "thinking": {"type": "adaptive"}, "output_config": {"effort": "medium"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015"}]}
        });
        assert_eq!(check_json(&free(), body), Ok(()));
        let count = json!({"model": "claude-haiku-5-5", "messages": []});
        assert_eq!(
            check_json(&free(), count),
            Ok(()),
            "count_tokens has no max_tokens"
        );
    }

    #[test]
    fn refusals_name_what_was_refused() {
        let plan = free();
        let refused = |body| check_json(&plan, body).expect_err("refused").to_string();
        assert!(
            refused(json!({"model": "claude-opus-3", "max_tokens": 1}))
                .starts_with("the model claude-opus-3 is not available on the free plan")
        );
        assert_eq!(
            refused(json!({"model": "claude-opus-5-5", "max_tokens": 128001})),
            "max_tokens 128001 is more than the free plan allows (128000)"
        );
        assert!(
            refused(json!({"model": "claude-opus-5-5", "max_tokens": 1,
                           "tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}))
            .starts_with("the server tool web_fetch_20250910 is not available")
        );
        assert_eq!(
            refused(
                json!({"model": "claude-opus-5-5", "mcp_servers": [{"type": "url", "url": "https://x"}]})
            ),
            "mcp_servers are not available on the free plan"
        );
        assert_eq!(
            refused(json!({"max_tokens": 1})),
            "the request names no model"
        );
        assert!(refused(json!({"model": 5})).starts_with("the request body is not"));
        assert!(
            check(&plan, Tier::Free, b"not json")
                .expect_err("refused")
                .to_string()
                .starts_with("the request body is not a Messages API request")
        );
    }

    #[test]
    fn a_plan_with_server_tools_lets_them_through() {
        let plan = Plan {
            server_tools: true,
            ..free()
        };
        let body = json!({"model": "claude-opus-5-5", "max_tokens": 1,
                          "tools": [{"type": "web_search_20250305", "name": "web_search"}],
                          "mcp_servers": [{"type": "url", "url": "https://x"}]});
        assert_eq!(check_json(&plan, body), Ok(()));
    }

    #[test]
    fn only_known_betas_are_forwarded() {
        let mut headers = HeaderMap::new();
        headers.append(
            "anthropic-beta",
            HeaderValue::from_static(
                "claude-code-20250219, files-api-2025-04-14,web-fetch-2025-09-10",
            ),
        );
        headers.append(
            "anthropic-beta",
            HeaderValue::from_static("effort-2025-11-24,claude-code-20250219"),
        );
        assert_eq!(
            forwarded_betas(&free(), &headers),
            Some(HeaderValue::from_static(
                "claude-code-20250219,effort-2025-11-24"
            ))
        );
        let tools = Plan {
            server_tools: true,
            ..free()
        };
        assert_eq!(
            forwarded_betas(&tools, &headers),
            Some(HeaderValue::from_static(
                "claude-code-20250219,web-fetch-2025-09-10,effort-2025-11-24"
            ))
        );
        let mut unknown = HeaderMap::new();
        unknown.insert(
            "anthropic-beta",
            HeaderValue::from_static("files-api-2025-04-14"),
        );
        assert_eq!(forwarded_betas(&free(), &unknown), None);
        assert_eq!(forwarded_betas(&free(), &HeaderMap::new()), None);
    }
}
