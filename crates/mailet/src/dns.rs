//! What a DNS lookup answers, as matchers and mailets see it through [`MailetContext`].
//!
//! [`MailetContext`]: crate::MailetContext

use crate::MailetError;

/// One MX record: a mail exchanger of a domain and its preference (lower is tried first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MxRecord {
    /// The preference: lower values are tried first.
    pub preference: u16,
    /// The mail exchanger's host name, without the trailing dot.
    pub exchange: String,
}

/// Why a DNS lookup found nothing.
///
/// [`NoSuchDomain`](DnsError::NoSuchDomain) and [`NoRecords`](DnsError::NoRecords) are answers:
/// asking again gives the same. [`Temporary`](DnsError::Temporary) is the absence of an answer
/// (a timeout, SERVFAIL, a refused query, no DNS server reachable): ask again later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN).
    #[error("{name}: no such domain")]
    NoSuchDomain {
        /// The name looked up.
        name: String,
    },
    /// The name exists but has no records of the type asked for.
    #[error("{name}: no {record_type} records")]
    NoRecords {
        /// The name looked up.
        name: String,
        /// `MX`, `A/AAAA`, `TXT` or `PTR`.
        record_type: &'static str,
    },
    /// The name cannot be looked up: it is not a valid domain name.
    #[error("{name}: not a valid domain name")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// No answer now: a timeout, a server failure, no DNS server reachable, or no resolver in
    /// this context.
    #[error("{name}: DNS lookup failed: {reason}")]
    Temporary {
        /// The name looked up.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

impl DnsError {
    /// Whether the name definitely has no records of the type asked for (NXDOMAIN or no
    /// data): what a blacklist check reads as "not listed".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            DnsError::NoSuchDomain { .. } | DnsError::NoRecords { .. }
        )
    }

    /// Whether asking again later may give an answer.
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsError::Temporary { .. })
    }
}

/// A temporary DNS error is a [temporary](crate::ErrorKind::Temporary) mailet error (the mail is
/// retried later); any other is permanent.
impl From<DnsError> for MailetError {
    fn from(e: DnsError) -> Self {
        let error = if e.is_temporary() {
            MailetError::temporary("")
        } else {
            MailetError::permanent("")
        };
        error.with_cause(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn classification() {
        let nx = DnsError::NoSuchDomain {
            name: "x.invalid".into(),
        };
        assert!(nx.is_not_found() && !nx.is_temporary());
        assert_eq!(MailetError::from(nx).kind(), ErrorKind::Permanent);
        let timeout = DnsError::Temporary {
            name: "example.com".into(),
            reason: "timed out".into(),
        };
        assert!(timeout.is_temporary() && !timeout.is_not_found());
        let e = MailetError::from(timeout);
        assert_eq!(e.kind(), ErrorKind::Temporary);
        assert_eq!(e.to_string(), "example.com: DNS lookup failed: timed out");
    }
}
