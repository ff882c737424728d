//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes), run
//! on the blocking pool so a burst of logins never stalls the async executor.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};

/// Shortest password accepted.
pub const MIN_LEN: usize = 10;
/// Longest password accepted (hashing cost grows with length).
pub const MAX_LEN: usize = 1024;

/// Hashing failed (only on a broken environment; never on user input).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// The PHC string of a fresh argon2id hash of `password`.
pub async fn hash(password: String) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError(e.to_string()))
    })
    .await
    .map_err(|e| HashError(e.to_string()))?
}

/// What checking a password found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The password matches the account's hash.
    pub matches: bool,
    /// An argon2 verification ran (for every well-formed stored hash and for
    /// unknown accounts; only a malformed stored hash skips it).
    pub hashed: bool,
}

/// Whether `password` matches `phc`. A malformed stored hash never matches.
/// With `phc` of `None` (no such account) the same work is done against a
/// dummy hash, so response time does not reveal which emails have accounts.
pub async fn verify(password: String, phc: Option<String>) -> Verified {
    let known = phc.is_some();
    let phc = phc.unwrap_or_else(|| DUMMY_HASH.to_string());
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return Verified {
                matches: false,
                hashed: false,
            };
        };
        // Always verify, then look at `known`: skipping the work for unknown
        // accounts is what made them answer faster.
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Verified {
            matches: known && ok,
            hashed: true,
        }
    })
    .await
    .unwrap_or(Verified {
        matches: false,
        hashed: false,
    })
}

/// argon2id (default parameters) of a random password nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Kf8cQ6Yl3aWgJ0m4C2u1cJ2pXgVfE9q1l5Q0i8eCq5k";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery".into()).await.expect("hashes");
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify("correct horse battery".into(), Some(h.clone()))
                .await
                .matches
        );
        assert!(!verify("wrong horse battery".into(), Some(h)).await.matches);
    }

    #[test]
    fn the_dummy_hash_parses_so_unknown_accounts_cost_a_real_verification() {
        let parsed = PasswordHash::new(DUMMY_HASH).expect("dummy hash parses");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
    }

    #[tokio::test]
    async fn unknown_accounts_and_garbage_hashes_never_verify() {
        let unknown = verify("anything at all".into(), None).await;
        assert_eq!(
            unknown,
            Verified {
                matches: false,
                hashed: true
            },
            "an unknown account costs a real argon2 verification"
        );
        assert!(
            !verify("anything at all".into(), Some("not a hash".into()))
                .await
                .matches
        );
    }
}
