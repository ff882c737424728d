//! The router's HTTP API for the sandbox's own requests (`/v1/workspace/…` with
//! the workspace token as `x-api-key`, like [`crate::sync::RouterSync`]): storing
//! numbered events (the outbox posts them) and the Jarvis tool calls.
//!
//! Owns the requests and how their answers are classified (retry, refusal,
//! result); when to send and what to send is the outbox's and the hub's business.

use std::{sync::Arc, time::Duration};

use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::time::Instant;

use crate::{
    credentials::Credentials,
    protocol::{ErrorBody, ToolCall},
};

/// The events route (see DESIGN: `POST /v1/workspace/events`).
pub const EVENTS_PATH: &str = "v1/workspace/events";
/// The Jarvis tool calls route (`POST /v1/workspace/calls`).
pub const CALLS_PATH: &str = "v1/workspace/calls";
/// The longest pause between two attempts of a call.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The first pause before a call is tried again.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// `code`s of the errors a call gets when the router does not answer it.
pub mod call_error {
    /// The router could not be reached (or answered 5xx) until the call timed out.
    pub const ROUTER_UNAVAILABLE: &str = "router_unavailable";
    /// The router refused the workspace token (the workspace is going to sleep).
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// The router answered something that is neither a result nor an error.
    pub const ROUTER_ERROR: &str = "router_error";
}

/// Why a request to the router failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer: the connection failed or the request timed out.
    #[error("the router could not be reached: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// An answer other than 200.
    #[error("the router answered {status}: {body}")]
    Status {
        /// The answer's status.
        status: StatusCode,
        /// The start of its body.
        body: String,
    },
    /// A 200 whose body is not JSON.
    #[error("the router's answer is not JSON: {0}")]
    NotJson(#[source] reqwest::Error),
}

impl ApiError {
    /// Worth trying again with the same request: no answer, or a 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            Self::Status { status, .. } => status.is_server_error(),
            Self::NotJson(_) => false,
        }
    }

    /// The router refused the workspace token.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Status { status, .. } if *status == StatusCode::UNAUTHORIZED)
    }
}

/// A client of the router's `/v1/workspace/…` routes for one workspace.
#[derive(Clone)]
pub struct RouterApi {
    client: reqwest::Client,
    base: Url,
    credentials: Arc<Credentials>,
}

impl std::fmt::Debug for RouterApi {
    // Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterApi")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl RouterApi {
    /// A client of the router at `gateway_url` presenting the workspace `token`;
    /// `None` when the URL cannot be a base.
    pub fn new(gateway_url: &str, token: &str) -> Option<Self> {
        Self::with_credentials(gateway_url, Credentials::assigned(token))
    }

    /// A client of the router at `gateway_url` presenting the workspace token
    /// `credentials` hold at the time of each request (none yet: every request
    /// is refused as unauthorized without being sent).
    pub fn with_credentials(gateway_url: &str, credentials: Arc<Credentials>) -> Option<Self> {
        let base = Url::parse(&format!("{}/", gateway_url.trim_end_matches('/')))
            .ok()
            .filter(|u| !u.cannot_be_a_base())?;
        Some(Self {
            client: reqwest::Client::new(),
            base,
            credentials,
        })
    }

    /// POSTs `body` to `path` (relative to the base) and returns the 200 answer's JSON.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let url = self.base.join(path).unwrap_or_else(|_| self.base.clone());
        let Some(token) = self.credentials.token() else {
            return Err(ApiError::Status {
                status: StatusCode::UNAUTHORIZED,
                body: "the sandbox has no workspace yet".into(),
            });
        };
        let response = self
            .client
            .post(url)
            .header("x-api-key", &*token)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(ApiError::Unreachable)?;
        let status = response.status();
        if status != StatusCode::OK {
            let text = response.text().await.unwrap_or_default();
            let body: String = text.chars().take(300).collect();
            return Err(ApiError::Status { status, body });
        }
        response.json().await.map_err(ApiError::NotJson)
    }

    /// Carries out a Jarvis tool call: POSTs it to the router, trying again with
    /// the same `call_id` on connection errors and 5xx until `timeout` has passed.
    pub async fn call(
        &self,
        conversation_id: Option<String>,
        call: &ToolCall,
        timeout: Duration,
    ) -> Result<Value, ErrorBody> {
        let body = call_body(&uuid::Uuid::new_v4().to_string(), conversation_id, call);
        let deadline = Instant::now() + timeout;
        let mut pause = FIRST_BACKOFF;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(error(
                    call_error::ROUTER_UNAVAILABLE,
                    "the router did not answer the call in time",
                ));
            }
            match self.post(CALLS_PATH, &body, remaining).await {
                Ok(answer) => return call_answer(answer),
                Err(failure) if failure.is_retryable() => {
                    tracing::warn!(error = %failure, "a Jarvis tool call failed; trying again");
                    tokio::time::sleep(pause.min(remaining)).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
                Err(failure) if failure.is_unauthorized() => {
                    tracing::error!("the router refused the workspace token for a tool call");
                    return Err(error(
                        call_error::UNAUTHORIZED,
                        "the router refused the workspace token",
                    ));
                }
                Err(failure) => {
                    tracing::error!(error = %failure, "the router refused a Jarvis tool call");
                    return Err(error(call_error::ROUTER_ERROR, failure.to_string()));
                }
            }
        }
    }
}

fn error(code: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        code: code.to_string(),
        message: message.into(),
    }
}

/// `{"call_id", "conversation_id", "method", "params"}`.
pub fn call_body(call_id: &str, conversation_id: Option<String>, call: &ToolCall) -> Value {
    let mut body = serde_json::to_value(call).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(fields) = body.as_object_mut() {
        fields.insert("call_id".into(), Value::String(call_id.to_string()));
        fields.insert(
            "conversation_id".into(),
            conversation_id.map_or(Value::Null, Value::String),
        );
    }
    body
}

/// A 200 answer: `{"result": …}` or `{"error": {code, message}}`.
fn call_answer(mut answer: Value) -> Result<Value, ErrorBody> {
    if let Some(refusal) = answer.get("error").filter(|e| !e.is_null()) {
        return Err(serde_json::from_value(refusal.clone()).unwrap_or_else(|_| {
            error(
                call_error::ROUTER_ERROR,
                format!("an error without code and message: {refusal}"),
            )
        }));
    }
    match answer.get_mut("result") {
        Some(result) => Ok(result.take()),
        None => Err(error(
            call_error::ROUTER_ERROR,
            "the router's answer has neither result nor error",
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_call_body_is_the_tool_call_plus_its_ids() {
        let body = call_body("c1", Some("conv".into()), &ToolCall::ListDocuments {});
        assert_eq!(
            body,
            json!({"call_id": "c1", "conversation_id": "conv", "method": "list_documents", "params": {}})
        );
        let body = call_body("c2", None, &ToolCall::Speak { text: "hi".into() });
        assert_eq!(body["conversation_id"], Value::Null);
        assert_eq!(body["params"], json!({"text": "hi"}));
    }

    #[test]
    fn answers_become_results_or_refusals() {
        assert_eq!(call_answer(json!({"result": [1]})), Ok(json!([1])));
        assert_eq!(
            call_answer(json!({"error": {"code": "not_found", "message": "no"}}))
                .map_err(|e| e.code),
            Err("not_found".to_string())
        );
        assert_eq!(
            call_answer(json!({"nothing": 1})).map_err(|e| e.code),
            Err(call_error::ROUTER_ERROR.to_string())
        );
    }
}
