//! Signed, expiring URLs of voice audio: `/api/voice/{id}?expires=UNIX&sig=HEX`,
//! where `sig` is HMAC-SHA256 over the file id, its owner and the expiry, keyed
//! by a router secret. Anyone holding the URL can play it until it expires (an
//! `<audio>` element sends no bearer token); nothing else can be made from it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Why a signed URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature does not match (tampered, another file, another key).
    #[error("this audio link is not valid")]
    Invalid,
    /// It matched but the link is past its expiry.
    #[error("this audio link has expired; reload the conversation for a fresh one")]
    Expired,
}

/// Signs and checks voice URLs.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("ttl", &self.ttl).finish()
    }
}

impl Signer {
    /// A signer keyed by `secret` whose URLs live `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        // A key of its own, derived from the router secret: a voice signature can
        // never double as anything else signed with that secret.
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"jarvis voice url v1");
        Self {
            key: mac.finalize().into_bytes().to_vec(),
            ttl,
        }
    }

    fn mac(&self, id: Uuid, owner: Uuid, expires: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{id}.{owner}.{expires}").as_bytes());
        mac
    }

    /// The URL of file `id` of `owner`, valid for the signer's ttl from now.
    pub fn url(&self, id: Uuid, owner: Uuid) -> String {
        let expires = now().saturating_add(self.ttl.as_secs());
        self.url_until(id, owner, expires)
    }

    /// The URL of file `id` of `owner`, valid until `expires` (UNIX seconds).
    pub fn url_until(&self, id: Uuid, owner: Uuid, expires: u64) -> String {
        let sig = hex::encode(self.mac(id, owner, expires).finalize().into_bytes());
        format!("/api/voice/{id}?expires={expires}&sig={sig}")
    }

    /// Checks a URL's `expires` and `sig` for file `id` of `owner` (in constant time).
    pub fn verify(
        &self,
        id: Uuid,
        owner: Uuid,
        expires: u64,
        sig: &str,
    ) -> Result<(), SignatureError> {
        let sig = hex::decode(sig).map_err(|_| SignatureError::Invalid)?;
        self.mac(id, owner, expires)
            .verify_slice(&sig)
            .map_err(|_| SignatureError::Invalid)?;
        if expires < now() {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

impl Signer {
    /// Gives the `voice` events in a stored turn's `events` fresh URLs for
    /// `owner` (stored ones expire). A URL re-signed for a file that is not
    /// `owner`'s opens nothing: the signature binds the file's real owner.
    pub fn refresh_events(&self, owner: Uuid, events: &mut serde_json::Value) {
        let Some(events) = events.as_array_mut() else {
            return;
        };
        for event in events.iter_mut().filter(|e| e["type"] == "voice") {
            let id = event["url"]
                .as_str()
                .and_then(|url| url.strip_prefix("/api/voice/"))
                .and_then(|rest| rest.split('?').next())
                .and_then(|id| id.parse::<Uuid>().ok());
            if let Some(id) = id {
                event["url"] = self.url(id, owner).into();
            }
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (u64, String) {
        let query = url.split_once('?').expect("query").1;
        let mut expires = 0;
        let mut sig = String::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("expires", v)) => expires = v.parse().expect("number"),
                Some(("sig", v)) => sig = v.into(),
                _ => {}
            }
        }
        (expires, sig)
    }

    #[test]
    fn a_url_verifies_only_for_its_file_owner_and_key() {
        let signer = Signer::new(b"secret", Duration::from_secs(60));
        let (id, owner) = (Uuid::new_v4(), Uuid::new_v4());
        let url = signer.url(id, owner);
        assert!(url.starts_with(&format!("/api/voice/{id}?expires=")));
        let (expires, sig) = parts(&url);
        assert_eq!(signer.verify(id, owner, expires, &sig), Ok(()));
        let refused = Err(SignatureError::Invalid);
        assert_eq!(signer.verify(Uuid::new_v4(), owner, expires, &sig), refused);
        assert_eq!(signer.verify(id, Uuid::new_v4(), expires, &sig), refused);
        assert_eq!(signer.verify(id, owner, expires + 1, &sig), refused);
        assert_eq!(signer.verify(id, owner, expires, "zz"), refused);
        let mut flipped = sig.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("hex");
        assert_eq!(signer.verify(id, owner, expires, &flipped), refused);
        let other = Signer::new(b"other secret", Duration::from_secs(60));
        assert_eq!(other.verify(id, owner, expires, &sig), refused);
    }

    #[test]
    fn stored_voice_events_get_fresh_urls() {
        let signer = Signer::new(b"secret", Duration::from_secs(60));
        let (id, owner) = (Uuid::new_v4(), Uuid::new_v4());
        let old = signer.url_until(id, owner, 1_000);
        let mut events = serde_json::json!([
            {"type": "voice", "url": old, "transcript": "hi"},
            {"type": "voice", "url": "", "transcript": "x", "error": {"code": "voice_failed"}},
            {"type": "document", "url": old},
        ]);
        signer.refresh_events(owner, &mut events);
        let fresh = events[0]["url"].as_str().expect("url");
        let (expires, sig) = parts(fresh);
        assert_eq!(signer.verify(id, owner, expires, &sig), Ok(()));
        assert_eq!(events[1]["url"], "");
        assert_eq!(events[2]["url"], old.as_str());
    }

    #[test]
    fn an_expired_url_is_refused_as_expired() {
        let signer = Signer::new(b"secret", Duration::from_secs(60));
        let (id, owner) = (Uuid::new_v4(), Uuid::new_v4());
        let (expires, sig) = parts(&signer.url_until(id, owner, 1_000));
        assert_eq!(
            signer.verify(id, owner, expires, &sig),
            Err(SignatureError::Expired)
        );
    }
}
