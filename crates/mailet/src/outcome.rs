//! What happened to one recipient of a mail, as one log line an administrator can grep, in the
//! spirit of Postfix's `to=<...>, status=sent` lines:
//!
//! ```text
//! mail=Mail1700000000123-0 rcpt=alice@example.org status=delivered mailbox=alice maildir=/srv/mail/var/mail/inboxes/alice
//! mail=Mail1700000000123-0 rcpt=bob@example.org status=deferred processor=transport attempts=2 retry_in=2s reason="I/O error: No space left on device"
//! ```
//!
//! The shape is stable: `mail=`, `rcpt=` and `status=` come first, then the fields of that
//! status. Values are printed plainly (addresses as `user@domain`, never as Rust debug
//! output); a value with a space, a quote, `=` or nothing in it is put in double quotes, with
//! `\` and `"` escaped. Mailets log these lines through [`MailetContext::log`].
//!
//! [`MailetContext::log`]: crate::MailetContext::log

use std::fmt;

use crate::MailAddress;

/// The outcome for one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Put in a local user's inbox (`mailbox=`, `maildir=`).
    Delivered,
    /// Sent on to another address as a new mail (`to=`, `forward=` its name).
    Forwarded,
    /// Stored in a mail repository (`repository=`, and the mail's error message as `error=`).
    Stored,
    /// Rewritten by a virtual user table (`to=` the new recipients).
    Mapped,
    /// Refused by a virtual-table `error:` mapping (`reason=` its reply, `next=` the
    /// processor the refused copy goes to).
    Refused,
    /// Could not be delivered (`reason=`, `next=` the processor that takes it from here).
    Failed,
    /// Kept in the spool after a temporary failure, for another try (`processor=`,
    /// `attempts=`, `retry_in=`, `reason=`).
    Deferred,
    /// Deleted without delivery (`reason=`).
    Dropped,
    /// Could not be delivered, and its sender was sent a bounce or delivery status report
    /// (`reason=`, `to=` the sender, `bounce=` the report's name).
    Bounced,
    /// A notice about it was sent (`to=` whom, `notice=` the notice's name); the mail itself
    /// may go on.
    Notified,
}

impl Status {
    /// The word after `status=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Forwarded => "forwarded",
            Status::Stored => "stored",
            Status::Mapped => "mapped",
            Status::Refused => "refused",
            Status::Failed => "failed",
            Status::Deferred => "deferred",
            Status::Dropped => "dropped",
            Status::Bounced => "bounced",
            Status::Notified => "notified",
        }
    }
}

/// One outcome line: build it with [`Outcome::new`] and [`Outcome::field`], print it with
/// `to_string()`.
#[derive(Clone, Debug)]
pub struct Outcome {
    line: String,
}

impl Outcome {
    /// `mail=<name> rcpt=<address> status=<status>`. Counted in `mailroom_deliveries_total`
    /// by status: every outcome line is made here.
    pub fn new(mail: &str, rcpt: &MailAddress, status: Status) -> Self {
        metrics::counter!("mailroom_deliveries_total", "outcome" => status.as_str()).increment(1);
        let mut outcome = Outcome {
            line: String::new(),
        };
        outcome.push("mail", mail);
        outcome.push("rcpt", &rcpt.to_string());
        outcome.push("status", status.as_str());
        outcome
    }

    /// `rcpt=<address> status=<status>`: a recipient refused before any mail exists (at RCPT).
    pub fn without_mail(rcpt: &MailAddress, status: Status) -> Self {
        metrics::counter!("mailroom_deliveries_total", "outcome" => status.as_str()).increment(1);
        let mut outcome = Outcome {
            line: String::new(),
        };
        outcome.push("rcpt", &rcpt.to_string());
        outcome.push("status", status.as_str());
        outcome
    }

    /// Appends ` key=value`, the value quoted when it needs to be.
    pub fn field(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.push(key, &value.to_string());
        self
    }

    fn push(&mut self, key: &str, value: &str) {
        if !self.line.is_empty() {
            self.line.push(' ');
        }
        self.line.push_str(key);
        self.line.push('=');
        let plain = !value.is_empty()
            && value
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=');
        if plain {
            self.line.push_str(value);
            return;
        }
        self.line.push('"');
        for c in value.chars() {
            match c {
                '"' | '\\' => {
                    self.line.push('\\');
                    self.line.push(c);
                }
                // One line per outcome, whatever a reason says.
                c if c.is_control() => self.line.push(' '),
                c => self.line.push(c),
            }
        }
        self.line.push('"');
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_stay_plain_and_others_are_quoted_on_one_line() {
        let rcpt = MailAddress::parse("alice@example.org").unwrap();
        let line = Outcome::new("Mail1-0", &rcpt, Status::Failed)
            .field("reason", "no such\r\nlocal \"user\"")
            .field("next", "error")
            .field("empty", "")
            .field("url", "file://var/mail/x=y/")
            .to_string();
        assert_eq!(
            line,
            r#"mail=Mail1-0 rcpt=alice@example.org status=failed reason="no such  local \"user\"" next=error empty="" url="file://var/mail/x=y/""#
        );
    }
}
