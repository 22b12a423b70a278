//! Mail names: the keys under which the spool and the mail repositories store mails.
//!
//! They live here, not in the store, so that a mailet creating a mail (a bounce, a forward, a
//! split copy) names it without depending on the storage layer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest mail name accepted.
pub const MAX_MAIL_NAME: usize = 200;

/// A new mail name, unique in this process and across restarts, and unpredictable:
/// `Mail<millis>-<n>-<64 random bits>`. The time prefix makes names sort in arrival order; the
/// random part keeps a client from guessing the name its message will be stored under (the
/// file repository relies on that to tell its own envelope records from forged ones).
///
/// ```
/// let name = mailroom_mailet::new_mail_name();
/// assert!(name.starts_with("Mail"));
/// assert!(mailroom_mailet::is_valid_mail_name(&name));
/// ```
pub fn new_mail_name() -> String {
    use std::hash::{BuildHasher, RandomState};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    // Asked of the kernel once: each `std::process::id()` is a system call.
    static PID: OnceLock<u32> = OnceLock::new();
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // SipHash under random keys (seeded by the OS) of the counter and time: unpredictable
    // without the keys, which never leave the process.
    let random = KEYS.get_or_init(RandomState::new).hash_one((
        n,
        millis,
        *PID.get_or_init(std::process::id),
    ));
    format!("Mail{millis:013}-{n}-{random:016x}")
}

/// A name for a mail made from `parent` (a split copy, a forward, a copy sent to `error`):
/// the parent's name, `-` and 64 random bits, so that searching the log for a mail's name
/// (the one SMTP's `250` gave) finds its copies too. A fresh [`new_mail_name`] when the
/// parent's name is too long (or not a mail name) to take the suffix.
///
/// ```
/// let parent = mailroom_mailet::new_mail_name();
/// let copy = mailroom_mailet::derived_mail_name(&parent);
/// assert!(copy.starts_with(&format!("{parent}-")));
/// assert_ne!(copy, mailroom_mailet::derived_mail_name(&parent));
/// ```
pub fn derived_mail_name(parent: &str) -> String {
    let fresh = new_mail_name();
    let random = fresh.rsplit('-').next().unwrap_or_default();
    let derived = format!("{parent}-{random}");
    if is_valid_mail_name(&derived) {
        derived
    } else {
        fresh
    }
}

/// Whether `name` can be a mail name: ASCII letters, digits, `-`, `_` and `.`, not starting
/// with `.`, at most [`MAX_MAIL_NAME`] octets — so that it is a safe file name.
pub fn is_valid_mail_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MAIL_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_valid_and_shaped() {
        let a = new_mail_name();
        let b = new_mail_name();
        assert_ne!(a, b);
        assert!(is_valid_mail_name(&a));
        // Mail<13 digits>-<n>-<16 hex digits>
        let rest = a.strip_prefix("Mail").unwrap();
        let parts: Vec<&str> = rest.split('-').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].len(), 13);
        assert!(parts[0].bytes().all(|b| b.is_ascii_digit()));
        assert!(parts[1].parse::<u64>().is_ok());
        assert_eq!(parts[2].len(), 16);
        assert!(parts[2].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn derived_names_extend_their_parent_within_the_limit() {
        let copy = derived_mail_name("Mail1-0-ab");
        assert!(copy.starts_with("Mail1-0-ab-") && copy.len() == "Mail1-0-ab-".len() + 16);
        assert!(is_valid_mail_name(&copy));
        let long = "a".repeat(190);
        let fresh = derived_mail_name(&long);
        assert!(fresh.starts_with("Mail") && is_valid_mail_name(&fresh));
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in ["", "../x", ".hidden", "a/b", "a b", &"a".repeat(201)] {
            assert!(!is_valid_mail_name(bad), "{bad:?}");
        }
        assert!(is_valid_mail_name(&"a".repeat(200)));
    }
}
