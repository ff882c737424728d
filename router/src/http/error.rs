//! The error every handler returns, rendered as `{"error": {"code", "message"}}`.
//!
//! Client errors say what was wrong and change nothing. Server errors answer a
//! generic message; their cause is logged once, here, inside the request's span.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{auth::AuthError, storage::StorageError};

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credentials; `code` tells the client what to do.
    #[error("{message}")]
    Unauthorized {
        /// `unauthorized`, `token_expired`, `invalid_credentials`, ...
        code: &'static str,
        /// For people.
        message: String,
    },
    /// 403: known caller, not allowed.
    #[error("{message}")]
    Forbidden {
        /// Machine-readable reason.
        code: &'static str,
        /// For people.
        message: String,
    },
    /// 404: no such thing, or not the caller's (the two are not told apart).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: it exists already.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is too large.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 413: the plan's storage quota would be exceeded.
    #[error("{0}")]
    QuotaExceeded(String),
    /// 415: the body is not of a type this route takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but invalid values.
    #[error("{0}")]
    Invalid(String),
    /// 429: slow down; retry after the given seconds.
    #[error("{message}")]
    TooManyRequests {
        /// For people.
        message: String,
        /// Seconds until a retry can succeed.
        retry_after: Option<u64>,
    },
    /// 503: a dependency is down.
    #[error("{0}")]
    Unavailable(String),
    /// 500: the database failed.
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    /// 500 (404 for a missing object): storage failed.
    #[error("storage error")]
    Storage(#[from] StorageError),
    /// 500: anything else.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized { code, .. } => (StatusCode::UNAUTHORIZED, code),
            Self::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::NotFound(_) | Self::Storage(StorageError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::QuotaExceeded(_) => (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Sqlx(_) | Self::Storage(_) | Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }

    /// A 401 with the default code.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized {
            code: "unauthorized",
            message: message.into(),
        }
    }
}

impl From<crate::quota::QuotaError> for Error {
    fn from(e: crate::quota::QuotaError) -> Self {
        match e {
            crate::quota::QuotaError::Db(e) => Self::Sqlx(e),
            crate::quota::QuotaError::Storage(e) => Self::Storage(e),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
            "something went wrong on our side; please try again".to_string()
        } else {
            self.to_string()
        };
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        if let Self::TooManyRequests {
            retry_after: Some(secs),
            ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Expired => "token_expired",
            AuthError::Invalid => "invalid_token",
            AuthError::NotAUser => "not_a_user",
            AuthError::KeysUnavailable(_) => {
                tracing::error!(error = ?e, "cannot verify tokens");
                return Self::Unavailable(
                    "sign-in is unavailable right now; please retry shortly".into(),
                );
            }
        };
        Self::Unauthorized {
            code,
            message: e.to_string(),
        }
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge(format!(
                "the request body is larger than {} bytes",
                super::MAX_BODY_BYTES
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY => Self::Invalid(rejection.body_text()),
            _ => Self::BadRequest(rejection.body_text()),
        }
    }
}

/// Extension on database results: turns a violated constraint into a client error.
pub trait ResultExt<T> {
    /// Maps a violation of `name` to the error `f` makes; other errors pass through.
    fn on_constraint(self, name: &str, f: impl FnOnce() -> Error) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn on_constraint(self, name: &str, f: impl FnOnce() -> Error) -> Result<T> {
        self.map_err(|e| match e.into() {
            Error::Sqlx(sqlx::Error::Database(db)) if db.constraint() == Some(name) => f(),
            e => e,
        })
    }
}

/// The fallback for unknown routes.
pub async fn not_found() -> Error {
    Error::NotFound("route")
}
