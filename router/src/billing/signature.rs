//! Verifies Stripe's `Stripe-Signature` header: `t=<unix seconds>,v1=<hex>[,v1=…]`,
//! where each `v1` is HMAC-SHA256 of `"{t}.{raw body}"` under the endpoint's
//! signing secret. Several `v1` values come while a secret is being rolled; any
//! one matching is enough. Other schemes (`v0`) are ignored. The timestamp must be
//! within [`TOLERANCE_SECS`] of now, so a captured request cannot be replayed later.
//! Each comparison is constant-time (`subtle`).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far the signed timestamp may be from now (Stripe's libraries use 5 minutes).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a webhook is refused. The messages go back to the sender.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Stripe-Signature` header, or one without `t` or `v1`.
    #[error("missing or malformed Stripe-Signature header")]
    Malformed,
    /// The timestamp is too far from now.
    #[error("the Stripe-Signature timestamp is outside the tolerance")]
    Stale,
    /// No `v1` matches the payload under the secret.
    #[error("no Stripe-Signature v1 value matches the payload")]
    Mismatch,
}

/// Checks `header` for `payload` under `secret` at `now` (unix seconds).
pub fn verify(header: &str, payload: &[u8], secret: &str, now: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => {
                if let Ok(bytes) = hex::decode(v) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    let expected = signed_mac(secret, timestamp, payload)
        .finalize()
        .into_bytes();
    // Slices of another length compare unequal (still without early exit).
    if signatures.iter().any(|s| bool::from(expected[..].ct_eq(s))) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `Stripe-Signature` header Stripe would send for `payload` at `timestamp`
/// (for tests, benchmarks and tools that play Stripe).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mac = signed_mac(secret, timestamp, payload);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

fn signed_mac(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_signature_stripe_made_verifies() {
        let header = sign(b"{}", SECRET, NOW);
        assert_eq!(verify(&header, b"{}", SECRET, NOW + 10), Ok(()));
    }

    #[test]
    fn any_one_of_several_v1_values_is_enough() {
        let good = sign(b"{}", SECRET, NOW);
        let v1 = good.split_once(",v1=").expect("v1").1;
        let header = format!("t={NOW},v0=abc,v1={},v1={v1}", "00".repeat(32));
        assert_eq!(verify(&header, b"{}", SECRET, NOW), Ok(()));
    }

    #[test]
    fn tampering_wrong_secrets_and_old_timestamps_are_refused() {
        let header = sign(b"{}", SECRET, NOW);
        assert_eq!(
            verify(&header, b"{ }", SECRET, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, b"{}", "whsec_other", NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, b"{}", SECRET, NOW + TOLERANCE_SECS + 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&header, b"{}", SECRET, NOW - TOLERANCE_SECS - 1),
            Err(SignatureError::Stale)
        );
        for bad in ["", "t=x,v1=00", &format!("t={NOW}"), "v1=00"] {
            assert_eq!(
                verify(bad, b"{}", SECRET, NOW),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
