//! Mail addresses as SMTP carries them (RFC 5321 `Mailbox`), with the null reverse-path kept
//! apart as `Option<MailAddress>::None` by the callers.
//!
//! Case rules: the domain is case-insensitive and stored in lower case; the local part is kept
//! as given (RFC 5321 §2.4) and compared exactly — whether `Bob` and `bob` are one user is the
//! users repository's decision, not the address's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest local part RFC 5321 §4.5.3.1.1 allows.
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain RFC 5321 §4.5.3.1.2 allows.
pub const MAX_DOMAIN: usize = 255;

/// An address `local@domain`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailAddress {
    local: String,
    domain: String,
}

/// Why an address did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing to parse.
    #[error("empty address")]
    Empty,
    /// There is no `@domain` part.
    #[error("address has no domain")]
    NoDomain,
    /// The local part is not a dot-string or quoted-string.
    #[error("invalid local part")]
    BadLocalPart,
    /// The domain is not a host name or address literal.
    #[error("invalid domain")]
    BadDomain,
    /// A part is longer than RFC 5321 allows.
    #[error("address too long")]
    TooLong,
    /// `<` without `>` or the reverse.
    #[error("unbalanced angle brackets")]
    Brackets,
}

impl MailAddress {
    /// Builds an address from its parts, validating both.
    pub fn new(local: &str, domain: &str) -> Result<Self, AddressError> {
        if local.is_empty() {
            return Err(AddressError::BadLocalPart);
        }
        let local = parse_local_part(local)?;
        check_domain(domain)?;
        Ok(MailAddress {
            local,
            domain: domain.to_ascii_lowercase(),
        })
    }

    /// Parses `local@domain` (no angle brackets). The local part may be quoted.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        // ASCII white space only: a local part may begin with a non-ASCII character that
        // Unicode calls white space.
        let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        let at = find_domain_at(text).ok_or(AddressError::NoDomain)?;
        MailAddress::new(&text[..at], &text[at + 1..])
    }

    /// Parses an SMTP path: `<local@domain>`, optionally with an obsolete source route
    /// (`<@relay:local@domain>`, which is ignored as RFC 5321 §4.1.1.3 asks). Returns `None` for
    /// the null path `<>`.
    pub fn parse_path(text: &str) -> Result<Option<Self>, AddressError> {
        let text = text.trim();
        let inner = match (text.strip_prefix('<'), text.ends_with('>')) {
            (Some(rest), true) => &rest[..rest.len() - 1],
            (None, false) => return Err(AddressError::Brackets),
            _ => return Err(AddressError::Brackets),
        };
        if inner.is_empty() {
            return Ok(None);
        }
        let inner = match inner.strip_prefix('@') {
            Some(route) => route
                .split_once(':')
                .map(|(_, rest)| rest)
                .ok_or(AddressError::BadLocalPart)?,
            None => inner,
        };
        MailAddress::parse(inner).map(Some)
    }

    /// The local part, unquoted (a quoted `"a b"` gives `a b`).
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The domain, in lower case.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The same local part at another domain.
    pub fn with_domain(&self, domain: &str) -> Result<Self, AddressError> {
        MailAddress::new(&quote_local(&self.local), domain)
    }
}

impl fmt::Display for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", quote_local(&self.local), self.domain)
    }
}

impl FromStr for MailAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MailAddress::parse(s)
    }
}

impl Serialize for MailAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MailAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        MailAddress::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `atext` of RFC 5322 §3.2.3; non-ASCII is allowed as RFC 6531 extends it, except control
/// characters (U+0080 to U+009F).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

/// A non-ASCII character of a domain label (RFC 6531's U-labels): no control character and no
/// white space (a line or paragraph separator must not reach a header or a log line).
fn is_utf8_label_char(c: char) -> bool {
    !c.is_ascii() && !c.is_control() && !c.is_whitespace()
}

/// Position of the `@` that separates local part and domain, skipping a quoted local part.
fn find_domain_at(text: &str) -> Option<usize> {
    if text.starts_with('"') {
        let mut escaped = false;
        for (i, c) in text.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => return text[i + 1..].starts_with('@').then_some(i + 1),
                _ => {}
            }
        }
        None
    } else {
        text.rfind('@')
    }
}

/// Validates a dot-string or quoted-string and returns the unquoted local part.
fn parse_local_part(raw: &str) -> Result<String, AddressError> {
    if raw.len() > MAX_LOCAL_PART + 2 {
        return Err(AddressError::TooLong);
    }
    let local = if let Some(quoted) = raw.strip_prefix('"') {
        let body = quoted.strip_suffix('"').ok_or(AddressError::BadLocalPart)?;
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                // quoted-pairSMTP (RFC 5321 §4.1.2): a backslash and a printable ASCII
                // character; a control character (CR, LF, NUL) is never part of an address.
                '\\' => match chars.next() {
                    Some(c) if (' '..='~').contains(&c) => out.push(c),
                    _ => return Err(AddressError::BadLocalPart),
                },
                '"' => return Err(AddressError::BadLocalPart),
                c if c.is_control() => return Err(AddressError::BadLocalPart),
                c => out.push(c),
            }
        }
        out
    } else {
        let ok = !raw.is_empty()
            && raw
                .split('.')
                .all(|atom| !atom.is_empty() && atom.chars().all(is_atext));
        if !ok {
            return Err(AddressError::BadLocalPart);
        }
        raw.to_string()
    };
    if local.is_empty() || local.len() > MAX_LOCAL_PART {
        return Err(AddressError::TooLong);
    }
    Ok(local)
}

