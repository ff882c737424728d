//! The model gateway: `POST /v1/messages` and `POST /v1/messages/count_tokens`,
//! the Anthropic Messages API as sandboxes see it.
//!
//! A sandbox's CLI calls it with its workspace token (as `x-api-key`, or
//! `Authorization: Bearer`). The gateway finds the token's user, admits the call
//! (`limits`: account standing, monthly token quota, rate limit by plan), then
//! forwards it to `JARVIS_MODEL_UPSTREAM` with the real `ANTHROPIC_API_KEY` and
//! streams the answer back chunk by chunk as it arrives, metering the tokens on
//! the way (`meter`). Before that the call must pass the plan's request policy
//! (`policy`: models, `max_tokens`, no server tools or MCP servers, known betas
//! only); a refused call is answered 400 and nothing is forwarded. The request body
//! goes upstream untouched; of the request headers only [`FORWARDED_REQUEST_HEADERS`]
//! and the known `anthropic-beta` values do, so the workspace token never leaves the
//! router. `count_tokens` is admitted like a message (standing, quota, rate limit)
//! but not metered: the provider does not bill it. Every call is counted in
//! `jarvis_gateway_calls_total` by endpoint and outcome.
//!
//! Errors are Anthropic-shaped (`api_error`), never the browser API's. Without
//! `ANTHROPIC_API_KEY` no call is forwarded: every one is answered 401 with a
//! message naming the variable (and the router warns at start), so a turn ends
//! with an error that says what is missing.
//!
//! These routes are served only to sandboxes (`http::sandbox_app`: the local
//! sandboxes' unix socket and `JARVIS_SANDBOX_LISTEN`), never on the public listener.
//!
//! The sandbox names the conversation in `X-Jarvis-Conversation` (the CLI's
//! `ANTHROPIC_CUSTOM_HEADERS`); the usage row keeps it only if it is the user's.

use std::time::Duration;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderName, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use futures::StreamExt;
use uuid::Uuid;

use super::AppState;
use crate::{
    config::Config,
    limits::RateLimiter,
    metrics::{GatewayLabels, Metrics},
};

/// Anthropic-shaped errors.
pub mod api_error;
/// Token counting and the `usage` rows.
pub mod meter;
/// What a call may ask for, by plan.
pub mod policy;

use api_error::ApiError;
use meter::{Call, Encoding};

/// Largest request body the gateway takes (prompts with long histories are big).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The header in which the sandbox names the conversation a call is for.
pub const CONVERSATION_HEADER: &str = "x-jarvis-conversation";

/// The CLI's own session header; the sandbox uses the conversation id as the
/// session id, so it names the conversation too when the header above is absent.
const SESSION_HEADER: &str = "x-claude-code-session-id";

/// Request headers passed upstream; everything else (credentials above all) is not.
/// `anthropic-beta` goes too, filtered by [`policy::forwarded_betas`].
pub const FORWARDED_REQUEST_HEADERS: &[&str] =
    &["content-type", "accept", "anthropic-version", "user-agent"];

/// Response headers passed back to the sandbox.
const FORWARDED_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "request-id",
    "retry-after",
    "x-should-retry",
];

/// Largest upstream error body read to check its shape.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The gateway's own state: the upstream client, the rate limiter and the meters.
pub struct Gateway {
    client: reqwest::Client,
    /// Requests per user per minute (Redis-backed when configured).
    pub limiter: RateLimiter,
    /// The meters of answers passing (drained on shutdown).
    pub meters: meter::Meters,
}

impl Gateway {
    /// Builds the client, and connects to Redis when `JARVIS_REDIS_URL` is set.
    pub async fn new(config: &Config) -> anyhow::Result<Self> {
        // No overall timeout: answers stream for minutes. A silent upstream is
        // cut after `read_timeout` (Anthropic pings every few seconds).
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(600))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        if config.model_key().is_none() {
            tracing::warn!(
                "ANTHROPIC_API_KEY is not set: every chat turn will end with an error \
                 until it is set (in the environment or .env) and the router restarted"
            );
        }
        let plans = plans_of(config)?;
        let limiter = match &config.redis_url {
            Some(url) => RateLimiter::redis(url, &config.redis_key_prefix, plans).await?,
            None => RateLimiter::in_process(plans),
        };
        Ok(Self {
            client,
            limiter,
            meters: meter::Meters::default(),
        })
    }
}

/// The plans of the configuration (`JARVIS_PLANS`, `STRIPE_PRICE_*`).
pub fn plans_of(config: &Config) -> Result<crate::plans::Plans, crate::plans::PlansError> {
    crate::plans::Plans::load(
        config.plans.as_deref(),
        config.stripe_price_pro.as_deref(),
        config.stripe_price_enterprise.as_deref(),
    )
}

