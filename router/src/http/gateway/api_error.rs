//! The gateway's errors, in the Anthropic API's shape
//! (`{"type":"error","error":{"type","message"}}`), because its client is the
//! Claude Code CLI, not the browser: the CLI shows `message` to the user (as
//! `API Error: Request rejected (429) · <message>` for a 429), and the sandbox
//! passes it on in its `error` event.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::limits::Refusal;

/// What a turn ends with while the router has no model key.
pub const NO_MODEL_KEY: &str = "this Jarvis has no model key: its operator must set \
     ANTHROPIC_API_KEY for the router (in its environment or .env) and restart it";

/// An error answered by the gateway itself.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Anthropic's error type (`authentication_error`, `rate_limit_error`, …).
    pub kind: &'static str,
    /// For people.
    pub message: String,
    /// `retry-after`, in seconds.
    pub retry_after: Option<u64>,
    /// Tells the Anthropic SDK not to retry (`x-should-retry: false`).
    pub final_: bool,
}

impl ApiError {
    /// An error with this status, type and message.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after: None,
            final_: false,
        }
    }

    /// 401: no valid workspace token.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
    }

    /// 500: our fault; the cause is logged here and not shown.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "gateway failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "the model gateway failed; please try again",
        )
    }

    /// 502: the upstream could not be reached.
    pub fn unreachable() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "the model service could not be reached; please try again",
        )
    }

    /// 401: the router has no model key, so no call can succeed; said without
    /// calling the upstream. The CLI shows it as "Failed to authenticate. API
    /// Error: 401 <message>", and the sandbox passes that on as the turn's error.
    pub fn no_model_key() -> Self {
        Self {
            final_: true,
            ..Self::unauthenticated(NO_MODEL_KEY)
        }
    }

    /// 401: the upstream refused the router's key; `detail` is what it said.
    pub fn key_refused(detail: &str) -> Self {
        Self {
            final_: true,
            ..Self::unauthenticated(format!(
                "the model service refused the router's ANTHROPIC_API_KEY ({detail}); \
                 its operator must set a valid key and restart it"
            ))
        }
    }

    /// The body for `status` when the upstream sent no Anthropic error body.
    pub fn from_upstream_status(status: StatusCode) -> Self {
        let kind = match status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        Self::new(
            status,
            kind,
            format!("the model service answered {}", status.as_u16()),
        )
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let message = refusal.to_string();
        match refusal {
            Refusal::NoAccount => Self::unauthenticated(message),
            Refusal::Disabled
            | Refusal::SubscriptionInactive { .. }
            | Refusal::PlanWithoutModel { .. }
            | Refusal::EmailUnverified
            | Refusal::VerificationUnavailable => Self {
                final_: true,
                ..Self::new(StatusCode::FORBIDDEN, "permission_error", message)
            },
            // Final too: the CLI would otherwise retry silently for minutes while
            // the browser shows nothing. The user sees when to try again.
            Refusal::RateLimited { retry_after, .. } => Self {
                retry_after: Some(retry_after),
                final_: true,
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
            },
            // 429 rather than 403: the CLI prints a 429's message as it is, while a
            // 403 is shown as "Failed to authenticate", which misleads. Retrying
            // cannot help before the month ends, so the SDK is told not to.
            Refusal::QuotaExhausted { .. } => Self {
                final_: true,
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
            },
            Refusal::Database(error) => Self::internal(&error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"type": "error", "error": {"type": self.kind, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.final_ {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}
