//! Who is calling.
//!
//! Access tokens are JWTs of one shape whoever issued them: Supabase Auth (when
//! configured) or the router's built-in accounts. [`Authenticator`] verifies them;
//! the built-in side also issues them. Refresh tokens, passwords, email
//! normalisation and verification, and the sign-up and login throttles are the
//! built-in accounts' other parts.

use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

/// The one normalised form of email addresses.
pub mod email;
/// Verifies Supabase keys fetched from the project's JWKS endpoint.
pub mod jwks;
/// Built-in accounts' access tokens (HS256, signed by the router).
pub mod local;
/// argon2id password hashing, off the async executor.
pub mod password;
/// Opaque refresh tokens with rotation and reuse detection.
pub mod refresh;
/// Sign-up throttling per client address and network.
pub mod signups;
/// Supabase Auth token verification (HS256 secret and JWKS).
pub mod supabase;
/// Login throttling per account and client network, and per network.
pub mod throttle;
/// Email verification links of built-in accounts.
pub mod verification;

/// How often [`spawn_pruner`] clears expired throttle rows.
const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);

/// Clears expired sign-up and login throttle rows every [`PRUNE_EVERY`] (each
/// replica does; the deletes are idempotent).
pub fn spawn_pruner(db: sqlx::PgPool) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            every.tick().await;
            let pruned = async {
                Ok::<_, sqlx::Error>(throttle::prune(&db).await? + signups::prune(&db).await?)
            };
            match pruned.await {
                Ok(0) => {}
                Ok(rows) => tracing::debug!(rows, "expired throttle rows pruned"),
                Err(error) => tracing::warn!(%error, "pruning throttle rows failed"),
            }
        }
    });
}

/// The audience every accepted access token must name (Supabase's value).
pub const AUDIENCE: &str = "authenticated";
/// How long a built-in access token lives.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Clock skew tolerated when checking `exp`.
const LEEWAY_SECS: u64 = 30;

/// Why a token was refused. Each maps to a 401 (or a 503 when keys can't be had).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token has expired: the client should refresh it.
    #[error("the access token has expired")]
    Expired,
    /// Bad signature, wrong algorithm, audience or issuer, or not a JWT at all.
    #[error("the access token is not valid")]
    Invalid,
    /// A valid token of a kind that may not act as a user (`anon`, anonymous sign-in).
    #[error("this token does not belong to a signed-in user")]
    NotAUser,
    /// The signing keys could not be fetched to check the token.
    #[error("token signing keys are unavailable")]
    KeysUnavailable(#[source] reqwest::Error),
}

impl From<jsonwebtoken::errors::Error> for AuthError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => Self::Expired,
            _ => Self::Invalid,
        }
    }
}

/// The claims Jarvis reads from any access token (Supabase's names).
#[derive(Debug, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// The user's email address (may be empty for phone sign-ins).
    #[serde(default)]
    pub email: Option<String>,
    /// `authenticated` for users; `anon` and `service_role` are refused.
    #[serde(default)]
    pub role: Option<String>,
    /// Supabase's anonymous sign-ins carry `true`.
    #[serde(default)]
    pub is_anonymous: Option<bool>,
}

/// A verified caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user's id (for Supabase, the token's `sub`).
    pub user_id: Uuid,
    /// The address the token carries, if any.
    pub email: Option<String>,
}

impl Claims {
    /// Checks what the signature alone does not: that a user is speaking.
    fn into_identity(self) -> Result<Identity, AuthError> {
        if self.role.as_deref() != Some(AUDIENCE) || self.is_anonymous == Some(true) {
            return Err(AuthError::NotAUser);
        }
        let user_id = Uuid::parse_str(&self.sub).map_err(|_| AuthError::Invalid)?;
        Ok(Identity {
            user_id,
            email: self.email.filter(|e| !e.is_empty()),
        })
    }
}

/// Verifies access tokens; issues them too when accounts are built in.
pub enum Authenticator {
    /// The router's own accounts.
    Local(local::LocalTokens),
    /// Supabase Auth issues the tokens; the router only verifies them.
    Supabase(Box<supabase::SupabaseVerifier>),
}

impl Authenticator {
    /// Verifies `token` and names its user.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        match self {
            Self::Local(l) => l.verify(token),
            Self::Supabase(s) => s.verify(token).await,
        }
    }

    /// The built-in token issuer, when accounts are built in.
    pub fn local(&self) -> Option<&local::LocalTokens> {
        match self {
            Self::Local(l) => Some(l),
            Self::Supabase(_) => None,
        }
    }
}
