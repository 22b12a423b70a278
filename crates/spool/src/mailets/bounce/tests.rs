//! The bounce and notice mailets' reports, parsed back and checked field by field.
use std::collections::BTreeMap;
use std::sync::Mutex;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use mailroom_mailet::UserRecord;

use super::*;

/// A context that records the mails sent and the lines logged.
struct Recorder {
    postmaster: MailAddress,
    sent: Mutex<Vec<Mail>>,
    log: Mutex<Vec<String>>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            postmaster: MailAddress::parse("postmaster@mx.example.org").unwrap(),
            sent: Mutex::default(),
            log: Mutex::default(),
        }
    }
    fn sent(&self) -> Vec<Mail> {
        self.sent.lock().unwrap().clone()
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl MailetContext for Recorder {
    fn is_local_server(&self, domain: &str) -> bool {
        domain == "mx.example.org"
    }
    fn local_user(&self, _: &str) -> Result<Option<UserRecord>, MailetError> {
        Ok(None)
    }
    fn server_name(&self) -> &str {
        "mx.example.org"
    }
    fn postmaster(&self) -> &MailAddress {
        &self.postmaster
    }
    fn send_mail(&self, mail: Mail) -> Result<(), MailetError> {
        self.sent.lock().unwrap().push(mail);
        Ok(())
    }
    fn store_mail(&self, _: &str, _: &Mail) -> Result<(), MailetError> {
        unreachable!()
    }
    fn deliver_to_inbox(&self, _: &str, _: &[u8], _: &Mail) -> Result<(), MailetError> {
        unreachable!()
    }
    fn log(&self, message: &str) {
        self.log.lock().unwrap().push(message.to_string());
    }
}

const ORIGINAL: &[u8] = b"From: Sender <sender@example.net>\r\n\
    To: a@bounce.test\r\n\
    Subject: quarterly figures\r\n\
    Message-ID: <orig-1@example.net>\r\n\
    \r\n\
    Hello,\r\nthe figures, with an 8-bit \xc3\xa9.\r\n";

fn mailet(kind: Kind, params: &[(&str, &str)]) -> Notify {
    let config = MailetConfig {
        name: kind.name().to_string(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    Notify::new(kind, &config).unwrap()
}

fn original(sender: Option<&str>, rcpts: &[&str]) -> Mail {
    Mail::new(
        Envelope::new(
            "Mail1700000000123-0-0123456789abcdef",
            sender.map(|s| MailAddress::parse(s).unwrap()),
            rcpts
                .iter()
                .map(|r| MailAddress::parse(r).unwrap())
                .collect(),
        ),
        Message::from_bytes(ORIGINAL),
    )
}

/// The `message/delivery-status` part as per-message fields and per-recipient groups.
fn status_groups(raw: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8(raw.to_vec()).unwrap();
    text.split("\r\n\r\n")
        .filter(|g| !g.trim().is_empty())
        .map(|g| {
            g.lines()
                .map(|l| {
                    let (k, v) = l.split_once(": ").unwrap_or_else(|| panic!("{l:?}"));
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
        .collect()
}

fn field<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn part<'a>(
    msg: &'a mail_parser::Message<'a>,
    ctype: &str,
) -> Option<&'a mail_parser::MessagePart<'a>> {
    msg.parts.iter().find(|p| {
        p.content_type().is_some_and(|c| {
            format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")).eq_ignore_ascii_case(ctype)
        })
    })
}

#[test]
fn dsn_report_has_every_field_and_returns_the_original() {
    let ctx = Recorder::new();
    let mut mail = original(
        Some("sender@example.net"),
        &["a@bounce.test", "b@bounce.test"],
    );
    mail.envelope.error_message = Some("delivery failed".into());
    let mut status = BTreeMap::new();
    status.insert("a@bounce.test".to_string(), AttributeValue::from("5.1.1"));
    status.insert("b@bounce.test".to_string(), AttributeValue::from("5.2.2"));
    mail.set_attribute(ATTR_STATUS, AttributeValue::Map(status));
    mail.set_attribute(ATTR_REMOTE_MTA, "mx1.bounce.test".into());
    let mut diag = BTreeMap::new();
    diag.insert(
        "a@bounce.test".to_string(),
        AttributeValue::from("550 5.1.1 <a@bounce.test>: Recipient address rejected"),
    );
    diag.insert(
        "b@bounce.test".to_string(),
        AttributeValue::from("552 5.2.2 mailbox full"),
    );
    mail.set_attribute(ATTR_DIAGNOSTIC, AttributeValue::Map(diag));
    mail.set_attribute(ATTR_DSN_ENVID, "QQ314159+2Bx".into());
    let mut a = BTreeMap::new();
    a.insert(
        "orcpt".to_string(),
        AttributeValue::from("rfc822;a+2Bx@bounce.test"),
    );
    a.insert("notify".to_string(), AttributeValue::from("FAILURE,DELAY"));
    let mut rcpts = BTreeMap::new();
    rcpts.insert("a@bounce.test".to_string(), AttributeValue::Map(a));
    mail.set_attribute(ATTR_DSN_RECIPIENTS, AttributeValue::Map(rcpts));

    mailet(Kind::Dsn, &[("passThrough", "false")])
        .service(&mut mail, &ctx)
        .unwrap();
    assert_eq!(mail.state(), state::GHOST);

    let sent = ctx.sent();
    assert_eq!(sent.len(), 1);
    let bounce = &sent[0];
    assert_eq!(bounce.sender(), None);
    assert_eq!(
        bounce.recipients(),
        [MailAddress::parse("sender@example.net").unwrap()]
    );
    assert_eq!(bounce.state(), state::ROOT);
    assert!(bounce.name().starts_with(&format!("{}-", mail.name())));
    assert_eq!(
        bounce.attribute(ATTR_NOTICE),
        Some(&AttributeValue::from("DSNBounce"))
    );
    // The original is streamed, not copied into memory.
    assert!(format!("{:?}", bounce.message.body()).contains("Message(Message"));

    let bytes = bounce.message.to_bytes().unwrap();
    assert_eq!(bytes.len() as u64, bounce.size());
    let msg = MessageParser::new().parse(&bytes).unwrap();
    let ct = msg.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(
        msg.from().unwrap().first().unwrap().address(),
        Some("postmaster@mx.example.org")
    );
    assert_eq!(
        msg.to().unwrap().first().unwrap().address(),
        Some("sender@example.net")
    );
    assert_eq!(msg.subject(), Some("Undelivered: quarterly figures"));
    assert_eq!(msg.in_reply_to().as_text(), Some("orig-1@example.net"));
    assert_eq!(
        msg.message_id(),
        Some(format!("{}@mx.example.org", bounce.name()).as_str())
    );
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );

    let human = msg.body_text(0).unwrap();
    assert!(human.contains("mx.example.org"), "{human}");
    assert!(
        human.contains("<a@bounce.test>: 550 5.1.1 <a@bounce.test>: Recipient address rejected"),
        "{human}"
    );

    let groups = status_groups(part(&msg, "message/delivery-status").unwrap().contents());
    assert_eq!(groups.len(), 3, "{groups:?}");
    assert_eq!(
        field(&groups[0], "Reporting-MTA"),
        Some("dns; mx.example.org")
    );
    assert_eq!(
        field(&groups[0], "Original-Envelope-Id"),
        Some("QQ314159+x")
    );
    assert_eq!(
        field(&groups[0], "Arrival-Date"),
        Some("Tue, 14 Nov 2023 22:13:20 +0000")
    );
    let a = &groups[1];
    assert_eq!(
        field(a, "Original-Recipient"),
        Some("rfc822; a+x@bounce.test")
    );
    assert_eq!(field(a, "Final-Recipient"), Some("rfc822; a@bounce.test"));
    assert_eq!(field(a, "Action"), Some("failed"));
    assert_eq!(field(a, "Status"), Some("5.1.1"));
    assert_eq!(field(a, "Remote-MTA"), Some("dns; mx1.bounce.test"));
    assert_eq!(
        field(a, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 <a@bounce.test>: Recipient address rejected")
    );
    let b = &groups[2];
    assert_eq!(field(b, "Original-Recipient"), None);
    assert_eq!(field(b, "Final-Recipient"), Some("rfc822; b@bounce.test"));
    assert_eq!(field(b, "Status"), Some("5.2.2"));
    assert_eq!(
        field(b, "Diagnostic-Code"),
        Some("smtp; 552 5.2.2 mailbox full")
    );

    let returned = part(&msg, "message/rfc822").unwrap();
    assert_eq!(
        returned.content_transfer_encoding(),
        Some("8bit"),
        "the original has 8-bit text"
    );
    let PartType::Message(inner) = &returned.body else {
        panic!("{:?}", returned.body)
    };
    assert_eq!(inner.subject(), Some("quarterly figures"));
    assert!(inner.body_text(0).unwrap().contains("8-bit é"));
    assert!(part(&msg, "text/rfc822-headers").is_none());

    let log = ctx.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].starts_with(&format!(
            "mail={} rcpt=a@bounce.test status=bounced to=sender@example.net notice={}",
            mail.name(),
            bounce.name()
        )),
        "{}",
        log[0]
    );
    assert!(log[0].contains("dsn_status=5.1.1"), "{}", log[0]);
    assert!(
        log[1].contains("rcpt=b@bounce.test status=bounced"),
        "{}",
        log[1]
    );
}

#[test]
fn ret_hdrs_returns_headers_only_and_fallbacks_come_from_the_error() {
    let ctx = Recorder::new();
    let mut mail = original(Some("sender@example.net"), &["a@bounce.test"]);
    mail.envelope.error_message = Some("550 5.1.1 no such user here".into());
    mail.set_attribute(ATTR_DSN_RET, "HDRS".into());
    mailet(Kind::Dsn, &[]).service(&mut mail, &ctx).unwrap();
    // James's default: the original passes through.
    assert_eq!(mail.state(), state::ROOT);
    let bytes = ctx.sent()[0].message.to_bytes().unwrap();
    let msg = MessageParser::new().parse(&bytes).unwrap();
    assert!(part(&msg, "message/rfc822").is_none());
    let heads = part(&msg, "text/rfc822-headers").unwrap();
    let heads = String::from_utf8_lossy(heads.contents()).into_owned();
    assert!(heads.contains("Subject: quarterly figures"), "{heads}");
    assert!(!heads.contains("Hello"), "{heads}");
    let groups = status_groups(part(&msg, "message/delivery-status").unwrap().contents());
    assert_eq!(field(&groups[1], "Status"), Some("5.1.1"));
    assert_eq!(field(&groups[1], "Remote-MTA"), None);
    assert_eq!(
        field(&groups[1], "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 no such user here")
    );

    // No code anywhere: 5.0.0, and a diagnostic that is no SMTP reply says so.
    let ctx = Recorder::new();
    let mut mail = original(Some("sender@example.net"), &["a@bounce.test"]);
    mail.envelope.error_message = Some("no route\r\nto host".into());
    mailet(Kind::Dsn, &[("attachment", "none")])
        .service(&mut mail, &ctx)
        .unwrap();
    let bytes = ctx.sent()[0].message.to_bytes().unwrap();
    let msg = MessageParser::new().parse(&bytes).unwrap();
    assert!(part(&msg, "message/rfc822").is_none());
    assert!(part(&msg, "text/rfc822-headers").is_none());
    let groups = status_groups(part(&msg, "message/delivery-status").unwrap().contents());
    assert_eq!(field(&groups[1], "Status"), Some("5.0.0"));
    assert_eq!(
        field(&groups[1], "Diagnostic-Code"),
        Some("X-Mailroom; no route  to host")
    );
}

#[test]
fn delay_warnings_and_notify_never() {
    let ctx = Recorder::new();
    let mut mail = original(
        Some("sender@example.net"),
        &["a@bounce.test", "b@bounce.test"],
    );
    mail.set_attribute(ATTR_ACTION, "delayed".into());
    let mut never = BTreeMap::new();
    never.insert("notify".to_string(), AttributeValue::from("NEVER"));
    let mut rcpts = BTreeMap::new();
    rcpts.insert("b@bounce.test".to_string(), AttributeValue::Map(never));
    mail.set_attribute(ATTR_DSN_RECIPIENTS, AttributeValue::Map(rcpts));
    mailet(Kind::Dsn, &[]).service(&mut mail, &ctx).unwrap();
    let bytes = ctx.sent()[0].message.to_bytes().unwrap();
    let msg = MessageParser::new().parse(&bytes).unwrap();
    let groups = status_groups(part(&msg, "message/delivery-status").unwrap().contents());
    assert_eq!(groups.len(), 2, "b asked for no report: {groups:?}");
    assert_eq!(field(&groups[1], "Action"), Some("delayed"));
    assert_eq!(field(&groups[1], "Status"), Some("4.0.0"));
    assert_eq!(field(&groups[1], "Diagnostic-Code"), None);
    let log = ctx.log();
    assert!(
        log.iter()
            .any(|l| l.contains("rcpt=b@bounce.test status=dropped")),
        "{log:?}"
    );
}

#[test]
fn a_bounce_is_never_bounced() {
    for kind in [Kind::Dsn, Kind::Bounce, Kind::NotifySender] {
        let ctx = Recorder::new();
        let mut mail = original(None, &["a@bounce.test"]);
        mailet(kind, &[("passThrough", "false")])
            .service(&mut mail, &ctx)
            .unwrap();
        assert!(ctx.sent().is_empty(), "{kind:?}");
        assert_eq!(mail.state(), state::GHOST);
        assert_eq!(
            ctx.log(),
            [format!(
                "mail={} rcpt=a@bounce.test status=dropped reason=\"null sender: a bounce is never bounced\"",
                mail.name()
            )]
        );
        // Passing through, it goes on untouched.
        let ctx = Recorder::new();
        let mut mail = original(None, &["a@bounce.test"]);
        mailet(kind, &[]).service(&mut mail, &ctx).unwrap();
        assert!(ctx.sent().is_empty());
        assert_eq!(mail.state(), state::ROOT);
    }
}

#[test]
fn the_postmaster_hears_once_about_a_null_sender_mail() {
    let ctx = Recorder::new();
    let mut mail = original(None, &["a@bounce.test"]);
    mail.envelope.error_message = Some("550 5.7.1 refused".into());
    mailet(Kind::NotifyPostmaster, &[("passThrough", "false")])
        .service(&mut mail, &ctx)
        .unwrap();
    let sent = ctx.sent();
    assert_eq!(sent.len(), 1);
    let notice = &sent[0];
    assert_eq!(notice.recipients(), std::slice::from_ref(&ctx.postmaster));
    assert_eq!(notice.sender(), None);
    let log = ctx.log();
    assert!(
        log[0].contains("rcpt=a@bounce.test status=notified to=postmaster@mx.example.org"),
        "{log:?}"
    );
    // The notice fails in turn: nothing more is sent.
    let mut failed = notice.clone();
    let ctx = Recorder::new();
    mailet(Kind::NotifyPostmaster, &[("passThrough", "false")])
        .service(&mut failed, &ctx)
        .unwrap();
    assert!(ctx.sent().is_empty());
    assert_eq!(failed.state(), state::GHOST);
    assert!(ctx.log()[0].contains("status=dropped"), "{:?}", ctx.log());
    // And bouncing it to its (null) sender does nothing either.
    let mut failed = notice.clone();
    let ctx = Recorder::new();
    mailet(Kind::Dsn, &[]).service(&mut failed, &ctx).unwrap();
    assert!(ctx.sent().is_empty());
}

#[test]
fn bounce_and_notices_take_james_parameters() {
    let ctx = Recorder::new();
    let mut mail = original(Some("sender@example.net"), &["a@bounce.test"]);
    mail.envelope.error_message = Some("mailet X failed:\nstack line".into());
    mailet(
        Kind::Bounce,
        &[
            ("sendingAddress", "bounces@mx.example.org"),
            ("notice", "Sorry.\nIt failed."),
            ("prefix", "[bounce]"),
            ("attachment", "heads"),
            ("inline", "heads"),
            ("attachStackTrace", "true"),
        ],
    )
    .service(&mut mail, &ctx)
    .unwrap();
    let bounce = &ctx.sent()[0];
    assert_eq!(bounce.sender(), None);
    let bytes = bounce.message.to_bytes().unwrap();
    let msg = MessageParser::new().parse(&bytes).unwrap();
    let ct = msg.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("mixed")));
    assert_eq!(msg.subject(), Some("[bounce] quarterly figures"));
    assert_eq!(
        msg.from().unwrap().first().unwrap().address(),
        Some("bounces@mx.example.org")
    );
    let human = msg.body_text(0).unwrap();
    assert!(human.starts_with("Sorry.\r\nIt failed."), "{human:?}");
    assert!(human.contains("Error message below:"), "{human}");
    assert!(human.contains("MAIL FROM: <sender@example.net>"), "{human}");
    assert!(human.contains("Subject: quarterly figures"), "{human}");
    assert!(
        human.contains("Message headers follow:\r\nFrom: Sender <sender@example.net>"),
        "{human}"
    );
    assert!(part(&msg, "text/rfc822-headers").is_some());
    assert!(part(&msg, "message/delivery-status").is_none());
    let error = msg
        .parts
        .iter()
        .find(|p| p.attachment_name() == Some("error.txt"))
        .unwrap();
    assert!(error.text_contents().unwrap().contains("stack line"));
    assert!(ctx.log()[0].contains("status=bounced"));

    // NotifySender: the To: header may name someone else; who receives it does not change.
    let ctx = Recorder::new();
    let mut mail = original(Some("sender@example.net"), &["a@bounce.test"]);
    mailet(
        Kind::NotifySender,
        &[("to", "unaltered"), ("message", "Old name")],
    )
    .service(&mut mail, &ctx)
    .unwrap();
    assert_eq!(mail.state(), state::ROOT);
    let notice = &ctx.sent()[0];
    assert_eq!(
        notice.recipients(),
        [MailAddress::parse("sender@example.net").unwrap()]
    );
    let bytes = notice.message.to_bytes().unwrap();
    let msg = MessageParser::new().parse(&bytes).unwrap();
    assert_eq!(
        msg.to().unwrap().first().unwrap().address(),
        Some("a@bounce.test")
    );
    assert_eq!(msg.subject(), Some("Re: quarterly figures"));
    assert!(msg.body_text(0).unwrap().starts_with("Old name"));
    assert!(part(&msg, "message/rfc822").is_some());
    assert!(ctx.log()[0].contains("status=notified"), "{:?}", ctx.log());
}

#[test]
fn bad_parameters_are_refused() {
    for (kind, param, value) in [
        (Kind::Dsn, "attachment", "body"),
        (Kind::Bounce, "inline", "body"),
        (Kind::Bounce, "sender", "not an address"),
        (Kind::NotifySender, "to", "nobody"),
        (Kind::NotifyPostmaster, "passThrough", "maybe"),
    ] {
        let config = MailetConfig {
            name: kind.name().to_string(),
            params: [(param.to_string(), value.to_string())].into(),
        };
        assert!(Notify::new(kind, &config).is_err(), "{kind:?} {param}");
    }
    // A malformed attachError is refused even when attachStackTrace is true.
    let config = MailetConfig {
        name: "Bounce".to_string(),
        params: [
            ("attachStackTrace".to_string(), "true".to_string()),
            ("attachError".to_string(), "perhaps".to_string()),
        ]
        .into(),
    };
    assert!(Notify::new(Kind::Bounce, &config).is_err());
}

#[test]
fn attribute_names_agree_with_the_smtp_server() {
    assert_eq!(ATTR_DSN_RET, mailroom_smtp::ATTR_DSN_RET);
    assert_eq!(ATTR_DSN_ENVID, mailroom_smtp::ATTR_DSN_ENVID);
    assert_eq!(ATTR_DSN_RECIPIENTS, mailroom_smtp::ATTR_DSN_RECIPIENTS);
}

#[test]
fn xtext_is_decoded() {
    assert_eq!(xtext_decode("a+2Bb+3Dc"), "a+b=c");
    assert_eq!(xtext_decode("bad+zz+"), "bad+zz+");
}
