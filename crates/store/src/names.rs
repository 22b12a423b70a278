//! Validation of names that become file names or keys, and generation of mail names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Result, StoreError};

/// Longest user name accepted (RFC 5321's limit for a local part).
pub const MAX_USER_NAME: usize = 64;

/// Checks a user name: not empty, at most 64 octets, no `/`, `\`, `..`, control characters or
/// NUL, and not starting with `.` — so that it can never name anything outside its repository
/// (James 2.3's RemoteManager path traversal).
pub fn validate_user_name(name: &str) -> Result<()> {
    let bad = |why| Err(StoreError::InvalidName(name.to_string(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_USER_NAME {
        return bad("longer than 64 octets");
    }
    if name.contains(['/', '\\']) {
        return bad("contains a slash");
    }
    if name.contains("..") || name.starts_with('.') {
        return bad("contains .. or starts with .");
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("contains a control or space character");
    }
    if name.contains(['@', ':', '"', '<', '>']) {
        return bad("contains @ : \" < or >");
    }
    Ok(())
}

/// Checks a mail name: ASCII letters, digits, `-`, `_` and `.`, not starting with `.`, at most
/// 200 octets.
pub fn validate_mail_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(
            name.to_string(),
            "mail names use letters, digits, - _ and .",
        ))
    }
}

/// This process's id, asked of the kernel once (each `std::process::id()` is a system call).
pub(crate) fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// A new mail name, unique in this process and across restarts, and unpredictable:
/// `Mail<millis>-<n>-<64 random bits>`. The time prefix makes names sort in arrival order; the
/// random part keeps a client from guessing the name its message will be stored under (the
/// file repository relies on that to tell its own envelope records from forged ones).
pub fn new_mail_name() -> String {
    use std::hash::{BuildHasher, RandomState};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // SipHash under random keys (seeded by the OS) of the counter and time: unpredictable
    // without the keys, which never leave the process.
    let random = KEYS
        .get_or_init(RandomState::new)
        .hash_one((n, millis, pid()));
    format!("Mail{millis:013}-{n}-{random:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for good in ["bob", "Bob.Smith", "a-b_c+d", "x"] {
            assert!(validate_user_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "../../etc/x",
            "a/b",
            "a\\b",
            "..",
            ".hidden",
            "a\0b",
            "a\nb",
            "a b",
            &long,
            "a@b",
        ] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mail_names() {
        let a = new_mail_name();
        let b = new_mail_name();
        assert_ne!(a, b);
        assert!(validate_mail_name(&a).is_ok());
        assert!(validate_mail_name("../x").is_err());
    }
}
