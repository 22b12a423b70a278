//! What goes to the `<bounceProcessor>` for recipients that failed: a copy of the mail (a new
//! name derived from the outgoing one) whose recipients are the failed ones, with
//!
//! * `error_message`: the failure text (the remote server's reply, or why no server was
//!   reached);
//! * attribute `delivery-error` (James 2.3's name): the same text;
//! * attribute [`REMOTE_MTA`]: the host that answered (absent when none did);
//! * attribute [`STATUS`]: the enhanced status code (`5.1.1`);
//! * attribute [`DIAGNOSTIC`]: the remote reply itself (or the failure text).
//!
//! Recipients that failed alike (same host, same text) share one copy. Without a bounce
//! processor, the worker turns each copy into `DSNBounce`'s report to the sender
//! (`mailroom_spool::mailets::bounce::dsn_report`), as James does.

use mailroom_mailet::{derived_mail_name, AttributeValue, Mail, MailAddress};

/// James 2.3's attribute with the delivery error's text.
pub const DELIVERY_ERROR: &str = "delivery-error";
/// The remote host that refused the recipients.
pub const REMOTE_MTA: &str = "mailroom.delivery.remote-mta";
/// The enhanced status code of the failure (`5.1.1`).
pub const STATUS: &str = "mailroom.delivery.status";
/// The remote server's full reply.
pub const DIAGNOSTIC: &str = "mailroom.delivery.diagnostic";

/// One recipient's failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The host that answered, if one did.
    pub remote_mta: Option<String>,
    /// The enhanced status code.
    pub status: String,
    /// The reply, or why no host took the mail.
    pub text: String,
}

/// The copies of `mail` for its `failed` recipients, in state `processor`.
pub fn copies(mail: &Mail, failed: &[(MailAddress, Failure)], processor: &str) -> Vec<Mail> {
    let mut groups: Vec<(&Failure, Vec<MailAddress>)> = Vec::new();
    for (rcpt, failure) in failed {
        match groups.iter_mut().find(|(f, _)| *f == failure) {
            Some((_, rcpts)) => rcpts.push(rcpt.clone()),
            None => groups.push((failure, vec![rcpt.clone()])),
        }
    }
    groups
        .into_iter()
        .map(|(failure, rcpts)| {
            let mut copy = mail.split_off(derived_mail_name(mail.name()), rcpts);
            copy.set_state(processor);
            copy.envelope.error_message = Some(failure.text.clone());
            let text = |s: &str| AttributeValue::String(s.to_string());
            copy.set_attribute(DELIVERY_ERROR, text(&failure.text));
            copy.set_attribute(STATUS, text(&failure.status));
            // The reply itself, without the `host said:` the error message starts with, so
            // that a DSN's Diagnostic-Code is `smtp; 550 ...`.
            let reply = failure
                .remote_mta
                .as_ref()
                .and_then(|host| failure.text.strip_prefix(&format!("{host} said: ")))
                .unwrap_or(&failure.text);
            copy.set_attribute(DIAGNOSTIC, text(reply));
            match &failure.remote_mta {
                Some(host) => copy.set_attribute(REMOTE_MTA, text(host)),
                None => copy.envelope.attributes.remove(REMOTE_MTA),
            };
            copy.envelope.touch();
            copy
        })
        .collect()
}
