//! Access tokens of the built-in accounts: HS256 JWTs signed with the router's
//! secret, with the claims a Supabase token has, so the rest of the router sees
//! one kind of token.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use uuid::Uuid;

use super::{ACCESS_TOKEN_TTL, AUDIENCE, AuthError, Claims, Identity, LEEWAY_SECS};

/// The `iss` of built-in tokens.
pub const ISSUER: &str = "jarvis";

/// Issues and verifies built-in access tokens.
pub struct LocalTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

#[derive(Serialize)]
struct IssuedClaims<'a> {
    sub: String,
    email: &'a str,
    aud: &'static str,
    iss: &'static str,
    role: &'static str,
    is_anonymous: bool,
    iat: u64,
    exp: u64,
}

impl LocalTokens {
    /// Signs and verifies with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// A fresh access token for the user, valid for [`ACCESS_TOKEN_TTL`].
    pub fn issue(&self, user_id: Uuid, email: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = IssuedClaims {
            sub: user_id.to_string(),
            email,
            aud: AUDIENCE,
            iss: ISSUER,
            role: AUDIENCE,
            is_anonymous: false,
            iat: now,
            exp: now + ACCESS_TOKEN_TTL.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verifies a built-in token: HS256 only, our issuer and audience, unexpired.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)?;
        data.claims.into_identity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_name_their_user() {
        let tokens = LocalTokens::new(b"a test secret of enough length!!");
        let id = Uuid::new_v4();
        let token = tokens.issue(id, "a@example.com").expect("issues");
        let who = tokens.verify(&token).expect("verifies");
        assert_eq!(who.user_id, id);
        assert_eq!(who.email.as_deref(), Some("a@example.com"));
    }

    #[test]
    fn another_secret_refuses_the_token() {
        let a = LocalTokens::new(b"secret number one, long enough..");
        let b = LocalTokens::new(b"secret number two, long enough..");
        let token = a.issue(Uuid::new_v4(), "a@example.com").expect("issues");
        assert!(matches!(b.verify(&token), Err(AuthError::Invalid)));
    }
}
