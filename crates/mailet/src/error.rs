//! [`MailetError`]: why a matcher or mailet failed, and whether trying again later may help.

use std::fmt;

/// Whether a failure may go away by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The failure is in the server's surroundings, not in the mail: an I/O or resource error
    /// (a full disk, no file descriptors left), a DNS timeout, a remote server that is away.
    /// The mail stays in the spool, in its current state, and is tried again later.
    Temporary,
    /// Trying again will fail the same way: a bad address, a bad parameter, a mail that cannot
    /// be handled. The SpoolManager applies `onMailetException` / `onMatchException` (by
    /// default the mail moves to the `error` processor with this error as its message).
    Permanent,
}

/// Why a matcher or mailet failed: a message for the log and for the mail's error message, a
/// [kind](ErrorKind) that tells the SpoolManager whether to retry, and optionally the error that
/// caused it.
///
/// ```
/// use mailroom_mailet::{ErrorKind, MailetError};
///
/// let e = MailetError::temporary("inbox of bob")
///     .with_cause(std::io::Error::other("No space left on device"));
/// assert_eq!(e.kind(), ErrorKind::Temporary);
/// assert_eq!(e.to_string(), "inbox of bob: No space left on device");
/// ```
pub struct MailetError {
    kind: ErrorKind,
    message: String,
    cause: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl MailetError {
    /// A [permanent](ErrorKind::Permanent) error with a message.
    pub fn permanent(message: impl Into<String>) -> Self {
        MailetError {
            kind: ErrorKind::Permanent,
            message: message.into(),
            cause: None,
        }
    }

    /// A [temporary](ErrorKind::Temporary) error with a message: the mail is tried again
    /// later.
    pub fn temporary(message: impl Into<String>) -> Self {
        MailetError {
            kind: ErrorKind::Temporary,
            message: message.into(),
            cause: None,
        }
    }

    /// A [permanent](ErrorKind::Permanent) error with a message (what
    /// [`MailetError::permanent`] makes).
    pub fn new(message: impl Into<String>) -> Self {
        MailetError::permanent(message)
    }

    /// Records the error that caused this one; it is shown after the message and is the
    /// [`source`](std::error::Error::source).
    pub fn with_cause(
        mut self,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// Whether this failure may go away by itself.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the mail should stay in the spool and be tried again later.
    pub fn is_temporary(&self) -> bool {
        self.kind == ErrorKind::Temporary
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for MailetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.cause, self.message.is_empty()) {
            (None, _) => f.write_str(&self.message),
            (Some(cause), true) => write!(f, "{cause}"),
            (Some(cause), false) => write!(f, "{}: {cause}", self.message),
        }
    }
}

impl fmt::Debug for MailetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailetError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("cause", &self.cause)
            .finish()
    }
}

impl std::error::Error for MailetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Every I/O error is [temporary](ErrorKind::Temporary): a full disk, no file descriptors, a
/// connection reset are faults of the moment, and a mail must never be lost to them.
impl From<std::io::Error> for MailetError {
    fn from(e: std::io::Error) -> Self {
        MailetError::temporary("I/O error").with_cause(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn kinds_and_messages() {
        let p = MailetError::new("bad parameter");
        assert_eq!(p.kind(), ErrorKind::Permanent);
        assert!(!p.is_temporary());
        assert_eq!(p.to_string(), "bad parameter");
        assert!(p.source().is_none());

        let t = MailetError::temporary("resolver away");
        assert!(t.is_temporary());
        assert_eq!(MailetError::permanent("x").kind(), ErrorKind::Permanent);
    }

    #[test]
    fn io_errors_are_temporary_and_keep_their_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
        let e = MailetError::from(io);
        assert_eq!(e.kind(), ErrorKind::Temporary);
        assert_eq!(e.to_string(), "I/O error: disk full");
        let source = e.source().expect("a cause");
        assert_eq!(
            source.downcast_ref::<std::io::Error>().unwrap().kind(),
            std::io::ErrorKind::StorageFull
        );
    }

    #[test]
    fn a_cause_without_message_shows_alone() {
        let e = MailetError::permanent("").with_cause("the cause");
        assert_eq!(e.to_string(), "the cause");
        assert_eq!(e.message(), "");
    }
}
