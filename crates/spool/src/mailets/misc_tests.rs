//! Unit tests of the small mailets.
use mailroom_mailet::{state, AttributeValue, ErrorKind};

use super::super::testing::{build, mail, Recorder};

const MSG: &[u8] = b"From: a@example.net\r\nTo: B <b@example.org>, c@example.org\r\n\
    Cc: d@example.com\r\nMessage-ID: <m1@example.net>\r\nSubject: hi\r\n\r\nbody\r\n";

fn addrs(m: &mailroom_mailet::Mail) -> Vec<String> {
    m.recipients().iter().map(|a| a.to_string()).collect()
}

#[test]
fn use_header_recipients_sends_a_copy_to_the_header_addresses() {
    let ctx = Recorder::new();
    let mailet = build("UseHeaderRecipients", &[]).unwrap();
    let mut m = mail(Some("a@example.net"), &["x@example.org"], MSG);
    m.set_attribute(
        mailroom_mailet::ATTR_SMTP_AUTH_USER,
        AttributeValue::from("a"),
    );
    m.envelope.remote_addr = "203.0.113.7".into();
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::GHOST);
    // Only the hop counter that stops loops: the SMTP AUTH user is gone.
    let attributes: Vec<String> = ctx.sent()[0].envelope.attributes.keys().cloned().collect();
    assert_eq!(attributes, ["mailroom.redirect.count"]);
    assert_eq!(ctx.sent()[0].envelope.remote_addr, "203.0.113.7");
    let sent = ctx.sent();
    assert_eq!(
        addrs(&sent[0]),
        ["b@example.org", "c@example.org", "d@example.com"]
    );
    assert_eq!(sent[0].state(), state::ROOT);
    assert_eq!(sent[0].sender().unwrap().to_string(), "a@example.net");
    assert!(sent[0].name().starts_with(m.name()));

    // Mail-For wins over To and Cc.
    let with_mail_for = [b"Mail-For: e@example.org\r\n".as_slice(), MSG].concat();
    let mut m = mail(Some("a@example.net"), &["x@example.org"], &with_mail_for);
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(addrs(&ctx.sent()[1]), ["e@example.org"]);
    assert!(build("UseHeaderRecipients", &[("debug", "maybe")]).is_err());
}

#[test]
fn server_time_replies_to_the_sender_from_the_first_recipient() {
    let ctx = Recorder::new();
    let mailet = build("ServerTime", &[]).unwrap();
    let mut m = mail(Some("a@example.net"), &["time@mx.example.org"], MSG);
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::ROOT);
    let reply = &ctx.sent()[0];
    assert_eq!(addrs(reply), ["a@example.net"]);
    assert_eq!(reply.sender().unwrap().to_string(), "time@mx.example.org");
    assert_eq!(reply.message.subject().unwrap(), "The time is now...");
    assert_eq!(
        reply.message.header("In-Reply-To").unwrap(),
        "<m1@example.net>"
    );
    let text = String::from_utf8(reply.message.to_bytes().unwrap()).unwrap();
    assert!(text.contains("This mail server thinks it's "), "{text}");
    // No reply to the null sender.
    let mut bounce = mail(None, &["time@mx.example.org"], MSG);
    mailet.service(&mut bounce, &ctx).unwrap();
    assert_eq!(ctx.sent().len(), 1);
    // The reply says it is automatic; no reply to itself or to an automatic message, which
    // would loop (time@ to time@ answered by time@ to time@...).
    assert_eq!(
        reply.message.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    let mut forged = mail(Some("time@mx.example.org"), &["time@mx.example.org"], MSG);
    mailet.service(&mut forged, &ctx).unwrap();
    let auto = [b"Auto-Submitted: auto-replied\r\n".as_slice(), MSG].concat();
    let mut auto = mail(Some("a@example.net"), &["time@mx.example.org"], &auto);
    mailet.service(&mut auto, &ctx).unwrap();
    assert_eq!(ctx.sent().len(), 1);
}

#[test]
fn use_header_recipients_stops_a_loop() {
    // The header names the address the mailet serves: each copy comes back to it.
    let ctx = Recorder::new();
    let mailet = build("UseHeaderRecipients", &[]).unwrap();
    let looping = b"To: gw@mx.example.org\r\nSubject: x\r\n\r\nbody\r\n";
    let mut m = mail(Some("a@example.net"), &["gw@mx.example.org"], looping);
    let mut rounds = 0;
    loop {
        match mailet.service(&mut m, &ctx) {
            Ok(()) => {
                rounds += 1;
                assert!(rounds < 100, "UseHeaderRecipients loops for ever");
                m = ctx.sent().pop().unwrap();
            }
            Err(e) => {
                assert!(!e.is_temporary(), "{e}");
                break;
            }
        }
    }
    assert_eq!(rounds, 8);
}

#[test]
fn log_message_checks_parameters_and_passes_through() {
    let ctx = Recorder::new();
    let mailet = build("LogMessage", &[("maxBody", "2"), ("comment", "c")]).unwrap();
    let mut m = mail(Some("a@example.net"), &["b@example.org"], MSG);
    mailet.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::ROOT);
    let ghost = build("LogMessage", &[("passThrough", "false"), ("body", "false")]).unwrap();
    ghost.service(&mut m, &ctx).unwrap();
    assert_eq!(m.state(), state::GHOST);
    assert!(build("LogMessage", &[("maxBody", "-1")]).is_err());
    assert!(build("LogMessage", &[("headers", "ja")]).is_err());
}

#[test]
fn attribute_removal() {
    let ctx = Recorder::new();
    let mut m = mail(Some("a@example.net"), &["b@example.org"], MSG);
    for n in ["a", "b", "c"] {
        m.set_attribute(n, AttributeValue::from(n));
    }
    build("RemoveMailAttribute", &[("name", "a, b")])
        .unwrap()
        .service(&mut m, &ctx)
        .unwrap();
    assert_eq!(m.envelope.attributes.keys().collect::<Vec<_>>(), vec!["c"]);
    build("RemoveAllMailAttributes", &[])
        .unwrap()
        .service(&mut m, &ctx)
        .unwrap();
    assert!(m.envelope.attributes.is_empty());
    assert!(build("RemoveMailAttribute", &[]).is_err());
    assert!(build("RemoveMailAttribute", &[("name", " , ")]).is_err());
}

#[test]
fn debug_helpers() {
    let ctx = Recorder::new();
    let counter = build("debug.Counter", &[]).unwrap();
    for _ in 0..2 {
        let mut m = mail(Some("a@example.net"), &["b@example.org"], MSG);
        counter.service(&mut m, &ctx).unwrap();
        assert_eq!(m.state(), state::GHOST);
    }
    assert!(
        ctx.log()[1].ends_with("debug.Counter: 2"),
        "{:?}",
        ctx.log()
    );
    let mut m = mail(Some("a@example.net"), &["b@example.org"], MSG);
    build("debug.Identity", &[])
        .unwrap()
        .service(&mut m, &ctx)
        .unwrap();
    build("debug.DumpSystemErr", &[])
        .unwrap()
        .service(&mut m, &ctx)
        .unwrap();
    assert_eq!(m.state(), state::ROOT);
    let e = build("debug.ExceptionThrowingMailet", &[])
        .unwrap()
        .service(&mut m, &ctx)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert_eq!(e.message(), "General protection fault");
}
