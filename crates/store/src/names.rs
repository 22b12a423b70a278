//! Validation of names that become file names or keys, and generation of mail names.

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
/// 200 octets ([`mailroom_mailet::is_valid_mail_name`]).
pub fn validate_mail_name(name: &str) -> Result<()> {
    if mailroom_mailet::is_valid_mail_name(name) {
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

/// Mail names are made by the mailet API, so that mailets can name new mails without the store.
pub use mailroom_mailet::new_mail_name;

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