/// The gateway's routes, with their own (large) body limit.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(create_message))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn create_message(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let forwarded = forward(&state, &uri, &headers, body, true).await;
    count(&state.metrics, "messages", &forwarded);
    forwarded
}

async fn count_tokens(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let forwarded = forward(&state, &uri, &headers, body, false).await;
    count(&state.metrics, "count_tokens", &forwarded);
    forwarded
}

/// Counts one call of `endpoint` by its outcome.
fn count(metrics: &Metrics, endpoint: &str, result: &Result<Response, ApiError>) {
    let outcome = match result {
        Ok(_) => "forwarded",
        Err(e) => match e.kind {
            "invalid_request_error" => "refused",
            "rate_limit_error" => "rate_limited",
            "authentication_error" | "permission_error" => "denied",
            _ => "failed",
        },
    };
    metrics
        .gateway_calls
        .get_or_create(&GatewayLabels {
            endpoint: endpoint.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

/// Authenticates, admits, checks and forwards one call; `metered` calls (messages)
/// have their usage recorded. Every call counts against the quota and rate limit.
async fn forward(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    metered: bool,
) -> Result<Response, ApiError> {
    let token = credential(headers)
        .ok_or_else(|| ApiError::unauthenticated("send the workspace token as `x-api-key`"))?;
    let revoked = || ApiError::unauthenticated("invalid or revoked workspace token");
    let digest = crate::workspaces::tokens::lookup_digest(token).ok_or_else(revoked)?;
    let standing = &state.sockets.standing;
    // The token's user and their account: as admitted a moment ago (then
    // nothing waits on Postgres), else read in one round trip while the body is
    // read for the policy. A remembered account only ever admits: whatever it
    // would refuse is judged again on what Postgres has now.
    let remembered = standing
        .token_account(&digest)
        .and_then(|(owner, account)| {
            let call = body.as_ref().ok().map(|b| policy::Call::read(&b[..]));
            admit(state, owner, &account, &body, call)
                .ok()
                .map(|()| (owner, account))
        });
    let (owner_id, account) = match remembered {
        Some(admitted) => admitted,
        None => {
            let lookup = crate::limits::account_of_digest(&state.db, &digest);
            let read = async { body.as_ref().ok().map(|b| policy::Call::read(&b[..])) };
            let (found, call) = tokio::join!(lookup, read);
            let (owner_id, account) = found
                .map_err(|e| ApiError::internal(&e))?
                .ok_or_else(revoked)?;
            admit(state, owner_id, &account, &body, call)?;
            standing.remember_token(digest, owner_id, &account);
            (owner_id, account)
        }
    };
    let Some(model_key) = state.config.model_key() else {
        return Err(ApiError::no_model_key());
    };
    // Judged readable by `admit`.
    let body = body.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            "invalid_request_error",
            rejection.body_text(),
        )
    })?;
    let plan = state.plans.get(account.tier);
    state.gateway.limiter.hit(owner_id, account.tier).await?;

    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!(
        "{}{path}",
        state.config.model_upstream.trim_end_matches('/')
    );
    let mut request = state.gateway.client.post(url).body(body);
    for name in FORWARDED_REQUEST_HEADERS {
        for value in headers.get_all(*name) {
            request = request.header(*name, value);
        }
    }
    if let Some(betas) = policy::forwarded_betas(plan, headers) {
        request = request.header("anthropic-beta", betas);
    }
    request = request.header("x-api-key", model_key);
    let upstream = request.send().await.map_err(|error| {
        tracing::warn!(%error, "model upstream unreachable");
        ApiError::unreachable()
    })?;

    let status = upstream.status();
    let mut response_headers = HeaderMap::new();
    for name in FORWARDED_RESPONSE_HEADERS {
        if let Some(value) = upstream.headers().get(*name) {
            response_headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    tracing::debug!(user.id = %owner_id, status = status.as_u16(), "model call forwarded");
    if !status.is_success() {
        return Ok(upstream_error(status, response_headers, upstream).await);
    }
    let body = if metered {
        let encoding = match response_headers.get(header::CONTENT_TYPE) {
            Some(v) if v.as_bytes().starts_with(b"text/event-stream") => Encoding::EventStream,
            _ => Encoding::Json,
        };
        let call = Call {
            owner_id,
            conversation_id: conversation_of(headers),
        };
        // What the answer used counts at once in the account remembered for
        // the next call (`http::standing`), as it will in Postgres.
        let sockets = state.sockets.clone();
        let meter = state
            .gateway
            .meters
            .start(state.db.clone(), call, encoding, move |seen| {
                let used = seen.tokens.all_input().saturating_add(seen.tokens.output);
                sockets.standing.add_tokens(owner_id, used);
            });
        Body::from_stream(upstream.bytes_stream().map(move |chunk| {
            if let Ok(chunk) = &chunk {
                meter.observe(chunk);
            }
            chunk
        }))
    } else {
        Body::from_stream(upstream.bytes_stream())
    };
    Ok((status, response_headers, body).into_response())
}

/// Judges one call of `owner`'s with `account` as it stands: a disabled
/// account or a plan without the model or its subscription, an unreadable or
/// too large body, what the plan's policy refuses, a quota used up. `call` is
/// the body as the policy reads it, when that was done already.
fn admit(
    state: &AppState,
    owner: Uuid,
    account: &crate::limits::Account,
    body: &Result<Bytes, BytesRejection>,
    call: Option<Result<policy::Call, policy::Refused>>,
) -> Result<(), ApiError> {
    account.check_standing(
        state.config.billing_enabled(),
        &state.plans,
        state.mailer.is_some(),
    )?;
    let body = body
        .as_ref()
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            ),
            status => ApiError::new(status, "invalid_request_error", rejection.body_text()),
        })?;
    let plan = state.plans.get(account.tier);
    let call = call.unwrap_or_else(|| policy::Call::read(body));
    call.and_then(|call| call.check(plan, account.tier))
        .map_err(|refused| {
            tracing::info!(user.id = %owner, %refused, "model call refused by the plan's policy");
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                refused.to_string(),
            )
        })?;
    account.check_quota(&state.plans, time::OffsetDateTime::now_utc())?;
    Ok(())
}

