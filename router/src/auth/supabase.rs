//! Verification of Supabase Auth access tokens.
//!
//! A project on the legacy JWT secret signs HS256; a project with signing keys
//! signs ES256 or RS256 and publishes the public keys (see [`super::jwks`]). The
//! header's `alg` only chooses which of *our* keys to try, and each key accepts
//! exactly one algorithm, so `none`, HS/RS confusion and other algorithms fail.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::{AUDIENCE, AuthError, Claims, Identity, LEEWAY_SECS, jwks::Jwks};

/// Verifies tokens of one Supabase project.
pub struct SupabaseVerifier {
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
}

impl SupabaseVerifier {
    /// A verifier with the project's legacy secret and/or URL (for JWKS and `iss`).
    pub fn new(secret: Option<&str>, url: Option<&str>, http: reqwest::Client) -> Self {
        Self {
            secret: secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            jwks: url.map(|u| Jwks::for_project(u, http)),
            issuer: url.map(|u| format!("{}/auth/v1", u.trim_end_matches('/'))),
        }
    }

    /// Verifies a Supabase access token and names its user.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)?;
        let (key, algorithm) = match header.alg {
            Algorithm::HS256 => (
                self.secret.clone().ok_or(AuthError::Invalid)?,
                Algorithm::HS256,
            ),
            Algorithm::ES256 | Algorithm::RS256 => {
                let jwks = self.jwks.as_ref().ok_or(AuthError::Invalid)?;
                let found = jwks
                    .key(header.kid.as_deref())
                    .await?
                    .ok_or(AuthError::Invalid)?;
                if found.algorithm != header.alg {
                    return Err(AuthError::Invalid);
                }
                (found.key, found.algorithm)
            }
            _ => return Err(AuthError::Invalid),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&[AUDIENCE]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        } else {
            validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        }
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)?;
        data.claims.into_identity()
    }
}
