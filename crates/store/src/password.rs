//! Password hashing: argon2id for every new hash; James 2.3's SHA-1 hashes are accepted so that
//! an imported users repository keeps working, and are upgraded at the next login.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64::Engine;
use sha1::{Digest, Sha1};

/// A valid argon2id hash of a random password, verified against when a user does not exist so
/// that both cases take the same time.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2VrYwhO0yFMsVgrGEmSbUaEH5PrVgF8Pu3bR9oXMNbw";

/// The outcome of checking a password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// Wrong password, or an unreadable hash.
    No,
    /// Right password.
    Yes,
    /// Right password, stored in an old scheme: store [`hash`] of it instead.
    YesButUpgrade,
}

/// Hashes a password with argon2id and a random salt, as a PHC string.
pub fn hash(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// Checks `password` against a stored hash: an argon2 PHC string, `{SHA}base64` or James 2.3's
/// bare base64 SHA-1.
pub fn verify(stored: &str, password: &str) -> Verified {
    if stored.starts_with("$argon2") {
        let ok = PasswordHash::new(stored)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        return if ok { Verified::Yes } else { Verified::No };
    }
    let sha = stored.strip_prefix("{SHA}").unwrap_or(stored);
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(password));
    if !sha.is_empty() && constant_time_eq(sha.as_bytes(), digest.as_bytes()) {
        Verified::YesButUpgrade
    } else {
        Verified::No
    }
}

/// Compares two secrets in time that does not depend on where they differ (only on their
/// lengths). The one such comparison of the workspace: passwords, APOP digests, MACs.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    a.len() == b.len() && std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"Secret"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b""));
    }

    #[test]
    fn argon2id_round_trip() {
        let h = hash("correct horse battery staple");
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(verify(&h, "correct horse battery staple"), Verified::Yes);
        assert_eq!(verify(&h, "wrong"), Verified::No);
        assert_eq!(verify(DUMMY_HASH, "anything"), Verified::No);
    }

    #[test]
    fn james_sha1_is_accepted_and_flagged() {
        // base64(SHA-1("secret")), the form James 2.3 wrote.
        let james = "5en6G6MezRroT3XKqkdPOmY/BfQ=";
        assert_eq!(verify(james, "secret"), Verified::YesButUpgrade);
        assert_eq!(
            verify(&format!("{{SHA}}{james}"), "secret"),
            Verified::YesButUpgrade
        );
        assert_eq!(verify(james, "Secret"), Verified::No);
        assert_eq!(verify("", ""), Verified::No);
    }
}

#[cfg(test)]
mod dummy_hash_tests {
    #[test]
    fn dummy_hash_is_a_real_argon2id_hash() {
        assert!(argon2::password_hash::phc::PasswordHash::new(super::DUMMY_HASH).is_ok());
    }
}