/// Passes an upstream error on with its status: its body as it is when it is an
/// Anthropic error, else an Anthropic error saying what the status was.
async fn upstream_error(
    status: StatusCode,
    headers: HeaderMap,
    mut upstream: reqwest::Response,
) -> Response {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = upstream.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    let anthropic_shaped = serde_json::from_slice::<serde_json::Value>(&body)
        .is_ok_and(|v| v["type"] == "error" && v["error"]["type"].is_string());
    tracing::info!(
        status = status.as_u16(),
        anthropic_shaped,
        "model upstream refused"
    );
    if status == StatusCode::UNAUTHORIZED {
        // The router's key, not the sandbox's token: say which key was refused.
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v["error"]["message"]
                    .as_str()
                    .map(|m| m.chars().take(200).collect())
            })
            .unwrap_or_else(|| "401".to_string());
        ApiError::key_refused(&detail).into_response()
    } else if anthropic_shaped {
        (status, headers, body).into_response()
    } else {
        let mut response = ApiError::from_upstream_status(status).into_response();
        response.headers_mut().extend(
            headers
                .into_iter()
                .filter(|(name, _)| name.as_ref().is_some_and(|n| n != header::CONTENT_TYPE)),
        );
        response
    }
}

/// The workspace token: `x-api-key`, or the bearer token of `Authorization`.
pub(crate) fn credential(headers: &HeaderMap) -> Option<&str> {
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty());
    api_key.or_else(|| {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    })
}

/// The conversation the sandbox named, if it is a well-formed id.
fn conversation_of(headers: &HeaderMap) -> Option<Uuid> {
    [CONVERSATION_HEADER, SESSION_HEADER]
        .iter()
        .find_map(|name| {
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn the_token_comes_from_x_api_key_or_a_bearer_header() {
        assert_eq!(credential(&headers(&[("x-api-key", "jw_a")])), Some("jw_a"));
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer jw_b")])),
            Some("jw_b")
        );
        assert_eq!(credential(&headers(&[("authorization", "Basic x")])), None);
        assert_eq!(credential(&headers(&[("x-api-key", " ")])), None);
    }

    #[test]
    fn the_conversation_header_wins_over_the_cli_session() {
        let a = "0b7e6c1e-0000-4000-8000-000000000001";
        let b = "0b7e6c1e-0000-4000-8000-000000000002";
        let h = headers(&[(CONVERSATION_HEADER, a), (SESSION_HEADER, b)]);
        assert_eq!(
            conversation_of(&h).map(|u| u.to_string()).as_deref(),
            Some(a)
        );
        let h = headers(&[(SESSION_HEADER, b)]);
        assert_eq!(
            conversation_of(&h).map(|u| u.to_string()).as_deref(),
            Some(b)
        );
        assert_eq!(
            conversation_of(&headers(&[(CONVERSATION_HEADER, "x")])),
            None
        );
    }
}
