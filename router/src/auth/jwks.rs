//! The public keys of a Supabase project, fetched from
//! `<SUPABASE_URL>/auth/v1/.well-known/jwks.json` and cached.
//!
//! Keys are kept for the `max-age` the server sends (600 s by default). A token
//! naming a key we don't know triggers one early re-fetch (key rotation), at most
//! every [`MIN_REFETCH`], so forged `kid`s cannot make us hammer the endpoint.
//! The algorithm of each key comes from the key itself, never from a token header.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use tokio::sync::{Mutex, RwLock};

use super::AuthError;

/// Cache lifetime when the server sends none.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// Least time between two fetches caused by unknown key ids.
const MIN_REFETCH: Duration = Duration::from_secs(30);

/// A verification key and the one algorithm it may be used with.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The key.
    pub key: DecodingKey,
    /// The only algorithm accepted with it.
    pub algorithm: Algorithm,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, VerifyingKey>,
    /// Keys without a `kid` (a set of one may omit it).
    unnamed: Vec<VerifyingKey>,
    fetched_at: Option<Instant>,
    max_age: Duration,
}

impl Cache {
    fn fresh(&self) -> bool {
        self.fetched_at.is_some_and(|t| t.elapsed() < self.max_age)
    }

    fn find(&self, kid: Option<&str>) -> Option<VerifyingKey> {
        match kid {
            Some(kid) => self.keys.get(kid).cloned(),
            None if self.keys.len() + self.unnamed.len() == 1 => self
                .keys
                .values()
                .chain(self.unnamed.iter())
                .next()
                .cloned(),
            None => None,
        }
    }
}

/// A cached JWKS endpoint.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    cache: RwLock<Cache>,
    /// Serialises fetches so concurrent misses fetch once.
    fetching: Mutex<()>,
}

impl Jwks {
    /// Keys of the Supabase project at `supabase_url`.
    pub fn for_project(supabase_url: &str, http: reqwest::Client) -> Self {
        let url = format!(
            "{}/auth/v1/.well-known/jwks.json",
            supabase_url.trim_end_matches('/')
        );
        Self {
            url,
            http,
            cache: RwLock::new(Cache::default()),
            fetching: Mutex::new(()),
        }
    }

    /// The key a token's `kid` names. `Ok(None)` when the set has no such key.
    pub async fn key(&self, kid: Option<&str>) -> Result<Option<VerifyingKey>, AuthError> {
        {
            let cache = self.cache.read().await;
            if let Some(key) = cache.find(kid) {
                if cache.fresh() {
                    return Ok(Some(key));
                }
            } else if cache.fresh() && cache.fetched_at.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
                return Ok(None);
            }
        }
        let _one_fetch = self.fetching.lock().await;
        {
            // Another request may have fetched while we waited.
            let cache = self.cache.read().await;
            if cache.fetched_at.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
                return Ok(cache.find(kid));
            }
        }
        match self.fetch().await {
            Ok(fresh) => {
                let mut cache = self.cache.write().await;
                *cache = fresh;
                Ok(cache.find(kid))
            }
            Err(e) => {
                let cache = self.cache.read().await;
                match cache.find(kid) {
                    // Better a slightly stale key than no sign-in at all.
                    Some(key) => {
                        tracing::warn!(error = %e, "JWKS refresh failed; using cached keys");
                        Ok(Some(key))
                    }
                    None => Err(AuthError::KeysUnavailable(e)),
                }
            }
        }
    }

    async fn fetch(&self) -> Result<Cache, reqwest::Error> {
        let response = self.http.get(&self.url).send().await?.error_for_status()?;
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age)
            .unwrap_or(DEFAULT_MAX_AGE);
        let set: JwkSet = response.json().await?;
        let mut cache = Cache {
            max_age,
            fetched_at: Some(Instant::now()),
            ..Cache::default()
        };
        for jwk in &set.keys {
            let Some(key) = verifying_key(jwk) else {
                tracing::debug!(kid = ?jwk.common.key_id, "skipping unusable JWK");
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    cache.keys.insert(kid.clone(), key);
                }
                None => cache.unnamed.push(key),
            }
        }
        tracing::debug!(
            keys = cache.keys.len() + cache.unnamed.len(),
            "fetched JWKS"
        );
        Ok(cache)
    }
}

/// The key and its algorithm, for the signing keys Supabase uses (ES256, RS256).
/// Symmetric keys are never accepted from a key set.
fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        _ => return None,
    };
    let declared_matches = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::ES256) => algorithm == Algorithm::ES256,
        Some(KeyAlgorithm::RS256) => algorithm == Algorithm::RS256,
        Some(_) => false,
    };
    if !declared_matches {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey { key, algorithm })
}

fn parse_max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            parse_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(parse_max_age("no-store"), None);
        assert_eq!(parse_max_age("max-age=soon"), None);
    }

    #[test]
    fn symmetric_keys_in_a_key_set_are_ignored() {
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "oct", "k": "c2VjcmV0", "kid": "x", "alg": "HS256"
        }))
        .expect("valid JWK");
        assert!(verifying_key(&jwk).is_none());
    }
}
