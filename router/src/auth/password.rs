//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes), run
//! on the blocking pool so a burst of logins never stalls the async executor;
//! and the strength check new passwords pass ([`check_strength`]: zxcvbn, which
//! knows common passwords, words, names, dates, keyboard rows and sequences).

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};

/// Shortest password accepted.
pub const MIN_LEN: usize = 10;
/// Longest password accepted (hashing cost grows with length).
pub const MAX_LEN: usize = 1024;

/// The least zxcvbn score (0–4) a new password needs: 3 is "safely
/// unguessable" (about 10^8 guesses and more), what zxcvbn's authors advise.
pub const MIN_SCORE: u8 = 3;

/// Characters of a password zxcvbn looks at (its time grows faster than the
/// length; a password this long is strong unless its start is weak).
const STRENGTH_CHARS: usize = 256;

/// A password refused as too easy to guess; its message says why and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Weak(String);

/// Refuses a password that is easy to guess (score under [`MIN_SCORE`]): a common
/// password, a word or name on its own, a keyboard row, a sequence, a date or
/// the account's own `email` (whole, or the part before the `@`). Length is
/// checked by the caller first.
pub fn check_strength(password: &str, email: &str) -> Result<(), Weak> {
    let local = email.split('@').next().unwrap_or_default();
    let end = password
        .char_indices()
        .nth(STRENGTH_CHARS)
        .map_or(password.len(), |(i, _)| i);
    let entropy = zxcvbn::zxcvbn(&password[..end], &[email, local]);
    if u8::from(entropy.score()) >= MIN_SCORE {
        return Ok(());
    }
    let feedback = entropy.feedback();
    let why = feedback.and_then(|f| f.warning()).map_or_else(
        || "It would be guessed quickly.".to_string(),
        |w| w.to_string(),
    );
    let mut message = format!("this password is too easy to guess: {why}");
    let hints: Vec<String> = feedback
        .map(|f| f.suggestions().iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    message.push(' ');
    if hints.is_empty() {
        message.push_str("Add a few more uncommon words.");
    } else {
        message.push_str(&hints.join(" "));
    }
    message
        .push_str(" A few unrelated words, or a password manager's generated password, work well.");
    Err(Weak(message))
}

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
    fn common_and_patterned_passwords_are_too_weak_and_say_why() {
        for weak in ["1234567890", "password123", "qwertyuiop", "aaaaaaaaaaaa"] {
            let err = check_strength(weak, "").expect_err(weak).to_string();
            assert!(
                err.starts_with("this password is too easy to guess: "),
                "{err}"
            );
            assert!(err.contains("unrelated words"), "{err}");
        }
        let err = check_strength("1234567890", "")
            .expect_err("weak")
            .to_string();
        assert!(
            err.contains("common password") || err.contains("easy to guess"),
            "{err}"
        );
        // The account's own details count against it.
        assert!(check_strength("ada.lovelace1815", "ada.lovelace1815@example.com").is_err());
        assert!(check_strength("ada.lovelace1815", "someone@example.com").is_ok());
    }

    #[test]
    fn the_longest_password_is_checked_quickly() {
        let long = "ab1-".repeat(MAX_LEN / 4);
        let start = std::time::Instant::now();
        let _ = check_strength(&long, "someone@example.com");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn the_passwords_of_the_tests_and_long_phrases_are_strong_enough() {
        for strong in [
            "correct-horse-battery",
            "correct horse battery",
            "benchmark-password",
            "tangerine ladder quietly 42",
        ] {
            assert!(
                check_strength(strong, "someone@example.com").is_ok(),
                "{strong}"
            );
        }
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
