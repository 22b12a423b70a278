//! MIME handling of the mailets: a message's header section split from its body, headers read
//! through mail-parser (`header`, `headers`, `subject`), changed (`set_header`,
//! `remove_header`, as SetMimeHeader/RemoveMimeHeader do), and the RFC 3464 report DSNBounce
//! builds about it (which quotes its headers).
//!
//! Checks: no panic; the message's octets come back unchanged (`to_bytes`); in a well-formed
//! header section a header set is read back as set, and gone once removed (after a malformed
//! line mail-parser stops reading fields, so one added at the end is not seen: the first
//! finding of this target, a limit rather than a bug); the DSN report is built or refused with
//! an error.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailroom_mailet::{Envelope, Mail, MailAddress, Message};

fn postmaster() -> &'static MailAddress {
    static P: OnceLock<MailAddress> = OnceLock::new();
    P.get_or_init(|| MailAddress::parse("postmaster@fuzz.test").unwrap())
}

/// Every line a field (`name:` of printable ASCII) or its continuation, in UTF-8.
fn well_formed(header: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(header) else {
        return false;
    };
    text.split_terminator('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .enumerate()
        .all(|(i, line)| {
            let continued = line.starts_with([' ', '\t']) && i > 0;
            let field = line.split_once(':').is_some_and(|(name, _)| {
                !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b))
            });
            (continued || field) && !line.contains('\r') && !line.bytes().any(|b| b == 0)
        })
}

fuzz_target!(|data: &[u8]| {
    let mut message = Message::from_bytes(data);
    assert_eq!(message.to_bytes().unwrap(), data);
    let _ = message.subject();
    for name in message.header_names() {
        let _ = message.header(&name);
        let _ = message.headers(&name);
    }
    let well_formed = well_formed(message.header_section());
    message.set_header("X-Fuzz", "a value");
    if well_formed {
        assert_eq!(message.header("X-Fuzz").as_deref(), Some("a value"));
    }
    assert!(message.remove_header("X-Fuzz"));
    assert_eq!(message.header("X-Fuzz"), None);

    let sender = MailAddress::parse("sender@far.test").unwrap();
    let rcpt = MailAddress::parse("rcpt@far.test").unwrap();
    let mut envelope = Envelope::new("Mail1", Some(sender), vec![rcpt]);
    envelope.error_message = Some("550 5.1.1 no such user".into());
    let mail = Mail::new(envelope, Message::from_bytes(data));
    let _ = mailroom_spool::mailets::bounce::dsn_report(&mail, "mx.fuzz.test", postmaster());
});