/// Quotes a local part when it is not a valid dot-string.
fn quote_local(local: &str) -> String {
    let dot_string = !local.is_empty()
        && local
            .split('.')
            .all(|a| !a.is_empty() && a.chars().all(is_atext));
    if dot_string {
        return local.to_string();
    }
    let mut out = String::from("\"");
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Checks a host name (`sub-domain *("." sub-domain)`) or an address literal (`[1.2.3.4]`,
/// `[IPv6:...]`).
pub fn check_domain(domain: &str) -> Result<(), AddressError> {
    if domain.is_empty() {
        return Err(AddressError::NoDomain);
    }
    if domain.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong);
    }
    if let Some(literal) = domain.strip_prefix('[') {
        let literal = literal.strip_suffix(']').ok_or(AddressError::BadDomain)?;
        let valid = match literal
            .strip_prefix("IPv6:")
            .or(literal.strip_prefix("ipv6:"))
        {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        return if valid {
            Ok(())
        } else {
            Err(AddressError::BadDomain)
        };
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || is_utf8_label_char(c))
    };
    if domain.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(AddressError::BadDomain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `address` fuzz target: `\\` before a control character let NUL, CR or LF
    /// into a local part (which then printed as an address that does not parse, and could
    /// split a header line such as `Return-Path:`).
    #[test]
    fn a_quoted_pair_is_printable_ascii_only() {
        for text in [
            "\"a\\\0b\"@x.test",
            "\"a\\\r\\\nb\"@x.test",
            "\"a\\\u{7f}\"@x.test",
            "\"a\\\u{e9}\"@x.test",
        ] {
            assert_eq!(
                MailAddress::parse(text),
                Err(AddressError::BadLocalPart),
                "{text:?}"
            );
        }
        let a = MailAddress::parse("\"a\\\"b\\\\c\"@x.test").unwrap();
        assert_eq!(a.local_part(), "a\"b\\c");
        assert_eq!(MailAddress::parse(&a.to_string()), Ok(a));
    }

    /// Found by the `address` fuzz target: a local part starting with U+0085 (which Unicode
    /// counts as white space) printed as a dot-string that `parse` then trimmed to another
    /// address. Only ASCII white space is trimmed now, and control characters are refused.
    #[test]
    fn unicode_white_space_and_controls_do_not_change_an_address() {
        let a = MailAddress::parse("\u{2003}a@x.test").unwrap();
        assert_eq!(a.local_part(), "\u{2003}a");
        assert_eq!(MailAddress::parse(&a.to_string()), Ok(a));
        for text in ["\"\u{85}a\"@x.test", "\u{85}a@x.test", "a\u{9f}@x.test"] {
            assert_eq!(
                MailAddress::parse(text),
                Err(AddressError::BadLocalPart),
                "{text:?}"
            );
        }
        assert_eq!(
            MailAddress::parse(" \ta@x.test\r\n").unwrap().local_part(),
            "a"
        );
    }

    /// UTF-8 domains (SMTPUTF8) take letters, not control characters or white space.
    #[test]
    fn utf8_domains_refuse_controls_and_separators() {
        assert_eq!(
            MailAddress::parse("a@bücher.example").unwrap().domain(),
            "bücher.example"
        );
        for text in [
            "a@b\u{85}c.example",
            "a@b\u{2028}c.example",
            "a@b\u{a0}c.example",
        ] {
            assert_eq!(
                MailAddress::parse(text),
                Err(AddressError::BadDomain),
                "{text:?}"
            );
        }
    }

    #[test]
    fn parses_plain_and_quoted() {
        let a = MailAddress::parse("Alice@Example.ORG").unwrap();
        assert_eq!(a.local_part(), "Alice");
        assert_eq!(a.domain(), "example.org");
        assert_eq!(a.to_string(), "Alice@example.org");
        let q = MailAddress::parse("\"john doe\"@example.org").unwrap();
        assert_eq!(q.local_part(), "john doe");
        assert_eq!(q.to_string(), "\"john doe\"@example.org");
        assert_eq!(MailAddress::parse(&q.to_string()).unwrap(), q);
    }

    #[test]
    fn parses_paths() {
        assert_eq!(MailAddress::parse_path("<>").unwrap(), None);
        let a = MailAddress::parse_path("<@relay.example:bob@example.org>").unwrap();
        assert_eq!(a.unwrap().to_string(), "bob@example.org");
        assert_eq!(
            MailAddress::parse_path("bob@example.org"),
            Err(AddressError::Brackets)
        );
        assert_eq!(
            MailAddress::parse_path("<bob@example.org"),
            Err(AddressError::Brackets)
        );
        assert!(MailAddress::parse_path("<bob@[127.0.0.1]>")
            .unwrap()
            .is_some());
        assert!(MailAddress::parse_path("<bob@[IPv6:::1]>")
            .unwrap()
            .is_some());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "bob",
            "@example.org",
            "bob@",
            "a..b@example.org",
            ".a@example.org",
            "bob@-x.org",
            "bob@ex ample.org",
            "bob@[300.1.1.1]",
            "a b@example.org",
            "\"unterminated@example.org",
        ] {
            assert!(MailAddress::parse(bad).is_err(), "{bad:?} should not parse");
        }
        let long = format!("{}@example.org", "a".repeat(65));
        assert_eq!(MailAddress::parse(&long), Err(AddressError::TooLong));
    }
}
