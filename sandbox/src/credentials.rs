//! The workspace token this sandbox holds, and how an unassigned (warm pool)
//! sandbox is given one.
//!
//! A sandbox started for a user holds its token from the start. A warm pool
//! sandbox starts with only a claim secret (`--claim-secret`): until claimed it
//! serves nothing but the claim (`POST /v1/claim`, [`crate::server`]), its CLI
//! may already run (it has a placeholder key: the gateway forwarder adds the
//! token to each model call), and every request the sandbox itself would make
//! to the router waits for nothing and fails. The claim presents the secret and
//! hands over the workspace token, once: the secret is spent with it.

use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq;

/// The sandbox's workspace token, set at start or by the one claim.
#[derive(Default)]
pub struct Credentials {
    token: RwLock<Option<Arc<str>>>,
    claim_secret: RwLock<Option<String>>,
}

impl std::fmt::Debug for Credentials {
    // Never the token or the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("assigned", &self.token().is_some())
            .finish_non_exhaustive()
    }
}

/// Why a claim was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The secret presented is not this sandbox's (or it has none).
    #[error("the claim secret is not this sandbox's")]
    Refused,
    /// The sandbox was claimed already.
    #[error("the sandbox is claimed already")]
    Claimed,
    /// The token handed over is empty.
    #[error("the workspace token is empty")]
    EmptyToken,
}

impl Credentials {
    /// A sandbox started for its user, with `token`.
    pub fn assigned(token: &str) -> Arc<Self> {
        Arc::new(Self {
            token: RwLock::new(Some(token.into())),
            claim_secret: RwLock::new(None),
        })
    }

    /// A warm pool sandbox: no token until a claim presents `secret`.
    pub fn unassigned(secret: &str) -> Arc<Self> {
        Arc::new(Self {
            token: RwLock::new(None),
            claim_secret: RwLock::new(Some(secret.to_string())),
        })
    }

    /// The workspace token, once there is one.
    pub fn token(&self) -> Option<Arc<str>> {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `presented` is the workspace token (constant time).
    pub fn is_token(&self, presented: &str) -> bool {
        self.token().is_some_and(|token| {
            !token.is_empty() && bool::from(presented.as_bytes().ct_eq(token.as_bytes()))
        })
    }

    /// Takes `token` as the workspace's, when `secret` is the claim secret; the
    /// secret is spent.
    pub fn claim(&self, secret: &str, token: &str) -> Result<(), ClaimError> {
        if token.is_empty() {
            return Err(ClaimError::EmptyToken);
        }
        let mut guard = self.claim_secret.write().unwrap_or_else(|e| e.into_inner());
        let Some(expected) = guard.as_deref() else {
            return Err(if self.token().is_some() {
                ClaimError::Claimed
            } else {
                ClaimError::Refused
            });
        };
        if expected.is_empty() || !bool::from(secret.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(ClaimError::Refused);
        }
        *guard = None;
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = Some(token.into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_sandbox_takes_one_token_with_its_secret_only() {
        let credentials = Credentials::unassigned("claim-secret");
        assert_eq!(credentials.token(), None);
        assert!(!credentials.is_token(""));
        assert_eq!(
            credentials.claim("guess", "jw_mallory"),
            Err(ClaimError::Refused)
        );
        assert_eq!(credentials.token(), None);
        credentials
            .claim("claim-secret", "jw_alice")
            .expect("claimed");
        assert!(credentials.is_token("jw_alice"));
        assert_eq!(
            credentials.claim("claim-secret", "jw_bob"),
            Err(ClaimError::Claimed),
            "the secret is spent"
        );
        assert!(credentials.is_token("jw_alice"));
    }

    #[test]
    fn a_sandbox_started_for_its_user_cannot_be_claimed() {
        let credentials = Credentials::assigned("jw_alice");
        assert!(credentials.is_token("jw_alice"));
        assert!(!credentials.is_token("jw_alice2"));
        assert_eq!(credentials.claim("", "jw_bob"), Err(ClaimError::Claimed));
    }
}
