//! Object keys every store takes, whatever the name they are built from.
//!
//! Supabase Storage accepts only keys matching `^[A-Za-z0-9_/!.*'() &$=@;:+,?-]*$`
//! (its `isValidKey`), and object_store percent-encodes some characters of a
//! path (`%`, `#`, `~`, brackets, `*`, `?`, non-ASCII), whose `%` is then refused
//! too. [`portable`] writes a name (a file's path, as its owner knows it) with
//! only characters both keep as they are, so its key is stored as written on
//! every S3 the README names: each other byte of the name's UTF-8 becomes
//! `!XX` (two upper-case hex digits), `!` itself included, so two names never
//! share a key. A name whose key would be too long for a store is named by its
//! SHA-256 instead, under a segment (`!hashed`) no escaped name can produce.
//!
//! The real path is kept in the file's row; a key is never read back as a name.

use sha2::{Digest, Sha256};

/// The byte that starts an escape.
const ESCAPE: u8 = b'!';

/// The longest key [`portable`] builds: S3 allows 1024 bytes, and Supabase
/// Storage puts its tenant, bucket and a version id around the key on its own
/// S3 backend.
pub const MAX_KEY_BYTES: usize = 800;

/// The segment under which names too long to spell out are kept by hash.
const HASHED: &str = "!hashed";

/// Whether `byte` stands for itself in a key: a character Supabase's rule
/// accepts that object_store leaves as it is and that is not [`ESCAPE`].
fn kept(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"_/.'() &$=@;:+,-".contains(&byte)
}

/// `name` written with kept characters and escapes only (see the module docs).
fn escaped(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if kept(byte) {
            out.push(char::from(byte));
        } else {
            out.push(char::from(ESCAPE));
            out.push_str(&format!("{byte:02X}"));
        }
    }
    out
}

/// The key of `name` under `prefix` (`users/{id}/workspace`, no trailing `/`):
/// `prefix/<escaped name>`, or `prefix/!hashed/<sha256 of name>` when that
/// would be longer than [`MAX_KEY_BYTES`]. `name` is a relative `/`-separated
/// path whose segments are neither empty, `.` nor `..` (callers check it).
pub fn portable(prefix: &str, name: &str) -> String {
    let key = format!("{prefix}/{}", escaped(name));
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}/{HASHED}/{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "users/0/workspace";

    /// Supabase Storage's `isValidKey`, written out, and object_store's
    /// spelling of the key left as it is.
    fn is_portable(key: &str) -> bool {
        key.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_/!.*'() &$=@;:+,?-".contains(c))
            && object_store::path::Path::from(key).as_ref() == key
    }

    #[test]
    fn plain_names_keep_their_spelling() {
        for name in [
            "notes.txt",
            "docs/Report (final), v2.md",
            "a b/c-d_e+f=g@h;i:j&k$l'm",
        ] {
            let key = portable(PREFIX, name);
            assert_eq!(key, format!("{PREFIX}/{name}"));
            assert!(is_portable(&key), "{key}");
        }
    }

    #[test]
    fn every_other_character_is_escaped_into_a_key_every_store_takes() {
        let cases = [
            ("résumé.txt", "r!C3!A9sum!C3!A9.txt"),
            ("notes#1.md", "notes!231.md"),
            ("draft~", "draft!7E"),
            ("fifty%.txt", "fifty!25.txt"),
            ("[a]{b}", "!5Ba!5D!7Bb!7D"),
            ("why?*!", "why!3F!2A!21"),
            ("tab\there", "tab!09here"),
            ("日本/語.md", "!E6!97!A5!E6!9C!AC/!E8!AA!9E.md"),
        ];
        for (name, spelled) in cases {
            let key = portable(PREFIX, name);
            assert_eq!(key, format!("{PREFIX}/{spelled}"), "{name}");
            assert!(is_portable(&key), "{key}");
        }
    }

    #[test]
    fn two_names_never_share_a_key() {
        // An escape's own spelling, written by hand, is escaped in turn.
        let names = ["a!41", "aA", "a!2141", "!hashed/x", "x", "é", "!C3!A9"];
        let keys: std::collections::BTreeSet<_> =
            names.iter().map(|n| portable(PREFIX, n)).collect();
        assert_eq!(keys.len(), names.len(), "{keys:?}");
    }

    #[test]
    fn a_name_too_long_to_spell_out_is_keyed_by_its_hash() {
        let long = "é".repeat(200);
        let key = portable(PREFIX, &long);
        assert!(key.starts_with(&format!("{PREFIX}/!hashed/")), "{key}");
        assert!(key.len() <= MAX_KEY_BYTES);
        assert!(is_portable(&key));
        assert_ne!(key, portable(PREFIX, &"é".repeat(201)));
        // Just short enough: spelled out.
        let fits = "a".repeat(MAX_KEY_BYTES - PREFIX.len() - 1);
        assert_eq!(portable(PREFIX, &fits), format!("{PREFIX}/{fits}"));
    }

    #[test]
    fn is_portable_refuses_what_supabase_refuses() {
        for key in ["a%20b", "a#b", "a~b", "a[b]", "é", "a*b", "a?b"] {
            assert!(!is_portable(key), "{key}");
        }
    }
}
